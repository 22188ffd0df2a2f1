#define _GNU_SOURCE
#include <pthread.h>
#include <sys/socket.h>
#include "gateway_io.h"

int gw_io_accept(int listener, struct sockaddr_storage *address, socklen_t *length) {
    return accept4(listener, (struct sockaddr *)address, length, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int gw_io_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event;
    event.events = events;
    event.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &event);
}

void gw_io_name_thread(const char *name) { pthread_setname_np(pthread_self(), name); }

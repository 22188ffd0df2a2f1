#define _GNU_SOURCE
#include <pthread.h>
#include <sys/socket.h>
#include "gateway_io.h"
#include <stdlib.h>

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

// Per thread (each event loop is one thread), so no lock. The bound keeps what a burst of
// closing connections leaves cached small: at most 128 blocks per size, 896 KiB a thread.
#define GW_IO_CACHED_PER_SIZE 128

static __thread struct {
    void *blocks[GW_IO_CACHED_PER_SIZE];
    int count;
} gw_io_cache[3];

static int gw_io_size_class(size_t capacity) {
    switch (capacity) {
    case 1024: return 0;
    case 2048: return 1;
    case 4096: return 2;
    default: return -1;
    }
}

void *gw_io_storage_take(size_t capacity) {
    int class = gw_io_size_class(capacity);
    if (class >= 0 && gw_io_cache[class].count > 0) {
        return gw_io_cache[class].blocks[--gw_io_cache[class].count];
    }
    void *storage = malloc(capacity);
    if (storage == NULL) abort();
    return storage;
}

void gw_io_storage_give(void *storage, size_t capacity) {
    int class = gw_io_size_class(capacity);
    if (class >= 0 && gw_io_cache[class].count < GW_IO_CACHED_PER_SIZE) {
        gw_io_cache[class].blocks[gw_io_cache[class].count++] = storage;
        return;
    }
    free(storage);
}

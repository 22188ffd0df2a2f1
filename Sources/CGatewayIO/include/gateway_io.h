// What the worker's event loop needs that Swift's Glibc module does not export: epoll and
// eventfd (Linux-only headers), and accept4 (a _GNU_SOURCE function).
#ifndef GATEWAYD_IO_H
#define GATEWAYD_IO_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC: a connection never leaks into a child and
/// never blocks the loop. `address` may be NULL.
int gw_io_accept(int listener, struct sockaddr_storage *address, socklen_t *length);

/// epoll_event is packed on x86-64, which Swift imports awkwardly: these read and write it.
static inline uint32_t gw_io_event_events(const struct epoll_event *event) { return event->events; }
static inline uint64_t gw_io_event_data(const struct epoll_event *event) { return event->data.u64; }
int gw_io_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);

/// pthread_setname_np (a _GNU_SOURCE function): names the loop's thread for ps, top and perf.
void gw_io_name_thread(const char *name);

/// Storage for IOBuffer, through a small per-thread cache of the sizes every connection takes
/// (1, 2 and 4 KiB): blocks of these sizes are past glibc's tcache (1,032 bytes), so each
/// connection's malloc and free of them went through the arena's bins and consolidation, 3.5 %
/// of a worker's samples on `Connection: close` traffic (docs/benchmarks.md). Other sizes, and
/// blocks past the cache's bound, are plain malloc and free. Never NULL: aborts when out of
/// memory, as Swift's allocation does.
void *gw_io_storage_take(size_t capacity);
void gw_io_storage_give(void *storage, size_t capacity);

/// The events a connection is registered for once, edge-triggered (no epoll_ctl per request).
#define GW_IO_EDGE_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

#endif

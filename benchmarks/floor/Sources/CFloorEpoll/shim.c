#define _GNU_SOURCE
#include <sys/socket.h>
#include "floor_epoll.h"
int floor_accept4(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

// Glibc's Swift module does not export <sys/epoll.h> nor accept4 (a _GNU_SOURCE function).
#include <sys/epoll.h>
#include <sys/socket.h>
#include <stdio.h>
static inline void floor_flush_stdout(void) { fflush(stdout); }
int floor_accept4(int fd);

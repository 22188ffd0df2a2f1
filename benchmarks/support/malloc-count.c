// malloc-count.so: counts the heap allocations of a process (malloc, calloc, realloc,
// posix_memalign, aligned_alloc, memalign), for benchmarks/proxy-throughput.sh's "allocations
// per request". Loaded with LD_PRELOAD; every 100 ms a thread writes the count so far to
// $MALLOC_COUNT_DIR/<pid>. A benchmark aid only: never part of a build.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic unsigned long long allocations;

void *malloc(size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_realloc(pointer, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    void *pointer = __libc_memalign(alignment, size);
    if (!pointer) return 12; /* ENOMEM */
    *result = pointer;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_memalign(alignment, size);
}

static void *reporter(void *unused) {
    (void)unused;
    const char *dir = getenv("MALLOC_COUNT_DIR");
    if (!dir) return NULL;
    char path[512], temp[520];
    snprintf(path, sizeof path, "%s/%d", dir, (int)getpid());
    snprintf(temp, sizeof temp, "%s.tmp", path);
    for (;;) {
        FILE *file = fopen(temp, "w");
        if (file) {
            fprintf(file, "%llu\n", (unsigned long long)atomic_load(&allocations));
            fclose(file);
            rename(temp, path);
        }
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    if (!getenv("MALLOC_COUNT_DIR")) return;
    pthread_t thread;
    pthread_create(&thread, NULL, reporter, NULL);
    pthread_detach(thread);
}

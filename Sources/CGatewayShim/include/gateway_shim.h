// The little that Swift cannot import from glibc: the CMSG_* macros (SCM_RIGHTS),
// struct ucred (SO_PEERCRED, needs _GNU_SOURCE), close_range,
// posix_spawn_file_actions_addclosefrom_np (glibc >= 2.34, behind __USE_MISC), memfd_create
// and its seals (_GNU_SOURCE), and 64-bit atomics on a raw pointer into shared memory.
#ifndef GATEWAYD_SHIM_H
#define GATEWAYD_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// The most fds one SCM_RIGHTS message may carry on Linux (SCM_MAX_FD - 2 in practice:
/// measured here, 253 passes and 254 fails with EINVAL).
#define GW_MAX_FDS_PER_MESSAGE 253

/// sendmsg(2) of `len` bytes with `nfds` fds attached as SCM_RIGHTS, MSG_NOSIGNAL.
/// Returns the bytes sent, or -1 with errno set. Does not retry EINTR.
ssize_t gw_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// recvmsg(2) into `buf`, collecting at most `maxfds` (0 to GW_MAX_FDS_PER_MESSAGE) received
/// fds into `fds` (with MSG_CMSG_CLOEXEC, so they never leak into children), with a control
/// buffer sized for `maxfds`: the kernel releases fds beyond it without installing them.
/// `*nfds` gets the number received. `*truncated` is set when the kernel dropped control data
/// (MSG_CTRUNC), or when more arrived than `maxfds` (those are closed).
/// Returns the bytes read (0 at EOF), or -1 with errno set. Does not retry EINTR.
ssize_t gw_recvmsg_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);

/// getsockopt(SO_PEERCRED). Returns 0 or -1 with errno set.
int gw_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/// posix_spawn(2) of `path` with the child's fd 3 a copy of `channel_fd` and every other
/// fd above 2 closed (closefrom), the signal mask emptied and every signal set to its
/// default. Returns 0 or an errno value (posix_spawn does not set errno).
int gw_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[], int channel_fd);

/// Starts `path` as the caller's sibling: clone3 with CLONE_PARENT makes the caller's parent
/// (systemd, for a service's main process) the new process's parent, so that it can become the
/// service's main process and systemd still sees it exit. As gw_spawn_worker otherwise: fd 3
/// is `channel_fd`, fds 4 and up do not cross exec, signal mask and dispositions are reset.
/// Returns 0 and the pid and a pidfd (CLOEXEC: the caller's to poll and signal, never to
/// wait on: the process is not its child), or an errno: EINVAL for an init process (PID 1),
/// which cannot have a sibling, or why the exec failed.
int gw_spawn_sibling(pid_t *pid, int *pidfd, const char *path, char *const argv[], char *const envp[],
                     int channel_fd);

/// pidfd_send_signal(2): a signal to the process a pidfd refers to, never to a later owner of
/// its pid. 0, or -1 with errno.
int gw_pidfd_send_signal(int pidfd, int signal);

/// posix_spawn(2) of `path` with stdin from /dev/null, stdout and stderr appended to
/// `output_path`, every other fd closed, signal mask and dispositions reset. For tests and
/// tools that start programs which exec again (Foundation's Process mistakes an exec for an
/// exit and then blocks every other Process on it). Returns 0 or an errno value.
int gw_spawn_with_output(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *output_path);

/// prctl(PR_SET_PDEATHSIG, signal) (prctl is variadic: Swift cannot call it). The signal comes
/// when the *thread* that spawned this process ends, not its whole process; it is cleared by
/// fork and by any change of effective uid or gid. Returns 0 or -1 with errno set.
int gw_set_parent_death_signal(int signal);

/// close_range(first, ~0U, CLOSE_RANGE_CLOEXEC): marks every fd from `first` up close-on-exec,
/// including those libraries opened without it. Returns 0 or -1 with errno set.
int gw_set_cloexec_from(unsigned int first);

/// The layout of struct ucred, for callers that read SO_PEERCRED themselves.
typedef struct gw_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} gw_ucred;

/// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING). Returns the fd, or -1 with errno set.
int gw_memfd_create(const char *name);

/// Seals a memfd's size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): no process that holds the
/// fd can truncate it under the others' mappings (a SIGBUS on their next access).
/// Returns 0 or -1 with errno set.
int gw_memfd_seal_size(int fd);

// 64-bit atomics on a raw pointer, for words in memory that several processes map
// (MAP_SHARED). Swift's Synchronization.Atomic needs storage of its own type; these work on
// any 8-byte-aligned address. __atomic builtins on 8-byte values are lock-free on x86-64 and
// aarch64 (a lock inside libatomic would be per process, useless across processes).
// `static inline`, so Swift inlines them: a counter increment is one `lock xadd`.

static inline uint64_t gw_atomic_load_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline uint64_t gw_atomic_load_relaxed_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void gw_atomic_store_u64(uint64_t *p, uint64_t value) {
    __atomic_store_n(p, value, __ATOMIC_RELEASE);
}

/// Compare-and-swap. Returns 1 if `*p` was `*expected` and is now `desired`; otherwise 0,
/// and `*expected` holds the current value.
static inline int gw_atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/// Adds and returns the previous value. Relaxed: a counter orders nothing else.
static inline uint64_t gw_atomic_fetch_add_u64(uint64_t *p, uint64_t value) {
    return __atomic_fetch_add(p, value, __ATOMIC_RELAXED);
}

/// gatewayd's version, set at build time (see shim.c): the same string for gatewayd and gatewayctl.
const char *gw_version(void);

_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0), "64-bit atomics must be lock-free");

#endif

// The little that Swift cannot import from glibc: the CMSG_* macros (SCM_RIGHTS),
// struct ucred (SO_PEERCRED, needs _GNU_SOURCE), close_range and
// posix_spawn_file_actions_addclosefrom_np (glibc >= 2.34, behind __USE_MISC).
#ifndef GATEWAYD_SHIM_H
#define GATEWAYD_SHIM_H

#include <stddef.h>
#include <sys/types.h>

/// The most fds one SCM_RIGHTS message may carry on Linux (SCM_MAX_FD - 2 in practice:
/// measured here, 253 passes and 254 fails with EINVAL).
#define GW_MAX_FDS_PER_MESSAGE 253

/// sendmsg(2) of `len` bytes with `nfds` fds attached as SCM_RIGHTS, MSG_NOSIGNAL.
/// Returns the bytes sent, or -1 with errno set. Does not retry EINTR.
ssize_t gw_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// recvmsg(2) into `buf`, collecting at most `maxfds` received fds into `fds` (with
/// MSG_CMSG_CLOEXEC, so they never leak into children). `*nfds` gets the number received.
/// `*truncated` is set when the kernel dropped control data (MSG_CTRUNC).
/// Returns the bytes read (0 at EOF), or -1 with errno set. Does not retry EINTR.
ssize_t gw_recvmsg_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);

/// getsockopt(SO_PEERCRED). Returns 0 or -1 with errno set.
int gw_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/// posix_spawn(2) of `path` with the child's fd 3 a copy of `channel_fd` and every other
/// fd above 2 closed (closefrom), the signal mask emptied and every signal set to its
/// default. Returns 0 or an errno value (posix_spawn does not set errno).
int gw_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[], int channel_fd);

/// posix_spawn(2) of `path` with stdin from /dev/null, stdout and stderr appended to
/// `output_path`, every other fd closed, signal mask and dispositions reset. For tests and
/// tools that start programs which exec again (Foundation's Process mistakes an exec for an
/// exit and then blocks every other Process on it). Returns 0 or an errno value.
int gw_spawn_with_output(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *output_path);

/// The layout of struct ucred, for callers that read SO_PEERCRED themselves.
typedef struct gw_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} gw_ucred;

#endif

#define _GNU_SOURCE
#include "gateway_shim.h"

#include <errno.h>
#include <linux/close_range.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

ssize_t gw_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > GW_MAX_FDS_PER_MESSAGE) {
        errno = EINVAL;
        return -1;
    }
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;

    union {
        char buf[CMSG_SPACE(sizeof(int) * GW_MAX_FDS_PER_MESSAGE)];
        struct cmsghdr align;
    } control;
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

ssize_t gw_recvmsg_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated) {
    *nfds = 0;
    *truncated = 0;
    if (maxfds < 0 || maxfds > GW_MAX_FDS_PER_MESSAGE) {
        errno = EINVAL;
        return -1;
    }
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    union {
        char buf[CMSG_SPACE(sizeof(int) * GW_MAX_FDS_PER_MESSAGE)];
        struct cmsghdr align;
    } control;
    msg.msg_control = control.buf;
    // Room for maxfds and no more: the kernel never installs fds that do not fit (it releases
    // them and sets MSG_CTRUNC). With 0 only a header fits, and no fd enters this process.
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)maxfds);

    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
        return n;
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        *truncated = 1;
    }
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *received = (int *)CMSG_DATA(cmsg);
        for (size_t i = 0; i < count; i++) {
            if (*nfds < maxfds) {
                fds[(*nfds)++] = received[i];
            } else {
                // More fds than the caller can hold: never leak them.
                close(received[i]);
                *truncated = 1;
            }
        }
    }
    return n;
}

int gw_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t size = sizeof(cred);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) {
        return -1;
    }
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

/// Both spawns start the child with an empty signal mask and every signal at its default:
/// the master (or a test runner) may block or ignore signals the child needs.
static int gw_spawn_prepare(posix_spawn_file_actions_t *actions, posix_spawnattr_t *attr) {
    int rc = posix_spawn_file_actions_init(actions);
    if (rc != 0) {
        return rc;
    }
    rc = posix_spawnattr_init(attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(actions);
        return rc;
    }
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    if ((rc = posix_spawnattr_setsigmask(attr, &empty)) != 0 || (rc = posix_spawnattr_setsigdefault(attr, &all)) != 0
        || (rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) != 0) {
        posix_spawnattr_destroy(attr);
        posix_spawn_file_actions_destroy(actions);
    }
    return rc;
}

int gw_spawn_worker(pid_t *pid, const char *path, char *const argv[], char *const envp[], int channel_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = gw_spawn_prepare(&actions, &attr);
    if (rc != 0) {
        return rc;
    }
    // dup2 clears FD_CLOEXEC on the copy, so fd 3 survives exec. When channel_fd is already 3,
    // dup2 would be a no-op that keeps the flag: move it out of the way first.
    int moved = -1;
    if (channel_fd == 3) {
        moved = fcntl(channel_fd, F_DUPFD_CLOEXEC, 4);
        if (moved < 0) {
            rc = errno;
            goto out;
        }
        channel_fd = moved;
    }
    if ((rc = posix_spawn_file_actions_adddup2(&actions, channel_fd, 3)) != 0) goto out;
    // Belt and braces over CLOEXEC: a worker holds fds 0-3 and nothing else of the master's.
    if ((rc = posix_spawn_file_actions_addclosefrom_np(&actions, 4)) != 0) goto out;
    rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
out:
    if (moved >= 0) close(moved);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int gw_spawn_sibling(pid_t *pid, int *pidfd, const char *path, char *const argv[], char *const envp[],
                     int channel_fd) {
    if (getpid() == 1) {
        return EINVAL;
    }
    // The exec's error comes back on a pipe that the exec closes (CLOEXEC); its fds are kept
    // above 3, where the channel goes.
    int error_pipe[2];
    if (pipe2(error_pipe, O_CLOEXEC) != 0) {
        return errno;
    }
    for (int i = 0; i < 2; i++) {
        if (error_pipe[i] <= 3) {
            int moved = fcntl(error_pipe[i], F_DUPFD_CLOEXEC, 4);
            int saved = errno;
            close(error_pipe[i]);
            error_pipe[i] = moved;
            if (moved < 0) {
                close(error_pipe[1 - i]);
                return saved;
            }
        }
    }
    // No handler may run in the child before exec: every signal blocked around the clone.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int fd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    // No CLONE_VM: a copy-on-write child, in which only async-signal-safe calls are made;
    // CLONE_VFORK: the caller waits until the exec, so the pipe has the answer when it reads.
    args.flags = CLONE_PARENT | CLONE_PIDFD | CLONE_VFORK;
    args.pidfd = (uint64_t)(uintptr_t)&fd;
    // 0, as clone3 requires with CLONE_PARENT: the child takes the caller's own exit signal
    // (SIGCHLD), which goes to the caller's parent, now its parent too.
    args.exit_signal = 0;
    long rc = syscall(SYS_clone3, &args, sizeof(args));
    if (rc < 0 && (errno == ENOSYS || errno == EPERM)) {
        // systemd's seccomp filters (SystemCallFilter=, RestrictNamespaces=) make clone3 fail
        // with ENOSYS, since they cannot see its flags; clone(2) takes the same ones in a
        // register. parent_tid (third on x86-64 and arm64 alike) receives the pidfd; with
        // CLONE_PARENT the exit signal is the caller's own, whatever is passed.
        rc = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | CLONE_PIDFD | CLONE_VFORK), 0UL, &fd, 0UL, 0UL);
    }
    if (rc == 0) {
        struct sigaction action;
        memset(&action, 0, sizeof(action));
        action.sa_handler = SIG_DFL;
        for (int signal = 1; signal < NSIG; signal++) {
            sigaction(signal, &action, NULL);
        }
        int failed = 0;
        if (channel_fd == 3) {
            failed = fcntl(3, F_SETFD, 0) != 0;
        } else {
            failed = dup2(channel_fd, 3) != 3;
        }
        if (!failed) {
            failed = syscall(SYS_close_range, 4, ~0U, CLOSE_RANGE_CLOEXEC) != 0;
        }
        sigset_t none;
        sigemptyset(&none);
        if (!failed) {
            pthread_sigmask(SIG_SETMASK, &none, NULL);
            execve(path, argv, envp);
        }
        int error = errno;
        ssize_t ignored = write(error_pipe[1], &error, sizeof(error));
        (void)ignored;
        _exit(127);
    }
    int clone_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(error_pipe[1]);
    if (rc < 0) {
        close(error_pipe[0]);
        return clone_error;
    }
    int exec_error = 0;
    ssize_t n;
    do {
        n = read(error_pipe[0], &exec_error, sizeof(exec_error));
    } while (n < 0 && errno == EINTR);
    close(error_pipe[0]);
    if (n == sizeof(exec_error)) {
        // The child exits; its parent (the caller's) reaps it.
        close(fd);
        return exec_error;
    }
    *pid = (pid_t)rc;
    *pidfd = fd;
    return 0;
}

int gw_pidfd_send_signal(int pidfd, int signal) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
}

int gw_spawn_with_output(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *output_path) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = gw_spawn_prepare(&actions, &attr);
    if (rc != 0) {
        return rc;
    }
    if ((rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)) != 0) goto out;
    if ((rc = posix_spawn_file_actions_addopen(&actions, 1, output_path, O_WRONLY | O_APPEND | O_CREAT, 0644)) != 0) goto out;
    if ((rc = posix_spawn_file_actions_adddup2(&actions, 1, 2)) != 0) goto out;
    if ((rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) != 0) goto out;
    rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
out:
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int gw_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

int gw_memfd_seal_size(int fd) {
    return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

int gw_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

int gw_set_cloexec_from(unsigned int first) {
    return close_range(first, ~0U, CLOSE_RANGE_CLOEXEC);
}

// The version: `make` writes gatewayd_version.h (GATEWAYD_VERSION, from `git describe` when
// there is a checkout) into its build directory and adds that directory to the include path,
// so a new commit recompiles this file alone and the tree stays clean. -DGATEWAYD_VERSION=...
// works too. A plain `swift build` has neither.
#if __has_include("gatewayd_version.h")
#include "gatewayd_version.h"
#endif
#ifndef GATEWAYD_VERSION
#define GATEWAYD_VERSION "unknown (built without make)"
#endif

const char *gw_version(void) { return GATEWAYD_VERSION; }

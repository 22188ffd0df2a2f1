import CGatewayShim
import Foundation
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A process started by the master with a handoff channel as its fd 3.
public struct SpawnedProcess: Sendable {
    public var pid: pid_t
    public var channel: HandoffChannel

    public init(pid: pid_t, channel: HandoffChannel) {
        self.pid = pid
        self.channel = channel
    }
}

/// Starts, signals and reaps worker processes. A protocol so the reload state machine can be
/// tested with in-process fake workers as well as with real ones.
public protocol ProcessSpawning: Sendable {
    func spawn(arguments: [String], environment: [String]) throws(SystemCallError) -> SpawnedProcess
    /// kill(2).
    func signal(_ signal: CInt, to pid: pid_t)
    /// Blocks until the process has exited, without reaping it: until `reap`, the pid stays
    /// taken, so a signal sent meanwhile cannot reach a stranger that got the pid recycled.
    func waitForExit(pid: pid_t)
    /// Reaps a process that `waitForExit` saw exit; returns how it ended.
    func reap(pid: pid_t) -> ExitStatus
}

extension ProcessSpawning {
    public func signal(_ signal: CInt, to pid: pid_t) {
        _ = kill(pid, signal)
    }

    public func waitForExit(pid: pid_t) {
        var info = siginfo_t()
        _ = try? syscall("waitid", on: "pid \(pid)") {
            waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT)
        }
    }

    public func reap(pid: pid_t) -> ExitStatus {
        (try? GatewayCore.waitForExit(pid: pid)) ?? .exited(-1)
    }
}

/// posix_spawn of an executable with a fresh socketpair as the child's fd 3 and nothing else
/// inherited (closefrom(4)), signal mask and dispositions reset.
///
/// Foundation's `Process` is not used: it leaks one of its own sockets into every child and
/// cannot pass extra fds (measured); swift-subprocess 1.0.2 cannot pass extra fds on Linux.
public struct ProcessSpawner: ProcessSpawning {
    public var executable: String

    /// `/proc/self/exe` names the master's own binary even after a package upgrade replaced
    /// the file on disk, so master and workers always speak the same protocol version.
    public init(executable: String = "/proc/self/exe") {
        self.executable = executable
    }

    public func spawn(arguments: [String], environment: [String]) throws(SystemCallError) -> SpawnedProcess {
        let (channel, workerEnd) = try HandoffChannel.makePair()
        defer { closeDescriptor(workerEnd) }
        let executable = self.executable
        let (rc, pid) = SpawnThread.shared.run { () -> (CInt, pid_t) in
            var pid: pid_t = 0
            let argv = arguments.map { strdup($0) } + [nil]
            let envp = environment.map { strdup($0) } + [nil]
            defer {
                for p in argv { free(p) }
                for p in envp { free(p) }
            }
            let rc = gw_spawn_worker(&pid, executable, argv, envp, workerEnd)
            return (rc, pid)
        }
        if rc != 0 {
            channel.close()
            throw SystemCallError("posix_spawn", on: executable, errno: Errno(rawValue: rc))
        }
        return SpawnedProcess(pid: pid, channel: channel)
    }
}

/// A process started as this one's sibling (`spawnSibling`): its parent is this process's
/// parent, not this process. It is held by a pidfd, so signals reach it and nothing else
/// whoever gets its pid later, and its exit can be watched; it cannot be waited for, and its
/// exit status goes to its parent.
public final class SiblingProcess: Sendable {
    public let pid: pid_t
    private let pidfd: Mutex<CInt?>

    init(pid: pid_t, pidfd: CInt) {
        self.pid = pid
        self.pidfd = Mutex(pidfd)
    }

    deinit {
        if let fd = pidfd.withLock({ $0 }) { closeDescriptor(fd) }
    }

    /// Starts `executable` as this process's sibling (clone3 with CLONE_PARENT), with
    /// `descriptor` as its fd 3 and nothing else of this process's above fd 2, signal mask and
    /// dispositions reset. A service's main process starts its successor this way: systemd,
    /// the parent of both, can then take the new one for its main process and see it exit.
    /// EINVAL for PID 1 (a container's init), which has no parent to share.
    public static func spawn(
        executable: String, arguments: [String], environment: [String], descriptor: CInt
    ) throws(SystemCallError) -> SiblingProcess {
        var pid: pid_t = 0
        var pidfd: CInt = -1
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        let rc = gw_spawn_sibling(&pid, &pidfd, executable, argv, envp, descriptor)
        guard rc == 0 else {
            throw SystemCallError("clone CLONE_PARENT, execve", on: executable, errno: Errno(rawValue: rc))
        }
        return SiblingProcess(pid: pid, pidfd: pidfd)
    }

    /// pidfd_send_signal(2); nothing once the process is known to be gone.
    public func signal(_ signal: CInt) {
        pidfd.withLock { fd in
            if let fd { _ = gw_pidfd_send_signal(fd, signal) }
        }
    }

    /// Blocks until the process has exited.
    public func waitForExit() {
        guard let copy = pidfd.withLock({ fd in fd.map { fcntl($0, F_DUPFD_CLOEXEC, 0) } }), copy >= 0 else { return }
        defer { closeDescriptor(copy) }
        var entry = pollfd(fd: copy, events: Int16(POLLIN), revents: 0)
        while poll(&entry, 1, -1) < 0 && errno == EINTR {}
    }

    /// Whether the process has exited (its pidfd is readable).
    public var hasExited: Bool {
        pidfd.withLock { fd in
            guard let fd else { return true }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            return poll(&entry, 1, 0) > 0
        }
    }
}

/// The one thread that starts workers, for the master's whole life.
///
/// A worker's parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that spawned it
/// ends, not when the master does; the concurrency pool's and Dispatch's threads come and go,
/// so a worker spawned from one of them would be told its master died while it lives.
final class SpawnThread: Sendable {
    static let shared = SpawnThread()

    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let pending = DispatchSemaphore(value: 0)

    private init() {
        Thread.detachNewThread { [self] in
            while true {
                pending.wait()
                let job = jobs.withLock { $0.removeFirst() }
                job()
            }
        }
    }

    /// Runs `body` on the spawn thread and waits for its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        let outcome = Outcome<T>()
        jobs.withLock {
            $0.append {
                outcome.value.withLock { $0 = body() }
                outcome.done.signal()
            }
        }
        pending.signal()
        outcome.done.wait()
        return outcome.value.withLock { $0! }
    }

    private final class Outcome<T: Sendable>: Sendable {
        let value = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
    }
}

/// How a child ended, from waitpid's status.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public init(waitStatus status: Int32) {
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        if status & 0x7f == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .signaled(status & 0x7f)
        }
    }

    public var isSuccess: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .signaled(let signal):
            let name = strsignal(signal).map { String(cString: $0) } ?? "signal \(signal)"
            return "killed by signal \(signal) (\(name))"
        }
    }
}

/// Blocking waitpid(2) for one child, retrying EINTR.
public func waitForExit(pid: pid_t) throws(SystemCallError) -> ExitStatus {
    var status: Int32 = 0
    try syscall("waitpid", on: "pid \(pid)") { waitpid(pid, &status, 0) }
    return ExitStatus(waitStatus: status)
}

/// Whether a process runs. An exited process that its parent has not reaped yet (a zombie)
/// still answers kill(pid, 0); /proc tells them apart.
public func isProcessRunning(_ pid: pid_t) -> Bool {
    ProcessIdentity.running(pid: pid) != nil
}

import Foundation
import GatewayCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// In-process stand-ins for worker processes: each is a thread on the worker end of a real
/// socketpair, speaking the real handoff protocol, with a scripted behaviour. Signals and
/// reaping go to the script instead of the kernel, so the reload state machine runs for real
/// in milliseconds.
final class FakeSpawner: ProcessSpawning, Sendable {
    enum Behavior: Sendable {
        /// Ready at once; on drain, confirms and exits after `drainTime`.
        case healthy(drainTime: Duration = .zero)
        /// Ready after a delay.
        case slowReady(Duration)
        /// Reports `failed` and exits with status 1.
        case failsAtStart(String)
        /// Never reports ready (until signalled).
        case neverReady
        /// Confirms the drain but keeps its connections until signalled.
        case drainsForever
        /// Reports ready, then exits with status 3 as soon as `releaseHeldExits` is called.
        case readyThenExitWhenReleased
    }

    struct Record: Sendable {
        var pid: pid_t
        /// Known once the handoff's hello arrived (0 for a spare still waiting).
        var generation = 0
        var index = 0
        var signals: [CInt] = []
        var drained = false
        var exited = false
        /// The shared segment it was handed: inode of the memfd (the same segment for every
        /// worker has one inode), and whether it mapped as the handoff described it.
        var sharedMemoryInode: UInt64 = 0
        var sharedMemoryMapped = false
    }

    private struct State {
        var nextPid: pid_t = 4_000_000
        var records: [pid_t: Record] = [:]
        var exits: [pid_t: ExitStatus] = [:]
        var stops: [pid_t: HandoffChannel] = [:]
        var exitsReleased = false
    }

    private let state = Mutex(State())
    private let behavior: @Sendable (_ generation: Int, _ index: Int) -> Behavior

    init(behavior: @escaping @Sendable (_ generation: Int, _ index: Int) -> Behavior) {
        self.behavior = behavior
    }

    /// Lets every `readyThenExitWhenReleased` worker exit.
    func releaseHeldExits() {
        state.withLock { $0.exitsReleased = true }
    }

    var records: [Record] { state.withLock { Array($0.records.values).sorted { $0.pid < $1.pid } } }
    func records(generation: Int) -> [Record] { records.filter { $0.generation == generation } }

    func spawn(arguments: [String], environment: [String]) throws(SystemCallError) -> SpawnedProcess {
        let (master, workerEnd) = try HandoffChannel.makePair()
        let channel = HandoffChannel(descriptor: workerEnd)
        let pid = state.withLock { state -> pid_t in
            state.nextPid += 1
            state.records[state.nextPid] = Record(pid: state.nextPid)
            state.stops[state.nextPid] = channel
            return state.nextPid
        }
        Thread.detachNewThread { [self] in
            let status = run(pid: pid, channel: channel)
            state.withLock { state in
                state.exits[pid] = status
                state.records[pid]?.exited = true
            }
            // Closing our end is how the master learns we are gone, as with a real exit.
            channel.shutdown()
            channel.close()
        }
        return SpawnedProcess(pid: pid, channel: master)
    }

    func signal(_ signal: CInt, to pid: pid_t) {
        let channel = state.withLock { state -> HandoffChannel? in
            state.records[pid]?.signals.append(signal)
            return state.stops[pid]
        }
        // SIGTERM and SIGKILL both end a fake at once: it stops reading.
        channel?.shutdown()
    }

    func waitForExit(pid: pid_t) {
        while state.withLock({ $0.exits[pid] }) == nil {
            usleep(1_000)
        }
    }

    func reap(pid: pid_t) -> ExitStatus {
        state.withLock { $0.exits[pid] } ?? .exited(-1)
    }

    private func run(pid: pid_t, channel: HandoffChannel) -> ExitStatus {
        // The handoff, as a worker receives it: the hello says who it is.
        var script: Behavior?
        do {
            while let (message, fds) = try channel.receive() {
                defer { for fd in fds { closeDescriptor(fd) } }
                if case .sharedMemory(let segment) = message, let fd = fds.first {
                    var info = stat()
                    fstat(fd, &info)
                    let mapped = (try? SharedMemory.map(descriptor: fd, handoff: segment)) != nil
                    state.withLock {
                        $0.records[pid]?.sharedMemoryInode = UInt64(info.st_ino)
                        $0.records[pid]?.sharedMemoryMapped = mapped
                    }
                }
                if case .hello(let hello) = message {
                    state.withLock {
                        $0.records[pid]?.generation = hello.generation
                        $0.records[pid]?.index = hello.worker
                    }
                    script = behavior(hello.generation, hello.worker)
                }
                if case .start = message { break }
            }
        } catch {
            return .exited(2)
        }
        guard let script else { return .signaled(SIGTERM) }  // a spare stopped before its turn
        switch script {
        case .healthy, .drainsForever:
            try? channel.send(.ready(pid: pid))
        case .slowReady(let delay):
            Thread.sleep(
                forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18)
            try? channel.send(.ready(pid: pid))
        case .failsAtStart(let reason):
            try? channel.send(.failed(reason: reason))
            return .exited(1)
        case .readyThenExitWhenReleased:
            try? channel.send(.ready(pid: pid))
            while !state.withLock({ $0.exitsReleased }) { usleep(1_000) }
            return .exited(3)
        case .neverReady:
            break
        }
        while let (message, _) = (try? channel.receive()) ?? nil {
            guard message == .drain else { continue }
            state.withLock { $0.records[pid]?.drained = true }
            try? channel.send(.draining)
            if case .healthy(let drainTime) = script {
                Thread.sleep(
                    forTimeInterval: Double(drainTime.components.seconds) + Double(drainTime.components.attoseconds)
                        / 1e18)
                return .exited(0)
            }
        }
        // The channel was shut down: a signal.
        return .signaled(SIGTERM)
    }
}

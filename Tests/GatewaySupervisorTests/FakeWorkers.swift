#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GatewayCore
import Synchronization

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
    }

    struct Record: Sendable {
        var pid: pid_t
        var generation: Int
        var index: Int
        var signals: [CInt] = []
        var drained = false
        var exited = false
    }

    private struct State {
        var nextPid: pid_t = 4_000_000
        var records: [pid_t: Record] = [:]
        var exits: [pid_t: ExitStatus] = [:]
        var stops: [pid_t: HandoffChannel] = [:]
    }

    private let state = Mutex(State())
    private let behavior: @Sendable (_ generation: Int, _ index: Int) -> Behavior

    init(behavior: @escaping @Sendable (_ generation: Int, _ index: Int) -> Behavior) {
        self.behavior = behavior
    }

    var records: [Record] { state.withLock { Array($0.records.values).sorted { $0.pid < $1.pid } } }
    func records(generation: Int) -> [Record] { records.filter { $0.generation == generation } }

    func spawn(arguments: [String], environment: [String]) throws(SystemCallError) -> SpawnedProcess {
        let (master, workerEnd) = try HandoffChannel.makePair()
        let generation = Int(arguments[arguments.firstIndex(of: "--generation")! + 1])!
        let index = Int(arguments[arguments.firstIndex(of: "--index")! + 1])!
        let channel = HandoffChannel(descriptor: workerEnd)
        let pid = state.withLock { state -> pid_t in
            state.nextPid += 1
            state.records[state.nextPid] = Record(pid: state.nextPid, generation: generation, index: index)
            state.stops[state.nextPid] = channel
            return state.nextPid
        }
        let script = behavior(generation, index)
        Thread.detachNewThread { [self] in
            let status = run(script, pid: pid, channel: channel)
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

    func waitForExit(pid: pid_t) -> ExitStatus {
        while true {
            if let status = state.withLock({ $0.exits[pid] }) { return status }
            usleep(1_000)
        }
    }

    private func run(_ script: Behavior, pid: pid_t, channel: HandoffChannel) -> ExitStatus {
        // The handoff, as a worker receives it.
        do {
            while let (message, fds) = try channel.receive() {
                for fd in fds { closeDescriptor(fd) }
                if case .start = message { break }
            }
        } catch {
            return .exited(2)
        }
        switch script {
        case .healthy, .drainsForever:
            try? channel.send(.ready(pid: pid))
        case .slowReady(let delay):
            Thread.sleep(forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18)
            try? channel.send(.ready(pid: pid))
        case .failsAtStart(let reason):
            try? channel.send(.failed(reason: reason))
            return .exited(1)
        case .neverReady:
            break
        }
        while let (message, _) = (try? channel.receive()) ?? nil {
            guard message == .drain else { continue }
            state.withLock { $0.records[pid]?.drained = true }
            try? channel.send(.draining)
            if case .healthy(let drainTime) = script {
                Thread.sleep(
                    forTimeInterval: Double(drainTime.components.seconds) + Double(drainTime.components.attoseconds) / 1e18)
                return .exited(0)
            }
        }
        // The channel was shut down: a signal.
        return .signaled(SIGTERM)
    }
}

import GatewayCore

/// The master's view of one worker process (tableflip's child.go). Owned by its `Generation`;
/// touched only from the master's actor.
final class Worker {
    enum State: String {
        /// Spawned, handoff sent, not ready yet.
        case starting
        case ready
        /// Told to drain; `stoppedAccepting` says whether it has confirmed.
        case draining
        /// SIGTERM sent (drain timeout, or stopped early).
        case terminating
        case exited
    }

    let generation: Int
    let index: Int
    let pid: Int32
    let channel: HandoffChannel
    let spawnedAt: ContinuousClock.Instant
    var state: State = .starting
    var connections = 0
    var stoppedAccepting = false
    /// The last `failed` message, for the reload's error.
    var failureReason: String?
    var exitStatus: ExitStatus?

    init(generation: Int, index: Int, process: SpawnedProcess) {
        self.generation = generation
        self.index = index
        self.pid = process.pid
        self.channel = process.channel
        self.spawnedAt = .now
    }

    var isAlive: Bool { state != .exited }
    var name: String { "worker \(index) (pid \(pid)) of generation \(generation)" }
}

/// What a worker's reader thread reports, in order.
enum WorkerEvent: Sendable {
    case message(HandoffMessage)
    /// The handoff or the channel broke; the worker will be (or was) stopped.
    case channelError(String)
    case exited(ExitStatus)
}

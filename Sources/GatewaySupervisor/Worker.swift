import Dispatch
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The master's view of one worker process (tableflip's child.go). Owned by its generation's
/// slot; touched only from the master's actor.
final class Worker {
    /// Linux's ceiling for fs.nr_open, and so for any process's fds (2^30): a worker cannot
    /// hold more connections, and a count above it is a lie. With at most 1024 workers a
    /// generation, sums of clamped counts stay far from Int.max (they saturate all the same).
    static let maximumConnections = 1 << 30

    let generation: Int
    let index: Int
    let pid: Int32
    let channel: HandoffChannel
    let spawnedAt: ContinuousClock.Instant
    /// Every write to the worker goes through this queue, in order: first the handoff, then
    /// `drain`, and last the close. The actor never blocks on a worker that does not read,
    /// a `drain` can never land inside the handoff, and the fd is never closed under a send.
    let outbox: DispatchQueue
    var state: WorkerState = .starting
    /// As reported, clamped to `0...maximumConnections`.
    var connections = 0
    /// Whether a count outside that range was logged (once per worker).
    var reportedImpossibleCount = false
    var stoppedAccepting = false
    /// The last `failed` message, for the reload's error.
    var failureReason: String?
    /// When the worker last sent anything, and whether it ever said ready: the worker
    /// watchdog judges only workers that did (before that, ready_timeout is the limit, and
    /// a worker heartbeats only once it serves).
    var lastHeard: ContinuousClock.Instant
    var reportedReady = false
    /// The version of the status page's snapshot last sent to it (`Master+StatusPage.swift`).
    var statusSnapshotVersion = 0

    init(generation: Int, index: Int, process: SpawnedProcess) {
        self.generation = generation
        self.index = index
        self.pid = process.pid
        self.channel = process.channel
        self.spawnedAt = .now
        self.lastHeard = spawnedAt
        self.outbox = DispatchQueue(label: "gatewayd.worker.\(process.pid).outbox")
    }

    /// Queues a message; a failure means the worker is gone, which its reader thread reports.
    func send(_ message: HandoffMessage, logger: Logger) {
        let channel = self.channel
        let name = self.name
        outbox.async {
            do {
                try channel.send(message)
            } catch {
                logger.debug("cannot send \(message.type) to \(name): \(error)")
            }
        }
    }

    /// Closes the master's end once every queued write is done.
    func closeChannel() {
        let channel = self.channel
        outbox.async { channel.close() }
    }

    /// SIGTERM now (close every connection and exit), SIGKILL after `Master.killGrace` if it
    /// is still there.
    func terminate(in master: isolated Master) {
        guard isAlive else { return }
        state = .terminating
        master.spawner.signal(SIGTERM, to: pid)
        let (generation, index, pid) = (self.generation, self.index, self.pid)
        master.after(Master.killGrace) { master in
            guard let worker = master.generations[generation]?.slots[index].worker, worker.pid == pid,
                worker.isAlive
            else { return }
            master.logger.warning(
                "\(worker.name) still alive \(DurationText.format(Master.killGrace)) after SIGTERM; sending SIGKILL")
            master.spawner.signal(SIGKILL, to: pid)
        }
    }

    var isAlive: Bool { state != .exited }
    var name: String { "worker \(index) (pid \(pid)) of generation \(generation)" }
}

/// What a worker's reader thread reports, in order.
enum WorkerEvent: Sendable {
    case message(HandoffMessage)
    /// The handoff or the channel broke; the worker will be (or was) stopped.
    case channelError(String)
    /// The process has exited; it is not reaped yet (see `ProcessSpawning.waitForExit`).
    case exited
}

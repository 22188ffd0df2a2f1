import GatewayConfig
import GatewayCore

/// One set of workers started from one config. It starts its workers and waits for them
/// (`Generation+Start.swift`), hears what they report (`Generation+Events.swift`), and drains
/// and ends them (`Generation+Drain.swift`). Owns its worker slots; owned by the master's
/// actor, and every method that acts runs on it (`in master: isolated Master`).
final class Generation {
    let id: Int
    let loaded: LoadedConfiguration
    let settings: EffectiveSettings
    let listeners: [ListenerTable.Listener]
    /// The access log's file when it is one, opened by the master for this generation: each
    /// worker's handoff sends a copy; closed when the generation is gone.
    let accessLog: AccessLogFile?
    let startedAt: ContinuousClock.Instant = .now
    let wallClockStart: Double
    var state: GenerationState = .starting
    /// One per worker index, in index order.
    var slots: [WorkerSlot]
    var drainStartedAt: ContinuousClock.Instant?
    /// The drain, for its event: the connections open when it began, the count last sent to
    /// followers, and how many drain_timeout cut (nil while none was).
    var drainConnectionsAtStart = 0
    var drainConnectionsPublished: Int?
    var drainCut: Int?

    /// Resumed once: every worker ready, one failed, or ready_timeout.
    var readyContinuation: CheckedContinuation<Result<Void, GenerationStartFailure>, Never>?
    /// Resumed when every worker has confirmed it stopped accepting (or the wait timed out).
    var stoppedAcceptingContinuation: CheckedContinuation<Void, Never>?

    init(
        id: Int, loaded: LoadedConfiguration, settings: EffectiveSettings, listeners: [ListenerTable.Listener],
        accessLog: AccessLogFile?, wallClockStart: Double
    ) {
        self.id = id
        self.loaded = loaded
        self.settings = settings
        self.listeners = listeners
        self.accessLog = accessLog
        self.wallClockStart = wallClockStart
        self.slots = (0..<settings.workers).map { WorkerSlot(index: $0) }
    }

    /// The worker of every slot that has one, in index order.
    var workers: [Worker] { slots.compactMap(\.worker) }
    var liveWorkers: [Worker] { workers.filter(\.isAlive) }
    var allReady: Bool { slots.allSatisfy { $0.worker?.state == .ready } }
    var connectionCount: Int { liveWorkers.map(\.connections).saturatingSum() }
    /// Only a generation on its way out can end: a serving generation whose workers all died
    /// is restarting them, not finished.
    var isFinished: Bool { (state == .draining || state == .failed) && liveWorkers.isEmpty }

    /// Why a serving generation is below strength, or nil: each slot that is (see
    /// `WorkerSlot.degradation`). Operators read this in `status` and in systemd's STATUS line.
    func degradation(countdown: Bool = true, now: ContinuousClock.Instant = .now) -> String? {
        guard state == .serving else { return nil }
        let reasons = slots.compactMap { $0.degradation(countdown: countdown, now: now) }
        return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
    }

    func resumeReady(_ result: Result<Void, GenerationStartFailure>) {
        readyContinuation?.resume(returning: result)
        readyContinuation = nil
    }

    func resumeStoppedAccepting() {
        stoppedAcceptingContinuation?.resume()
        stoppedAcceptingContinuation = nil
    }

    func status() -> StatusReport.Generation {
        StatusReport.Generation(
            id: id, state: state, startedAt: wallClockStart,
            workers: slots.compactMap { slot in
                slot.worker.map {
                    StatusReport.Worker(
                        index: $0.index, pid: $0.pid, state: $0.state, connections: $0.connections,
                        restarts: slot.restarts)
                }
            }, degraded: degradation())
    }
}

struct GenerationStartFailure: Error, Sendable, CustomStringConvertible {
    var description: String
}

extension Generation {
    /// The access log a new generation's workers write to, opened by the master (nil for
    /// `stdout`, `stderr` or none). Throws naming the path and why it cannot be opened.
    static func openAccessLog(for configuration: GatewayConfiguration) throws(SystemCallError) -> AccessLogFile? {
        guard let path = configuration.accessLog?.path, AccessLogFile.isFile(path) else { return nil }
        return try AccessLogFile(path: path)
    }
}

extension Sequence<Int> {
    /// The sum, or Int.max where it would overflow: counts come from workers, which may lie.
    func saturatingSum() -> Int {
        reduce(0) { total, next in
            let (sum, overflow) = total.addingReportingOverflow(next)
            return overflow ? .max : sum
        }
    }
}

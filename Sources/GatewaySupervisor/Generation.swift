import GatewayConfig
import GatewayCore

/// One set of workers started from one config. Owns its workers; owned by the master's actor.
final class Generation {
    enum State: String {
        /// Workers spawned, waiting for all of them to be ready.
        case starting
        case serving
        case draining
        /// Failed to start; its workers are being stopped.
        case failed
    }

    let id: Int
    let loaded: LoadedConfiguration
    let settings: EffectiveSettings
    let listeners: [ListenerTable.Listener]
    /// The access log's file when it is one, opened by the master for this generation: each
    /// worker's handoff sends a copy; closed when the generation is gone.
    let accessLog: AccessLogFile?
    let startedAt: ContinuousClock.Instant = .now
    let wallClockStart: Double
    var state: State = .starting
    /// By worker index; a restarted worker replaces its slot.
    var workers: [Int: Worker] = [:]
    /// Restarts per worker slot, and consecutive quick failures (for backoff).
    var restarts: [Int: Int] = [:]
    var consecutiveCrashes: [Int: Int] = [:]
    /// When each dead slot's next restart is due (for `status`).
    var restartDue: [Int: ContinuousClock.Instant] = [:]
    /// Exited workers kept only until the generation ends (for accounting).
    var drainStartedAt: ContinuousClock.Instant?

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
    }

    var liveWorkers: [Worker] { workers.values.filter(\.isAlive).sorted { $0.index < $1.index } }
    var allReady: Bool { workers.count == settings.workers && workers.values.allSatisfy { $0.state == .ready } }
    var connectionCount: Int { liveWorkers.map(\.connections).saturatingSum() }
    /// Only a generation on its way out can end: a serving generation whose workers all died
    /// is restarting them, not finished.
    var isFinished: Bool { (state == .draining || state == .failed) && liveWorkers.isEmpty }

    /// Why a serving generation is below strength, or nil: a slot without a ready worker, or
    /// a slot whose worker keeps crashing and has not yet lived `stableAfter` since its last
    /// restart. Operators read this in `status` and in systemd's STATUS line.
    /// `countdown` adds when a down slot's restart is due: for `status`, not for the STATUS line
    /// (which would change every tick).
    func degradation(
        crashLoopAfter: Int, stableAfter: Duration, countdown: Bool = true, now: ContinuousClock.Instant = .now
    ) -> String? {
        guard state == .serving else { return nil }
        var reasons: [String] = []
        for index in 0..<settings.workers {
            let crashes = consecutiveCrashes[index] ?? 0
            let inARow = crashes == 0 ? "" : " (\(crashes) crash\(crashes == 1 ? "" : "es") in a row)"
            guard let worker = workers[index], worker.isAlive else {
                let due = countdown ? restartDue[index].map { max(.zero, $0 - now) } : nil
                let next = due.map { ", restart in \(Int($0.milliseconds)) ms" } ?? ""
                reasons.append("worker \(index) down\(inARow)\(next)")
                continue
            }
            if worker.state != .ready {
                reasons.append("worker \(index) restarting\(inARow)")
            } else if crashes >= crashLoopAfter, now - worker.spawnedAt < stableAfter {
                reasons.append("worker \(index) crash-looping\(inARow)")
            }
        }
        return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
    }

    func resumeReady(_ result: Result<Void, GenerationStartFailure>) {
        readyContinuation?.resume(returning: result)
        readyContinuation = nil
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

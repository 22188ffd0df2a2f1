/// One worker index of a generation: the worker in it now, and how its restarts went. A
/// serving generation keeps every slot filled; when a slot's worker dies, the slot decides
/// how long to wait before the next one (the restart backoff) and whether it is crash-looping.
struct WorkerSlot {
    /// Restart backoff for a crashing serving worker: 100 ms doubling up to 10 s, reset after a
    /// worker has lived 10 s. Fast enough that a one-off crash is invisible, slow enough that
    /// a crash loop does not eat a core.
    static let backoffBase: Duration = .milliseconds(100)
    static let backoffCap: Duration = .seconds(10)
    static let stableAfter: Duration = .seconds(10)
    /// Three quick crashes in a row is a loop, not bad luck: one SIGKILL or OOM kill is a
    /// single crash, and two is rare enough (the second one is ≥100 ms after the restart).
    static let crashLoopAfter = 3

    let index: Int
    /// The worker in the slot now; a restart replaces it. nil until the first is started.
    var worker: Worker?
    var restarts = 0
    /// Quick failures in a row (each within `stableAfter` of its start), for the backoff.
    var consecutiveCrashes = 0
    /// When the next restart is due while the slot is down (for `status`).
    var restartDue: ContinuousClock.Instant?

    init(index: Int) {
        self.index = index
    }

    /// Its worker died after living `lived`: counts the crash and returns how long to wait
    /// before starting the next one.
    mutating func crashed(afterLiving lived: Duration, now: ContinuousClock.Instant = .now) -> Duration {
        consecutiveCrashes = lived >= Self.stableAfter ? 1 : consecutiveCrashes + 1
        var delay = Self.backoffBase
        for _ in 1..<consecutiveCrashes where delay < Self.backoffCap { delay *= 2 }
        delay = min(delay, Self.backoffCap)
        restartDue = now + delay
        return delay
    }

    /// The crash just counted made this a crash loop (said once, at the crash that does).
    var becameCrashLoop: Bool { consecutiveCrashes == Self.crashLoopAfter }

    mutating func restarting() {
        restarts += 1
        restartDue = nil
    }

    /// Why the slot is below strength, or nil: no ready worker, or one that keeps crashing and
    /// has not yet lived `stableAfter` since its last restart. `countdown` adds when a down
    /// slot's restart is due (for `status`, not for systemd's STATUS line, which would change
    /// every tick).
    func degradation(countdown: Bool, now: ContinuousClock.Instant) -> String? {
        let crashes = consecutiveCrashes
        let inARow = crashes == 0 ? "" : " (\(crashes) crash\(crashes == 1 ? "" : "es") in a row)"
        guard let worker, worker.isAlive else {
            let due = countdown ? restartDue.map { max(.zero, $0 - now) } : nil
            let next = due.map { ", restart in \(Int($0.milliseconds)) ms" } ?? ""
            return "worker \(index) down\(inARow)\(next)"
        }
        if worker.state != .ready {
            return "worker \(index) restarting\(inARow)"
        }
        if crashes >= Self.crashLoopAfter, now - worker.spawnedAt < Self.stableAfter {
            return "worker \(index) crash-looping\(inARow)"
        }
        return nil
    }
}

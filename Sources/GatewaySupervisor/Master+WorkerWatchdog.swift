import GatewayConfig
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// The worker watchdog: a worker that has said ready reports to the master at least twice a
/// second, from a thread that only speaks while the worker's event loop keeps running. A
/// stopped (SIGSTOP, a debugger) or stuck worker falls silent, keeps the connections it
/// holds hanging, and would never be noticed otherwise: the listening socket is shared, so
/// the other workers take the new connections and nothing else looks wrong. Past
/// `worker_watchdog_timeout` of silence it is killed; a serving one is restarted like any
/// crashed worker.
extension Master {
    /// How often the master looks: a quarter of the smallest timeout allowed (2 s), so a
    /// silent worker is killed within 0.5 s of its timeout.
    static let workerWatchdogPeriod: Duration = .milliseconds(500)

    func startWorkerWatchdog() {
        Task { [weak self] in
            var lastTick = ContinuousClock.now
            while let self {
                let now = ContinuousClock.now
                // A tick this late means the master itself was not running (the whole unit
                // frozen, a VM paused, the machine suspended): the workers' silence is the
                // master's own, so every worker gets a fresh start instead of a SIGKILL.
                let paused = now - lastTick > Self.workerWatchdogPeriod * 3
                lastTick = now
                guard await self.checkSilentWorkers(afterPause: paused) else { return }
                try? await Task.sleep(for: Self.workerWatchdogPeriod)
            }
        }
    }

    /// Kills every worker that reported ready and has been silent for longer than its
    /// generation's worker_watchdog_timeout. False once the master has stopped.
    private func checkSilentWorkers(afterPause paused: Bool) -> Bool {
        guard state != .stopped else { return false }
        let now = ContinuousClock.now
        for generation in generations.values {
            let limit = generation.settings.workerWatchdogTimeout
            for worker in generation.liveWorkers
            where worker.reportedReady && (worker.state == .ready || worker.state == .draining) {
                if paused {
                    worker.lastHeard = now
                    continue
                }
                let silence = now - worker.lastHeard
                guard silence > limit else { continue }
                let reason =
                    "silent for \(DurationText.format(silence)) (stopped, or its event loop is stuck): killed by the worker watchdog (worker_watchdog_timeout \(DurationText.format(limit)))"
                worker.failureReason = reason
                worker.state = .terminating
                logger.error("\(worker.name) \(reason)")
                var event = newEvent(.watchdogKill)
                event.generation = generation.id
                event.worker = worker.index
                event.pid = worker.pid
                event.reason = reason
                record(event)
                spawner.signal(SIGKILL, to: worker.pid)
            }
        }
        // The gauges follow the generations at this pace too.
        metrics?.sample(generations.values)
        publishStatusPage()
        // The degraded text changes with time alone (a crash loop ends after 10 s of life, a
        // restart comes due): systemd's STATUS follows it here, not only on events.
        notifyStatusIfChanged()
        return true
    }
}

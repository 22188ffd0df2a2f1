import GatewayConfig
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// The worker watchdog: a worker that has said ready reports to the master at least once a
/// second, from a thread that only speaks while the worker's event loop keeps running. A
/// stopped (SIGSTOP, a debugger) or stuck worker falls silent, keeps the connections it
/// holds hanging, and would never be noticed otherwise: the listening socket is shared, so
/// the other workers take the new connections and nothing else looks wrong. Past
/// `worker_watchdog_timeout` of silence it is killed; a serving one is restarted like any
/// crashed worker.
extension Master {
    /// How often the master looks: a tenth of the smallest timeout allowed (2 s) is more
    /// precise than needed; once a second costs nothing and kills within 1 s of the timeout.
    static let workerWatchdogPeriod: Duration = .seconds(1)

    func startWorkerWatchdog() {
        Task { [weak self] in
            while let self, await self.checkSilentWorkers() {
                try? await Task.sleep(for: Self.workerWatchdogPeriod)
            }
        }
    }

    /// Kills every ready or draining worker silent for longer than its generation's
    /// worker_watchdog_timeout. False once the master has stopped (the watchdog ends).
    private func checkSilentWorkers() -> Bool {
        guard state != .stopped else { return false }
        let now = ContinuousClock.now
        for generation in generations.values {
            let limit = generation.settings.workerWatchdogTimeout
            for worker in generation.liveWorkers where worker.state == .ready || worker.state == .draining {
                let silence = now - worker.lastHeard
                guard silence > limit else { continue }
                let reason =
                    "silent for \(DurationText.format(silence)) (stopped, or its event loop is stuck): killed by the worker watchdog (worker_watchdog_timeout \(DurationText.format(limit)))"
                worker.failureReason = reason
                worker.state = .terminating
                logger.error("\(worker.name) \(reason)")
                spawner.signal(SIGKILL, to: worker.pid)
            }
        }
        return true
    }
}

import GatewayCore
import Logging

extension Master {
    /// Whether the master is on its way out: stopping, gracefully or now.
    var isEnding: Bool { state == .stopping || state == .stoppingNow }

    /// Graceful: every generation drains, then the master exits. Now: every worker gets
    /// SIGTERM (SIGKILL after a grace). A graceful stop already under way can be escalated.
    public func stop(now: Bool) async {
        switch state {
        case .stopped, .stoppingNow:
            return
        case .stopping where !now:
            return
        default:
            break
        }
        let wasStarting = state == .starting
        state = now ? .stoppingNow : .stopping
        logger.info(now ? "stopping now" : "stopping gracefully: draining every generation")
        notifier.stopping(status: now ? "stopping now" : "stopping: draining")
        // The drain may take up to the longest drain_timeout of any generation (each drains
        // under the config it was started with), then the kill grace: ask systemd for that
        // much (with a margin for the exit itself), so TimeoutStopSec= does not cut it.
        let longestDrain = now ? .zero : generations.values.map(\.settings.drainTimeout).max() ?? settings.drainTimeout
        notifier.extendTimeout(by: longestDrain + Self.killGrace + .seconds(5))
        for waiter in reloadWaiters {
            waiter.continuation.resume(returning: .failed(reason: "gatewayd is stopping", details: []))
        }
        reloadWaiters.removeAll()
        stopSpares()
        // A generation still starting (generation 1, or a reload's) belongs to whoever waits
        // for it: waking them up makes them stop it (see `run` and `performReload`).
        for generation in generations.values where generation.state == .starting {
            generation.resumeReady(.failure(GenerationStartFailure(description: "gatewayd is stopping")))
        }
        if wasStarting { return }
        if now {
            for generation in generations.values { generation.terminateWorkers(in: self) }
        } else {
            for generation in generations.values.sorted(by: { $0.id < $1.id }) where generation.state == .serving {
                await generation.drain(reason: "gatewayd is stopping", in: self)
            }
        }
        checkStopComplete()
    }

    func checkStopComplete() {
        guard isEnding else { return }
        // A generation still starting is not done yet, even with no live worker: its owner
        // (run or performReload) has yet to wake up and abandon it.
        if spares.isEmpty, generations.values.allSatisfy({ $0.liveWorkers.isEmpty && $0.state != .starting }) {
            finish()
        }
    }

    /// Called when the stop sequence is complete.
    func finish() {
        guard state != .stopped else { return }
        state = .stopped
        listenerTable.closeAll()
        controlServer?.close()
        removePidFile()
        logger.info("stopped")
        finishedContinuation?.resume()
        finishedContinuation = nil
    }

    // MARK: - The end of a generation

    /// A generation whose last worker is gone: its sockets that no other generation uses are
    /// closed.
    func generationFinished(_ generation: Generation) {
        guard generations[generation.id] != nil else { return }
        generations[generation.id] = nil
        releaseListeners(of: generation)
        let took =
            generation.drainStartedAt.map { " after \(Int((ContinuousClock.now - $0).milliseconds)) ms of drain" } ?? ""
        logger.info("generation \(generation.id) ended\(took)")
        if state == .running { notifyStatusIfChanged() }
    }

    func releaseListeners(of generation: Generation) {
        for listener in listenerTable.release(generation: generation.id) {
            logger.info("closed listener \(listener.name) (\(listener.boundAddress)): no serving generation uses it")
            removeFromSystemdStore(listener)
        }
    }
}

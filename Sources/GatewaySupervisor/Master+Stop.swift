import GatewayCore
import Logging

extension Master {
    /// Whether the master is on its way out: stopping (gracefully or now), or draining what
    /// is left after an upgrade handed over.
    var isEnding: Bool { state == .stopping || state == .stoppingNow || state == .handedOver }

    /// Whether another master holds the sockets too and serves them on: this one handed over,
    /// or it is a new master that has not taken charge (yet, or ever).
    var sharesSocketsWithAnotherMaster: Bool { state == .handedOver || takeoverChannel != nil }

    /// Graceful: every generation drains, then the master exits. Now: every worker gets
    /// SIGTERM (SIGKILL after a grace). A graceful stop already under way can be escalated.
    /// An upgrade under way is abandoned: the new master drains what it may have accepted and
    /// exits, and this one stops as asked.
    /// `trigger` (and `peerUID`, for a control request) say who asked, in the stop's event.
    public func stop(now: Bool, trigger: String = "gatewayd", peerUID: UInt32? = nil) async {
        switch state {
        case .stopped, .stoppingNow:
            return
        case .stopping where !now:
            return
        case .handedOver:
            // Draining already, and the new master is in charge: only `now` changes anything.
            if now {
                logger.info("stopping now: terminating what is left of this master's generations")
                for generation in generations.values { generation.terminateWorkers(in: self) }
            }
            return
        default:
            break
        }
        let wasStarting = state == .starting
        var event = newEvent(.stop)
        event.trigger = trigger
        event.peerUID = peerUID
        event.reason = now ? "now" : "drain"
        record(event)
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
        abandonUpgrades(reason: "gatewayd began stopping during the upgrade")
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
        // A handed-over master also waits for the requests it passes on to the new one.
        if spares.isEmpty, generations.values.allSatisfy({ $0.liveWorkers.isEmpty && $0.state != .starting }),
            state != .handedOver || (forwardsInFlight == 0 && reloadWaiters.isEmpty && !operationRunning)
        {
            finish()
        }
    }

    /// Called when the stop sequence is complete.
    func finish() {
        guard state != .stopped else { return }
        state = .stopped
        // Followers first: their connections close while the control server still runs.
        endFollowers()
        listenerTable.closeAll()
        if let successor {
            // The control socket's file and the pid file are the new master's now.
            logger.info("stopped: master pid \(successor.pid) is in charge")
        } else {
            controlServer?.close()
            removePidFile()
            logger.info("stopped")
        }
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
        if let event = generation.drainEvent(in: self) {
            if reloadPhase == .idle { record(event) } else { eventsAfterReload.append(event) }
        }
        if state == .running { notifyStatusIfChanged() }
    }

    func releaseListeners(of generation: Generation) {
        for listener in listenerTable.release(generation: generation.id) {
            guard !sharesSocketsWithAnotherMaster else {
                logger.debug("closed this master's copy of listener \(listener.name); the other master has its own")
                continue
            }
            logger.info("closed listener \(listener.name) (\(listener.boundAddress)): no serving generation uses it")
            removeFromSystemdStore(listener)
        }
    }
}

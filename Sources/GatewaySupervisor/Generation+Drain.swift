import Foundation
import GatewayConfig
import GatewayCore

extension Generation {
    /// Tells every worker to drain and arms drain_timeout. Returns once every worker has
    /// confirmed that it stopped accepting (at most `Master.stopAcceptingTimeout`).
    func drain(reason: String, in master: isolated Master) async {
        guard drainStartedAt == nil else { return }
        state = .draining
        drainStartedAt = .now
        drainConnectionsAtStart = connectionCount
        let live = liveWorkers
        master.logger.info("draining generation \(id): \(reason)", metadata: ["workers": "\(live.count)"])
        for worker in live where worker.state == .ready || worker.state == .starting {
            worker.state = .draining
            worker.send(.drain, logger: master.logger)
        }
        let (id, drainTimeout) = (self.id, settings.drainTimeout)
        master.after(drainTimeout) { master in
            master.generations[id]?.drainTimedOut(after: drainTimeout, in: master)
        }
        if !liveWorkers.allSatisfy({ $0.stoppedAccepting || $0.state != .draining }) {
            let timer = master.after(Master.stopAcceptingTimeout) { master in
                master.generations[id]?.stopAcceptingTimedOut(in: master)
            }
            await withCheckedContinuation { stoppedAcceptingContinuation = $0 }
            timer.cancel()
        }
        // The workers no longer accept, so the generation no longer needs the master's copies
        // of its sockets: one that no other generation uses (removed from the config, or every
        // generation is stopping) is closed now, and new connections to it are refused at once
        // instead of waiting in a queue nobody reads.
        master.releaseListeners(of: self)
    }

    private func stopAcceptingTimedOut(in master: isolated Master) {
        guard stoppedAcceptingContinuation != nil else { return }
        let slow = liveWorkers.filter { !$0.stoppedAccepting }.map(\.name)
        master.logger.warning("\(slow.joined(separator: ", ")) did not confirm it stopped accepting")
        resumeStoppedAccepting()
    }

    private func drainTimedOut(after timeout: Duration, in master: isolated Master) {
        let live = liveWorkers
        guard !live.isEmpty else { return }
        drainCut = connectionCount
        master.logger.warning(
            "generation \(id) still has \(connectionCount) connections after drain_timeout \(DurationText.format(timeout)); terminating \(live.count) workers"
        )
        terminateWorkers(in: master)
    }

    /// SIGTERM to every live worker (SIGKILL after the kill grace).
    func terminateWorkers(in master: isolated Master) {
        for worker in liveWorkers { worker.terminate(in: master) }
    }

    /// A generation that failed to start. Its workers drain, the ones not ready yet too: a
    /// worker starts accepting just before it reports ready, so one the master still counts
    /// as starting may hold connections, and a SIGTERM (close everything) would reset them.
    /// A worker that does not even confirm it stopped accepting within `stopAcceptingTimeout`
    /// is stuck, and is terminated.
    func abandon(in master: isolated Master) async {
        resumeReady(.failure(GenerationStartFailure(description: "abandoned")))
        if master.state == .stoppingNow {
            terminateWorkers(in: master)
        }
        await drain(reason: "failed to start", in: master)
        for worker in liveWorkers where !worker.stoppedAccepting && worker.state == .draining {
            worker.terminate(in: master)
        }
        state = .failed
        if isFinished { master.generationFinished(self) }
    }
}

extension Generation {
    /// A draining generation's count changed: its followers see it count down.
    func publishDrainProgress(in master: isolated Master) {
        guard state == .draining || state == .failed, drainStartedAt != nil else { return }
        let count = connectionCount
        guard count != drainConnectionsPublished else { return }
        drainConnectionsPublished = count
        master.publish(ControlStreamLine(drain: ControlStreamLine.Drain(generation: id, connections: count)))
    }

    /// The drain's event, once the generation has ended: how long, from how many connections,
    /// and how many drain_timeout cut.
    func drainEvent(in master: isolated Master) -> GatewayEvent? {
        guard let drainStartedAt else { return nil }
        let took = (ContinuousClock.now - drainStartedAt).milliseconds
        var event = master.newEvent(.drain, at: Date().timeIntervalSince1970 - took / 1000)
        event.generation = id
        event.durationMs = took
        event.phases = ["drain": took]
        event.connections = drainConnectionsAtStart
        event.outcome = drainCut == nil ? .ok : .failed
        if let drainCut {
            event.cut = drainCut
            event.reason =
                "drain_timeout \(DurationText.format(settings.drainTimeout)): \(drainCut) connection\(drainCut == 1 ? "" : "s") cut"
        }
        return event
    }
}

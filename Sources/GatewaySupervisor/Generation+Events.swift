import GatewayCore

extension Generation {
    /// What one of this generation's workers reported (its reader thread's events, in order).
    func handle(_ event: WorkerEvent, from worker: Worker, in master: isolated Master) {
        let logger = master.logger
        if case .message = event { worker.lastHeard = .now }
        switch event {
        case .message(.ready):
            worker.reportedReady = true
            guard worker.state == .starting else { return }
            worker.state = .ready
            logger.debug("\(worker.name) ready")
            if state == .starting, allReady {
                resumeReady(.success(()))
            } else if state == .serving, master.state == .running {
                // A restarted worker: its slot is back, and systemd's STATUS should say so.
                logger.info("\(worker.name) ready after a restart")
                var event = master.newEvent(.workerRestart)
                event.generation = id
                event.worker = worker.index
                event.pid = worker.pid
                event.outcome = .ok
                master.record(event)
                master.notifyStatusIfChanged()
            }
        case .message(.failed(let reason)):
            let reason = LogText.escaped(reason)
            worker.failureReason = reason
            logger.error("\(worker.name) failed: \(reason)")
        case .message(.connections(let count)):
            worker.connections = min(max(count, 0), Worker.maximumConnections)
            if worker.connections != count, !worker.reportedImpossibleCount {
                worker.reportedImpossibleCount = true
                logger.warning(
                    "\(worker.name) reported \(count) connections; counted as \(worker.connections) (a process holds at most 2^30 fds)"
                )
            }
            publishDrainProgress(in: master)
        case .message(.draining):
            worker.stoppedAccepting = true
            if liveWorkers.allSatisfy({ $0.stoppedAccepting || $0.state != .draining }) {
                resumeStoppedAccepting()
            }
        case .message(let other):
            logger.warning("\(worker.name) sent an unexpected \(other.type) frame")
        case .channelError(let reason):
            // The reason may quote what the worker sent (a frame's type).
            let reason = LogText.escaped(reason)
            worker.failureReason = worker.failureReason ?? reason
            logger.error("\(worker.name): \(reason); killing it")
        case .exited:
            let status = master.spawner.reap(pid: worker.pid)
            master.workerLocations[worker.pid] = nil
            workerExited(worker, status: status, in: master)
        }
    }

    private func workerExited(_ worker: Worker, status: ExitStatus, in master: isolated Master) {
        let previous = worker.state
        worker.state = .exited
        worker.connections = 0
        worker.closeChannel()
        if worker.stoppedAccepting == false, previous == .draining || previous == .terminating {
            worker.stoppedAccepting = true
        }
        if stoppedAcceptingContinuation != nil, liveWorkers.allSatisfy({ $0.stoppedAccepting }) {
            resumeStoppedAccepting()
        }

        switch state {
        case .starting where readyContinuation != nil:
            let reason = worker.failureReason.map { ": \($0)" } ?? ""
            let when = worker.reportedReady ? "after it reported ready, before its generation was" : "before it was"
            resumeReady(
                .failure(
                    GenerationStartFailure(
                        description: "worker \(worker.index) (pid \(worker.pid)) \(status) \(when) ready\(reason)")))
        case .serving where master.state == .running:
            let lived = ContinuousClock.now - worker.spawnedAt
            var event = master.newEvent(.workerExit)
            event.generation = id
            event.worker = worker.index
            event.pid = worker.pid
            event.outcome = .failed
            event.reason = "\(status)\(worker.failureReason.map { ": \($0)" } ?? "")"
            event.durationMs = lived.milliseconds
            master.record(event)
            master.logger.error(
                "\(worker.name) \(status)\(worker.failureReason.map { ": \($0)" } ?? ""); restarting",
                metadata: ["lived_ms": "\(Int(lived.milliseconds))"])
            scheduleRestart(of: worker.index, lived: lived, in: master)
        default:
            if previous == .draining && status.isSuccess {
                master.logger.debug("\(worker.name) drained and exited")
            } else {
                master.logger.info("\(worker.name) \(status)")
            }
        }
        publishDrainProgress(in: master)
        if isFinished {
            master.generationFinished(self)
        }
        master.checkStopComplete()
    }
}

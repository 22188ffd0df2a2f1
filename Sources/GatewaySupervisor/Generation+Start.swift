import GatewayConfig
import GatewayCore

extension Generation {
    /// Starts every worker and waits until all are ready (`spawnWorkers`, then
    /// `waitUntilReady`), for a master's first generation; a reload times the two apart.
    func start(in master: isolated Master) async -> Result<Void, GenerationStartFailure> {
        if let failure = spawnWorkers(in: master) { return .failure(failure) }
        return await waitUntilReady(in: master)
    }

    /// Starts every worker, taking pre-started spares first. Returns the first failure to
    /// spawn.
    func spawnWorkers(in master: isolated Master) -> GenerationStartFailure? {
        for index in slots.indices {
            do {
                try master.startWorker(index, of: self)
            } catch {
                return GenerationStartFailure(description: "cannot start worker \(index): \(error)")
            }
        }
        return nil
    }

    /// Waits until every worker is ready, one fails, or ready_timeout passes. Workers that
    /// said ready may die before the caller acts on it (the actor runs their exits first): a
    /// generation whose every worker did has failed, and the caller must not switch to it, or
    /// it would drain the serving generation for nothing.
    func waitUntilReady(in master: isolated Master) async -> Result<Void, GenerationStartFailure> {
        if allReady { return .success(()) }
        if master.state != .starting && master.state != .running {
            return .failure(GenerationStartFailure(description: "gatewayd is stopping"))
        }
        let timeout = settings.readyTimeout
        let id = self.id
        let timer = master.after(timeout) { master in
            master.generations[id]?.readyTimedOut(after: timeout)
        }
        defer { timer.cancel() }
        let result = await withCheckedContinuation { readyContinuation = $0 }
        guard case .success = result else { return result }
        if let hook = master.afterReadyHook { await hook(id) }
        guard liveWorkers.isEmpty else { return result }
        let names = workers.map { "worker \($0.index) (pid \($0.pid))" }
        return .failure(
            GenerationStartFailure(
                description:
                    "every worker exited after it reported ready, before the switch: \(names.joined(separator: ", "))"))
    }

    private func readyTimedOut(after timeout: Duration) {
        guard readyContinuation != nil else { return }
        let late = workers.filter { $0.state == .starting }
        let names = late.map { "worker \($0.index) (pid \($0.pid))" }.joined(separator: ", ")
        resumeReady(
            .failure(
                GenerationStartFailure(
                    description: "\(names) not ready within ready_timeout \(DurationText.format(timeout))")))
    }

    /// The generation serves from now on. A worker that died between reporting ready and
    /// this moment is replaced: a serving generation keeps every slot filled.
    func promote(in master: isolated Master) {
        state = .serving
        for slot in slots {
            guard let worker = slot.worker, !worker.isAlive else { continue }
            scheduleRestart(of: slot.index, lived: ContinuousClock.now - worker.spawnedAt, in: master)
        }
    }

    // MARK: - Restarts

    /// A serving worker died: its slot's next worker starts after the slot's backoff.
    func scheduleRestart(of index: Int, lived: Duration, in master: isolated Master) {
        let delay = slots[index].crashed(afterLiving: lived)
        if slots[index].becameCrashLoop {
            let crashes = slots[index].consecutiveCrashes
            master.logger.error(
                "worker \(index) of generation \(id) is crash-looping: \(crashes) crashes in a row, each within \(DurationText.format(WorkerSlot.stableAfter)) of its start; restarts back off up to \(DurationText.format(WorkerSlot.backoffCap)); a reload to a good config replaces the generation"
            )
        }
        master.notifyStatusIfChanged()
        let id = self.id
        master.after(delay) { master in
            master.generations[id]?.restartWorker(index, in: master)
        }
    }

    private func restartWorker(_ index: Int, in master: isolated Master) {
        guard master.state == .running, state == .serving, slots[index].worker?.isAlive != true else { return }
        slots[index].restarting()
        do {
            try master.spawnWorker(index, of: self)
            master.logger.info(
                "restarted worker \(index) of generation \(id)", metadata: ["restarts": "\(slots[index].restarts)"])
            // A replacement gets ready_timeout like any new worker; a late one is terminated,
            // and its exit schedules the next try with a longer backoff.
            guard let pid = slots[index].worker?.pid else { return }
            let (id, timeout) = (self.id, settings.readyTimeout)
            master.after(timeout) { master in
                guard let worker = master.generations[id]?.slots[index].worker, worker.pid == pid,
                    worker.state == .starting
                else { return }
                master.logger.error(
                    "\(worker.name) not ready within ready_timeout \(DurationText.format(timeout)); terminating it")
                worker.terminate(in: master)
            }
        } catch {
            master.logger.error("cannot restart worker \(index) of generation \(id): \(error)")
            scheduleRestart(of: index, lived: .zero, in: master)
        }
    }
}

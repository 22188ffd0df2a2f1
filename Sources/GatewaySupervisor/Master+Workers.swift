#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GatewayConfig
import GatewayCore
import Logging

extension Master {
    // MARK: - Spawning

    /// Spawns every worker of a new generation and waits until all are ready, one fails, or
    /// ready_timeout passes.
    func startWorkers(of generation: Generation) async -> Result<Void, GenerationStartFailure> {
        for index in 0..<generation.settings.workers {
            do {
                try spawnWorker(generation: generation, index: index)
            } catch {
                return .failure(GenerationStartFailure(description: "cannot start worker \(index): \(error)"))
            }
        }
        let timeout = generation.settings.readyTimeout
        let id = generation.id
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { await self?.readyTimedOut(generationID: id, after: timeout) }
        }
        defer { timer.cancel() }
        if generation.allReady { return .success(()) }
        return await withCheckedContinuation { generation.readyContinuation = $0 }
    }

    private func readyTimedOut(generationID: Int, after timeout: Duration) {
        guard let generation = generations[generationID], generation.readyContinuation != nil else { return }
        let late = generation.workers.values.filter { $0.state == .starting }.sorted { $0.index < $1.index }
        let names = late.map { "worker \($0.index) (pid \($0.pid))" }.joined(separator: ", ")
        generation.resumeReady(
            .failure(
                GenerationStartFailure(
                    description: "\(names) not ready within ready_timeout \(DurationText.format(timeout))")))
    }

    func spawnWorker(generation: Generation, index: Int) throws(SystemCallError) {
        let arguments = [
            options.workerExecutable == "/proc/self/exe" ? "gatewayd" : options.workerExecutable,
            "worker", "--generation", "\(generation.id)", "--index", "\(index)",
            "--log-level", "\(options.logLevel)", "--log-format", options.logFormat.rawValue,
        ]
        let process = try spawner.spawn(arguments: arguments, environment: Self.workerEnvironment())
        let worker = Worker(generation: generation.id, index: index, process: process)
        generation.workers[index] = worker
        logger.debug("spawned \(worker.name)")

        let hello = HandoffMessage.Hello(
            generation: generation.id, worker: index, configPath: generation.loaded.path,
            config: generation.loaded.bytes)
        let listeners = generation.listeners.map { (name: $0.name, fd: $0.fd, backlog: $0.backlog) }
        let events = AsyncStream<WorkerEvent>.makeStream()
        let channel = process.channel
        let pid = process.pid
        let spawner = self.spawner
        // The handoff and every read are blocking I/O: they run on a thread of their own,
        // never on the concurrency pool. The thread ends after reaping the worker.
        Thread.detachNewThread {
            do {
                try channel.sendHandoff(hello: hello, listeners: listeners)
                while let (message, _) = try channel.receive() {
                    events.continuation.yield(.message(message))
                }
            } catch {
                events.continuation.yield(.channelError("\(error)"))
                // A worker we cannot talk to is of no use; make sure it goes away.
                spawner.signal(SIGKILL, to: pid)
            }
            let status = spawner.waitForExit(pid: pid)
            events.continuation.yield(.exited(status))
            events.continuation.finish()
        }
        let generationID = generation.id
        Task { [weak self] in
            for await event in events.stream {
                await self?.handle(event, generationID: generationID, index: index, pid: pid)
            }
        }
    }

    /// Workers see neither systemd's activation variables nor its notify socket: the master
    /// speaks to systemd alone.
    static func workerEnvironment() -> [String] {
        let hidden: Set<String> = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]
        return ProcessInfo.processInfo.environment.compactMap { key, value in
            hidden.contains(key) ? nil : "\(key)=\(value)"
        }
    }

    // MARK: - Events

    private func handle(_ event: WorkerEvent, generationID: Int, index: Int, pid: Int32) async {
        guard let generation = generations[generationID], let worker = generation.workers[index], worker.pid == pid
        else { return }
        switch event {
        case .message(.ready):
            guard worker.state == .starting else { return }
            worker.state = .ready
            logger.debug("\(worker.name) ready")
            if generation.state == .starting, generation.allReady {
                generation.resumeReady(.success(()))
            }
        case .message(.failed(let reason)):
            worker.failureReason = reason
            logger.error("\(worker.name) failed: \(reason)")
        case .message(.connections(let count)):
            worker.connections = count
        case .message(.draining):
            worker.stoppedAccepting = true
            if generation.liveWorkers.allSatisfy({ $0.stoppedAccepting || $0.state != .draining }) {
                generation.stoppedAcceptingContinuation?.resume()
                generation.stoppedAcceptingContinuation = nil
            }
        case .message(let other):
            logger.warning("\(worker.name) sent an unexpected \(other.type) frame")
        case .channelError(let reason):
            worker.failureReason = worker.failureReason ?? reason
            logger.error("\(worker.name): \(reason)")
        case .exited(let status):
            await workerExited(worker, in: generation, status: status)
        }
    }

    private func workerExited(_ worker: Worker, in generation: Generation, status: ExitStatus) async {
        let previous = worker.state
        worker.state = .exited
        worker.exitStatus = status
        worker.connections = 0
        worker.channel.close()
        if worker.stoppedAccepting == false, previous == .draining || previous == .terminating {
            worker.stoppedAccepting = true
        }
        if generation.stoppedAcceptingContinuation != nil,
            generation.liveWorkers.allSatisfy({ $0.stoppedAccepting })
        {
            generation.stoppedAcceptingContinuation?.resume()
            generation.stoppedAcceptingContinuation = nil
        }

        switch generation.state {
        case .starting:
            let reason = worker.failureReason.map { ": \($0)" } ?? ""
            generation.resumeReady(
                .failure(GenerationStartFailure(description: "worker \(worker.index) (pid \(worker.pid)) \(status) before it was ready\(reason)")))
        case .serving where state == .running:
            let lived = ContinuousClock.now - worker.spawnedAt
            logger.error(
                "\(worker.name) \(status)\(worker.failureReason.map { ": \($0)" } ?? ""); restarting",
                metadata: ["lived_ms": "\(Int(lived.milliseconds))"])
            scheduleRestart(of: worker.index, in: generation, lived: lived)
        default:
            if previous == .draining && status.isSuccess {
                logger.debug("\(worker.name) drained and exited")
            } else {
                logger.info("\(worker.name) \(status)")
            }
        }
        if generation.isFinished {
            generationFinished(generation)
        }
        if state == .stopping || state == .stoppingNow {
            checkStopComplete()
        }
    }

    private func scheduleRestart(of index: Int, in generation: Generation, lived: Duration) {
        let crashes = lived >= Self.restartStableAfter ? 1 : (generation.consecutiveCrashes[index] ?? 0) + 1
        generation.consecutiveCrashes[index] = crashes
        var delay = Self.restartBackoffBase
        for _ in 1..<crashes where delay < Self.restartBackoffCap { delay *= 2 }
        delay = min(delay, Self.restartBackoffCap)
        let generationID = generation.id
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            await self?.restartWorker(index: index, generationID: generationID)
        }
    }

    private func restartWorker(index: Int, generationID: Int) {
        guard state == .running, let generation = generations[generationID], generation.state == .serving,
            generation.workers[index]?.isAlive != true
        else { return }
        generation.restarts[index, default: 0] += 1
        do {
            try spawnWorker(generation: generation, index: index)
            logger.info(
                "restarted worker \(index) of generation \(generationID)",
                metadata: ["restarts": "\(generation.restarts[index]!)"])
        } catch {
            logger.error("cannot restart worker \(index) of generation \(generationID): \(error)")
            scheduleRestart(of: index, in: generation, lived: .zero)
        }
    }

    // MARK: - Drain and stop

    /// Tells every worker of a generation to drain and arms its drain timeout. Returns once
    /// every worker has confirmed that it stopped accepting (at most `stopAcceptingTimeout`).
    func drain(_ generation: Generation, reason: String) async {
        guard generation.drainStartedAt == nil else { return }
        generation.state = .draining
        generation.drainStartedAt = .now
        let live = generation.liveWorkers
        logger.info("draining generation \(generation.id): \(reason)", metadata: ["workers": "\(live.count)"])
        for worker in live where worker.state == .ready || worker.state == .starting {
            worker.state = .draining
            do {
                try worker.channel.send(.drain)
            } catch {
                logger.warning("cannot tell \(worker.name) to drain: \(error); terminating it")
                terminate(worker)
            }
        }
        armDrainTimeout(generation)
        if generation.liveWorkers.allSatisfy({ $0.stoppedAccepting || $0.state != .draining }) { return }
        let id = generation.id
        let timer = Task { [weak self] in
            try? await Task.sleep(for: Self.stopAcceptingTimeout)
            if !Task.isCancelled { await self?.stopAcceptingTimedOut(generationID: id) }
        }
        defer { timer.cancel() }
        await withCheckedContinuation { generation.stoppedAcceptingContinuation = $0 }
    }

    private func stopAcceptingTimedOut(generationID: Int) {
        guard let generation = generations[generationID], let continuation = generation.stoppedAcceptingContinuation
        else { return }
        let slow = generation.liveWorkers.filter { !$0.stoppedAccepting }.map(\.name)
        logger.warning("\(slow.joined(separator: ", ")) did not confirm it stopped accepting")
        generation.stoppedAcceptingContinuation = nil
        continuation.resume()
    }

    private func armDrainTimeout(_ generation: Generation) {
        let id = generation.id
        let timeout = generation.settings.drainTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.drainTimedOut(generationID: id, after: timeout)
        }
    }

    private func drainTimedOut(generationID: Int, after timeout: Duration) {
        guard let generation = generations[generationID], !generation.liveWorkers.isEmpty else { return }
        let live = generation.liveWorkers
        logger.warning(
            "generation \(generationID) still has \(generation.connectionCount) connections after drain_timeout \(DurationText.format(timeout)); terminating \(live.count) workers"
        )
        for worker in live { terminate(worker) }
    }

    /// SIGTERM now, SIGKILL after `killGrace` if it is still there.
    func terminate(_ worker: Worker) {
        guard worker.isAlive else { return }
        worker.state = .terminating
        spawner.signal(SIGTERM, to: worker.pid)
        let generationID = worker.generation
        let index = worker.index
        let pid = worker.pid
        Task { [weak self] in
            try? await Task.sleep(for: Self.killGrace)
            await self?.killIfAlive(generationID: generationID, index: index, pid: pid)
        }
    }

    private func killIfAlive(generationID: Int, index: Int, pid: Int32) {
        guard let worker = generations[generationID]?.workers[index], worker.pid == pid, worker.isAlive else { return }
        logger.warning("\(worker.name) still alive \(DurationText.format(Self.killGrace)) after SIGTERM; sending SIGKILL")
        spawner.signal(SIGKILL, to: pid)
    }

    /// A generation that failed to start: ready workers may already hold connections, so they
    /// drain; the others are terminated.
    func abandon(_ generation: Generation) async {
        generation.resumeReady(.failure(GenerationStartFailure(description: "abandoned")))
        for worker in generation.liveWorkers where worker.state != .ready {
            terminate(worker)
        }
        await drain(generation, reason: "failed to start")
        generation.state = .failed
        if generation.isFinished { generationFinished(generation) }
    }

    func generationFinished(_ generation: Generation) {
        guard generations[generation.id] != nil else { return }
        generations[generation.id] = nil
        let closed = listenerTable.release(generation: generation.id)
        let took = generation.drainStartedAt.map { " after \(Int((ContinuousClock.now - $0).milliseconds)) ms of drain" } ?? ""
        logger.info("generation \(generation.id) ended\(took)")
        for listener in closed {
            logger.info("closed listener \(listener.name) (\(listener.boundAddress)): no generation uses it")
        }
        if state == .running { notifier.status(statusLine()) }
    }
}

import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

extension Master {
    // MARK: - Spawning

    /// Starts every worker of a new generation, taking pre-started spares first. Returns the
    /// first failure to spawn.
    func spawnWorkers(of generation: Generation) -> GenerationStartFailure? {
        for index in 0..<generation.settings.workers {
            do {
                if let spare = takeSpare() {
                    try assign(spare, to: generation, index: index)
                } else {
                    try spawnWorker(generation: generation, index: index)
                }
            } catch {
                return GenerationStartFailure(description: "cannot start worker \(index): \(error)")
            }
        }
        return nil
    }

    /// Waits until every worker of a new generation is ready, one fails, or ready_timeout passes.
    /// Workers that said ready may die before the caller acts on it (the actor runs their
    /// exits first): a generation whose every worker did has failed, and the caller must not
    /// switch to it, or it would drain the serving generation for nothing.
    func waitUntilReady(_ generation: Generation) async -> Result<Void, GenerationStartFailure> {
        if generation.allReady { return .success(()) }
        if state != .starting && state != .running {
            return .failure(GenerationStartFailure(description: "gatewayd is stopping"))
        }
        let timeout = generation.settings.readyTimeout
        let id = generation.id
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { await self?.readyTimedOut(generationID: id, after: timeout) }
        }
        defer { timer.cancel() }
        let result = await withCheckedContinuation { generation.readyContinuation = $0 }
        guard case .success = result else { return result }
        if let afterReadyHook { await afterReadyHook(generation.id) }
        guard generation.liveWorkers.isEmpty else { return result }
        let names = generation.workers.values.sorted { $0.index < $1.index }.map {
            "worker \($0.index) (pid \($0.pid))"
        }
        return .failure(
            GenerationStartFailure(
                description:
                    "every worker exited after it reported ready, before the switch: \(names.joined(separator: ", "))"))
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
        try assign(try launchWorkerProcess(), to: generation, index: index)
    }

    /// Starts a worker process that waits for its handoff, and the thread that reads from it.
    /// Its events reach `handle(_:pid:)`, routed by pid, so the process may be a spare now and
    /// a generation's worker later.
    func launchWorkerProcess() throws(SystemCallError) -> SpawnedProcess {
        let arguments = [
            options.workerExecutable == "/proc/self/exe" ? "gatewayd" : options.workerExecutable,
            "worker", "--log-level", "\(options.logLevel)", "--log-format", options.logFormat.rawValue,
            "--master-pid", "\(getpid())",
        ]
        let process = try spawner.spawn(arguments: arguments, environment: Self.workerEnvironment())
        let events = WorkerReader.start(process, spawner: spawner)
        Task { [weak self] in
            for await event in events {
                await self?.handle(event, from: process)
            }
        }
        return process
    }

    /// Makes a started process worker `index` of `generation` and sends it its handoff.
    func assign(_ process: SpawnedProcess, to generation: Generation, index: Int) throws(SystemCallError) {
        guard let segment = sharedMemory, let segmentFD = segment.descriptor else {
            preconditionFailure("a worker is started before the shared memory segment exists")
        }
        // The handoff sends copies of the listening fds, closed once sent: the listener table
        // may close its own (a stop, a failed generation) while a slow worker still reads.
        // The access log's the same way: the generation closes its own when it ends.
        var copies: [(name: String, fd: CInt, backlog: Int32)] = []
        var accessLogCopy: (path: String, fd: CInt)?
        do throws(SystemCallError) {
            for listener in generation.listeners {
                let copy = try Self.copy(listener.fd, of: "listener \(listener.name)")
                copies.append((name: listener.name, fd: copy, backlog: listener.backlog))
            }
            if let log = generation.accessLog {
                accessLogCopy = (log.path, try Self.copy(log.descriptor, of: "access log \(log.path)"))
            }
        } catch {
            for copy in copies { closeDescriptor(copy.fd) }
            spawner.signal(SIGKILL, to: process.pid)
            throw error
        }
        let worker = Worker(generation: generation.id, index: index, process: process)
        generation.workers[index] = worker
        workerLocations[process.pid] = (generation.id, index)
        logger.debug("starting \(worker.name)")

        let hello = HandoffMessage.Hello(
            generation: generation.id, worker: index, configPath: generation.loaded.path,
            config: generation.loaded.bytes,
            drainTimeoutMilliseconds: Int(generation.settings.drainTimeout.milliseconds))
        let files = generation.loaded.files
        let channel = process.channel
        let pid = process.pid
        let spawner = self.spawner
        let logger = self.logger
        let handoff = copies
        let accessLog = accessLogCopy
        worker.outbox.async {
            defer {
                for copy in handoff { closeDescriptor(copy.fd) }
                if let accessLog { closeDescriptor(accessLog.fd) }
            }
            do {
                // `segment` is captured: its fd stays open until this send is done. It is not
                // copied: SCM_RIGHTS gives the worker a copy of its own.
                try withExtendedLifetime(segment) { () throws(SystemCallError) in
                    try channel.sendHandoff(
                        hello: hello, files: files, sharedMemory: (fd: segmentFD, handoff: segment.handoff),
                        accessLog: accessLog, listeners: handoff)
                }
            } catch {
                logger.error("handoff to pid \(pid) failed: \(error)")
                // The reader thread sees the end of the channel and reports the exit.
                spawner.signal(SIGKILL, to: pid)
            }
        }
    }

    /// A CLOEXEC copy of one of the master's fds, for one handoff.
    private static func copy(_ fd: CInt, of what: String) throws(SystemCallError) -> CInt {
        try syscall("fcntl F_DUPFD_CLOEXEC", on: what) { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }

    // MARK: - Spares

    /// Starts spare workers up to one per worker of the serving generation. A spare is a
    /// worker process that has already paid for exec and the Swift runtime's start-up and
    /// waits for a handoff: a reload hands it the new config and sockets, which makes the new
    /// generation ready in a few milliseconds instead of a process start.
    func replenishSpares() {
        guard options.prestartWorkers, state == .running else { return }
        while spares.count < settings.workers {
            do {
                let process = try launchWorkerProcess()
                spares.append(process)
            } catch {
                logger.warning("cannot start a spare worker: \(error)")
                return
            }
        }
    }

    func takeSpare() -> SpawnedProcess? {
        spares.isEmpty ? nil : spares.removeFirst()
    }

    /// At stop: spares hold no connection and have nothing to drain.
    func stopSpares() {
        for spare in spares { spawner.signal(SIGKILL, to: spare.pid) }
    }

    /// Workers see neither systemd's activation variables nor its notify socket: the master
    /// speaks to systemd alone.
    static func workerEnvironment() -> [String] {
        let hidden: Set<String> = [
            "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
        ]
        return ProcessInfo.processInfo.environment.compactMap { key, value in
            hidden.contains(key) ? nil : "\(key)=\(value)"
        }
    }

    // MARK: - Events

    private func handle(_ event: WorkerEvent, from process: SpawnedProcess) async {
        let pid = process.pid
        if let spareIndex = spares.firstIndex(where: { $0.pid == pid }) {
            // A spare has nothing to say before its handoff; it can only die.
            guard case .exited = event else { return }
            let spare = spares.remove(at: spareIndex)
            let status = spawner.reap(pid: pid)
            spare.channel.close()
            if state == .stopping || state == .stoppingNow {
                logger.debug("spare worker (pid \(pid)) stopped")
                checkStopComplete()
            } else {
                logger.warning("spare worker (pid \(pid)) \(status); a new one starts at the next reload")
            }
            return
        }
        guard let (generationID, index) = workerLocations[pid], let generation = generations[generationID],
            let worker = generation.workers[index], worker.pid == pid
        else {
            // A process that is neither a spare nor a worker: one taken from the spares whose
            // handoff could not be made (`assign` threw). Nothing was queued to it.
            if case .exited = event {
                workerLocations[pid] = nil
                _ = spawner.reap(pid: pid)
                process.channel.close()
            }
            return
        }
        if case .message = event { worker.lastHeard = .now }
        switch event {
        case .message(.ready):
            worker.reportedReady = true
            guard worker.state == .starting else { return }
            worker.state = .ready
            logger.debug("\(worker.name) ready")
            if generation.state == .starting, generation.allReady {
                generation.resumeReady(.success(()))
            } else if generation.state == .serving, state == .running {
                // A restarted worker: its slot is back, and systemd's STATUS should say so.
                logger.info("\(worker.name) ready after a restart")
                notifyStatusIfChanged()
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
        case .message(.draining):
            worker.stoppedAccepting = true
            if generation.liveWorkers.allSatisfy({ $0.stoppedAccepting || $0.state != .draining }) {
                generation.stoppedAcceptingContinuation?.resume()
                generation.stoppedAcceptingContinuation = nil
            }
        case .message(let other):
            logger.warning("\(worker.name) sent an unexpected \(other.type) frame")
        case .channelError(let reason):
            // The reason may quote what the worker sent (a frame's type).
            let reason = LogText.escaped(reason)
            worker.failureReason = worker.failureReason ?? reason
            logger.error("\(worker.name): \(reason); killing it")
        case .exited:
            let status = spawner.reap(pid: pid)
            workerLocations[pid] = nil
            await workerExited(worker, in: generation, status: status)
        }
    }

    private func workerExited(_ worker: Worker, in generation: Generation, status: ExitStatus) async {
        let previous = worker.state
        worker.state = .exited
        worker.connections = 0
        worker.closeChannel()
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
        case .starting where generation.readyContinuation != nil:
            let reason = worker.failureReason.map { ": \($0)" } ?? ""
            let when = worker.reportedReady ? "after it reported ready, before its generation was" : "before it was"
            generation.resumeReady(
                .failure(
                    GenerationStartFailure(
                        description: "worker \(worker.index) (pid \(worker.pid)) \(status) \(when) ready\(reason)")))
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
        generation.restartDue[index] = .now + delay
        if crashes == Self.crashLoopAfter {
            logger.error(
                "worker \(index) of generation \(generation.id) is crash-looping: \(crashes) crashes in a row, each within \(DurationText.format(Self.restartStableAfter)) of its start; restarts back off up to \(DurationText.format(Self.restartBackoffCap)); a reload to a good config replaces the generation"
            )
        }
        notifyStatusIfChanged()
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
        generation.restartDue[index] = nil
        do {
            try spawnWorker(generation: generation, index: index)
            logger.info(
                "restarted worker \(index) of generation \(generationID)",
                metadata: ["restarts": "\(generation.restarts[index]!)"])
            // A replacement gets ready_timeout like any new worker; a late one is terminated,
            // and its exit schedules the next try with a longer backoff.
            let pid = generation.workers[index]!.pid
            let timeout = generation.settings.readyTimeout
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.restartReadyTimedOut(generationID: generationID, index: index, pid: pid, after: timeout)
            }
        } catch {
            logger.error("cannot restart worker \(index) of generation \(generationID): \(error)")
            scheduleRestart(of: index, in: generation, lived: .zero)
        }
    }

    private func restartReadyTimedOut(generationID: Int, index: Int, pid: Int32, after timeout: Duration) {
        guard let worker = generations[generationID]?.workers[index], worker.pid == pid, worker.state == .starting
        else { return }
        logger.error("\(worker.name) not ready within ready_timeout \(DurationText.format(timeout)); terminating it")
        terminate(worker)
    }

    /// A serving generation must have every slot filled: a worker that died between reporting
    /// ready and the generation being promoted is replaced now.
    func replaceDeadWorkers(of generation: Generation) {
        for (index, worker) in generation.workers where !worker.isAlive {
            scheduleRestart(of: index, in: generation, lived: ContinuousClock.now - worker.spawnedAt)
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
            worker.send(.drain, logger: logger)
        }
        armDrainTimeout(generation)
        if !generation.liveWorkers.allSatisfy({ $0.stoppedAccepting || $0.state != .draining }) {
            let id = generation.id
            let timer = Task { [weak self] in
                try? await Task.sleep(for: Self.stopAcceptingTimeout)
                if !Task.isCancelled { await self?.stopAcceptingTimedOut(generationID: id) }
            }
            await withCheckedContinuation { generation.stoppedAcceptingContinuation = $0 }
            timer.cancel()
        }
        // The workers no longer accept, so the generation no longer needs the master's copies
        // of its sockets: one that no other generation uses (removed from the config, or every
        // generation is stopping) is closed now, and new connections to it are refused at once
        // instead of waiting in a queue nobody reads.
        releaseListeners(of: generation)
    }

    func releaseListeners(of generation: Generation) {
        for listener in listenerTable.release(generation: generation.id) {
            logger.info("closed listener \(listener.name) (\(listener.boundAddress)): no serving generation uses it")
            removeFromSystemdStore(listener)
        }
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
        logger.warning(
            "\(worker.name) still alive \(DurationText.format(Self.killGrace)) after SIGTERM; sending SIGKILL")
        spawner.signal(SIGKILL, to: pid)
    }

    /// A generation that failed to start. Its workers drain, the ones not ready yet too: a
    /// worker starts accepting just before it reports ready, so one the master still counts
    /// as starting may hold connections, and a SIGTERM (close everything) would reset them.
    /// A worker that does not even confirm it stopped accepting within `stopAcceptingTimeout`
    /// is stuck, and is terminated.
    func abandon(_ generation: Generation) async {
        generation.resumeReady(.failure(GenerationStartFailure(description: "abandoned")))
        if state == .stoppingNow {
            for worker in generation.liveWorkers { terminate(worker) }
        }
        await drain(generation, reason: "failed to start")
        for worker in generation.liveWorkers where !worker.stoppedAccepting && worker.state == .draining {
            terminate(worker)
        }
        generation.state = .failed
        if generation.isFinished { generationFinished(generation) }
    }

    func generationFinished(_ generation: Generation) {
        guard generations[generation.id] != nil else { return }
        generations[generation.id] = nil
        releaseListeners(of: generation)
        let took =
            generation.drainStartedAt.map { " after \(Int((ContinuousClock.now - $0).milliseconds)) ms of drain" } ?? ""
        logger.info("generation \(generation.id) ended\(took)")
        if state == .running { notifyStatusIfChanged() }
    }
}

import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Worker processes: starting them (spares first), handing them their generation, and routing
/// what they report to the generation they belong to.
extension Master {
    // MARK: - Starting

    /// Starts worker `index` of `generation`: a pre-started spare if there is one, else a new
    /// process.
    func startWorker(_ index: Int, of generation: Generation) throws(SystemCallError) {
        if let spare = takeSpare() {
            try assign(spare, to: generation, index: index)
        } else {
            try spawnWorker(index, of: generation)
        }
    }

    /// Starts a new process for worker `index` of `generation` (restarts never take spares:
    /// those are for the next reload).
    func spawnWorker(_ index: Int, of generation: Generation) throws(SystemCallError) {
        try assign(try launchWorkerProcess(), to: generation, index: index)
    }

    /// Starts a worker process that waits for its handoff, and the thread that reads from it.
    /// Its events reach `handle(_:from:)`, routed by pid, so the process may be a spare now and
    /// a generation's worker later.
    func launchWorkerProcess() throws(SystemCallError) -> SpawnedProcess {
        let arguments = [
            options.workerExecutable == "/proc/self/exe" ? "gatewayd" : options.workerExecutable,
            "worker", "--log-level", "\(LiveLogLevels.level(of: .worker))", "--log-format", options.logFormat.rawValue,
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
        generation.slots[index].worker = worker
        workerLocations[process.pid] = (generation.id, index)
        logger.debug("starting \(worker.name)")

        let hello = HandoffMessage.Hello(
            generation: generation.id, worker: index, configPath: generation.loaded.path,
            config: generation.loaded.bytes,
            drainTimeoutMilliseconds: Int(generation.settings.drainTimeout.milliseconds),
            logLevels: LiveLogLevels.all, ticketKeys: ticketKeys)
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
    static func copy(_ fd: CInt, of what: String) throws(SystemCallError) -> CInt {
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

    /// At stop (and at an upgrade's switch): spares hold no connection and have nothing to
    /// drain.
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

    /// What a worker process's reader thread reported: a spare's death is the master's, any
    /// other event belongs to the generation the process is a worker of.
    private func handle(_ event: WorkerEvent, from process: SpawnedProcess) {
        let pid = process.pid
        if let spareIndex = spares.firstIndex(where: { $0.pid == pid }) {
            // A spare has nothing to say before its handoff; it can only die.
            guard case .exited = event else { return }
            let spare = spares.remove(at: spareIndex)
            let status = spawner.reap(pid: pid)
            spare.channel.close()
            if isEnding {
                logger.debug("spare worker (pid \(pid)) stopped")
                checkStopComplete()
            } else {
                logger.warning("spare worker (pid \(pid)) \(status); a new one starts at the next reload")
            }
            return
        }
        guard let (generationID, index) = workerLocations[pid], let generation = generations[generationID],
            let worker = generation.slots[index].worker, worker.pid == pid
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
        generation.handle(event, from: worker, in: self)
    }
}

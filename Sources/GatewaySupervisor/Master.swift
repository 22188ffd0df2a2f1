import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The master process: owns the listening sockets (through its `ListenerTable`), the
/// generations of workers, the reload state machine and the stop sequence.
///
/// All state lives in this actor. Every method that awaits re-checks `state` afterwards:
/// a stop may begin while a reload waits for its workers.
public actor Master {
    enum State: Equatable {
        case starting
        case running
        /// Draining every generation; the run ends when the last worker is gone.
        case stopping
        /// SIGTERM sent to every worker; the run ends when they are gone or killed.
        case stoppingNow
        case stopped
    }

    /// Workers get this long after SIGTERM before SIGKILL. Their SIGTERM handler closes every
    /// connection and exits at once; 2 s covers a loaded machine without letting a stuck
    /// worker linger (HAProxy's hard-stop-after has no such grace; nginx waits forever).
    static let killGrace: Duration = .seconds(2)
    /// How long the switch waits for old workers to confirm they stopped accepting. A healthy
    /// worker answers within milliseconds; a worker that does not is stuck and the drain
    /// timeout will deal with it, so the reload must not hang on it.
    static let stopAcceptingTimeout: Duration = .seconds(2)
    /// Restart backoff for a crashing serving worker: 100 ms doubling up to 10 s, reset after a
    /// worker has lived 10 s. Fast enough that a one-off crash is invisible, slow enough that
    /// a crash loop does not eat a core.
    static let restartBackoffBase: Duration = .milliseconds(100)
    static let restartBackoffCap: Duration = .seconds(10)
    static let restartStableAfter: Duration = .seconds(10)
    /// Three quick crashes in a row is a loop, not bad luck: one SIGKILL or OOM kill is a
    /// single crash, and two is rare enough (the second one is ≥100 ms after the restart).
    static let crashLoopAfter = 3

    let options: SupervisorOptions
    let logger: Logger
    let spawner: any ProcessSpawning
    let notifier = SystemdNotifier()
    let listenerTable = ListenerTable()
    let cpuCount: Int

    var state: State = .starting
    var loaded: LoadedConfiguration
    var settings: EffectiveSettings
    var generations: [Int: Generation] = [:]
    var servingID: Int?
    var nextGenerationID = 1
    var reloadPhase: ReloadPhase = .idle
    var reloadWaiters: [CheckedContinuation<ReloadOutcome, Never>] = []
    var reloadLoopRunning = false
    var reloadCount = 0
    var stopSignals = 0
    /// Which generation and slot each live worker process is, by pid.
    var workerLocations: [Int32: (generation: Int, index: Int)] = [:]
    /// Started worker processes waiting for a handoff (see `replenishSpares`).
    var spares: [SpawnedProcess] = []
    /// What is in systemd's fd store, by FDNAME (the listener's name). systemd keeps every
    /// fd stored under a name and FDSTOREREMOVE drops them all, so one name maps to one fd.
    var storedListeners: [String: CInt] = [:]
    var failedReloadCount = 0
    /// The last STATUS line sent by `notifyStatusIfChanged`.
    var lastNotifiedStatus = ""
    /// The gateway-wide shared segment (rate limits, metrics): created by `run` before the
    /// first generation and handed to every worker of every generation, spares included. Kept
    /// (fd and mapping) for the master's whole life, so that what workers keep in it outlives
    /// every reload; the master itself never reads or writes its contents.
    var sharedMemory: SharedMemory?
    var finishedContinuation: CheckedContinuation<Void, Never>?
    var controlServer: ControlServer?
    /// Tests only: awaited once a new generation's workers have all said ready, before the
    /// master acts on it, to hold open the window in which they may die (see `waitUntilReady`).
    var afterReadyHook: (@Sendable (_ generation: Int) async -> Void)?

    func setAfterReadyHook(_ hook: @escaping @Sendable (_ generation: Int) async -> Void) {
        afterReadyHook = hook
    }

    public init(
        options: SupervisorOptions, loaded: LoadedConfiguration, logger: Logger,
        spawner: any ProcessSpawning = ProcessSpawner()
    ) {
        self.options = options
        self.loaded = loaded
        self.logger = logger
        self.spawner = spawner
        self.cpuCount = ProcessInfo.processInfo.activeProcessorCount
        self.settings = EffectiveSettings(loaded.configuration, options: options, cpuCount: cpuCount)
    }

    /// Binds the listeners, opens the control socket, starts generation 1 and supervises until
    /// stopped. Throws only when start-up fails; then nothing is left behind.
    public func run() async throws {
        guard state == .starting else { return }
        // A parent may have left SIGCHLD ignored (exec keeps an ignored disposition): the
        // kernel would then reap workers itself, waitpid(2) would say nothing of how they
        // ended, and their pids could be reused while the master still signals them. The
        // other dispositions the master relies on it sets itself (SIGPIPE, and SIGHUP, SIGTERM
        // and SIGINT through UnixSignalsSequence); workers start with all of them at default.
        signal(SIGCHLD, SIG_DFL)
        do {
            sharedMemory = try SharedMemory.create()
        } catch {
            throw MasterError.startup("cannot create the shared memory segment: \(error)")
        }
        let accessLog: AccessLogFile?
        do {
            accessLog = try Generation.openAccessLog(for: loaded.configuration)
        } catch {
            throw MasterError.startup("access log: \(error)")
        }
        try adoptActivatedSockets()
        let specs = loaded.configuration.listeners.map {
            ListenerTable.Spec(name: $0.name, address: $0.address, backlog: $0.backlog)
        }
        let generationID = nextGenerationID
        nextGenerationID += 1
        let listeners: [ListenerTable.Listener]
        do {
            listeners = try listenerTable.acquire(specs, for: generationID)
        } catch {
            throw MasterError.startup("\(error)")
        }
        for listener in listeners {
            logger.info(
                "listening",
                metadata: [
                    "listener": "\(listener.name)", "address": "\(listener.boundAddress)",
                    "origin": "\(listener.origin == .bound ? "bound" : "systemd")",
                ])
        }
        storeInSystemd(listeners)
        do {
            controlServer = try await ControlServer.start(path: settings.controlSocket, master: self, logger: logger)
        } catch {
            listenerTable.closeAll()
            throw MasterError.startup("control socket \(settings.controlSocket): \(error)")
        }
        guard state == .starting else {
            // Stopped while the control socket opened: no worker exists yet.
            finish()
            return
        }
        writePidFile()
        #if GATEWAYD_FAULT_INJECTION
            logger.warning(
                "this gatewayd is a test build with fault injection (-DGATEWAYD_FAULT_INJECTION): not for production")
        #endif
        if let user = loaded.configuration.user, geteuid() != 0 {
            // As nginx does: the setting needs root, and the workers run as they are.
            logger.warning(
                "user: \(user) is not applied: gatewayd does not run as root, workers run as uid \(geteuid())")
        }

        let generation = Generation(
            id: generationID, loaded: loaded, settings: settings, listeners: listeners, accessLog: accessLog,
            wallClockStart: Date().timeIntervalSince1970)
        generations[generationID] = generation
        let result: Result<Void, GenerationStartFailure>
        if let failure = spawnWorkers(of: generation) {
            result = .failure(failure)
        } else {
            result = await waitUntilReady(generation)
        }
        guard state == .starting else {
            // A stop arrived while generation 1 was starting. Ready workers may already hold
            // connections: they drain; the others are terminated. The run ends when all are gone.
            await abandon(generation)
            checkStopComplete()
            await waitUntilFinished()
            return
        }
        if case .failure(let failure) = result {
            logger.error("generation \(generationID) failed to start: \(failure)")
            // Nothing was ever announced as serving: no drain, and no worker may outlive us.
            state = .stopping
            // Not `.starting` any more: checkStopComplete waits for starting generations, and
            // would have waited for this one forever (a hang at start, measured).
            generation.state = .failed
            for worker in generation.liveWorkers { terminate(worker) }
            checkStopComplete()
            await waitUntilFinished()
            throw MasterError.startup("generation \(generationID) failed to start: \(failure)")
        }
        generation.state = .serving
        servingID = generationID
        state = .running
        replaceDeadWorkers(of: generation)
        logger.info(
            "generation \(generationID) serving",
            metadata: ["workers": "\(settings.workers)", "pid": "\(getpid())"])
        notifier.ready(status: statusLine())
        replenishSpares()
        startWatchdog()
        startWorkerWatchdog()
        await waitUntilFinished()
    }

    // MARK: - systemd

    /// Sockets systemd passed become the listeners of the same name, or else of the same
    /// address. One that matches neither is kept open (a later reload may add its listener)
    /// and reported.
    private func adoptActivatedSockets() throws {
        let activated: [ActivatedSocket]
        do {
            activated = try SystemdActivation.takeSockets()
        } catch {
            throw MasterError.startup("\(error)")
        }
        let configured = loaded.configuration.listeners
        for socket in activated {
            // By name first; a socket without a name, or with one no listener has (systemd names
            // a socket after its unit when FileDescriptorName= is missing), by its address.
            let match =
                socket.name.flatMap { name in configured.first { $0.name == name } }
                ?? configured.first { $0.address == socket.address }
            let name = match?.name ?? socket.name ?? "fd\(socket.fd)"
            do {
                try listenerTable.adopt(
                    name: name, fd: socket.fd, backlog: match?.backlog ?? ListenerConfig.defaultBacklog)
            } catch {
                throw MasterError.startup("socket-activated fd \(socket.fd): \(error)")
            }
            if match == nil {
                logger.warning(
                    "systemd passed a socket that matches no listener; kept open for a later reload",
                    metadata: [
                        "fd": "\(socket.fd)", "name": "\(socket.name ?? "(none)")", "address": "\(socket.address)",
                    ])
            } else {
                logger.info(
                    "using the socket systemd passed",
                    metadata: ["listener": "\(name)", "address": "\(socket.address)", "fd": "\(socket.fd)"])
            }
        }
    }

    /// The fd store: the serving generation's sockets are handed to systemd under their
    /// listener names, so that a master restarted after a crash gets the same sockets, and
    /// their queued connections, back. Called once a generation serves (a failed reload never
    /// touches the store). A listener now on another socket (its address changed) or under
    /// another name (renamed) replaces what was stored.
    func storeInSystemd(_ listeners: [ListenerTable.Listener]) {
        guard options.fdStore else { return }
        for listener in listeners where listener.origin == .bound {
            if storedListeners[listener.name] == listener.fd { continue }
            for (name, fd) in storedListeners where fd == listener.fd {
                notifier.removeFromStore(name: name)
                storedListeners[name] = nil
            }
            if storedListeners[listener.name] != nil {
                notifier.removeFromStore(name: listener.name)
                storedListeners[listener.name] = nil
            }
            if notifier.store(fd: listener.fd, name: listener.name) {
                storedListeners[listener.name] = listener.fd
            } else {
                logger.warning(
                    "cannot put listener \(listener.name) in systemd's fd store (is NOTIFY_SOCKET set, and FileDescriptorStoreMax= above 0?)"
                )
            }
        }
    }

    /// A listener the serving config dropped leaves the store. Never at a stop: what stays in
    /// the store is what `systemctl restart` hands the next master.
    func removeFromSystemdStore(_ listener: ListenerTable.Listener) {
        guard options.fdStore, state == .running, storedListeners[listener.name] == listener.fd else { return }
        notifier.removeFromStore(name: listener.name)
        storedListeners[listener.name] = nil
    }

    /// WATCHDOG=1 at half systemd's interval, from the actor itself: if the master stops
    /// making progress, the pings stop and systemd restarts it.
    private func startWatchdog() {
        guard let interval = SystemdNotifier.watchdogInterval() else { return }
        logger.info("systemd watchdog enabled", metadata: ["interval_ms": "\(Int(interval.milliseconds))"])
        Task {
            while self.pingWatchdog() {
                try? await Task.sleep(for: interval / 2)
            }
        }
    }

    private func pingWatchdog() -> Bool {
        guard state != .stopped else { return false }
        notifier.watchdog()
        return true
    }

    private func waitUntilFinished() async {
        if state == .stopped { return }
        await withCheckedContinuation { finishedContinuation = $0 }
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

    // MARK: - Status

    func statusReport() -> StatusReport {
        let gens = generations.values.sorted { $0.id < $1.id }.map { generation in
            StatusReport.Generation(
                id: generation.id, state: generation.state.rawValue, startedAt: generation.wallClockStart,
                workers: generation.workers.values.sorted { $0.index < $1.index }.map { worker in
                    StatusReport.Worker(
                        index: worker.index, pid: worker.pid, state: worker.state.rawValue,
                        connections: worker.connections, restarts: generation.restarts[worker.index] ?? 0)
                }, degraded: degradation(of: generation))
        }
        return StatusReport(
            masterPid: getpid(), state: "\(state)", configPath: loaded.path, reloadPhase: reloadPhase.rawValue,
            reloads: reloadCount, failedReloads: failedReloadCount, generations: gens,
            listeners: listenerTable.all.map {
                StatusReport.Listener(
                    name: $0.name, address: "\($0.boundAddress)", fd: $0.fd,
                    origin: $0.origin == .bound ? "bound" : "inherited")
            }, spareWorkers: spares.map(\.pid))
    }

    func degradation(of generation: Generation, countdown: Bool = true) -> String? {
        generation.degradation(
            crashLoopAfter: Self.crashLoopAfter, stableAfter: Self.restartStableAfter, countdown: countdown)
    }

    /// Sends systemd the STATUS line when it differs from the last one sent.
    func notifyStatusIfChanged() {
        let line = statusLine()
        guard line != lastNotifiedStatus else { return }
        lastNotifiedStatus = line
        notifier.status(line)
    }

    /// One line for `systemctl status` and logs.
    func statusLine() -> String {
        guard let servingID, let serving = generations[servingID] else { return "\(state)" }
        let draining = generations.values.filter { $0.state == .draining }
        var line = "generation \(servingID) serving, \(serving.liveWorkers.count) workers"
        if let degraded = degradation(of: serving, countdown: false) { line += ", degraded: \(degraded)" }
        if !draining.isEmpty {
            let connections = draining.map(\.connectionCount).saturatingSum()
            line +=
                ", \(draining.count) generation\(draining.count == 1 ? "" : "s") draining (\(connections) connections)"
        }
        return line
    }

    // MARK: - Pid file

    private func writePidFile() {
        guard let path = options.pidFile else { return }
        do {
            try "\(getpid())\n".write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            logger.warning("cannot write pid file \(path): \(error)")
        }
    }

    private func removePidFile() {
        guard let path = options.pidFile else { return }
        unlink(path)
    }
}

public enum MasterError: Error, CustomStringConvertible {
    case startup(String)

    public var description: String {
        switch self {
        case .startup(let reason): return reason
        }
    }
}

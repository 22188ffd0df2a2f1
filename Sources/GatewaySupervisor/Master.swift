import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The master process: owns the listening sockets (through its `ListenerTable`), the shared
/// segment, the control socket and the generations of workers, and runs three lifecycles on
/// them: reload (`Master+Reload.swift`), stop (`Master+Stop.swift`) and upgrade, from the old
/// master's side (`Master+Upgrade.swift`) and the new one's (`Master+Takeover.swift`).
/// Generations start, drain and end themselves (`Generation+Start.swift`,
/// `Generation+Drain.swift`); control requests arrive through `Master+Control.swift`.
///
/// All state lives in this actor. Every method that awaits re-checks `state` afterwards:
/// a stop may begin while a reload or an upgrade waits.
public actor Master {
    /// Workers get this long after SIGTERM before SIGKILL. Their SIGTERM handler closes every
    /// connection and exits at once; 2 s covers a loaded machine without letting a stuck
    /// worker linger (HAProxy's hard-stop-after has no such grace; nginx waits forever).
    static let killGrace: Duration = .seconds(2)
    /// How long the switch waits for old workers to confirm they stopped accepting. A healthy
    /// worker answers within milliseconds; a worker that does not is stuck and the drain
    /// timeout will deal with it, so the reload must not hang on it.
    static let stopAcceptingTimeout: Duration = .seconds(2)

    let options: SupervisorOptions
    let logger: Logger
    let spawner: any ProcessSpawning
    /// systemd's notify socket; muted once an upgrade has made another master the service's
    /// main process (systemd would refuse, and log, what this one still sent).
    var notifier = SystemdNotifier()
    let listenerTable = ListenerTable()
    let cpuCount: Int

    var state: MasterState = .starting
    var loaded: LoadedConfiguration
    var settings: EffectiveSettings
    var generations: [Int: Generation] = [:]
    var servingID: Int?
    var nextGenerationID = 1
    var reloadPhase: ReloadPhase = .idle
    /// Reloads asked for and not begun yet, each with what asked for it.
    var reloadWaiters: [ReloadWaiter] = []
    /// Where the running reload's phases go as they end (its callers that asked for progress).
    var reloadProgressSinks: [@Sendable (ControlStreamLine.Phase) -> Void] = []
    /// A reload or an upgrade runs (`runLifecycleOperations`): they never overlap.
    var operationRunning = false
    var reloadCount = 0
    var failedReloadCount = 0
    /// The recent events, the last `EventHistory.capacity`; carried to the next master by an
    /// upgrade.
    var history = EventHistory()
    /// `events --follow` connections, by an id of their own (`Master+Events.swift`).
    var eventFollowers: [Int: AsyncStream<ControlStreamLine>.Continuation] = [:]
    var nextFollowerID = 0
    /// Events that happened while a reload ran (the old generation's drain may end before the
    /// reload does), recorded right after the reload's own so that the timeline reads in order.
    var eventsAfterReload: [GatewayEvent] = []
    /// TLS session ticket keys: the master's for its whole life (and its upgrade's), every
    /// worker's (`Master+TicketKeys`), and when the newest was made: the next rotation is due
    /// `SessionTicketKeys.rotationPeriod` after it.
    var ticketKeys = SessionTicketKeys()
    var ticketKeysMadeAt = ContinuousClock.now
    /// The status page's last snapshot (its `time` left at 0, to compare) and its version, which
    /// each worker's `statusSnapshotVersion` is checked against (`Master+StatusPage.swift`).
    var lastStatusSnapshot: StatusSnapshot?
    var statusSnapshotVersion = 0
    var stopSignals = 0
    /// Which generation and slot each live worker process is, by pid.
    var workerLocations: [Int32: (generation: Int, index: Int)] = [:]
    /// Started worker processes waiting for a handoff (see `replenishSpares`).
    var spares: [SpawnedProcess] = []
    /// What is in systemd's fd store, by FDNAME (the listener's name). systemd keeps every
    /// fd stored under a name and FDSTOREREMOVE drops them all, so one name maps to one fd.
    var storedListeners: [String: CInt] = [:]
    /// The last STATUS line sent by `notifyStatusIfChanged`.
    var lastNotifiedStatus = ""
    /// The gateway-wide shared segment (rate limits, metrics): created by `run` before the
    /// first generation (or taken over from the old master in an upgrade) and handed to every
    /// worker of every generation, spares included. Kept (fd and mapping) for the master's
    /// whole life, so that what workers keep in it outlives every reload; the master itself
    /// never reads or writes its contents.
    var sharedMemory: SharedMemory? {
        didSet { metrics = sharedMemory.map(MasterMetrics.init) }
    }
    /// The master's own series in the shared segment, once there is one.
    var metrics: MasterMetrics?
    /// The reloads' spans, when `tracing:` is on (Master+Tracing.swift).
    var tracing: MasterTracing?
    var finishedContinuation: CheckedContinuation<Void, Never>?
    var controlServer: ControlServer?
    /// systemd's WatchdogSec= (from WATCHDOG_USEC, or from the old master in an upgrade).
    var watchdogInterval: Duration?
    /// The upgrade asked for and not begun yet, and the one running.
    var pendingUpgrade: PendingUpgrade?
    var upgrade: UpgradeAttempt?
    var upgradePhase: UpgradePhase = .idle
    /// Set when this master has handed over to a new one (state `.handedOver`).
    var successor: Successor?
    /// The new master's side of an upgrade: the channel to the old master, until it commits.
    var takeoverChannel: UpgradeChannel?
    /// Requests a handed-over master passes on to the new one and has not had answered yet:
    /// it exits only once there are none.
    var forwardsInFlight = 0
    /// Whether this master wrote the pid file (and so removes it at exit).
    var wrotePidFile = false
    /// Tests only: awaited once a new generation's workers have all said ready, before the
    /// master acts on it, to hold open the window in which they may die (see
    /// `Generation.waitUntilReady`).
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
        prepareProcess()
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
        let generationID = nextGenerationID
        nextGenerationID += 1
        let listeners: [ListenerTable.Listener]
        do {
            listeners = try listenerTable.acquire(listenerSpecs(of: loaded.configuration), for: generationID)
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
        logStartupWarnings()

        let generation = addGeneration(
            generationID, loaded: loaded, settings: settings, listeners: listeners, accessLog: accessLog)
        let result = await generation.start(in: self)
        guard state == .starting else {
            // A stop arrived while generation 1 was starting. Ready workers may already hold
            // connections: they drain; the others are terminated. The run ends when all are gone.
            await generation.abandon(in: self)
            checkStopComplete()
            await waitUntilFinished()
            return
        }
        if case .failure(let failure) = result {
            logger.error("generation \(generationID) failed to start: \(failure)")
            await failStartup(generation)
            throw MasterError.startup("generation \(generationID) failed to start: \(failure)")
        }
        serve(generation)
        logger.info(
            "generation \(generationID) serving",
            metadata: ["workers": "\(settings.workers)", "pid": "\(getpid())"])
        var started = newEvent(.start, at: generation.wallClockStart)
        started.generation = generationID
        started.outcome = .ok
        started.durationMs = (ContinuousClock.now - generation.startedAt).milliseconds
        record(started)
        notifier.ready(status: statusLine())
        replenishSpares()
        startWatchdog(interval: SystemdNotifier.watchdogInterval())
        startWorkerWatchdog()
        startTicketKeyRotation()
        await waitUntilFinished()
    }

    /// What a master sets up in its own process before anything else, started afresh or by
    /// an upgrade.
    func prepareProcess() {
        // A parent may have left SIGCHLD ignored (exec keeps an ignored disposition): the
        // kernel would then reap workers itself, waitpid(2) would say nothing of how they
        // ended, and their pids could be reused while the master still signals them. The
        // other dispositions the master relies on it sets itself (SIGPIPE, and SIGHUP, SIGTERM,
        // SIGINT and SIGUSR2 through UnixSignalsSequence); workers start with all of them at
        // default.
        signal(SIGCHLD, SIG_DFL)
    }

    func listenerSpecs(of configuration: GatewayConfiguration) -> [ListenerTable.Spec] {
        configuration.listeners.map {
            ListenerTable.Spec(name: $0.name, address: $0.address, backlog: $0.backlog)
        }
    }

    func logStartupWarnings() {
        #if GATEWAYD_FAULT_INJECTION
            logger.warning(
                "this gatewayd is a test build with fault injection (-DGATEWAYD_FAULT_INJECTION): not for production")
        #endif
        if let user = loaded.configuration.user, geteuid() != 0 {
            // As nginx does: the setting needs root, and the workers run as they are.
            logger.warning(
                "user: \(user) is not applied: gatewayd does not run as root, workers run as uid \(geteuid())")
        }
    }

    /// The first generation failed to start: nothing was ever announced as serving, so there
    /// is no drain, and no worker may outlive the master.
    func failStartup(_ generation: Generation) async {
        state = .stopping
        // Not `.starting` any more: checkStopComplete waits for starting generations, and
        // would have waited for this one forever (a hang at start, measured).
        generation.state = .failed
        generation.terminateWorkers(in: self)
        checkStopComplete()
        await waitUntilFinished()
    }

    /// A new generation, in the registry from now on (its workers' events find it there).
    func addGeneration(
        _ id: Int, loaded: LoadedConfiguration, settings: EffectiveSettings, listeners: [ListenerTable.Listener],
        accessLog: AccessLogFile?
    ) -> Generation {
        let generation = Generation(
            id: id, loaded: loaded, settings: settings, listeners: listeners, accessLog: accessLog,
            wallClockStart: Date().timeIntervalSince1970)
        generations[id] = generation
        return generation
    }

    /// The first generation serves, and the master runs.
    func serve(_ generation: Generation) {
        generation.promote(in: self)
        servingID = generation.id
        state = .running
    }

    /// Runs `action` on the actor after `delay`, unless the master is gone by then. The action
    /// gets the master, not the objects of the moment: it looks up what it acts on (by id and
    /// pid) and re-checks its state, since anything may have changed while it waited.
    @discardableResult
    nonisolated func after(
        _ delay: Duration, _ action: @escaping @Sendable (isolated Master) -> Void
    ) -> Task<Void, Never> {
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard !Task.isCancelled, let self else { return }
            await self.perform(action)
        }
    }

    private func perform(_ action: @Sendable (isolated Master) -> Void) {
        action(self)
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
    func startWatchdog(interval: Duration?) {
        watchdogInterval = interval
        guard let interval else { return }
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

    func waitUntilFinished() async {
        if state != .stopped {
            await withCheckedContinuation { finishedContinuation = $0 }
        }
        if successor != nil {
            // A connection answered just now may not be written yet. Bounded by the kill grace:
            // what is left is a client too slow to read a line.
            await controlServer?.waitUntilAnswered(atMost: Self.killGrace)
        }
        await shutdownTracing()
    }

    // MARK: - Status

    func statusReport() -> StatusReport {
        StatusReport(
            masterPid: getpid(), state: state, configPath: loaded.path, reloadPhase: reloadPhase,
            reloads: reloadCount, failedReloads: failedReloadCount,
            generations: generations.values.sorted { $0.id < $1.id }.map { $0.status() },
            listeners: listenerTable.all.map {
                StatusReport.Listener(name: $0.name, address: "\($0.boundAddress)", fd: $0.fd, origin: $0.origin)
            }, spareWorkers: spares.map(\.pid), upgradePhase: upgradePhase)
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
        guard let servingID, let serving = generations[servingID] else { return state.rawValue }
        let draining = generations.values.filter { $0.state == .draining }
        var line = "generation \(servingID) serving, \(serving.liveWorkers.count) workers"
        if let degraded = serving.degradation(countdown: false) { line += ", degraded: \(degraded)" }
        if !draining.isEmpty {
            let connections = draining.map(\.connectionCount).saturatingSum()
            line +=
                ", \(draining.count) generation\(draining.count == 1 ? "" : "s") draining (\(connections) connections)"
        }
        return line
    }

    // MARK: - Pid file

    func writePidFile() {
        guard let path = options.pidFile else { return }
        do {
            try "\(getpid())\n".write(toFile: path, atomically: true, encoding: .utf8)
            wrotePidFile = true
        } catch {
            logger.warning("cannot write pid file \(path): \(error)")
        }
    }

    func removePidFile() {
        guard let path = options.pidFile, wrotePidFile else { return }
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

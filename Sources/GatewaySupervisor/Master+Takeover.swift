import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The new master's side of an upgrade: it was started by the old master with the upgrade
/// channel as its fd 3 (GATEWAYD_UPGRADE_FD), says hello, takes the sockets, the shared
/// segment and the control socket, validates the config on disk, starts its first generation
/// on the same sockets, and takes charge only when the old master commits. Until then, every
/// failure is reported to the old master, which stays in charge.
extension Master {
    /// Takes over from the old master when this process was started by an upgrade, and runs
    /// until stopped. nil when it was not (no GATEWAYD_UPGRADE_FD: an ordinary start); false
    /// when the takeover failed (the old master serves on, and was told why).
    public static func takeOver(options: SupervisorOptions, logger: Logger) async -> Bool? {
        let channel: UpgradeChannel
        do {
            guard let inherited = try UpgradeChannel.inherited() else { return nil }
            channel = inherited
        } catch {
            logger.critical("cannot take over: \(error)")
            return false
        }
        do {
            try channel.send(.hello(.init(pid: getpid(), binaryVersion: GatewayVersion.current)))
        } catch {
            logger.critical("cannot take over: \(error)")
            channel.close()
            return false
        }
        let inheritance: UpgradeInheritance
        // The ticket keys' age counts from here, not from after the config's load.
        let receivedAt: ContinuousClock.Instant
        switch await onThread({ try channel.receiveInheritance() }) {
        case .success(let received):
            inheritance = received
            receivedAt = .now
        case .failure(let error):
            refuse(channel, "cannot take over: \(error)", logger: logger)
            channel.close()
            return false
        }
        let state = inheritance.state
        logger.info(
            "taking over from master pid \(state.masterPid)",
            metadata: [
                "upgrade_protocol": "\(state.version)", "listeners": "\(inheritance.listeners.count)",
                "history": "\(inheritance.history.count)",
            ])
        if state.version < UpgradeProtocol.historyVersion {
            logger.notice(
                "the old master speaks upgrade protocol \(state.version): its reload history is not carried over")
        }
        let loaded: LoadedConfiguration
        switch await loadConfiguration(path: state.configPath) {
        case .success(let valid):
            loaded = valid
        case .failure(let error):
            for fd in inheritance.descriptors { closeDescriptor(fd) }
            refuse(
                channel, "invalid config \(state.configPath)", details: error.diagnostics.map(\.description),
                logger: logger)
            channel.close()
            return false
        }
        for warning in ConfigLoader.warnings(for: loaded) { logger.warning("\(warning)") }
        var options = options
        options.configPath = state.configPath
        let master = Master(options: options, loaded: loaded, logger: logger)
        let signals = Task { await master.handleSignals() }
        defer { signals.cancel() }
        do {
            try await master.run(takingOver: inheritance, receivedAt: receivedAt, channel: channel)
            return true
        } catch {
            // Logged, and told to the old master, where it failed.
            return false
        }
    }

    /// Tells the old master why this one will not take over, and logs it.
    private static func refuse(_ channel: UpgradeChannel, _ reason: String, details: [String] = [], logger: Logger) {
        logger.critical("\(reason)\(details.isEmpty ? "" : "\n" + details.joined(separator: "\n"))")
        try? channel.send(.failed(reason: reason, details: details))
    }

    /// Starts the first generation on the inherited sockets and, once the old master
    /// commits, takes charge; supervises until stopped. Throws when the takeover failed
    /// (after telling the old master) and this process should exit 1.
    func run(
        takingOver inheritance: UpgradeInheritance, receivedAt: ContinuousClock.Instant, channel: UpgradeChannel
    ) async throws {
        guard state == .starting else { return }
        prepareProcess()
        // Not systemd's main process until the old master says so (`released`).
        notifier.muted = true
        takeoverChannel = channel
        // The channel is closed here, unless the reader of `released` has it (it closes it).
        var channelOwned = true
        defer {
            takeoverChannel = nil
            if channelOwned { channel.close() }
        }
        var adopted: [CInt] = []
        func fail(_ reason: String) -> MasterError {
            Self.refuse(channel, reason, logger: logger)
            for fd in adopted { closeDescriptor(fd) }
            return MasterError.startup(reason)
        }
        // What the old master held becomes this master's: its segment, its sockets with their
        // origins, what it kept in systemd's fd store, its counts and its history.
        do {
            sharedMemory = try SharedMemory.adopt(
                descriptor: inheritance.sharedMemory.fd, handoff: inheritance.sharedMemory.handoff)
        } catch {
            for fd in inheritance.descriptors { closeDescriptor(fd) }
            throw fail("the shared memory segment: \(error)")
        }
        adopted = inheritance.listeners.map(\.fd) + [inheritance.controlSocket.fd]
        for listener in inheritance.listeners {
            do {
                try listenerTable.adopt(
                    name: listener.name, fd: listener.fd, backlog: listener.backlog, origin: listener.origin,
                    configuredAddress: listener.configuredAddress)
            } catch {
                throw fail("listener \(listener.name) (fd \(listener.fd)): \(error)")
            }
            if listener.stored { storedListeners[listener.name] = listener.fd }
        }
        adopted = [inheritance.controlSocket.fd]
        let state = inheritance.state
        nextGenerationID = state.nextGeneration
        reloadCount = state.reloads
        failedReloadCount = state.failedReloads
        // Before the first generation starts: its workers get the keys in their `hello`.
        if let keys = state.ticketKeys {
            adoptTicketKeys(keys, received: receivedAt)
        } else {
            logger.notice("the old master carried no TLS session ticket keys: tickets it issued get one full handshake")
        }
        history.adopt(inheritance.history)
        let controlSocket = inheritance.controlSocket
        if settings.controlSocket != controlSocket.path {
            logger.warning(
                "control_socket \(settings.controlSocket) in the config or on the command line: the old master's \(controlSocket.path) is kept; the change takes effect at the next start"
            )
            settings.controlSocket = controlSocket.path
        }

        let accessLog: AccessLogFile?
        do {
            accessLog = try Generation.openAccessLog(for: loaded.configuration)
        } catch {
            throw fail("access log: \(error)")
        }
        let generationID = nextGenerationID
        nextGenerationID += 1
        let listeners: [ListenerTable.Listener]
        do {
            listeners = try listenerTable.acquire(listenerSpecs(of: loaded.configuration), for: generationID)
        } catch {
            throw fail("\(error)")
        }
        do {
            try channel.send(
                .starting(generation: generationID, readyTimeoutMilliseconds: Int(settings.readyTimeout.milliseconds)))
        } catch {
            throw fail("\(error)")
        }
        logStartupWarnings()
        let generation = addGeneration(
            generationID, loaded: loaded, settings: settings, listeners: listeners, accessLog: accessLog)
        let result = await generation.start(in: self)
        if case .failure(let failure) = result {
            _ = fail("generation \(generationID) failed to start: \(failure)")
            await giveUp(generation)
            throw MasterError.startup("generation \(generationID) failed to start: \(failure)")
        }
        guard self.state == .starting else {
            _ = fail("the new master began stopping during the upgrade")
            await giveUp(generation)
            return
        }
        // Its workers serve from here on, beside the old master's: watch them.
        startWorkerWatchdog()
        startTicketKeyRotation()
        #if GATEWAYD_FAULT_INJECTION
            if let delay = Self.injectedTakeoverDelay(loaded) { try? await Task.sleep(for: delay) }
        #endif
        do {
            try channel.send(.ready(generation: generationID))
        } catch {
            logger.error("the old master is gone before the switch: \(error)")
            await giveUp(generation)
            throw MasterError.startup("the old master is gone before the switch")
        }

        // The old master commits (it no longer accepts on the control socket), or ends the
        // upgrade by closing the channel.
        let commit = await Self.onThread { try channel.expect("commit") }
        guard case .success(let (message, _)) = commit, message == .commit, self.state == .starting,
            !generation.liveWorkers.isEmpty
        else {
            let why: String
            switch commit {
            case .failure(let error): why = "\(error)"
            case .success(let (message, _)): why = message == .commit ? "no worker left to serve" : message.type
            }
            logger.error("the upgrade ended before the switch (\(why)); draining generation \(generationID)")
            channel.shutdown()
            await giveUp(generation)
            return
        }
        do {
            controlServer = try await ControlServer.start(
                listeningOn: controlSocket.fd, path: controlSocket.path, master: self, logger: logger)
        } catch {
            // Not committed: the old master takes the control socket back.
            logger.error("cannot accept on the control socket: \(error); the old master stays in charge")
            channel.shutdown()
            await giveUp(generation)
            return
        }
        adopted = []
        do {
            try channel.send(.committed)
        } catch {
            logger.error("the old master is gone at the switch: \(error)")
        }
        takeoverChannel = nil

        // In charge: this master serves and answers the control socket.
        serve(generation)
        writePidFile()
        record(
            GatewayEvent(
                type: .upgrade, time: state.startedAt, trigger: state.trigger, outcome: .ok, generation: generationID,
                durationMs: max(0, Date().timeIntervalSince1970 - state.startedAt) * 1000, masterPid: state.masterPid))
        logger.info(
            "generation \(generationID) serving: took over from master pid \(state.masterPid)",
            metadata: ["workers": "\(settings.workers)", "pid": "\(getpid())"])
        // systemd hears from this master once the old one has named it the main process
        // (`released`); were it to speak first, NotifyAccess=main would drop what it said.
        channelOwned = false
        let watchdog = state.watchdogMicroseconds.map { Duration.microseconds(Int64(clamping: $0)) }
        Thread.detachNewThread { [weak self] in
            _ = try? channel.expect("released")
            channel.close()
            Task { await self?.becomeMainProcess(watchdog: watchdog, listeners: listeners) }
        }
        replenishSpares()
        await waitUntilFinished()
    }

    /// The old master has told systemd that this one is the service's main process: from
    /// now on, what this master says to systemd is heard, the fd store's bookkeeping included.
    private func becomeMainProcess(watchdog: Duration?, listeners: [ListenerTable.Listener]) {
        notifier.muted = false
        guard state == .running else { return }
        // The sockets the old master held for listeners this config no longer has.
        for listener in listenerTable.closeUnused() {
            logger.info("closed listener \(listener.name) (\(listener.boundAddress)): the new config does not use it")
            removeFromSystemdStore(listener)
        }
        storeInSystemd(listeners)
        notifier.ready(status: statusLine())
        startWatchdog(interval: watchdog)
    }

    /// The takeover ended before the switch: the first generation drains what it may have
    /// accepted on the shared sockets (the old master serves them on), and this master exits.
    private func giveUp(_ generation: Generation) async {
        if state == .starting { state = .stopping }
        await generation.abandon(in: self)
        checkStopComplete()
        await waitUntilFinished()
    }
}

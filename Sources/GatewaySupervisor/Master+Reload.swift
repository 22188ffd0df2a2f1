import Foundation
import GatewayConfig
import GatewayCore
import Logging

extension Master {
    /// Asks for a reload and waits for the outcome of the reload that covers this request.
    ///
    /// Reloads are serialized and the newest config wins: a request that arrives while a
    /// reload (or an upgrade) runs waits for the next one, which reads the file as it is then.
    /// Requests that wait together are merged into that one reload and all get its outcome.
    /// After an upgrade has handed over, the new master does the reload
    /// (`forwardToSuccessor`).
    /// `progress` gets each phase as it ends (`gatewayctl reload` shows them live); `peerUID` is
    /// the control socket peer that asked, for the event.
    public func reload(
        trigger: String, peerUID: UInt32? = nil, progress: (@Sendable (ControlStreamLine.Phase) -> Void)? = nil
    ) async -> ReloadOutcome {
        switch state {
        case .running, .handedOver:
            break
        case .starting:
            return .failed(reason: "gatewayd is still starting", details: [])
        case .stopping, .stoppingNow, .stopped:
            return .failed(reason: "gatewayd is stopping", details: [])
        }
        return await withCheckedContinuation { continuation in
            reloadWaiters.append(
                ReloadWaiter(trigger: trigger, peerUID: peerUID, progress: progress, continuation: continuation))
            logger.info("reload requested", metadata: ["trigger": "\(trigger)"])
            startLifecycleOperations()
        }
    }

    /// Reloads and upgrades run one at a time, in this one loop: an upgrade asked for during
    /// a reload waits for it to end, and reloads asked for during an upgrade wait for the
    /// upgrade, then run here or, if it handed over, in the new master.
    func startLifecycleOperations() {
        guard !operationRunning else { return }
        operationRunning = true
        Task { await self.runLifecycleOperations() }
    }

    private func runLifecycleOperations() async {
        while true {
            if let requested = pendingUpgrade {
                pendingUpgrade = nil
                requested.continuation.resume(returning: await performUpgrade(requested))
            } else if !reloadWaiters.isEmpty {
                let waiters = reloadWaiters
                reloadWaiters.removeAll()
                let triggers = waiters.map(\.trigger).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
                let outcome: ReloadOutcome
                switch state {
                case .running:
                    reloadProgressSinks = waiters.compactMap(\.progress)
                    outcome = await performReload(
                        trigger: triggers.joined(separator: ", "), peerUID: waiters.lazy.compactMap(\.peerUID).first)
                    reloadProgressSinks = []
                case .handedOver:
                    outcome = await forwardReloadToSuccessor()
                default:
                    outcome = .failed(reason: "gatewayd is stopping", details: [])
                }
                reloadPhase = .idle
                for waiter in waiters { waiter.continuation.resume(returning: outcome) }
            } else {
                break
            }
        }
        operationRunning = false
        checkStopComplete()
    }

    private func performReload(trigger: String, peerUID: UInt32?) async -> ReloadOutcome {
        var progress = ReloadProgress()
        var event = newEvent(.reload)
        let outcome = await performReload(&progress)
        let timings = progress.finish()
        emitProgress(progress.lastEnded)
        event.trigger = trigger
        event.peerUID = peerUID
        event.durationMs = timings.totalMs
        event.phases = progress.phases
        event.diff = progress.diff
        guard case .succeeded(let generation, _) = outcome else {
            if case .failed(let reason, let details) = outcome {
                event.outcome = .failed
                event.reason = reason
                event.details = details.isEmpty ? nil : details
            }
            recordReload(event)
            return outcome
        }
        event.outcome = .ok
        event.generation = generation
        recordReload(event)
        logger.info(
            "reload complete: generation \(generation) serving",
            metadata: ReloadPhase.allCases.reduce(into: ["total_ms": "\(Self.format(timings.totalMs))"]) {
                if let key = ReloadTimings.key(of: $1) { $0[key] = "\(Self.format(timings[$1]))" }
            })
        // A stop may have begun while the old generation's drain started: READY=1 after
        // STOPPING=1 would take the unit back from deactivating.
        if state == .running {
            notifier.ready(status: statusLine())
        }
        // After the timings: starting spares is not part of this reload's latency.
        replenishSpares()
        return .succeeded(generation: generation, timings: timings)
    }

    /// The reload itself, phase by phase (`ReloadPhase`); `progress` times each.
    private func performReload(_ progress: inout ReloadProgress) async -> ReloadOutcome {
        reloadCount += 1
        notifier.reloading(status: "reloading \(options.configPath)")

        // 1. Read and validate. The bytes read here are the bytes every new worker gets.
        enter(.validating, &progress)
        let newLoaded: LoadedConfiguration
        switch await Self.loadConfiguration(path: options.configPath) {
        case .success(let loaded):
            newLoaded = loaded
        case .failure(let error):
            return failReload("invalid config \(options.configPath)", details: error.diagnostics.map(\.description))
        }
        guard state == .running else { return failReload("gatewayd began stopping during the reload", details: []) }
        let newSettings = EffectiveSettings(newLoaded.configuration, options: options, cpuCount: cpuCount)
        if newSettings.controlSocket != settings.controlSocket {
            logger.warning("control_socket changed in the config; it takes effect at the next start")
        }
        // Opened anew for each generation (after logrotate moved the file, the new generation
        // writes to a new one), by the master: see AccessLogFile.
        let accessLog: AccessLogFile?
        do {
            accessLog = try Generation.openAccessLog(for: newLoaded.configuration)
        } catch {
            return failReload("access log: \(error)", details: [])
        }

        // 2. Sockets: kept ones are reused, new ones bound now; a failure changes nothing.
        enter(.binding, &progress)
        let generationID = nextGenerationID
        nextGenerationID += 1
        let listeners: [ListenerTable.Listener]
        do {
            listeners = try listenerTable.acquire(listenerSpecs(of: newLoaded.configuration), for: generationID)
        } catch {
            return failReload("\(error)", details: [])
        }

        // 3. The new generation.
        enter(.spawning, &progress)
        let generation = addGeneration(
            generationID, loaded: newLoaded, settings: newSettings, listeners: listeners, accessLog: accessLog)
        let diff = ConfigDiff(from: loaded.configuration, to: newLoaded.configuration)
        progress.diff = GatewayEvent.Diff(diff)
        logger.info(
            "starting generation \(generationID)",
            metadata: ["workers": "\(newSettings.workers)", "changes": "\(Self.describe(diff))"])
        let spawnFailure = generation.spawnWorkers(in: self)

        // 4. Wait until every new worker is ready.
        enter(.waitingForReady, &progress)
        let result: Result<Void, GenerationStartFailure> =
            if let spawnFailure { .failure(spawnFailure) } else { await generation.waitUntilReady(in: self) }
        guard state == .running else {
            await generation.abandon(in: self)
            checkStopComplete()
            return failReload("gatewayd began stopping during the reload", details: [])
        }
        if case .failure(let failure) = result {
            // Its live workers drain (abandon): room for them first.
            enforceDrainingLimit(makingRoomFor: generation)
            await generation.abandon(in: self)
            return failReload("generation \(generationID) failed to start: \(failure)", details: [])
        }

        // 5. Switch: the new generation serves, the old one stops accepting and drains.
        enter(.switching, &progress)
        generation.promote(in: self)
        storeInSystemd(listeners)
        let previousID = servingID
        servingID = generationID
        loaded = newLoaded
        settings = newSettings
        if let previousID, let previous = generations[previousID] {
            // Room first, then the drain: never one more draining than the limit, even briefly.
            enforceDrainingLimit(makingRoomFor: previous)
            await previous.drain(reason: "replaced by generation \(generationID)", in: self)
        }
        return .succeeded(generation: generationID, timings: progress.timings)
    }

    /// The next phase begins: `status` says so, the log (at debug) too, and the clock starts
    /// timing it.
    private func enter(_ phase: ReloadPhase, _ progress: inout ReloadProgress) {
        reloadPhase = phase
        progress.enter(phase)
        emitProgress(progress.lastEnded)
        logger.debug("reload: \(phase.rawValue)")
    }

    /// The reload's event, then what happened while it ran.
    private func recordReload(_ event: GatewayEvent) {
        record(event)
        for later in eventsAfterReload { record(later) }
        eventsAfterReload.removeAll()
    }

    /// The phase that just ended, to the callers that asked for progress.
    private func emitProgress(_ ended: (phase: ReloadPhase, ms: Double)?) {
        guard let ended, let name = ended.phase.eventName else { return }
        let line = ControlStreamLine.Phase(name: name, ms: ended.ms)
        for sink in reloadProgressSinks { sink(line) }
    }

    private func failReload(_ reason: String, details: [String]) -> ReloadOutcome {
        failedReloadCount += 1
        logger.error(
            "reload failed: \(reason)\(details.isEmpty ? "" : "\n" + details.joined(separator: "\n"))",
            metadata: ["phase": "\(reloadPhase.rawValue)"])
        // systemd waits for READY=1 after RELOADING=1 even when the reload failed; but once
        // STOPPING=1 was sent, READY=1 would take the unit back from deactivating.
        if state == .running {
            notifier.ready(status: "reload failed: \(reason); \(statusLine())")
            // The failed generation may have taken the spares; the next reload needs new ones.
            replenishSpares()
        }
        return .failed(reason: reason, details: details)
    }

    /// Past max_draining_generations the oldest draining generations are stopped early, so a
    /// reload storm cannot pile up old workers (nginx's and HAProxy's known failure).
    /// `incoming` is about to drain; it needs room only if it still has workers.
    private func enforceDrainingLimit(makingRoomFor incoming: Generation) {
        // A failed generation whose ready workers drain counts too: failing reloads must not
        // pile up old workers either.
        // One already stopped early is on its way out (its workers are terminating, gone within
        // killGrace) and does not count again.
        let draining = generations.values.filter { generation in
            (generation.state == .draining || generation.state == .failed)
                && generation.liveWorkers.contains { $0.state == .draining || $0.state == .starting }
        }
        .sorted { $0.id < $1.id }
        let excess = draining.count + (incoming.liveWorkers.isEmpty ? 0 : 1) - settings.maxDrainingGenerations
        guard excess > 0 else { return }
        for generation in draining.prefix(excess) {
            logger.warning(
                "stopping generation \(generation.id) early: more than max_draining_generations (\(settings.maxDrainingGenerations)) are draining",
                metadata: ["connections": "\(generation.connectionCount)"])
            generation.terminateWorkers(in: self)
        }
    }

    /// Reading the file is blocking I/O (a FIFO or a hung NFS mount never returns), and the
    /// YAML parse may take a while: both run on a thread of their own, never on the actor.
    static func loadConfiguration(path: String) async -> Result<LoadedConfiguration, ConfigError> {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                do throws(ConfigError) {
                    continuation.resume(returning: .success(try ConfigLoader.load(path: path)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
    }

    static func describe(_ diff: ConfigDiff) -> String {
        var parts: [String] = []
        if !diff.addedListeners.isEmpty {
            parts.append("listeners added: \(diff.addedListeners.map(\.name).joined(separator: ","))")
        }
        if !diff.removedListeners.isEmpty {
            parts.append("listeners removed: \(diff.removedListeners.map(\.name).joined(separator: ","))")
        }
        parts.append(contentsOf: diff.changedSettings)
        return parts.isEmpty ? "none" : parts.joined(separator: "; ")
    }

    static func format(_ ms: Double) -> String {
        String(format: "%.1f", ms)
    }
}

/// One caller of `reload`, waiting for the reload that covers its request.
struct ReloadWaiter {
    var trigger: String
    var peerUID: UInt32?
    var progress: (@Sendable (ControlStreamLine.Phase) -> Void)?
    var continuation: CheckedContinuation<ReloadOutcome, Never>
}

/// A reload's clock: entering a phase ends the one before and books its time to it.
struct ReloadProgress {
    private let clock = ContinuousClock()
    private let begin: ContinuousClock.Instant
    private var mark: ContinuousClock.Instant
    private var phase: ReloadPhase = .idle
    private(set) var timings = ReloadTimings()
    /// The phase the last `enter` ended, and its time (nil before the first).
    private(set) var lastEnded: (phase: ReloadPhase, ms: Double)?
    /// The phases entered so far, by their event names (a reload that failed early has only
    /// those it reached).
    private(set) var phases: [String: Double] = [:]
    /// What the new config changes, once it is known (after validation).
    var diff: GatewayEvent.Diff?

    init() {
        begin = clock.now
        mark = begin
    }

    mutating func enter(_ next: ReloadPhase) {
        let now = clock.now
        let spent = (now - mark).milliseconds
        timings[phase] += spent
        lastEnded = phase == .idle ? nil : (phase, spent)
        if let name = phase.eventName { phases[name, default: 0] += spent }
        mark = now
        phase = next
    }

    /// Ends the last phase and sets the total.
    mutating func finish() -> ReloadTimings {
        enter(.idle)
        timings.totalMs = (clock.now - begin).milliseconds
        return timings
    }
}

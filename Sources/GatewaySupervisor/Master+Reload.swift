import Foundation
import GatewayConfig
import GatewayCore
import Logging

extension Master {
    /// Asks for a reload and waits for the outcome of the reload that covers this request.
    ///
    /// Reloads are serialized and the newest config wins: a request that arrives while a
    /// reload runs waits for the next one, which reads the file as it is then. Requests that
    /// wait together are merged into that one reload and all get its outcome.
    public func reload(trigger: String) async -> ReloadOutcome {
        guard state == .running else {
            return .failed(reason: "gatewayd is \(state == .starting ? "still starting" : "stopping")", details: [])
        }
        return await withCheckedContinuation { continuation in
            reloadWaiters.append(continuation)
            logger.info("reload requested", metadata: ["trigger": "\(trigger)"])
            if !reloadLoopRunning {
                reloadLoopRunning = true
                Task { await self.runReloads() }
            }
        }
    }

    private func runReloads() async {
        while !reloadWaiters.isEmpty {
            let waiters = reloadWaiters
            reloadWaiters.removeAll()
            let outcome: ReloadOutcome
            if state == .running {
                outcome = await performReload()
            } else {
                outcome = .failed(reason: "gatewayd is stopping", details: [])
            }
            reloadPhase = .idle
            for waiter in waiters { waiter.resume(returning: outcome) }
        }
        reloadLoopRunning = false
    }

    private func performReload() async -> ReloadOutcome {
        let clock = ContinuousClock()
        let begin = clock.now
        var mark = begin
        var timings = ReloadTimingsMs()
        func lap() -> Double {
            let now = clock.now
            defer { mark = now }
            return (now - mark).milliseconds
        }
        reloadCount += 1
        notifier.reloading(status: "reloading \(options.configPath)")

        // 1. Read and validate. The bytes read here are the bytes every new worker gets.
        reloadPhase = .validating
        let newLoaded: LoadedConfiguration
        do {
            newLoaded = try ConfigLoader.load(path: options.configPath)
        } catch {
            return failReload("invalid config \(options.configPath)", details: error.diagnostics.map(\.description))
        }
        let newSettings = EffectiveSettings(newLoaded.configuration, options: options, cpuCount: cpuCount)
        if newSettings.controlSocket != settings.controlSocket {
            logger.warning("control_socket changed in the config; it takes effect at the next start")
        }
        timings.validate = lap()

        // 2. Sockets: kept ones are reused, new ones bound now; a failure changes nothing.
        reloadPhase = .binding
        let generationID = nextGenerationID
        nextGenerationID += 1
        let specs = newLoaded.configuration.listeners.map {
            ListenerTable.Spec(name: $0.name, address: $0.address, backlog: $0.backlog)
        }
        let listeners: [ListenerTable.Listener]
        do {
            listeners = try listenerTable.acquire(specs, for: generationID)
        } catch {
            return failReload("\(error)", details: [])
        }
        timings.bind = lap()

        // 3. The new generation.
        reloadPhase = .spawning
        let generation = Generation(
            id: generationID, loaded: newLoaded, settings: newSettings, listeners: listeners,
            wallClockStart: Date().timeIntervalSince1970)
        generations[generationID] = generation
        let diff = ConfigDiff(from: loaded.configuration, to: newLoaded.configuration)
        logger.info(
            "starting generation \(generationID)",
            metadata: ["workers": "\(newSettings.workers)", "changes": "\(Self.describe(diff))"])

        // 4. Wait until every new worker is ready.
        reloadPhase = .waitingForReady
        let spawnStart = clock.now
        let result = await startWorkers(of: generation)
        timings.spawn = 0
        timings.ready = lap()
        _ = spawnStart
        if case .failure(let failure) = result {
            await abandon(generation)
            return failReload("generation \(generationID) failed to start: \(failure)", details: [])
        }
        guard state == .running else {
            await abandon(generation)
            return failReload("gatewayd began stopping during the reload", details: [])
        }

        // 5. Switch: the new generation serves, the old one stops accepting and drains.
        reloadPhase = .switching
        generation.state = .serving
        let previousID = servingID
        servingID = generationID
        loaded = newLoaded
        settings = newSettings
        if let previousID, let previous = generations[previousID] {
            await drain(previous, reason: "replaced by generation \(generationID)")
        }
        enforceDrainingLimit()
        timings.switchOver = lap()
        timings.total = (clock.now - begin).milliseconds
        logger.info(
            "reload complete: generation \(generationID) serving",
            metadata: [
                "validate_ms": "\(Self.format(timings.validate))", "bind_ms": "\(Self.format(timings.bind))",
                "ready_ms": "\(Self.format(timings.ready))", "switch_ms": "\(Self.format(timings.switchOver))",
                "total_ms": "\(Self.format(timings.total))",
            ])
        notifier.ready(status: statusLine())
        return .succeeded(generation: generationID, timings: timings)
    }

    private func failReload(_ reason: String, details: [String]) -> ReloadOutcome {
        failedReloadCount += 1
        logger.error("reload failed: \(reason)\(details.isEmpty ? "" : "\n" + details.joined(separator: "\n"))")
        // systemd waits for READY=1 after RELOADING=1 even when the reload failed.
        notifier.ready(status: "reload failed: \(reason); \(statusLine())")
        return .failed(reason: reason, details: details)
    }

    /// Past max_draining_generations the oldest draining generations are stopped early, so a
    /// reload storm cannot pile up old workers (nginx's and HAProxy's known failure).
    private func enforceDrainingLimit() {
        let draining = generations.values.filter { $0.state == .draining }.sorted { $0.id < $1.id }
        let excess = draining.count - settings.maxDrainingGenerations
        guard excess > 0 else { return }
        for generation in draining.prefix(excess) {
            logger.warning(
                "stopping generation \(generation.id) early: more than max_draining_generations (\(settings.maxDrainingGenerations)) are draining",
                metadata: ["connections": "\(generation.connectionCount)"])
            for worker in generation.liveWorkers { terminate(worker) }
        }
    }

    static func describe(_ diff: ConfigDiff) -> String {
        var parts: [String] = []
        if !diff.addedListeners.isEmpty { parts.append("listeners added: \(diff.addedListeners.map(\.name).joined(separator: ","))") }
        if !diff.removedListeners.isEmpty { parts.append("listeners removed: \(diff.removedListeners.map(\.name).joined(separator: ","))") }
        parts.append(contentsOf: diff.changedSettings)
        return parts.isEmpty ? "none" : parts.joined(separator: "; ")
    }

    static func format(_ ms: Double) -> String {
        String(format: "%.1f", ms)
    }
}

extension Master {
    // MARK: - Stop

    /// Graceful: every generation drains, then the master exits. Now: every worker gets
    /// SIGTERM (SIGKILL after a grace). A graceful stop already under way can be escalated.
    public func stop(now: Bool) async {
        switch state {
        case .stopped, .stoppingNow:
            return
        case .stopping where !now:
            return
        default:
            break
        }
        let wasStarting = state == .starting
        state = now ? .stoppingNow : .stopping
        logger.info(now ? "stopping now" : "stopping gracefully: draining every generation")
        notifier.stopping(status: now ? "stopping now" : "stopping: draining")
        for waiter in reloadWaiters { waiter.resume(returning: .failed(reason: "gatewayd is stopping", details: [])) }
        reloadWaiters.removeAll()
        for generation in generations.values {
            generation.resumeReady(.failure(GenerationStartFailure(description: "gatewayd is stopping")))
        }
        if now {
            for generation in generations.values {
                for worker in generation.liveWorkers { terminate(worker) }
            }
        } else {
            for generation in generations.values.sorted(by: { $0.id < $1.id }) where generation.state != .draining {
                await drain(generation, reason: "gatewayd is stopping")
            }
        }
        if wasStarting && generations.values.allSatisfy({ $0.liveWorkers.isEmpty }) {
            finish()
            return
        }
        checkStopComplete()
    }

    func checkStopComplete() {
        guard state == .stopping || state == .stoppingNow else { return }
        if generations.values.allSatisfy({ $0.liveWorkers.isEmpty }) {
            finish()
        }
    }
}

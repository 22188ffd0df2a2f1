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
        var timings = ReloadTimings()
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
        timings.validateMs = lap()

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
        timings.bindMs = lap()

        // 3. The new generation.
        reloadPhase = .spawning
        let generation = Generation(
            id: generationID, loaded: newLoaded, settings: newSettings, listeners: listeners, accessLog: accessLog,
            wallClockStart: Date().timeIntervalSince1970)
        generations[generationID] = generation
        let diff = ConfigDiff(from: loaded.configuration, to: newLoaded.configuration)
        logger.info(
            "starting generation \(generationID)",
            metadata: ["workers": "\(newSettings.workers)", "changes": "\(Self.describe(diff))"])

        let spawnFailure = spawnWorkers(of: generation)
        timings.spawnMs = lap()

        // 4. Wait until every new worker is ready.
        reloadPhase = .waitingForReady
        let result: Result<Void, GenerationStartFailure> =
            if let spawnFailure { .failure(spawnFailure) } else { await waitUntilReady(generation) }
        timings.readyMs = lap()
        guard state == .running else {
            await abandon(generation)
            checkStopComplete()
            return failReload("gatewayd began stopping during the reload", details: [])
        }
        if case .failure(let failure) = result {
            // Its live workers drain (abandon): room for them first.
            enforceDrainingLimit(makingRoomFor: generation)
            await abandon(generation)
            return failReload("generation \(generationID) failed to start: \(failure)", details: [])
        }

        // 5. Switch: the new generation serves, the old one stops accepting and drains.
        reloadPhase = .switching
        generation.state = .serving
        replaceDeadWorkers(of: generation)
        storeInSystemd(listeners)
        let previousID = servingID
        servingID = generationID
        loaded = newLoaded
        settings = newSettings
        if let previousID, let previous = generations[previousID] {
            // Room first, then the drain: never one more draining than the limit, even briefly.
            enforceDrainingLimit(makingRoomFor: previous)
            await drain(previous, reason: "replaced by generation \(generationID)")
        }
        timings.switchMs = lap()
        timings.totalMs = (clock.now - begin).milliseconds
        logger.info(
            "reload complete: generation \(generationID) serving",
            metadata: [
                "validate_ms": "\(Self.format(timings.validateMs))", "bind_ms": "\(Self.format(timings.bindMs))",
                "spawn_ms": "\(Self.format(timings.spawnMs))",
                "ready_ms": "\(Self.format(timings.readyMs))", "switch_ms": "\(Self.format(timings.switchMs))",
                "total_ms": "\(Self.format(timings.totalMs))",
            ])
        // A stop may have begun while the old generation's drain started: READY=1 after
        // STOPPING=1 would take the unit back from deactivating.
        if state == .running {
            notifier.ready(status: statusLine())
        }
        // After the timings: starting spares is not part of this reload's latency.
        replenishSpares()
        return .succeeded(generation: generationID, timings: timings)
    }

    private func failReload(_ reason: String, details: [String]) -> ReloadOutcome {
        failedReloadCount += 1
        logger.error("reload failed: \(reason)\(details.isEmpty ? "" : "\n" + details.joined(separator: "\n"))")
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
            for worker in generation.liveWorkers { terminate(worker) }
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
        // The drain may take up to the longest drain_timeout of any generation (each drains
        // under the config it was started with), then the kill grace: ask systemd for that
        // much (with a margin for the exit itself), so TimeoutStopSec= does not cut it.
        let longestDrain = now ? .zero : generations.values.map(\.settings.drainTimeout).max() ?? settings.drainTimeout
        notifier.extendTimeout(by: longestDrain + Self.killGrace + .seconds(5))
        for waiter in reloadWaiters { waiter.resume(returning: .failed(reason: "gatewayd is stopping", details: [])) }
        reloadWaiters.removeAll()
        stopSpares()
        // A generation still starting (generation 1, or a reload's) belongs to whoever waits
        // for it: waking them up makes them stop it (see `run` and `performReload`).
        for generation in generations.values where generation.state == .starting {
            generation.resumeReady(.failure(GenerationStartFailure(description: "gatewayd is stopping")))
        }
        if wasStarting { return }
        if now {
            for generation in generations.values {
                for worker in generation.liveWorkers { terminate(worker) }
            }
        } else {
            for generation in generations.values.sorted(by: { $0.id < $1.id }) where generation.state == .serving {
                await drain(generation, reason: "gatewayd is stopping")
            }
        }
        checkStopComplete()
    }

    func checkStopComplete() {
        guard state == .stopping || state == .stoppingNow else { return }
        // A generation still starting is not done yet, even with no live worker: its owner
        // (run or performReload) has yet to wake up and abandon it.
        if spares.isEmpty, generations.values.allSatisfy({ $0.liveWorkers.isEmpty && $0.state != .starting }) {
            finish()
        }
    }
}

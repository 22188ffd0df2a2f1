import GatewayCore

/// TLS session ticket keys (`SessionTicketKeys`): made when the master starts, the same for
/// every generation (a reload keeps them, so a client resumes across it), rotated every
/// `SessionTicketKeys.rotationPeriod` and sent to every live worker over its channel, as the
/// live log level is. A worker started later (a restart, a new generation, a spare at its
/// handoff) gets the keys of the moment in its `hello`; a frame queued behind a handoff goes
/// out after it. An upgrade's new master takes the old one's keys and their age from the
/// upgrade's `state` (`Master+Takeover`): tickets resume across an upgrade as across a reload,
/// and the rotation stays on the old master's schedule, so no key lives longer for it.
extension Master {
    func startTicketKeyRotation() {
        var period = SessionTicketKeys.rotationPeriod
        #if GATEWAYD_FAULT_INJECTION
            if let injected = Self.injectedTicketKeyRotation(loaded) { period = injected }
        #endif
        Task { [weak self] in
            while let due = await self?.nextTicketKeyRotation(period: period) {
                try? await Task.sleep(until: due, clock: .continuous)
                guard let self, await self.rotateTicketKeysIfDue(period: period) else { return }
            }
        }
    }

    /// From when an upgrade sends the keys until it ends, both masters' workers accept, and a
    /// ticket one issues must decrypt on the other: the old master does not rotate then (the
    /// new one rotates on schedule once in charge; a failed upgrade rotates at once if due).
    private var ticketKeyRotationHeld: Bool {
        [.handingOver, .waitingForNewMaster, .switching].contains(upgradePhase)
    }

    /// How often a held rotation looks again: upgrades take well under a second here.
    private static let heldRotationRecheck: Duration = .seconds(1)

    /// When to look next, nil once the master has stopped.
    private func nextTicketKeyRotation(period: Duration) -> ContinuousClock.Instant? {
        guard state != .stopped else { return nil }
        return ticketKeyRotationHeld ? .now + Self.heldRotationRecheck : ticketKeysMadeAt + period
    }

    /// Rotates if a rotation is due and not held (the sleep before it may have ended early, or
    /// keys may have been adopted meanwhile). False once the master has stopped.
    private func rotateTicketKeysIfDue(period: Duration) -> Bool {
        guard state != .stopped else { return false }
        guard !ticketKeyRotationHeld, ContinuousClock.now >= ticketKeysMadeAt + period else { return true }
        return rotateTicketKeys()
    }

    /// What an upgrade's `state` carries: the keys, and the newest one's age.
    var ticketKeysForUpgrade: UpgradeMessage.CarriedTicketKeys {
        UpgradeMessage.CarriedTicketKeys(
            keys: ticketKeys, ageMilliseconds: Int((ContinuousClock.now - ticketKeysMadeAt).milliseconds))
    }

    /// Takes an old master's keys (an upgrade), the newest `ageMilliseconds` old when they
    /// arrived `received`: at most one rotation period, so that an age gone wrong cannot stall
    /// the rotation.
    func adoptTicketKeys(_ carried: UpgradeMessage.CarriedTicketKeys, received: ContinuousClock.Instant) {
        ticketKeys = carried.keys
        let age = min(Duration.milliseconds(max(0, carried.ageMilliseconds)), SessionTicketKeys.rotationPeriod)
        ticketKeysMadeAt = received - age
    }

    private func rotateTicketKeys() -> Bool {
        ticketKeys.rotate()
        ticketKeysMadeAt = .now
        var reached = 0
        for generation in generations.values {
            for worker in generation.liveWorkers {
                worker.send(.ticketKeys(ticketKeys), logger: logger)
                reached += 1
            }
        }
        logger.info("TLS session ticket keys rotated", metadata: ["workers": "\(reached)"])
        return true
    }
}

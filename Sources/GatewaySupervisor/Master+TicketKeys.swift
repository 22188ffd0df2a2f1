import GatewayCore

/// TLS session ticket keys (`SessionTicketKeys`): made when the master starts, the same for
/// every generation (a reload keeps them, so a client resumes across it), rotated every
/// `SessionTicketKeys.rotationPeriod` and sent to every live worker over its channel, as the
/// live log level is. A worker started later (a restart, a new generation, a spare at its
/// handoff) gets the keys of the moment in its `hello`; a frame queued behind a handoff goes
/// out after it. An upgrade's new master makes keys of its own: tickets issued before it fall
/// back to a full handshake once (the upgrade protocol does not carry secrets).
extension Master {
    func startTicketKeyRotation() {
        var period = SessionTicketKeys.rotationPeriod
        #if GATEWAYD_FAULT_INJECTION
            if let injected = Self.injectedTicketKeyRotation(loaded) { period = injected }
        #endif
        Task { [weak self] in
            while true {
                try? await Task.sleep(for: period)
                guard let self, await self.rotateTicketKeys() else { return }
            }
        }
    }

    /// False once the master has stopped.
    private func rotateTicketKeys() -> Bool {
        guard state != .stopped else { return false }
        ticketKeys.rotate()
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

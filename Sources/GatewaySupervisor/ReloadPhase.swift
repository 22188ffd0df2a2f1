import GatewayCore

/// Where a reload stands. `status`, logs and tests all read this one enum.
public enum ReloadPhase: String, Sendable, CaseIterable {
    case idle
    /// Reading and validating the config file.
    case validating
    /// Binding listeners the new config adds.
    case binding
    /// Starting the new generation's workers and handing them their config and fds.
    case spawning
    /// Waiting for every new worker to report ready (at most ready_timeout).
    case waitingForReady = "waiting_for_ready"
    /// Telling the old generation to stop accepting, and waiting until it has.
    case switching
}

/// What a reload ended with; every caller merged into the reload gets the same outcome.
public enum ReloadOutcome: Sendable, Equatable {
    case succeeded(generation: Int, timings: ReloadTimings)
    case failed(reason: String, details: [String])
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

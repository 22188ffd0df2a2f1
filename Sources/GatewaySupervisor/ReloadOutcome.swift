import GatewayCore

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

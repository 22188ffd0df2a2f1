import GatewayCore

/// What a worker shares with every other worker of the gateway, through the segment the master
/// created at start-up: gateway-wide rate limits and metrics, which outlive reloads.
public struct SharedState: Sendable {
    public let memory: SharedMemory
    /// The swift-metrics backend on the segment; `render()` for `/metrics`.
    public let metrics: SharedMetricsFactory

    public init(memory: SharedMemory) {
        self.memory = memory
        self.metrics = SharedMetricsFactory(memory: memory)
    }

    /// `admit(route:key:rate:burst:now:)` decides a request against a gateway-wide limit.
    public var rateLimiter: SharedRateLimiter { memory.rateLimiter }
}

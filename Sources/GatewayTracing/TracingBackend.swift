import Dispatch
import GatewayConfig
import Logging
import Synchronization
import Tracing

/// A process's tracer and the exporter behind it: one per worker, one in the master. It owns
/// the exporter's tasks (swift-otel's batch span processor and OTLP/HTTP client, on Swift
/// concurrency's pool and their own event loop, never on a worker's epoll thread): ending a
/// span only hands it to them.
///
/// Only a build with the `OTLPTracing` package trait has an exporter
/// (`TracingBackend+OTLP.swift`); in the default build `start` throws, and the config
/// validator has already refused a `tracing:` section (`TracingConfig.exporterIsBuiltIn`).
public final class TracingBackend: Sendable {
    public let tracer: any Tracer
    public let configuration: TracingConfig
    private let stop: @Sendable () async -> Void

    init(tracer: any Tracer, configuration: TracingConfig, stop: @escaping @Sendable () async -> Void) {
        self.tracer = tracer
        self.configuration = configuration
        self.stop = stop
    }

    /// Starts exporting as `configuration` says; `logger` gets the exporter's own complaints
    /// (a collector that refuses or cannot be reached).
    public static func start(_ configuration: TracingConfig, logger: Logger) throws(TracingBackendError)
        -> TracingBackend
    {
        #if OTLPTracing
            return try startOTLP(configuration, logger: logger)
        #else
            throw TracingBackendError(
                reason: "this gatewayd was built without the OTLP exporter (make release TRACING=1)")
        #endif
    }

    /// Exports the spans still buffered, then stops; gives up after `timeout`, so that a
    /// collector that does not answer cannot hold the process's exit.
    public func shutdown(within timeout: Duration) async {
        let done = Atomic<Bool>(false)
        let stop = self.stop
        Task {
            await stop()
            done.store(true, ordering: .releasing)
        }
        let deadline = ContinuousClock.now + timeout
        // Polled: the stop cannot be cancelled part way (an export in flight finishes or times
        // out on its own), and the process exits right after this returns anyway.
        while !done.load(ordering: .acquiring), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Why the exporter could not start: swift-otel refused the configuration, or the build has none.
public struct TracingBackendError: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "cannot start tracing: \(self.reason)" }
}

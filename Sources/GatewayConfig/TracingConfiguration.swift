/// `tracing:`: spans of every request, upstream attempt and reload, exported by OTLP/HTTP
/// (docs/observability.md, "Tracing"). Absent: no tracing, and nothing of it on the data path.
public struct TracingConfig: Sendable, Equatable {
    /// The OTLP/HTTP (protobuf) traces URL spans are POSTed to, e.g.
    /// `http://127.0.0.1:4318/v1/traces`; one written without a path gets `/v1/traces`, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` does.
    public var otlpEndpoint: String
    /// The share of requests without a client `traceparent` that start a sampled trace, 0 to 1
    /// (drawn per request by the worker: Gateway's `RequestTracing`); a request with one follows
    /// that trace's sampled flag instead (parent-based, as OpenTelemetry's samplers).
    public var sampleRatio: Double
    /// The `service.name` of the spans' resource.
    public var serviceName: String

    /// OpenTelemetry's default sampler samples every trace; one written `tracing:` section is
    /// asking for traces, so the same default here.
    public static let defaultSampleRatio = 1.0
    public static let defaultServiceName = "gatewayd"

    public init(
        otlpEndpoint: String, sampleRatio: Double = TracingConfig.defaultSampleRatio,
        serviceName: String = TracingConfig.defaultServiceName
    ) {
        self.otlpEndpoint = otlpEndpoint
        self.sampleRatio = sampleRatio
        self.serviceName = serviceName
    }

    /// Whether this build can export spans: only one built with the `OTLPTracing` package
    /// trait links swift-otel (`make release TRACING=1`); the default build stays without it.
    public static var exporterIsBuiltIn: Bool {
        #if OTLPTracing
            return true
        #else
            return false
        #endif
    }
}

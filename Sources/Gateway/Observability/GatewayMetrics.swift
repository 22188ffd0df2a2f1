import GatewayCore
import Metrics
import Synchronization

/// The gateway's metrics, through swift-metrics. The worker bootstraps the metrics system with
/// the shared-memory backend, so every figure covers the whole gateway (every worker, every
/// generation); without a bootstrap (tests) these are no-ops.
///
/// Metric objects are made once per label set and cached: swift-metrics looks a handler up in
/// its factory on creation, which costs more than the increment itself.
final class GatewayMetrics: Sendable {
    static let requestsTotal = MetricCatalog.requestsTotal
    static let requestDuration = MetricCatalog.requestDuration
    static let upstreamLatency = MetricCatalog.upstreamLatency
    static let upstreamErrors = MetricCatalog.upstreamErrors
    static let openConnections = MetricCatalog.openConnections
    static let tlsHandshakeFailures = MetricCatalog.tlsHandshakeFailures

    private struct RequestKey: Hashable {
        var route: ObjectIdentifier?
        var routeName: String?
        var status: Int
    }

    private let requests = Mutex<[RequestKey: Counter]>([:])
    /// By route (the status is left out of the key: `status: 0`).
    private let durations = Mutex<[RequestKey: Metrics.Timer]>([:])
    private let latencies = Mutex<[String: Metrics.Timer]>([:])
    private let errors = Mutex<[String: Counter]>([:])
    private let connections: Gauge
    private let handshakeFailures: Counter
    private let fullHandshakes: Counter
    private let resumedHandshakes: Counter
    private let streamResets: Counter
    private let http2Errors: Counter
    private let rapidResets: Counter

    init() {
        self.connections = Gauge(label: Self.openConnections)
        self.handshakeFailures = Counter(label: Self.tlsHandshakeFailures)
        self.fullHandshakes = Counter(label: MetricCatalog.tlsHandshakes, dimensions: [("resumed", "false")])
        self.resumedHandshakes = Counter(label: MetricCatalog.tlsHandshakes, dimensions: [("resumed", "true")])
        self.streamResets = Counter(label: MetricCatalog.http2StreamResets)
        self.http2Errors = Counter(label: MetricCatalog.http2ConnectionErrors, dimensions: [("kind", "protocol")])
        self.rapidResets = Counter(label: MetricCatalog.http2ConnectionErrors, dimensions: [("kind", "rapid_reset")])
    }

    /// `route`: the route object when there is one (the key hashes a pointer, not a string).
    /// `duration`: from the parsed head to the response's last byte, in nanoseconds.
    func record(
        route: RouteHandling?, routeName: String, status: Int, upstream: String?, latency: UInt64?, duration: UInt64
    ) {
        var key = RequestKey(
            route: route.map(ObjectIdentifier.init), routeName: route == nil ? routeName : nil, status: status)
        Self.cached(self.requests, key) {
            Counter(label: Self.requestsTotal, dimensions: [("route", routeName), ("status", String(status))])
        }.increment()
        key.status = 0
        Self.cached(self.durations, key) {
            Metrics.Timer(label: Self.requestDuration, dimensions: [("route", routeName)])
        }.recordNanoseconds(Int64(clamping: duration))
        if let upstream, let latency {
            Self.cached(self.latencies, upstream) {
                Metrics.Timer(label: Self.upstreamLatency, dimensions: [("upstream", upstream)])
            }.recordNanoseconds(Int64(clamping: latency))
        }
    }

    /// `kind`: connect, timeout, read_timeout, reset, stale, protocol, unavailable.
    func upstreamError(upstream: String, kind: String) {
        Self.cached(self.errors, upstream + "\u{0}" + kind) {
            Counter(label: Self.upstreamErrors, dimensions: [("upstream", upstream), ("kind", kind)])
        }.increment()
    }

    /// The metric cached under `key`, made on first use.
    private static func cached<Key: Hashable & Sendable, Metric: Sendable>(
        _ cache: borrowing Mutex<[Key: Metric]>, _ key: Key, _ make: () -> Metric
    ) -> Metric {
        cache.withLock { cache in
            if let metric = cache[key] { return metric }
            let metric = make()
            cache[key] = metric
            return metric
        }
    }

    /// Garbage or plaintext on a TLS listener, no protocol or version in common, a client that
    /// left mid-handshake.
    /// A client's TLS handshake finished: resumed from a ticket, or full.
    func tlsHandshakeDone(resumed: Bool) {
        (resumed ? self.resumedHandshakes : self.fullHandshakes).increment()
    }

    func tlsHandshakeFailed() {
        self.handshakeFailures.increment()
    }

    func http2StreamReset() {
        self.streamResets.increment()
    }

    /// A GOAWAY with an error; `rapidReset` for CVE-2023-44487's pattern.
    func http2ConnectionError(rapidReset: Bool = false) {
        (rapidReset ? self.rapidResets : self.http2Errors).increment()
    }

    func connectionCount(_ count: Int) {
        self.connections.record(count)
    }
}

import Metrics
import Synchronization

/// The gateway's metrics, through swift-metrics. The worker bootstraps the metrics system with
/// the shared-memory backend, so every figure covers the whole gateway (every worker, every
/// generation); without a bootstrap (tests) these are no-ops.
///
/// Metric objects are made once per label set and cached: swift-metrics looks a handler up in
/// its factory on creation, which costs more than the increment itself.
final class GatewayMetrics: Sendable {
    static let requestsTotal = "gatewayd_requests_total"
    static let upstreamLatency = "gatewayd_upstream_latency_seconds"
    static let upstreamErrors = "gatewayd_upstream_errors_total"
    static let openConnections = "gatewayd_open_connections"
    static let tlsHandshakeFailures = "gatewayd_tls_handshake_failures_total"

    private struct RequestKey: Hashable {
        var route: ObjectIdentifier?
        var routeName: String?
        var status: Int
    }

    private let requests = Mutex<[RequestKey: Counter]>([:])
    private let latencies = Mutex<[String: Metrics.Timer]>([:])
    private let errors = Mutex<[String: Counter]>([:])
    private let connections: Gauge
    private let handshakeFailures: Counter

    init() {
        self.connections = Gauge(label: Self.openConnections)
        self.handshakeFailures = Counter(label: Self.tlsHandshakeFailures)
    }

    /// `route`: the route object when there is one (the key hashes a pointer, not a string).
    func record(route: RouteHandling?, routeName: String, status: Int, upstream: String?, latency: UInt64?) {
        let key = RequestKey(
            route: route.map(ObjectIdentifier.init), routeName: route == nil ? routeName : nil, status: status)
        let counter = self.requests.withLock { cache in
            if let counter = cache[key] { return counter }
            let counter = Counter(
                label: Self.requestsTotal, dimensions: [("route", routeName), ("status", String(status))])
            cache[key] = counter
            return counter
        }
        counter.increment()
        if let upstream, let latency {
            let timer = self.latencies.withLock { cache in
                if let timer = cache[upstream] { return timer }
                let timer = Metrics.Timer(label: Self.upstreamLatency, dimensions: [("upstream", upstream)])
                cache[upstream] = timer
                return timer
            }
            timer.recordNanoseconds(Int64(clamping: latency))
        }
    }

    /// `kind`: connect, timeout, read_timeout, reset, stale, protocol, unavailable.
    func upstreamError(upstream: String, kind: String) {
        let key = upstream + "\u{0}" + kind
        let counter = self.errors.withLock { cache in
            if let counter = cache[key] { return counter }
            let counter = Counter(label: Self.upstreamErrors, dimensions: [("upstream", upstream), ("kind", kind)])
            cache[key] = counter
            return counter
        }
        counter.increment()
    }

    /// Garbage or plaintext on a TLS listener, no protocol or version in common, a client that
    /// left mid-handshake.
    func tlsHandshakeFailed() {
        self.handshakeFailures.increment()
    }

    func connectionCount(_ count: Int) {
        self.connections.record(count)
    }
}

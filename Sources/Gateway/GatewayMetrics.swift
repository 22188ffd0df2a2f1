import Metrics
import NIOCore
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

    private struct RequestKey: Hashable {
        var route: ObjectIdentifier?
        var routeName: String?
        var status: Int
    }

    private let requests = Mutex<[RequestKey: Counter]>([:])
    private let latencies = Mutex<[String: Metrics.Timer]>([:])
    private let errors = Mutex<[String: Counter]>([:])
    private let connections: Gauge

    init() {
        self.connections = Gauge(label: Self.openConnections)
    }

    func record(_ record: RequestRecord) {
        // Keyed by the route object when there is one: hashing a pointer, not a string.
        let key = RequestKey(
            route: record.routeID, routeName: record.routeID == nil ? record.route : nil, status: record.status)
        let counter = self.requests.withLock { cache in
            if let counter = cache[key] { return counter }
            let counter = Counter(
                label: Self.requestsTotal, dimensions: [("route", record.route), ("status", String(record.status))])
            cache[key] = counter
            return counter
        }
        counter.increment()
        if let upstream = record.upstreamName, let latency = record.upstreamLatency {
            let timer = self.latencies.withLock { cache in
                if let timer = cache[upstream] { return timer }
                let timer = Metrics.Timer(label: Self.upstreamLatency, dimensions: [("upstream", upstream)])
                cache[upstream] = timer
                return timer
            }
            timer.recordNanoseconds(latency.nanoseconds)
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

    func connectionCount(_ count: Int) {
        self.connections.record(count)
    }
}

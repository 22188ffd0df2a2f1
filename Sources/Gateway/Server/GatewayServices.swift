import GatewayConfig
import GatewayCore
import GatewayHTTP
import Synchronization

/// What a worker's connections share: limits, the upstream configurations, the rate limiter,
/// the access log and the metrics. Built once per server; read from every loop.
final class GatewayServices: Sendable {
    let limits: LimitsConfig
    /// `nil` only in tests that do not need one: routes with `rate_limit` are then not limited.
    let rateLimiter: SharedRateLimiter?
    let accessLog: AccessLog?
    let metrics: GatewayMetrics
    /// `/metrics` on the admin listener: the Prometheus text of the whole gateway.
    let metricsExposition: (@Sendable () -> String)?
    /// Serving and not draining: what `/readyz` answers.
    let ready = Atomic<Bool>(false)
    /// `paths:`: how targets become canonical paths.
    let paths: PathsConfig
    let upstreamConfigurations: [String: UpstreamConfig]
    /// The TLS contexts of upstreams with `tls`, by name, or why one could not be built
    /// (`GatewayServer.start` throws it, as it throws a route's).
    let upstreamTLS: Result<[String: TLSClientContext], GatewayServerError>
    /// The worker's tracer and its sampling when `tracing:` is on (`RequestTrace.swift`); nil,
    /// the usual case, costs one check per request.
    let tracing: RequestTracing?
    /// Lower-cased names of the routes' API-key fields. With `Authorization` and
    /// `Proxy-Authorization`, the fields that carry a credential: present twice, a request is
    /// refused, because a check of the first and an upstream that reads the second disagree.
    private let apiKeyNames: [[UInt8]]

    init(
        configuration: GatewayConfiguration, rateLimiter: SharedRateLimiter?, accessLog: AccessLog?,
        metrics: GatewayMetrics, metricsExposition: (@Sendable () -> String)?, tracing: RequestTracing? = nil
    ) {
        self.metricsExposition = metricsExposition
        self.tracing = tracing
        self.limits = configuration.limits
        self.rateLimiter = rateLimiter
        self.accessLog = accessLog
        self.metrics = metrics
        self.paths = configuration.paths
        var names: [[UInt8]] = []
        for route in configuration.routes {
            if case .apiKey(let header) = route.auth?.scheme {
                let name = Array(header.lowercased().utf8)
                if !names.contains(name), name != Array("authorization".utf8) { names.append(name) }
            }
        }
        self.apiKeyNames = names
        var upstreams: [String: UpstreamConfig] = [:]
        for upstream in configuration.upstreams {
            upstreams[upstream.name] = upstream
        }
        self.upstreamConfigurations = upstreams
        self.upstreamTLS = TLSClientContext.contexts(for: configuration.upstreams)
    }

    /// The name of a credential field the request carries more than once, if any.
    func repeatedCredential(_ head: MessageHead, _ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        var authorization = 0
        var proxyAuthorization = 0
        var apiKeys = [Int](repeating: 0, count: self.apiKeyNames.count)
        for field in head.fields {
            switch field.name {
            case .authorization:
                authorization += 1
                if authorization > 1 { return "authorization" }
            case .proxyAuthorization:
                proxyAuthorization += 1
                if proxyAuthorization > 1 { return "proxy-authorization" }
            case .other where !self.apiKeyNames.isEmpty:
                let name = UnsafeBufferPointer(rebasing: bytes[field.nameRange])
                for (index, candidate) in self.apiKeyNames.enumerated() where candidate.count == name.count {
                    if candidate.withUnsafeBufferPointer({ HTTPBytes.equalsIgnoringCase(name, $0) }) {
                        apiKeys[index] += 1
                        if apiKeys[index] > 1 { return String(decoding: candidate, as: UTF8.self) }
                    }
                }
            default:
                break
            }
        }
        return nil
    }

    /// Takes a token for `key` from the route's bucket: nil if admitted, else the seconds to
    /// wait (`Retry-After`). Without a shared limiter (no segment), admits.
    func denied(route: String, limit: RateLimitConfig, key: String) -> Int? {
        guard let limiter = self.rateLimiter,
            case .denied(let retryAfter) = limiter.admit(route: route, key: key, rate: limit.rate, burst: limit.burst)
        else { return nil }
        return retryAfter
    }

    /// A request's response is whole (or cut): counted, and logged.
    func completed(_ request: ClientRequest, now: UInt64) {
        let routeName = request.routeName ?? request.route.name
        self.metrics.record(
            route: request.routeName == nil ? request.route : nil, routeName: routeName, status: request.status,
            upstream: request.upstreamName, latency: request.upstreamLatency, duration: now &- request.start)
        if let trace = request.trace {
            request.trace = nil
            trace.end(request)
        }
        guard let accessLog = self.accessLog else { return }
        accessLog.log(
            RequestRecord(
                durationNanoseconds: now &- request.start, method: request.methodText, uri: request.target,
                isHTTP10: request.isHTTP10, isHTTP2: request.isHTTP2, route: routeName,
                requestID: request.requestID.string,
                client: request.clientAddress, userAgent: request.userAgent, referer: request.referer,
                host: request.host, status: request.status, bytesSent: request.bytesSent,
                upstream: request.upstreamEndpoint, upstreamStatus: request.upstreamStatus,
                aborted: request.aborted))
    }
}

extension LimitsConfig {
    var headerTimeoutNanoseconds: UInt64 { self.headerTimeout.nanosecondsValue }
    var idleTimeoutNanoseconds: UInt64 { self.idleTimeout.nanosecondsValue }
    var bodyTimeoutNanoseconds: UInt64 { self.bodyTimeout.nanosecondsValue }
    var tunnelIdleTimeoutNanoseconds: UInt64 { self.tunnelIdleTimeout.nanosecondsValue }
}

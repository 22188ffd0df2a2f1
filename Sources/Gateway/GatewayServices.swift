import GatewayConfig
import GatewayCore
import NIOCore
import Synchronization

/// What a worker's connections share: limits, the upstream pools of each event loop, the
/// rate limiter, the access log and the metrics. Built once per server.
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
    /// Lower-cased names of the fields that carry a credential: `Authorization`,
    /// `Proxy-Authorization`, and every route's API-key header. Present twice, a request is
    /// refused: a check of the first and an upstream that reads the second disagree.
    let credentialHeaders: [String]
    private let upstreams: [String: UpstreamConfig]
    private let loops = Mutex<[ObjectIdentifier: LoopUpstreams]>([:])
    private let closed = Atomic<Bool>(false)

    init(
        configuration: GatewayConfiguration, rateLimiter: SharedRateLimiter?, accessLog: AccessLog?,
        metrics: GatewayMetrics, metricsExposition: (@Sendable () -> String)?
    ) {
        self.metricsExposition = metricsExposition
        self.limits = configuration.limits
        self.rateLimiter = rateLimiter
        self.accessLog = accessLog
        self.metrics = metrics
        self.paths = configuration.paths
        var credentials = ["authorization", "proxy-authorization"]
        for route in configuration.routes {
            if case .apiKey(let header) = route.auth?.scheme, !credentials.contains(header.lowercased()) {
                credentials.append(header.lowercased())
            }
        }
        self.credentialHeaders = credentials
        var upstreams: [String: UpstreamConfig] = [:]
        for upstream in configuration.upstreams {
            upstreams[upstream.name] = upstream
        }
        self.upstreams = upstreams
    }

    /// The pools of `eventLoop`, made on first use. Call on that loop.
    func upstreams(on eventLoop: any EventLoop) -> LoopUpstreams {
        let key = ObjectIdentifier(eventLoop)
        return self.loops.withLock { loops in
            if let existing = loops[key] { return existing }
            let created = LoopUpstreams(configurations: self.upstreams, eventLoop: eventLoop)
            loops[key] = created
            return created
        }
    }

    func completed(_ record: RequestRecord) {
        self.accessLog?.log(record)
        self.metrics.record(record)
    }

    /// The worker is draining: close every idle upstream connection and keep none from now on
    /// (connections in use finish their request, then close).
    func closeUpstreams() {
        guard !self.closed.exchange(true, ordering: .relaxed) else { return }
        let loops = self.loops.withLock { Array($0.values) }
        for loop in loops {
            loop.eventLoop.execute {
                loop.closeAll()
            }
        }
    }
}

/// The upstream pools of one event loop.
///
/// `@unchecked Sendable`: it is created and used only on `eventLoop` (every caller runs there;
/// `pool(named:)` checks it); only the reference crosses threads, to be handed back to the loop.
final class LoopUpstreams: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let configurations: [String: UpstreamConfig]
    private var pools: [String: UpstreamPool] = [:]
    /// The worker is draining: pools made from now on keep no idle connection either.
    private var closed = false

    init(configurations: [String: UpstreamConfig], eventLoop: any EventLoop) {
        self.configurations = configurations
        self.eventLoop = eventLoop
    }

    func pool(named name: String) -> UpstreamPool? {
        self.eventLoop.preconditionInEventLoop()
        if let pool = self.pools[name] { return pool }
        guard let configuration = self.configurations[name],
            let pool = try? UpstreamPool(configuration: configuration, eventLoop: self.eventLoop)
        else { return nil }
        if self.closed { pool.close() }
        self.pools[name] = pool
        return pool
    }

    func closeAll() {
        self.closed = true
        for pool in self.pools.values {
            pool.close()
        }
    }
}

import GatewayCore
import GatewayHTTP

/// A validated gatewayd configuration. Built only by `ConfigLoader`, which guarantees every
/// invariant stated here (unique names, known references, sane ranges).
public struct GatewayConfiguration: Sendable, Equatable {
    /// Worker processes per generation. `nil` in the file means "number of CPUs", resolved by the master.
    public var workers: Int?
    /// How long a draining generation may keep connections before the master sends SIGTERM.
    public var drainTimeout: Duration
    /// How long a new generation may take until every worker reports ready.
    public var readyTimeout: Duration
    /// Generations allowed to drain at once; past that the oldest is stopped early.
    public var maxDrainingGenerations: Int
    /// A ready or draining worker silent this long (stopped, or its event loop stuck) is
    /// killed; a serving one is then restarted. Workers report at least once a second.
    public var workerWatchdogTimeout: Duration
    /// Control socket path; `nil` means the default (see `docs/configuration.md`).
    public var controlSocket: String?
    /// In file order. Names are unique.
    public var listeners: [ListenerConfig]
    /// In file order: the first match wins.
    public var routes: [RouteConfig]
    /// In file order. Names are unique; every `RouteAction.upstream` names one of these.
    public var upstreams: [UpstreamConfig]
    /// Per-connection and per-request limits, for every listener but the admin one.
    public var limits: LimitsConfig
    /// `nil`: no access log.
    public var accessLog: AccessLogConfig?
    /// `nil`: no admin endpoints.
    public var admin: AdminConfig?
    /// Workers run as this user (name or numeric uid) when the master starts as root.
    public var user: String?
    /// Workers run as this group; `nil` with `user` set means that user's primary group.
    public var group: String?
    /// How request paths are canonicalised and matched (`paths:`).
    public var paths: PathsConfig
    /// Peers whose `X-Forwarded-For`, `-Proto` and `-Host` are believed (`trusted_proxies`); a
    /// listener may have its own list.
    public var trustedProxies: [AddressRange]
    /// `nil`: no tracing.
    public var tracing: TracingConfig?

    public init(
        workers: Int? = nil,
        drainTimeout: Duration = .seconds(30),
        readyTimeout: Duration = .seconds(10),
        maxDrainingGenerations: Int = 4,
        workerWatchdogTimeout: Duration = .seconds(10),
        controlSocket: String? = nil,
        listeners: [ListenerConfig],
        routes: [RouteConfig],
        upstreams: [UpstreamConfig] = [],
        limits: LimitsConfig = LimitsConfig(),
        accessLog: AccessLogConfig? = nil,
        admin: AdminConfig? = nil,
        user: String? = nil,
        group: String? = nil,
        paths: PathsConfig = PathsConfig(),
        trustedProxies: [AddressRange] = [],
        tracing: TracingConfig? = nil
    ) {
        self.workers = workers
        self.drainTimeout = drainTimeout
        self.readyTimeout = readyTimeout
        self.maxDrainingGenerations = maxDrainingGenerations
        self.workerWatchdogTimeout = workerWatchdogTimeout
        self.controlSocket = controlSocket
        self.listeners = listeners
        self.routes = routes
        self.upstreams = upstreams
        self.limits = limits
        self.accessLog = accessLog
        self.admin = admin
        self.user = user
        self.group = group
        self.paths = paths
        self.trustedProxies = trustedProxies
        self.tracing = tracing
    }

    /// The proxies trusted on `listener`: its own list, else the top-level one.
    public func trustedProxies(on listener: String) -> [AddressRange] {
        self.listeners.first { $0.name == listener }?.trustedProxies ?? self.trustedProxies
    }

    public func upstream(named name: String) -> UpstreamConfig? {
        self.upstreams.first { $0.name == name }
    }

    public static let defaultDrainTimeout: Duration = .seconds(30)
    public static let defaultReadyTimeout: Duration = .seconds(10)
    public static let defaultMaxDrainingGenerations = 4
    /// Ten heartbeats (one a second) missed: long enough that a loaded machine or a paused
    /// VM does not trip it, short enough that a stuck worker does not hold its clients for
    /// long (Envoy's watchdog kills after a configurable time; nginx and HAProxy never do).
    public static let defaultWorkerWatchdogTimeout: Duration = .seconds(10)
}

public struct ListenerConfig: Sendable, Equatable {
    /// Unique; the key for handoff to workers and for systemd's FileDescriptorName=.
    public var name: String
    public var address: ListenerAddress
    /// listen(2) backlog; the kernel caps it at net.core.somaxconn.
    public var backlog: Int32
    /// `nil`: the top-level `trusted_proxies` apply.
    public var trustedProxies: [AddressRange]?
    /// Every connection starts with a PROXY protocol (v1 or v2) header, as HAProxy's
    /// `send-proxy` and AWS NLB send it; one that does not is closed.
    public var proxyProtocol: Bool
    /// `nil`: plaintext HTTP/1.1.
    public var tls: TLSConfig?
    /// A plaintext listener also takes HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3): a
    /// connection that starts with the HTTP/2 preface is served as HTTP/2.
    public var h2c: Bool

    /// 4096 is Linux's default somaxconn since 5.4; a deep queue is what keeps
    /// connections waiting (not refused) while generations change.
    public static let defaultBacklog: Int32 = 4096

    public init(
        name: String, address: ListenerAddress, backlog: Int32 = ListenerConfig.defaultBacklog,
        trustedProxies: [AddressRange]? = nil, proxyProtocol: Bool = false, tls: TLSConfig? = nil, h2c: Bool = false
    ) {
        self.h2c = h2c
        self.name = name
        self.address = address
        self.backlog = backlog
        self.trustedProxies = trustedProxies
        self.proxyProtocol = proxyProtocol
        self.tls = tls
    }
}

public struct RouteConfig: Sendable, Equatable {
    public var name: String
    /// Listener names this route applies to; `nil` means every listener.
    public var listener: String?
    public var match: RouteMatch
    public var action: RouteAction
    /// Applied to the request before it goes upstream (upstream routes only).
    public var requestHeaders: HeaderRules
    /// Applied to every response of this route, whatever its action.
    public var responseHeaders: HeaderRules
    /// `nil`: no authentication.
    public var auth: AuthConfig?
    /// `nil`: no rate limit.
    public var rateLimit: RateLimitConfig?

    public init(
        name: String,
        listener: String? = nil,
        match: RouteMatch,
        action: RouteAction,
        requestHeaders: HeaderRules = HeaderRules(),
        responseHeaders: HeaderRules = HeaderRules(),
        auth: AuthConfig? = nil,
        rateLimit: RateLimitConfig? = nil
    ) {
        self.name = name
        self.listener = listener
        self.match = match
        self.action = action
        self.requestHeaders = requestHeaders
        self.responseHeaders = responseHeaders
        self.auth = auth
        self.rateLimit = rateLimit
    }
}

public struct RouteMatch: Sendable, Equatable {
    /// Matches when the request path starts with this (a plain string prefix, as nginx's `location /x`).
    public var pathPrefix: String?
    /// Matches the request path exactly (query string excluded).
    public var path: String?
    public var host: HostMatch?
    /// Upper-case method names; `nil` means any method.
    public var methods: [String]?

    public init(pathPrefix: String? = nil, path: String? = nil, host: HostMatch? = nil, methods: [String]? = nil) {
        self.pathPrefix = pathPrefix
        self.path = path
        self.host = host
        self.methods = methods
    }
}

public enum HostMatch: Sendable, Equatable {
    /// Lower-cased host without port.
    case exact(String)
    /// `*.example.com` is stored as `.example.com`: matches `a.example.com`, not `example.com`.
    case suffix(String)
}

public enum RouteAction: Sendable, Equatable {
    case directResponse(DirectResponse)
    case upstream(ProxyAction)
    case redirect(Redirect)
}

public struct DirectResponse: Sendable, Equatable {
    public var status: Int
    /// In file order; names as written.
    public var headers: [HeaderField]
    public var body: String

    public init(status: Int, headers: [HeaderField] = [], body: String = "") {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

public struct HeaderField: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// `paths:`: how a request's path becomes the one canonical path that routing and the upstream
/// see (`RequestTarget`), and how routes compare it.
public struct PathsConfig: Sendable, Equatable {
    public var rules: PathRules
    /// `false`: routes match paths ignoring ASCII case, for upstreams that do (IIS, ASP.NET
    /// Core): there `/ADMIN` is `/admin`, and a route guarding one must guard the other.
    public var caseSensitive: Bool

    public init(rules: PathRules = PathRules(), caseSensitive: Bool = true) {
        self.rules = rules
        self.caseSensitive = caseSensitive
    }
}

import GatewayCore

/// `upstream: NAME` (with `strip_prefix`) on a route: proxy to that pool.
public struct ProxyAction: Sendable, Equatable {
    /// Names an entry of `GatewayConfiguration.upstreams`.
    public var upstream: String
    /// Removed from the start of the request path before it goes upstream (`/v1/users` with
    /// `/v1` → `/users`; a path that becomes empty becomes `/`).
    public var stripPrefix: String?

    public init(upstream: String, stripPrefix: String? = nil) {
        self.upstream = upstream
        self.stripPrefix = stripPrefix
    }
}

/// `redirect: { status, location }`.
public struct Redirect: Sendable, Equatable {
    /// 301, 302, 303, 307 or 308.
    public var status: Int
    /// Sent as is in `Location`.
    public var location: String

    public init(status: Int = 301, location: String) {
        self.status = status
        self.location = location
    }
}

/// `request_headers` / `response_headers`: `set` replaces (or adds) a header, `remove` drops
/// every field of that name. Removal runs first, then `set`.
public struct HeaderRules: Sendable, Equatable {
    /// In file order. Names validated as RFC 9110 tokens, values without control characters.
    public var set: [HeaderField]
    /// Lower-cased names.
    public var remove: [String]

    public init(set: [HeaderField] = [], remove: [String] = []) {
        self.set = set
        self.remove = remove
    }

    public var isEmpty: Bool { self.set.isEmpty && self.remove.isEmpty }
}

/// One upstream endpoint, `host:port` as written and resolved at load.
public struct UpstreamEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// As written in the file (`127.0.0.1:9001`, `localhost:9001`): logs and metrics use it.
    public var text: String
    public var address: ListenerAddress

    public init(text: String, address: ListenerAddress) {
        self.text = text
        self.address = address
    }

    public var description: String { self.text }
}

public enum BalancePolicy: String, Sendable, Equatable, CaseIterable {
    case roundRobin = "round_robin"
    /// The endpoint with the fewest requests in flight from this worker (ties: round robin).
    case leastRequest = "least_request"
}

public struct UpstreamConfig: Sendable, Equatable {
    public var name: String
    /// At least one; unique.
    public var endpoints: [UpstreamEndpoint]
    public var balance: BalancePolicy
    /// Giving up on connect(2) to one endpoint.
    public var connectTimeout: Duration
    /// From the end of the request being sent to the response head.
    public var responseTimeout: Duration
    /// Between two reads of the response body, once the head has arrived (nginx's
    /// `proxy_read_timeout`). Past it the client connection is closed.
    public var readTimeout: Duration
    public var keepalive: UpstreamKeepalive
    public var health: PassiveHealth
    /// Extra attempts on another endpoint, only for idempotent methods, and only before any
    /// byte of the response arrived: after a failed connect, or after a reset, close or
    /// `response_timeout` when the whole request is still held.
    public var retries: Int
    /// `Host` for requests that came without one (HTTP/1.0); `nil`: the endpoint's
    /// `host:port` as written.
    public var host: String?
    /// `tls:`: requests go to the endpoints over TLS; nil: plaintext.
    public var tls: UpstreamTLSConfig?

    public init(
        name: String,
        endpoints: [UpstreamEndpoint],
        balance: BalancePolicy = .roundRobin,
        connectTimeout: Duration = UpstreamConfig.defaultConnectTimeout,
        responseTimeout: Duration = UpstreamConfig.defaultResponseTimeout,
        readTimeout: Duration = UpstreamConfig.defaultReadTimeout,
        keepalive: UpstreamKeepalive = UpstreamKeepalive(),
        health: PassiveHealth = PassiveHealth(),
        retries: Int = 1,
        host: String? = nil,
        tls: UpstreamTLSConfig? = nil
    ) {
        self.tls = tls
        self.name = name
        self.endpoints = endpoints
        self.balance = balance
        self.connectTimeout = connectTimeout
        self.responseTimeout = responseTimeout
        self.readTimeout = readTimeout
        self.keepalive = keepalive
        self.health = health
        self.retries = retries
        self.host = host
    }

    /// nginx's `proxy_connect_timeout` is 60 s; Envoy's cluster connect_timeout is 5 s. On a
    /// LAN a connect takes well under a millisecond, and 2 s leaves room for a retry within
    /// a client's patience.
    public static let defaultConnectTimeout: Duration = .seconds(2)
    /// Envoy's route timeout is 15 s, nginx's `proxy_read_timeout` 60 s: 30 s sits between.
    public static let defaultResponseTimeout: Duration = .seconds(30)
    /// nginx's `proxy_read_timeout` default, 60 s: an upstream that sends nothing for a minute
    /// in the middle of a body is stuck, while one that streams slowly (a report, a log tail)
    /// still gets a minute per piece.
    public static let defaultReadTimeout: Duration = .seconds(60)
}

public struct UpstreamKeepalive: Sendable, Equatable {
    /// Idle connections kept per endpoint, per worker (nginx's `keepalive 32` is the usual).
    public var maxIdlePerEndpoint: Int
    /// An idle connection unused this long is closed. Kept below common upstream idle
    /// timeouts (Node.js: 5 s, nginx: 75 s) is the operator's job; 60 s matches nginx's
    /// `keepalive_timeout` default for upstreams.
    public var idleTimeout: Duration

    public init(maxIdlePerEndpoint: Int = 32, idleTimeout: Duration = .seconds(60)) {
        self.maxIdlePerEndpoint = maxIdlePerEndpoint
        self.idleTimeout = idleTimeout
    }
}

/// Passive health checking, as nginx's `max_fails`/`fail_timeout` and Envoy's outlier
/// detection: an endpoint that fails `maxFailures` times in a row is not chosen for `ejectFor`.
public struct PassiveHealth: Sendable, Equatable {
    public var maxFailures: Int
    public var ejectFor: Duration

    public init(maxFailures: Int = 3, ejectFor: Duration = .seconds(10)) {
        self.maxFailures = maxFailures
        self.ejectFor = ejectFor
    }
}

/// `auth:` on a route. The keys are read from `keys_file` at load (one per line, `#` comments
/// and blank lines skipped); they never appear in `description`, `dump`, logs or errors.
public struct AuthConfig: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    public enum Scheme: Sendable, Equatable {
        /// The key is the whole value of this header (lower-cased name).
        case apiKey(header: String)
        /// `Authorization: Bearer KEY`.
        case bearer
    }

    public var scheme: Scheme
    /// Absolute: a relative `keys_file` is resolved against the config file's directory.
    public var keysFile: String
    public var keys: Set<String>

    public init(scheme: Scheme, keysFile: String, keys: Set<String>) {
        self.scheme = scheme
        self.keysFile = keysFile
        self.keys = keys
    }

    public var description: String {
        "AuthConfig(\(self.scheme), keys_file: \(self.keysFile), \(self.keys.count) keys)"
    }

    /// What `dump` and debuggers show: the count of keys, not the keys.
    public var customMirror: Mirror {
        Mirror(self, children: ["scheme": self.scheme, "keysFile": self.keysFile, "keyCount": self.keys.count])
    }
}

public struct RateLimitConfig: Sendable, Equatable {
    public enum Key: String, Sendable, Equatable {
        /// Per API key (or bearer token); the route must have `auth`.
        case apiKey = "api_key"
        case clientIP = "client_ip"
    }

    public var per: Key
    /// Requests per second (`100/s`, `6000/m` = 100/s, `1/h`).
    public var rate: Double
    /// Requests allowed at once above the rate; at least 1.
    public var burst: Int

    public init(per: Key, rate: Double, burst: Int) {
        self.per = per
        self.rate = rate
        self.burst = burst
    }
}

public struct LimitsConfig: Sendable, Equatable {
    /// Request line plus headers. Past it: 431.
    public var maxHeaderBytes: Int
    /// Request body. Past it: 413. 0 means no limit.
    public var maxBodyBytes: Int64
    /// From a connection's first byte (or the end of its previous response) to the end of
    /// the request head. Past it: 408, then close.
    public var headerTimeout: Duration
    /// A keep-alive connection with no request for this long is closed.
    public var idleTimeout: Duration
    /// Between two reads of a request body (nginx's `client_body_timeout`). Past it: 408 if
    /// no response has started, and the connection is closed.
    public var bodyTimeout: Duration
    /// A WebSocket (or other upgraded) tunnel with no byte in either direction for this long
    /// is closed on both sides.
    public var tunnelIdleTimeout: Duration

    public init(
        maxHeaderBytes: Int = 32 * 1024,
        maxBodyBytes: Int64 = 10 * 1024 * 1024,
        headerTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(60),
        bodyTimeout: Duration = LimitsConfig.defaultBodyTimeout,
        tunnelIdleTimeout: Duration = LimitsConfig.defaultTunnelIdleTimeout
    ) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.bodyTimeout = bodyTimeout
        self.tunnelIdleTimeout = tunnelIdleTimeout
    }

    /// nginx's `client_body_timeout` default, 60 s. It bounds the wait between two reads, not
    /// the whole upload, so a large body on a slow link is not cut; a client silent for a
    /// minute in the middle of its body is stalled or a slow-POST attack.
    public static let defaultBodyTimeout: Duration = .seconds(60)
    /// One hour, HAProxy's documented `timeout tunnel 1h` for WebSockets, and Envoy's
    /// connection `idle_timeout`. nginx's 60 s (`proxy_read_timeout`, which applies to its
    /// tunnels) is the most common complaint about proxied WebSockets: an application that
    /// pings less than once a minute is cut. An hour still frees, within the hour, what a
    /// vanished peer holds (two descriptors and a few KiB).
    public static let defaultTunnelIdleTimeout: Duration = .seconds(3600)
}

public struct AccessLogConfig: Sendable, Equatable {
    public enum Format: String, Sendable, Equatable {
        case json
        /// Apache/nginx combined, with the request id and duration appended.
        case combined
    }

    /// `stdout`, or a file path (opened with O_APPEND by each worker of a generation).
    public var path: String
    public var format: Format

    public init(path: String = "stdout", format: Format = .json) {
        self.path = path
        self.format = format
    }
}

/// `admin: { listener: NAME }`: `/healthz`, `/readyz` and `/metrics` on that listener; no
/// route applies there.
public struct AdminConfig: Sendable, Equatable {
    public var listener: String

    public init(listener: String) {
        self.listener = listener
    }
}

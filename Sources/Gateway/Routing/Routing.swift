import GatewayConfig
import GatewayHTTP

/// One route, compiled: match keys as bytes, so matching a request allocates nothing.
struct CompiledRoute: Sendable {
    var pathPrefix: [UInt8]?
    var exactPath: [UInt8]?
    var host: CompiledHostMatch?
    /// Upper-case method names, as bytes.
    var methods: [[UInt8]]?
    var handling: RouteHandling
}

/// What a matched route does with a request, checked and precomputed at start.
final class RouteHandling: Sendable {
    enum Action: Sendable {
        /// `direct_response` or `redirect`: the same bytes every time.
        case respond(PreparedResponse)
        case proxy(ProxyTarget)
        /// On the admin listener.
        case admin(AdminEndpoint)
        /// No route matched.
        case notFound
    }

    let name: String
    let action: Action
    let auth: CompiledAuth?
    let rateLimit: RateLimitConfig?
    let requestHeaders: CompiledHeaderRules
    let responseHeaders: CompiledHeaderRules

    init(
        name: String, action: Action, auth: CompiledAuth? = nil, rateLimit: RateLimitConfig? = nil,
        requestHeaders: CompiledHeaderRules = .none, responseHeaders: CompiledHeaderRules = .none
    ) {
        self.name = name
        self.action = action
        self.auth = auth
        self.rateLimit = rateLimit
        self.requestHeaders = requestHeaders
        self.responseHeaders = responseHeaders
    }

    /// No route matched: `404 {"error":"no route","request_id":"…"}`.
    static let notFound = RouteHandling(name: "<no route>", action: .notFound)
}

/// What the admin listener serves (`admin: { listener: NAME }`).
enum AdminEndpoint: Sendable {
    /// `/healthz`: the worker is alive (it answered).
    case health
    /// `/readyz`: serving and not draining (a load balancer stops sending here during a drain).
    case ready
    /// `/metrics`: Prometheus text.
    case metrics
    /// `/status`: the status page (HTML, from the master's last snapshot).
    case status
}

extension ListenerRouter {
    /// The admin listener's routes: no configured route applies there.
    static let admin = ListenerRouter(
        listenerName: "<admin>",
        routes: [("/healthz", AdminEndpoint.health), ("/readyz", .ready), ("/metrics", .metrics), ("/status", .status)]
            .map {
                path, endpoint in
                CompiledRoute(
                    pathPrefix: nil, exactPath: Array(path.utf8), host: nil,
                    methods: [Array("GET".utf8), Array("HEAD".utf8)],
                    handling: RouteHandling(
                        name: "admin" + path.replacingOccurrences(of: "/", with: ":"), action: .admin(endpoint)))
            })
}

/// `upstream:` on a route.
struct ProxyTarget: Sendable {
    var upstream: String
    /// Removed from the start of the path (`strip_prefix`).
    var stripPrefix: String?
}

enum CompiledHostMatch: Sendable {
    /// Lower-case host, no port.
    case exact([UInt8])
    /// Lower-case, starting with a dot: `.example.com`.
    case suffix([UInt8])
}

/// The routes that apply to one listener, in config order: the first match wins.
final class ListenerRouter: Sendable {
    let listenerName: String
    let routes: [CompiledRoute]
    /// Whether any route looks at the Host header; if none does, it is never read.
    let needsHost: Bool
    /// `paths.case_sensitive`; when false, the compiled paths are lower-case and request paths
    /// are compared lower-cased.
    let caseSensitive: Bool

    init(listenerName: String, routes: [CompiledRoute], caseSensitive: Bool = true) {
        self.listenerName = listenerName
        self.caseSensitive = caseSensitive
        self.routes =
            caseSensitive
            ? routes
            : routes.map { route in
                var route = route
                route.pathPrefix = route.pathPrefix.map { $0.map(asciiLower) }
                route.exactPath = route.exactPath.map { $0.map(asciiLower) }
                return route
            }
        self.needsHost = routes.contains { $0.host != nil }
    }

    /// `path`: the request's canonical path (`RequestTarget`), query excluded. `host`: the
    /// authority of an absolute-form target, else the Host header; read only if `needsHost`.
    func route(
        method: Method, methodBytes: some Collection<UInt8>, path: some Collection<UInt8>, host: String?
    ) -> RouteHandling {
        for route in self.routes {
            if let methods = route.methods, !methods.contains(where: { $0.elementsEqual(methodBytes) }) {
                continue
            }
            if let exact = route.exactPath, !self.pathEquals(path, exact) {
                continue
            }
            if let prefix = route.pathPrefix, !self.pathStarts(path, with: prefix) {
                continue
            }
            if let hostMatch = route.host {
                guard let host, hostMatches(hostMatch, host) else {
                    continue
                }
            }
            return route.handling
        }
        return RouteHandling.notFound
    }

    private func pathEquals(_ path: some Collection<UInt8>, _ expected: [UInt8]) -> Bool {
        self.caseSensitive ? path.elementsEqual(expected) : path.lazy.map(asciiLower).elementsEqual(expected)
    }

    private func pathStarts(_ path: some Collection<UInt8>, with prefix: [UInt8]) -> Bool {
        self.caseSensitive ? path.starts(with: prefix) : path.lazy.map(asciiLower).starts(with: prefix)
    }
}

/// The host part of a Host header value: port stripped (`a.com:8080` → `a.com`,
/// `[::1]:80` → `[::1]`), one trailing dot dropped (`a.com.` → `a.com`).
func hostWithoutPort(_ value: Substring.UTF8View) -> Substring.UTF8View {
    var host = value
    if host.first == UInt8(ascii: "[") {
        if let close = host.firstIndex(of: UInt8(ascii: "]")) {
            host = host[...close]
        }
    } else if let colon = host.lastIndex(of: UInt8(ascii: ":")) {
        host = host[..<colon]
    }
    if host.last == UInt8(ascii: "."), host.count > 1 {
        host = host.dropLast()
    }
    return host
}

@inline(__always)
func asciiLower(_ byte: UInt8) -> UInt8 {
    (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) ? byte | 0x20 : byte
}

func hostMatches(_ match: CompiledHostMatch, _ hostHeader: String) -> Bool {
    let host = hostWithoutPort(Substring(hostHeader).utf8)
    switch match {
    case .exact(let expected):
        return host.count == expected.count && zip(host, expected).allSatisfy { asciiLower($0) == $1 }
    case .suffix(let suffix):
        // `.example.com` matches `a.example.com`, never `example.com` nor `.example.com`.
        guard host.count > suffix.count else { return false }
        return zip(host.suffix(suffix.count), suffix).allSatisfy { asciiLower($0) == $1 }
    }
}

/// Every listener's router, built once from the configuration.
struct RoutingTable: Sendable {
    private var routers: [String: ListenerRouter]
    private var routesForUnknownListener: [CompiledRoute]
    private var caseSensitive: Bool

    init(configuration: GatewayConfiguration) throws(GatewayServerError) {
        var compiled: [(listener: String?, route: CompiledRoute)] = []
        for route in configuration.routes {
            compiled.append((route.listener, try RoutingTable.compile(route, configuration: configuration)))
        }
        var routers: [String: ListenerRouter] = [:]
        for listener in configuration.listeners {
            let routes = compiled.filter { $0.listener == nil || $0.listener == listener.name }.map(
                \.route)
            routers[listener.name] = ListenerRouter(
                listenerName: listener.name, routes: routes, caseSensitive: configuration.paths.caseSensitive)
        }
        self.routers = routers
        self.routesForUnknownListener = compiled.filter { $0.listener == nil }.map(\.route)
        self.caseSensitive = configuration.paths.caseSensitive
    }

    /// A listener missing from the configuration (should not happen: the master hands over
    /// exactly the configured listeners) gets the routes that apply to every listener.
    func router(for listenerName: String) -> ListenerRouter {
        self.routers[listenerName]
            ?? ListenerRouter(
                listenerName: listenerName, routes: self.routesForUnknownListener, caseSensitive: self.caseSensitive)
    }

    func hasListener(_ name: String) -> Bool {
        self.routers[name] != nil
    }

    static func compile(_ route: RouteConfig, configuration: GatewayConfiguration) throws(GatewayServerError)
        -> CompiledRoute
    {
        let responseHeaders = try CompiledHeaderRules(route.responseHeaders, route: route.name)
        let action: RouteHandling.Action
        switch route.action {
        case .directResponse(let direct):
            guard (100...999).contains(direct.status) else {
                throw .invalidRoute(
                    route: route.name, reason: "status \(direct.status) is not a 3-digit HTTP status")
            }
            var fields = direct.headers
            fields.removeAll { field in responseHeaders.remove.contains(field.name.lowercased()) }
            fields.append(contentsOf: responseHeaders.set.map { HeaderField(name: $0.0, value: $0.1) })
            let headers = try Self.checkedHeaders(fields, route: route.name)
            action = .respond(
                PreparedResponse(routeName: route.name, status: direct.status, headers: headers, body: direct.body))
        case .redirect(let redirect):
            guard RoutingTable.isFieldValue(redirect.location) else {
                throw .invalidRoute(route: route.name, reason: "invalid redirect location (control characters)")
            }
            var fields = [HeaderField(name: "location", value: redirect.location)]
            fields.append(contentsOf: responseHeaders.set.map { HeaderField(name: $0.0, value: $0.1) })
            let headers = try Self.checkedHeaders(fields, route: route.name)
            action = .respond(
                PreparedResponse(routeName: route.name, status: redirect.status, headers: headers, body: ""))
        case .upstream(let proxy):
            guard configuration.upstream(named: proxy.upstream) != nil else {
                throw .invalidRoute(route: route.name, reason: "unknown upstream \"\(proxy.upstream)\"")
            }
            action = .proxy(ProxyTarget(upstream: proxy.upstream, stripPrefix: proxy.stripPrefix))
        }
        let handling = RouteHandling(
            name: route.name,
            action: action,
            auth: route.auth.map(CompiledAuth.init),
            rateLimit: route.rateLimit,
            requestHeaders: try CompiledHeaderRules(route.requestHeaders, route: route.name),
            responseHeaders: responseHeaders
        )
        let host: CompiledHostMatch?
        switch route.match.host {
        case .none: host = nil
        case .exact(let name): host = .exact(Array(name.lowercased().utf8))
        case .suffix(let suffix): host = .suffix(Array(suffix.lowercased().utf8))
        }
        return CompiledRoute(
            pathPrefix: route.match.pathPrefix.map { Array($0.utf8) },
            exactPath: route.match.path.map { Array($0.utf8) },
            host: host,
            methods: route.match.methods.map { $0.map { Array($0.uppercased().utf8) } },
            handling: handling
        )
    }

    private static func checkedHeaders(_ fields: [HeaderField], route: String) throws(GatewayServerError)
        -> [(String, String)]
    {
        var headers: [(String, String)] = []
        for field in fields {
            guard HTTPToken.isValid(field.name) else {
                throw .invalidRoute(route: route, reason: "invalid header name \"\(field.name)\"")
            }
            guard isFieldValue(field.value) else {
                throw .invalidRoute(
                    route: route,
                    reason: "invalid value for header \"\(field.name)\" (control characters)")
            }
            switch field.name.lowercased() {
            case "content-length", "transfer-encoding", "connection", "keep-alive":
                // Framing and connection management belong to the server: a wrong
                // content-length would desynchronise keep-alive clients.
                continue
            default:
                headers.append((field.name, field.value))
            }
        }
        return headers
    }

    /// RFC 9110 field-value: no CR, LF, NUL or other control characters but HTAB.
    /// Nothing re-checks them when they are written (that would cost on every response, for
    /// constant headers on every response), so this check is the one that counts.
    static func isFieldValue(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }
}

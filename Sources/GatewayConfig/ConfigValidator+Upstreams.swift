import GatewayCore
import GatewayHTTP
import Yams

extension ConfigValidator {
    static let upstreamKeys = [
        "endpoints", "balance", "connect_timeout", "response_timeout", "read_timeout", "keepalive", "health",
        "retries", "host", "tls",
    ]
    static let keepaliveKeys = ["max_idle_per_endpoint", "idle_timeout"]
    static let healthKeys = ["max_failures", "eject_for"]
    /// Past this an idle pool is a file-descriptor leak, not a cache (nginx's usual is 32).
    static let maximumIdlePerEndpoint = 10_000
    /// More attempts than this multiply a failing upstream's load instead of hiding a blip.
    static let maximumRetries = 10

    /// `upstreams:` is a mapping of name to upstream, in file order. Every name declared,
    /// valid or not, goes into `upstreamNames`, so a route naming an upstream that has some
    /// other error is not reported a second time.
    mutating func upstreams(_ root: MappingFields) -> [UpstreamConfig] {
        guard let node = root.optionalValue("upstreams"),
            let entries = fields(of: node, path: "upstreams", allowed: nil)
        else { return [] }
        var upstreams: [UpstreamConfig] = []
        for entry in entries.entries {
            upstreamNames.insert(entry.name)
            var nameOK = true
            if !ConfigValidator.isValidName(entry.name) {
                error(invalidName(entry.name, path: "upstreams"), at: entry.keyPosition)
                nameOK = false
            }
            let path = entries.path(of: entry.name)
            guard let fields = fields(of: entry.value, path: path, allowed: ConfigValidator.upstreamKeys) else {
                continue
            }
            let upstream = self.upstream(fields, name: entry.name)
            if nameOK, let upstream {
                upstreams.append(upstream)
            }
        }
        return upstreams
    }

    private mutating func upstream(_ fields: MappingFields, name: String) -> UpstreamConfig? {
        var endpoints: [UpstreamEndpoint]?
        if let node = required(fields, "endpoints") {
            endpoints = self.endpoints(node, path: fields.path(of: "endpoints"))
        }
        var balance: BalancePolicy? = .roundRobin
        if let node = fields.optionalValue("balance") {
            balance = choice(node, path: fields.path(of: "balance"), BalancePolicy.allCases.map { ($0.rawValue, $0) })
        }
        let connectTimeout = timeout(fields, "connect_timeout", default: UpstreamConfig.defaultConnectTimeout)
        let responseTimeout = timeout(fields, "response_timeout", default: UpstreamConfig.defaultResponseTimeout)
        let readTimeout = timeout(fields, "read_timeout", default: UpstreamConfig.defaultReadTimeout)

        var keepalive: UpstreamKeepalive? = UpstreamKeepalive()
        if let node = fields.optionalValue("keepalive") {
            keepalive = self.keepalive(node, path: fields.path(of: "keepalive"))
        }
        var health: PassiveHealth? = PassiveHealth()
        if let node = fields.optionalValue("health") {
            health = self.health(node, path: fields.path(of: "health"))
        }
        var retries: Int? = 1
        if let node = fields.optionalValue("retries") {
            retries = integer(node, path: fields.path(of: "retries"), in: 0...ConfigValidator.maximumRetries)
        }
        var host: String?
        var hostOK = true
        if let node = fields.optionalValue("host") {
            host = hostHeader(node, path: fields.path(of: "host"))
            hostOK = host != nil
        }
        var tls: UpstreamTLSConfig?
        var tlsOK = true
        if let node = fields.optionalValue("tls") {
            tls = upstreamTLS(node, path: fields.path(of: "tls"))
            tlsOK = tls != nil
        }
        guard let endpoints, let balance, let connectTimeout, let responseTimeout, let readTimeout, let keepalive,
            let health, let retries, hostOK, tlsOK
        else { return nil }
        return UpstreamConfig(
            name: name, endpoints: endpoints, balance: balance, connectTimeout: connectTimeout,
            responseTimeout: responseTimeout, readTimeout: readTimeout, keepalive: keepalive, health: health,
            retries: retries, host: host, tls: tls)
    }

    private mutating func keepalive(_ node: Node, path: String) -> UpstreamKeepalive? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.keepaliveKeys) else { return nil }
        let defaults = UpstreamKeepalive()
        var maxIdle: Int? = defaults.maxIdlePerEndpoint
        if let node = fields.optionalValue("max_idle_per_endpoint") {
            maxIdle = integer(
                node, path: fields.path(of: "max_idle_per_endpoint"), in: 0...ConfigValidator.maximumIdlePerEndpoint)
        }
        let idleTimeout = timeout(fields, "idle_timeout", default: defaults.idleTimeout)
        guard let maxIdle, let idleTimeout else { return nil }
        return UpstreamKeepalive(maxIdlePerEndpoint: maxIdle, idleTimeout: idleTimeout)
    }

    private mutating func health(_ node: Node, path: String) -> PassiveHealth? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.healthKeys) else { return nil }
        let defaults = PassiveHealth()
        var maxFailures: Int? = defaults.maxFailures
        if let node = fields.optionalValue("max_failures") {
            maxFailures = integer(node, path: fields.path(of: "max_failures"), in: 1...Int.max)
        }
        let ejectFor = timeout(fields, "eject_for", default: defaults.ejectFor)
        guard let maxFailures, let ejectFor else { return nil }
        return PassiveHealth(maxFailures: maxFailures, ejectFor: ejectFor)
    }

    /// `host: api.internal:8080`: a Host header value (RFC 9110 §7.2: an authority, no userinfo).
    private mutating func hostHeader(_ node: Node, path: String) -> String? {
        guard var text = string(node, path: path) else { return nil }
        let valid = text.withUTF8 { Authority.isValid($0) }
        guard valid else {
            error("\(path): invalid host \(quoted(text)): expected HOST or HOST:PORT", at: node.position)
            return nil
        }
        return text
    }

    // MARK: - Endpoints

    private mutating func endpoints(_ node: Node, path: String) -> [UpstreamEndpoint]? {
        guard let items = list(node, path: path) else { return nil }
        if items.isEmpty {
            error("\(path): at least one endpoint is required", at: node.position)
            return nil
        }
        var endpoints: [UpstreamEndpoint] = []
        var firstByAddress: [ListenerAddress: Int] = [:]
        var ok = true
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let endpoint = self.endpoint(item, path: itemPath) else {
                ok = false
                continue
            }
            if let first = firstByAddress[endpoint.address] {
                let what =
                    endpoint.text == endpoint.address.description
                    ? "\(endpoint.address)" : "\(quoted(endpoint.text)) (\(endpoint.address))"
                error("\(itemPath): \(what) is already listed as endpoints[\(first)]", at: item.position)
                ok = false
                continue
            }
            firstByAddress[endpoint.address] = index
            endpoints.append(endpoint)
        }
        return ok ? endpoints : nil
    }

    /// `IPV4:PORT`, `[IPV6]:PORT` or `HOST:PORT`, the host name resolved now, once.
    private mutating func endpoint(_ node: Node, path: String) -> UpstreamEndpoint? {
        guard let text = string(node, path: path) else { return nil }
        func invalid(_ why: String) -> UpstreamEndpoint? {
            error("\(path): invalid endpoint \(quoted(text)): \(why)", at: node.position)
            return nil
        }
        let host: Substring
        let portText: Substring
        let bracketed = text.hasPrefix("[")
        if bracketed {
            guard let close = text.firstIndex(of: "]"), text[close...].hasPrefix("]:") else {
                return invalid("expected [IPV6]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                return invalid("expected HOST:PORT")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                return invalid("IPv6 addresses need brackets: [::1]:9001")
            }
        }
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let port = Int(portText), (1...65535).contains(port)
        else {
            return invalid("the port must be a number from 1 to 65535")
        }
        if let literal = try? ListenerAddress(parsing: text) {
            return UpstreamEndpoint(text: text, address: literal)
        }
        if bracketed {
            return invalid("\(quoted(String(host))) is not an IPv6 address")
        }
        if let why = ConfigValidator.hostNameProblem(host) {
            return invalid(why)
        }
        switch environment.resolve(String(host)) {
        case .success(let address):
            return UpstreamEndpoint(
                text: text, address: ListenerAddress(family: address.family, host: address.host, port: UInt16(port)))
        case .failure(let failure):
            error("\(path): cannot resolve \(quoted(String(host))): \(failure.reason)", at: node.position)
            return nil
        }
    }

    /// Why `host` cannot be a DNS name, or nil. A last label of digits only is refused, so that
    /// a mistyped address (`127.0.0.256`, or `127.1`, which getaddrinfo would read as
    /// 127.0.0.1) is an error instead of a DNS query.
    static func hostNameProblem(_ host: Substring) -> String? {
        if host.isEmpty { return "the host is missing" }
        if host.utf8.count > 253 { return "a host name has at most 253 characters" }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            if label.isEmpty {
                return "empty label in \(quoted(String(host))) (two dots in a row, or a dot at the start or end)"
            }
            if label.utf8.count > 63 {
                return "a label of a host name has at most 63 characters"
            }
            if !label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
                return "\(quoted(String(host))) is neither an IP address nor a host name "
                    + "(letters, digits, '-' and '.'; internationalized names in their xn-- form)"
            }
        }
        if let last = labels.last, last.allSatisfy({ $0.isNumber }) {
            return "\(quoted(String(host))) is not a valid IP address"
        }
        return nil
    }
}

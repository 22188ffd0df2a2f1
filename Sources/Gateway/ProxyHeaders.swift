import GatewayConfig
import NIOHTTP1

/// Header rewriting between a client and an upstream (RFC 9110 §7.6).
enum ProxyHeaders {
    /// Hop-by-hop fields (RFC 9110 §7.6.1, plus the non-standard `keep-alive` and
    /// `proxy-connection` that clients still send): they describe one connection and are never
    /// forwarded. Fields named in `Connection` are hop-by-hop too.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    ]

    /// Removes every hop-by-hop field, including the ones `Connection` names. Returns whether
    /// the message asked for a protocol upgrade (`Connection: upgrade` with an `Upgrade` field),
    /// and the `Upgrade` value then, which the caller forwards on purpose.
    @discardableResult
    static func removeHopByHop(_ headers: inout HTTPHeaders) -> String? {
        var named: [String] = []
        var upgradeRequested = false
        for value in headers[canonicalForm: "connection"] {
            let token = value.lowercased()
            if token == "upgrade" {
                upgradeRequested = true
            } else if token != "close" && token != "keep-alive" {
                named.append(token)
            }
        }
        let upgrade = upgradeRequested ? headers.first(name: "upgrade") : nil
        // One pass: `HTTPHeaders.remove` per name would scan the list each time.
        if headers.contains(where: { isHopByHop($0.name, named) }) {
            var kept = HTTPHeaders()
            kept.reserveCapacity(headers.count)
            for (name, value) in headers where !isHopByHop(name, named) {
                kept.add(name: name, value: value)
            }
            headers = kept
        }
        return upgrade
    }

    private static func isHopByHop(_ name: String, _ named: [String]) -> Bool {
        let count = name.utf8.count
        // Fast path: no hop-by-hop name is shorter than 2 or longer than 17 bytes.
        guard count >= 2, count <= 17 else { return false }
        let lower = name.lowercased()
        return hopByHop.contains(lower) || named.contains(lower)
    }

    /// Applies a route's rules: removals first, then `set` (replace or add).
    static func apply(_ rules: CompiledHeaderRules, to headers: inout HTTPHeaders) {
        for name in rules.remove {
            headers.remove(name: name)
        }
        for (name, value) in rules.set {
            headers.replaceOrAdd(name: name, value: value)
        }
    }
}

/// `HeaderRules`, checked once at start.
struct CompiledHeaderRules: Sendable {
    var set: [(String, String)]
    var remove: [String]

    static let none = CompiledHeaderRules(set: [], remove: [])

    var isEmpty: Bool { self.set.isEmpty && self.remove.isEmpty }

    init(set: [(String, String)], remove: [String]) {
        self.set = set
        self.remove = remove
    }

    init(_ rules: HeaderRules, route: String) throws(GatewayServerError) {
        var set: [(String, String)] = []
        for field in rules.set {
            guard HTTPToken.isValid(field.name) else {
                throw .invalidRoute(route: route, reason: "invalid header name \"\(field.name)\"")
            }
            guard RoutingTable.isFieldValue(field.value) else {
                throw .invalidRoute(
                    route: route, reason: "invalid value for header \"\(field.name)\" (control characters)")
            }
            set.append((field.name, field.value))
        }
        for name in rules.remove {
            guard HTTPToken.isValid(name) else {
                throw .invalidRoute(route: route, reason: "invalid header name \"\(name)\"")
            }
        }
        self.set = set
        self.remove = rules.remove
    }
}

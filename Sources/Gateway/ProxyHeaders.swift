import GatewayConfig
import NIOHTTP1

/// Header rewriting between a client and an upstream (RFC 9110 §7.6).
enum ProxyHeaders {
    /// Hop-by-hop fields (RFC 9110 §7.6.1, plus the non-standard `keep-alive` and
    /// `proxy-connection` that clients still send): they describe one connection and are never
    /// forwarded. Fields named in `Connection` are hop-by-hop too. `Trailer` is not one (RFC
    /// 9110 §6.6.2): it announces the trailer fields, which are forwarded.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
    ]

    /// `Connection` may not remove these: framing and the target are the proxy's to decide
    /// (`Connection: content-length` would otherwise strip the length of a forwarded body).
    static let neverNamed: Set<String> = ["content-length", "host", "transfer-encoding"]

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
            } else if token != "close" && token != "keep-alive" && !Self.neverNamed.contains(token) {
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

    private static let hopByHopBytes: [[UInt8]] = hopByHop.map { Array($0.utf8) }

    /// Without allocating: this runs for every header of every proxied message.
    private static func isHopByHop(_ name: String, _ named: [String]) -> Bool {
        let utf8 = name.utf8
        let count = utf8.count
        // No hop-by-hop name is shorter than 2 or longer than 17 bytes.
        if count >= 2, count <= 17 {
            for candidate in hopByHopBytes where candidate.count == count {
                if equalsIgnoringASCIICase(utf8, candidate) { return true }
            }
        }
        for candidate in named where candidate.utf8.count == count {
            if equalsIgnoringASCIICase(utf8, candidate.utf8) { return true }
        }
        return false
    }

    /// `lowercase` must be lower-case already.
    @inline(__always)
    private static func equalsIgnoringASCIICase(_ name: String.UTF8View, _ lowercase: some Sequence<UInt8>) -> Bool {
        zip(name, lowercase).allSatisfy { a, b in
            (a >= UInt8(ascii: "A") && a <= UInt8(ascii: "Z") ? a | 0x20 : a) == b
        }
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

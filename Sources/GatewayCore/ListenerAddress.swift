#if canImport(Glibc)
    import Glibc
#endif

/// A listening address as written in the config: `127.0.0.1:8080`, `0.0.0.0:80`, `[::1]:8080`, `[::]:443`.
/// IP literals only: a host name would make binding depend on DNS at reload time.
public struct ListenerAddress: Hashable, Sendable, CustomStringConvertible {
    public enum Family: Sendable, Hashable { case ipv4, ipv6 }

    public var family: Family
    /// The IP literal without brackets.
    public var host: String
    public var port: UInt16

    public init(family: Family, host: String, port: UInt16) {
        self.family = family
        self.host = host
        self.port = port
    }

    public var description: String {
        switch family {
        case .ipv4: return "\(host):\(port)"
        case .ipv6: return "[\(host)]:\(port)"
        }
    }

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var input: String
        public var reason: String
        public var description: String { "invalid address \"\(input)\": \(reason)" }
    }

    /// Parses `host:port` or `[v6]:port`. Port 0 is accepted: the kernel picks one (tests use it).
    public init(parsing text: String) throws(ParseError) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ParseError(input: text, reason: "missing ']' after IPv6 address")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw ParseError(input: text, reason: "expected ':PORT' after ']'")
            }
            portPart = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ParseError(input: text, reason: "expected HOST:PORT")
            }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            if hostPart.contains(":") {
                throw ParseError(input: text, reason: "IPv6 addresses need brackets: [::1]:8080")
            }
        }
        guard !portPart.isEmpty, portPart.allSatisfy(\.isASCII), portPart.allSatisfy(\.isNumber),
            let port = UInt16(portPart)
        else {
            throw ParseError(input: text, reason: "port must be a number from 0 to 65535")
        }
        let host = String(hostPart)
        // Stored in canonical form (inet_ntop), so `[::0]` and `[::]`, or two spellings of one
        // IPv6 address, compare equal and reuse one socket instead of failing to bind twice.
        if let canonical = ListenerAddress.canonical(host, family: AF_INET) {
            self.init(family: .ipv4, host: canonical, port: port)
        } else if let canonical = ListenerAddress.canonical(host, family: AF_INET6) {
            self.init(family: .ipv6, host: canonical, port: port)
        } else {
            throw ParseError(input: text, reason: "\"\(host)\" is not an IP address (host names are not accepted)")
        }
    }

    static func canonical(_ host: String, family: CInt) -> String? {
        var addr = in6_addr()  // large enough for either family
        guard host.withCString({ inet_pton(family, $0, &addr) }) == 1 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(family, &addr, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

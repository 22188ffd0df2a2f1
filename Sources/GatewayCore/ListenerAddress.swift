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
        if ListenerAddress.isIPv4(host) {
            self.init(family: .ipv4, host: host, port: port)
        } else if ListenerAddress.isIPv6(host) {
            self.init(family: .ipv6, host: host, port: port)
        } else {
            throw ParseError(input: text, reason: "\"\(host)\" is not an IP address (host names are not accepted)")
        }
    }

    static func isIPv4(_ host: String) -> Bool {
        var addr = in_addr()
        return host.withCString { inet_pton(AF_INET, $0, &addr) } == 1
    }

    static func isIPv6(_ host: String) -> Bool {
        var addr = in6_addr()
        return host.withCString { inet_pton(AF_INET6, $0, &addr) } == 1
    }
}

import GatewayIO
import NIOHPACK

/// An HTTP/2 request's header list, checked (RFC 9113 §8.2, §8.3) and written as the HTTP/1.1
/// head it stands for. Nil for a malformed request: a stream error, never served.
///
/// What is refused here is what could make the HTTP/1.1 text mean something else than the
/// HTTP/2 fields did (a CR, LF or NUL in a value, a space in `:path`, an uppercase name), or
/// what HTTP/2 forbids outright (connection-specific fields, `te` other than `trailers`,
/// pseudo-fields after regular ones or repeated). The HTTP/1.1 head parser then checks the
/// result like any request, so both protocols share one set of rules after this point.
struct HTTP2RequestHead {
    var method: String
    var target: String
    var authority: String?
    var fields: [(String, String)] = []
    var contentLength: UInt64?
    /// No content-length and a body follows: the body goes on chunked (RFC 9112 §7).
    var chunked = false

    init?(_ headers: HPACKHeaders, endStream: Bool) {
        var method: String?
        var scheme: String?
        var path: String?
        var authority: String?
        var host: String?
        var cookies: [String] = []
        var regularSeen = false
        for (name, value, _) in headers {
            guard Self.validValue(value) else { return nil }
            if name.utf8.first == UInt8(ascii: ":") {
                guard !regularSeen else { return nil }
                switch name {
                case ":method":
                    guard method == nil, Self.isToken(value) else { return nil }
                    method = value
                case ":scheme":
                    guard scheme == nil, !value.isEmpty else { return nil }
                    scheme = value
                case ":path":
                    // RFC 9113 §8.3.1: origin-form, or `*` (OPTIONS). An absolute-form
                    // target would name a host other than `:authority` to the router.
                    guard path == nil, value.utf8.first == UInt8(ascii: "/") || value == "*", Self.isVisible(value)
                    else { return nil }
                    path = value
                case ":authority":
                    // RFC 9113 §8.3.1: no userinfo.
                    guard authority == nil, Self.isVisible(value), !value.utf8.contains(UInt8(ascii: "@")) else {
                        return nil
                    }
                    authority = value
                default:
                    return nil
                }
                continue
            }
            regularSeen = true
            guard Self.isLowercaseToken(name) else { return nil }
            switch name {
            case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
                return nil
            case "te":
                guard value == "trailers" else { return nil }
            case "host":
                guard host == nil, Self.isVisible(value) else { return nil }
                host = value
            case "cookie":
                // RFC 9113 §8.2.3: crumbs are joined again for HTTP/1.1.
                cookies.append(value)
            case "expect":
                // The body is taken as it comes; no interim response is sent.
                continue
            case "content-length":
                guard self.contentLength == nil, !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                    let length = UInt64(value)
                else { return nil }
                self.contentLength = length
                self.fields.append((name, value))
            default:
                self.fields.append((name, value))
            }
        }
        guard let method else { return nil }
        if method == "CONNECT" {
            // Refused later (405) as on HTTP/1.1; RFC 9113 §8.5 gives it no :path or :scheme.
            guard let authority, path == nil, scheme == nil else { return nil }
            self.target = authority
        } else {
            guard let path, scheme != nil, path != "*" || method == "OPTIONS" else { return nil }
            self.target = path
        }
        // RFC 9113 §8.3.1: `:authority` stands for Host; a Host that says otherwise is not the
        // same request on both sides of the translation.
        if let authority, let host, host != authority { return nil }
        self.method = method
        self.authority = authority ?? host
        if !cookies.isEmpty { self.fields.append(("cookie", cookies.joined(separator: "; "))) }
        if endStream {
            if let length = self.contentLength, length != 0 { return nil }
        } else if self.contentLength == nil {
            self.chunked = true
        }
    }

    func write(into output: IOBuffer) {
        output.append(self.method)
        output.append(" ")
        output.append(self.target)
        output.append(" HTTP/1.1\r\n")
        if let authority = self.authority {
            output.append("host: ")
            output.append(authority)
            output.append("\r\n")
        }
        for (name, value) in self.fields {
            output.append(name)
            output.append(": ")
            output.append(value)
            output.append("\r\n")
        }
        if self.chunked { output.append("transfer-encoding: chunked\r\n") }
        // One request per stream: the HTTP/1.1 side ends after its response.
        output.append("connection: close\r\n\r\n")
    }

    /// RFC 9113 §8.2.1: no NUL, CR or LF anywhere, no leading or trailing space or tab.
    private static func validValue(_ value: String) -> Bool {
        let bytes = value.utf8
        if let first = bytes.first, first == 0x20 || first == 0x09 { return false }
        if let last = bytes.last, last == 0x20 || last == 0x09 { return false }
        return !bytes.contains { $0 == 0 || $0 == 0x0a || $0 == 0x0d }
    }

    /// No space or control byte: a request target or an authority that one request line holds.
    private static func isVisible(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 > 0x20 && $0 != 0x7f }
    }

    private static func isToken(_ value: String) -> Bool {
        !value.isEmpty && value.utf8.allSatisfy(Self.isTokenByte)
    }

    /// RFC 9113 §8.2.1: field names in HTTP/2 are lowercase.
    private static func isLowercaseToken(_ value: String) -> Bool {
        !value.isEmpty && value.utf8.allSatisfy { Self.isTokenByte($0) && !($0 >= 0x41 && $0 <= 0x5a) }
    }

    /// RFC 9110 §5.6.2's tchar.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}

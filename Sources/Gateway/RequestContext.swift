import GatewayConfig
import NIOCore
import NIOHTTP1
import Synchronization

/// What the access log and the metrics learn about one request once it is answered.
struct RequestRecord {
    var start: NIODeadline
    var method: HTTPMethod
    var uri: String
    var version: HTTPVersion
    var route: String
    /// The route's identity, for metric caches (comparing it costs less than the name).
    var routeID: ObjectIdentifier? = nil
    var requestID: String
    var client: String
    var userAgent: String?
    var referer: String?
    var status: Int = 0
    /// Response body bytes written to the client.
    var bytesSent: Int = 0
    /// `host:port` of the endpoint of the last attempt, for proxied requests.
    var upstream: String?
    var upstreamName: String?
    /// From the request head going upstream to the response head coming back.
    var upstreamLatency: TimeAmount?
    /// The response was cut (the upstream failed mid-response, or the client left).
    var aborted = false
}

/// Request ids: kept from `X-Request-Id` when the client sent a sane one, else made here.
///
/// A made id is this process's random 64-bit prefix and a counter: unique across workers and
/// restarts without a getrandom(2) per request.
enum RequestID {
    static let header = "x-request-id"
    private static let prefix: String = {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }()
    private static let counter = Atomic<UInt64>(0)

    static func make() -> String {
        let next = counter.add(1, ordering: .relaxed).newValue
        let hex = String(next, radix: 16)
        return prefix + String(repeating: "0", count: max(0, 16 - hex.count)) + hex
    }

    /// Visible ASCII, at most 128 bytes: anything else (a log-injection attempt, a megabyte)
    /// is replaced by a fresh id.
    static func isAcceptable(_ value: String) -> Bool {
        let utf8 = value.utf8
        return !utf8.isEmpty && utf8.count <= 128
            && utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }
    }
}

/// Small JSON error bodies: `{"error": "...", "request_id": "..."}`.
enum ErrorBody {
    static func make(_ message: String, requestID: String) -> String {
        "{\"error\":\"\(jsonEscaped(message))\",\"request_id\":\"\(jsonEscaped(requestID))\"}"
    }
}

/// JSON string escaping (RFC 8259 §7) for text we did not write ourselves.
func jsonEscaped(_ text: String) -> String {
    var needsEscape = false
    for byte in text.utf8 where byte < 0x20 || byte == 0x22 || byte == 0x5C {
        needsEscape = true
        break
    }
    guard needsEscape else { return text }
    var result = ""
    result.reserveCapacity(text.utf8.count + 8)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result
}

/// The request target to send upstream: origin-form (`/path?query`) always, with
/// `strip_prefix` removed from the path. An absolute-form target (`http://host/p`) loses its
/// scheme and authority (the Host header carries them).
func upstreamTarget(_ uri: String, stripPrefix: String?) -> String {
    var target = Substring(uri)
    if let first = target.utf8.first, first != UInt8(ascii: "/"), first != UInt8(ascii: "*"),
        let schemeEnd = target.range(of: "://")
    {
        let afterAuthority = target[schemeEnd.upperBound...].firstIndex { $0 == "/" || $0 == "?" }
        target = afterAuthority.map { target[$0...] } ?? "/"
        if target.first == "?" {
            target = "/" + target
        }
    }
    guard let prefix = stripPrefix, target.hasPrefix(prefix) else {
        return String(target)
    }
    let rest = target.dropFirst(prefix.count)
    if rest.isEmpty || rest.first == "?" {
        return "/" + rest
    }
    if rest.first != "/" {
        // `/v1` stripped from `/v1x`: not a path segment boundary; prefix matching already
        // allowed it, so keep the rest rooted.
        return "/" + rest
    }
    return String(rest)
}

/// The authority of an absolute-form target (`http://host:8080/p` → `host:8080`), userinfo
/// dropped; `nil` for origin-form.
func absoluteFormAuthority(_ uri: String) -> String? {
    guard let first = uri.utf8.first, first != UInt8(ascii: "/"), first != UInt8(ascii: "*"),
        let schemeEnd = uri.range(of: "://")
    else { return nil }
    var authority = uri[schemeEnd.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
    if let at = authority.lastIndex(of: "@") {
        authority = authority[authority.index(after: at)...]
    }
    return authority.isEmpty ? nil : String(authority)
}

/// RFC 3986 §3.2.2-3 for an `http` authority (userinfo removed): a bracketed IP literal, or a
/// non-empty reg-name or IPv4 address, then perhaps `:` and digits.
func isValidAuthority(_ authority: String) -> Bool {
    var rest = Substring(authority)
    if rest.hasPrefix("[") {
        guard let close = rest.firstIndex(of: "]") else { return false }
        let literal = rest.utf8[rest.utf8.index(after: rest.startIndex)..<close]
        guard !literal.isEmpty, literal.allSatisfy({ ipLiteralBytes.contains($0) }) else { return false }
        rest = rest[rest.index(after: close)...]
    } else {
        let host = rest.prefix { $0 != ":" }
        guard !host.isEmpty, host.utf8.allSatisfy({ regNameBytes.contains($0) }) else { return false }
        rest = rest[host.endIndex...]
    }
    guard let first = rest.utf8.first else { return true }
    return first == UInt8(ascii: ":") && rest.utf8.dropFirst().allSatisfy { digitBytes.contains($0) }
}

private let digitBytes = Set("0123456789".utf8)
/// IPv6 and IPv4 addresses inside brackets (not IPvFuture, which no upstream resolves).
private let ipLiteralBytes = Set("0123456789abcdefABCDEF:.".utf8)
/// unreserved, pct-encoded and sub-delims (RFC 3986 §3.2.2).
private let regNameBytes = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=".utf8)

/// The request target with its path normalised as nginx does before matching locations:
/// `%XX` of unreserved characters decoded, `.` and `..` segments resolved. `nil` (400) for a
/// path that climbs above the root or encodes `/`, `\` or NUL, which different servers
/// would read differently. Routing and the upstream see the same normalised path, so
/// `/public/../admin` cannot match a public route and reach an admin one upstream.
/// The query is kept as sent. Costs nothing for the usual path (no `%`, no dot segment).
func normalizedTarget(_ uri: String) -> String? {
    let utf8 = uri.utf8
    guard utf8.first == UInt8(ascii: "/") else {
        // `*` and absolute-form as they are, but an absolute-form authority becomes the
        // upstream's `Host`: one that cannot be a host (`http://[::1/`) is refused, not passed on.
        if let authority = absoluteFormAuthority(uri), !isValidAuthority(authority) {
            return nil
        }
        return uri
    }
    let pathEnd = utf8.firstIndex { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? utf8.endIndex
    let path = utf8[..<pathEnd]
    var needsWork = false
    var previous: UInt8 = 0
    for byte in path {
        if byte == UInt8(ascii: "%") || (byte == UInt8(ascii: ".") && previous == UInt8(ascii: "/")) {
            needsWork = true
            break
        }
        previous = byte
    }
    guard needsWork else { return uri }

    // Decode unreserved %XX; refuse encoded separators and NUL.
    var decoded: [UInt8] = []
    decoded.reserveCapacity(path.count)
    var index = path.startIndex
    while index != path.endIndex {
        let byte = path[index]
        if byte == UInt8(ascii: "%") {
            let first = path.index(after: index)
            guard first != path.endIndex, path.index(after: first) != path.endIndex,
                let high = hexValue(path[first]), let low = hexValue(path[path.index(after: first)])
            else { return nil }
            let value = high << 4 | low
            if value == UInt8(ascii: "/") || value == UInt8(ascii: "\\") || value == 0 { return nil }
            let unreserved =
                (value >= 0x30 && value <= 0x39) || (value >= 0x41 && value <= 0x5A) || (value >= 0x61 && value <= 0x7A)
                || value == UInt8(ascii: "-") || value == UInt8(ascii: ".") || value == UInt8(ascii: "_")
                || value == UInt8(ascii: "~")
            if unreserved {
                decoded.append(value)
            } else {
                decoded.append(contentsOf: path[index...path.index(after: path.index(after: index))])
            }
            index = path.index(index, offsetBy: 3)
        } else {
            decoded.append(byte)
            index = path.index(after: index)
        }
    }

    // RFC 3986 §5.2.4 remove_dot_segments, on segments.
    var segments: [ArraySlice<UInt8>] = []
    let parts = decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst()
    for (position, segment) in parts.enumerated() {
        let last = position == parts.count - 1
        if segment.elementsEqual(".".utf8) {
            if last { segments.append([]) }
        } else if segment.elementsEqual("..".utf8) {
            guard !segments.isEmpty else { return nil }
            segments.removeLast()
            if last { segments.append([]) }
        } else {
            segments.append(segment)
        }
    }
    var result = "/" + segments.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
    result += uri[pathEnd...]
    return result
}

@inline(__always)
private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}

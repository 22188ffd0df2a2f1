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

/// The request target sent upstream: always origin-form, the canonical path (what routing
/// matched) with `strip_prefix` removed, and the query as the client sent it. `caseSensitive`
/// false: the prefix matched ignoring ASCII case, and is removed the same way.
func upstreamTarget(path: String, query: Substring?, stripPrefix: String?, caseSensitive: Bool = true) -> String {
    var rest = Substring(path)
    if let prefix = stripPrefix, prefix.utf8.count <= path.utf8.count {
        let head = path.utf8.prefix(prefix.utf8.count)
        let matches =
            caseSensitive
            ? head.elementsEqual(prefix.utf8)
            : head.lazy.map(asciiLower).elementsEqual(prefix.utf8.lazy.map(asciiLower))
        if matches {
            rest = Substring(path.utf8.dropFirst(prefix.utf8.count))
            if rest.first != "/" {
                // `/v1` stripped from `/v1` is `/`; from `/v1x` (prefix matching allowed it) `/x`.
                rest = "/" + rest
            }
        }
    }
    guard let query else { return String(rest) }
    return rest + "?" + query
}

import GatewayIO

/// An answer gatewayd writes itself: a configured one (`direct_response`, `redirect`),
/// an error (JSON, with the request id), or an admin endpoint's.
enum LocalResponse {
    case prepared(PreparedResponse)
    case error(UInt16, String, extraHeaders: [(String, String)])
    case dynamic(UInt16, contentType: String, body: String)

    /// Written when `header_timeout` passes inside a request head.
    static let requestTimeout: StaticString = """
        HTTP/1.1 408 Request Timeout\r
        server: gatewayd\r
        content-type: application/json\r
        content-length: 43\r
        connection: close\r
        \r
        {"error":"request header timeout exceeded"}
        """

    static let continueHead: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"
}

/// A response computed once at start: the bytes of every variant a request can need (keep-alive
/// for HTTP/1.1 and for HTTP/1.0, close; with and without the body, for HEAD). Immutable and
/// shared by every connection of every loop: one write of constant bytes per request.
final class PreparedResponse: Sendable {
    let status: Int
    let routeName: String
    /// HTTP/1.1 keep-alive (no `connection` field: keep-alive is HTTP/1.1's default).
    let keepAlive: [UInt8]
    /// For an HTTP/1.0 client that asked for keep-alive: it must be told explicitly.
    let keepAlive10: [UInt8]
    /// `connection: close`: the request asked for it, or this worker is draining.
    let close: [UInt8]
    /// The same heads without the body, for HEAD.
    let keepAliveHead: [UInt8]
    let keepAlive10Head: [UInt8]
    let closeHead: [UInt8]
    let bodyCount: Int

    init(routeName: String, status: Int, headers: [(String, String)], body: String) {
        self.status = status
        self.routeName = routeName
        var fields = ""
        var hasServer = false
        for (name, value) in headers {
            if name.utf8.count == 6, name.lowercased() == "server" {
                hasServer = true
            }
            fields += "\(name): \(value)\r\n"
        }
        if !hasServer {
            fields += "server: gatewayd\r\n"
        }
        // 1xx, 204 and 304 carry no body and no content-length.
        let mayHaveBody = HTTPStatus.mayHaveBody(status)
        let bodyBytes = mayHaveBody ? Array(body.utf8) : []
        if mayHaveBody {
            fields += "content-length: \(bodyBytes.count)\r\n"
        }
        let line = "HTTP/1.1 \(status) \(HTTPStatus.reason(status))\r\n"
        let keepAliveHead = Array((line + fields + "\r\n").utf8)
        let keepAlive10Head = Array((line + fields + "connection: keep-alive\r\n\r\n").utf8)
        let closeHead = Array((line + fields + "connection: close\r\n\r\n").utf8)
        self.keepAliveHead = keepAliveHead
        self.keepAlive10Head = keepAlive10Head
        self.closeHead = closeHead
        self.keepAlive = keepAliveHead + bodyBytes
        self.keepAlive10 = keepAlive10Head + bodyBytes
        self.close = closeHead + bodyBytes
        self.bodyCount = bodyBytes.count
    }

    func bytes(close: Bool, http10: Bool, head: Bool) -> [UInt8] {
        if close { return head ? self.closeHead : self.close }
        if http10 { return head ? self.keepAlive10Head : self.keepAlive10 }
        return head ? self.keepAliveHead : self.keepAlive
    }
}

/// Status codes' reason phrases (RFC 9110 §15) and which may carry a body.
enum HTTPStatus {
    static func mayHaveBody(_ status: Int) -> Bool {
        status >= 200 && status != 204 && status != 304
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 415: return "Unsupported Media Type"
        case 417: return "Expectation Failed"
        case 421: return "Misdirected Request"
        case 422: return "Unprocessable Content"
        case 426: return "Upgrade Required"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return ""
        }
    }
}

/// Small JSON error bodies: `{"error":"...","request_id":"..."}`.
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

import GatewayHTTP
import GatewayIO

/// How a proxied response's body goes to the client.
enum ClientBodyFraming: Equatable {
    case none
    /// The upstream's Content-Length, forwarded as it is.
    case length(UInt64)
    /// The upstream's chunks, forwarded as they are (trailers included).
    case chunkedAsIs
    /// The upstream's chunks, unwrapped: an HTTP/1.0 client, which reads to the close.
    case unchunked
    /// Read until the upstream closes; each piece wrapped in a chunk for an HTTP/1.1 client.
    case rechunked
    /// Read until the upstream closes, written as it is, the client's connection closing after.
    case untilClose
}

/// The response head that goes to the client: the upstream's status and field lines copied as
/// they are, but hop-by-hop fields (and those `Connection` names), a Content-Length that a
/// Transfer-Encoding overrides (RFC 9112 §6.3), and what the route's `response_headers`
/// removes or sets; then the rules' fields, `X-Request-Id` if the upstream set none, the
/// framing the client needs, and `Connection`.
struct ResponseHeadWriter {
    let head: MessageHead
    let bytes: UnsafeBufferPointer<UInt8>
    let rules: CompiledHeaderRules

    /// Writes the head; returns how the body goes to the client.
    func write(
        into output: IOBuffer, upstreamBody: BodyFraming, clientIsHTTP10: Bool, close: inout Bool,
        requestID: RequestIDBytes, upgrade: Bool
    ) -> ClientBodyFraming {
        output.append("HTTP/1.1 ")
        output.appendDecimal(UInt64(self.head.status))
        output.append(UInt8(ascii: " "))
        if self.head.reason.isEmpty {
            output.append(HTTPStatus.reason(Int(self.head.status)))
        } else {
            output.append(UnsafeBufferPointer(rebasing: self.bytes[self.head.reason]))
        }
        output.append("\r\n")

        var framing: ClientBodyFraming
        switch upstreamBody {
        case .none:
            framing = .none
        case .length(let length):
            framing = .length(length)
        case .chunked:
            framing = clientIsHTTP10 ? .unchunked : .chunkedAsIs
        case .untilClose:
            framing = clientIsHTTP10 ? .untilClose : .rechunked
        }
        if framing == .unchunked || framing == .untilClose {
            // No chunked coding for HTTP/1.0: the end of the body is the end of the connection.
            close = true
        }

        var hasRequestID = false
        var copier = FieldLineCopier(from: self.bytes, into: output)
        for field in self.head.fields {
            var keep: Bool
            switch field.name {
            case .connection, .keepAlive, .proxyConnection, .te, .transferEncoding, .upgrade:
                keep = false
            case .contentLength:
                // Overridden by a Transfer-Encoding; on a bodyless response it is information
                // (a HEAD's length) and stays.
                keep = !self.head.hasConflictingLength && framing != .rechunked && framing != .untilClose
            case .trailer:
                // Trailer fields travel only in a chunked body; announcing them otherwise is false.
                keep = framing == .chunkedAsIs
            case .xRequestID:
                hasRequestID = true
                keep = true
            default:
                keep = true
            }
            if keep {
                let name = UnsafeBufferPointer(rebasing: self.bytes[field.nameRange])
                for option in self.head.connectionOptions
                where HTTPBytes.equalsIgnoringCase(name, UnsafeBufferPointer(rebasing: self.bytes[option])) {
                    keep = false
                }
                if keep, self.rules.touches(name) {
                    keep = false
                    if field.name == .xRequestID { hasRequestID = false }
                }
            }
            if keep { copier.keep(field) }
        }
        copier.flush()
        for (name, value) in self.rules.set {
            if name.utf8.count == 12, name.lowercased() == "x-request-id" { hasRequestID = true }
            output.append(name)
            output.append(": ")
            output.append(value)
            output.append("\r\n")
        }
        if !hasRequestID {
            output.append("x-request-id: ")
            requestID.withBytes { output.append($0) }
            output.append("\r\n")
        }
        if upgrade {
            output.append("connection: upgrade\r\n")
            if let field = self.head.first(.upgrade) {
                output.append("upgrade: ")
                output.append(UnsafeBufferPointer(rebasing: self.bytes[field.valueRange]))
                output.append("\r\n")
            }
            output.append("\r\n")
            return .none
        }
        if framing == .chunkedAsIs || framing == .rechunked {
            output.append("transfer-encoding: chunked\r\n")
        }
        if close {
            output.append("connection: close\r\n")
        } else if clientIsHTTP10 {
            output.append("connection: keep-alive\r\n")
        }
        output.append("\r\n")
        return framing
    }
}

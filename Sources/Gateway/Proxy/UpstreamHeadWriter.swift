import GatewayHTTP
import GatewayIO

/// The request head that goes upstream, written as the client's field lines copied as they
/// are (runs of bytes, no `String` per field) with the proxy's edits spliced in (RFC 9110 §7.6):
///
/// 1. the request line: the method, the canonical path (after `strip_prefix`) and the query as
///    sent, HTTP/1.1 always (keep-alive and chunked bodies are ours to use);
/// 2. the client's fields, but hop-by-hop ones (and those `Connection` names), `Expect`, the
///    forwarding fields rewritten below, `X-Request-Id`, the framing fields, and whatever the
///    route's `request_headers` removes or sets;
/// 3. `Host` from an absolute-form target's authority (what routing used, RFC 9112 §3.2.2),
///    `X-Forwarded-For`, `-Proto`, `-Host` and `Via`, unless the route's rules remove or set
///    them; then the rules' `set` fields;
/// 4. the framing as the client framed the body (so the upstream finds its end where we did),
///    an upgrade when asked for, and `X-Request-Id`.
///
/// The head ends without its blank line: the exchange adds `Host` per attempt when the request
/// came without one (HTTP/1.0), then the CRLF.
struct UpstreamHeadWriter {
    let head: MessageHead
    let bytes: UnsafeBufferPointer<UInt8>
    let target: RequestTarget.Parsed
    let peer: ConnectionPeer
    let peerTrusted: Bool
    let route: RouteHandling
    let requestID: RequestIDBytes
    let caseSensitive: Bool
    /// The client came over TLS: `X-Forwarded-Proto: https` (from an untrusted peer).
    var secure = false
    /// The request came on an HTTP/2 stream: `Via: 2 gatewayd` (RFC 9110 §7.6.3 names the
    /// protocol the request was received with).
    var http2 = false
    /// The request is traced: the client's `traceparent` and `tracestate` stay behind, each
    /// attempt sends its own span's (`RequestTrace.writeTraceContext`).
    var dropsTraceContext = false

    /// Writes the head into `output`; returns whether it has a `Host` field.
    func write(into output: IOBuffer, stripPrefix: String?) -> Bool {
        let rules = self.route.requestHeaders
        // 1. The request line.
        output.append(UnsafeBufferPointer(rebasing: self.bytes[self.head.methodRange]))
        output.append(UInt8(ascii: " "))
        self.writeTarget(into: output, stripPrefix: stripPrefix)
        output.append(" HTTP/1.1\r\n")

        // 2. The client's fields that stay, copied line by line (consecutive ones in one copy).
        var hasHost = false
        var copier = FieldLineCopier(from: self.bytes, into: output)
        for field in self.head.fields where self.keeps(field, rules) {
            if field.name == .host { hasHost = true }
            copier.keep(field)
        }
        copier.flush()

        // 3. Forwarding fields, unless the route's rules remove or set them.
        let targetBytes = UnsafeBufferPointer(rebasing: self.bytes[self.head.target])
        if let authority = self.target.authority, !rules.touches("host") {
            output.append("host: ")
            output.append(UnsafeBufferPointer(rebasing: targetBytes[authority]))
            output.append("\r\n")
            hasHost = true
        }
        if !rules.touches("x-forwarded-for") {
            // From a trusted proxy the chain is kept and its address added; from anyone else
            // what the client wrote is dropped, so an upstream that reads the leftmost address
            // never reads one the client made up.
            output.append("x-forwarded-for: ")
            if self.peerTrusted {
                for field in self.head.fields where field.name == .xForwardedFor && !field.valueRange.isEmpty {
                    output.append(UnsafeBufferPointer(rebasing: self.bytes[field.valueRange]))
                    output.append(", ")
                }
            }
            output.append(self.peer.text)
            output.append("\r\n")
        }
        if !rules.touches("x-forwarded-proto") {
            output.append("x-forwarded-proto: ")
            if self.peerTrusted, let field = self.head.first(.xForwardedProto) {
                output.append(UnsafeBufferPointer(rebasing: self.bytes[field.valueRange]))
            } else {
                output.append(self.secure ? "https" : "http")
            }
            output.append("\r\n")
        }
        if !rules.touches("x-forwarded-host") {
            if self.peerTrusted, let field = self.head.first(.xForwardedHost) {
                output.append("x-forwarded-host: ")
                output.append(UnsafeBufferPointer(rebasing: self.bytes[field.valueRange]))
                output.append("\r\n")
            } else if let authority = self.target.authority {
                output.append("x-forwarded-host: ")
                output.append(UnsafeBufferPointer(rebasing: targetBytes[authority]))
                output.append("\r\n")
            } else if let host = self.head.host {
                output.append("x-forwarded-host: ")
                output.append(UnsafeBufferPointer(rebasing: self.bytes[host]))
                output.append("\r\n")
            }
        }
        if !rules.touches("via") {
            output.append("via: ")
            for field in self.head.fields where field.name == .via && !field.valueRange.isEmpty {
                output.append(UnsafeBufferPointer(rebasing: self.bytes[field.valueRange]))
                output.append(", ")
            }
            output.append(self.http2 ? "2 gatewayd\r\n" : self.head.isHTTP10 ? "1.0 gatewayd\r\n" : "1.1 gatewayd\r\n")
        }
        for (name, value) in rules.set {
            if name.utf8.count == 4, name.lowercased() == "host" { hasHost = true }
            output.append(name)
            output.append(": ")
            output.append(value)
            output.append("\r\n")
        }

        // 4. Framing, upgrade, request id.
        switch self.head.framing {
        case .chunked:
            output.append("transfer-encoding: chunked\r\n")
        case .length(let length):
            output.append("content-length: ")
            output.appendDecimal(length)
            output.append("\r\n")
        case .none, .untilClose:
            // A `Content-Length: 0` the client sent stays: the upstream reads no body either way.
            if let field = self.head.first(.contentLength) {
                output.append(UnsafeBufferPointer(rebasing: self.bytes[field.lineRange]))
            }
        }
        if self.head.wantsUpgrade, self.head.method != .connect, let upgrade = self.head.first(.upgrade) {
            output.append("connection: upgrade\r\nupgrade: ")
            output.append(UnsafeBufferPointer(rebasing: self.bytes[upgrade.valueRange]))
            output.append("\r\n")
        }
        output.append("x-request-id: ")
        self.requestID.withBytes { output.append($0) }
        output.append("\r\n")
        return hasHost
    }

    /// Origin-form always: the canonical path without `strip_prefix`, then the query as sent.
    private func writeTarget(into output: IOBuffer, stripPrefix: String?) {
        let targetBytes = UnsafeBufferPointer(rebasing: self.bytes[self.head.target])
        let write = { (path: UnsafeBufferPointer<UInt8>) in
            var rest = path
            if let prefix = stripPrefix, self.hasPrefix(path, prefix) {
                rest = UnsafeBufferPointer(rebasing: path[prefix.utf8.count...])
                if rest.first != UInt8(ascii: "/") {
                    // `/v1` stripped from `/v1` is `/`; from `/v1x` (prefix matching allowed it) `/x`.
                    output.append(UInt8(ascii: "/"))
                }
            }
            output.append(rest)
        }
        if let rewritten = self.target.rewrittenPath {
            rewritten.withUnsafeBufferPointer { write($0) }
        } else {
            write(UnsafeBufferPointer(rebasing: targetBytes[self.target.path]))
        }
        if let query = self.target.query {
            output.append(UInt8(ascii: "?"))
            output.append(UnsafeBufferPointer(rebasing: targetBytes[query]))
        }
    }

    private func hasPrefix(_ path: UnsafeBufferPointer<UInt8>, _ prefix: String) -> Bool {
        var prefix = prefix
        return prefix.withUTF8 { expected in
            guard expected.count <= path.count else { return false }
            let head = UnsafeBufferPointer(rebasing: path[0..<expected.count])
            return self.caseSensitive ? head.elementsEqual(expected) : HTTPBytes.equalsIgnoringCase(head, expected)
        }
    }

    /// Whether a client field goes upstream as it is.
    private func keeps(_ field: Field, _ rules: CompiledHeaderRules) -> Bool {
        switch field.name {
        case .connection, .keepAlive, .proxyConnection, .te, .transferEncoding, .upgrade, .expect, .xForwardedFor,
            .xForwardedProto, .xForwardedHost, .via, .xRequestID, .contentLength:
            return false
        case .host:
            if self.target.authority != nil { return false }
        case .forwarded, .xRealIP, .forwardingAlias:
            // Client addresses gatewayd does not rewrite: believed only from a trusted proxy,
            // like X-Forwarded-For's chain; from anyone else an upstream would read a made-up one.
            if !self.peerTrusted { return false }
        case .other where self.dropsTraceContext:
            if Self.isTraceContext(UnsafeBufferPointer(rebasing: self.bytes[field.nameRange])) { return false }
        default:
            break
        }
        let name = UnsafeBufferPointer(rebasing: self.bytes[field.nameRange])
        // Named in Connection: hop-by-hop for this connection (but never the framing or Host).
        for option in self.head.connectionOptions
        where HTTPBytes.equalsIgnoringCase(name, UnsafeBufferPointer(rebasing: self.bytes[option])) {
            if field.name != .host { return false }
        }
        return !rules.touches(name)
    }
}

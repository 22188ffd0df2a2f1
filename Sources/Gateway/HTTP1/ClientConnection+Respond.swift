import GatewayConfig
import GatewayHTTP
import GatewayIO

/// Answers gatewayd writes itself, and the end of every response, local or proxied.
extension ClientConnection {
    /// Whether the response now being written closes the connection.
    func responseCloses(_ request: ClientRequest) -> Bool {
        request.closeAfterResponse || self.draining || self.inputClosed || !request.bodyEnded || request.wantsUpgrade
    }

    /// Writes a local answer to the request in flight and ends the request.
    func writeLocal(_ response: LocalResponse) {
        guard let request = self.request, self.phase == .serving else { return }
        let close = self.responseCloses(request)
        switch response {
        case .prepared(let prepared):
            let bytes = prepared.bytes(close: close, http10: request.isHTTP10, head: request.isHEAD)
            self.output.append(bytes)
            request.status = prepared.status
            request.bytesSent = request.isHEAD ? 0 : prepared.bodyCount
        case .error(let status, let message, let extra):
            let body = ErrorBody.make(message, requestID: request.requestID.string)
            self.writeDynamic(
                request, status: Int(status), contentType: "application/json", body: body, extra: extra, close: close)
        case .dynamic(let status, let contentType, let body):
            self.writeDynamic(
                request, status: Int(status), contentType: contentType, body: body, extra: [], close: close)
        }
        self.responseEnded(close: close)
    }

    private func writeDynamic(
        _ request: ClientRequest, status: Int, contentType: String, body: String, extra: [(String, String)],
        close: Bool
    ) {
        var fields: [(String, String)] = [
            ("server", "gatewayd"), ("content-type", contentType), ("content-length", String(body.utf8.count)),
            (RequestHeaderNames.requestID, request.requestID.string),
        ]
        fields += extra
        request.route.responseHeaders.apply(to: &fields)
        let output = self.output
        output.append("HTTP/1.1 ")
        output.appendDecimal(UInt64(status))
        output.append(" ")
        output.append(HTTPStatus.reason(status))
        output.append("\r\n")
        for (name, value) in fields {
            output.append(name)
            output.append(": ")
            output.append(value)
            output.append("\r\n")
        }
        if close {
            output.append("connection: close\r\n")
        } else if request.isHTTP10 {
            output.append("connection: keep-alive\r\n")
        }
        output.append("\r\n")
        if !request.isHEAD {
            output.append(body)
        }
        request.status = status
        request.bytesSent = request.isHEAD ? 0 : body.utf8.count
    }

    /// A head that could not be parsed (or a connection that ended inside one): 400 (431, 501)
    /// and close. Nothing of a previous request applies to this answer.
    func refuseUnparsable(_ error: HTTPParseError) {
        let request = self.requestStorage
        request.reset()
        self.request = request
        request.start = self.eventLoop.now
        request.route = .notFound
        request.routeName = "<bad request>"
        request.target = "-"
        request.clientAddress = self.peer.text
        request.requestID.generate(prefix: RequestIDs.prefix, counter: RequestIDs.next())
        request.closeAfterResponse = true
        request.answer = .answered
        self.input.clear()
        let message =
            error.status == 431
            ? "request headers larger than \(self.services.limits.maxHeaderBytes) bytes"
            : "malformed request: \(error)"
        self.writeLocal(.error(error.status, message, extraHeaders: []))
    }

    /// The response to the request in flight is whole (written, or handed to the socket):
    /// logged and counted; then the connection closes, or waits for the next request.
    func responseEnded(close: Bool) {
        guard let request = self.request else { return }
        ProxyLog.step(
            "answered",
            [
                "status": "\(request.status)", "route": "\(request.routeName ?? request.route.name)",
                "upstream": "\(request.upstreamEndpoint ?? "-")",
            ])
        self.services.completed(request, now: self.eventLoop.now)
        request.exchange = nil
        self.request = nil
        if close || self.phase != .serving {
            // The client said this was its last request and all of it was read: nothing more
            // can arrive, so no linger (nginx lingers only when unread input may follow,
            // ngx_http_finalize_connection). Saves a wake-up, a read(2) and the wait for the
            // client's FIN per connection on `Connection: close` traffic.
            self.nothingMoreComing =
                !request.keepAlive && request.bodyEnded && !request.bodyAbandoned && self.input.isEmpty
                && !self.readable
            self.closePolitely()
            return
        }
        self.bytesSinceLastResponse = !self.input.isEmpty
        if self.bytesSinceLastResponse {
            self.arm(.header)
        } else {
            // Idle: no buffer memory held until the next request's first byte.
            self.input.park()
            self.upstreamHead.park()
            self.arm(.idle)
            if self.draining { self.closeIfIdleAfterGrace() }
        }
        // Pipelined requests behind it are parsed next, in this same pass.
        self.process()
    }
}

/// Header names gatewayd writes.
enum RequestHeaderNames {
    static let requestID = "x-request-id"
}

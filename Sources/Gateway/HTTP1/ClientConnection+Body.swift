import GatewayConfig
import GatewayHTTP
import GatewayIO

/// The request body, as the bytes that arrive: framed by the client's Content-Length or
/// chunked coding (checked as it goes, so the end of the body, and a request pipelined behind
/// it, are found exactly), counted against `max_body_bytes`, and either forwarded to the
/// exchange as it is (no re-framing) or discarded for a local answer.
extension ClientConnection {
    /// Moves the request in flight on: its body, then its local answer. Returns whether
    /// anything changed.
    func advance(_ request: ClientRequest) -> Bool {
        if !request.bodyEnded {
            if !self.input.isEmpty {
                return self.consumeBody(request)
            }
            if self.readable { return self.readInput() }
            if self.inputClosed {
                self.bodyCutShort()
                return true
            }
            return false
        }
        switch request.answer {
        case .local(let response):
            request.answer = .answered
            self.writeLocal(response)
            return true
        case .proxy, .answered, .none:
            // A proxied request ends when its response does (`ProxyExchange`).
            return false
        }
    }

    private func consumeBody(_ request: ClientRequest) -> Bool {
        let available = self.input.readable
        let forwarding: ProxyExchange?
        if case .proxy = request.answer, let exchange = request.exchange {
            guard exchange.canTakeBody else {
                // The upstream is not taking it (not connected yet, or its socket is full): the
                // wait is ours, not the client's, so the body clock stops.
                if self.wait == .body { self.disarm() }
                return false
            }
            forwarding = exchange
        } else {
            forwarding = nil
        }
        var consumed = 0
        var data = 0
        var ended = false
        switch request.framing {
        case .length:
            consumed = Int(min(UInt64(available.count), request.bodyRemaining))
            data = consumed
            request.bodyRemaining -= UInt64(consumed)
            ended = request.bodyRemaining == 0
        case .chunked:
            switch request.chunked.decode(available, data: { data += $0.count }) {
            case .consumed(let count, let finished):
                consumed = count
                ended = finished
            case .failed(let error):
                self.answerBeforeBodyEnd(error.status, "malformed request: \(error)")
                return true
            }
        case .none, .untilClose:
            ended = true
        }
        request.bodyBytes += Int64(data)
        let limit = self.services.limits.maxBodyBytes
        if limit > 0, request.bodyBytes > limit {
            self.bodyTooLarge()
            return true
        }
        if let forwarding {
            forwarding.sendBody(UnsafeBufferPointer(rebasing: available[0..<consumed]), ended: ended)
        }
        self.input.consume(consumed)
        if ended {
            request.bodyEnded = true
            if self.wait == .body { self.disarm() }
            forwarding?.requestEnded()
        } else if self.wait != .body {
            self.arm(.body)
        }
        return true
    }

    /// The exchange can take body bytes again: the body clock runs again, and the body flows.
    func bodyCanFlow() {
        guard let request = self.request, !request.bodyEnded, self.phase == .serving else { return }
        self.arm(.body)
        self.process()
    }

    /// The client closed its side in the middle of the body: it can never end.
    func bodyCutShort() {
        self.answerBeforeBodyEnd(400, "malformed request: the connection ended inside the request body")
    }

    func bodyTooLarge() {
        self.answerBeforeBodyEnd(
            413, "request body larger than \(self.services.limits.maxBodyBytes) bytes")
    }

    /// `limits.body_timeout` passed between two reads of the request body: 408 if nothing of
    /// the response went out yet, else all that is left is closing the connection.
    func bodyTimedOut() {
        guard let request = self.request, !request.bodyEnded, self.phase == .serving else { return }
        let timeout = DurationText.format(self.services.limits.bodyTimeout)
        self.answerBeforeBodyEnd(408, "request body timeout: no byte of the body for \(timeout)")
        self.flushOutput()
    }

    /// An error decided while the body arrives (413, 408, 400): answered now, not after reading
    /// a body we refuse; the polite close discards what the client still sends. A proxied
    /// request's exchange is cancelled (half a request went upstream: that connection cannot
    /// carry another); if its response had started, closing is all that is left.
    func answerBeforeBodyEnd(_ status: UInt16, _ message: String) {
        guard let request = self.request else { return }
        if let exchange = request.exchange {
            exchange.cancel()
            request.exchange = nil
        }
        if request.responseStarted {
            self.abort()
            return
        }
        request.answer = .answered
        request.bodyAbandoned = !request.bodyEnded
        request.bodyEnded = true
        request.closeAfterResponse = true
        self.writeLocal(.error(status, message, extraHeaders: []))
    }
}

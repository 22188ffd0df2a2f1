import GatewayIO

/// What a `ProxyExchange` tells the client connection it serves.
extension ClientConnection {
    /// The proxied response is whole (its last bytes are written, or pending in the output).
    func proxyResponseEnded(close: Bool) {
        guard let request = self.request, self.phase == .serving else { return }
        request.answer = .answered
        let bodyUnread = !request.bodyEnded
        if bodyUnread {
            // Answered before its body ended (an early upstream answer): the rest of the body
            // is discarded by the close, never parsed as a request.
            request.bodyEnded = true
            request.bodyAbandoned = true
        }
        self.responseEnded(close: close || bodyUnread || !request.keepAlive)
        self.flushOutput()
    }

    /// No byte of a response reached the client: it gets this error instead.
    func proxyFailed(_ failure: ProxyFailure) {
        guard let request = self.request, self.phase == .serving else { return }
        request.exchange = nil
        request.upstreamEndpoint = request.upstreamEndpoint ?? nil
        if request.bodyEnded {
            request.answer = .answered
            self.writeLocal(.error(failure.status, failure.reason, extraHeaders: []))
        } else {
            self.answerBeforeBodyEnd(failure.status, failure.reason)
        }
        // Outside of a read burst: nothing else will flush it.
        self.process()
    }

    /// A 101 went out (its head is in the output): the connection is a byte tunnel to the
    /// upstream until either side closes. What the client sent behind its request goes up
    /// first; what the upstream sent behind its 101 comes down first.
    func startTunnel(with upstream: UpstreamConnection) {
        guard let request = self.request, self.phase == .serving else {
            upstream.close()
            return
        }
        request.answer = .answered
        request.status = 101
        self.services.completed(request, now: self.eventLoop.now)
        request.exchange = nil
        self.request = nil
        self.phase = .tunnel
        self.disarm()
        let tunnel = Tunnel(
            client: self, upstream: upstream, idleTimeout: self.services.limits.tunnelIdleTimeoutNanoseconds)
        self.tunnel = tunnel
        tunnel.start()
    }
}

import GatewayCore
import GatewayHTTP
import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// How a connection ends: lame duck during a drain, the polite close (FIN, then discard until
/// the peer's FIN), a hard close, and the PROXY protocol header that starts some.
extension ClientConnection {
    // MARK: Drain

    func beginDraining() {
        guard !self.draining else { return }
        self.draining = true
        // A request in flight: its response will say `Connection: close` (if its head has not
        // gone out yet; if it has, the connection closes once it is idle, below).
        self.request?.closeAfterResponse = true
        self.closeIfIdleAfterGrace()
    }

    /// Idle (no request in flight, nothing arriving): closed after `idleGrace`, unless a
    /// request starts meanwhile (it is answered with `Connection: close`).
    func closeIfIdleAfterGrace() {
        guard self.draining, self.phase == .serving, self.request == nil, !self.bytesSinceLastResponse else {
            return
        }
        self.arm(.grace)
    }

    // MARK: Closing

    /// Flushes what was written, then FIN and linger (or closes fully if the peer already
    /// closed its side). Idempotent.
    func closePolitely() {
        switch self.phase {
        case .serving, .proxyHeader:
            self.phase = .finishing
            self.disarm()
            self.flushOutput()
        case .handshake:
            // No HTTP yet, nothing to flush: a draining worker's half-open handshake.
            self.closeNow()
        case .finishing, .lingering, .closed, .tunnel:
            return
        }
    }

    /// The last response is in the kernel: shut our side down and read until the peer closes.
    func shutDownOutput() {
        guard self.phase == .finishing else { return }
        if let stream = self.stream {
            // The response is whole; a stream has no FIN to send and nothing to linger for.
            stream.responseFinished()
            self.closeNow()
            return
        }
        let nothingUnread = self.nothingMoreComing && !self.readable && self.input.isEmpty
        if self.inputClosed || nothingUnread {
            // Nothing left unread in the socket: a plain close sends FIN, not RST. On TLS,
            // close_notify first; what OpenSSL's read-ahead holds was already taken from the
            // socket, so it cannot turn the FIN into a reset. Measured on new TLS handshakes with
            // `Connection: close` (docs/benchmarks.md): the linger cost each one a wake-up and
            // two reads that nginx, which closes the same way, does not pay.
            if !self.inputClosed { self.tls?.closeNotify() }
            self.closeNow()
            return
        }
        self.phase = .lingering
        self.shutDownWrite()
        self.arm(.linger)
        // The peer's bytes and FIN may be there already.
        self.readable = true
        self.process()
    }

    /// Closes the socket now; a request in flight is logged as cut (nginx's 499 when the client
    /// left before its response). Idempotent.
    func closeNow() {
        guard self.phase != .closed else { return }
        self.phase = .closed
        self.wait = nil
        if let request = self.request {
            self.request = nil
            if let exchange = request.exchange {
                exchange.cancel()
                request.exchange = nil
            }
            request.aborted = true
            if request.status == 0 { request.status = 499 }
            self.services.completed(request, now: self.eventLoop.now)
        }
        self.tunnel?.close()
        self.tunnel = nil
        if let registration = self.registration {
            self.registration = nil
            self.eventLoop.forget(registration)
        }
        self.input.clear()
        self.output.clear()
        if let stream = self.stream {
            stream.clientClosed()
            return
        }
        closeDescriptor(self.fd)
        self.loop.connectionClosed(self)
    }

    /// A reset, a failed write, a response that cannot be completed: the only honest signal
    /// left is a closed connection.
    func abort() {
        self.closeNow()
    }

    // MARK: PROXY protocol

    /// Reads and parses the PROXY protocol header. Returns whether progress was made.
    func readProxyHeader() -> Bool {
        if self.tls != nil { return self.peekProxyHeader() }
        if !self.input.isEmpty {
            switch ProxyProtocolHeader.parse(self.input.readable) {
            case .complete(let length, let source, _):
                if let source { self.peer.replace(with: source) }
                self.input.consume(length)
                self.phase = self.tls != nil ? .handshake : .serving
                self.arm(.header)
                if !self.input.isEmpty { self.bytesSinceLastResponse = true }
                return true
            case .invalid:
                // The spec: a receiver must not guess, and an HTTP error would tell a scanner
                // what listens here. Closed without an answer.
                self.closeNow()
                return true
            case .incomplete:
                break
            }
        }
        guard self.readable else { return false }
        let before = self.input.readableCount
        let progressed = self.readInput()
        if self.inputClosed, self.input.readableCount == before {
            self.closeNow()
            return true
        }
        return progressed
    }

    /// The PROXY header in front of a TLS handshake (HAProxy's `send-proxy-v2` to a listener
    /// with `tls` and `proxy_protocol`). OpenSSL reads the socket itself, so the bytes behind
    /// the header (the ClientHello) must stay in the socket: the header is peeked (`MSG_PEEK`),
    /// parsed, and then exactly its length is read, as nginx's `ngx_http_ssl_handshake` does.
    /// Each peek starts from the first byte again: a header is at most 4 KiB and arrives in one
    /// segment in practice, so the rare re-parse costs nothing worth a buffer of its own.
    private func peekProxyHeader() -> Bool {
        guard self.readable else { return false }
        self.input.clear()
        let limit = ProxyProtocolHeader.maximumV2Length
        guard self.input.reserve(limit) else {
            self.closeNow()
            return true
        }
        let count = Self.receive(self.fd, self.input.storage, limit, flags: CInt(MSG_PEEK))
        if count == 0 {
            self.closeNow()
            return true
        }
        if count < 0 {
            guard errno == EAGAIN else {
                self.abort()
                return true
            }
            self.readable = false
            return false
        }
        self.input.didWrite(count)
        defer { self.input.clear() }
        switch ProxyProtocolHeader.parse(self.input.readable) {
        case .complete(let length, let source, _):
            // The bytes are in the socket (the peek saw them): one recv takes exactly them.
            guard Self.receive(self.fd, self.input.storage, length, flags: 0) == length else {
                self.abort()
                return true
            }
            if let source { self.peer.replace(with: source) }
            self.phase = .handshake
            self.arm(.header)
            return true
        case .invalid:
            self.closeNow()
            return true
        case .incomplete:
            // Everything the socket holds is not a header yet. The next segment is a new edge;
            // after the peer's FIN none will come.
            guard !self.peerShutDown, count < limit else {
                self.closeNow()
                return true
            }
            self.readable = false
            return false
        }
    }

    /// recv(2), EINTR retried: the count, 0 at the end of the stream, or -1 with errno.
    private static func receive(_ fd: CInt, _ buffer: UnsafeMutablePointer<UInt8>, _ length: Int, flags: CInt) -> Int {
        while true {
            let count = recv(fd, buffer, length, flags)
            if count >= 0 || errno != EINTR { return count }
        }
    }
}

import GatewayIO

/// Where HTTP/1.1 meets HTTP/2: a connection that turns out to speak HTTP/2 hands itself to an
/// `HTTP2Connection`, and each HTTP/2 stream is served by a `ClientConnection` of its own.
extension ClientConnection {
    enum PrefaceMatch {
        case found, partial, absent
    }

    /// Whether the input starts with the HTTP/2 preface (an h2c listener's prior-knowledge
    /// client, RFC 9113 §3.3). No HTTP/1.1 request line starts with "PRI * HTTP/2.0".
    func http2Preface() -> PrefaceMatch {
        let bytes = self.input.readable
        let count = min(bytes.count, HTTP2.preface.count)
        let matches = HTTP2.preface.withUnsafeBufferPointer {
            UnsafeBufferPointer(rebasing: $0[0..<count]).elementsEqual(UnsafeBufferPointer(rebasing: bytes[0..<count]))
        }
        guard matches else { return .absent }
        return count == HTTP2.preface.count ? .found : .partial
    }

    /// Hands the fd (and TLS session, and what was read) to an `HTTP2Connection`, which takes
    /// this connection's place in the loop. This one is done, without closing anything.
    func switchToHTTP2() {
        if let registration = self.registration {
            self.registration = nil
            self.eventLoop.deregister(registration, fd: self.fd)
        }
        self.phase = .closed
        self.wait = nil
        let connection = HTTP2Connection(
            fd: self.fd, loop: self.loop, spec: self.spec, peer: self.peer, tls: self.tls, lameDuck: self.draining)
        self.loop.replace(self, with: connection)
        let initial = self.input.readable
        do {
            try connection.start(initial: initial)
        } catch {
            self.loop.logger.warning("cannot serve an HTTP/2 connection: \(error)")
            connection.closeNow()
        }
        self.input.clear()
        self.output.clear()
    }

    /// The request of one HTTP/2 stream, on that stream.
    convenience init(stream: HTTP2Stream, connection: HTTP2Connection) {
        self.init(
            fd: -1, loop: connection.loop, spec: connection.spec, peer: connection.peer, tls: nil, lameDuck: false,
            stream: stream)
    }

    /// A stream's request is there to read: registered for its timers only (it has no fd).
    func startStream() {
        self.registration = self.eventLoop.registerTimer(self)
        self.arm(.header)
        self.readable = true
        self.process()
    }
}

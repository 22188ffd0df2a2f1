import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// A TLS listener's connection before and after its HTTP: the handshake, and the end of its
/// output (close_notify before the FIN).
extension ClientConnection {
    /// Moves the handshake on. Returns whether progress was made (it ended, either way).
    func continueHandshake() -> Bool {
        guard let tls = self.tls else {
            self.phase = .serving
            return true
        }
        switch tls.handshake() {
        case .done:
            self.services.metrics.tlsHandshakeDone(resumed: tls.resumed)
            if self.spec.http2, tls.negotiatedProtocol == "h2" {
                self.switchToHTTP2()
                return false
            }
            self.phase = .serving
            // The client's first records (a request behind its Finished) may be in OpenSSL's
            // buffer already, where no edge will announce them: read once to see.
            self.readable = true
            // A lame duck (accepted while draining, or the drain began during the handshake)
            // gets the idle grace, as a plaintext one does from accept.
            self.closeIfIdleAfterGrace()
            return true
        case .wantRead:
            self.readable = false
            return false
        case .wantWrite:
            self.writable = false
            return false
        case .failed:
            self.handshakeFailed()
            return true
        }
    }

    /// Garbage, a plaintext request, no protocol in common: OpenSSL has sent its alert (if the
    /// socket took it). No HTTP answer (the client would not read one), and the worker goes on:
    /// FIN, then what the client still sends is read and dropped until it closes, so that the
    /// close is a FIN, not a reset that could destroy the alert.
    private func handshakeFailed() {
        self.services.metrics.tlsHandshakeFailed()
        self.phase = .finishing
        self.disarm()
        self.flushOutput()
    }

    /// Ends our direction: close_notify first on TLS (so the peer can tell our close from a
    /// truncation), then FIN.
    func shutDownWrite() {
        self.tls?.closeNotify()
        _ = shutdown(self.fd, CInt(SHUT_WR))
    }
}

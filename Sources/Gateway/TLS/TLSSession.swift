import CGatewayTLS
import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// One client connection's TLS state (OpenSSL's `SSL`), reading and writing the connection's
/// own nonblocking socket. Owned by its `ClientConnection`, which keeps owning the fd; freed
/// with it. Its calls mirror `IOBuffer.read(from:)` and `write(to:)`, so the connection's paths
/// differ only in which one they call.
final class TLSSession {
    private let pointer: OpaquePointer
    /// The last read found the socket empty (it hit would-block after the bytes it returned):
    /// with edge-triggered epoll, reading again before the next edge would only learn that.
    private(set) var socketEmptied = false
    /// The handshake is over: close_notify may be sent, and the connection serves HTTP.
    private(set) var established = false

    /// Nil when OpenSSL cannot make a connection (out of memory): the caller closes the socket.
    init?(context: TLSServerContext, fd: CInt) {
        guard let pointer = gw_tls_accept(context.pointer, fd) else { return nil }
        self.pointer = pointer
    }

    /// The client side, to an upstream: `name` goes in SNI (unless an IP literal) and is
    /// checked against the certificate when the context verifies.
    init?(client context: TLSClientContext, fd: CInt, name: String) {
        guard let pointer = gw_tls_connect(context.pointer, fd, name) else { return nil }
        self.pointer = pointer
    }

    /// Why the handshake (or the last call) failed: "certificate verify failed: hostname
    /// mismatch", OpenSSL's reason, or the socket's error.
    var failure: String {
        var reason = [CChar](repeating: 0, count: 256)
        gw_tls_failure(self.pointer, &reason, reason.count)
        return TLSServerContext.text(reason)
    }

    deinit {
        gw_tls_free(self.pointer)
    }

    enum HandshakeResult {
        case done
        case wantRead
        case wantWrite
        /// Garbage, plaintext, no protocol or cipher in common, or the peer left.
        case failed
    }

    /// The finished handshake resumed a session from a ticket.
    var resumed: Bool { gw_tls_resumed(self.pointer) != 0 }

    func handshake() -> HandshakeResult {
        // The codes are an anonymous C enum, which Swift imports as Int.
        switch Int(gw_tls_handshake(self.pointer)) {
        case 0:
            self.established = true
            return .done
        case GW_TLS_WANT_READ: return .wantRead
        case GW_TLS_WANT_WRITE: return .wantWrite
        default: return .failed
        }
    }

    /// Plaintext into the free space of `buffer` (made with `reserve(minimum)` first). A
    /// `wantWrite` (the socket is full while OpenSSL has records to send) reads as would-block:
    /// the connection is then not writable, and its next output edge reads again.
    func read(into buffer: IOBuffer, minimum: Int) -> IOResult {
        guard buffer.reserve(minimum) || buffer.writableCount > 0 else { return .full }
        var emptied: CInt = 0
        let count = gw_tls_read(
            self.pointer, buffer.storage + buffer.writerIndex, buffer.writableCount, &emptied)
        self.socketEmptied = emptied != 0
        if count > 0 {
            buffer.didWrite(count)
            return .bytes(count)
        }
        switch Int(count) {
        case GW_TLS_WANT_READ, GW_TLS_WANT_WRITE:
            self.socketEmptied = true
            return .wouldBlock
        case GW_TLS_CLOSED: return .endOfFile
        default: return .failed(EPROTO)
        }
    }

    /// Writes what is readable in `buffer` as records; consumes what OpenSSL took.
    func write(from buffer: IOBuffer) -> IOResult {
        guard !buffer.isEmpty else { return .bytes(0) }
        let result = self.write(UnsafeRawBufferPointer(buffer.readable))
        if case .bytes(let count) = result { buffer.consume(count) }
        return result
    }

    /// A short count means the socket is full. After a short count or would-block, the next
    /// write must start with the bytes not taken (OpenSSL may hold part of them in a record).
    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        guard bytes.count > 0 else { return .bytes(0) }
        let count = gw_tls_write(self.pointer, bytes.baseAddress, bytes.count)
        if count >= 0 { return .bytes(count) }
        switch Int(count) {
        case GW_TLS_WANT_WRITE: return .wouldBlock
        // Renegotiation is off, so a write never waits for input: anything else ends it.
        default: return .failed(EPROTO)
        }
    }

    /// close_notify, once, if the handshake finished and nothing failed (RFC 8446 §6.1: the
    /// peer learns the close was ours, not a truncation). Never waits for the peer's.
    func closeNotify() {
        gw_tls_close_notify(self.pointer)
    }

    var negotiatedProtocol: String { String(cString: gw_tls_alpn(self.pointer)) }
    var version: String { String(cString: gw_tls_version(self.pointer)) }
    var serverName: String { String(cString: gw_tls_server_name(self.pointer)) }
}

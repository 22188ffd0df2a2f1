import CGatewayIO
import GatewayCore
import GatewayHTTP
import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// One keep-alive connection to one upstream endpoint: nonblocking, edge-triggered, on the loop
/// of the client connections it serves. Owned by its `UpstreamPool`: connecting, idle in the
/// pool, or lent to one `ProxyExchange` at a time. Its one deadline is the exchange's
/// (`connect_timeout`, `response_timeout`, `read_timeout`) or, idle, the pool's `idle_timeout`.
/// To an upstream with `tls`, the TLS handshake is part of connecting (within
/// `connect_timeout`), and every read and write goes through its `TLSSession`, as a client
/// connection's do on a TLS listener: pooled and reused the same way.
final class UpstreamConnection: IOHandler {
    enum State {
        case connecting
        case idle
        case lent
        /// After a 101: a byte tunnel's upstream side.
        case tunnel
        case closed
    }

    /// A response head and a read burst of body fit; a larger head grows it (up to the limit).
    static let inputCapacity = 16 * 1024
    static let inputLimit = 128 * 1024
    /// Request bytes waiting for the upstream to take them, past which the client's body is
    /// not read (the same bound as the other direction's `outputHighWater`).
    static let outputHighWater = 64 * 1024

    let fd: CInt
    let endpointIndex: Int
    unowned let pool: UpstreamPool
    private var registration: EventLoop.Registration?
    private(set) var state: State = .connecting
    let input = IOBuffer(capacity: UpstreamConnection.inputCapacity, limit: UpstreamConnection.inputLimit)
    let output = IOBuffer(capacity: 1024, limit: 1024)
    var readable = false
    var writable = false
    /// read(2) returned 0.
    var inputClosed = false
    /// EPOLLRDHUP came: the end of file is behind what is in the socket (see
    /// `ClientConnection.peerShutDown`).
    var peerShutDown = false
    /// The exchange using it (`lent`).
    weak var exchange: ProxyExchange?
    /// The response head's parser and fields, kept with the connection rather than the
    /// exchange: an exchange is made per request, and these would cost it two allocations.
    var responseParser = HeadParser(.response, maxHeadBytes: UpstreamConnection.inputLimit)
    var responseHead = MessageHead()
    /// The tunnel it carries (`tunnel`).
    weak var tunnel: Tunnel?
    /// Connect result, while `connecting`: nil, or why it failed.
    private var onConnect: ((UpstreamConnectError?) -> Void)?
    /// With `tls`: the session, from the end of the TCP connect on.
    private(set) var tls: TLSSession?
    /// Requests it carried: a reused connection that fails before answering was likely closed
    /// by the upstream as we picked it (the race every pool has), not a failing endpoint.
    var served = 0
    /// Any byte since the current request was sent: a request the upstream began to answer is
    /// never retried, even when the bytes were too few to make a status line.
    var responseBytesReceived = false

    private init(fd: CInt, endpointIndex: Int, pool: UpstreamPool) {
        self.fd = fd
        self.endpointIndex = endpointIndex
        self.pool = pool
    }

    var eventLoop: EventLoop { self.pool.loop }

    /// Starts a nonblocking connect; `completion` gets 0 or the errno, on the loop.
    static func connect(
        to endpoint: UpstreamPool.Endpoint, index: Int, pool: UpstreamPool, timeout: UInt64,
        completion: @escaping (Result<UpstreamConnection, UpstreamConnectError>) -> Void
    ) {
        let family = endpoint.family
        let fd = socket(
            family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            completion(.failure(UpstreamConnectError(code: errno)))
            return
        }
        var on: CInt = 1
        _ = setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<CInt>.size))
        let connection = UpstreamConnection(fd: fd, endpointIndex: index, pool: pool)
        let rc = endpoint.withAddress { address, length in Glibc.connect(fd, address, length) }
        if rc != 0, errno != EINPROGRESS {
            let code = errno
            closeDescriptor(fd)
            completion(.failure(UpstreamConnectError(code: code)))
            return
        }
        do throws(SystemCallError) {
            connection.registration = try pool.loop.register(connection, fd: fd, events: IOEvent.connection)
        } catch {
            closeDescriptor(fd)
            completion(.failure(UpstreamConnectError(code: error.errno.rawValue)))
            return
        }
        connection.onConnect = { error in
            if let error {
                completion(.failure(error))
            } else {
                completion(.success(connection))
            }
        }
        connection.setDeadline(after: timeout)
        if rc == 0 {
            // Connected at once (loopback can).
            connection.writable = true
            connection.tcpConnected()
        }
    }

    // MARK: Events

    func handleEvents(_ events: UInt32) {
        switch self.state {
        case .connecting:
            if let tls = self.tls {
                if events & IOEvent.output != 0 { self.writable = true }
                if events & (IOEvent.input | IOEvent.readHangUp | IOEvent.hangUp | IOEvent.error) != 0 {
                    self.readable = true
                }
                self.continueHandshake(tls)
                return
            }
            guard events & (IOEvent.output | IOEvent.error | IOEvent.hangUp) != 0 else { return }
            var code: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            _ = getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &code, &length)
            if code == 0, events & IOEvent.output != 0 {
                self.writable = true
                if events & (IOEvent.input | IOEvent.readHangUp) != 0 { self.readable = true }
                self.tcpConnected()
            } else {
                self.finishConnect(UpstreamConnectError(code: code == 0 ? ECONNREFUSED : code))
            }
        case .idle:
            // An idle connection has nothing to say: the upstream closed it (or sent garbage).
            // It leaves the pool at once, so it neither takes a place under
            // `max_idle_per_endpoint` nor gets picked.
            if events & (IOEvent.input | IOEvent.readHangUp | IOEvent.hangUp | IOEvent.error) != 0 {
                self.pool.removeIdle(self)
            }
        case .lent:
            guard let exchange = self.exchange else {
                // Lent to an exchange that is gone: nobody will ever read or release it.
                self.close()
                return
            }
            if events & (IOEvent.input | IOEvent.readHangUp | IOEvent.hangUp | IOEvent.error) != 0 {
                self.readable = true
            }
            if events & (IOEvent.readHangUp | IOEvent.hangUp | IOEvent.error) != 0 { self.peerShutDown = true }
            if events & IOEvent.output != 0 {
                self.writable = true
                if self.flush() { exchange.upstreamWritable() }
            }
            // Even when the write failed: an early answer (a 413 before the whole body) may be
            // waiting, and edge-triggered, this event is the only news of it.
            if self.readable || self.writeFailed {
                exchange.upstreamReadable(self)
            }
        case .tunnel:
            if events & (IOEvent.readHangUp | IOEvent.hangUp | IOEvent.error) != 0 { self.peerShutDown = true }
            if events & (IOEvent.input | IOEvent.readHangUp | IOEvent.hangUp | IOEvent.error) != 0 {
                self.readable = true
                self.tunnel?.upstreamReadable()
            }
            if events & IOEvent.output != 0 {
                self.writable = true
                self.tunnel?.upstreamWritable()
            }
        case .closed:
            break
        }
    }

    func startTunnel(_ tunnel: Tunnel) {
        self.state = .tunnel
        self.exchange = nil
        self.tunnel = tunnel
        self.clearDeadline()
    }

    /// The TCP connect is done: the connection is ready, or, to a TLS upstream, its
    /// handshake begins.
    private func tcpConnected() {
        guard let context = self.pool.tls else {
            self.finishConnect(nil)
            return
        }
        let name = self.pool.endpoints[self.endpointIndex].tlsName ?? ""
        guard let tls = TLSSession(client: context, fd: self.fd, name: name) else {
            self.finishConnect(UpstreamConnectError(code: ENOMEM))
            return
        }
        self.tls = tls
        self.continueHandshake(tls)
    }

    private func continueHandshake(_ tls: TLSSession) {
        switch tls.handshake() {
        case .done:
            // Records behind the server's Finished (TLS 1.3's tickets) may sit in OpenSSL's
            // read-ahead, where no edge will announce them: the first read looks.
            self.readable = true
            self.finishConnect(nil)
        case .wantRead:
            self.readable = false
        case .wantWrite:
            self.writable = false
        case .failed:
            self.finishConnect(UpstreamConnectError(code: EPROTO, tlsFailure: tls.failure))
        }
    }

    private func finishConnect(_ error: UpstreamConnectError?) {
        guard let onConnect = self.onConnect else { return }
        self.onConnect = nil
        self.clearDeadline()
        if error == nil {
            self.state = .lent
        } else {
            self.close()
        }
        onConnect(error)
    }

    func deadlinePassed() {
        switch self.state {
        case .connecting:
            self.finishConnect(
                UpstreamConnectError(code: ETIMEDOUT, tlsFailure: self.tls.map { _ in "handshake timed out" }))
        case .idle:
            self.pool.removeIdle(self)
        case .lent:
            if let exchange = self.exchange {
                exchange.upstreamTimedOut(self)
            } else {
                self.close()
            }
        case .tunnel, .closed:
            break
        }
    }

    // MARK: Deadline

    func setDeadline(after nanoseconds: UInt64) {
        guard let registration = self.registration else { return }
        self.eventLoop.setDeadline(registration, at: self.eventLoop.now + nanoseconds)
    }

    func clearDeadline() {
        guard let registration = self.registration else { return }
        self.eventLoop.setDeadline(registration, at: 0)
    }

    // MARK: Lending

    /// Taken from the pool for an exchange.
    func lend(to exchange: ProxyExchange) {
        self.state = .lent
        self.exchange = exchange
        self.responseParser.reset()
        self.responseBytesReceived = false
        self.clearDeadline()
    }

    /// Back in the pool, idle.
    func makeIdle(timeout: UInt64) {
        self.state = .idle
        self.exchange = nil
        self.input.clear()
        self.input.shrink(to: Self.inputCapacity)
        self.setDeadline(after: timeout)
    }

    var isUsable: Bool { self.state != .closed && !self.inputClosed }

    /// Fit to go back to the pool: nothing unread or unsent, no end of file or error seen. An
    /// idle connection hears only new edges, so a FIN or stray bytes already signalled would
    /// otherwise wait for the next request and become its failure.
    var isReusable: Bool {
        self.isUsable && !self.peerShutDown && !self.readable && !self.writeFailed && self.input.isEmpty
            && self.output.isEmpty
    }

    // MARK: I/O

    /// One read into the input. `.endOfFile` marks `inputClosed`.
    func read() -> IOResult {
        let result: IOResult
        let emptied: Bool
        if let tls = self.tls {
            result = tls.read(into: self.input, minimum: 4096)
            emptied = tls.socketEmptied
        } else {
            result = self.input.read(from: self.fd, minimum: 4096)
            // A short read: the socket is empty now (TCP gives what it has).
            emptied = self.input.writableCount > 0
        }
        switch result {
        case .bytes:
            self.responseBytesReceived = true
            if emptied, !self.peerShutDown { self.readable = false }
        case .wouldBlock:
            self.readable = false
        case .endOfFile:
            self.readable = false
            self.inputClosed = true
        case .full, .failed:
            break
        }
        return result
    }

    /// Writes what is pending. Returns whether everything went out; false on an error too
    /// (`failed` is set then).
    @discardableResult
    func flush() -> Bool {
        while !self.output.isEmpty, self.writable {
            let result = if let tls = self.tls { tls.write(from: self.output) } else { self.output.write(to: self.fd) }
            switch result {
            case .bytes:
                continue
            case .wouldBlock:
                self.writable = false
            default:
                self.writeFailed = true
                return false
            }
        }
        return self.output.isEmpty
    }

    /// A write failed (the upstream reset the connection): the exchange learns it from the
    /// read side's end, or from this.
    var writeFailed = false

    /// Sends `bytes` after what is pending (one writev when possible); keeps the rest.
    func send(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard !bytes.isEmpty else {
            self.flush()
            return
        }
        if self.output.isEmpty, self.writable {
            // Through TLS, what the socket did not take is retried from `output`: the shim
            // allows the bytes to move (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
            let raw = UnsafeRawBufferPointer(bytes)
            let result = if let tls = self.tls { tls.write(raw) } else { Socket.write(self.fd, raw) }
            switch result {
            case .bytes(let count):
                if count < bytes.count {
                    self.writable = false
                    self.output.append(UnsafeBufferPointer(rebasing: bytes[count...]))
                }
            case .wouldBlock:
                self.writable = false
                self.output.append(bytes)
            default:
                self.writeFailed = true
            }
            return
        }
        self.output.append(bytes)
        self.flush()
    }

    var canTakeMore: Bool {
        (self.state == .lent || self.state == .tunnel) && !self.writeFailed
            && self.output.readableCount < Self.outputHighWater
    }

    /// Ends our direction (a tunnel's client half-closed): close_notify first through TLS.
    func shutDownWrite() {
        self.tls?.closeNotify()
        _ = shutdown(self.fd, CInt(SHUT_WR))
    }

    func close() {
        guard self.state != .closed else { return }
        self.state = .closed
        self.exchange = nil
        self.onConnect = nil
        // The upstream learns the close was ours (an idle one expired, a drain), not a cut.
        self.tls?.closeNotify()
        self.tls = nil
        if let registration = self.registration {
            self.registration = nil
            self.eventLoop.forget(registration)
        }
        closeDescriptor(self.fd)
        self.input.clear()
        self.output.clear()
    }
}

/// Why a connect failed: an errno (ECONNREFUSED, ETIMEDOUT for `connect_timeout`…), or to a
/// TLS upstream, why its handshake did ("certificate verify failed: hostname mismatch").
struct UpstreamConnectError: Error, CustomStringConvertible {
    var code: CInt
    var tlsFailure: String?

    init(code: CInt, tlsFailure: String? = nil) {
        self.code = code
        self.tlsFailure = tlsFailure
    }

    var description: String {
        if let tlsFailure { return "TLS handshake: \(tlsFailure)" }
        if self.code == ETIMEDOUT { return "connect timed out" }
        return String(cString: strerror(self.code)).lowercased()
    }
}

import CGatewayIO
import GatewayConfig
import GatewayCore
import GatewayHTTP
import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// One client connection: HTTP/1.1 (and 1.0) on a nonblocking socket, edge-triggered, from the
/// first byte to the polite close. It owns its fd, its input and output buffers and the
/// request in flight (`ClientRequest`); it reads only when it needs bytes (a head, a body),
/// answers in order, and writes each read burst's answers with one write.
///
/// The path of a request, as hops: `ClientConnection` reads and parses the head
/// (`GatewayHTTP.HeadParser`), `ClientConnection+Admission` routes and admits it (canonical
/// target, Host, credentials, rate limits, auth, size), then either a local answer
/// (`LocalResponse`) or a `ProxyExchange` to an upstream; the body follows the head through
/// `ClientConnection+Body`; `ClientConnection+Close` ends it (lame duck, polite close).
///
/// Polite close, as nginx's `lingering_close`: closing a socket whose receive buffer holds
/// unread bytes makes the kernel send RST instead of FIN, and an RST can destroy the response
/// just written before the client read it. So after the final response only our side is shut
/// down (FIN); input is read and discarded until the peer closes, or `lingerTimeout`.
final class ClientConnection: IOHandler, LoopConnection {
    /// How long a draining server keeps an idle keep-alive connection before closing it.
    /// Long enough for a client that just got a response to send its next request and get a
    /// `Connection: close` response instead of having the connection closed under it (which
    /// would fail that request); short enough that a drain with idle clients ends quickly.
    static let idleGrace: UInt64 = 1_000_000_000
    /// How long we keep reading (and discarding) after our FIN before closing anyway. A client
    /// that read our `Connection: close` response closes within a round trip; 2 s covers slow
    /// clients and long RTTs while bounding what a silent peer can hold.
    static let lingerTimeout: UInt64 = 2_000_000_000
    /// Free space a read makes while a request body streams through (see `readInput`).
    static let bodyReadSize = 16 * 1024
    /// The input buffer's first size: a typical request head (and a read burst of small
    /// pipelined ones) fits without growing.
    static let inputCapacity = 4096
    /// Proxied response bytes waiting for a slow client, past which the upstream is not read:
    /// the most a connection holds for a client that does not read (nginx's
    /// `proxy_buffers 8 4k|8k` and `proxy_busy_buffers_size` are in the same range).
    static let outputHighWater = 64 * 1024

    enum Wait {
        /// From accept, or from the first byte after a response, to the end of the head.
        case header
        /// A keep-alive connection between requests.
        case idle
        /// Between two reads of a request body.
        case body
        /// Draining: an idle connection's last second.
        case grace
        /// FIN sent; waiting for the peer's.
        case linger
        /// The PROXY protocol header (bounded by `header_timeout` too).
        case proxyHeader
    }

    enum Phase {
        case proxyHeader
        /// A TLS listener's handshake; bounded by `header_timeout` from accept, like the head
        /// that follows it.
        case handshake
        case serving
        /// The last response is being written: input is discarded, nothing more is answered.
        case finishing
        /// Output shut down (FIN sent): discarding input until the peer closes.
        case lingering
        case tunnel
        case closed
    }

    let fd: CInt
    unowned let loop: WorkerLoop
    let spec: ListenerSpec
    let peer: ConnectionPeer
    let services: GatewayServices
    /// On a TLS listener: the session every read and write of the client goes through. Nil
    /// for plaintext, whose paths pay one well-predicted nil check and nothing else.
    let tls: TLSSession?
    /// On an HTTP/2 stream: the stream is this request's socket (`HTTP2Stream`); nil for a
    /// real connection, whose paths pay one well-predicted nil check for it.
    let stream: HTTP2Stream?
    /// The client came over TLS (this connection's, or its HTTP/2 connection's).
    let secure: Bool
    /// An h2c listener's connection before its first request: the HTTP/2 preface may come.
    var mayStartHTTP2: Bool
    var registration: EventLoop.Registration?
    /// Index in `WorkerLoop.connections`.
    var loopIndex = -1

    let input: IOBuffer
    let output: IOBuffer
    var parser: HeadParser
    var head = MessageHead()
    /// The request being served; nil between requests. Always `requestStorage`, reused.
    var request: ClientRequest?
    let requestStorage = ClientRequest()
    /// The upstream request head of the request being proxied, built from the client's head
    /// before its bytes are consumed; kept until the exchange ends (a retry sends it again).
    let upstreamHead = IOBuffer(capacity: 2048, limit: 2048)

    var phase: Phase
    /// Edge-triggered epoll: the socket may have more to read (an edge came, and the last
    /// read did not show it empty). Reads happen only when bytes are needed.
    var readable = false
    var writable = true
    /// read(2) returned 0: the client sent everything it will.
    var inputClosed = false
    /// EPOLLRDHUP came: the client shut its side down. The end of file is in the socket, behind
    /// whatever it sent before: reads go on until they find it (a short read does not mean the
    /// socket is empty of news then, and no other edge will come).
    var peerShutDown = false
    /// The last response answered a request that asked to close, all of whose bytes were
    /// read: closing needs no linger.
    var nothingMoreComing = false
    /// Any bytes since the last response: a request may be arriving (what "idle" means for
    /// a drain and for the header timeout's 408).
    var bytesSinceLastResponse = false
    /// Lame duck: every response closes the connection, idle ones close after `idleGrace`.
    var draining: Bool
    var wait: Wait?
    /// The tunnel after a 101.
    var tunnel: Tunnel?
    /// Inside `process`: a nested call (from an exchange finishing a response) only notes that
    /// another pass is due.
    private var processing = false
    private var processAgain = false

    init(
        fd: CInt, loop: WorkerLoop, spec: ListenerSpec, peer: ConnectionPeer, tls: TLSSession?, lameDuck: Bool,
        stream: HTTP2Stream? = nil
    ) {
        self.fd = fd
        self.tls = tls
        self.stream = stream
        self.secure = tls != nil || stream?.secure == true
        self.mayStartHTTP2 = spec.h2c && stream == nil
        self.loop = loop
        self.spec = spec
        self.peer = peer
        self.services = loop.services
        let limits = loop.services.limits
        self.input = IOBuffer(capacity: Self.inputCapacity, limit: max(limits.maxHeaderBytes, 16 * 1024) + 16 * 1024)
        self.output = IOBuffer(capacity: 2048, limit: 2048)
        self.parser = HeadParser(.request, maxHeadBytes: limits.maxHeaderBytes)
        self.draining = lameDuck
        self.phase =
            stream != nil ? .serving : spec.proxyProtocol ? .proxyHeader : tls != nil ? .handshake : .serving
    }

    func register() throws(SystemCallError) {
        self.registration = try self.loop.eventLoop.register(self, fd: self.fd, events: IOEvent.connection)
    }

    /// Just accepted and registered.
    func started() {
        if self.phase == .proxyHeader {
            self.arm(.proxyHeader)
        } else {
            self.arm(.header)
        }
        if self.draining {
            self.closeIfIdleAfterGrace()
        }
    }

    var eventLoop: EventLoop { self.loop.eventLoop }

    // MARK: Events

    func handleEvents(_ events: UInt32) {
        if events & (IOEvent.error | IOEvent.hangUp) != 0, events & IOEvent.input == 0 {
            // Reset, or both directions gone with nothing left to read.
            self.abort()
            return
        }
        if events & (IOEvent.input | IOEvent.readHangUp | IOEvent.hangUp) != 0 {
            self.readable = true
        }
        if events & (IOEvent.readHangUp | IOEvent.hangUp) != 0 {
            self.peerShutDown = true
        }
        if self.phase == .tunnel {
            // Every edge reports every ready bit: both directions may have work.
            if events & IOEvent.output != 0 {
                self.writable = true
                self.tunnel?.clientWritable()
            }
            if self.readable { self.tunnel?.clientReadable() }
            return
        }
        if events & IOEvent.output != 0 {
            self.writable = true
            self.flushOutput()
            if self.phase == .closed { return }
            if let exchange = self.request?.exchange, self.output.isEmpty {
                exchange.clientCanTakeMore()
            }
        }
        self.process()
    }

    func deadlinePassed() {
        if self.phase == .tunnel {
            self.tunnel?.idleTimedOut()
            return
        }
        guard let wait = self.wait else { return }
        self.wait = nil
        switch wait {
        case .header:
            if self.phase == .handshake {
                // A handshake that stalled: no HTTP has been spoken, so nothing to answer.
                self.closeNow()
                return
            }
            guard self.phase == .serving, self.request == nil else { return }
            if self.bytesSinceLastResponse {
                // Part of a request arrived, too slowly: tell the client (408), then close.
                self.output.append(LocalResponse.requestTimeout)
            }
            self.closePolitely()
        case .idle, .grace:
            guard self.phase == .serving, self.request == nil, !self.bytesSinceLastResponse else { return }
            self.closePolitely()
        case .body:
            self.bodyTimedOut()
        case .linger:
            self.closeNow()
        case .proxyHeader:
            // No valid PROXY header in time: closed without an answer.
            self.closeNow()
        }
    }

    // MARK: Timers

    func arm(_ wait: Wait) {
        guard let registration = self.registration else { return }
        let limits = self.services.limits
        let timeout: UInt64
        switch wait {
        case .header, .proxyHeader: timeout = limits.headerTimeoutNanoseconds
        case .idle: timeout = limits.idleTimeoutNanoseconds
        case .body: timeout = limits.bodyTimeoutNanoseconds
        case .grace: timeout = Self.idleGrace
        case .linger: timeout = Self.lingerTimeout
        }
        self.wait = wait
        self.eventLoop.setDeadline(registration, at: self.eventLoop.now + timeout)
    }

    func disarm() {
        self.wait = nil
        if let registration = self.registration {
            self.eventLoop.setDeadline(registration, at: 0)
        }
    }

    // MARK: The main loop

    /// Reads what is needed, parses and answers what can be answered, writes what was answered.
    func process() {
        if self.processing {
            self.processAgain = true
            return
        }
        self.processing = true
        defer { self.processing = false }
        repeat {
            self.processAgain = false
            self.step()
        } while self.processAgain && self.phase != .closed
        self.flushOutput()
    }

    private func step() {
        while true {
            switch self.phase {
            case .closed, .tunnel:
                return
            case .proxyHeader:
                guard self.readProxyHeader() else { return }
            case .handshake:
                guard self.continueHandshake() else { return }
            case .finishing, .lingering:
                self.discardInput()
                return
            case .serving:
                if let request = self.request {
                    guard self.advance(request) else { return }
                } else {
                    guard self.parseNextHead() else { return }
                }
            }
        }
    }

    /// Parses the next request head from the input, reading more when it needs to. Returns
    /// whether progress was made (a request began, or the connection ended).
    private func parseNextHead() -> Bool {
        if self.mayStartHTTP2, !self.input.isEmpty {
            switch self.http2Preface() {
            case .found:
                self.switchToHTTP2()
                return false
            case .partial:
                guard self.readable else { return false }
                return self.readInput()
            case .absent:
                self.mayStartHTTP2 = false
            }
        }
        if !self.input.isEmpty {
            let outcome = self.parser.parse(self.input.readable, into: &self.head)
            switch outcome {
            case .complete:
                self.parser.reset()
                self.beginRequest()
                return true
            case .failed(let error):
                self.parser.reset()
                self.refuseUnparsable(error)
                return true
            case .incomplete:
                break
            }
        }
        // More bytes are needed.
        guard self.readable else {
            if self.inputClosed { self.inputEnded() }
            return false
        }
        return self.readInput()
    }

    /// One read from the client into `input` (through TLS on a TLS listener). Clears
    /// `readable` when the read shows the socket empty, so no read(2) is wasted to learn
    /// EAGAIN: the next edge says when there is more.
    @inline(__always)
    func receive(minimum: Int) -> IOResult {
        if let stream = self.stream {
            let result = stream.read(into: self.input, minimum: minimum)
            if stream.inboundDrained { self.readable = false }
            return result
        }
        if let tls = self.tls {
            let result = tls.read(into: self.input, minimum: minimum)
            if case .bytes = result, tls.socketEmptied, !self.peerShutDown { self.readable = false }
            return result
        }
        let result = self.input.read(from: self.fd, minimum: minimum)
        // A short read: the socket is empty now (TCP gives what it has).
        if case .bytes = result, self.input.writableCount > 0, !self.peerShutDown { self.readable = false }
        return result
    }

    /// One read into the input buffer. Returns whether anything changed.
    func readInput() -> Bool {
        // A body streaming through is read in 16 KiB steps (nginx's client_body_buffer_size on
        // 64-bit): at the head's 1 KiB, a 100 MiB upload took 25,600 reads of 4 KiB.
        let streamingBody = self.request.map { !$0.bodyEnded } ?? false
        let result = self.receive(minimum: streamingBody ? Self.bodyReadSize : 1024)
        switch result {
        case .bytes:
            if self.request == nil, !self.bytesSinceLastResponse {
                self.bytesSinceLastResponse = true
                // The first byte of the next request: from now on it has `header_timeout`.
                if self.wait == .idle || self.wait == .grace { self.arm(.header) }
            }
            self.bytesSinceLastResponse = true
            if self.wait == .body { self.arm(.body) }
            return true
        case .wouldBlock:
            self.readable = false
            return false
        case .endOfFile:
            self.readable = false
            self.inputClosed = true
            self.inputEnded()
            return true
        case .full:
            // The buffer is at its limit with a head or a body part in it: the parser refuses
            // an oversized head itself; a body waits for the exchange to take it.
            return false
        case .failed:
            self.abort()
            return true
        }
    }

    /// The client closed its side. Everything it sent has been read; what follows depends on
    /// whether anything is left to answer.
    private func inputEnded() {
        guard self.phase == .serving else {
            if self.phase == .lingering { self.closeNow() }
            return
        }
        if let request = self.request {
            // A response is coming (a proxied one, or a local one waiting for the body): it is
            // the last. A body that cannot end now gets 400.
            request.closeAfterResponse = true
            if !request.bodyEnded {
                self.bodyCutShort()
            }
            return
        }
        if self.input.isEmpty || !self.bytesSinceLastResponse {
            // Everything answered: done.
            self.closePolitely()
        } else {
            // Part of a head and then the end: it can never complete.
            self.refuseUnparsable(HTTPParseError(400, "the connection ended inside a request head"))
        }
    }

    /// Input after the last response (or our FIN): read and dropped, never parsed. Read from
    /// the socket as it is, TLS or not: nothing of it will be looked at.
    private func discardInput() {
        while self.readable {
            self.input.clear()
            let result =
                if let stream = self.stream { stream.read(into: self.input, minimum: 1024) } else {
                    self.input.read(from: self.fd, minimum: 1024)
                }
            switch result {
            case .bytes:
                continue
            case .endOfFile:
                self.readable = false
                self.inputClosed = true
                if self.phase == .lingering { self.closeNow() }
                return
            case .wouldBlock, .full:
                self.readable = false
            case .failed:
                self.closeNow()
                return
            }
        }
        self.input.clear()
    }

    // MARK: Output

    /// Writes what is pending. Returns whether everything went out.
    @discardableResult
    func flushOutput() -> Bool {
        guard !self.output.isEmpty else {
            self.outputDrained()
            return true
        }
        guard self.writeOutputBuffer() else { return false }
        self.outputDrained()
        return true
    }

    /// Writes `output` until it is empty or the socket is full; whether it all went out.
    private func writeOutputBuffer() -> Bool {
        guard self.writable, self.phase != .closed else { return false }
        while !self.output.isEmpty {
            let result =
                if let tls = self.tls {
                    tls.write(from: self.output)
                } else if let stream = self.stream {
                    stream.write(from: self.output)
                } else {
                    self.output.write(to: self.fd)
                }
            switch result {
            case .bytes(let count):
                if count == 0 { return false }
            case .wouldBlock:
                self.writable = false
                return false
            case .failed, .endOfFile, .full:
                self.abort()
                return false
            }
        }
        return true
    }

    /// Sends `bytes` after whatever is pending, in one writev when possible; keeps what the
    /// socket does not take. Returns whether everything went out.
    @discardableResult
    func send(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !bytes.isEmpty else { return self.flushOutput() }
        guard self.writable, self.phase != .closed else {
            self.output.append(bytes)
            return false
        }
        // What is pending goes first; `taken` counts the bytes of both that the socket took.
        let pending = self.output.readable
        let result: IOResult
        if self.stream != nil {
            // A stream takes what it can of one buffer, as TLS below.
            self.output.append(bytes)
            return self.writeOutputBuffer()
        } else if let tls = self.tls {
            // Records from one buffer: what is pending and `bytes` go out as one write.
            guard pending.isEmpty else {
                self.output.append(bytes)
                return self.writeOutputBuffer()
            }
            result = tls.write(UnsafeRawBufferPointer(bytes))
        } else if pending.isEmpty {
            result = Socket.write(self.fd, UnsafeRawBufferPointer(bytes))
        } else {
            var vectors: (iovec, iovec) = (
                iovec(iov_base: UnsafeMutableRawPointer(mutating: pending.baseAddress), iov_len: pending.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
            )
            result = withUnsafeMutablePointer(to: &vectors) {
                $0.withMemoryRebound(to: iovec.self, capacity: 2) { Socket.writev(self.fd, $0, count: 2) }
            }
        }
        var taken = 0
        switch result {
        case .bytes(let count):
            taken = count
        case .wouldBlock:
            break
        default:
            self.abort()
            return false
        }
        let fromPending = min(taken, pending.count)
        self.output.consume(fromPending)
        let fromBytes = taken - fromPending
        if fromBytes == bytes.count { return true }
        self.writable = false
        self.output.append(UnsafeBufferPointer(rebasing: bytes[fromBytes...]))
        return false
    }

    /// Whether a proxied response may read more from its upstream.
    var canTakeMoreOutput: Bool {
        self.output.readableCount < Self.outputHighWater && self.phase != .closed
    }

    private func outputDrained() {
        if self.phase == .finishing {
            self.shutDownOutput()
        }
        if self.request == nil {
            self.output.park()
        } else {
            self.output.shrink(to: 2048)
        }
    }
}

extension ClientConnection.Wait: Equatable {}

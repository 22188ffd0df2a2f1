import NIOCore

/// Sent down a connection's pipeline when the server starts draining.
struct DrainRequestedEvent: Sendable {}

/// Sent down a connection's pipeline by `ConnectionHandler` when `limits.body_timeout` passed
/// without a byte of the request body; the `RequestHandler` answers (408) or closes.
struct RequestBodyTimeoutEvent: Sendable {}

/// The first handler of every connection, before the HTTP decoder: it sees raw bytes, so it
/// knows whether anything arrived since the last response (what "idle" means for a drain), and
/// it owns how a connection ends: the lame-duck grace for idle connections and the polite
/// (lingering) close.
///
/// The `RequestHandler` at the end of the pipeline shares this object and reports the request
/// lifecycle to it. Everything here runs on the connection's event loop.
///
/// Polite close, as nginx's `lingering_close`: closing a socket whose receive buffer holds
/// unread bytes makes the kernel send RST instead of FIN, and an RST can destroy the response
/// we just wrote before the client read it. So after the final response we shut down only our
/// side (FIN), keep reading and discarding until the peer closes, and close fully then (or
/// after `lingerTimeout`).
final class ConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// How long a draining server keeps an idle keep-alive connection before closing it.
    /// Long enough for a client that just got a response to send its next request and get a
    /// `Connection: close` response instead of having the connection closed under it (which
    /// would fail that request); short enough that a drain with idle clients ends quickly.
    static let idleGrace: TimeAmount = .seconds(1)

    /// How long we keep reading (and discarding) after our FIN before closing anyway. A
    /// client that read our `Connection: close` response closes within a round trip; 2 s
    /// covers slow clients and long RTTs while bounding what a silent peer can hold.
    static let lingerTimeout: TimeAmount = .seconds(2)

    enum Phase {
        /// Serving requests.
        case open
        /// The last response is being written; input is discarded from now on.
        case finishing
        /// Output shut down (FIN sent): discarding input until the peer closes.
        case lingering
        case closed
    }

    private(set) var phase: Phase = .open
    /// Lame duck: every response closes the connection, idle ones are closed after `idleGrace`.
    private(set) var draining: Bool
    /// The peer closed its side (half-close). Everything it sent has been read.
    private(set) var inputClosed = false

    private var requestInFlight = false
    /// Any bytes received since the last response completed: a request may be arriving.
    private var bytesSinceLastResponse = false
    /// Writes after the last response are dropped (e.g. a 400 for garbage pipelined after a
    /// `Connection: close` request): nothing may follow the response that announced the close.
    private var outputSealed = false
    private var sealAfterNextWrite = false
    private var closeStarted = false
    private var graceTimer: Scheduled<Void>?
    private var lingerTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    /// `limits.header_timeout`: from accept, or from the first byte after a response, to the
    /// end of the request head (nginx's `client_header_timeout`).
    private let headerTimeout: TimeAmount
    /// `limits.idle_timeout`: a keep-alive connection with no byte of a next request.
    private let idleTimeout: TimeAmount
    /// `limits.body_timeout`: between two reads of a request body (nginx's
    /// `client_body_timeout`).
    private let bodyTimeout: TimeAmount
    /// A request's body is still to be read (its head is in, its end is not).
    private var readingBody = false
    /// The request handler holds reads back (the upstream is not taking the body): the wait
    /// is ours then, not the client's, so the body clock stops.
    private var bodyReadsPaused = false
    private enum WaitTimer { case header, idle, body }
    /// The wait in force: what it is and when it ends. `nil`: a request is in flight.
    private var wait: (kind: WaitTimer, deadline: NIODeadline)?
    /// At most one scheduled task per connection, lazily moved: a keep-alive connection
    /// answering thousands of requests a second must not schedule and cancel a timer for each
    /// (that is a heap insert and removal per request). The task fires at its original time,
    /// sees the wait was moved or ended, and schedules itself again only if needed.
    private var waitTask: (task: Scheduled<Void>, fireAt: NIODeadline)?

    init(
        draining: Bool, headerTimeout: TimeAmount, idleTimeout: TimeAmount, bodyTimeout: TimeAmount
    ) {
        self.draining = draining
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.bodyTimeout = bodyTimeout
    }

    /// Whether a newly parsed request should be served.
    var acceptsRequests: Bool {
        self.phase == .open
    }

    // MARK: Calls from the RequestHandler

    /// A request head arrived. `readingBody`: a body follows, and `bodyTimeout` bounds each
    /// wait for its next bytes until `requestBodyEnded`.
    func requestStarted(readingBody: Bool) {
        self.requestInFlight = true
        self.cancelGraceTimer()
        self.readingBody = readingBody
        self.bodyReadsPaused = false
        if readingBody {
            self.armWaitTimer(.body)
        } else {
            self.cancelWaitTimer()
        }
    }

    /// The request's end was read.
    func requestBodyEnded() {
        self.stopBodyWait()
    }

    /// The request handler stopped (or resumed) reading the client: while it holds reads
    /// back, the client is not the one keeping us waiting.
    func setBodyReadsPaused(_ paused: Bool) {
        guard self.readingBody, paused != self.bodyReadsPaused else { return }
        self.bodyReadsPaused = paused
        if paused {
            self.cancelWaitTimer()
        } else {
            self.armWaitTimer(.body)
        }
    }

    private func stopBodyWait() {
        guard self.readingBody else { return }
        self.readingBody = false
        if self.wait?.kind == .body {
            self.cancelWaitTimer()
        }
    }

    /// A 101 went out: the connection is a tunnel until either side closes. The tunnel has
    /// its own idle timer (`TunnelHandler`); a drain leaves it alone until the drain timeout.
    func tunnelStarted() {
        self.requestInFlight = true
        self.readingBody = false
        self.cancelGraceTimer()
        self.cancelWaitTimer()
    }

    /// Called before the response's last write. With `closing`, nothing after this response
    /// is served: input is discarded from now on.
    func responseWillComplete(closing: Bool) {
        self.requestInFlight = false
        self.bytesSinceLastResponse = false
        // Answered before its end (a 413, an early upstream answer): the rest of the body is
        // discarded by the close, not waited for.
        self.stopBodyWait()
        if closing, self.phase == .open {
            self.phase = .finishing
        }
        if !closing {
            self.armWaitTimer(.idle)
            // A response whose head went out before the drain began could not say
            // `Connection: close`: the connection is idle now, so the grace applies.
            self.closeIfIdleAfterGrace()
        }
    }

    // MARK: Header and idle timeouts

    private func armWaitTimer(_ kind: WaitTimer) {
        guard let context = self.context, self.phase == .open else { return }
        let timeout: TimeAmount
        switch kind {
        case .header: timeout = self.headerTimeout
        case .idle: timeout = self.idleTimeout
        case .body: timeout = self.bodyTimeout
        }
        let deadline = NIODeadline.now() + timeout
        self.wait = (kind, deadline)
        if let existing = self.waitTask, existing.fireAt <= deadline {
            return  // It fires first and moves itself to the new deadline.
        }
        self.waitTask?.task.cancel()
        self.scheduleWaitTask(at: deadline, context: context)
    }

    private func scheduleWaitTask(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.waitTask = nil
            guard let wait = self.wait, let context = self.context else { return }
            if wait.deadline > .now() {
                self.scheduleWaitTask(at: wait.deadline, context: context)
            } else {
                self.wait = nil
                self.waitTimerFired(wait.kind)
            }
        }
        self.waitTask = (task, deadline)
    }

    private func cancelWaitTimer() {
        // The task stays scheduled (see `waitTask`); with no wait it does nothing.
        self.wait = nil
    }

    private func stopWaitTask() {
        self.wait = nil
        self.waitTask?.task.cancel()
        self.waitTask = nil
    }

    private func waitTimerFired(_ kind: WaitTimer) {
        if kind == .body {
            guard self.phase == .open, self.readingBody, let context = self.context else { return }
            self.readingBody = false
            // The request handler knows whether a response has started (then it can only
            // close) and owns the request's record: it answers.
            context.fireUserInboundEventTriggered(RequestBodyTimeoutEvent())
            return
        }
        guard self.phase == .open, !self.requestInFlight, let context = self.context else { return }
        if kind == .header, self.bytesSinceLastResponse {
            // Part of a request arrived, too slowly: tell the client (408), then close.
            self.phase = .finishing
            context.write(
                self.wrapOutboundOut(.byteBuffer(ByteBuffer(string: Self.requestTimeoutResponse))), promise: nil)
        }
        self.closePolitely()
    }

    private static let requestTimeoutResponse =
        "HTTP/1.1 408 Request Timeout\r\nserver: gatewayd\r\ncontent-type: application/json\r\n"
        + "content-length: 43\r\nconnection: close\r\n\r\n{\"error\":\"request header timeout exceeded\"}"

    /// The next write reaching this handler is the last one allowed out.
    func sealOutputAfterNextWrite() {
        self.sealAfterNextWrite = true
    }

    /// Flush what was written, then FIN and linger (or close fully if the peer already closed
    /// its side). Idempotent.
    func closePolitely() {
        guard !self.closeStarted, let context = self.context else {
            return
        }
        self.closeStarted = true
        self.cancelWaitTimer()
        if self.phase == .open {
            self.phase = .finishing
        }
        self.outputSealed = true
        self.sealAfterNextWrite = false
        self.cancelGraceTimer()
        // An empty write completes after every write queued before it: when it does, the
        // response is in the kernel and the output can be shut down.
        let flushed = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(ByteBuffer())), promise: flushed)
        flushed.futureResult.assumeIsolated().whenComplete { result in
            self.outputFlushed(result)
        }
    }

    // MARK: Drain

    func beginDraining() {
        guard !self.draining else {
            return
        }
        self.draining = true
        if let context = self.context, context.channel.isActive {
            self.closeIfIdleAfterGrace()
        }
        // Not active yet: channelActive will do it.
    }

    private func closeIfIdleAfterGrace() {
        guard self.draining, self.phase == .open, !self.requestInFlight, !self.bytesSinceLastResponse,
            self.graceTimer == nil, let context = self.context
        else {
            // A request in flight or arriving: its response will carry `Connection: close`.
            return
        }
        self.graceTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.idleGrace) {
            self.graceTimer = nil
            if self.phase == .open, !self.requestInFlight, !self.bytesSinceLastResponse {
                self.closePolitely()
            }
            // Bytes arrived during the grace: that request is served with `Connection: close`.
        }
    }

    private func cancelGraceTimer() {
        self.graceTimer?.cancel()
        self.graceTimer = nil
    }

    // MARK: Closing

    private func outputFlushed(_ result: Result<Void, Error>) {
        guard self.phase == .finishing, let context = self.context else {
            return
        }
        if case .failure = result {
            self.closeNow()
            return
        }
        if self.inputClosed {
            // Nothing left unread: a plain close sends FIN, not RST.
            self.closeNow()
            return
        }
        self.phase = .lingering
        let shutdown = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: shutdown)
        shutdown.futureResult.assumeIsolated().whenFailure { _ in
            self.closeNow()
        }
        self.lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTimeout) {
            self.lingerTimer = nil
            self.closeNow()
        }
        // The HTTP pipeline handler may be holding back reads (it does while a pipelined
        // request waits): read from here, past it, so the peer's bytes and FIN are consumed.
        context.read()
    }

    private func closeNow() {
        guard self.phase != .closed, let context = self.context else {
            return
        }
        self.phase = .closed
        self.cancelGraceTimer()
        self.stopWaitTask()
        self.lingerTimer?.cancel()
        self.lingerTimer = nil
        context.close(mode: .all, promise: nil)
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelGraceTimer()
        self.stopWaitTask()
        self.lingerTimer?.cancel()
        self.lingerTimer = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.armWaitTimer(.header)
        context.fireChannelActive()
        if self.draining {
            self.closeIfIdleAfterGrace()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.phase = .closed
        self.cancelGraceTimer()
        self.stopWaitTask()
        self.lingerTimer?.cancel()
        self.lingerTimer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.phase == .open else {
            // After the last response (or our FIN): discard, never parse as a new request.
            return
        }
        // Set before the decoder runs: if these bytes complete a request, its response
        // clears the flag again (synchronously, inside this call).
        self.bytesSinceLastResponse = true
        if let wait = self.wait {
            if wait.kind == .body {
                // More of the body: the next bytes have `bodyTimeout` from now. Moving the
                // deadline later reschedules nothing (see `waitTask`).
                self.armWaitTimer(.body)
            } else if !self.requestInFlight, wait.kind == .idle {
                // The first byte of the next request: from now on it has `headerTimeout`.
                self.armWaitTimer(.header)
            }
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.phase == .open {
            context.fireChannelReadComplete()
        } else if self.phase != .closed {
            // Keep draining the socket whatever the handlers behind us think about reading.
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainRequestedEvent {
            self.beginDraining()
            return
        }
        if let channelEvent = event as? ChannelEvent, case .inputClosed = channelEvent {
            self.inputClosed = true
            switch self.phase {
            case .open:
                context.fireUserInboundEventTriggered(event)
            case .finishing:
                ()  // outputFlushed closes fully.
            case .lingering:
                // The peer read our response and closed: done.
                self.closeNow()
            case .closed:
                ()
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.outputSealed {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        if self.sealAfterNextWrite {
            self.sealAfterNextWrite = false
            self.outputSealed = true
        }
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension ConnectionHandler: Sendable {}

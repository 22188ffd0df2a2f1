import NIOCore
import NIOHTTP1

/// What an upstream connection tells the exchange that is using it. Called on the event loop.
protocol UpstreamConnectionDelegate: AnyObject {
    func upstreamResponseHead(_ head: HTTPResponseHead)
    func upstreamResponseBody(_ body: ByteBuffer)
    func upstreamResponseEnd(_ trailers: HTTPHeaders?)
    /// The connection can take more request bytes again.
    func upstreamWritabilityChanged(isWritable: Bool)
    /// A read burst ended: time to flush what was written to the client.
    func upstreamReadComplete()
    /// The connection failed or closed before the exchange was over.
    func upstreamFailed(_ error: UpstreamConnectionError)
    /// The deadline (`armDeadline`) passed: `response_timeout` without a response head, or
    /// `read_timeout` without a byte of the body.
    func upstreamTimedOut()
}

enum UpstreamConnectionError: Error, CustomStringConvertible {
    /// The upstream closed the connection (FIN or RST) before the response ended.
    case closed
    /// The upstream's bytes were not valid HTTP.
    case protocolError(String)
    case io(String)

    /// The `kind` label of `gatewayd_upstream_errors_total`.
    var metricKind: String {
        switch self {
        case .closed, .io: return "reset"
        case .protocolError: return "protocol"
        }
    }

    var description: String {
        switch self {
        case .closed: return "the upstream closed the connection"
        case .protocolError(let reason): return "invalid response from the upstream: \(reason)"
        case .io(let reason): return reason
        }
    }
}

/// One keep-alive connection to one upstream endpoint. Owned by its `UpstreamPool`: idle in
/// the pool, or lent to one `ProxyExchange` at a time. Lives on the event loop of the client
/// connections it serves, so an exchange never crosses threads.
final class UpstreamConnection {
    let channel: any Channel
    let endpointIndex: Int
    /// Idle in `pool`: the deadline is then the pool's `idle_timeout`, and passing it closes
    /// the connection.
    var isIdle = false
    weak var pool: UpstreamPool?
    fileprivate let handler: UpstreamResponseHandler
    fileprivate let watcher: ResponseByteWatcher

    fileprivate init(
        channel: any Channel, endpointIndex: Int, handler: UpstreamResponseHandler, watcher: ResponseByteWatcher
    ) {
        self.channel = channel
        self.endpointIndex = endpointIndex
        self.handler = handler
        self.watcher = watcher
    }

    /// Whether any byte arrived since `responseBytesReceived` was last set to false (when a
    /// request is sent): a request the upstream began to answer is never retried, even when
    /// the bytes were too few for the decoder to make a response head of them.
    var responseBytesReceived: Bool {
        get { self.watcher.received }
        set { self.watcher.received = newValue }
    }

    var delegate: (any UpstreamConnectionDelegate)? {
        get { self.handler.delegate }
        set { self.handler.delegate = newValue }
    }

    var isActive: Bool { self.channel.isActive && !self.handler.closed }

    // MARK: Deadline

    private var deadline: NIODeadline?
    private var deadlineTask: (task: Scheduled<Void>, fireAt: NIODeadline)?

    /// The deadline for the exchange using the connection: `response_timeout` until the
    /// response head, then `read_timeout`, moved at every read of the body; while the
    /// connection is idle in its pool, `idle_timeout`. One scheduled task per connection, moved
    /// lazily: it fires at its time, and schedules itself again if the deadline moved (later).
    /// A body read in a thousand pieces, or a connection lent and given back for every request,
    /// moves a number; it does not schedule and cancel a timer each time.
    func armDeadline(_ deadline: NIODeadline) {
        self.deadline = deadline
        if let existing = self.deadlineTask, existing.fireAt <= deadline { return }
        self.deadlineTask?.task.cancel()
        self.scheduleDeadlineTask(at: deadline)
    }

    func clearDeadline() {
        self.deadline = nil
    }

    private func scheduleDeadlineTask(at deadline: NIODeadline) {
        let task = self.channel.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self else { return }
            self.deadlineTask = nil
            guard let deadline = self.deadline else { return }
            if deadline > .now() {
                self.scheduleDeadlineTask(at: deadline)
            } else {
                self.deadline = nil
                if let delegate = self.handler.delegate {
                    delegate.upstreamTimedOut()
                } else if self.isIdle {
                    self.pool?.removeIdle(self)
                }
            }
        }
        self.deadlineTask = (task, deadline)
    }

    /// Holding reads back: the client cannot take the response as fast as the upstream sends.
    func setReadsPaused(_ paused: Bool) {
        self.handler.setReadsPaused(paused)
    }

    /// Builds the pipeline on a freshly connected channel. On the channel's event loop.
    static func configure(channel: any Channel, endpointIndex: Int) throws -> UpstreamConnection {
        let handler = UpstreamResponseHandler()
        let watcher = ResponseByteWatcher()
        let operations = channel.pipeline.syncOperations
        try operations.addHandler(watcher)
        // `forwardBytes`: after a `101 Switching Protocols` the decoder is removed and whatever
        // the upstream sent behind the 101 must reach the tunnel, not vanish.
        // No automatic framing: `RequestHandler` sets exactly the framing the client's request
        // had (see `upstreamRequestHead`); NIO's encoder would re-derive it from the method
        // and, for a TRACE, send a body unframed (a second request to the upstream).
        var encoder = HTTPRequestEncoder.Configuration()
        encoder.automaticallySetFramingHeaders = false
        try operations.addHTTPClientHandlers(
            leftOverBytesStrategy: .forwardBytes, enableOutboundHeaderValidation: false, encoderConfiguration: encoder)
        try operations.addHandler(handler)
        let connection = UpstreamConnection(
            channel: channel, endpointIndex: endpointIndex, handler: handler, watcher: watcher)
        // A closed connection's deadline task must not wait in the loop's timer heap for its
        // `response_timeout` or `read_timeout` (connections closed by the thousand would pile
        // up there).
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            connection.deadlineTask?.task.cancel()
            connection.deadlineTask = nil
        }
        return connection
    }

    /// Takes the HTTP handlers out so the channel carries raw bytes (after a 101). Bytes the
    /// decoder had buffered are delivered to `tunnel`, which is added first.
    func convertToTunnel(_ tunnel: TunnelHandler) throws {
        let operations = self.channel.pipeline.syncOperations
        self.handler.delegate = nil
        try operations.addHandler(tunnel)
        operations.removeHandler(self.handler, promise: nil)
        let encoder = try operations.handler(type: HTTPRequestEncoder.self)
        operations.removeHandler(encoder, promise: nil)
        let decoder = try operations.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)
        // The decoder hands what it held to the tunnel outside a read burst: flush it across.
        let removed = self.channel.eventLoop.makePromise(of: Void.self)
        removed.futureResult.assumeIsolated().whenComplete { _ in tunnel.flushPeer() }
        operations.removeHandler(decoder, promise: removed)
    }
}

/// The first handler of an upstream connection, before the decoder: notes that bytes arrived.
/// One flag write per read.
private final class ResponseByteWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    var received = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received = true
        context.fireChannelRead(data)
    }
}

/// The last handler of an upstream connection: hands response parts to the exchange and holds
/// reads back while the client is slower than the upstream.
private final class UpstreamResponseHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    weak var delegate: (any UpstreamConnectionDelegate)?
    private(set) var closed = false
    private var readsPaused = false
    private var readPending = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func setReadsPaused(_ paused: Bool) {
        self.readsPaused = paused
        if !paused, self.readPending, let context = self.context {
            self.readPending = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if self.readsPaused {
            self.readPending = true
        } else {
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.delegate?.upstreamResponseHead(head)
        case .body(let body):
            self.delegate?.upstreamResponseBody(body)
        case .end(let trailers):
            self.delegate?.upstreamResponseEnd(trailers)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.delegate?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed = true
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamFailed(.closed)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // An idle pooled connection the upstream closed, or EOF mid-response (the decoder
            // has already ended a read-until-close body): either way it is done.
            self.closed = true
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.closed = true
        let delegate = self.delegate
        self.delegate = nil
        if error is HTTPParserError {
            delegate?.upstreamFailed(.protocolError("\(error)"))
        } else {
            delegate?.upstreamFailed(.io("\(error)"))
        }
        context.close(promise: nil)
    }
}

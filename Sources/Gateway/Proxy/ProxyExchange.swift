import GatewayConfig
import GatewayHTTP
import GatewayIO

/// Why a request could not be proxied, as the client sees it: it names the upstream, never an
/// endpoint's address (the access log has that).
struct ProxyFailure: Error {
    /// 502 (refused, reset, an invalid response), 503 (every endpoint ejected), 504
    /// (`response_timeout`, or `read_timeout` once the response started: the client connection
    /// closes then).
    var status: UInt16
    var reason: String
}

/// One request proxied to one upstream: choosing the endpoint, retries, streaming the body
/// both ways with backpressure, and giving the connection back. Lives on the client
/// connection's loop; its upstream connections live there too.
///
/// Bodies are forwarded as the bytes that arrive, framed as they came: the request's straight
/// from the client's input buffer to the upstream socket, the response's from the upstream's
/// input to the client socket (one writev with the rewritten head), re-framed only when the
/// client cannot take the framing (HTTP/1.0 and chunked) or the upstream has none (read until
/// close, re-chunked for HTTP/1.1).
///
/// Retries (`UpstreamConfig.retries`) happen only for idempotent methods, on another endpoint:
/// after a connect failure, and after a reset, close or `response_timeout` before any byte of
/// the response when the whole request is still held (`retryElsewhere`). One more case is
/// retried without counting: a *reused* keep-alive connection that fails before any response
/// byte, for an idempotent request whose body is still all in memory. That is the upstream
/// closing an idle connection just as we picked it (the race every HTTP client pool has; Go's
/// net/http and Envoy retry it the same way), not a failure of the endpoint.
final class ProxyExchange {
    private enum State {
        /// Waiting for a connection; the request's body waits in the client's input.
        case connecting
        /// Request head written; the body may still be streaming.
        case sending(UpstreamConnection)
        /// The response head arrived and went to the client.
        case responding(UpstreamConnection)
        /// Over: the connection went back to the pool, or failed, or the client left.
        case finished
    }

    /// A request body up to this size is kept until the response starts, so that a stale
    /// connection can be retried; larger bodies stream through without a copy. 64 KiB covers
    /// typical API payloads at a bounded cost per request in flight.
    static let replayLimit = 64 * 1024

    private weak var client: ClientConnection?
    private let request: ClientRequest
    let pool: UpstreamPool
    private let idempotent: Bool
    /// Only a request that asked to upgrade may become a tunnel; a 101 to anything else is a
    /// broken upstream (502).
    private let allowsUpgrade: Bool
    /// The request came without a Host (HTTP/1.0): each attempt sends the upstream's `host`,
    /// or its endpoint's `host:port`, so that no upstream gets a request without one.
    private let setsHost: Bool
    private var state: State = .connecting
    private var retriesLeft: Int
    private var failedEndpoints: [Int] = []
    private var lastFailure: ProxyFailure?
    private var endpointIndex: Int?
    /// The current attempt counts in its endpoint's `inFlight` (for `least_request`).
    private var holdsEndpoint = false
    private var connectionReused = false
    /// The whole request went upstream.
    private var requestSent = false
    /// The request's body bytes sent on the current connection, kept for a resend while they
    /// fit in `replayLimit`; `replayable` false once they do not.
    private var replay: IOBuffer?
    private var replayable = true

    // The response.
    private var framing: ClientBodyFraming = .none
    private var remaining: UInt64 = 0
    private var decoder = ChunkedDecoder()
    private var upstreamKeepAlive = true
    private var closeClient = false
    private var sentAt: UInt64 = 0
    /// The client's socket is full: the upstream is not read (and its read timeout stops).
    private var pausedForClient = false
    /// The upstream's socket is full of request body: the client is not read, and the upstream
    /// has `response_timeout` to take more.
    private var pausedSending = false

    init(client: ClientConnection, request: ClientRequest, pool: UpstreamPool, setsHost: Bool) {
        self.client = client
        self.request = request
        self.pool = pool
        self.idempotent = request.method.isIdempotent
        self.allowsUpgrade = request.wantsUpgrade
        self.setsHost = setsHost
        self.retriesLeft = request.method.isIdempotent ? pool.configuration.retries : 0
    }

    private var metrics: GatewayMetrics { self.pool.metrics }
    private var loop: EventLoop { self.pool.loop }

    // MARK: From the client

    func start() {
        // A request without a body is whole from the start.
        self.requestSent = self.request.bodyEnded
        self.attempt()
    }

    /// Whether body bytes can go upstream now (connected, and its socket not backed up).
    var canTakeBody: Bool {
        switch self.state {
        case .sending(let connection), .responding(let connection): return connection.canTakeMore
        case .connecting, .finished: return false
        }
    }

    func sendBody(_ bytes: UnsafeBufferPointer<UInt8>, ended: Bool) {
        let connection: UpstreamConnection
        switch self.state {
        case .sending(let current), .responding(let current): connection = current
        case .connecting, .finished: return
        }
        self.remember(bytes)
        connection.send(bytes)
        if !self.requestSent, !connection.canTakeMore, !self.pausedSending {
            // The upstream stopped taking the body: it has `response_timeout` to take more
            // (nginx's `proxy_send_timeout`), or the exchange fails as a timeout. Without it,
            // an upstream that stops reading would hold the client forever: the client's body
            // timer is off while the upstream is the one not keeping up.
            self.pausedSending = true
            connection.setDeadline(after: self.pool.responseTimeout)
        }
    }

    /// The client's body ended (and went out with `sendBody`).
    func requestEnded() {
        self.requestSent = true
        if case .sending(let connection) = self.state {
            // `response_timeout` counts from the whole request being sent: an upload slower
            // than the timeout is not the upstream's fault.
            connection.setDeadline(after: self.pool.responseTimeout)
        }
    }

    /// The client can take response bytes again.
    func clientCanTakeMore() {
        guard self.pausedForClient, case .responding(let connection) = self.state else { return }
        self.pausedForClient = false
        connection.setDeadline(after: self.pool.readTimeout)
        self.upstreamReadable(connection)
    }

    /// The client went away or broke the request: the upstream connection cannot be reused.
    deinit {
        // Dropped without an end (its client went away in the middle): its connection must
        // not stay lent to nobody, nor its endpoint count a request in flight.
        self.cancel()
    }

    func cancel() {
        switch self.state {
        case .sending(let connection), .responding(let connection):
            self.state = .finished
            self.finishEndpoint()
            connection.close()
        case .connecting:
            self.state = .finished
        case .finished:
            break
        }
    }

    private func remember(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard self.replayable, self.idempotent, !bytes.isEmpty else { return }
        let replay = self.replay ?? IOBuffer(capacity: 4096, limit: Self.replayLimit)
        self.replay = replay
        guard replay.readableCount + bytes.count <= Self.replayLimit else {
            self.replayable = false
            self.replay = nil
            return
        }
        replay.append(bytes)
    }

    // MARK: Attempts

    private func attempt() {
        guard let index = self.pool.chooseEndpoint(excluding: self.failedEndpoints) else {
            // Retries left but no other endpoint: the client hears what went wrong last.
            if self.lastFailure == nil { self.count("unavailable") }
            self.fail(
                self.lastFailure
                    ?? ProxyFailure(
                        status: 503, reason: "every endpoint of upstream \(self.pool.configuration.name) is ejected"))
            return
        }
        self.endpointIndex = index
        ProxyLog.step(
            "upstream chosen",
            [
                "upstream": "\(self.pool.configuration.name)",
                "endpoint": "\(self.pool.endpoints[index].endpoint.text)",
                "failed_before": "\(self.failedEndpoints.count)",
            ])
        self.connect(to: index, fresh: false)
    }

    /// One connection attempt to `index`; `fresh` skips the idle connections (a stale one just
    /// failed). A connect failure counts against the endpoint and moves on to a retry if one is
    /// left.
    private func connect(to index: Int, fresh: Bool) {
        self.pool.endpoints[index].inFlight += 1
        if let trace = self.request.trace {
            let endpoint = self.pool.endpoints[index].endpoint
            trace.startAttempt(
                upstream: self.pool.configuration.name, endpoint: endpoint.text, address: endpoint.address.host,
                port: endpoint.address.port)
        }
        // An idle connection (the common case) is taken at once: no completion closure to
        // allocate per request.
        if !fresh, let idle = self.pool.idleConnection(to: index) {
            self.connectFinished(index, .success((idle, true)))
            return
        }
        self.pool.newConnection(to: index) { [self] result in
            self.connectFinished(index, result.map { ($0, false) })
        }
    }

    private func connectFinished(
        _ index: Int, _ result: Result<(connection: UpstreamConnection, reused: Bool), UpstreamConnectError>
    ) {
        guard case .connecting = self.state, self.client != nil else {
            // The client left meanwhile.
            self.pool.endpoints[index].inFlight -= 1
            if case .success(let (connection, _)) = result { self.pool.release(connection, reusable: true) }
            return
        }
        switch result {
        case .success(let (connection, reused)):
            self.connected(connection, reused: reused)
        case .failure(let error):
            self.pool.endpoints[index].inFlight -= 1
            self.pool.recordFailure(index)
            self.count("connect")
            if error.tlsFailure != nil, let quiet = self.pool.tlsFailureLog.shouldReport() {
                // A certificate that does not verify is the operator's to fix, not a blip:
                // said at error, once per interval however many requests it fails.
                ProxyLog.logger.error(
                    "upstream \(self.pool.configuration.name) endpoint \(self.pool.endpoints[index].endpoint.text): \(error)",
                    metadata: quiet > 0 ? ["not_logged_since": "\(quiet)"] : [:])
            }
            self.request.trace?.endAttempt(status: nil, error: "connect")
            self.failedEndpoints.append(index)
            let failure = ProxyFailure(
                status: 502, reason: "connect to upstream \(self.pool.configuration.name): \(error)")
            self.lastFailure = failure
            if self.retriesLeft > 0 {
                self.retriesLeft -= 1
                self.attempt()
            } else {
                self.fail(failure)
            }
        }
    }

    private func connected(_ connection: UpstreamConnection, reused: Bool) {
        guard let client = self.client, client.phase != .closed else {
            // The client left while the connection was being made: nothing was sent on it.
            self.state = .finished
            self.pool.endpoints[connection.endpointIndex].inFlight -= 1
            self.pool.release(connection, reusable: true)
            return
        }
        self.connectionReused = reused
        self.holdsEndpoint = true
        connection.lend(to: self)
        self.state = .sending(connection)
        self.sentAt = self.loop.now
        let output = connection.output
        output.append(client.upstreamHead.readable)
        self.request.trace?.writeTraceContext(into: output)
        if self.setsHost {
            output.append("host: ")
            let endpoint = self.pool.endpoints[connection.endpointIndex].endpoint
            output.append(self.pool.configuration.host ?? endpoint.text)
            output.append("\r\n")
        }
        output.append("\r\n")
        if let replay = self.replay {
            // A retry: what of the body had gone out on the failed connection goes out again.
            output.append(replay.readable)
        }
        connection.flush()
        if self.requestSent {
            connection.setDeadline(after: self.pool.responseTimeout)
        }
        if connection.readable { self.upstreamReadable(connection) }
        // Body bytes that waited for the connection can flow now.
        client.bodyCanFlow()
    }

    // MARK: From the upstream connection

    func upstreamWritable() {
        if self.pausedSending, case .sending(let connection) = self.state, connection.canTakeMore {
            self.pausedSending = false
            if !self.requestSent { connection.clearDeadline() }
        }
        self.client?.bodyCanFlow()
    }

    func upstreamReadable(_ connection: UpstreamConnection) {
        while true {
            switch self.state {
            case .sending(let current) where current === connection:
                // Waiting for the response head.
                if !connection.input.isEmpty {
                    switch connection.responseParser.parse(connection.input.readable, into: &connection.responseHead) {
                    case .complete:
                        connection.responseParser.reset()
                        self.responseHead(connection)
                        continue
                    case .failed(let error):
                        connection.responseParser.reset()
                        self.upstreamFailed(connection, kind: "protocol", reason: "invalid response: \(error)")
                        return
                    case .incomplete:
                        break
                    }
                }
                guard self.readMore(connection) else { return }
            case .responding(let current) where current === connection:
                if self.pausedForClient { return }
                if !connection.input.isEmpty {
                    self.forwardBody(connection)
                    continue
                }
                guard self.readMore(connection) else { return }
            default:
                return
            }
        }
    }

    /// One read of the upstream; false when there is nothing more to do now.
    private func readMore(_ connection: UpstreamConnection) -> Bool {
        guard connection.readable else {
            if connection.inputClosed {
                self.upstreamEnded(connection)
            } else if connection.writeFailed {
                // Nothing (more) to read, and the request cannot go out.
                self.upstreamFailed(connection, kind: "reset", reason: "the upstream closed the connection")
            }
            return false
        }
        switch connection.read() {
        case .bytes:
            if case .responding = self.state {
                // Once per read, not per byte: the deadline only moves.
                connection.setDeadline(after: self.pool.readTimeout)
            }
            return true
        case .wouldBlock:
            if connection.writeFailed {
                self.upstreamFailed(connection, kind: "reset", reason: "the upstream closed the connection")
            }
            return false
        case .endOfFile:
            self.upstreamEnded(connection)
            return false
        case .full:
            self.upstreamFailed(connection, kind: "protocol", reason: "invalid response: response head too large")
            return false
        case .failed:
            self.upstreamFailed(connection, kind: "reset", reason: "the upstream closed the connection")
            return false
        }
    }

    /// The upstream closed its side: the end of a read-until-close body, or a failure.
    private func upstreamEnded(_ connection: UpstreamConnection) {
        if case .responding = self.state, self.framing == .rechunked || self.framing == .untilClose {
            if self.framing == .rechunked {
                self.client?.output.append("0\r\n\r\n")
            }
            self.upstreamKeepAlive = false
            self.complete(connection)
            return
        }
        self.upstreamFailed(connection, kind: "reset", reason: "the upstream closed the connection")
    }

    private func responseHead(_ connection: UpstreamConnection) {
        guard let client = self.client else {
            self.cancel()
            return
        }
        let head = connection.responseHead
        if head.status < 200, head.status != 101 {
            // An interim response (100, 103): the client got its own 100 already.
            connection.input.consume(head.length)
            return
        }
        if head.status == 101, !self.allowsUpgrade {
            self.state = .finished
            self.finishEndpoint()
            connection.close()
            self.count("protocol")
            self.request.trace?.endAttempt(status: 101, error: "protocol")
            self.fail(
                ProxyFailure(status: 502, reason: "upstream \(self.pool.configuration.name) switched protocols unasked")
            )
            return
        }
        connection.clearDeadline()
        self.request.upstreamLatency = self.loop.now &- self.sentAt
        self.request.upstreamEndpoint = self.pool.endpoints[connection.endpointIndex].endpoint.text
        self.replay = nil
        self.replayable = false
        if let index = self.endpointIndex { self.pool.recordSuccess(index) }
        self.request.responseStarted = true
        self.request.status = Int(head.status)
        self.request.upstreamStatus = Int(head.status)
        var close = client.responseCloses(self.request)
        let body = ResponseFraming.body(status: head.status, framing: head.framing, requestMethod: self.request.method)
        // A body that ends with the connection ends it; a 204, 304 or HEAD answer has none
        // whatever its fields say, and leaves the connection reusable.
        self.upstreamKeepAlive = head.keepAlive && body != .untilClose
        let writer = ResponseHeadWriter(
            head: head, bytes: connection.input.readable, rules: self.request.route.responseHeaders)
        self.framing = writer.write(
            into: client.output, upstreamBody: body, clientIsHTTP10: self.request.isHTTP10, close: &close,
            requestID: self.request.requestID, upgrade: head.status == 101)
        self.closeClient = close
        connection.input.consume(head.length)
        if head.status == 101 {
            self.state = .finished
            self.finishEndpoint()
            self.request.trace?.endAttempt(status: 101, error: nil)
            client.startTunnel(with: connection)
            return
        }
        self.state = .responding(connection)
        switch self.framing {
        case .none:
            self.complete(connection)
        case .length(let length):
            self.remaining = length
            if length == 0 { self.complete(connection) }
        case .chunkedAsIs, .unchunked:
            self.decoder.reset()
        case .rechunked, .untilClose:
            break
        }
        if case .responding = self.state {
            // Body bytes read with the head go out with it, in one writev (forwardBody's send):
            // one segment to the client instead of two, and half the sends.
            if connection.input.isEmpty { client.flushOutput() }
            connection.setDeadline(after: self.pool.readTimeout)
        }
    }

    private func forwardBody(_ connection: UpstreamConnection) {
        guard let client = self.client else {
            self.cancel()
            return
        }
        let available = connection.input.readable
        var finished = false
        var consumed = 0
        switch self.framing {
        case .length:
            consumed = Int(min(UInt64(available.count), self.remaining))
            self.remaining -= UInt64(consumed)
            finished = self.remaining == 0
            client.send(UnsafeBufferPointer(rebasing: available[0..<consumed]))
            self.request.bytesSent += consumed
        case .chunkedAsIs:
            switch self.decoder.decode(available, data: { self.request.bytesSent += $0.count }) {
            case .consumed(let count, let ended):
                consumed = count
                finished = ended
                client.send(UnsafeBufferPointer(rebasing: available[0..<count]))
            case .failed(let error):
                self.upstreamFailed(connection, kind: "protocol", reason: "invalid response: \(error)")
                return
            }
        case .unchunked:
            switch self.decoder.decode(
                available,
                data: { range in
                    client.send(UnsafeBufferPointer(rebasing: available[range]))
                    self.request.bytesSent += range.count
                })
            {
            case .consumed(let count, let ended):
                consumed = count
                finished = ended
            case .failed(let error):
                self.upstreamFailed(connection, kind: "protocol", reason: "invalid response: \(error)")
                return
            }
        case .rechunked:
            consumed = available.count
            client.output.appendHex(UInt64(consumed))
            client.output.append("\r\n")
            client.send(available)
            client.output.append("\r\n")
            self.request.bytesSent += consumed
        case .untilClose:
            consumed = available.count
            client.send(available)
            self.request.bytesSent += consumed
        case .none:
            finished = true
        }
        connection.input.consume(consumed)
        if finished {
            self.complete(connection)
            return
        }
        if client.phase == .closed {
            self.cancel()
            return
        }
        if !client.canTakeMoreOutput {
            // The client is slower than the upstream: stop reading it, and stop its read
            // timeout (a slow client is not a stalled upstream) until the client catches up.
            self.pausedForClient = true
            connection.clearDeadline()
        }
    }

    private func complete(_ connection: UpstreamConnection) {
        self.state = .finished
        self.finishEndpoint()
        self.request.trace?.endAttempt(status: self.request.upstreamStatus, error: nil)
        // Reusable only if both messages ended cleanly and the upstream did not ask to close.
        self.pool.release(connection, reusable: self.requestSent && self.upstreamKeepAlive && !connection.inputClosed)
        self.client?.proxyResponseEnded(close: self.closeClient)
    }

    /// `connect_timeout` is the pool's; here `response_timeout` (no head yet) or `read_timeout`
    /// (between two reads of the body).
    func upstreamTimedOut(_ connection: UpstreamConnection) {
        switch self.state {
        case .sending(let current) where current === connection:
            let answered = connection.responseBytesReceived
            self.drop(connection, kind: "timeout")
            let within = DurationText.format(self.pool.configuration.responseTimeout)
            let failure = ProxyFailure(
                status: 504,
                reason: self.requestSent
                    ? "no response from upstream \(self.pool.configuration.name) within \(within)"
                    : "upstream \(self.pool.configuration.name) took none of the request body for \(within)")
            if !answered, self.retryElsewhere(after: failure) { return }
            self.fail(failure)
        case .responding(let current) where current === connection:
            // In the middle of the body: the response started, so the client connection closes
            // (`fail` → abort); a stall counts against the endpoint as a reset would.
            self.drop(connection, kind: "read_timeout")
            self.fail(
                ProxyFailure(
                    status: 504,
                    reason:
                        "upstream \(self.pool.configuration.name) sent nothing of the response body for \(DurationText.format(self.pool.configuration.readTimeout))"
                ))
        default:
            break
        }
    }

    /// A timeout is the endpoint's failure (metric and health); its connection is closed.
    private func drop(_ connection: UpstreamConnection, kind: String) {
        self.state = .finished
        self.finishEndpoint()
        if let index = self.endpointIndex { self.pool.recordFailure(index) }
        self.count(kind)
        self.request.trace?.endAttempt(status: self.request.upstreamStatus, error: kind)
        connection.close()
    }

    private func upstreamFailed(_ connection: UpstreamConnection, kind: String, reason: String) {
        switch self.state {
        case .sending(let current) where current === connection:
            self.finishEndpoint()
            let answered = connection.responseBytesReceived && !connection.input.isEmpty || self.parserStarted
            connection.close()
            if !answered, self.connectionReused, self.idempotent, self.replayable {
                // A stale keep-alive connection: resend on a fresh one (see the type's comment).
                self.count("stale")
                self.request.trace?.endAttempt(status: nil, error: "stale")
                self.state = .connecting
                if let index = self.endpointIndex { self.connect(to: index, fresh: true) }
                return
            }
            if let index = self.endpointIndex { self.pool.recordFailure(index) }
            self.count(kind)
            self.request.trace?.endAttempt(status: nil, error: kind)
            let failure = ProxyFailure(status: 502, reason: "upstream \(self.pool.configuration.name): \(reason)")
            self.state = .connecting
            if !answered, self.retryElsewhere(after: failure) { return }
            self.state = .finished
            self.fail(failure)
        case .responding(let current) where current === connection:
            self.state = .finished
            self.finishEndpoint()
            connection.close()
            if let index = self.endpointIndex { self.pool.recordFailure(index) }
            self.count(kind)
            self.request.trace?.endAttempt(status: self.request.upstreamStatus, error: kind)
            self.fail(ProxyFailure(status: 502, reason: "upstream \(self.pool.configuration.name): \(reason)"))
        default:
            break
        }
    }

    /// Whether any byte of a response was parsed on the current connection (a partial status
    /// line counts: the endpoint began to answer).
    private var parserStarted: Bool {
        if case .sending(let connection) = self.state { return connection.responseBytesReceived }
        return false
    }

    /// The endpoint had the request and failed (reset, closed, `response_timeout`) before any
    /// byte of a response: retry on another endpoint, as nginx's default
    /// `proxy_next_upstream error timeout` does, if the method is idempotent (running it twice
    /// is harmless, RFC 9110 §9.2.2), the whole request is still held (no body, or one of at
    /// most `replayLimit`, read to its end), and `retries` remain. The failed attempt was
    /// already counted (metric and health).
    private func retryElsewhere(after failure: ProxyFailure) -> Bool {
        guard self.idempotent, self.requestSent, self.replayable, self.retriesLeft > 0,
            let index = self.endpointIndex
        else { return false }
        self.retriesLeft -= 1
        self.failedEndpoints.append(index)
        self.lastFailure = failure
        self.state = .connecting
        self.attempt()
        return true
    }

    private func fail(_ failure: ProxyFailure) {
        self.state = .finished
        guard let client = self.client else { return }
        if self.request.responseStarted {
            client.abort()
        } else {
            client.proxyFailed(failure)
        }
    }

    private func finishEndpoint() {
        if self.holdsEndpoint, let index = self.endpointIndex {
            self.holdsEndpoint = false
            self.pool.endpoints[index].inFlight -= 1
        }
    }

    private func count(_ kind: String) {
        self.metrics.upstreamError(upstream: self.pool.configuration.name, kind: kind)
    }
}

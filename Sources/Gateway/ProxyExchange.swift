import NIOCore
import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#endif

/// What a `ProxyExchange` asks of the client connection it serves. On the event loop.
protocol ProxyClient: AnyObject {
    func proxyResponseHead(_ head: HTTPResponseHead)
    func proxyResponseBody(_ body: ByteBuffer)
    func proxyResponseEnd(_ trailers: HTTPHeaders?)
    func proxyFlush()
    /// No response byte reached the client yet: answer with this error instead.
    /// After the head went out the client connection is closed instead (`proxyAborted`).
    func proxyFailed(_ failure: ProxyFailure)
    /// The response had started when the upstream failed: all the client can be told is a
    /// closed connection.
    func proxyAborted()
    /// Hold back (or resume) reading the request body: the upstream is not taking it.
    func setClientReadsPaused(_ paused: Bool)
    /// The upstream answered 101: the exchange is over and the connection is the client's to
    /// splice. Called after `proxyResponseHead` with the 101.
    func proxyUpgraded(_ connection: UpstreamConnection)
    var clientIsWritable: Bool { get }
}

/// Why a request could not be proxied, as the client sees it: it names the upstream, never an
/// endpoint's address (the access log has that).
struct ProxyFailure: Error {
    enum Kind {
        /// 502: refused, reset, or an invalid response.
        case badGateway
        /// 503: every endpoint is ejected.
        case unavailable
        /// 504: `response_timeout` passed without a response (or, after the response started,
        /// `read_timeout` between two reads of its body: then the client connection closes).
        case timeout
    }

    var kind: Kind
    var reason: String

    var status: HTTPResponseStatus {
        switch self.kind {
        case .badGateway: return .badGateway
        case .unavailable: return .serviceUnavailable
        case .timeout: return .gatewayTimeout
        }
    }
}

/// One request proxied to one upstream: choosing the endpoint, retries, streaming the body
/// both ways with backpressure, and giving the connection back. Lives on the client
/// connection's event loop; its upstream connections live there too.
///
/// Retries (`UpstreamConfig.retries`) happen only for idempotent methods, on another endpoint:
/// after a connect failure, and after a reset, close or `response_timeout` before any byte of
/// the response when the whole request is still held (`retryElsewhere`). One more case is
/// retried without counting: a *reused* keep-alive connection that fails before any response
/// byte, for an idempotent request whose body is still all in memory. That is the upstream
/// closing an idle connection just as we picked it (the race every HTTP client pool has; Go's
/// net/http and Envoy retry it the same way), not a failure of the endpoint.
final class ProxyExchange: UpstreamConnectionDelegate {
    private enum State {
        /// Waiting for a connection; request parts wait in `pending`.
        case connecting
        /// Request head written; the body may still be streaming.
        case sending(UpstreamConnection)
        /// The response head arrived.
        case responding(UpstreamConnection)
        /// A 101 arrived; the tunnel starts once its (empty) message has ended.
        case upgrading(UpstreamConnection)
        /// Over: the connection went back to the pool, or failed, or the client left.
        case finished
    }

    let pool: UpstreamPool
    private weak var client: (any ProxyClient)?
    private var head: HTTPRequestHead
    private let idempotent: Bool
    private var state: State = .connecting
    /// Request parts not written yet (before the connection is there). Kept whole while a
    /// retry may need them.
    private var pending: [HTTPClientRequestPart] = []
    /// Everything of the request sent on the current connection, while it is small enough to
    /// keep for a resend (`replayLimit`); `nil` once it is not.
    private var replay: [HTTPClientRequestPart]?
    private var replayBytes = 0
    /// A request body up to this size is kept until the response starts, so that a stale
    /// connection can be retried; larger bodies stream through without a copy. 64 KiB covers
    /// typical API payloads at a bounded cost per request in flight.
    static let replayLimit = 64 * 1024
    private var requestEnded = false
    private var retriesLeft: Int
    private var failedEndpoints: [Int] = []
    private var lastFailure: ProxyFailure?
    private var endpointIndex: Int?
    private var connectionReused = false
    /// The connection whose deadline (`response_timeout`, then `read_timeout`) this exchange
    /// armed.
    private var timedConnection: UpstreamConnection?
    /// Reading the response body is held back: the client is not taking it. The read timeout
    /// stops meanwhile (a slow client is not a stalled upstream).
    private var upstreamReadsPaused = false
    private var responseStarted = false
    /// When the request head went upstream, for the latency histogram.
    private(set) var sentAt: NIODeadline?
    private(set) var firstByteAt: NIODeadline?

    /// Only a request that asked to upgrade may become a tunnel; a 101 to anything else is a
    /// broken upstream (502).
    private let allowsUpgrade: Bool

    /// Every failed attempt is counted (`gatewayd_upstream_errors_total`), also the ones a
    /// retry recovered from: a dead endpoint shows in the metrics before clients notice it.
    private let metrics: GatewayMetrics

    /// The request came without a Host (HTTP/1.0): each attempt sends the upstream's `host`,
    /// or its endpoint's `host:port`, so that no upstream gets a request without one.
    private let setsHost: Bool

    init(
        pool: UpstreamPool, client: any ProxyClient, head: HTTPRequestHead, retries: Int, allowsUpgrade: Bool,
        metrics: GatewayMetrics, setsHost: Bool = false
    ) {
        self.metrics = metrics
        self.setsHost = setsHost
        self.allowsUpgrade = allowsUpgrade
        self.pool = pool
        self.client = client
        self.head = head
        self.idempotent = Self.isIdempotent(head.method)
        self.retriesLeft = self.idempotent ? retries : 0
    }

    /// The endpoint of the current (last) attempt, for the access log.
    var endpointText: String? {
        self.endpointIndex.map { self.pool.endpoints[$0].endpoint.text }
    }

    // MARK: From the client

    func start() {
        self.pending = [.head(self.head)]
        self.attempt()
    }

    func sendBody(_ body: ByteBuffer) {
        self.send(.body(.byteBuffer(body)))
    }

    func sendEnd(_ trailers: HTTPHeaders?) {
        self.requestEnded = true
        self.send(.end(trailers))
    }

    /// The client went away or broke the request: the upstream connection cannot be reused.
    func cancel() {
        self.cancelTimer()
        switch self.state {
        case .sending(let connection), .responding(let connection), .upgrading(let connection):
            self.state = .finished
            self.finishEndpoint()
            connection.delegate = nil
            connection.channel.close(promise: nil)
        case .connecting:
            self.state = .finished
        case .finished:
            ()
        }
    }

    /// The client can take response bytes again (or not).
    func clientWritabilityChanged(isWritable: Bool) {
        if case .responding(let connection) = self.state {
            self.setUpstreamReadsPaused(!isWritable, connection)
        }
    }

    private func setUpstreamReadsPaused(_ paused: Bool, _ connection: UpstreamConnection) {
        self.upstreamReadsPaused = paused
        connection.setReadsPaused(paused)
        if paused {
            self.cancelTimer()
        } else {
            self.armReadTimer(connection)
        }
    }

    private func send(_ part: HTTPClientRequestPart) {
        switch self.state {
        case .connecting:
            self.pending.append(part)
            if case .body = part {
                // A body part arrived before the connection: it is held here, so stop reading
                // until the connection takes it.
                self.client?.setClientReadsPaused(true)
            }
        case .sending(let connection):
            self.remember(part)
            self.write(part, to: connection)
            if case .end = part {
                // `response_timeout` counts from the whole request being sent: an upload
                // slower than the timeout is not the upstream's fault.
                self.armResponseTimer(connection)
            }
        case .responding(let connection):
            // The upstream answered before the request was complete; keep streaming it.
            self.write(part, to: connection)
        case .upgrading, .finished:
            ()
        }
    }

    private func write(_ part: HTTPClientRequestPart, to connection: UpstreamConnection) {
        let channel = connection.channel
        channel.writeAndFlush(part, promise: nil)
        if !channel.isWritable {
            self.client?.setClientReadsPaused(true)
        }
    }

    private func remember(_ part: HTTPClientRequestPart) {
        guard self.replay != nil else { return }
        if case .body(.byteBuffer(let buffer)) = part {
            self.replayBytes += buffer.readableBytes
            if self.replayBytes > Self.replayLimit {
                self.replay = nil
                return
            }
        }
        self.replay?.append(part)
    }

    // MARK: Attempts

    private func attempt() {
        guard let index = self.pool.chooseEndpoint(excluding: self.failedEndpoints) else {
            // Retries left but no other endpoint: the client hears what went wrong last.
            if self.lastFailure == nil { self.count("unavailable") }
            self.fail(
                self.lastFailure
                    ?? ProxyFailure(
                        kind: .unavailable,
                        reason: "every endpoint of upstream \(self.pool.configuration.name) is ejected"))
            return
        }
        self.endpointIndex = index
        self.connect(to: index, fresh: false)
    }

    /// One connection attempt to `index`; `fresh` skips the idle connections (a stale one just
    /// failed). A connect failure counts against the endpoint and moves on to a retry if one
    /// is left.
    private func connect(to index: Int, fresh: Bool) {
        self.pool.endpoints[index].inFlight += 1
        self.pool.connection(to: index, fresh: fresh) { [self] result in
            guard case .connecting = self.state else {
                // The client left meanwhile.
                self.pool.endpoints[index].inFlight -= 1
                if case .success(let (connection, _)) = result {
                    self.pool.release(connection, reusable: true)
                }
                return
            }
            switch result {
            case .success(let (connection, reused)):
                self.connected(connection, reused: reused)
            case .failure(let error):
                self.pool.endpoints[index].inFlight -= 1
                self.pool.recordFailure(index)
                self.count("connect")
                self.failedEndpoints.append(index)
                let failure = ProxyFailure(
                    kind: .badGateway,
                    reason: "connect to upstream \(self.pool.configuration.name): \(Self.describe(error))")
                self.lastFailure = failure
                if self.retriesLeft > 0 {
                    self.retriesLeft -= 1
                    self.attempt()
                } else {
                    self.fail(failure)
                }
            }
        }
    }

    private func connected(_ connection: UpstreamConnection, reused: Bool) {
        self.connectionReused = reused
        connection.delegate = self
        connection.responseBytesReceived = false
        self.state = .sending(connection)
        var parts = self.pending
        self.pending = []
        if self.setsHost, case .head(var head) = parts.first {
            let host = self.pool.configuration.host ?? self.pool.endpoints[connection.endpointIndex].endpoint.text
            head.headers.replaceOrAdd(name: "host", value: host)
            parts[0] = .head(head)
        }
        self.replay = []
        self.replayBytes = 0
        self.sentAt = .now()
        for part in parts {
            self.remember(part)
            connection.channel.write(part, promise: nil)
        }
        connection.channel.flush()
        self.client?.setClientReadsPaused(!connection.channel.isWritable)
        if self.requestEnded {
            self.armResponseTimer(connection)
        }
    }

    /// The deadline lives on the connection, whose one lazily moved timer serves every
    /// request it carries (no timer scheduled and cancelled per request).
    private func armResponseTimer(_ connection: UpstreamConnection) {
        self.timedConnection = connection
        connection.armDeadline(.now() + TimeAmount(self.pool.configuration.responseTimeout))
    }

    /// `read_timeout` from now: called at the head and after every read burst of the body.
    private func armReadTimer(_ connection: UpstreamConnection) {
        self.timedConnection = connection
        connection.armDeadline(.now() + TimeAmount(self.pool.configuration.readTimeout))
    }

    private func cancelTimer() {
        self.timedConnection?.clearDeadline()
        self.timedConnection = nil
    }

    func upstreamTimedOut() {
        if case .responding(let connection) = self.state {
            self.readTimedOut(connection)
            return
        }
        guard case .sending(let connection) = self.state else { return }
        self.dropTimedOut(connection, kind: "timeout")
        let failure = ProxyFailure(
            kind: .timeout,
            reason:
                "no response from upstream \(self.pool.configuration.name) within \(self.pool.configuration.responseTimeout)"
        )
        if !connection.responseBytesReceived, self.retryElsewhere(after: failure) {
            return
        }
        self.fail(failure)
    }

    /// `read_timeout` passed in the middle of the body: the response started, so the client
    /// connection is closed (`fail` → `proxyAborted`); the upstream connection is not reused.
    /// A stall counts against the endpoint's health like a reset in the middle of a body.
    private func readTimedOut(_ connection: UpstreamConnection) {
        self.dropTimedOut(connection, kind: "read_timeout")
        self.fail(
            ProxyFailure(
                kind: .timeout,
                reason:
                    "upstream \(self.pool.configuration.name) sent nothing of the response body for \(self.pool.configuration.readTimeout)"
            ))
    }

    /// A timeout is the endpoint's failure (metric and health); its connection is closed.
    private func dropTimedOut(_ connection: UpstreamConnection, kind: String) {
        self.timedConnection = nil
        self.state = .finished
        self.finishEndpoint()
        if let index = self.endpointIndex { self.pool.recordFailure(index) }
        self.count(kind)
        connection.delegate = nil
        connection.channel.close(promise: nil)
    }

    private func finishEndpoint() {
        if let index = self.endpointIndex {
            self.pool.endpoints[index].inFlight -= 1
        }
    }

    private func fail(_ failure: ProxyFailure) {
        self.state = .finished
        self.cancelTimer()
        if self.responseStarted {
            self.client?.proxyAborted()
        } else {
            self.client?.proxyFailed(failure)
        }
    }

    // MARK: UpstreamConnectionDelegate

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        guard case .sending(let connection) = self.state else { return }
        self.cancelTimer()
        if head.status == .switchingProtocols, !self.allowsUpgrade {
            self.state = .finished
            self.finishEndpoint()
            connection.delegate = nil
            connection.channel.close(promise: nil)
            self.count("protocol")
            self.fail(
                ProxyFailure(
                    kind: .badGateway, reason: "upstream \(self.pool.configuration.name) switched protocols unasked"))
            return
        }
        self.firstByteAt = .now()
        self.replay = nil
        self.closeRequested = !head.isKeepAlive
        if let index = self.endpointIndex { self.pool.recordSuccess(index) }
        self.responseStarted = true
        self.client?.proxyResponseHead(head)
        if head.status == .switchingProtocols {
            self.state = .upgrading(connection)
            return
        }
        self.state = .responding(connection)
        if let client = self.client, !client.clientIsWritable {
            self.setUpstreamReadsPaused(true, connection)
        } else {
            self.armReadTimer(connection)
        }
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        guard case .responding(let connection) = self.state else { return }
        self.client?.proxyResponseBody(body)
        if !self.upstreamReadsPaused, let client = self.client, !client.clientIsWritable {
            self.setUpstreamReadsPaused(true, connection)
        }
    }

    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {
        if case .upgrading(let connection) = self.state {
            self.state = .finished
            self.finishEndpoint()
            connection.delegate = nil
            // Not from inside the decoder's callback: the handlers come out of the pipeline
            // once it has returned (what it still holds goes to the tunnel then).
            connection.channel.eventLoop.assumeIsolated().execute { [client = self.client] in
                if let client {
                    client.proxyUpgraded(connection)
                } else {
                    connection.channel.close(promise: nil)
                }
            }
            return
        }
        guard case .responding(let connection) = self.state else { return }
        self.state = .finished
        self.finishEndpoint()
        // The pool clears the deadline; the connection may serve another exchange next.
        self.timedConnection = nil
        // A connection is reusable only if both messages ended cleanly and the upstream did
        // not ask to close.
        let reusable = self.requestEnded && !self.closeRequested
        self.pool.release(connection, reusable: reusable)
        self.client?.proxyResponseEnd(trailers)
    }

    /// Set from the response head: `Connection: close` or HTTP/1.0 without keep-alive.
    private var closeRequested = false

    func upstreamReadComplete() {
        if case .responding(let connection) = self.state, !self.upstreamReadsPaused {
            // Once per read burst, not per body part: one clock read moves the deadline.
            self.armReadTimer(connection)
        }
        self.client?.proxyFlush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if case .sending = self.state {
            self.client?.setClientReadsPaused(!isWritable)
        } else if case .responding = self.state {
            self.client?.setClientReadsPaused(!isWritable)
        }
    }

    func upstreamFailed(_ error: UpstreamConnectionError) {
        self.cancelTimer()
        switch self.state {
        case .sending(let connection):
            self.finishEndpoint()
            connection.channel.close(promise: nil)
            let answered = connection.responseBytesReceived
            if !answered, self.connectionReused, self.idempotent, let replay = self.replay {
                // A stale keep-alive connection: resend on a fresh one (see the type's comment).
                self.count("stale")
                self.state = .connecting
                self.pending = replay
                self.attemptFresh()
                return
            }
            if let index = self.endpointIndex { self.pool.recordFailure(index) }
            self.count(error.metricKind)
            let failure = ProxyFailure(kind: .badGateway, reason: "upstream \(self.pool.configuration.name): \(error)")
            if !answered, self.retryElsewhere(after: failure) {
                return
            }
            self.fail(failure)
        case .responding(let connection), .upgrading(let connection):
            self.finishEndpoint()
            connection.channel.close(promise: nil)
            if let index = self.endpointIndex { self.pool.recordFailure(index) }
            self.count(error.metricKind)
            self.fail(ProxyFailure(kind: .badGateway, reason: "upstream \(self.pool.configuration.name): \(error)"))
        case .connecting, .finished:
            ()
        }
    }

    /// The endpoint had the request and failed (reset, closed, `response_timeout`) before any
    /// byte of a response: retry on another endpoint, as nginx's default
    /// `proxy_next_upstream error timeout` does, if the method is idempotent (running it
    /// twice is harmless, RFC 9110 §9.2.2), the whole request is still held (`replay`: no body
    /// or one of at most `replayLimit`, read to its end; a body streamed past that is gone),
    /// and `retries` remain. The failed attempt was already counted (metric and health).
    private func retryElsewhere(after failure: ProxyFailure) -> Bool {
        guard self.idempotent, self.requestEnded, let replay = self.replay, self.retriesLeft > 0,
            let index = self.endpointIndex
        else { return false }
        self.retriesLeft -= 1
        self.failedEndpoints.append(index)
        self.lastFailure = failure
        self.state = .connecting
        self.pending = replay
        self.attempt()
        return true
    }

    /// A retry of a stale connection: same endpoint, a new connection (never an idle one).
    private func attemptFresh() {
        guard let index = self.endpointIndex else {
            self.attempt()
            return
        }
        self.connect(to: index, fresh: true)
    }

    // MARK: Helpers

    private func count(_ kind: String) {
        self.metrics.upstreamError(upstream: self.pool.configuration.name, kind: kind)
    }

    /// RFC 9110 §9.2.2.
    static func isIdempotent(_ method: HTTPMethod) -> Bool {
        switch method {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        if case ChannelError.connectTimeout = error {
            return "connect timed out"
        }
        return "\(error)"
    }
}

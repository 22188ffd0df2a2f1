import GatewayConfig
import GatewayCore
import GatewayHTTP
import NIOCore
import NIOHTTP1

/// The last handler of a client connection: it routes each request, checks auth, rate limit
/// and size limits, and answers it, from a precomputed response or by proxying it upstream.
///
/// Bodies stream in both directions and are never buffered whole: this handler holds back the
/// client's reads (it sees every `read` first, being last in the pipeline) while the upstream
/// is not taking the request body, and the upstream connection holds back its reads while the
/// client is not taking the response. Responses are flushed at the end of a read burst, so
/// pipelined requests answered together go out in one `writev`.
final class RequestHandler: ChannelDuplexHandler, RemovableChannelHandler, ProxyClient {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private static let continueHead = HTTPResponseHead(version: .http1_1, status: .continue)

    private enum State {
        case idle
        /// Answered from memory when the request ends; its body is discarded meanwhile.
        case local(LocalResponse)
        case proxying(ProxyExchange)
        /// The response went out before the request ended (413, an early upstream answer):
        /// the rest of the request is discarded and the connection closes.
        case answered
        /// A 101 went out: the bytes belong to the tunnel now.
        case tunnel
    }

    private enum LocalResponse {
        case prepared(PreparedResponse)
        case error(HTTPResponseStatus, String, extraHeaders: [(String, String)])
        case dynamic(HTTPResponseStatus, contentType: String, body: String)
    }

    private let connection: ConnectionHandler
    /// The connection's peer (the socket's, or the PROXY protocol header's).
    private let peer: ConnectionPeer
    /// The listener's `trusted_proxies`.
    private let trusted: TrustedProxies
    private let router: ListenerRouter
    private let services: GatewayServices
    private let upstreams: LoopUpstreams
    private weak var context: ChannelHandlerContext?

    private var state: State = .idle
    private var record: RequestRecord?
    private var keepAlive = true
    private var isHTTP10 = false
    private var isHeadRequest = false
    private var isUpgradeRequest = false
    private var requestHasBody = false
    private var requestEnded = false
    private var bodyBytes: Int64 = 0
    private var needsFlush = false
    private var handling: RouteHandling = .notFound
    /// The proxied response: set from its head.
    private var responseClosing = false
    private var responseChunked = false
    private var responseStarted = false
    private var readsPaused = false
    private var readPending = false
    /// The client's half-close has reached this handler. Not `ConnectionHandler.inputClosed`,
    /// which is set when the socket reads end of file: the pipelining handler holds the
    /// half-close back behind requests the client sent before it, and those are still to be
    /// answered.
    private var clientFinishedSending = false
    /// The request's client: the peer, or from a trusted peer what `X-Forwarded-For` says.
    private var clientAddress = "-"
    /// The peer is one of `trusted`: its `X-Forwarded-*` fields are kept.
    private var peerTrusted = false
    /// The canonical path and the query of the current request (`RequestTarget`).
    private var canonicalPath = "/"
    private var query: Substring?
    /// An exchange made for the request head, started once the decoder has moved past the head
    /// (a body part, the end, or the end of the read burst): an error llhttp finds in the head's
    /// framing after handing it over (`Transfer-Encoding: gzip`, `Content-Length` with
    /// `Transfer-Encoding`) must refuse the request before any byte of it goes upstream.
    private var unstartedExchange: ProxyExchange?

    init(
        connection: ConnectionHandler, peer: ConnectionPeer, trusted: TrustedProxies, router: ListenerRouter,
        services: GatewayServices, upstreams: LoopUpstreams
    ) {
        self.connection = connection
        self.peer = peer
        self.trusted = trusted
        self.router = router
        self.services = services
        self.upstreams = upstreams
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            guard self.connection.acceptsRequests else {
                // Pipelined after the response that closes this connection: the client
                // retries it on a new connection (it was never answered).
                self.state = .answered
                return
            }
            self.begin(head, context: context)
        case .body(let body):
            if case .answered = self.state {
                return  // Answered already; the rest of the request is discarded.
            }
            self.bodyBytes += Int64(body.readableBytes)
            let limit = self.services.limits.maxBodyBytes
            if limit > 0, self.bodyBytes > limit {
                self.bodyTooLarge(context: context)
                return
            }
            self.startExchangeIfWaiting()
            if case .proxying(let exchange) = self.state {
                exchange.sendBody(body)
            }
        case .end(let trailers):
            self.requestEnded = true
            self.connection.requestBodyEnded()
            self.startExchangeIfWaiting()
            switch self.state {
            case .local(let response):
                self.state = .idle
                self.writeLocal(response, context: context)
            case .proxying(let exchange):
                exchange.sendEnd(trailers)
            case .answered:
                self.state = .idle
                self.connection.closePolitely()
            case .idle, .tunnel:
                ()
            }
        }
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        self.keepAlive = head.isKeepAlive
        self.isHTTP10 = head.version == .http1_0
        self.isHeadRequest = head.method == .HEAD
        self.requestEnded = false
        self.bodyBytes = 0
        self.responseStarted = false
        self.responseClosing = false
        self.responseChunked = false
        self.setClientReadsPaused(false)

        self.requestHasBody =
            head.headers.contains(name: "transfer-encoding")
            || (head.headers.first(name: "content-length").flatMap(Int64.init) ?? 0) > 0
        self.connection.requestStarted(readingBody: self.requestHasBody)

        // Who the client is: the peer, unless a trusted proxy says otherwise.
        self.peerTrusted = self.trusted.contains(self.peer.address)
        self.clientAddress =
            self.peerTrusted
            ? self.trusted.client(peer: self.peer, forwardedFor: head.headers["x-forwarded-for"]).text
            : self.peer.text

        // One canonical path for routing and for the upstream (RequestTarget).
        var targetError: RequestTargetError?
        var authority: Substring?
        var form = RequestTarget.Form.origin
        do {
            let target = try RequestTarget.parse(head.uri, rules: self.services.paths.rules)
            self.canonicalPath = target.path
            self.query = target.query
            authority = target.authority
            form = target.form
        } catch {
            targetError = error
            self.canonicalPath = "/"
            self.query = nil
        }
        let handling: RouteHandling
        if targetError != nil {
            handling = RouteHandling.notFound
        } else {
            // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host.
            let host =
                self.router.needsHost ? (authority.map(String.init) ?? head.headers.first(name: "host")) : nil
            handling = self.router.route(method: head.method, path: self.canonicalPath.utf8, host: host)
        }
        self.handling = handling
        var requestID = head.headers.first(name: RequestID.header) ?? ""
        if !RequestID.isAcceptable(requestID) {
            requestID = RequestID.make()
        }
        self.record = RequestRecord(
            start: .now(), method: head.method, uri: head.uri, version: head.version, route: handling.name,
            requestID: requestID, client: self.clientAddress,
            userAgent: self.services.accessLog == nil ? nil : head.headers.first(name: "user-agent"),
            referer: self.services.accessLog == nil ? nil : head.headers.first(name: "referer"))
        self.record?.routeID = ObjectIdentifier(handling)
        // As llhttp decides it: after such a request it stops parsing, so unless it becomes a
        // tunnel the connection must close after the response.
        self.isUpgradeRequest =
            head.method == .CONNECT
            || (head.headers.contains(name: "upgrade")
                && head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" })

        if let targetError {
            self.reject(
                .error(.badRequest, "invalid request target: \(targetError)", extraHeaders: []), closing: true,
                context: context)
            return
        }
        if form == .asterisk, head.method != .OPTIONS {
            self.reject(
                .error(.badRequest, "invalid request target: '*' is for OPTIONS only", extraHeaders: []),
                closing: true, context: context)
            return
        }
        if head.method == .CONNECT {
            // A forward-proxy tunnel to anywhere: not what a reverse proxy offers.
            // llhttp stops parsing after a CONNECT: this connection can serve nothing more.
            self.reject(
                .error(.methodNotAllowed, "CONNECT is not supported", extraHeaders: []), closing: true, context: context
            )
            return
        }
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (two could route one way here and be
        // read another way upstream).
        let hosts = head.headers[canonicalForm: "host"].count
        if hosts > 1 || (hosts == 0 && head.version == .http1_1) {
            self.reject(
                .error(.badRequest, "a request needs exactly one Host header", extraHeaders: []), closing: true,
                context: context)
            return
        }
        // A credential twice: the check here reads the first, an upstream may read the last.
        for name in self.services.credentialHeaders where head.headers[name].count > 1 {
            self.reject(
                .error(.badRequest, "more than one \(name) header", extraHeaders: []), closing: true,
                context: context)
            return
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (a 1.0
        // hop may read its body by Content-Length or to the close): refused and closed, as
        // nginx does since 1.21.1.
        if self.isHTTP10, head.headers.contains(name: "transfer-encoding") {
            self.reject(
                .error(.badRequest, "Transfer-Encoding in an HTTP/1.0 request", extraHeaders: []), closing: true,
                context: context)
            return
        }

        // Cheapest checks first; none of them reads the body. A per-client-IP limit runs
        // before authentication, so that guessing keys is limited too.
        if let limit = handling.rateLimit, limit.per == .clientIP,
            !self.admit(route: handling.name, limit: limit, key: self.clientAddress, context: context)
        {
            return
        }
        var rateKey = self.clientAddress
        if let auth = handling.auth {
            switch auth.check(head.headers) {
            case .allowed(let key):
                rateKey = key
            case .missing, .invalid:
                var extra: [(String, String)] = []
                if case .bearer = auth.scheme {
                    extra.append(("www-authenticate", "Bearer"))
                }
                let message = "missing or invalid API key"
                self.reject(.error(.unauthorized, message, extraHeaders: extra), context: context)
                return
            }
        }
        if let limit = handling.rateLimit, limit.per == .apiKey,
            !self.admit(route: handling.name, limit: limit, key: rateKey, context: context)
        {
            return
        }
        let maxBody = self.services.limits.maxBodyBytes
        if maxBody > 0, let declared = head.headers.first(name: "content-length").flatMap(Int64.init),
            declared > maxBody
        {
            self.bodyTooLarge(context: context)
            return
        }
        if head.version == .http1_1, head.method != .GET, head.method != .HEAD, Self.expectsContinue(head.headers) {
            // We take the body (nginx does the same); the upstream never sees the Expect.
            context.writeAndFlush(Self.wrapOutboundOut(.head(Self.continueHead)), promise: nil)
        }

        switch handling.action {
        case .respond(let response):
            self.state = .local(.prepared(response))
        case .admin(let endpoint):
            self.state = .local(self.adminResponse(endpoint))
        case .notFound:
            self.state = .local(.error(.notFound, "no route", extraHeaders: []))
        case .proxy(let target):
            guard let pool = self.upstreams.pool(named: target.upstream) else {
                self.state = .local(
                    .error(.badGateway, "upstream \(target.upstream) is not available", extraHeaders: []))
                return
            }
            let upstreamHead = self.upstreamRequestHead(
                head, target: target, authority: authority, requestID: requestID)
            self.record?.upstreamName = target.upstream
            let exchange = ProxyExchange(
                pool: pool, client: self, head: upstreamHead, retries: pool.configuration.retries,
                allowsUpgrade: self.isUpgradeRequest, metrics: self.services.metrics,
                setsHost: !upstreamHead.headers.contains(name: "host"))
            self.state = .proxying(exchange)
            self.unstartedExchange = exchange
        }
    }

    /// See `unstartedExchange`.
    private func startExchangeIfWaiting() {
        guard let exchange = self.unstartedExchange else { return }
        self.unstartedExchange = nil
        if case .proxying(let current) = self.state, current === exchange {
            exchange.start()
        }
    }

    /// A request refused before its body is read: with no body the answer waits for the
    /// request's end (the connection stays open); with one it goes out now and the connection
    /// closes, so that a client sending `Expect: 100-continue` or a large body learns at once
    /// and the body is discarded by the polite close rather than read.
    /// Takes a token for `key` from the route's bucket; false after answering 429 with
    /// `retry-after` when there is none. Without a shared limiter (no segment), admits.
    private func admit(
        route: String, limit: RateLimitConfig, key: String, context: ChannelHandlerContext
    ) -> Bool {
        guard let limiter = self.services.rateLimiter,
            case .denied(let retryAfter) = limiter.admit(route: route, key: key, rate: limit.rate, burst: limit.burst)
        else { return true }
        self.reject(
            .error(.tooManyRequests, "rate limit exceeded", extraHeaders: [("retry-after", String(retryAfter))]),
            context: context)
        return false
    }

    private func reject(_ response: LocalResponse, closing: Bool = false, context: ChannelHandlerContext) {
        if closing {
            self.keepAlive = false
        }
        guard self.requestHasBody else {
            self.state = .local(response)
            return
        }
        self.state = .answered
        self.keepAlive = false
        self.writeLocal(response, context: context)
    }

    private func adminResponse(_ endpoint: AdminEndpoint) -> LocalResponse {
        switch endpoint {
        case .health:
            return .dynamic(.ok, contentType: "application/json", body: #"{"status":"alive"}"#)
        case .ready:
            return self.services.ready.load(ordering: .relaxed)
                ? .dynamic(.ok, contentType: "application/json", body: #"{"status":"ready"}"#)
                : .dynamic(.serviceUnavailable, contentType: "application/json", body: #"{"status":"draining"}"#)
        case .metrics:
            // The Prometheus text exposition format, version 0.0.4.
            return .dynamic(
                .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                body: self.services.metricsExposition?() ?? "")
        }
    }

    private func upstreamRequestHead(
        _ head: HTTPRequestHead, target: ProxyTarget, authority: Substring?, requestID: String
    ) -> HTTPRequestHead {
        var headers = head.headers
        // Framing as llhttp read it: the body is sent upstream framed the same way, and only
        // that way (the encoder adds no framing of its own, so nothing can smuggle a second
        // request behind a body that goes out unframed).
        let chunked = head.headers[canonicalForm: "transfer-encoding"].last?.lowercased() == "chunked"
        let contentLength = chunked ? nil : head.headers.first(name: "content-length")
        let upgrade = ProxyHeaders.removeHopByHop(&headers)
        headers.remove(name: "expect")
        if let authority {
            // Routing used the target's authority (RFC 9112 §3.2.2): so must the upstream.
            headers.replaceOrAdd(name: "host", value: String(authority))
        }
        // RFC 7239's predecessors, as nginx and Envoy send them; set before the route's rules,
        // which may override them. From a trusted proxy the chain is kept and its address
        // added; from anyone else what the client wrote is dropped, so an upstream that reads
        // the leftmost address never reads one the client made up.
        let forwardedFor = self.peerTrusted ? headers["x-forwarded-for"].joined(separator: ", ") : ""
        headers.replaceOrAdd(
            name: "x-forwarded-for",
            value: forwardedFor.isEmpty ? self.peer.text : forwardedFor + ", " + self.peer.text)
        let forwardedProto = self.peerTrusted ? headers.first(name: "x-forwarded-proto") : nil
        headers.replaceOrAdd(name: "x-forwarded-proto", value: forwardedProto ?? "http")
        if let forwardedHost = self.peerTrusted ? headers.first(name: "x-forwarded-host") : nil {
            headers.replaceOrAdd(name: "x-forwarded-host", value: forwardedHost)
        } else if let host = headers.first(name: "host") {
            headers.replaceOrAdd(name: "x-forwarded-host", value: host)
        } else {
            headers.remove(name: "x-forwarded-host")
        }
        let via = head.version == .http1_0 ? "1.0 gatewayd" : "1.1 gatewayd"
        let existingVia = headers[canonicalForm: "via"].joined(separator: ", ")
        headers.replaceOrAdd(name: "via", value: existingVia.isEmpty ? via : existingVia + ", " + via)
        ProxyHeaders.apply(self.handling.requestHeaders, to: &headers)
        headers.remove(name: "content-length")
        headers.remove(name: "transfer-encoding")
        if chunked {
            headers.add(name: "transfer-encoding", value: "chunked")
        } else if let contentLength {
            headers.add(name: "content-length", value: contentLength)
        }
        if let upgrade {
            headers.add(name: "connection", value: "upgrade")
            headers.add(name: "upgrade", value: upgrade)
        }
        headers.replaceOrAdd(name: RequestID.header, value: requestID)
        // Always HTTP/1.1 upstream: keep-alive and chunked bodies are ours to use. The path is
        // the canonical one that routing matched, never the bytes as sent.
        return HTTPRequestHead(
            version: .http1_1, method: head.method,
            uri: upstreamTarget(
                path: self.canonicalPath, query: self.query, stripPrefix: target.stripPrefix,
                caseSensitive: self.services.paths.caseSensitive),
            headers: headers)
    }

    private func bodyTooLarge(context: ChannelHandlerContext) {
        self.answerBeforeBodyEnd(
            .payloadTooLarge, "request body larger than \(self.services.limits.maxBodyBytes) bytes", context: context)
    }

    /// An error decided while the body arrives (413, 408): answered now, not after reading a
    /// body we refuse; the polite close discards what the client still sends. A proxied
    /// request's exchange is cancelled (half a request went upstream: that connection cannot
    /// carry another); if its response had started, closing is all that is left.
    private func answerBeforeBodyEnd(_ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext) {
        if case .proxying(let exchange) = self.state {
            exchange.cancel()
        }
        if self.responseStarted {
            self.abort(context: context)
            return
        }
        self.state = .answered
        self.keepAlive = false
        self.writeLocal(.error(status, message, extraHeaders: []), context: context)
    }

    /// `limits.body_timeout` passed between two reads of the request body: 408 if nothing of
    /// the response went out yet, else all that is left is closing the connection.
    private func bodyTimedOut(context: ChannelHandlerContext) {
        guard !self.requestEnded else { return }
        switch self.state {
        case .local, .proxying:
            ()
        case .idle, .answered, .tunnel:
            return
        }
        let timeout = DurationText.format(self.services.limits.bodyTimeout)
        self.answerBeforeBodyEnd(
            .requestTimeout, "request body timeout: no byte of the body for \(timeout)", context: context)
        // Outside of a read burst: nothing else will flush it.
        self.needsFlush = false
        context.flush()
    }

    // MARK: Local responses

    private func writeLocal(_ response: LocalResponse, context: ChannelHandlerContext) {
        let close =
            !self.keepAlive || self.connection.draining || self.clientFinishedSending || !self.requestEnded
            || self.isUpgradeRequest
        // State first: writing `.end` may synchronously deliver the next pipelined request.
        self.connection.responseWillComplete(closing: close)
        let head: HTTPResponseHead
        var body: ByteBuffer
        switch response {
        case .prepared(let prepared):
            if close {
                head = prepared.closeHead
            } else if self.isHTTP10 {
                head = prepared.keepAliveHead10
            } else {
                head = prepared.keepAliveHead
            }
            body = prepared.body
        case .error, .dynamic:
            let requestID = self.record?.requestID ?? RequestID.make()
            let status: HTTPResponseStatus
            let contentType: String
            var extraHeaders: [(String, String)] = []
            if case .error(let errorStatus, let message, let extra) = response {
                status = errorStatus
                contentType = "application/json"
                body = ByteBuffer(string: ErrorBody.make(message, requestID: requestID))
                extraHeaders = extra
            } else if case .dynamic(let dynamicStatus, let type, let text) = response {
                status = dynamicStatus
                contentType = type
                body = ByteBuffer(string: text)
            } else {
                preconditionFailure("unreachable")
            }
            var headers = HTTPHeaders()
            headers.reserveCapacity(6 + extraHeaders.count)
            headers.add(name: "server", value: "gatewayd")
            headers.add(name: "content-type", value: contentType)
            headers.add(name: "content-length", value: String(body.readableBytes))
            headers.add(name: RequestID.header, value: requestID)
            for (name, value) in extraHeaders {
                headers.add(name: name, value: value)
            }
            ProxyHeaders.apply(self.handling.responseHeaders, to: &headers)
            if close {
                headers.add(name: "connection", value: "close")
            } else if self.isHTTP10 {
                headers.add(name: "connection", value: "keep-alive")
            }
            head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
        }
        if self.isHeadRequest {
            body = ByteBuffer()
        }
        self.record?.status = Int(head.status.code)
        self.record?.bytesSent = body.readableBytes
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        self.finishResponse(close: close, trailers: nil, context: context)
    }

    private func finishResponse(close: Bool, trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        if let record = self.record {
            self.record = nil
            self.services.completed(record)
        }
        if close {
            self.connection.sealOutputAfterNextWrite()
            // With a promise the encoder always emits a (zero-length) write for `.end`: that
            // write is the one that seals the output.
            context.write(Self.wrapOutboundOut(.end(trailers)), promise: context.eventLoop.makePromise())
            self.connection.closePolitely()
        } else {
            self.needsFlush = true
            context.write(Self.wrapOutboundOut(.end(trailers)), promise: nil)
        }
    }

    // MARK: ProxyClient

    func proxyResponseHead(_ upstreamHead: HTTPResponseHead) {
        guard let context = self.context else { return }
        self.responseStarted = true
        var headers = upstreamHead.headers
        if headers.contains(name: "transfer-encoding") {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; the body is re-framed.
            headers.remove(name: "content-length")
        }
        ProxyHeaders.removeHopByHop(&headers)
        ProxyHeaders.apply(self.handling.responseHeaders, to: &headers)
        if let record = self.record {
            if !headers.contains(name: RequestID.header) {
                headers.add(name: RequestID.header, value: record.requestID)
            }
        }
        let status = upstreamHead.status
        if status == .switchingProtocols {
            headers.add(name: "connection", value: "upgrade")
            if let upgrade = upstreamHead.headers.first(name: "upgrade") {
                headers.add(name: "upgrade", value: upgrade)
            }
            self.record?.status = 101
            context.writeAndFlush(
                Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
                promise: nil)
            return
        }
        let bodyless = self.isHeadRequest || !status.mayHaveResponseBody
        var close =
            !self.keepAlive || self.connection.draining || self.clientFinishedSending || self.isUpgradeRequest
        if !bodyless, !headers.contains(name: "content-length") {
            if self.isHTTP10 {
                // No chunked coding for HTTP/1.0: the end of the body is the end of the connection.
                close = true
            } else {
                headers.add(name: "transfer-encoding", value: "chunked")
                self.responseChunked = true
            }
        }
        if !self.responseChunked {
            // Trailer fields travel only in a chunked body; announcing them otherwise is false.
            headers.remove(name: "trailer")
        }
        if close {
            headers.add(name: "connection", value: "close")
        } else if self.isHTTP10 {
            headers.add(name: "connection", value: "keep-alive")
        }
        self.responseClosing = close
        self.record?.status = Int(status.code)
        self.record?.upstream = self.currentExchange?.endpointText
        if let exchange = self.currentExchange, let sent = exchange.sentAt, let first = exchange.firstByteAt {
            self.record?.upstreamLatency = first - sent
        }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
            promise: nil)
        self.needsFlush = true
    }

    func proxyResponseBody(_ body: ByteBuffer) {
        guard let context = self.context, !self.isHeadRequest else { return }
        self.record?.bytesSent += body.readableBytes
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        self.needsFlush = true
    }

    func proxyResponseEnd(_ trailers: HTTPHeaders?) {
        guard let context = self.context else { return }
        let close = self.responseClosing || !self.requestEnded || self.clientFinishedSending
        self.state = self.requestEnded ? .idle : .answered
        // Complete: writing `.end` may deliver a parse error in what the client pipelined
        // behind this request, and that error must get its 400 after this response, not be
        // taken for a failure in the middle of it (which closes and loses the response).
        self.responseStarted = false
        self.setClientReadsPaused(false)
        self.connection.responseWillComplete(closing: close)
        self.needsFlush = false
        self.finishResponse(close: close, trailers: self.responseChunked ? trailers : nil, context: context)
        if !close {
            context.flush()
        }
    }

    func proxyFlush() {
        if self.needsFlush, let context = self.context {
            self.needsFlush = false
            context.flush()
        }
    }

    func proxyFailed(_ failure: ProxyFailure) {
        guard let context = self.context else { return }
        self.record?.upstream = self.currentExchange?.endpointText
        self.setClientReadsPaused(false)
        let response = LocalResponse.error(failure.status, failure.reason, extraHeaders: [])
        if !self.requestEnded, !self.requestHasBody {
            // Decided before the request's end was read (no endpoint to try): answer at its
            // end, keeping the connection.
            self.state = .local(response)
            return
        }
        self.state = self.requestEnded ? .idle : .answered
        self.writeLocal(response, context: context)
        // Outside of a read burst: nothing else will flush it.
        self.needsFlush = false
        context.flush()
    }

    func proxyAborted() {
        guard let context = self.context else { return }
        self.abort(context: context)
    }

    /// The response cannot be completed: the only honest signal left is a reset connection.
    private func abort(context: ChannelHandlerContext) {
        if case .proxying(let exchange) = self.state {
            exchange.cancel()
        }
        self.state = .answered
        if var record = self.record {
            self.record = nil
            record.aborted = true
            self.services.completed(record)
        }
        context.close(promise: nil)
    }

    func setClientReadsPaused(_ paused: Bool) {
        self.readsPaused = paused
        self.connection.setBodyReadsPaused(paused)
        if !paused, self.readPending, let context = self.context {
            self.readPending = false
            context.read()
        }
    }

    var clientIsWritable: Bool {
        self.context?.channel.isWritable ?? false
    }

    func proxyUpgraded(_ upstream: UpstreamConnection) {
        guard let context = self.context else {
            upstream.channel.close(promise: nil)
            return
        }
        self.state = .tunnel
        if let record = self.record {
            self.record = nil
            self.services.completed(record)
        }
        self.connection.tunnelStarted()
        let (clientSide, upstreamSide) = TunnelHandler.pair(
            idleTimeout: TimeAmount(self.services.limits.tunnelIdleTimeout))
        do {
            try upstream.convertToTunnel(upstreamSide)
            try self.convertToTunnel(clientSide, context: context)
        } catch {
            upstream.channel.close(promise: nil)
            context.close(promise: nil)
        }
    }

    /// Takes the HTTP handlers out of the client pipeline; bytes the decoder still held go to
    /// the tunnel, which is added first.
    private func convertToTunnel(_ tunnel: TunnelHandler, context: ChannelHandlerContext) throws {
        let operations = context.pipeline.syncOperations
        try operations.addHandler(tunnel)
        let pipelining = try operations.handler(type: HTTPServerPipelineHandler.self)
        operations.removeHandler(pipelining, promise: nil)
        let encoder = try operations.handler(type: HTTPResponseEncoder.self)
        operations.removeHandler(encoder, promise: nil)
        operations.removeHandler(context: context, promise: nil)
        let decoder = try operations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        // What the client sent right behind its upgrade request reaches the tunnel when the
        // decoder leaves, outside a read burst: flush it across then.
        let removed = context.eventLoop.makePromise(of: Void.self)
        removed.futureResult.assumeIsolated().whenComplete { _ in tunnel.flushPeer() }
        operations.removeHandler(decoder, promise: removed)
    }

    private var currentExchange: ProxyExchange? {
        if case .proxying(let exchange) = self.state { return exchange }
        return nil
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        if self.readsPaused {
            self.readPending = true
        } else {
            context.read()
        }
    }

    // MARK: Events

    func channelReadComplete(context: ChannelHandlerContext) {
        // The decoder has read everything of this burst without an error: the head it handed
        // over is whole and its framing valid.
        self.startExchangeIfWaiting()
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.currentExchange?.clientWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.unstartedExchange = nil
        if case .proxying(let exchange) = self.state {
            exchange.cancel()
            if var record = self.record {
                self.record = nil
                // nginx logs 499 for a client that left before its response.
                record.status = record.status == 0 ? 499 : record.status
                record.aborted = true
                self.services.completed(record)
            }
        }
        self.state = .idle
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RequestBodyTimeoutEvent {
            self.bodyTimedOut(context: context)
            return
        }
        if let channelEvent = event as? ChannelEvent, case .inputClosed = channelEvent {
            self.clientFinishedSending = true
            switch self.state {
            case .idle, .local, .answered:
                // The client is done sending; everything it sent has been answered. Close.
                self.needsFlush = false
                self.connection.closePolitely()
                return
            case .proxying, .tunnel:
                // Its response is still coming; `inputClosed` makes it the last.
                ()
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        // Malformed or smuggling-shaped input (both Content-Length and Transfer-Encoding, two
        // different Content-Lengths, a bad chunk size, obsolete line folding…): llhttp in
        // strict mode refuses them. Answer 400 (431 for headers past the limit) and close.
        // An exchange not started yet never will be: nothing of this request went upstream.
        self.unstartedExchange = nil
        if case .proxying(let exchange) = self.state {
            exchange.cancel()
        }
        if self.responseStarted {
            self.abort(context: context)
            return
        }
        if self.record == nil {
            // Not the request just served but one the parser could not read: nothing of the
            // last request applies to this answer (a HEAD's empty body under its
            // Content-Length, the route's header rules).
            self.isHeadRequest = false
            self.handling = .notFound
            self.record = RequestRecord(
                start: .now(), method: .GET, uri: "-", version: .http1_1, route: "<bad request>",
                requestID: RequestID.make(), client: self.peer.text)
        }
        self.keepAlive = false
        self.state = .answered
        let status: HTTPResponseStatus
        let message: String
        if case .headerOverflow = parserError {
            status = .requestHeaderFieldsTooLarge
            message = "request headers larger than \(self.services.limits.maxHeaderBytes) bytes"
        } else {
            status = .badRequest
            message = "malformed request: \(parserError)"
        }
        self.writeLocal(.error(status, message, extraHeaders: []), context: context)
    }

    private static func expectsContinue(_ headers: HTTPHeaders) -> Bool {
        for value in headers[canonicalForm: "expect"] where value.utf8.count == 12 {
            if value.lowercased() == "100-continue" {
                return true
            }
        }
        return false
    }
}

@available(*, unavailable)
extension RequestHandler: Sendable {}

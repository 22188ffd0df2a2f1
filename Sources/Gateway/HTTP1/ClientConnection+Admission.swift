import GatewayConfig
import GatewayCore
import GatewayHTTP
import GatewayIO
import Synchronization

/// From a parsed head to a decision: who the client is, the canonical target, the route, and
/// the checks, cheapest first, none of which reads the body (docs/gateway.md, "The request
/// path, step by step").
extension ClientConnection {
    func beginRequest() {
        let request = self.requestStorage
        request.reset()
        self.request = request
        let head = self.head
        let bytes = self.input.readable
        let now = self.eventLoop.now
        request.start = now
        request.method = head.method
        request.methodText = Self.methodText(head, bytes)
        request.isHTTP10 = head.isHTTP10
        request.isHTTP2 = self.stream != nil
        self.mayStartHTTP2 = false
        request.isHEAD = head.method == .head
        request.keepAlive = head.keepAlive
        request.wantsUpgrade = head.wantsUpgrade
        request.framing = head.framing
        switch head.framing {
        case .length(let length):
            request.bodyRemaining = length
            request.bodyEnded = false
        case .chunked:
            request.bodyEnded = false
        case .none, .untilClose:
            request.bodyEnded = true
        }
        if request.bodyEnded {
            self.disarm()
        } else {
            self.arm(.body)
        }

        // Who the client is: the peer, unless a trusted proxy says otherwise.
        let peerTrusted = self.spec.trusted.contains(self.peer.address)
        request.clientAddress =
            peerTrusted ? self.spec.trusted.client(peer: self.peer, forwardedFor: head, bytes).text : self.peer.text

        // One canonical path for routing and for the upstream (RequestTarget).
        var targetError: RequestTargetError?
        var target = RequestTarget.Parsed(form: .origin, authority: nil, path: 0..<0, rewrittenPath: nil, query: nil)
        do throws(RequestTargetError) {
            target = try RequestTarget.parse(
                UnsafeBufferPointer(rebasing: bytes[head.target]), rules: self.services.paths.rules)
        } catch {
            targetError = error
        }
        let targetBytes = UnsafeBufferPointer(rebasing: bytes[head.target])
        let path: UnsafeBufferPointer<UInt8> =
            target.rewrittenPath == nil
            ? UnsafeBufferPointer(rebasing: targetBytes[target.path]) : .init(start: nil, count: 0)
        let router = self.spec.isAdmin ? ListenerRouter.admin : self.spec.router
        let route: RouteHandling
        if targetError != nil {
            route = .notFound
        } else {
            // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host.
            var host: String?
            if router.needsHost {
                if let authority = target.authority {
                    host = String(decoding: targetBytes[authority], as: UTF8.self)
                } else if let hostField = head.host {
                    host = String(decoding: bytes[hostField], as: UTF8.self)
                }
            }
            if let rewritten = target.rewrittenPath {
                route = router.route(
                    method: head.method, methodBytes: bytes[head.methodRange], path: rewritten, host: host)
            } else {
                route = router.route(method: head.method, methodBytes: bytes[head.methodRange], path: path, host: host)
            }
        }
        request.route = route
        ProxyLog.step(
            "routed",
            [
                "method": "\(request.methodText)", "target": "\(String(decoding: targetBytes, as: UTF8.self))",
                "route": "\(route.name)",
            ])

        if let field = head.first(.xRequestID),
            request.requestID.adopt(UnsafeBufferPointer(rebasing: bytes[field.valueRange]))
        {
            // Kept as the client sent it.
        } else {
            request.requestID.generate(prefix: RequestIDs.prefix, counter: RequestIDs.next())
        }
        if self.services.accessLog != nil {
            request.target = String(decoding: targetBytes, as: UTF8.self)
            request.userAgent = head.first(.userAgent).map { String(decoding: bytes[$0.valueRange], as: UTF8.self) }
            request.referer = head.first(.referer).map { String(decoding: bytes[$0.valueRange], as: UTF8.self) }
            request.host =
                target.authority.map { String(decoding: targetBytes[$0], as: UTF8.self) }
                ?? head.host.map { String(decoding: bytes[$0], as: UTF8.self) }
        }
        request.closeAfterResponse = !request.keepAlive || self.draining || request.wantsUpgrade
        if let tracing = self.services.tracing, tracing.traces(head, bytes) {
            request.trace = RequestTrace(
                tracer: tracing.tracer, request: request, head: head, bytes: bytes, target: target, peer: self.peer,
                secure: self.tls != nil)
        }

        if let targetError {
            return self.refuse(400, "invalid request target: \(targetError)", consuming: head.length)
        }
        if target.form == .asterisk, head.method != .options {
            return self.refuse(400, "invalid request target: '*' is for OPTIONS only", consuming: head.length)
        }
        if head.method == .connect {
            // A forward-proxy tunnel to anywhere: not what a reverse proxy offers. Nothing after
            // a CONNECT is parsed: this connection can serve nothing more.
            return self.refuse(405, "CONNECT is not supported", consuming: head.length)
        }
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (two could route one way here and be
        // read another way upstream).
        if head.hostCount > 1 || (head.hostCount == 0 && !head.isHTTP10) {
            return self.refuse(400, "a request needs exactly one Host header", consuming: head.length)
        }
        // A credential twice: the check here reads the first, an upstream may read the last.
        if let name = self.services.repeatedCredential(head, bytes) {
            return self.refuse(400, "more than one \(name) header", consuming: head.length)
        }

        // A per-client-IP limit runs before authentication, so that guessing keys is limited too.
        if let limit = route.rateLimit, limit.per == .clientIP,
            let retryAfter = self.services.denied(route: route.name, limit: limit, key: request.clientAddress)
        {
            return self.tooManyRequests(retryAfter, consuming: head.length, closing: false)
        }
        var rateKey = request.clientAddress
        if let auth = route.auth {
            switch auth.check(head, bytes) {
            case .allowed(let key):
                rateKey = key
            case .missing, .invalid:
                let extra: [(String, String)] = auth.isBearer ? [("www-authenticate", "Bearer")] : []
                return self.reject(
                    .error(401, "missing or invalid API key", extraHeaders: extra), consuming: head.length)
            }
        }
        if let limit = route.rateLimit, limit.per == .apiKey,
            let retryAfter = self.services.denied(route: route.name, limit: limit, key: rateKey)
        {
            return self.tooManyRequests(retryAfter, consuming: head.length, closing: false)
        }
        let maxBody = self.services.limits.maxBodyBytes
        if maxBody > 0, case .length(let declared) = head.framing, declared > UInt64(maxBody) {
            self.input.consume(head.length)
            self.bodyTooLarge()
            return
        }
        if !head.isHTTP10, head.expectsContinue, !request.bodyEnded, head.method != .get, head.method != .head {
            // We take the body (nginx does the same); the upstream never sees the Expect.
            self.output.append(LocalResponse.continueHead)
            self.flushOutput()
            // The write may have found the client gone (reset): nothing more to do for it.
            guard self.phase == .serving else { return }
        }

        switch route.action {
        case .respond(let response):
            request.answer = .local(.prepared(response))
        case .admin(let endpoint):
            request.answer = .local(self.adminResponse(endpoint))
        case .notFound:
            request.answer = .local(.error(404, "no route", extraHeaders: []))
        case .proxy(let proxyTarget):
            guard let pool = self.loop.upstreams.pool(named: proxyTarget.upstream) else {
                request.answer = .local(
                    .error(502, "upstream \(proxyTarget.upstream) is not available", extraHeaders: []))
                break
            }
            request.upstreamName = proxyTarget.upstream
            if head.framing == .chunked, bytes.count > head.length {
                // The chunks that came with the head are checked before anything goes upstream:
                // a body refused in the first read never reaches the upstream at all (one that
                // breaks later cuts the upstream connection mid-body).
                var probe = ChunkedDecoder()
                if case .failed(let error) = probe.decode(UnsafeBufferPointer(rebasing: bytes[head.length...])) {
                    self.input.consume(head.length)
                    self.answerBeforeBodyEnd(error.status, "malformed request: \(error)")
                    return
                }
            }
            let writer = UpstreamHeadWriter(
                head: head, bytes: bytes, target: target, peer: self.peer, peerTrusted: peerTrusted,
                route: route, requestID: request.requestID, caseSensitive: self.services.paths.caseSensitive,
                secure: self.secure, http2: self.stream != nil, dropsTraceContext: request.trace != nil)
            self.upstreamHead.clear()
            let hasHost = writer.write(into: self.upstreamHead, stripPrefix: proxyTarget.stripPrefix)
            let exchange = ProxyExchange(client: self, request: request, pool: pool, setsHost: !hasHost)
            request.exchange = exchange
            request.answer = .proxy
            self.input.consume(head.length)
            exchange.start()
            return
        }
        self.input.consume(head.length)
    }

    private static func methodText(_ head: MessageHead, _ bytes: UnsafeBufferPointer<UInt8>) -> String {
        switch head.method {
        case .get: return "GET"
        case .head: return "HEAD"
        case .post: return "POST"
        case .put: return "PUT"
        case .delete: return "DELETE"
        case .connect: return "CONNECT"
        case .options: return "OPTIONS"
        case .trace: return "TRACE"
        case .patch: return "PATCH"
        case .other: return String(decoding: bytes[head.methodRange], as: UTF8.self)
        }
    }

    /// A request refused before its body is read: with no body the answer waits for the
    /// request's end (the connection stays open); with one it goes out now and the connection
    /// closes, so that a client sending `Expect: 100-continue` or a large body learns at once
    /// and the body is discarded by the polite close rather than read.
    func reject(_ response: LocalResponse, consuming headLength: Int, closing: Bool = false) {
        guard let request = self.request else { return }
        self.input.consume(headLength)
        if closing { request.closeAfterResponse = true }
        guard !request.bodyEnded else {
            request.answer = .local(response)
            return
        }
        request.answer = .answered
        request.closeAfterResponse = true
        self.writeLocal(response)
    }

    /// 400 (or 405) and close: the request, or the connection, cannot be trusted further.
    func refuse(_ status: UInt16, _ message: String, consuming headLength: Int) {
        self.reject(.error(status, message, extraHeaders: []), consuming: headLength, closing: true)
    }

    private func tooManyRequests(_ retryAfter: Int, consuming headLength: Int, closing: Bool) {
        self.reject(
            .error(429, "rate limit exceeded", extraHeaders: [("retry-after", String(retryAfter))]),
            consuming: headLength, closing: closing)
    }

    func adminResponse(_ endpoint: AdminEndpoint) -> LocalResponse {
        switch endpoint {
        case .health:
            return .dynamic(200, contentType: "application/json", body: #"{"status":"alive"}"#)
        case .ready:
            return self.services.ready.load(ordering: .relaxed)
                ? .dynamic(200, contentType: "application/json", body: #"{"status":"ready"}"#)
                : .dynamic(503, contentType: "application/json", body: #"{"status":"draining"}"#)
        case .metrics:
            // The Prometheus text exposition format, version 0.0.4.
            return .dynamic(
                200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                body: self.services.metricsExposition?() ?? "")
        case .status:
            return .dynamic(
                200, contentType: "text/html; charset=utf-8",
                body: StatusPage.render(StatusBoard.shared.latest))
        }
    }
}

/// Request ids made here: this process's random 64-bit prefix and a counter (unique across
/// workers and restarts without a getrandom(2) per request).
enum RequestIDs {
    static let prefix = UInt64.random(in: .min ... .max)
    private static let counter = Atomic<UInt64>(0)

    static func next() -> UInt64 {
        counter.add(1, ordering: .relaxed).newValue
    }
}

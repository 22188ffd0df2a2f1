import Foundation
import GatewayConfig
import GatewayCore
import Testing

@testable import Gateway

/// One listener, the given upstreams and routes, a server on it.
func withProxy<T>(
    upstreams: [UpstreamConfig],
    routes: [RouteConfig],
    limits: LimitsConfig = LimitsConfig(),
    accessLog: AccessLog? = nil,
    _ body: (UInt16) async throws -> T
) async throws -> T {
    let listener = try TestListener()
    defer { listener.close() }
    let configuration = GatewayConfiguration(
        listeners: [try listener.config], routes: routes, upstreams: upstreams, limits: limits)
    return try await withServer(
        configuration: configuration, listeners: [listener], sharedState: try testSharedState(), accessLog: accessLog
    ) { _, _ in
        try await body(listener.port)
    }
}

/// The usual setup: the demo upstream "a" as the only endpoint of upstream "api", and routes
/// to it (by default one that sends everything there). The upstream is stopped when `body` returns.
private func withDemoProxy<T>(
    readTimeout: Duration = UpstreamConfig.defaultReadTimeout,
    routes: [RouteConfig] = [proxyRoute("all", upstream: "api")], limits: LimitsConfig = LimitsConfig(),
    accessLog: AccessLog? = nil, _ body: (UInt16, DemoUpstream) async throws -> T
) async throws -> T {
    let upstream = try DemoUpstream(name: "a")
    defer { upstream.stop() }
    return try await withProxy(
        upstreams: [UpstreamConfig(name: "api", endpoints: [upstream.endpoint], readTimeout: readTimeout)],
        routes: routes, limits: limits, accessLog: accessLog
    ) { port in
        try await body(port, upstream)
    }
}

func proxyRoute(
    _ name: String, _ match: RouteMatch = RouteMatch(pathPrefix: "/"), upstream: String, stripPrefix: String? = nil,
    requestHeaders: HeaderRules = HeaderRules(), responseHeaders: HeaderRules = HeaderRules(),
    auth: AuthConfig? = nil, rateLimit: RateLimitConfig? = nil
) -> RouteConfig {
    RouteConfig(
        name: name, match: match, action: .upstream(ProxyAction(upstream: upstream, stripPrefix: stripPrefix)),
        requestHeaders: requestHeaders, responseHeaders: responseHeaders, auth: auth, rateLimit: rateLimit)
}

private func echoJSON(_ response: TestResponse) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any])
}

private func echoedHeaders(_ json: [String: Any]) -> [(String, String)] {
    (json["headers"] as? [[String]] ?? []).map { ($0[0].lowercased(), $0[1]) }
}

@Suite("Reverse proxy", .serialized, .timeLimit(.minutes(2)))
struct ProxyTests {
    @Test("forwards method, path and body; rewrites hop-by-hop and forwarding headers")
    func forwarding() async throws {
        try await withDemoProxy(
            routes: [
                proxyRoute(
                    "api", RouteMatch(pathPrefix: "/v1/"), upstream: "api", stripPrefix: "/v1",
                    requestHeaders: HeaderRules(set: [HeaderField(name: "x-env", value: "test")], remove: ["x-debug"]),
                    responseHeaders: HeaderRules(set: [HeaderField(name: "x-served-by", value: "gatewayd")]))
            ]
        ) { port, upstream in
            let response = try await onThreadThrowing {
                try fetch(
                    port: port, "POST", "/v1/echo/x?q=1",
                    headers: [
                        "Host: api.example.com", "Connection: keep-alive, x-secret", "x-secret: s", "x-debug: 1",
                        "te: trailers", "x-request-id: abc-123",
                        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                        // Client addresses from an untrusted peer: none may reach the upstream.
                        "Forwarded: for=192.0.2.1", "X-Real-IP: 192.0.2.1", "X_Forwarded_For: 192.0.2.1",
                        "x_real_ip: 192.0.2.1",
                    ], body: "hello")
            }
            #expect(response.status == 200)
            #expect(response.header("x-upstream") == "a")
            #expect(response.header("x-served-by") == "gatewayd")
            #expect(response.header("x-request-id") == "abc-123")
            let json = try echoJSON(response)
            #expect(json["method"] as? String == "POST")
            #expect(json["path"] as? String == "/echo/x?q=1")
            #expect(json["body_length"] as? Int == 5)
            let headers = echoedHeaders(json)
            let names = Set(headers.map(\.0))
            #expect(!names.contains("x-secret"))
            #expect(!names.contains("te"))
            #expect(!names.contains("x-debug"))
            for spoofable in ["forwarded", "x-real-ip", "x_forwarded_for", "x_real_ip"] {
                #expect(!names.contains(spoofable), "\(spoofable) from an untrusted client reached the upstream")
            }
            #expect(headers.contains { $0 == ("x-env", "test") })
            #expect(headers.contains { $0 == ("x-forwarded-for", "127.0.0.1") })
            #expect(headers.contains { $0 == ("x-forwarded-proto", "http") })
            #expect(headers.contains { $0 == ("x-forwarded-host", "api.example.com") })
            #expect(headers.contains { $0 == ("via", "1.1 gatewayd") })
            #expect(headers.contains { $0 == ("x-request-id", "abc-123") })
            #expect(headers.contains { $0.0 == "traceparent" })
            #expect(headers.contains { $0 == ("host", "api.example.com") })
        }
    }

    @Test("keep-alive to the client and to the upstream; pipelined requests answered in order")
    func keepAliveAndChunked() async throws {
        try await withDemoProxy { port, upstream in
            try await onThreadThrowing {
                let client = try RawClient(port: port)
                defer { client.close() }
                for _ in 0..<20 {
                    try client.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                    let response = try client.readResponse()
                    #expect(response.status == 200)
                    #expect(response.body == "ok a\n")
                }
                // Pipelined: answered in order.
                try client.send("GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo/2 HTTP/1.1\r\nHost: x\r\n\r\n")
                let first = try client.readResponse()
                let second = try client.readResponse()
                #expect(first.body.contains("/echo/1"))
                #expect(second.body.contains("/echo/2"))
            }
            // One upstream connection served all of them.
            let stats = try fetch(port: upstream.port, "/stats")
            let json = try #require(JSONSerialization.jsonObject(with: Data(stats.body.utf8)) as? [String: Any])
            #expect(json["connections_accepted"] as? Int == 2)  // ours, and this /stats request
        }
    }

    @Test("a chunked response passes re-chunked with its trailer fields; HTTP/1.0 gets it close-delimited")
    func chunkedWithTrailers() async throws {
        try await withDemoProxy { port, upstream in
            let (chunked, plain) = try await onThreadThrowing { () throws -> (String, String) in
                func readAll(_ request: String) throws -> String {
                    let client = try RawClient(port: port)
                    defer { client.close() }
                    try client.send(request)
                    return try client.readUntilEOF()
                }
                return (
                    try readAll("GET /chunked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n"),
                    try readAll("GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
                )
            }
            #expect(chunked.lowercased().contains("transfer-encoding: chunked\r\n"))
            #expect(chunked.lowercased().contains("trailer: x-checksum\r\n"))
            #expect(chunked.contains("\r\n0\r\nx-checksum: "))
            #expect(!plain.lowercased().contains("transfer-encoding"))
            #expect(plain.lowercased().contains("connection: close"))
            #expect(plain.hasSuffix("chunk 0\nchunk 1\nchunk 2\n"))
        }
    }

    @Test("round robin over two endpoints")
    func roundRobin() async throws {
        let a = try DemoUpstream(name: "a")
        let b = try DemoUpstream(name: "b")
        defer {
            a.stop()
            b.stop()
        }
        try await withProxy(
            upstreams: [UpstreamConfig(name: "api", endpoints: [a.endpoint, b.endpoint])],
            routes: [proxyRoute("all", upstream: "api")]
        ) { port in
            var names: [String] = []
            for _ in 0..<10 {
                names.append(try fetch(port: port, "/").header("x-upstream") ?? "?")
            }
            #expect(names.filter { $0 == "a" }.count == 5)
            #expect(names.filter { $0 == "b" }.count == 5)
            #expect(zip(names, names.dropFirst()).allSatisfy { $0 != $1 })
        }
    }

    @Test("502 refused, 504 on response_timeout, 503 once every endpoint is ejected, then back")
    func errorStatuses() async throws {
        let upstream = try DemoUpstream(name: "a")
        defer { upstream.stop() }
        let dead = try deadEndpoint()
        try await withProxy(
            upstreams: [
                UpstreamConfig(
                    name: "dead", endpoints: [dead],
                    health: PassiveHealth(maxFailures: 2, ejectFor: .milliseconds(500)),
                    retries: 0),
                UpstreamConfig(name: "slow", endpoints: [upstream.endpoint], responseTimeout: .milliseconds(300)),
            ],
            routes: [
                proxyRoute("dead", RouteMatch(pathPrefix: "/dead"), upstream: "dead"),
                proxyRoute("slow", RouteMatch(pathPrefix: "/"), upstream: "slow"),
            ]
        ) { port in
            let first = try fetch(port: port, "/dead")
            #expect(first.status == 502)
            #expect(first.header("content-type") == "application/json")
            #expect(first.body.contains("\"request_id\""))
            #expect(first.body.contains("refused"))
            #expect(try fetch(port: port, "/dead").status == 502)
            // Two failures in a row: ejected.
            let ejected = try fetch(port: port, "/dead")
            #expect(ejected.status == 503)
            try await Task.sleep(for: .milliseconds(600))
            #expect(try fetch(port: port, "/dead").status == 502)

            let timedOut = try fetch(port: port, "/hang")
            #expect(timedOut.status == 504)
            #expect(try fetch(port: port, "/close").status == 502)
            #expect(try fetch(port: port, "/reset").status == 502)
            #expect(try fetch(port: port, "/status?code=503").status == 503)
        }
    }

    @Test("retries: a GET goes to the next endpoint after a refused connect, a POST does not")
    func retries() async throws {
        let upstream = try DemoUpstream(name: "live")
        defer { upstream.stop() }
        let dead = try deadEndpoint()
        try await withProxy(
            upstreams: [
                UpstreamConfig(
                    name: "api", endpoints: [dead, upstream.endpoint], health: PassiveHealth(maxFailures: 100),
                    retries: 1)
            ],
            routes: [proxyRoute("all", upstream: "api")]
        ) { port in
            for _ in 0..<6 {
                #expect(try fetch(port: port, "/").status == 200)
            }
            // A retry does not move the rotation: half of the GETs tried the dead endpoint
            // first, not all of them (the live one saw each GET once).
            #expect(try await onThreadThrowing { try upstream.requestCount() } == 6)
            var statuses: [Int] = []
            for _ in 0..<6 {
                statuses.append(try fetch(port: port, "POST", "/echo", body: "x").status)
            }
            #expect(statuses.filter { $0 == 502 }.count == 3)
            #expect(statuses.filter { $0 == 200 }.count == 3)
        }
    }

    @Test(
        "retries after the request was sent: a GET the endpoint closed or reset goes to the next one; a POST, or a GET already answered in part, does not"
    )
    func retriesAfterSending() async throws {
        let a = try DemoUpstream(name: "a")
        let b = try DemoUpstream(name: "b")
        defer {
            a.stop()
            b.stop()
        }
        try await withProxy(
            upstreams: [
                UpstreamConfig(
                    name: "api", endpoints: [a.endpoint, b.endpoint], responseTimeout: .milliseconds(500),
                    health: PassiveHealth(maxFailures: 100), retries: 1)
            ],
            routes: [proxyRoute("all", upstream: "api")]
        ) { port in
            // Round robin: every other request goes to `a` first, which drops it (FIN or RST)
            // after reading it, before any response byte.
            for target in ["/drop?on=a", "/drop?on=a&reset=1"] {
                for method in ["GET", "HEAD", "PUT", "DELETE"] {
                    var statuses: [Int] = []
                    for _ in 0..<4 {
                        statuses.append(try fetch(port: port, method, target).status)
                    }
                    #expect(statuses == [200, 200, 200, 200], "\(method) \(target)")
                }
                // A GET with a small body, read whole before the failure: retried too.
                var withBody: [Int] = []
                for _ in 0..<4 {
                    withBody.append(try fetch(port: port, "GET", target, body: "0123456789").status)
                }
                #expect(withBody == [200, 200, 200, 200], "GET with a body \(target)")
                var posts: [Int] = []
                for _ in 0..<4 {
                    posts.append(try fetch(port: port, "POST", target, body: "x").status)
                }
                #expect(posts.sorted() == [200, 200, 502, 502], "POST \(target)")
            }
            // Part of a status line came back: the request may have run; not retried.
            var partial: [Int] = []
            for _ in 0..<4 {
                partial.append(try fetch(port: port, "/drop?on=a&partial=1").status)
            }
            #expect(partial.sorted() == [200, 200, 502, 502])
            // response_timeout is retried too: `/hang` hangs on both, so each GET tries both
            // endpoints and gets 504 after two timeouts.
            let start = ContinuousClock.now
            #expect(try fetch(port: port, "/hang").status == 504)
            #expect(ContinuousClock.now - start >= .milliseconds(1000))
            // Every attempt reached an endpoint once: `a` saw every request that was sent to it
            // first (half of them), `b` the rest plus every retry.
            let seenByA = try await onThreadThrowing { try a.requestCount() }
            let seenByB = try await onThreadThrowing { try b.requestCount() }
            // 2 × (16 + 4 + 4) + 4 + 1 = 53 requests; 2 × (8 + 2) + 1 = 21 of them retried.
            #expect(seenByA + seenByB == 53 + 21, "a: \(seenByA), b: \(seenByB)")
        }
    }

    @Test("auth: 401 without or with a wrong key, never echoing it; rate limit: 429 with Retry-After")
    func authAndRateLimit() async throws {
        try await withDemoProxy(
            routes: [
                proxyRoute(
                    "api", upstream: "api",
                    auth: AuthConfig(scheme: .apiKey(header: "x-api-key"), keysFile: "/keys", keys: ["k1", "k2"]),
                    rateLimit: RateLimitConfig(per: .apiKey, rate: 1, burst: 3))
            ]
        ) { port, upstream in
            let missing = try fetch(port: port, "/")
            #expect(missing.status == 401)
            let wrong = try fetch(port: port, "/", headers: ["x-api-key: sekrit-wrong"])
            #expect(wrong.status == 401)
            #expect(!wrong.body.contains("sekrit"))
            for _ in 0..<3 {
                #expect(try fetch(port: port, "/", headers: ["x-api-key: k1"]).status == 200)
            }
            let limited = try fetch(port: port, "/", headers: ["x-api-key: k1"])
            #expect(limited.status == 429)
            #expect(limited.header("retry-after") == "1")
            // Another key has its own bucket.
            #expect(try fetch(port: port, "/", headers: ["x-api-key: k2"]).status == 200)
        }
    }

    @Test("limits: 413 body, 431 headers, 400 for smuggling-shaped requests, connection closed")
    func limitsAndSmuggling() async throws {
        try await withDemoProxy(
            limits: LimitsConfig(maxHeaderBytes: 4096, maxBodyBytes: 1000)
        ) { port, upstream in
            #expect(try fetch(port: port, "POST", "/echo", body: String(repeating: "x", count: 1001)).status == 413)
            #expect(try fetch(port: port, "POST", "/echo", body: String(repeating: "x", count: 1000)).status == 200)
            let big = try fetch(port: port, "/", headers: ["x-big: " + String(repeating: "y", count: 5000)])
            #expect(big.status == 431)
            #expect(big.closesConnection)
            let cases = [
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
                "GET /../x HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
            for request in cases {
                let response = try await onThreadThrowing { () throws -> (Int, ReadEnd) in
                    let client = try RawClient(port: port)
                    defer { client.close() }
                    try client.send(request)
                    let response = try client.readResponse()
                    return (response.status, client.readEnd())
                }
                #expect(response.0 == 400, "\(request.debugDescription)")
                #expect(response.1 == .eof, "\(request.debugDescription)")
            }
            // A chunked GET body carrying a request must reach the upstream as a body (framed),
            // never as a second request.
            let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
            let hex = String(smuggled.utf8.count, radix: 16)
            let carrier = try await onThreadThrowing { () throws -> TestResponse in
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send(
                    "GET /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: content-length\r\n\r\n"
                        + "\(hex)\r\n\(smuggled)\r\n0\r\n\r\n")
                return try client.readResponse()
            }
            #expect(carrier.status == 200)
            #expect(carrier.body.contains("\"body_length\": \(smuggled.utf8.count)"))
            // The same with TRACE, whose framing NIO's encoder would drop by default.
            let traced = try await onThreadThrowing { () throws -> TestResponse in
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send(
                    "TRACE /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)")
                return try client.readResponse()
            }
            #expect(traced.status == 200)
            #expect(traced.body.contains("\"body_length\": \(smuggled.utf8.count)"))
            // The 1000-byte POST, the chunked GET and the TRACE. Not the bad-chunk request: its
            // head and its bad chunk arrive in one read, and the exchange starts only once the
            // decoder is past what arrived without an error. Nothing else reached the upstream.
            let stats = try await onThreadThrowing { try upstream.requestCount() }
            #expect(stats == 3)
        }
    }

    @Test("redirect and direct response routes next to upstream routes")
    func otherActions() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        let configuration = GatewayConfiguration(
            listeners: [try listener.config],
            routes: [
                RouteConfig(
                    name: "old", match: RouteMatch(pathPrefix: "/old/"),
                    action: .redirect(Redirect(status: 301, location: "https://example.com/new/")))
            ])
        try await withServer(configuration: configuration, listeners: [listener]) { _, _ in
            let response = try fetch(port: listener.port, "/old/page")
            #expect(response.status == 301)
            #expect(response.header("location") == "https://example.com/new/")
            #expect(try fetch(port: listener.port, "/other").status == 404)
        }
    }

    @Test("a 20 MiB upload and download stream through with matching checksums")
    func streaming() async throws {
        try await withDemoProxy(
            limits: LimitsConfig(maxBodyBytes: 0)
        ) { port, upstream in
            let size = 20 * 1024 * 1024
            let upload = try await onThreadThrowing {
                try runClient(["upload", "--port", String(port), "--bytes", String(size), "--chunked"])
            }
            #expect(upload.exit == 0, "\(upload)")
            let download = try await onThreadThrowing {
                try runClient(["download", "--port", String(port), "--path", "/bytes?n=\(size)&chunked=1"])
            }
            #expect(download.exit == 0, "\(download)")
        }
    }

    @Test("a WebSocket is tunnelled both ways after the 101")
    func websocket() async throws {
        try await withDemoProxy { port, upstream in
            let result = try await onThreadThrowing {
                try runClient(["ws-echo", "--port", String(port), "--messages", "50", "--size", "3000"])
            }
            #expect(result.exit == 0, "\(result)")
        }
    }

    @Test("the admin listener answers /healthz, /readyz and /metrics, and nothing else")
    func admin() async throws {
        let listener = try TestListener()
        let adminListener = try TestListener(name: "admin")
        defer {
            listener.close()
            adminListener.close()
        }
        let configuration = GatewayConfiguration(
            listeners: [try listener.config, try adminListener.config],
            routes: [directRoute("all", RouteMatch(pathPrefix: "/"), body: "hi")],
            admin: AdminConfig(listener: "admin"))
        try await withServer(
            configuration: configuration, listeners: [listener, adminListener], sharedState: try testSharedState()
        ) { server, _ in
            let port = adminListener.port
            #expect(try fetch(port: port, "/healthz").status == 200)
            #expect(try fetch(port: port, "/readyz").status == 200)
            let metrics = try fetch(port: port, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(try fetch(port: port, "/").status == 404)
            #expect(try fetch(port: listener.port, "/healthz").body == "hi")
        }
    }
}

/// Blocking client work off the cooperative pool.
func onThreadThrowing<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await onThread { Result { try work() } }.get()
}

/// A shared segment of this test process's own, as the master would make.
func testSharedState() throws -> SharedState {
    SharedState(memory: try SharedMemory.create())
}

/// Elapsed time of `work`, with its result.
private func timed<T>(_ work: () throws -> T) rethrows -> (T, Duration) {
    let start = ContinuousClock.now
    let result = try work()
    return (result, ContinuousClock.now - start)
}

/// A WebSocket text frame from a client: masked, as RFC 6455 requires, with the all-zero key
/// (the payload goes out as is).
private func webSocketFrame(_ text: String) -> [UInt8] {
    let payload = Array(text.utf8)
    precondition(payload.count < 126)
    return [0x81, 0x80 | UInt8(payload.count), 0, 0, 0, 0] + payload
}

private let webSocketUpgrade =
    "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

/// `connections_open` of a demo upstream, not counting the connection that asks.
private func openUpstreamConnections(_ upstream: DemoUpstream) throws -> Int {
    try upstreamStats(upstream).open - 1
}

/// The demo upstream's connection counts; the connection that asks is counted in both.
private func upstreamStats(_ upstream: DemoUpstream) throws -> (open: Int, accepted: Int) {
    let stats = try fetch(port: upstream.port, "/stats")
    let json = try JSONSerialization.jsonObject(with: Data(stats.body.utf8)) as? [String: Any]
    return (json?["connections_open"] as? Int ?? -1, json?["connections_accepted"] as? Int ?? -1)
}

/// Timeouts between reads: `limits.body_timeout`, `read_timeout`, `limits.tunnel_idle_timeout`.
/// Each is set to 600 ms; "about the timeout" is from 550 ms (the lazy timers may fire a little
/// early relative to the client's clock start, never before the deadline) to 1.5 s.
@Suite("Timeouts between reads", .serialized, .timeLimit(.minutes(2)))
struct ReadTimeoutTests {
    static let timeout: Duration = .milliseconds(600)
    static let earliest: Duration = .milliseconds(550)
    static let latest: Duration = .milliseconds(1500)

    @Test(
        "body_timeout: a stalled body gets 408 at about the timeout (proxied and direct) while another client is served"
    )
    func stalledBody() async throws {
        try await withDemoProxy(
            routes: [
                directRoute("direct", RouteMatch(pathPrefix: "/direct"), body: "hi"),
                proxyRoute("all", upstream: "api"),
            ],
            limits: LimitsConfig(bodyTimeout: Self.timeout)
        ) { port, upstream in
            for target in ["/echo", "/direct"] {
                let client = try RawClient(port: port)
                defer { client.close() }
                // 2 of the 10 bytes announced, then nothing. Timed from before the send: the
                // server's timer cannot start earlier, so a reading thread that starts late on a
                // loaded machine does not make the 408 look early.
                let sent = ContinuousClock.now
                try client.send("POST \(target) HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
                async let stalled = onThreadThrowing { () throws -> (TestResponse, Duration, ReadEnd) in
                    let response = try client.readResponse()
                    return (response, ContinuousClock.now - sent, client.readEnd())
                }
                // Another client, served while the stalled one waits.
                var neighbours: [Int] = []
                for _ in 0..<5 {
                    neighbours.append(try await onThreadThrowing { try fetch(port: port, "/direct") }.status)
                }
                let (response, elapsed, end) = try await stalled
                #expect(neighbours == [200, 200, 200, 200, 200])
                #expect(response.status == 408, "\(target)")
                #expect(response.body.contains("request body timeout"), "\(response.body)")
                #expect(response.header("x-request-id") != nil)
                #expect(response.closesConnection)
                #expect(end == .eof)
                #expect(elapsed >= Self.earliest && elapsed < Self.latest, "\(target): 408 after \(elapsed)")
                print("body_timeout 600ms, \(target): 408 after \(elapsed)")
            }
            // The proxied one reached the upstream as a head and 2 bytes, and that connection
            // was closed, not pooled.
            #expect(try await eventually { (try? openUpstreamConnections(upstream)) == 0 })
        }
    }

    @Test("body_timeout: a body trickled a byte every 200 ms, 2 s in all, is not cut")
    func trickledBody() async throws {
        try await withDemoProxy(
            limits: LimitsConfig(bodyTimeout: Self.timeout)
        ) { port, upstream in
            let (response, elapsed) = try await onThreadThrowing { () throws -> (TestResponse, Duration) in
                let client = try RawClient(port: port)
                defer { client.close() }
                return try timed {
                    try client.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
                    for byte in "0123456789" {
                        // The trickle under test, not a wait for an event.
                        Thread.sleep(forTimeInterval: 0.2)
                        try client.send(String(byte))
                    }
                    return try client.readResponse()
                }
            }
            #expect(response.status == 200)
            #expect(try echoJSON(response)["body_length"] as? Int == 10)
            #expect(elapsed >= .seconds(2))
        }
    }

    @Test("read_timeout: an upstream that stalls in the body gets the client connection closed at about the timeout")
    func stalledUpstream() async throws {
        try await withDemoProxy(
            readTimeout: Self.timeout
        ) { port, upstream in
            let (received, elapsed) = try await onThreadThrowing { () throws -> (String, Duration) in
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send("GET /stall?after=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
                return try timed { try client.readUntilEOF() }
            }
            // The head and the 1000 bytes, then the close: never a second status line.
            #expect(received.hasPrefix("HTTP/1.1 200 "))
            #expect(received.contains("content-length: 1048576"))
            #expect(received.components(separatedBy: "HTTP/1.1 ").count == 2)
            #expect(elapsed >= Self.earliest && elapsed < Self.latest, "closed after \(elapsed)")
            print("read_timeout 600ms: client connection closed after \(elapsed)")
            // Not pooled: the upstream sees its connection closed.
            #expect(try await eventually { (try? openUpstreamConnections(upstream)) == 0 })
            // The next request is served.
            #expect(try fetch(port: port, "/").status == 200)
        }
    }

    @Test("keepalive idle_timeout: one pooled upstream connection serves request after request; unused, it is closed")
    func idleUpstreamConnection() async throws {
        let upstream = try DemoUpstream(name: "a")
        defer { upstream.stop() }
        let config = UpstreamConfig(
            name: "api", endpoints: [upstream.endpoint], keepalive: UpstreamKeepalive(idleTimeout: Self.timeout))
        try await withProxy(upstreams: [config], routes: [proxyRoute("all", upstream: "api")]) { port in
            // Each on a new client connection, one after another: the pool lends the same one.
            for _ in 0..<20 {
                #expect(try fetch(port: port, "/").status == 200)
            }
            let lastUse = ContinuousClock.now
            let stats = try upstreamStats(upstream)
            // The /stats connection is one of them.
            #expect(stats.accepted == 2, "upstream connections accepted: \(stats.accepted)")
            #expect(stats.open == 2)
            #expect(try await eventually { (try? openUpstreamConnections(upstream)) == 0 })
            let elapsed = ContinuousClock.now - lastUse
            #expect(elapsed >= Self.earliest && elapsed < Self.latest, "closed after \(elapsed)")
            print("keepalive idle_timeout 600ms: pooled connection closed after \(elapsed)")
            // The next request opens a new one.
            #expect(try fetch(port: port, "/").status == 200)
        }
    }

    @Test("read_timeout: a client that does not read for longer than the timeout still gets the whole body")
    func slowClientIsNotAStalledUpstream() async throws {
        try await withDemoProxy(
            readTimeout: Self.timeout
        ) { port, upstream in
            // More than the socket buffers on both sides hold, so gatewayd stops reading the
            // upstream while the client does not read.
            let size = 48 * 1024 * 1024
            let received = try await onThreadThrowing { () throws -> Int in
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send("GET /bytes?n=\(size) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                // The stall under test: three read timeouts without reading.
                Thread.sleep(forTimeInterval: 1.8)
                return try client.countUntilEOF()
            }
            #expect(received > size && received < size + 1024, "\(received) bytes")
        }
    }

    @Test(
        "tunnel_idle_timeout: an idle WebSocket tunnel is closed on both sides at about the timeout; an active one is not"
    )
    func idleTunnel() async throws {
        try await withDemoProxy(
            limits: LimitsConfig(tunnelIdleTimeout: Self.timeout)
        ) { port, upstream in
            // Active: a message every 200 ms for 2 s, each echoed.
            let echoed = try await onThreadThrowing { () throws -> Int in
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send(webSocketUpgrade)
                guard try client.readResponse().status == 101 else { return -1 }
                var echoed = 0
                for index in 0..<10 {
                    Thread.sleep(forTimeInterval: 0.2)
                    let text = "message \(index)"
                    try client.send(bytes: webSocketFrame(text))
                    // The echo: unmasked, FIN + text, the length, the payload.
                    let frame = try client.read(count: 2 + text.utf8.count)
                    if frame == [0x81, UInt8(text.utf8.count)] + Array(text.utf8) { echoed += 1 }
                }
                return echoed
            }
            #expect(echoed == 10)
            // Idle: closed at about the timeout, on both sides.
            let (end, elapsed) = try await onThreadThrowing { () throws -> (ReadEnd, Duration) in
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send(webSocketUpgrade)
                guard try client.readResponse().status == 101 else { return (.data(-1), .zero) }
                return timed { client.readEnd() }
            }
            #expect(end == .eof)
            #expect(elapsed >= Self.earliest && elapsed < Self.latest, "closed after \(elapsed)")
            print("tunnel_idle_timeout 600ms: idle tunnel closed after \(elapsed)")
            #expect(try await eventually { (try? openUpstreamConnections(upstream)) == 0 })
        }
    }
}

import Foundation
import GatewayConfig
import GatewayCore
import Testing

@testable import Gateway

/// A server on one listener ("web") with the routing test configuration, which also names an
/// "admin" listener the server is not given.
private func withRoutingServer<T>(
    _ body: (TestListener, GatewayServer, CountRecorder) async throws -> T
) async throws -> T {
    let listener = try TestListener()
    let unused = try TestListener(name: "admin")
    defer {
        listener.close()
        unused.close()
    }
    return try await withServer(
        configuration: try routingConfiguration(listener, unused), listeners: [listener]
    ) { server, counts in
        try await body(listener, server, counts)
    }
}

private func routingConfiguration(_ publicListener: TestListener, _ adminListener: TestListener)
    throws
    -> GatewayConfiguration
{
    GatewayConfiguration(
        listeners: [try publicListener.config, try adminListener.config],
        routes: [
            directRoute("health", RouteMatch(path: "/healthz", methods: ["GET", "HEAD"]), body: "ok"),
            directRoute(
                "api", RouteMatch(pathPrefix: "/v1/", host: .exact("api.example.com")), body: "api"),
            directRoute("wildcard", RouteMatch(host: .suffix(".example.com")), body: "wild"),
            directRoute("admin", listener: "admin", RouteMatch(pathPrefix: "/"), body: "admin"),
            directRoute(
                "submit", RouteMatch(path: "/submit", methods: ["POST"]), status: 201, body: "created",
                headers: [
                    HeaderField(name: "Content-Type", value: "text/plain"),
                    HeaderField(name: "X-Route", value: "submit"),
                ]
            ),
            directRoute(
                "static", RouteMatch(pathPrefix: "/static"), body: "static",
                headers: [HeaderField(name: "Server", value: "custom")]),
            directRoute("empty", RouteMatch(path: "/empty"), status: 204, body: ""),
        ])
}

@Suite("HTTP behaviour", .timeLimit(.minutes(1)))
struct HTTPTests {
    @Test(
        "routing by path, path prefix, host, methods and listener; 404 otherwise",
        .timeLimit(.minutes(1)))
    func routing() async throws {
        let publicListener = try TestListener(name: "public")
        let adminListener = try TestListener(name: "admin")
        defer {
            publicListener.close()
            adminListener.close()
        }
        let configuration = try routingConfiguration(publicListener, adminListener)
        try await withServer(configuration: configuration, listeners: [publicListener, adminListener]) {
            _, _ in
            let port = publicListener.port
            // path, methods, query excluded
            var response = try fetch(port: port, "/healthz")
            #expect(response.status == 200)
            #expect(response.body == "ok")
            #expect(response.header("server") == "gatewayd")
            #expect(response.header("content-length") == "2")
            #expect(response.header("connection") == nil)
            response = try fetch(port: port, "/healthz?verbose=1")
            #expect(response.body == "ok")
            response = try fetch(port: port, "HEAD", "/healthz")
            #expect(response.status == 200)
            #expect(response.header("content-length") == "2")
            #expect(response.body == "")
            response = try fetch(port: port, "DELETE", "/healthz")
            #expect(response.status == 404)
            response = try fetch(port: port, "/healthz/more")
            #expect(response.status == 404)

            // host: exact (case-insensitive, port stripped) + prefix
            response = try fetch(port: port, "/v1/users", headers: ["Host: API.Example.com:8080"])
            #expect(response.body == "api")
            response = try fetch(port: port, "/v2/users", headers: ["Host: api.example.com"])
            #expect(response.body == "wild")  // falls through to the suffix route
            response = try fetch(port: port, "http://api.example.com/v1/x?y", headers: ["Host: other"])
            #expect(response.body == "api")  // absolute-form target: its authority is the host
            // host: suffix
            response = try fetch(port: port, "/anything", headers: ["Host: a.b.example.com"])
            #expect(response.body == "wild")
            response = try fetch(port: port, "/anything", headers: ["Host: example.com"])
            #expect(response.status == 404)
            response = try fetch(port: port, "/anything", headers: ["Host: badexample.com"])
            #expect(response.status == 404)

            // listener
            response = try fetch(port: adminListener.port, "/anything")
            #expect(response.body == "admin")
            response = try fetch(port: port, "/anything")
            #expect(response.status == 404)
            #expect(response.body.hasPrefix(#"{"error":"no route","request_id":""#))
            #expect(response.body.contains(response.header("x-request-id") ?? "missing"))
            #expect(response.header("content-type") == "application/json")
            #expect(response.header("server") == "gatewayd")
            // routes without `listener` apply to every listener, in config order
            response = try fetch(port: adminListener.port, "/healthz")
            #expect(response.body == "ok")

            // methods + configured headers; the request body is dropped
            response = try fetch(port: port, "POST", "/submit", body: "hello")
            #expect(response.status == 201)
            #expect(response.body == "created")
            #expect(response.header("x-route") == "submit")
            #expect(response.header("content-type") == "text/plain")
            response = try fetch(port: port, "GET", "/submit")
            #expect(response.status == 404)

            // a configured server header wins
            response = try fetch(port: port, "/static/app.js")
            #expect(response.body == "static")
            #expect(response.header("server") == "custom")
            #expect(response.headers.filter { $0.name.lowercased() == "server" }.count == 1)

            // 204: no body, no content-length
            response = try fetch(port: port, "/empty")
            #expect(response.status == 204)
            #expect(response.header("content-length") == nil)
        }
    }

    @Test(
        "keep-alive: bodies (sized and chunked) are skipped, the connection is reused",
        .timeLimit(.minutes(1)))
    func keepAliveWithBodies() async throws {
        try await withRoutingServer { listener, server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
            var response = try client.readResponse()
            #expect(response.status == 201)
            try client.send(
                "POST /submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            response = try client.readResponse()
            #expect(response.status == 201)
            try client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            response = try client.readResponse()
            #expect(response.body == "ok")
            #expect(server.connectionCount == 1)
        }
    }

    @Test("Expect: 100-continue gets an interim 100", .timeLimit(.minutes(1)))
    func expectContinue() async throws {
        try await withRoutingServer { listener, _, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send(
                "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            let interim = try client.readResponse()
            #expect(interim.status == 100)
            try client.send("abc")
            let response = try client.readResponse()
            #expect(response.status == 201)
        }
    }

    @Test("HTTP/1.0: closes unless keep-alive was asked for", .timeLimit(.minutes(1)))
    func http10() async throws {
        try await withRoutingServer { listener, _, _ in
            // Plain HTTP/1.0: Connection: close, then a clean EOF.
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("GET /healthz HTTP/1.0\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.body == "ok")
            #expect(response.closesConnection)
            #expect(client.readEnd() == .eof)

            // HTTP/1.0 + keep-alive: told explicitly, and the connection stays usable.
            let keepAlive = try RawClient(port: listener.port)
            defer { keepAlive.close() }
            for _ in 0..<2 {
                try keepAlive.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let response = try keepAlive.readResponse()
                #expect(response.body == "ok")
                #expect(response.header("connection")?.lowercased() == "keep-alive")
            }
        }
    }

    @Test(
        "Connection: close: response says so, then a clean EOF even with unread input",
        .timeLimit(.minutes(1)))
    func connectionClose() async throws {
        try await withRoutingServer { listener, server, counts in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            // A request pipelined after the closing one must be discarded, not answered, and
            // must not turn our close into a reset.
            try client.send(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    + "GET /static HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE GARBAGE\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.body == "ok")
            #expect(response.closesConnection)
            #expect(client.readEnd() == .eof)
            // Bytes sent after our FIN are discarded too, and do not reset the connection.
            try? client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            client.close()
            #expect(try await eventually { server.connectionCount == 0 })
            #expect(counts.last == 0)
        }
    }

    @Test(
        "Connection: close and nothing more sent: closed at once, without waiting for the client's FIN",
        .timeLimit(.minutes(1)))
    func closeWithoutLinger() async throws {
        try await withRoutingServer { listener, server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.closesConnection)
            #expect(client.readEnd() == .eof)
            // The client keeps its side open: a lingering server would hold the connection
            // for `lingerTimeout` (2 s) waiting for its FIN.
            #expect(try await eventually(timeout: .milliseconds(500)) { server.connectionCount == 0 })
        }
    }

    @Test(
        "Connection: close with a large upload behind it: the response survives (linger, no RST)",
        .timeLimit(.minutes(1)))
    func lingeringClose() async throws {
        try await withRoutingServer { listener, server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            // The server answers after the first few KB; 512 KB more are still arriving when
            // it closes. Closing with unread input would send RST (and lose the response on
            // many clients); lingering reads them away and ends with FIN.
            let junk = String(repeating: "x", count: 512 * 1024)
            let result = await onThread {
                Result { () throws(ClientError) -> (TestResponse, ReadEnd) in
                    try client.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + junk)
                    let response = try client.readResponse()
                    return (response, client.readEnd())
                }
            }
            let (response, end) = try result.get()
            #expect(response.body == "ok")
            #expect(response.closesConnection)
            #expect(end == .eof)
            client.close()
            #expect(try await eventually { server.connectionCount == 0 })
        }
    }

    @Test("pipelined requests are answered in order", .timeLimit(.minutes(1)))
    func pipelining() async throws {
        try await withRoutingServer { listener, _, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
                    + "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /static/x HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try client.readResponse().body == "ok")
            #expect(try client.readResponse().body == "created")
            #expect(try client.readResponse().status == 404)
            let head = try client.readResponse(bodyless: true)
            #expect(head.status == 200)
            #expect(head.body == "")
            #expect(try client.readResponse().body == "static")
            // And the connection is still good.
            try client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try client.readResponse().body == "ok")
        }
    }

    @Test("a malformed request gets 400 and the connection closes", .timeLimit(.minutes(1)))
    func malformed() async throws {
        try await withRoutingServer { listener, server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("THIS IS NOT HTTP\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.status == 400)
            #expect(response.closesConnection)
            #expect(client.readEnd() == .eof)
            client.close()
            #expect(try await eventually { server.connectionCount == 0 })
        }
    }

    @Test(
        "a client that half-closes after its request still gets the response", .timeLimit(.minutes(1)))
    func halfClose() async throws {
        try await withRoutingServer { listener, server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /static HTTP/1.1\r\nHost: x\r\n\r\n")
            client.shutdownOutput()
            #expect(try client.readResponse().body == "ok")
            let last = try client.readResponse()
            #expect(last.body == "static")
            #expect(client.readEnd() == .eof)
            #expect(try await eventually { server.connectionCount == 0 })
        }
    }

    @Test("the configured backlog is kept", .timeLimit(.minutes(1)))
    func backlogRestored() async throws {
        let listener = try TestListener(backlog: 1000)
        defer { listener.close() }
        let configuration = GatewayConfiguration(
            listeners: [try listener.config], routes: [directRoute("all", RouteMatch(), body: "x")])
        try await withServer(configuration: configuration, listeners: [listener]) { _, _ in
            let response = try fetch(port: listener.port, "/")
            #expect(response.body == "x")
            let limit = try listenQueueLimit(port: listener.port)
            #expect(limit == 1000)
        }
    }

    @Test("start fails clearly for an fd that is not a listening socket", .timeLimit(.minutes(1)))
    func startFailure() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        let configuration = GatewayConfiguration(
            listeners: [try listener.config], routes: [directRoute("all", RouteMatch(), body: "x")])
        let server = try GatewayServer(
            configuration: configuration, generation: 1, logger: testLogger(), connectionCountDidChange: { _ in })
        let notListening = socket(
            AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let good = listener.handOff()
        do {
            try await server.start(listeners: [
                good, HandedOffListener(name: "broken", fd: notListening, backlog: 128),
            ])
            Issue.record("start should have failed")
        } catch {
            #expect("\(error)".contains("listener \"broken\""), "\(error)")
            #expect("\(error)".contains("not listening"), "\(error)")
        }
        // A failed server cannot be started again.
        await #expect(throws: GatewayServerError.self) {
            try await server.start(listeners: [])
        }
        // (Both fds were taken over and closed; not checked here: with tests running in
        // parallel the numbers may already be reused.)
        await server.shutdownNow()
    }

    @Test("a header with a line break fails start, naming the route", .timeLimit(.minutes(1)))
    func invalidHeader() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        let configuration = GatewayConfiguration(
            listeners: [try listener.config],
            routes: [
                directRoute(
                    "evil", RouteMatch(), body: "x",
                    headers: [HeaderField(name: "x", value: "a\r\nset-cookie: b")])
            ])
        let server = try GatewayServer(
            configuration: configuration, generation: 1, logger: testLogger(), connectionCountDidChange: { _ in })
        do {
            try await server.start(listeners: [listener.handOff()])
            Issue.record("start should have failed")
        } catch {
            #expect("\(error)".contains("evil"))
        }
        await server.shutdownNow()
    }
}

@Suite("Router")
struct RouterTests {
    @Test func hostParsing() {
        #expect(String(Substring(hostWithoutPort(Substring("a.com:80").utf8))) == "a.com")
        #expect(String(Substring(hostWithoutPort(Substring("[::1]:80").utf8))) == "[::1]")
        #expect(String(Substring(hostWithoutPort(Substring("a.com.").utf8))) == "a.com")
        #expect(hostMatches(.exact(Array("a.com".utf8)), "A.COM:8080"))
        #expect(hostMatches(.suffix(Array(".a.com".utf8)), "x.A.com"))
        #expect(!hostMatches(.suffix(Array(".a.com".utf8)), "a.com"))
        #expect(!hostMatches(.suffix(Array(".a.com".utf8)), ".a.com"))
    }
}

/// The Send-Q column of `ss -ltn` for a listening socket: its accept queue limit (the backlog).
func listenQueueLimit(port: UInt16) throws -> Int? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/ss")
    if !FileManager.default.fileExists(atPath: "/usr/bin/ss") {
        process.executableURL = URL(fileURLWithPath: "/bin/ss")
    }
    process.arguments = ["-ltnH", "sport = :\(port)"]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    for line in output.split(separator: "\n") {
        let columns = line.split(separator: " ", omittingEmptySubsequences: true)
        // State Recv-Q Send-Q Local:Port Peer:Port
        if columns.count >= 4, columns[3].hasSuffix(":\(port)") {
            return Int(columns[2])
        }
    }
    return nil
}

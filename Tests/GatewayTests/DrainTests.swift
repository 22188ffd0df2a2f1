import Foundation
import GatewayConfig
import GatewayCore
import Synchronization
import Testing

@testable import Gateway

private func generationConfiguration(_ listener: TestListener, body: String) throws
    -> GatewayConfiguration
{
    GatewayConfiguration(
        listeners: [try listener.config],
        routes: [directRoute("all", RouteMatch(), body: body)])
}

private func seconds(_ duration: Duration) -> Double {
    let (s, attoseconds) = duration.components
    return Double(s) + Double(attoseconds) / 1e18
}

/// Timing-sensitive (the 1 s idle grace): one at a time.
@Suite("Drain", .serialized, .timeLimit(.minutes(1)))
struct DrainTests {
    @Test(
        "an idle keep-alive connection is closed after the grace, with FIN not RST",
        .timeLimit(.minutes(1)))
    func idleConnectionClosedAfterGrace() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        try await withServer(
            configuration: try generationConfiguration(listener, body: "A"), listeners: [listener]
        ) {
            server, counts in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            let first = try client.readResponse()
            #expect(first.body == "A")
            #expect(!first.closesConnection)
            #expect(server.connectionCount == 1)

            let clock = ContinuousClock()
            let drainStart = clock.now
            let drain = Task {
                await server.drain()
                return clock.now
            }
            let end = await onThread { client.readEnd() }
            let closedAfter = seconds(clock.now - drainStart)
            #expect(end == .eof)
            #expect(closedAfter >= 0.8, "closed after \(closedAfter) s: the grace is 1 s")
            #expect(closedAfter < 2.5, "closed after \(closedAfter) s")

            // The client closes after EOF: the server stops lingering and drain() returns.
            client.close()
            let drained = await drain.value
            #expect(seconds(drained - drainStart) < 3)
            #expect(server.connectionCount == 0)
            #expect(counts.last == 0)
        }
    }

    @Test(
        "a request arriving during the grace is served with Connection: close", .timeLimit(.minutes(1)))
    func requestDuringGrace() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        try await withServer(
            configuration: try generationConfiguration(listener, body: "A"), listeners: [listener]
        ) {
            server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try client.readResponse()

            let drain = Task { await server.drain() }
            #expect(try await eventually { server.listenersClosedByDrain })
            try await Task.sleep(for: .milliseconds(300))
            try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            let response = try await onThread { Result { try client.readResponse() } }.get()
            #expect(response.body == "A")
            #expect(response.closesConnection)
            #expect(client.readEnd() == .eof)
            client.close()
            await drain.value
            #expect(server.connectionCount == 0)
        }
    }

    @Test(
        "a request in flight when the drain starts completes, with Connection: close",
        .timeLimit(.minutes(1)))
    func inFlightRequestCompletes() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        try await withServer(
            configuration: try generationConfiguration(listener, body: "A"), listeners: [listener]
        ) {
            server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            // Half a request body: the request is in flight.
            try client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
            try await Task.sleep(for: .milliseconds(200))

            let drain = Task { await server.drain() }
            // Well past the idle grace: an in-flight request is never cut.
            try await Task.sleep(for: .milliseconds(1500))
            #expect(server.connectionCount == 1)
            try client.send("world")
            let response = try await onThread { Result { try client.readResponse() } }.get()
            #expect(response.status == 200)
            #expect(response.body == "A")
            #expect(response.closesConnection)
            #expect(client.readEnd() == .eof)
            client.close()
            await drain.value
            #expect(server.connectionCount == 0)
        }
    }

    @Test(
        "after drain starts, new connections wait in the shared queue for the next generation",
        .timeLimit(.minutes(1)))
    func newConnectionsGoToNextGeneration() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        let serverA = try GatewayServer(
            configuration: try generationConfiguration(listener, body: "A"), generation: 1, loops: 2,
            logger: testLogger(), connectionCountDidChange: { _ in })
        let serverB = try GatewayServer(
            configuration: try generationConfiguration(listener, body: "B"), generation: 2, loops: 1,
            logger: testLogger(), connectionCountDidChange: { _ in })
        do {
            try await serverA.start(listeners: [listener.handOff()])
            // An old keep-alive client keeps A's drain going for the grace period.
            let old = try RawClient(port: listener.port)
            defer { old.close() }
            try old.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try old.readResponse().body == "A")

            let drain = Task { await serverA.drain() }
            #expect(try await eventually { serverA.listenersClosedByDrain })

            // The kernel completes the handshake (the master's copy keeps the socket
            // listening) but nobody accepts: no answer, no EOF, no reset.
            let queued = try RawClient(port: listener.port)
            defer { queued.close() }
            try queued.send("GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
            queued.setTimeout(0.5)
            #expect(await onThread { queued.readEnd() } == .timeout)

            // The next generation takes it from the queue.
            try await serverB.start(listeners: [listener.handOff()])
            queued.setTimeout(5)
            let response = try await onThread { Result { try queued.readResponse() } }.get()
            #expect(response.body == "B")
            #expect(!response.closesConnection)

            // The old client is told goodbye by A after the grace.
            #expect(await onThread { old.readEnd() } == .eof)
            old.close()
            await drain.value
            #expect(serverA.connectionCount == 0)
        } catch {
            Issue.record(error)
        }
        await serverA.shutdownNow()
        await serverB.shutdownNow()
    }

    @Test(
        "shutdownNow during a drain closes what is left, and drain() returns", .timeLimit(.minutes(1)))
    func drainIdleAndShutdownNow() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        try await withServer(
            configuration: try generationConfiguration(listener, body: "A"), listeners: [listener]
        ) {
            server, _ in
            let client = try RawClient(port: listener.port)
            defer { client.close() }
            try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try client.readResponse()
            try client.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
            try await Task.sleep(for: .milliseconds(100))
            // A drain would wait for this request forever (the master's drain timeout ends it):
            let drain = Task { await server.drain() }
            try await Task.sleep(for: .milliseconds(1200))
            #expect(server.connectionCount == 1)
            await server.shutdownNow()
            await drain.value
            #expect(server.connectionCount == 0)
            let end = await onThread { client.readEnd() }
            #expect(end == .eof || end == .reset)
        }
    }

    @Test(
        "load: 8 clients (keep-alive, and one connection per request), A drains while B starts: zero failed requests",
        .timeLimit(.minutes(1)))
    func handoffUnderLoad() async throws {
        let listener = try TestListener()
        defer { listener.close() }
        let countsA = CountRecorder()
        let serverA = try GatewayServer(
            configuration: try generationConfiguration(listener, body: "A"), generation: 1, loops: 2,
            logger: testLogger(), connectionCountDidChange: { countsA.record($0) })
        let serverB = try GatewayServer(
            configuration: try generationConfiguration(listener, body: "B"), generation: 2, loops: 2,
            logger: testLogger(), connectionCountDidChange: { _ in })
        let stats = LoadStats()
        do {
            try await serverA.start(listeners: [listener.handOff()])
            let port = listener.port
            let clients = Task {
                await withTaskGroup(of: Void.self) { group in
                    // Keep-alive clients exercise the lame duck; connection-per-request clients
                    // exercise accepting while the listener changes hands.
                    for index in 0..<8 {
                        let keepAlive = index % 2 == 0
                        group.addTask {
                            await onThread { runLoadClient(port: port, keepAlive: keepAlive, stats: stats) }
                        }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            let drainedWhileLoaded = Mutex(false)
            let drain = Task {
                await serverA.drain()
                if !stats.stop.load(ordering: .acquiring) {
                    drainedWhileLoaded.withLock { $0 = true }
                }
            }
            try await serverB.start(listeners: [listener.handOff()])
            try await Task.sleep(for: .milliseconds(1500))
            stats.stop.store(true, ordering: .releasing)
            await clients.value
            await drain.value

            let result = stats.snapshot()
            #expect(result.failures.isEmpty, "failed requests: \(result.failures.prefix(10))")
            #expect(result.fromA > 0)
            #expect(result.fromB > 0)
            #expect(result.keepAliveClosesSeen > 0)
            #expect(
                drainedWhileLoaded.withLock { $0 }, "A's drain should end while clients are still busy")
            #expect(serverA.connectionCount == 0)
            #expect(countsA.last == 0)
            print(
                "load: \(result.fromA) responses from A, \(result.fromB) from B, "
                    + "\(result.keepAliveClosesSeen) keep-alive connections closed by the drain")
        } catch {
            Issue.record(error)
        }
        stats.stop.store(true, ordering: .releasing)
        await serverA.shutdownNow()
        await serverB.shutdownNow()
    }
}

final class LoadStats: Sendable {
    struct Snapshot {
        var fromA = 0
        var fromB = 0
        /// `Connection: close` on keep-alive requests: the lame duck at work.
        var keepAliveClosesSeen = 0
        var failures: [String] = []
    }

    let stop = Atomic<Bool>(false)
    private let state = Mutex(Snapshot())

    func record(body: String, keepAliveClosed: Bool) {
        self.state.withLock {
            if body == "A" { $0.fromA += 1 } else if body == "B" { $0.fromB += 1 }
            if keepAliveClosed { $0.keepAliveClosesSeen += 1 }
        }
    }

    func fail(_ description: String) {
        self.state.withLock { $0.failures.append(description) }
    }

    func snapshot() -> Snapshot {
        self.state.withLock { $0 }
    }
}

/// A wrk-like client: requests back to back; reconnects after `Connection: close` (every
/// time without `keepAlive`). Any error mid-request (EOF, reset, timeout, refused) is a
/// failed request.
private func runLoadClient(port: UInt16, keepAlive: Bool, stats: LoadStats) {
    let request =
        keepAlive
        ? "GET /load HTTP/1.1\r\nHost: x\r\n\r\n"
        : "GET /load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    var client: RawClient?
    while !stats.stop.load(ordering: .acquiring) {
        do {
            if client == nil {
                client = try RawClient(port: port, timeout: 5)
            }
            try client!.send(request)
            let response = try client!.readResponse()
            if response.status != 200 {
                stats.fail("status \(response.status)")
            }
            stats.record(body: response.body, keepAliveClosed: keepAlive && response.closesConnection)
            if response.closesConnection {
                client!.close()
                client = nil
            }
        } catch {
            stats.fail("\(error)")
            client?.close()
            client = nil
        }
    }
    client?.close()
}

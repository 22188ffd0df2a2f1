import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Drain and zero-loss reloads", .serialized, .timeLimit(.minutes(3)))
struct DrainTests {
    /// The promise: no client sees a failed request because of a reload.
    @Test(
        "zero failed requests across 20 reloads under load",
        arguments: [false, true])
    func zeroFailuresUnderLoad(closeEachRequest: Bool) throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "10s"))
        let port = try gatewayd.port()
        // 20 reloads take about 1.5 s (release build); 8 s of load covers them with room to
        // spare on a slow machine, and the test checks that they did happen under load.
        let load = try WrkLoad(port: port, seconds: 8, connections: 32, closeEachRequest: closeEachRequest)
        try gatewayd.reloadsUnderLoad(load, rounds: 20) { round in
            Configs.hello(body: "v\(round % 2 == 0 ? 2 : 1)", drainTimeout: "10s")
        }
    }

    @Test("an idle keep-alive connection is closed politely by the draining worker")
    func idleKeepAliveClosed() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "20s"))
        let port = try gatewayd.port()
        let connection = try TestConnection(port: port)
        let first = try connection.request()
        #expect(first.body == "v1")
        #expect(first.header("connection")?.lowercased() != "close")
        try gatewayd.writeConfig(Configs.hello(body: "v2", drainTimeout: "20s"))
        #expect(try gatewayd.reload().status == 0)
        let began = ContinuousClock.now
        connection.setTimeout(.seconds(10))
        let outcome = connection.waitForClose()
        let took = ContinuousClock.now - began
        #expect(outcome == .eof, "expected a FIN, got \(outcome)")
        // Closed after the idle grace (about 1 s), long before the 20 s drain timeout.
        #expect(took < .seconds(5), "closed after \(took)")
        try gatewayd.waitUntilSingleGeneration(timeout: .seconds(10))
    }

    @Test("a request in flight on a keep-alive connection during a reload gets its answer with Connection: close")
    func keepAliveConnectionGetsConnectionClose() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "20s"))
        let port = try gatewayd.port()
        let connection = try TestConnection(port: port)
        #expect(try connection.request().body == "v1")
        try gatewayd.writeConfig(Configs.hello(body: "v2", drainTimeout: "20s"))
        #expect(try gatewayd.reload().status == 0)
        // Within the idle grace, the next request on the old connection is still answered by
        // the old generation, and told to reconnect.
        let second = try connection.request()
        #expect(second.status == 200)
        #expect(second.body == "v1")
        #expect(second.header("connection")?.lowercased() == "close")
        #expect(connection.waitForClose() == .eof)
        #expect(try httpGet(port: port).body == "v2")
    }

    @Test("a half-sent request is cut at the drain timeout and the old workers are gone by then")
    func halfSentRequestCutAtDrainTimeout() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "2s"))
        let port = try gatewayd.port()
        let oldWorkers = try gatewayd.status().generations[0].workers.map(\.pid)
        let connection = try TestConnection(port: port)
        try connection.send("GET / HTTP/1.1\r\nHost: localhost\r\nX-Half: ")
        // Wait until a worker has counted the connection, so it is surely the old generation's.
        try waitUntil("the connection to be counted") {
            try gatewayd.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } > 0
        }
        // Before the reload: the drain (and its timer) starts inside it.
        let began = ContinuousClock.now
        #expect(try gatewayd.reload().status == 0)
        connection.setTimeout(.seconds(15))
        let outcome = connection.waitForClose()
        let took = ContinuousClock.now - began
        #expect(outcome == .eof || outcome == .reset)
        // drain_timeout 2 s, then SIGTERM (the worker closes everything at once).
        #expect(took >= .seconds(2), "cut after \(took), before the drain timeout")
        #expect(took < .seconds(6), "cut after \(took)")
        try waitUntil("the old workers to exit", timeout: .seconds(5)) {
            oldWorkers.allSatisfy { !isProcessRunning($0) }
        }
    }

    @Test("gatewayctl stop drains and leaves no gatewayd process and no socket file")
    func stopLeavesNothing() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        #expect(workers.count == 2)
        let result = try gatewayd.gatewayctl(["stop"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try gatewayd.waitForExit() == 0)
        #expect(workers.allSatisfy { !isProcessRunning($0) })
        #expect(!FileManager.default.fileExists(atPath: gatewayd.socketPath))
    }

    @Test("SIGTERM drains; a second SIGTERM stops at once")
    func secondSigtermStopsNow() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "60s"))
        let port = try gatewayd.port()
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        // A half-sent request keeps the drain from finishing on its own.
        let connection = try TestConnection(port: port)
        try connection.send("GET / HTTP/1.1\r\n")
        try waitUntil("the connection to be counted") {
            try gatewayd.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } > 0
        }
        gatewayd.signal(SIGTERM)
        try waitUntil("the stop to begin") { (try? gatewayd.status().state) == .stopping }
        gatewayd.signal(SIGTERM)
        #expect(try gatewayd.waitForExit(timeout: .seconds(10)) == 0)
        #expect(workers.allSatisfy { !isProcessRunning($0) })
    }

    @Test("when the only worker dies, it is replaced and the socket never closes")
    func onlyWorkerReplaced() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 1))
        let port = try gatewayd.port()
        let victim = try gatewayd.status().generations[0].workers[0]
        kill(victim.pid, SIGKILL)
        // The master's copy of the socket stays open meanwhile: a connection made now waits
        // in the queue and is served by the replacement, not refused.
        let response = try httpGet(port: port)
        #expect(response.body == "v1")
        let status = try gatewayd.status()
        #expect(status.generations.map(\.id) == [1])
        #expect(status.generations[0].workers.first?.restarts == 1)
    }

    @Test("a serving worker that dies is replaced")
    func crashedWorkerReplaced() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        let victim = try gatewayd.status().generations[0].workers[0]
        kill(victim.pid, SIGKILL)
        try waitUntil("a replacement worker") {
            let workers = try gatewayd.status().generations[0].workers
            return workers.count == 2 && workers.allSatisfy { $0.state == .ready && $0.pid != victim.pid }
        }
        let replaced = try gatewayd.status().generations[0].workers.first { $0.index == victim.index }
        #expect(replaced?.restarts == 1)
        #expect(try httpGet(port: port).body == "v1")
        #expect(gatewayd.log.contains("killed by signal 9"))
    }
}

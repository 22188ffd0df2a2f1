import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Hostile HTTP input against one real worker: malformed and smuggling-shaped requests,
/// random bytes, mutated requests, and a thousand slowloris connections, while a neighbour
/// keeps being served. The clients are `clients.py fuzz`, `slowloris` and `steady`.
/// Serialized: both tests measure latency on two shared cores.
@Suite("HTTP fuzz and slow clients, real processes", .serialized, .timeLimit(.minutes(2)))
struct HTTPFuzzTests {
    /// 2 s: long enough that a loaded machine does not cut a real client's head, short enough
    /// that a case left waiting for a head (it gets 408) keeps the suite within its minute.
    static let headerTimeout = 2.0

    /// The neighbour's worst latency may not exceed this. Its requests take about a millisecond
    /// (measured: p50 1 ms, worst 8-230 ms); 1 s leaves room for two cores shared with builds,
    /// and is still half of header_timeout, which is what a neighbour stuck behind the hostile
    /// connections would wait.
    static let neighbourLatencyBound = 1000.0

    static func config(upstream: DemoUpstream) -> String {
        """
        workers: 1
        drain_timeout: 5s
        listeners:
          - { name: web, address: "127.0.0.1:0", backlog: 1024 }
        limits: { header_timeout: \(Int(headerTimeout))s }
        upstreams:
          origin:
            endpoints: ["\(upstream.endpoint)"]
        routes:
          - name: direct
            match: { path_prefix: /direct }
            direct_response: { status: 200, headers: { content-type: text/plain }, body: "direct\\n" }
          - name: proxied
            match: { path_prefix: / }
            upstream: origin

        """
    }

    @Test("malformed, smuggling-shaped, random and mutated requests: a 4xx or a close, never a 5xx or a hang")
    func fuzz() throws {
        let seed = fuzzSeed(for: "HTTPFuzzTests.fuzz")
        let upstream = try DemoUpstream()
        let gatewayd = try GatewaydProcess(config: Self.config(upstream: upstream))
        let port = try gatewayd.port()
        let workersBefore = try gatewayd.status().generations.flatMap(\.workers)
        #expect(workersBefore.count == 1)

        let directory = try TemporaryDirectory()
        let stopFile = directory.file("stop")
        let neighbour = try PythonClient(
            [
                "steady", "--port", "\(port)", "--path", "/direct", "--path", "/echo", "--stop-file", stopFile,
            ], timeout: 90)
        // The neighbour's proxied requests reaching the upstream: it is running.
        try waitUntil("the neighbour's first proxied request") { try upstream.requestCount() > 0 }

        // Per case: header_timeout (a head left unfinished gets its 408 then) plus 2 s for a
        // loaded machine; past it the case counts as a hang.
        let caseTimeout = Self.headerTimeout + 2
        let fuzz = try runClient(
            [
                "fuzz", "--port", "\(port)", "--seed", "\(seed)", "--random", "300", "--mutations",
                "300", "--case-timeout", "\(caseTimeout)", "--direct-path", "/direct", "--proxy-path", "/echo",
            ], timeout: 60)
        #expect(neighbour.isRunning, "the neighbour stopped before the fuzz ended")
        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        let steady = try neighbour.wait()

        let cases = fuzz["cases"] as? [[String: Any]] ?? []
        let kinds = Dictionary(grouping: cases) { $0["kind"] as? String ?? "?" }.mapValues(\.count)
        #expect((kinds["malformed"] ?? 0) >= 60, "\(kinds)")
        #expect(kinds["random"] == 300 && kinds["mutated"] == 300, "\(kinds)")
        for failed in cases where failed["ok"] as? Bool != true {
            Issue.record(
                """
                case \(failed["name"] ?? "?") (seed \(seed)): \(failed["why"] ?? "?"); got statuses \
                \(failed["statuses"] ?? []) from \(failed["from"] ?? []), connection \(failed["peer"] ?? "?") after \
                \(failed["ms"] ?? "?") ms; expected \(failed["expect"] ?? "?"); sent \(failed["sent_length"] ?? "?") \
                bytes: \(String(describing: failed["sent"] ?? "").debugDescription); bodies \
                \(failed["response_bodies"] ?? [])
                """)
        }
        // The same rules, checked here rather than trusted to the client: no 5xx, no hang.
        for result in cases {
            let statuses = result["statuses"] as? [Int] ?? []
            #expect(!statuses.contains { $0 >= 500 }, "\(result)")
            #expect(["closed", "reset"].contains(result["peer"] as? String ?? "open"), "\(result)")
        }
        #expect(fuzz.exit == 0, "\(fuzz["failures"] ?? "?") failing cases")
        #expect(cases.count >= 660)

        #expect(steady.exit == 0, "\(steady)")
        #expect(steady["failed"] as? Int == 0, "\(steady)")
        #expect((steady["succeeded"] as? Int ?? 0) >= 20, "\(steady)")
        let worst = steady["max_ms"] as? Double ?? .infinity
        #expect(worst < Self.neighbourLatencyBound, "the neighbour waited \(worst) ms: \(steady)")

        let workersAfter = try gatewayd.status().generations.flatMap(\.workers)
        #expect(workersAfter.map(\.pid) == workersBefore.map(\.pid), "the worker was replaced")
        #expect(workersAfter.allSatisfy { $0.restarts == 0 }, "\(workersAfter)")
        print(
            "fuzz: \(cases.count) cases (\(kinds)) in \(fuzz["seconds"] ?? "?") s, slowest \(fuzz["slowest_ms"] ?? "?") ms; "
                + "outcomes \(fuzz["summary"] ?? "?"); neighbour: \(steady["succeeded"] ?? "?") requests, "
                + "p50 \(steady["p50_ms"] ?? "?") ms, p99 \(steady["p99_ms"] ?? "?") ms, max \(worst) ms")
    }

    @Test("1000 slowloris connections are cut at header_timeout while a neighbour is served")
    func thousandSlowlorisConnections() throws {
        let upstream = try DemoUpstream()
        let gatewayd = try GatewaydProcess(config: Self.config(upstream: upstream))
        let port = try gatewayd.port()
        let worker = try gatewayd.status().generations.flatMap(\.workers)
        let connections = 1000
        // One header byte a second (the issue's pace); --duration bounds a server that never cuts.
        let slowloris = try PythonClient(
            [
                "slowloris", "--port", "\(port)", "--connections", "\(connections)", "--interval", "1", "--duration",
                "10",
            ],
            timeout: 14)
        // The worker reports its count at most every 200 ms; all 1000 are open together
        // only if they were made well within header_timeout.
        try waitUntil("the worker to count the slow connections", timeout: .seconds(Int(Self.headerTimeout))) {
            try gatewayd.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } >= connections
        }
        let directory = try TemporaryDirectory()
        let stopFile = directory.file("stop")
        let neighbour = try PythonClient(
            ["steady", "--port", "\(port)", "--path", "/direct", "--path", "/echo", "--stop-file", stopFile],
            timeout: 30)
        let result = try slowloris.wait()
        #expect(neighbour.isRunning, "the neighbour stopped before the slow connections were cut")
        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        let steady = try neighbour.wait()

        let ended = result["results"] as? [[String: Any]] ?? []
        #expect(ended.count == connections, "\(result["summary"] ?? "?")")
        #expect(result.exit == 0, "not every slow connection was ended by the server: \(result["summary"] ?? "?")")
        // Cut no earlier than header_timeout after the connect (the timer starts at accept,
        // after it), and no later than 1 s past it: 1000 timers firing at once on one event
        // loop, and a Python client reading 1000 sockets, on two shared cores.
        let slack = 1.0
        var lifetimes: [Double] = []
        for connection in ended {
            #expect(slowlorisConnectionWasCut(connection), "\(connection)")
            let lifetime = connection["lifetime_s"] as? Double ?? -1
            lifetimes.append(lifetime)
            #expect(
                lifetime >= Self.headerTimeout - 0.05 && lifetime < Self.headerTimeout + slack,
                "connection cut after \(lifetime) s: \(connection)")
        }
        #expect(steady.exit == 0, "\(steady)")
        #expect(steady["failed"] as? Int == 0, "\(steady)")
        #expect((steady["succeeded"] as? Int ?? 0) >= 10, "\(steady)")
        let worst = steady["max_ms"] as? Double ?? .infinity
        #expect(worst < Self.neighbourLatencyBound, "the neighbour waited \(worst) ms: \(steady)")
        // Every cut connection is released: lingering ends when the client closes.
        try waitUntil("the worker to release the slow connections", timeout: .seconds(5)) {
            try gatewayd.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } == 0
        }
        let after = try gatewayd.status().generations.flatMap(\.workers)
        #expect(after.map(\.pid) == worker.map(\.pid) && after.allSatisfy { $0.restarts == 0 }, "\(after)")
        print(
            "slowloris: \(connections) connections, all made within \(result["last_connected_s"] ?? "?") s; "
                + "\(result["summary"] ?? "?"); lifetimes \(lifetimes.min() ?? -1)-\(lifetimes.max() ?? -1) s "
                + "(header_timeout \(Self.headerTimeout) s); neighbour meanwhile: \(steady["succeeded"] ?? "?") "
                + "requests, p50 \(steady["p50_ms"] ?? "?") ms, p99 \(steady["p99_ms"] ?? "?") ms, max \(worst) ms")
    }
}

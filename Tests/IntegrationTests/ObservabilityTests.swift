import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The live log level and the metrics that follow Prometheus' conventions, on real processes.
@Suite("Observability", .serialized, .timeLimit(.minutes(3)))
struct ObservabilityTests {
    static func config(body: String = "v1", workers: Int = 2) -> String {
        """
        workers: \(workers)
        drain_timeout: 5s
        listeners:
          - { name: web, address: "127.0.0.1:0" }
          - { name: admin, address: "127.0.0.1:0" }
        admin: { listener: admin }
        routes:
          - name: hello
            match: { path_prefix: / }
            direct_response: { status: 200, body: "\(body)" }

        """
    }

    @Test("log-level changes the master and every worker at once, with no new process; new workers start at it")
    func liveLogLevel() throws {
        let gatewayd = try GatewaydProcess(config: Self.config())
        let port = try gatewayd.port()
        let before = try gatewayd.status()
        let shown = try gatewayd.gatewayctl(["log-level"])
        #expect(shown.status == 0 && shown.stdout.contains("proxy       info"), "\(shown.stdout)")
        #expect(try httpGet(port: port, path: "/quiet").status == 200)

        let set = try gatewayd.gatewayctl(["log-level", "debug", "--target", "proxy"])
        #expect(set.status == 0, "\(set.stderr)")
        #expect(set.stdout.contains("proxy       debug") && set.stdout.contains("supervisor  info"), "\(set.stdout)")
        // The workers hear it over their channels, in order with nothing else: a request right
        // after may still race the frame, so wait for the first step line.
        try waitUntil("a worker to log a request step by step") {
            _ = try? httpGet(port: port, path: "/loud")
            return gatewayd.log.contains("routed") && gatewayd.log.contains("target=/loud")
        }
        let log = gatewayd.log
        let proxyLines = log.split(separator: "\n").filter { $0.contains(" gatewayd-proxy[") }
        for step in ["accepted", "routed", "answered"] {
            #expect(proxyLines.contains { $0.contains("]: \(step) ") }, "no '\(step)' line:\n\(log)")
        }
        #expect(!log.contains("target=/quiet"), "nothing was logged at info")
        let after = try gatewayd.status()
        #expect(after.generations.map(\.id) == before.generations.map(\.id), "no reload")
        #expect(after.generations.flatMap(\.workers).map(\.pid) == before.generations.flatMap(\.workers).map(\.pid))

        // A reload's workers come from the spares, started before the change: they get the
        // level of the moment in their handoff.
        try gatewayd.writeConfig(Self.config(body: "v2"))
        #expect(try gatewayd.reload().status == 0)
        let mark = gatewayd.log.count
        try waitUntil("the new generation to log at debug") {
            _ = try? httpGet(port: port, path: "/after-reload")
            return String(gatewayd.log.dropFirst(mark)).contains("target=/after-reload")
        }
        #expect(try gatewayd.gatewayctl(["log-level", "loud"]).status == 1)

        let events = try gatewayd.gatewayctl(["events", "--json"]).stdout.split(separator: "\n").map {
            try JSONDecoder().decode(GatewayEvent.self, from: Data($0.utf8))
        }
        let change = try #require(events.first { $0.type == .logLevel })
        #expect(change.level == "debug" && change.target == "proxy" && change.peerUID == getuid())
    }

    @Test(
        "/metrics: the master's families (reloads, phases, generations, restarts, draining, build) and request durations; promtool finds nothing to say"
    )
    func metricsFollowConventions() throws {
        let gatewayd = try GatewaydProcess(config: Self.config())
        let port = try gatewayd.port()
        let admin = try gatewayd.port(of: "admin")
        for _ in 0..<3 { #expect(try httpGet(port: port).status == 200) }
        try gatewayd.writeConfig(Self.config(body: "v2"))
        #expect(try gatewayd.reload().status == 0)
        try gatewayd.writeConfig("listeners: [")
        #expect(try gatewayd.reload().status == 1)
        let victim = try #require(try gatewayd.status().generations.first { $0.state == .serving }?.workers.first)
        kill(victim.pid, SIGKILL)
        try waitUntil("the replacement worker") {
            try gatewayd.status().generations.first { $0.state == .serving }?.workers.first?.restarts == 1
                && gatewayd.status().generations.first { $0.state == .serving }?.workers.first?.state == .ready
        }
        try gatewayd.waitUntilSingleGeneration()
        // The master samples its gauges every 0.5 s (its worker watchdog's tick).
        var text = ""
        try waitUntil("the generations gauge to show one serving generation and nothing draining") {
            text = try httpGet(port: admin, path: "/metrics").body
            return text.contains("gatewayd_generations{state=\"serving\"} 1\n")
                && text.contains("gatewayd_generations{state=\"draining\"} 0\n")
        }
        for line in [
            "gatewayd_reloads_total{outcome=\"ok\"} 1", "gatewayd_reloads_total{outcome=\"failed\"} 1",
            "gatewayd_reload_phase_duration_seconds_count{phase=\"ready\"} 1",
            "gatewayd_reload_phase_duration_seconds_count{phase=\"validate\"} 2",
            "gatewayd_worker_restarts_total 1", "gatewayd_draining_connections 0",
            "gatewayd_request_duration_seconds_count{route=\"hello\"} 3",
        ] {
            #expect(text.contains(line + "\n"), "\(line)\n\(text)")
        }
        let version = try #require(try gatewayd.status().version)
        #expect(text.contains("version=\"\(version)\"} 1\n") && text.contains("# TYPE gatewayd_build_info gauge"))
        // Every family has its help.
        let types = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        for family in types { #expect(text.contains("# HELP \(family) "), "no HELP for \(family)") }

        let exposition = gatewayd.directory.file("metrics.txt")
        try text.write(toFile: exposition, atomically: false, encoding: .utf8)
        let check = try runCommand("/bin/sh", ["-c", "promtool check metrics < \(exposition)"])
        #expect(check.status == 0 && check.stdout.isEmpty && check.stderr.isEmpty, "\(check)")
    }

    @Test(
        "access log lines have host, user agent, referer, protocol and upstream status, and the path apart from the query"
    )
    func accessLogFields() throws {
        let directory = try TemporaryDirectory()
        let logPath = directory.file("access.log")
        let gatewayd = try GatewaydProcess(
            config: Self.config(workers: 1) + "access_log: { path: \(logPath), format: json }\n")
        let connection = try TestConnection(port: try gatewayd.port())
        try connection.send(
            "GET /a/b?q=1&r=2 HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: probe/1.0\r\nReferer: http://r.test/\r\n\r\n")
        #expect(try connection.readResponse().status == 200)
        var line: [String: Any] = [:]
        try waitUntil("the access log line") {
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            guard let first = text.split(separator: "\n").first else { return false }
            line = try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any] ?? [:]
            return true
        }
        #expect(line["path"] as? String == "/a/b" && line["query"] as? String == "q=1&r=2", "\(line)")
        #expect(line["host"] as? String == "gw.test" && line["protocol"] as? String == "HTTP/1.1", "\(line)")
        #expect(line["user_agent"] as? String == "probe/1.0" && line["referer"] as? String == "http://r.test/")
        #expect(line["upstream_status"] is NSNull, "a local answer has no upstream status: \(line)")
    }
}

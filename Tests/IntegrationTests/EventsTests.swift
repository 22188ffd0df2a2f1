import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The master's events: what `gatewayctl events` shows after reloads, a failed reload, a
/// worker's death and a drain, and what `events --follow` and `reload --json` stream.
@Suite("Events", .serialized, .timeLimit(.minutes(3)))
struct EventsTests {
    /// `gatewayctl events --follow --json` as a process of its own, and what it printed so far.
    static func follow(_ gatewayd: GatewaydProcess) throws -> (ChildProcess, () -> String) {
        let output = gatewayd.directory.file("follow.out")
        let follower = try ChildProcess(
            [Binaries.gatewayctl, "events", "--follow", "--json", "--socket", gatewayd.socketPath],
            environment: ProcessInfo.processInfo.environment, output: output)
        return (follower, { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" })
    }

    @Test(
        "a reload, a failed reload (file:line:col), a worker's exit and restart and a drain are events, with phases, diff and the peer's uid"
    )
    func eventsAfterReloads() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        try gatewayd.writeConfig(Configs.hello(body: "v2", listeners: ["web", "extra"]))
        // --json: a JSON line per phase as it ends, then the answer as before.
        let reload = try gatewayd.gatewayctl(["reload", "--json"])
        #expect(reload.status == 0, "\(reload.stderr)")
        let phaseLines = reload.stdout.split(separator: "\n").filter { $0.hasPrefix("{\"phase\"") }
        let phases = try phaseLines.map {
            try #require(try JSONDecoder().decode(ControlStreamLine.self, from: Data($0.utf8)).phase).name
        }
        #expect(phases == ["validate", "bind", "spawn", "ready", "switch"], "\(reload.stdout)")
        #expect(reload.stdout.contains("\"generation\" : 2"), "\(reload.stdout)")

        try gatewayd.writeConfig("workers: 2\nlisteners:\n  - name: web\n    adress: 127.0.0.1:0\n")
        #expect(try gatewayd.reload().status == 1)

        let victim = try #require(try gatewayd.status().generations.first { $0.state == .serving }?.workers.first)
        kill(victim.pid, SIGKILL)
        try waitUntil("the killed worker's replacement to be ready") {
            let serving = try gatewayd.status().generations.first { $0.state == .serving }
            return serving?.workers.first?.restarts == 1 && serving?.workers.first?.state == .ready
        }
        try gatewayd.waitUntilSingleGeneration()

        let result = try gatewayd.gatewayctl(["events", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let events = try result.stdout.split(separator: "\n").map {
            try JSONDecoder().decode(GatewayEvent.self, from: Data($0.utf8))
        }
        #expect(events.map(\.id) == Array(1...events.count), "ids count up from 1")
        #expect(events.first?.type == .start && events.first?.generation == 1)

        let reloads = events.filter { $0.type == .reload }
        let good = try #require(reloads.first)
        #expect(good.outcome == .ok && good.generation == 2)
        #expect(good.trigger == "control socket (uid \(getuid()))" && good.peerUID == getuid())
        #expect(Set(good.phases?.keys.map { $0 } ?? []) == ["validate", "bind", "spawn", "ready", "switch"])
        #expect(good.diff?.routesChanged == ["hello"] && good.diff?.listenersAdded == ["extra"], "\(good)")

        let bad = try #require(reloads.last)
        #expect(bad.outcome == .failed && bad.reason?.hasPrefix("invalid config") == true)
        #expect(bad.details?.contains { $0.contains("gateway.yaml:4:5") } == true, "\(bad)")

        let drain = try #require(events.first { $0.type == .drain })
        #expect(drain.generation == 1 && drain.outcome == .ok && drain.phases?["drain"] != nil)

        let exit = try #require(events.first { $0.type == .workerExit })
        #expect(
            exit.pid == victim.pid && exit.worker == victim.index && exit.reason?.contains("killed by signal 9") == true
        )
        let restart = try #require(events.first { $0.type == .workerRestart })
        #expect(restart.worker == victim.index && restart.generation == 2 && restart.id > exit.id)

        // The timeline for people says the same.
        let text = try gatewayd.gatewayctl(["events"]).stdout
        #expect(text.contains("reload ok, generation 2, by control socket (uid \(getuid()))"), "\(text)")
        #expect(text.contains("changes: listeners added: extra; routes changed: hello"), "\(text)")
        #expect(text.contains("gateway.yaml:4:5"), "\(text)")
    }

    @Test("events --follow streams each new event and a drain counting down, and ends when gatewayd stops")
    func follow() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 1))
        let port = try gatewayd.port()
        // One idle keep-alive connection: the drain has something to count down.
        let held = try TestConnection(port: port)
        #expect(try held.request().status == 200)
        try waitUntil("the worker to report the connection") {
            try gatewayd.status().generations.first?.workers.first?.connections == 1
        }
        let (follower, lines) = try Self.follow(gatewayd)
        defer { if follower.isRunning { kill(follower.pid, SIGKILL) } }
        try waitUntil("the follower to print the start event") { lines().contains("\"type\":\"start\"") }

        try gatewayd.writeConfig(Configs.hello(body: "v2", workers: 1))
        #expect(try gatewayd.reload().status == 0)
        // The drain's lame duck closes the idle connection after its grace (1 s).
        try waitUntil("the drain event") { lines().contains("\"type\":\"drain\"") }
        let text = lines()
        #expect(text.contains("\"type\":\"reload\""), "\(text)")
        #expect(text.contains("{\"drain\":{\"connections\":0,\"generation\":1}}"), "\(text)")
        let drain = try #require(
            text.split(separator: "\n").compactMap { try? JSONDecoder().decode(GatewayEvent.self, from: Data($0.utf8)) }
                .first { $0.type == .drain })
        #expect(drain.connections == 1 && drain.cut == nil)

        gatewayd.signal(SIGTERM)
        try waitUntil("the follower to end with gatewayd") { !follower.isRunning }
        #expect(follower.terminationStatus == 0)
        #expect(lines().contains("\"type\":\"stop\""))
    }

    @Test("events carry over an upgrade, whose new master records it; a follower goes on with the new master")
    func acrossAnUpgrade() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 1, drainTimeout: "2s"))
        let lineage = MasterLineage(gatewayd)
        defer { lineage.stop() }
        try gatewayd.writeConfig(Configs.hello(body: "v2", workers: 1, drainTimeout: "2s"))
        #expect(try gatewayd.reload().status == 0)
        let (follower, lines) = try Self.follow(gatewayd)
        defer { if follower.isRunning { kill(follower.pid, SIGKILL) } }
        try waitUntil("the follower to print the reload") { lines().contains("\"type\":\"reload\"") }

        let upgrade = try lineage.upgrade()
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        let newMaster = try #require(MasterLineage.upgradedPid(upgrade.stdout))
        let events = try gatewayd.gatewayctl(["events", "--json"]).stdout.split(separator: "\n").map {
            try JSONDecoder().decode(GatewayEvent.self, from: Data($0.utf8))
        }
        #expect(events.map(\.type).prefix(3) == [.start, .reload, .drain], "\(events)")
        let upgraded = try #require(events.first { $0.type == .upgrade })
        #expect(upgraded.outcome == .ok && upgraded.masterPid == gatewayd.pid && upgraded.id > events[2].id)
        // The old master ends its followers when it has drained (drain_timeout 2 s at most); the
        // follower then connects again and hears the new master.
        try gatewayd.writeConfig(Configs.hello(body: "v3", workers: 1, drainTimeout: "2s"))
        #expect(try gatewayd.reload().status == 0)
        try waitUntil("the follower to print the new master's reload") {
            lines().split(separator: "\n").contains {
                $0.contains("\"master_pid\":\(newMaster)") && $0.contains("\"type\":\"reload\"")
            }
        }
        #expect(follower.isRunning)
        let ids = lines().split(separator: "\n").compactMap {
            try? JSONDecoder().decode(GatewayEvent.self, from: Data($0.utf8)).id
        }
        #expect(ids == Array(Set(ids)).sorted(), "each event once, in order: \(ids)")
    }
}

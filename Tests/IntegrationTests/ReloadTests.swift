import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real gatewayd processes, real sockets on 127.0.0.1, real clients. Serialized: they share
/// two cores and measure each other otherwise.
@Suite("Reload", .serialized, .timeLimit(.minutes(3)))
struct ReloadTests {
    @Test("a reload changes what is served, and the first new connection after it sees the new config")
    func reloadChangesWhatIsServed() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        #expect(try httpGet(port: port).body == "v1")
        for round in 2...6 {
            try gatewayd.writeConfig(Configs.hello(body: "v\(round)"))
            let result = try gatewayd.reload()
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("generation \(round) serving"), "\(result.stdout)")
            // Clean switch: once reload returned, no old worker accepts a new connection.
            for _ in 0..<20 {
                #expect(try httpGet(port: port).body == "v\(round)")
            }
        }
    }

    @Test("two reloads sent 20 ms apart end with the second config served")
    func newestConfigWins() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        try gatewayd.writeConfig(Configs.hello(body: "v2"))
        let first = Mutex2<CommandResult?>(nil)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            first.set(try? gatewayd.reload())
            done.signal()
        }
        usleep(20_000)  // the scenario under test: a second reload 20 ms after the first
        try gatewayd.writeConfig(Configs.hello(body: "v3"))
        let second = try gatewayd.reload()
        done.wait()
        #expect(first.get()?.status == 0)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(try httpGet(port: port).body == "v3")
        let status = try gatewayd.status()
        #expect(status.reloads >= 1 && status.reloads <= 2)
    }

    @Test("SIGHUP reloads")
    func sighupReloads() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        try gatewayd.writeConfig(Configs.hello(body: "v2"))
        gatewayd.signal(SIGHUP)
        try waitUntil("the SIGHUP reload to serve v2") { (try? httpGet(port: port).body) == "v2" }
        try gatewayd.waitUntilSingleGeneration()
        #expect(try gatewayd.status().generations.map(\.id) == [2])
    }

    @Test("a bad config changes nothing: reload exits 1 with file:line:col, generation N keeps serving")
    func badConfigKeepsServing() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        try gatewayd.writeConfig("workers: 2\nlisteners:\n  - name: web\n    adress: 127.0.0.1:0\n")
        let result = try gatewayd.reload()
        #expect(result.status == 1)
        #expect(result.stderr.contains("gateway.yaml:4:5"), "\(result.stderr)")
        #expect(result.stderr.contains("adress"), "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v1")
        let status = try gatewayd.status()
        #expect(status.generations.map(\.id) == [1])
        #expect(status.failedReloads == 1)
    }

    @Test("a new generation that fails to bind changes nothing")
    func bindFailureKeepsServing() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        // A second listener on the port the first already holds under another name is fine
        // (same socket); one on a port someone else holds must fail the reload.
        let blocker = try ListeningSocket.bind(try ListenerAddress(parsing: "127.0.0.1:0"), backlog: 1)
        defer { closeDescriptor(blocker) }
        let taken = try ListeningSocket.localAddress(fd: blocker).port
        var text = Configs.hello(body: "v2")
        text = text.replacingOccurrences(
            of: "routes:", with: "  - { name: extra, address: \"127.0.0.1:\(taken)\" }\nroutes:")
        try gatewayd.writeConfig(text)
        let result = try gatewayd.reload()
        #expect(result.status == 1)
        #expect(result.stderr.contains("bind 127.0.0.1:\(taken)"), "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v1")
        #expect(try gatewayd.status().generations.map(\.id) == [1])
    }

    @Test("300 listeners are handed off in batches and all answer")
    func manyListeners() throws {
        let names = (0..<300).map { "l\($0)" }
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "many", workers: 1, listeners: names))
        let status = try gatewayd.status()
        #expect(status.listeners.count == 300)
        for listener in status.listeners {
            let port = try ListenerAddress(parsing: listener.address).port
            #expect(try httpGet(port: port).body == "many")
        }
        // And again after a reload: the same 300 sockets reach the new generation.
        let result = try gatewayd.reload()
        #expect(result.status == 0, "\(result.stderr)")
        let after = try gatewayd.status()
        #expect(Set(after.listeners.map(\.address)) == Set(status.listeners.map(\.address)))
        let sample = after.listeners.prefix(20)
        for listener in sample {
            #expect(try httpGet(port: try ListenerAddress(parsing: listener.address).port).body == "many")
        }
    }

    @Test("the master's fd count is the same after 50 reloads as before")
    func noDescriptorLeak() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 1, drainTimeout: "2s"))
        let port = try gatewayd.port()
        _ = try httpGet(port: port)
        // The baseline is a steady state: after one reload has come and gone (the control
        // connection of `port()` and the first generation's start-up are over by then).
        #expect(try gatewayd.reload().status == 0)
        try gatewayd.waitUntilSingleGeneration()
        let before = try gatewayd.steadyResources().fds
        for round in 0..<50 {
            let result = try gatewayd.reload()
            #expect(result.status == 0, "round \(round): \(result.stderr)")
        }
        try gatewayd.waitUntilSingleGeneration()
        #expect(try httpGet(port: port).body == "v1")
        // A finished worker's channel is closed by its write queue, just after the generation
        // ends: the count settles within milliseconds; a leak never does.
        var after = -1
        try? waitUntil("the master's fd count to settle", timeout: .seconds(5)) {
            after = openFileDescriptorCount(gatewayd.pid)
            return after == before
        }
        #expect(before == after, "fds before \(before), after \(after)")
        // Old workers are gone, not piling up: one worker and its one pre-started spare.
        let children = childPids(of: gatewayd.pid)
        #expect(children.count == 2, "children: \(children)")
    }
}

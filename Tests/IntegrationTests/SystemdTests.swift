import CGatewayShim
import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// systemd's protocols, spoken to real systemd tools (systemd-socket-activate) and to a
/// test-owned NOTIFY_SOCKET that records every message.
@Suite("systemd", .serialized, .timeLimit(.minutes(2)))
struct SystemdTests {
    static let socketActivate = "/usr/bin/systemd-socket-activate"

    static func config(listeners: [(String, String)], body: String = "v1", drainTimeout: String = "5s") -> String {
        var text = "workers: 1\ndrain_timeout: \(drainTimeout)\nlisteners:\n"
        for (name, address) in listeners { text += "  - { name: \(name), address: \"\(address)\" }\n" }
        text += """
            routes:
              - name: hello
                direct_response: { status: 200, body: "\(body)" }

            """
        return text
    }

    /// The first response through systemd-socket-activate: retried while its socket is not
    /// bound yet (refused), which is its readiness signal.
    static func firstResponse(port: UInt16) throws -> HTTPResponse {
        var response: HTTPResponse?
        try waitUntil("systemd-socket-activate to listen on \(port)") {
            response = try? httpGet(port: port)
            return response != nil
        }
        return response!
    }

    @Test("socket activation by name: gatewayd serves on systemd's socket and binds nothing for it")
    func namedActivation() throws {
        let port = try freePort()
        // The config says port 0: were the master to bind, it would get another port.
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:0")]), waitForReady: false,
            launcher: [Self.socketActivate, "-l", "127.0.0.1:\(port)", "--fdname=web"])
        // systemd-socket-activate 252 starts the program when the first connection arrives;
        // until it has bound its socket, connections are refused.
        let first = try Self.firstResponse(port: port)
        #expect(first.body == "v1")
        try gatewayd.waitUntilServing()
        let listeners = try gatewayd.status().listeners
        #expect(listeners.count == 1)
        #expect(listeners.first?.name == "web")
        #expect(listeners.first?.origin == .inherited)
        #expect(listeners.first?.address == "127.0.0.1:\(port)")
        try gatewayd.writeConfig(Self.config(listeners: [("web", "127.0.0.1:0")], body: "v2"))
        #expect(try gatewayd.reload().status == 0)
        #expect(try httpGet(port: port).body == "v2")
        #expect(try gatewayd.gatewayctl(["stop"]).status == 0)
        #expect(try gatewayd.waitForExit() == 0)
    }

    @Test("an unnamed socket is matched by address; one that matches nothing is reported and kept")
    func unnamedActivation() throws {
        let port = try freePort()
        let extra = try freePort()
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:\(port)")]), waitForReady: false,
            launcher: [Self.socketActivate, "-l", "127.0.0.1:\(port)", "-l", "127.0.0.1:\(extra)"])
        #expect(try Self.firstResponse(port: port).body == "v1")
        try gatewayd.waitUntilServing()
        let listeners = try gatewayd.status().listeners
        #expect(listeners.count == 2)
        #expect(
            listeners.contains { $0.name == "web" && $0.address == "127.0.0.1:\(port)" && $0.origin == .inherited })
        #expect(listeners.contains { $0.address == "127.0.0.1:\(extra)" && $0.origin == .inherited })
        #expect(gatewayd.log.contains("matches no listener"), "\(gatewayd.log)")
        // A reload that adds the listener for the kept socket uses it.
        try gatewayd.writeConfig(
            Self.config(listeners: [("web", "127.0.0.1:\(port)"), ("api", "127.0.0.1:\(extra)")], body: "v2"))
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(try httpGet(port: extra).body == "v2")
    }

    @Test("a datagram socket passed by systemd is a clear error at start")
    func datagramSocketRefused() throws {
        let port = try freePort()
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:\(port)")]), waitForReady: false,
            launcher: [Self.socketActivate, "--datagram", "-l", "127.0.0.1:\(port)", "--fdname=web"])
        // A datagram starts the program; retried until systemd-socket-activate listens.
        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(udp) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        try waitUntil("gatewayd to be started and to refuse the socket") {
            _ = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(udp, "x", 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            return !gatewayd.process.isRunning
        }
        #expect(gatewayd.process.terminationStatus == 1)
        #expect(gatewayd.log.contains("is not a stream socket"), "\(gatewayd.log)")
    }

    @Test("the notify sequence for start, a successful reload, a failed reload and a stop")
    func notifySequence() throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifySocket(directory: directory.path)
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:0")]), environment: ["NOTIFY_SOCKET": notify.path])
        let ready = try notify.waitFor("READY")
        #expect(ready.fields["MAINPID"] == "\(gatewayd.pid)")
        #expect(ready.fields["STATUS"]?.contains("generation 1 serving") == true, "\(ready.text)")

        var mark = notify.all.count
        let before = monotonicMicroseconds()
        #expect(try gatewayd.reload().status == 0)
        let reloading = try notify.waitFor("RELOADING", from: mark)
        let stamp = UInt64(reloading.fields["MONOTONIC_USEC"] ?? "") ?? 0
        #expect(stamp >= before && stamp - before < 1_000_000, "MONOTONIC_USEC \(stamp), test clock \(before)")
        let readyAgain = try notify.waitFor("READY", from: mark)
        #expect(readyAgain.fields["STATUS"]?.contains("generation 2 serving") == true, "\(readyAgain.text)")
        #expect(
            notify.all.dropFirst(mark).firstIndex { $0.fields["RELOADING"] != nil }! < notify.all.dropFirst(mark)
                .firstIndex { $0.fields["READY"] != nil }!)

        mark = notify.all.count
        try gatewayd.writeConfig("listeners: [")
        #expect(try gatewayd.reload().status == 1)
        _ = try notify.waitFor("RELOADING", from: mark)
        let afterFailure = try notify.waitFor("READY", from: mark)
        #expect(afterFailure.fields["STATUS"]?.hasPrefix("reload failed") == true, "\(afterFailure.text)")

        mark = notify.all.count
        gatewayd.signal(SIGTERM)
        _ = try notify.waitFor("STOPPING", from: mark)
        // Its own datagram, sent just after STOPPING=1: waited for, not read once.
        _ = try notify.waitFor("EXTEND_TIMEOUT_USEC", from: mark)
        #expect(notify.with("EXTEND_TIMEOUT_USEC", from: mark).count == 1)
        #expect(try gatewayd.waitForExit() == 0)
    }

    @Test("watchdog pings at half the interval")
    func watchdog() throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifySocket(directory: directory.path)
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:0")]),
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"])
        _ = try notify.waitFor("WATCHDOG")
        let first = notify.with("WATCHDOG").count
        let began = ContinuousClock.now
        // The rate is what is under test, so this test does wait a fixed time.
        usleep(1_000_000)
        let pings = notify.with("WATCHDOG").count - first
        let elapsed = (ContinuousClock.now - began) / .milliseconds(100)
        // Every 100 ms: about 10 in a second; allow for a loaded machine.
        #expect(pings >= 6 && Double(pings) <= elapsed + 2, "\(pings) pings in \(elapsed * 100) ms")
        gatewayd.stop()
    }

    @Test("a graceful stop leaves the fd store as it is, for the next master")
    func stopKeepsTheStore() throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifySocket(directory: directory.path)
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:0")]),
            environment: ["NOTIFY_SOCKET": notify.path, "FDSTORE": "16"])
        _ = try notify.waitFor("READY")
        #expect(notify.with("FDSTORE").count == 1)
        #expect(try gatewayd.gatewayctl(["stop"]).status == 0)
        #expect(try gatewayd.waitForExit() == 0)
        _ = try notify.waitFor("STOPPING")
        #expect(notify.with("FDSTOREREMOVE").isEmpty, "\(notify.with("FDSTOREREMOVE").map(\.text))")
    }

    @Test("the fd store keeps each bound listener; a restarted master serves on the stored sockets")
    func fdStore() throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifySocket(directory: directory.path)
        let gatewayd = try GatewaydProcess(
            config: Self.config(listeners: [("web", "127.0.0.1:0"), ("api", "127.0.0.1:0")]),
            environment: ["NOTIFY_SOCKET": notify.path, "FDSTORE": "16"])
        let port = try gatewayd.port(of: "web")
        let stored = try notify.waitFor("FDSTORE", value: "1")
        _ = try notify.waitFor("READY")
        let storedWeb = try #require(notify.with("FDSTORE").first { $0.fields["FDNAME"] == "web" })
        #expect(storedWeb.fds.count == 1)
        #expect(notify.with("FDSTORE").contains { $0.fields["FDNAME"] == "api" && $0.fds.count == 1 })
        _ = stored
        let webFD = storedWeb.fds[0]
        #expect(try ListeningSocket.localAddress(fd: webFD).port == port)

        // A reload that drops `api` takes it out of the store.
        try gatewayd.writeConfig(Self.config(listeners: [("web", "127.0.0.1:0")]))
        #expect(try gatewayd.reload().status == 0)
        _ = try notify.waitFor("FDSTOREREMOVE", value: "1")
        #expect(notify.with("FDSTOREREMOVE").first?.fields["FDNAME"] == "api")

        // The master goes away; the stored socket lives on in the store (here: the test).
        // Its workers are killed too (stop() kills every worker seen), so that nobody but the
        // next master can answer what waits in the queue.
        _ = try gatewayd.status()
        gatewayd.signal(SIGKILL)
        _ = try gatewayd.waitForExit()
        gatewayd.stop()
        // A client connects while no master runs: it waits in the queue, it is not refused.
        let waiting = try TestConnection(port: port)
        try waiting.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

        // systemd restarts the master and passes the stored socket back by activation.
        let socketPath = directory.file("second.sock")
        let log = directory.file("second.log")
        let command =
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec '\(Binaries.gatewayd)' --config '\(gatewayd.configPath)' --control-socket '\(socketPath)' >>'\(log)' 2>&1"
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        defer { for p in argv + envp { free(p) } }
        #expect(gw_spawn_worker(&pid, "/bin/sh", argv, envp, webFD) == 0)
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            let deadline = ContinuousClock.now + .seconds(10)
            while waitpid(pid, &status, WNOHANG) == 0 {
                if ContinuousClock.now > deadline {
                    kill(pid, SIGKILL)
                    for child in childPids(of: pid) { kill(child, SIGKILL) }
                }
                usleep(5_000)
            }
        }
        let answer = try waiting.readResponse()
        #expect(answer.status == 200)
        let second = ControlClient(socketPath: socketPath, timeout: .seconds(10))
        try waitUntil("the restarted master's control socket") {
            (try? second.send(ControlRequest(command: .status)))?.status?.state == .running
        }
        let listeners = try #require(try second.send(ControlRequest(command: .status)).status?.listeners)
        #expect(listeners.count == 1)
        #expect(listeners.first?.origin == .inherited)
        #expect(listeners.first?.address == "127.0.0.1:\(port)")
        #expect(try httpGet(port: port).body == "v1")
    }
}

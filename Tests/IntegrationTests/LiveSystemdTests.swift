import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The shipped units (examples/systemd: the Debian 12 service and the socket) under a real
/// systemd 252 (LiveSystemd): installed as docs/install.md says, with the test's binaries, a
/// free port instead of 8080, and nothing else changed.
@Suite(
    "Live systemd", .serialized, .timeLimit(.minutes(3)),
    .enabled(
        if: LiveSystemd.isAvailable,
        "needs root, /lib/systemd/systemd and unshare(1) with PID, mount and cgroup namespaces"))
struct LiveSystemdTests {
    static let units = Binaries.packageRoot.appendingPathComponent("examples/systemd").path

    /// A config whose `web` listener is the .socket unit's; `extra` listeners are bound by gatewayd.
    static func config(port: UInt16, body: String, extra: [(String, UInt16)] = [], accessLog: Bool = false) -> String {
        var text = """
            workers: 2
            drain_timeout: 3s
            control_socket: /run/gatewayd/control.sock
            listeners:
              - { name: web, address: "127.0.0.1:\(port)" }

            """
        for (name, extraPort) in extra { text += "  - { name: \(name), address: \"127.0.0.1:\(extraPort)\" }\n" }
        if accessLog { text += "access_log: { path: /var/log/gatewayd/access.log, format: combined }\n" }
        text += """
            routes:
              - name: hello
                direct_response: { status: 200, headers: { content-type: text/plain }, body: "\(body)" }

            """
        return text
    }

    /// gatewayd installed in `systemd` as an operator would: binaries, user, config, the Debian 12
    /// units with the socket on `port`, and an optional drop-in for the service.
    static func install(
        in systemd: LiveSystemd, port: UInt16, config: String, serviceDropIn: String? = nil
    ) throws {
        try systemd.copy(Binaries.gatewayd, to: "/usr/local/bin/gatewayd")
        try systemd.copy(Binaries.gatewayctl, to: "/usr/local/bin/gatewayctl")
        try systemd.addSystemUser("gatewayd")
        try systemd.write(config, to: "/etc/gatewayd/gatewayd.yaml")
        let socket = try String(contentsOfFile: units + "/gatewayd.socket", encoding: .utf8)
        guard socket.contains("ListenStream=127.0.0.1:8080\n") else { throw HarnessError("gatewayd.socket changed") }
        var files = [
            "gatewayd.service": try String(contentsOfFile: units + "/gatewayd-debian12.service", encoding: .utf8),
            "gatewayd.socket": socket.replacingOccurrences(
                of: "ListenStream=127.0.0.1:8080\n", with: "ListenStream=127.0.0.1:\(port)\n"),
        ]
        if let serviceDropIn { files["gatewayd.service.d/test.conf"] = serviceDropIn }
        try systemd.install(units: files)
    }

    /// GET / on `port`, its body; throws on anything but 200.
    static func body(_ port: UInt16) throws -> String {
        let response = try httpGet(port: port)
        guard response.status == 200 else { throw HarnessError("GET / on \(port): \(response.status)") }
        return response.body
    }

    @Test("socket activation, reloads that succeed and fail (failing the job), the access log under LogsDirectory")
    func activationReloadAndAccessLog() throws {
        let systemd = try LiveSystemd()
        defer { systemd.shutdown() }
        let port = try freePort()
        try Self.install(in: systemd, port: port, config: Self.config(port: port, body: "v1", accessLog: true))

        // Only the socket: the first connection starts the service, and is served.
        try systemd.systemctl(["start", "gatewayd.socket"])
        #expect(try systemd.property("ActiveState", of: "gatewayd.service") == "inactive")
        #expect(try Self.body(port) == "v1")
        // Its first answer may come before the master's READY=1 reaches systemd.
        try waitUntil("gatewayd.service to be active") {
            try systemd.property("ActiveState", of: "gatewayd.service") == "active"
        }
        #expect(try systemd.mainPID("gatewayd.service") > 0)
        let listeners = try systemd.inside(["/usr/local/bin/gatewayctl", "status", "--json"]).stdout
        #expect(listeners.contains("\"origin\" : \"inherited\""), "\(listeners)")

        // The access log, in the directory LogsDirectory= made for User=gatewayd, not world-readable.
        try waitUntil("the access log line", timeout: .seconds(10)) {
            systemd.read("/var/log/gatewayd/access.log")?.contains("\"GET / HTTP/1.1\" 200") ?? false
        }
        var info = stat()
        #expect(stat(systemd.path("/var/log/gatewayd/access.log"), &info) == 0)
        #expect(info.st_mode & 0o007 == 0, "mode \(String(info.st_mode, radix: 8))")
        let owner = try systemd.inside(["/usr/bin/stat", "-c", "%U", "/var/log/gatewayd/access.log"]).stdout
        #expect(owner == "gatewayd\n")

        // A good reload: systemctl reload waits for it (ExecReload=gatewayctl reload).
        try systemd.write(Self.config(port: port, body: "v2", accessLog: true), to: "/etc/gatewayd/gatewayd.yaml")
        try systemd.systemctl(["reload", "gatewayd.service"])
        #expect(try Self.body(port) == "v2")

        // A bad one fails the job, says why, and the old generation serves on.
        try systemd.write("workers: zero\n", to: "/etc/gatewayd/gatewayd.yaml")
        let failed = try systemd.systemctl(["reload", "gatewayd.service"], check: false)
        #expect(failed.status != 0)
        #expect(failed.stderr.contains("failed"), "\(failed.stderr)")
        #expect(try systemd.property("ActiveState", of: "gatewayd.service") == "active")
        #expect(try Self.body(port) == "v2")
        let journal = systemd.journal("gatewayd.service")
        #expect(journal.contains("reload failed") && journal.contains("gatewayd.yaml:1:10"), "\(journal)")
        // The hardening refused nothing gatewayd tried. (libdispatch's renice of its threads is
        // refused, as for any unprivileged Swift program, and says so: docs/systemd.md#hardening.)
        let refusals = journal.split(separator: "\n").filter {
            $0.contains("Operation not permitted")
                || ($0.contains("errno=") && !$0.contains("Failed to set thread priority"))
        }
        #expect(refusals.isEmpty, "\(journal)")

        try systemd.systemctl(["stop", "gatewayd.socket", "gatewayd.service"])
        #expect(try systemd.property("ActiveState", of: "gatewayd.service") == "inactive")
    }

    @Test("systemctl restart under load: the fd store keeps gatewayd's own socket, zero failed requests")
    func restartUnderLoadWithFdStore() throws {
        let systemd = try LiveSystemd()
        defer { systemd.shutdown() }
        let port = try freePort()
        let apiPort = try freePort()
        try Self.install(
            in: systemd, port: port, config: Self.config(port: port, body: "v1", extra: [("api", apiPort)]))
        try systemd.systemctl(["start", "gatewayd.socket", "gatewayd.service"])
        #expect(try systemd.property("NFileDescriptorStore", of: "gatewayd.service") == "1")
        let before = try systemd.mainPID("gatewayd.service")

        // Load on the listener gatewayd bound itself, which only the fd store carries over.
        let load = try WrkLoad(port: apiPort, seconds: 6, connections: 16)
        try waitUntil("wrk to have answers", timeout: .seconds(10)) { (try? Self.body(apiPort)) == "v1" }
        usleep(1_000_000)
        try systemd.systemctl(["restart", "gatewayd.service"], timeout: .seconds(30))
        let after = try systemd.mainPID("gatewayd.service")
        let summary = try load.finish()
        print("LiveSystemdTests.restartUnderLoadWithFdStore: \(summary)")
        #expect(after != before && after > 0)
        #expect(summary.failures == 0, "\(summary.raw)\n\(systemd.journal("gatewayd.service"))")
        #expect(summary.requests > 1000)
        // The new master got the stored socket back, under its name.
        let status = try systemd.inside(["/usr/local/bin/gatewayctl", "status"]).stdout
        #expect(
            status.split(separator: "\n").contains { $0.hasPrefix("api ") && $0.hasSuffix("inherited") }, "\(status)")
    }

    @Test("the watchdog: a stopped master is killed and restarted, and serves again")
    func watchdogRestartsAStoppedMaster() throws {
        let systemd = try LiveSystemd()
        defer { systemd.shutdown() }
        let port = try freePort()
        // 2 s instead of the unit's 10 s, so the test is short; nothing else differs.
        try Self.install(
            in: systemd, port: port, config: Self.config(port: port, body: "v1"),
            serviceDropIn: "[Service]\nWatchdogSec=2s\n")
        try systemd.systemctl(["start", "gatewayd.socket", "gatewayd.service"])
        let before = try systemd.mainPID("gatewayd.service")
        #expect(try Self.body(port) == "v1")

        try systemd.inside(["/bin/kill", "-STOP", "\(before)"])
        do {
            // 2 s of silence, then SIGABRT (systemd adds SIGCONT), the master dies, a new one starts.
            try waitUntil("systemd to restart the stopped master", timeout: .seconds(20)) {
                let pid = try systemd.mainPID("gatewayd.service")
                let state = try systemd.property("ActiveState", of: "gatewayd.service")
                return pid != before && pid > 0 && state == "active"
            }
        } catch {
            throw HarnessError(
                "\(error)\n\(try systemd.systemctl(["status", "gatewayd.service"], check: false).stdout)")
        }
        #expect(try systemd.property("NRestarts", of: "gatewayd.service") == "1")
        #expect(systemd.journal("gatewayd.service").contains("Watchdog timeout"))
        #expect(try Self.body(port) == "v1")
    }
}

import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// An upgrade of the master under a real systemd 252 (LiveSystemd), with the shipped Debian 12
/// units (LiveSystemdTests.install): the new master becomes the service's main process, so
/// that `systemctl status`, `reload`, `stop` and the watchdog follow it.
@Suite(
    "Live systemd: upgrade", .serialized, .timeLimit(.minutes(3)),
    .enabled(
        if: LiveSystemd.isAvailable,
        "needs root, /lib/systemd/systemd and unshare(1) with PID, mount and cgroup namespaces"))
struct LiveSystemdUpgradeTests {
    @Test(
        "gatewayctl upgrade and SIGUSR2 under load: MainPID follows the new master; reload, the watchdog and stop keep working"
    )
    func upgradeUnderSystemd() throws {
        let systemd = try LiveSystemd()
        defer { systemd.shutdown() }
        let port = try freePort()
        let apiPort = try freePort()
        // The watchdog at 2 s instead of the unit's 10 s: a new master that did not take over
        // the pings would be killed within the test.
        try LiveSystemdTests.install(
            in: systemd, port: port, config: LiveSystemdTests.config(port: port, body: "v1", extra: [("api", apiPort)]),
            serviceDropIn: "[Service]\nWatchdogSec=2s\n")
        try systemd.systemctl(["start", "gatewayd.socket", "gatewayd.service"])
        let first = try systemd.mainPID("gatewayd.service")
        #expect(try LiveSystemdTests.body(port) == "v1")

        // A package upgrade replaces the file: the upgrade must start the new file, not the
        // one the running master was started from (/proc/self/exe).
        try systemd.copy(Binaries.gatewayd, to: "/usr/local/bin/gatewayd")
        var installed = stat()
        #expect(stat(systemd.path("/usr/local/bin/gatewayd"), &installed) == 0)

        let load = try WrkLoad(port: port, seconds: 8, connections: 16)
        try waitUntil("wrk to have answers", timeout: .seconds(10)) { (try? LiveSystemdTests.body(port)) == "v1" }
        let upgrade = try systemd.inside(["/usr/local/bin/gatewayctl", "upgrade"], timeout: .seconds(30))
        #expect(upgrade.status == 0, "\(upgrade.stdout)\(upgrade.stderr)\n\(systemd.journal("gatewayd.service"))")
        let second = try systemd.mainPID("gatewayd.service")
        #expect(second != first && upgrade.stdout.contains("master pid \(second) "), "\(upgrade.stdout)")
        var running = stat()
        #expect(stat(systemd.path("/proc/\(second)/exe"), &running) == 0)
        #expect(running.st_ino == installed.st_ino, "the new master does not run the file installed last")
        try waitUntil("the old master to exit", timeout: .seconds(5)) {
            !FileManager.default.fileExists(atPath: systemd.path("/proc/\(first)"))
        }
        // Its STATUS= reaches systemd: sent by the main process.
        try waitUntil("the new master's STATUS=") {
            try systemd.property("StatusText", of: "gatewayd.service").hasPrefix("generation 2 serving")
        }

        // systemctl reload reaches the new master (ExecReload=gatewayctl reload).
        try systemd.write(
            LiveSystemdTests.config(port: port, body: "v2", extra: [("api", apiPort)]),
            to: "/etc/gatewayd/gatewayd.yaml")
        try systemd.systemctl(["reload", "gatewayd.service"])
        #expect(try LiveSystemdTests.body(port) == "v2")

        // SIGUSR2 to the main process (systemctl kill) upgrades again.
        try systemd.systemctl(["kill", "--kill-who=main", "--signal=SIGUSR2", "gatewayd.service"])
        try waitUntil("MainPID to follow the upgrade by SIGUSR2", timeout: .seconds(15)) {
            let pid = try systemd.mainPID("gatewayd.service")
            return pid != second && pid > 0
        }
        let third = try systemd.mainPID("gatewayd.service")
        try waitUntil("the second old master to exit", timeout: .seconds(5)) {
            !FileManager.default.fileExists(atPath: systemd.path("/proc/\(second)"))
        }

        let summary = try load.finish()
        print("LiveSystemdUpgradeTests: \(summary)")
        #expect(summary.failures == 0, "\(summary.raw)\n\(systemd.journal("gatewayd.service"))")
        #expect(summary.requests > 1000)
        // Well past the 2 s watchdog: the new master pings, and no restart happened.
        #expect(try systemd.property("NRestarts", of: "gatewayd.service") == "0")
        #expect(try systemd.mainPID("gatewayd.service") == third)
        #expect(try systemd.property("ActiveState", of: "gatewayd.service") == "active")
        #expect(try LiveSystemdTests.body(apiPort) == "v2")
        // The socket gatewayd bound itself (api) is still stored once, under its name: each new
        // master took over what the old one had put in the fd store.
        #expect(try systemd.property("NFileDescriptorStore", of: "gatewayd.service") == "1")
        let journal = systemd.journal("gatewayd.service")
        // Nothing was said to systemd by a master that was not the main process, and each new
        // master was systemd's own child (started as the old one's sibling): systemd watches
        // it exit, and `stop` waits for its drain instead of killing it at once.
        #expect(!journal.contains("reception only permitted for main PID"), "\(journal)")
        #expect(!journal.contains("which is not our child"), "\(journal)")

        // systemctl stop: SIGTERM to the main process, which drains; nothing of gatewayd is left.
        try systemd.systemctl(["stop", "gatewayd.socket", "gatewayd.service"], timeout: .seconds(30))
        let stopped = systemd.journal("gatewayd.service")
        #expect(try systemd.property("ActiveState", of: "gatewayd.service") == "inactive", "\(stopped)")
        #expect(try systemd.property("Result", of: "gatewayd.service") == "success", "\(stopped)")
        let left = try systemd.inside(["/usr/bin/pgrep", "-c", "gatewayd"]).stdout
        #expect(left.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "gatewayd processes left: \(left)")
    }
}

import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Upgrading the master itself, with real processes: `gatewayctl upgrade` starts the binary
/// (by default the one the master was started from: the build under test), which takes over
/// the sockets, the shared segment and the control socket, and the old master drains and exits.
@Suite("Upgrade of the master", .serialized, .timeLimit(.minutes(3)))
struct UpgradeTests {
    @Test(
        "an upgrade under load: zero failed requests, the same socket, the old master gone within drain_timeout, the new one in charge",
        arguments: [false, true])
    func upgradeUnderLoad(closeEachRequest: Bool) throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "5s"))
        let lineage = MasterLineage(gatewayd)
        defer { lineage.stop() }
        let before = try gatewayd.status()
        let oldMaster = before.masterPid
        let oldWorkers = before.generations.flatMap(\.workers).map(\.pid) + before.spareWorkers
        let listener = try #require(before.listeners.first)
        let socketBefore = try #require(socketIdentity(pid: oldMaster, fd: listener.fd))
        let port = try gatewayd.port()
        let load = try WrkLoad(port: port, seconds: 8, connections: 32, closeEachRequest: closeEachRequest)
        try waitUntil("wrk to connect") {
            try gatewayd.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } > 0
        }

        let began = ContinuousClock.now
        let upgrade = try lineage.upgrade()
        let took = ContinuousClock.now - began
        #expect(upgrade.status == 0, "\(upgrade.stderr)\n\(gatewayd.log)")
        let newMaster = try #require(MasterLineage.upgradedPid(upgrade.stdout), "\(upgrade.stdout)")
        #expect(newMaster != oldMaster)

        // The old master and its workers are gone within drain_timeout (5 s).
        var goneAfter = Duration.zero
        try waitUntil("the old master and its workers to exit", timeout: .seconds(5)) {
            goneAfter = ContinuousClock.now - began
            return !isProcessRunning(oldMaster) && oldWorkers.allSatisfy { !isProcessRunning($0) }
        }
        print(
            "upgrade (\(closeEachRequest ? "close" : "keep-alive")): gatewayctl upgrade took \(took.wholeMilliseconds) ms; old master and workers gone \(goneAfter.wholeMilliseconds) ms after it began"
        )

        // The new master answers status, on the very socket, and reloads.
        let after = try gatewayd.status()
        #expect(after.masterPid == newMaster)
        #expect(upgrade.stdout.contains("(\(try #require(after.version)))"), "\(upgrade.stdout)")
        #expect(after.state == .running)
        #expect(after.generations.map(\.id) == [2])
        let listenerAfter = try #require(after.listeners.first)
        #expect(socketIdentity(pid: newMaster, fd: listenerAfter.fd) == socketBefore)
        try gatewayd.writeConfig(Configs.hello(body: "v2", drainTimeout: "5s"))
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(reload.stdout.contains("generation 3 serving"), "\(reload.stdout)")
        #expect(try httpGet(port: port).body == "v2")

        #expect(load.isRunning, "the upgrade and the reload outlasted the load")
        let summary = try load.finish()
        print("upgrade (\(closeEachRequest ? "close" : "keep-alive")): \(summary)")
        #expect(summary.failures == 0, "\(summary)\n\(summary.raw)")
        #expect(summary.requests > 1000, "\(summary)")

        // And stops: the control socket's file goes with it, as after any stop.
        let stop = try gatewayd.gatewayctl(["stop"])
        #expect(stop.status == 0, "\(stop.stderr)")
        try waitUntil("the new master to exit", timeout: .seconds(10)) { !isProcessRunning(newMaster) }
        #expect(!FileManager.default.fileExists(atPath: gatewayd.socketPath))
    }

    @Test(
        "a path that does not exist, a binary that exits at once, one that is never ready, a bad config: the old master serves on and says why"
    )
    func failedUpgrades() throws {
        try FaultInjection.require()
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "5s"))
        let lineage = MasterLineage(gatewayd)
        defer { lineage.stop() }
        let master = gatewayd.pid
        let port = try gatewayd.port()
        let load = try WrkLoad(port: port, seconds: 6, connections: 8)
        let exitsAtOnce = gatewayd.directory.file("exits-at-once.sh")
        try "#!/bin/sh\nexit 3\n".write(toFile: exitsAtOnce, atomically: true, encoding: .utf8)
        chmod(exitsAtOnce, 0o755)

        func expectRefused(
            _ arguments: [String], _ reason: String, sourceLocation: SourceLocation = #_sourceLocation
        ) throws {
            let result = try lineage.upgrade(arguments)
            #expect(result.status == 1, "\(result.stdout)", sourceLocation: sourceLocation)
            #expect(result.stderr.contains(reason), "\(result.stderr)", sourceLocation: sourceLocation)
            // The master that tried is gone, and the old one is still the one in charge.
            if let tried = MasterLineage.failedPid(result.stderr) {
                try waitUntil("the failed new master \(tried) to exit", timeout: .seconds(15)) {
                    !isProcessRunning(tried)
                }
            }
            let status = try gatewayd.status()
            #expect(status.masterPid == master, sourceLocation: sourceLocation)
            #expect(status.upgradePhase == .idle, sourceLocation: sourceLocation)
            #expect(status.generations.map(\.id) == [1], sourceLocation: sourceLocation)
            #expect(try httpGet(port: port).body == "v1", sourceLocation: sourceLocation)
        }

        try expectRefused(["--binary", gatewayd.directory.file("no-such-gatewayd")], "No such file or directory")
        try expectRefused(["--binary", exitsAtOnce], "exited before it said hello")
        // The config on disk is what a new master validates: a generation that hangs before
        // ready (the old one was started without the fault).
        try gatewayd.writeConfig(
            Configs.hello(body: "v1", drainTimeout: "5s", readyTimeout: "1s") + "# gatewayd-fault: hang-before-ready\n")
        try expectRefused([], "not ready within ready_timeout 1s")
        try gatewayd.writeConfig("listeners: [\n")
        try expectRefused([], "invalid config")
        let summary = try load.finish()
        #expect(summary.failures == 0, "\(summary)\n\(summary.raw)")
        #expect(gatewayd.log.contains("upgrade to \(exitsAtOnce) failed"), "\(gatewayd.log)")
    }

    @Test("a master of the previous upgrade protocol hands over; one of a future version is refused, naming both")
    func versionSkew() throws {
        try FaultInjection.require()
        // GATEWAYD_TEST_UPGRADE_PROTOCOL: the started master speaks that version, as an older
        // (or newer) release would; the old master does not pass it on to the new one.
        let previous = try GatewaydProcess(
            config: Configs.hello(body: "v1"),
            environment: [UpgradeProtocol.testVersionEnvironmentVariable: "\(UpgradeProtocol.version - 1)"])
        let lineage = MasterLineage(previous)
        defer { lineage.stop() }
        let upgraded = try lineage.upgrade()
        #expect(upgraded.status == 0, "\(upgraded.stderr)\n\(previous.log)")
        #expect(try previous.status().masterPid != previous.pid)
        #expect(
            previous.log.contains(
                "speaks upgrade protocol \(UpgradeProtocol.version - 1): its reload history is not carried over"),
            "\(previous.log)")
        #expect(try httpGet(port: try previous.port()).body == "v1")

        let future = try GatewaydProcess(
            config: Configs.hello(body: "v1"),
            environment: [UpgradeProtocol.testVersionEnvironmentVariable: "\(UpgradeProtocol.version + 1)"])
        let futureLineage = MasterLineage(future)
        defer { futureLineage.stop() }
        let refused = try futureLineage.upgrade()
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("speaks upgrade protocol \(UpgradeProtocol.version + 1)"), "\(refused.stderr)")
        #expect(refused.stderr.contains("reads versions"), "\(refused.stderr)")
        #expect(try future.status().masterPid == future.pid)
        #expect(try httpGet(port: try future.port()).body == "v1")
    }

    @Test(
        "never two at once: an upgrade waits for the reload under way, a second upgrade is refused, a reload during one is answered by the new master"
    )
    func serialized() throws {
        try FaultInjection.require()
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", readyTimeout: "1s"))
        let lineage = MasterLineage(gatewayd)
        defer { lineage.stop() }

        // 1. A reload that lasts ready_timeout (1 s: its workers never get ready); an upgrade
        // asked for meanwhile waits, then runs with the config as it is by then.
        try gatewayd.writeConfig(
            Configs.hello(body: "v1", readyTimeout: "1s") + "# gatewayd-fault: hang-before-ready\n")
        let reload = Background { try gatewayd.reload() }
        try waitUntil("the reload to wait for its workers") { try gatewayd.status().reloadPhase == .waitingForReady }
        try gatewayd.writeConfig(
            Configs.hello(body: "v2", readyTimeout: "1s") + "# gatewayd-fault: takeover-delay=1s\n")
        let upgrade = Background { try lineage.upgrade() }
        let reloaded = try reload.result()
        #expect(
            reloaded.status == 1 && reloaded.stderr.contains("not ready within ready_timeout"), "\(reloaded.stderr)")

        // 2. While the new master holds its takeover open (takeover-delay), a second upgrade
        // is refused, and a reload waits; after the switch the new master does that reload.
        try waitUntil("the upgrade to wait for the new master") {
            try gatewayd.status().upgradePhase == .waitingForNewMaster
        }
        let second = try lineage.upgrade()
        #expect(second.status == 1)
        #expect(second.stderr.contains("an upgrade is already in progress"), "\(second.stderr)")
        let duringUpgrade = Background { try gatewayd.reload() }
        let upgraded = try upgrade.result()
        #expect(upgraded.status == 0, "\(upgraded.stderr)\n\(gatewayd.log)")
        let newMaster = try #require(MasterLineage.upgradedPid(upgraded.stdout))
        let forwarded = try duringUpgrade.result()
        #expect(forwarded.status == 0, "\(forwarded.stderr)")
        // Generation 2 failed (the reload), 3 is the new master's first, 4 the forwarded reload's.
        #expect(upgraded.stdout.contains("serves generation 3"), "\(upgraded.stdout)")
        #expect(forwarded.stdout.contains("generation 4 serving"), "\(forwarded.stdout)")
        let status = try gatewayd.status()
        #expect(status.masterPid == newMaster)
        #expect(status.generations.last?.id == 4)
        #expect(try httpGet(port: try gatewayd.port()).body == "v2")
        // The old master took both reloads (the second it passed on), and started the new master
        // only once the first had failed.
        let log = gatewayd.log
        let old = "gatewayd[\(gatewayd.pid)]: "
        #expect(log.components(separatedBy: old + "reload requested").count - 1 == 2, "\(log)")
        let reloadFailed = try #require(log.range(of: old + "reload failed"))
        let newMasterStarted = try #require(log.range(of: old + "started the new master"))
        #expect(reloadFailed.lowerBound < newMasterStarted.lowerBound, "the upgrade did not wait for the reload")
    }
}

/// A blocking call run on another thread; `result()` waits for it.
final class Background<T: Sendable>: @unchecked Sendable {
    private let value = Mutex2<Result<T, Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () throws -> T) {
        DispatchQueue.global().async { [value, done] in
            value.set(Result { try body() })
            done.signal()
        }
    }

    var isRunning: Bool { value.get() == nil }

    func result() throws -> T {
        done.wait()
        done.signal()
        return try value.get()!.get()
    }
}

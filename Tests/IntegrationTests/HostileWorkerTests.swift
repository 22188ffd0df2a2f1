import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A compromised worker against its master, with real processes under load: a worker of a
/// new generation completes its handoff, says ready, and then attacks the master through its
/// channel or its siblings through the shared segment (`# gatewayd-fault: hostile=MODE
/// worker=1`, Sources/Gateway/WorkerProcess+HostileWorker.swift, compiled in by `make test`
/// only). The other worker of its generation is a real one and serves wrk all along; the
/// hostile one serves nothing, so every failed request is the master's fault.
/// docs/reliability.md, "Hostile workers", lists the cases and what each got.
@Suite("Hostile workers", .serialized, .timeLimit(.minutes(2)))
struct HostileWorkerTests {
    /// gatewayd serving generation 1 under wrk, then reloaded to a generation 2 whose worker 1
    /// is hostile. `finish()` checks what every case must keep: the master runs, answers
    /// `gatewayctl status`, reloads to a clean config, and no request failed.
    final class Attack {
        let gatewayd: GatewaydProcess
        let port: UInt16
        let load: WrkLoad
        /// The master's fds and children before the attack, once steady.
        let before: (fds: Int, children: Int)
        let reload: CommandResult

        init(_ mode: String) throws {
            try FaultInjection.require()
            gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 2))
            port = try gatewayd.port()
            before = try gatewayd.steadyResources()
            load = try WrkLoad(port: port, seconds: 90, connections: 16)
            let gatewayd = self.gatewayd
            try waitUntil("wrk to connect") {
                try gatewayd.status().generations.flatMap(\.workers).contains { $0.connections > 0 }
            }
            try gatewayd.writeConfig(
                "# gatewayd-fault: hostile=\(mode) worker=1\n" + Configs.hello(body: "v2", workers: 2))
            reload = try gatewayd.reload()
        }

        /// Sets the hostile worker on, now that its generation serves (SIGUSR1 is its cue).
        func begin() throws {
            #expect(reload.status == 0, "\(reload.stderr)")
            let generation = try #require(try gatewayd.status().generations.first { $0.id == 2 })
            #expect(generation.state == .serving)
            let hostile = try #require(generation.workers.first { $0.index == 1 })
            kill(hostile.pid, SIGUSR1)
        }

        /// When the hostile worker began (its own log line), in seconds of the day.
        func attackBegan() throws -> Double {
            var line = ""
            try waitUntil("the hostile worker to begin") {
                line =
                    gatewayd.log.split(separator: "\n").first { $0.contains("hostile worker: ") }.map(String.init) ?? ""
                return !line.isEmpty
            }
            return try #require(logTime(line))
        }

        /// Waits for the master to log that the first hostile worker was killed (SIGKILL);
        /// returns the master's line about why, and the time from the attack to the kill.
        func waitForKill(timeout: Duration = .seconds(10)) throws -> (reason: String, after: Double) {
            let began = try attackBegan()
            var killed = ""
            try waitUntil("the master to kill the hostile worker", timeout: timeout) {
                killed =
                    gatewayd.log.split(separator: "\n").first {
                        $0.contains("of generation 2 killed by signal 9")
                    }.map(String.init) ?? ""
                return !killed.isEmpty
            }
            let pid = try #require(killed.firstMatch(of: /worker 1 \(pid (\d+)\)/)?.1)
            let reason =
                gatewayd.log.split(separator: "\n").first { $0.contains("(pid \(pid)) of generation 2: ") }
                .map(String.init) ?? ""
            return (reason, try #require(logTime(killed)) - began)
        }

        /// What must hold whatever the attack: the master is up, `gatewayctl status` answers,
        /// a reload to a clean config works and serves, and wrk saw no failure.
        @discardableResult
        func finish() throws -> WrkLoad.Summary {
            #expect(gatewayd.process.isRunning, "the master died:\n\(gatewayd.log.suffix(3000))")
            let status = try gatewayd.gatewayctl(["status"], timeout: .seconds(10))
            #expect(status.status == 0, "\(status.stderr)")
            try gatewayd.writeConfig(Configs.hello(body: "v3", workers: 2))
            let clean = try gatewayd.reload()
            #expect(clean.status == 0, "\(clean.stderr)")
            #expect(try httpGet(port: port).body == "v3")
            #expect(load.isRunning, "the load ended before the attack did")
            let summary = try load.stop()
            #expect(summary.failures == 0, "\(summary)\n\(summary.raw)")
            try gatewayd.waitUntilSingleGeneration(timeout: .seconds(15))
            return summary
        }
    }

    @Test("fds sent on the channel: the master takes none, kills the worker; its fd count never moves")
    func fdFlood() throws {
        let attack = try Attack("fd-flood")
        let master = attack.gatewayd.pid
        let sampler = DescriptorSampler(pid: master)
        try attack.begin()
        let (reason, after) = try attack.waitForKill()
        let peak = sampler.stop()
        #expect(reason.contains("fds"), "\(reason)")
        // A reload, spares replaced and status connections move the count by a few; one
        // message of the flood is 253 fds.
        #expect(peak - attack.before.fds < 32, "the master held \(peak) fds, \(attack.before.fds) before")
        let summary = try attack.finish()
        try waitUntil("the master's fds and children to be back", timeout: .seconds(10)) {
            openFileDescriptorCount(master) == attack.before.fds
                && childPids(of: master).count == attack.before.children
        }
        print(
            "hostile fd-flood: killed \(Int(after * 1000)) ms after it began; master fds \(attack.before.fds), "
                + "at most \(peak) during the flood; \(reason.suffix(200)); \(summary)")
    }

    @Test(
        "frames too fast or too long: the worker is killed as flooding, the master's memory does not grow",
        arguments: ["frame-flood", "big-frames"])
    func frameFlood(mode: String) throws {
        let attack = try Attack(mode)
        let master = attack.gatewayd.pid
        let rssBefore = try #require(residentBytes(master))
        let sampler = ResidentSampler(pids: [master])
        try attack.begin()
        let (reason, after) = try attack.waitForKill()
        let peak = sampler.stop()[master] ?? 0
        #expect(after < 2, "killed \(after) s after the attack began")
        // 20 frames of 3 MiB, or frames as fast as a core makes them.
        #expect(peak - rssBefore < 16 << 20, "master RSS \(rssBefore) → \(peak) bytes")
        // The worker's text is not copied to the log whole.
        #expect(attack.gatewayd.log.utf8.count < 1 << 20, "the log holds \(attack.gatewayd.log.utf8.count) bytes")
        let summary = try attack.finish()
        print(
            "hostile \(mode): killed \(Int(after * 1000)) ms after it began; master RSS \(rssBefore >> 10) KiB, "
                + "at most \(peak >> 10) KiB; \(reason.suffix(200)); \(summary)")
    }

    @Test("connections of Int.max: counted as 2^30, summed without a trap while its generation drains")
    func connectionsOverflow() throws {
        let attack = try Attack("connections-overflow")
        try attack.begin()
        _ = try attack.attackBegan()
        var counted = 0
        try waitUntil("the hostile worker's count in status") {
            let worker = try attack.gatewayd.status().generations.first { $0.id == 2 }?.workers.first { $0.index == 1 }
            counted = worker?.connections ?? 0
            return counted > 1
        }
        #expect(counted == 1 << 30, "status says \(counted)")
        // The reload in finish() drains generation 2, whose counts the master then adds up
        // (systemd's STATUS line, the drain's log lines).
        let summary = try attack.finish()
        #expect(attack.gatewayd.log.contains("connections; counted as 1073741824"), "\(attack.gatewayd.log)")
        print("hostile connections-overflow: counted as \(counted); \(summary)")
    }

    @Test("the shared segment's header overwritten: later workers never read it, reloads work")
    func segmentHeader() throws {
        let attack = try Attack("segment-header")
        try attack.begin()
        _ = try attack.attackBegan()
        // Its heartbeat says 7 connections once the header is overwritten.
        try waitUntil("the hostile worker's heartbeat") {
            try attack.gatewayd.status().generations.first { $0.id == 2 }?.workers.first { $0.index == 1 }?
                .connections == 7
        }
        // The new generation's workers (spares, handed the same segment) start and serve.
        let summary = try attack.finish()
        print("hostile segment-header: the reload after it worked; \(summary)")
    }

    @Test("log forgery through a failed reason and a frame type: escaped, on one line; the bad frame kills")
    func logForgery() throws {
        let attack = try Attack("log-forgery")
        try attack.begin()
        let (reason, _) = try attack.waitForKill()
        let log = attack.gatewayd.log
        let forged = "2030-01-01T00:00:00.000Z"
        #expect(!log.split(separator: "\n").contains { $0.hasPrefix(forged) }, "a forged line:\n\(log)")
        #expect(!log.contains("\u{1b}"), "a terminal escape reached the log")
        #expect(log.contains(#"failed: boom\n\#(forged)"#), "\(log)")
        #expect(reason.contains(#"unknown frame type 'x\n\#(forged)"#), "\(reason)")
        let summary = try attack.finish()
        print("hostile log-forgery: \(reason.suffix(160)); \(summary)")
    }

    @Test("a parent that leaves SIGCHLD ignored: the master still sees how its workers end")
    func ignoredSIGCHLD() throws {
        // exec keeps an ignored disposition; with SIGCHLD ignored the kernel reaps children
        // itself and waitpid(2) reports nothing (ECHILD).
        let ignoring = [
            "/usr/bin/python3", "-c",
            "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])",
        ]
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 1), launcher: ignoring)
        let victim = try #require(try gatewayd.status().generations.first?.workers.first)
        kill(victim.pid, SIGKILL)
        try waitUntil("the master to log the worker's end") {
            gatewayd.log.contains("(pid \(victim.pid)) of generation 1 ")
                && gatewayd.log.contains("; restarting")
        }
        let line = gatewayd.log.split(separator: "\n").first { $0.contains("(pid \(victim.pid)) of generation 1 ") }
        #expect(line?.contains("killed by signal 9") == true, "\(line ?? "")")
        try gatewayd.waitUntilServing()
        #expect(try httpGet(port: try gatewayd.port()).body == "v1")
    }
}

/// The time of a gatewayd log line (`2026-11-27T13:53:52.123Z …`), in seconds of the day.
private func logTime(_ line: String) -> Double? {
    guard let match = line.firstMatch(of: /T(\d\d):(\d\d):(\d\d\.\d\d\d)Z/),
        let hours = Double(match.1), let minutes = Double(match.2), let seconds = Double(match.3)
    else { return nil }
    return hours * 3600 + minutes * 60 + seconds
}

/// Samples a process's fd count every millisecond on a thread of its own, keeping the peak.
private final class DescriptorSampler: @unchecked Sendable {
    private let peak = Mutex2(0)
    private let running = Mutex2(true)
    private let finished = DispatchSemaphore(value: 0)

    init(pid: Int32) {
        Thread.detachNewThread { [peak, running, finished] in
            while running.get() {
                let count = openFileDescriptorCount(pid)
                peak.update { $0 = max($0, count) }
                usleep(1_000)
            }
            finished.signal()
        }
    }

    /// Stops sampling; the most fds seen.
    func stop() -> Int {
        if running.get() {
            running.set(false)
            finished.wait()
        }
        return peak.get()
    }
}

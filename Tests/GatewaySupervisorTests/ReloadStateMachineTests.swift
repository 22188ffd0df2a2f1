import Foundation
import GatewayConfig
import GatewayCore
import Logging
import Testing

@testable import GatewaySupervisor

#if canImport(Glibc)
    import Glibc
#endif

/// The master's reload state machine with fake workers (see FakeSpawner): fast, and able to
/// script failures that real workers rarely produce on demand.
@Suite("Reload state machine", .serialized, .timeLimit(.minutes(1)))
struct ReloadStateMachineTests {
    final class Fixture {
        let directory: String
        let configPath: String
        let master: Master
        let spawner: FakeSpawner
        let run: Task<Void, Error>

        init(
            readyTimeout: String = "2s", drainTimeout: String = "5s", maxDraining: Int = 4,
            behavior: @escaping @Sendable (Int, Int) -> FakeSpawner.Behavior
        ) async throws {
            var template = Array("/tmp/gatewayd-sm-XXXXXX".utf8CString)
            directory = String(cString: mkdtemp(&template)!)
            configPath = directory + "/gateway.yaml"
            try Self.config(
                body: "v1", readyTimeout: readyTimeout, drainTimeout: drainTimeout, maxDraining: maxDraining
            )
            .write(toFile: configPath, atomically: true, encoding: .utf8)
            spawner = FakeSpawner(behavior: behavior)
            let options = SupervisorOptions(configPath: configPath, controlSocket: directory + "/control.sock")
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let loaded = try ConfigLoader.load(path: configPath)
            master = Master(options: options, loaded: loaded, logger: logger, spawner: spawner)
            let master = self.master
            run = Task { try await master.run() }
            try await waitFor("generation 1 to serve") { await master.statusReport().state == .running }
        }

        static func config(body: String, readyTimeout: String = "2s", drainTimeout: String = "5s", maxDraining: Int = 4)
            -> String
        {
            """
            workers: 2
            ready_timeout: \(readyTimeout)
            drain_timeout: \(drainTimeout)
            max_draining_generations: \(maxDraining)
            listeners:
              - { name: web, address: "127.0.0.1:0" }
            routes:
              - name: hello
                direct_response: { status: 200, body: "\(body)" }
            """
        }

        func write(_ text: String) throws {
            try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        }

        func stop() async throws {
            await master.stop(now: true)
            try await run.value
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func waitFor(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool)
        async throws
    {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            if ContinuousClock.now > deadline { throw HarnessError("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    struct HarnessError: Error { var description: String; init(_ d: String) { description = d } }

    @Test("a successful reload serves the new generation and drains the old one")
    func successfulReload() async throws {
        let fixture = try await Fixture { _, _ in .healthy() }
        let outcome = await fixture.master.reload(trigger: "test")
        guard case .succeeded(let generation, _) = outcome else {
            Issue.record("reload failed: \(outcome)")
            return
        }
        #expect(generation == 2)
        // By the time reload returned, every old worker had been told to drain and confirmed.
        #expect(fixture.spawner.records(generation: 1).allSatisfy { $0.drained })
        try await Self.waitFor("generation 1 to end") {
            await fixture.master.statusReport().generations.map(\.id) == [2]
        }
        try await fixture.stop()
    }

    @Test("every worker of every generation, spares included, is handed the one shared segment")
    func sharedSegmentHandedToEveryWorker() async throws {
        let fixture = try await Fixture { _, _ in .healthy() }
        for _ in 0..<2 {
            guard case .succeeded = await fixture.master.reload(trigger: "test") else {
                Issue.record("reload failed")
                return
            }
        }
        // Generations 2 and 3 were started by spares (handed off at the reload).
        let handedOff = fixture.spawner.records.filter { $0.generation != 0 }
        #expect(Set(handedOff.map(\.generation)) == [1, 2, 3])
        #expect(handedOff.count == 6)
        #expect(handedOff.allSatisfy { $0.sharedMemoryMapped })
        let inodes = Set(handedOff.map(\.sharedMemoryInode))
        #expect(inodes.count == 1 && inodes.first != 0, "\(inodes)")
        try await fixture.stop()
    }

    @Test("a worker that fails at start fails the reload with its reason; the old generation is untouched")
    func failingWorker() async throws {
        let fixture = try await Fixture { generation, index in
            generation == 2 && index == 1 ? .failsAtStart("upstream pool exploded") : .healthy()
        }
        let outcome = await fixture.master.reload(trigger: "test")
        guard case .failed(let reason, _) = outcome else {
            Issue.record("reload succeeded")
            return
        }
        #expect(reason.contains("generation 2 failed to start"), "\(reason)")
        #expect(reason.contains("worker 1"), "\(reason)")
        #expect(reason.contains("upstream pool exploded"), "\(reason)")
        #expect(fixture.spawner.records(generation: 1).allSatisfy { !$0.drained && $0.signals.isEmpty })
        try await Self.waitFor("generation 2 to be gone") {
            await fixture.master.statusReport().generations.map(\.id) == [1]
        }
        let status = await fixture.master.statusReport()
        #expect(status.generations.first?.state == .serving)
        #expect(status.failedReloads == 1)
        try await fixture.stop()
    }

    @Test("a reload whose workers all exit between ready and the switch fails; the old generation is untouched")
    func everyWorkerExitsBeforeTheSwitch() async throws {
        let fixture = try await Fixture { generation, _ in generation == 2 ? .readyThenExitWhenReleased : .healthy() }
        let master = fixture.master
        let spawner = fixture.spawner
        // The exits reach the actor after the last `ready` woke the reload and before the
        // reload runs again: held open here, the window is otherwise a scheduling accident.
        await master.setAfterReadyHook { generation in
            guard generation == 2 else { return }
            spawner.releaseHeldExits()
            try? await Self.waitFor("generation 2's workers to be seen exiting") {
                let workers = await master.statusReport().generations.first { $0.id == 2 }?.workers ?? []
                return workers.count == 2 && workers.allSatisfy { $0.state == .exited }
            }
        }
        let outcome = await master.reload(trigger: "test")
        guard case .failed(let reason, _) = outcome else {
            Issue.record("reload succeeded: \(outcome)")
            return
        }
        #expect(reason.contains("generation 2 failed to start"), "\(reason)")
        #expect(reason.contains("every worker exited after it reported ready"), "\(reason)")
        #expect(fixture.spawner.records(generation: 1).allSatisfy { !$0.drained && $0.signals.isEmpty })
        try await Self.waitFor("generation 2 to be gone") {
            await master.statusReport().generations.map(\.id) == [1]
        }
        #expect(await master.statusReport().generations.first?.state == .serving)
        try await fixture.stop()
    }

    @Test("a worker that misses ready_timeout fails the reload and is terminated")
    func readyTimeout() async throws {
        let fixture = try await Fixture(readyTimeout: "300ms") { generation, _ in
            generation == 2 ? .neverReady : .healthy()
        }
        let began = ContinuousClock.now
        let outcome = await fixture.master.reload(trigger: "test")
        let took = ContinuousClock.now - began
        guard case .failed(let reason, _) = outcome else {
            Issue.record("reload succeeded")
            return
        }
        #expect(reason.contains("not ready within ready_timeout 300ms"), "\(reason)")
        #expect(took >= .milliseconds(300) && took < .seconds(3), "took \(took)")
        try await Self.waitFor("generation 2's workers to be terminated") {
            fixture.spawner.records(generation: 2).allSatisfy { $0.signals.contains(SIGTERM) && $0.exited }
        }
        #expect(fixture.spawner.records(generation: 1).allSatisfy { $0.signals.isEmpty })
        try await fixture.stop()
    }

    @Test("reloads asked for during a reload are merged into one that reads the newest config")
    func mergedReloads() async throws {
        let fixture = try await Fixture { generation, _ in generation == 2 ? .slowReady(.milliseconds(300)) : .healthy()
        }
        let master = fixture.master
        async let first = master.reload(trigger: "first")
        try await Self.waitFor("the first reload to start") { await master.statusReport().reloadPhase != .idle }
        try fixture.write(Fixture.config(body: "v3"))
        async let second = master.reload(trigger: "second")
        async let third = master.reload(trigger: "third")
        let outcomes = await [first, second, third]
        guard case .succeeded(let g1, _) = outcomes[0], case .succeeded(let g2, _) = outcomes[1],
            case .succeeded(let g3, _) = outcomes[2]
        else {
            Issue.record("\(outcomes)")
            return
        }
        #expect(g1 == 2)
        // Second and third waited together: one reload covered both.
        #expect(g2 == 3 && g3 == 3)
        #expect(await master.statusReport().reloads == 2)
        try await fixture.stop()
    }

    @Test("past max_draining_generations the oldest draining generation is stopped early")
    func drainingLimit() async throws {
        let fixture = try await Fixture(drainTimeout: "60s", maxDraining: 2) { _, _ in .drainsForever }
        for _ in 0..<4 {
            let outcome = await fixture.master.reload(trigger: "test")
            guard case .succeeded = outcome else {
                Issue.record("\(outcome)")
                return
            }
            let draining = await fixture.master.statusReport().generations.filter { $0.state == .draining }
            #expect(draining.count <= 2 || draining.contains { $0.workers.contains { $0.state == .terminating } })
        }
        try await Self.waitFor("generations 1 and 2 to be stopped") {
            fixture.spawner.records.filter { (1...2).contains($0.generation) }.allSatisfy {
                $0.signals.contains(SIGTERM) && $0.exited
            }
        }
        #expect(fixture.spawner.records.filter { $0.generation >= 3 }.allSatisfy { $0.signals.isEmpty })
        try await fixture.stop()
    }

    @Test("a stop during a reload fails the reload with a clear answer and ends the run")
    func stopDuringReload() async throws {
        let fixture = try await Fixture { generation, _ in generation == 2 ? .slowReady(.seconds(2)) : .healthy() }
        let master = fixture.master
        async let outcome = master.reload(trigger: "test")
        try await Self.waitFor("the reload to wait for ready") {
            await master.statusReport().reloadPhase == .waitingForReady
        }
        await master.stop(now: false)
        guard case .failed(let reason, _) = await outcome else {
            Issue.record("reload succeeded")
            return
        }
        #expect(reason.contains("stopping"), "\(reason)")
        try await fixture.run.value
        let state = await master.statusReport().state
        #expect(state == .stopped)
        #expect(await master.reload(trigger: "late").isFailure)
    }
}

@Suite("Supervision", .serialized, .timeLimit(.minutes(1)))
struct SupervisionTests {
    typealias Fixture = ReloadStateMachineTests.Fixture

    @Test("when every worker of the serving generation dies, they are replaced and the sockets stay open")
    func allWorkersDie() async throws {
        let fixture = try await Fixture { _, _ in .healthy() }
        let before = await fixture.master.statusReport()
        for record in fixture.spawner.records(generation: 1) {
            fixture.spawner.signal(SIGKILL, to: record.pid)
        }
        try await ReloadStateMachineTests.waitFor("two replacement workers") {
            let workers = await fixture.master.statusReport().generations.first?.workers ?? []
            return workers.count == 2 && workers.allSatisfy { $0.state == .ready && $0.restarts == 1 }
        }
        let after = await fixture.master.statusReport()
        #expect(after.generations.map(\.id) == [1])
        #expect(after.generations.first?.state == .serving)
        #expect(after.listeners == before.listeners)
        try await fixture.stop()
    }

    @Test("a reload hands its generation to the spares started ahead of it, then starts new spares")
    func sparesServeTheReload() async throws {
        let fixture = try await Fixture { _, _ in .healthy() }
        try await ReloadStateMachineTests.waitFor("two spares") { await fixture.master.spares.count == 2 }
        let spares = Set(await fixture.master.spares.map(\.pid))
        guard case .succeeded = await fixture.master.reload(trigger: "test") else {
            Issue.record("reload failed")
            return
        }
        let generation2 = Set(fixture.spawner.records(generation: 2).map(\.pid))
        #expect(generation2 == spares)
        let newSpares = Set(await fixture.master.spares.map(\.pid))
        #expect(newSpares.count == 2 && newSpares.isDisjoint(with: spares))
        try await fixture.stop()
        #expect(fixture.spawner.records.allSatisfy { $0.exited })
    }

    @Test("a stop while generation 1 is still starting ends the run cleanly")
    func stopDuringStartup() async throws {
        var template = Array("/tmp/gatewayd-sm-XXXXXX".utf8CString)
        let directory = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configPath = directory + "/gateway.yaml"
        try Fixture.config(body: "v1").write(toFile: configPath, atomically: true, encoding: .utf8)
        let spawner = FakeSpawner { _, _ in .neverReady }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let master = Master(
            options: SupervisorOptions(configPath: configPath, controlSocket: directory + "/control.sock"),
            loaded: try ConfigLoader.load(path: configPath), logger: logger, spawner: spawner)
        let run = Task { try await master.run() }
        try await ReloadStateMachineTests.waitFor("the workers to be spawned") { spawner.records.count == 2 }
        await master.stop(now: false)
        try await run.value
        #expect(await master.statusReport().state == .stopped)
        #expect(spawner.records.allSatisfy { $0.exited })
        #expect(!FileManager.default.fileExists(atPath: directory + "/control.sock"))
    }
}

extension ReloadOutcome {
    var isFailure: Bool {
        if case .failed = self { return true }
        return false
    }
}

import Foundation
import GatewayCore
import Synchronization
import Testing

@testable import GatewaySupervisor

/// The master's events, with fake workers (`ReloadStateMachineTests.Fixture`): what a reload
/// records, what a caller asking for progress hears, what a follower gets.
@Suite("Events", .serialized, .timeLimit(.minutes(1)))
struct EventTests {
    typealias Fixture = ReloadStateMachineTests.Fixture

    @Test("a reload is an event with its trigger, phases and diff; progress hears each phase as it ends")
    func reloadEvent() async throws {
        let fixture = try await Fixture { _, _ in .healthy() }
        let master = fixture.master
        try fixture.write(Fixture.config(body: "v2"))
        let heard = Mutex<[String]>([])
        let outcome = await master.reload(trigger: "test", peerUID: 1000) { phase in
            heard.withLock { $0.append(phase.name) }
        }
        guard case .succeeded = outcome else {
            Issue.record("\(outcome)")
            return
        }
        #expect(heard.withLock { $0 } == ["validate", "bind", "spawn", "ready", "switch"])
        let events = await master.events(since: nil)
        #expect(events.first?.type == .start && events.first?.generation == 1)
        let reload = try #require(events.first { $0.type == .reload })
        #expect(reload.trigger == "test" && reload.peerUID == 1000 && reload.outcome == .ok && reload.generation == 2)
        #expect(Set(reload.phases?.keys.map { $0 } ?? []) == ["validate", "bind", "spawn", "ready", "switch"])
        #expect(reload.diff?.routesChanged == ["hello"] && reload.diff?.settings == [])

        // A failed validation: its reason and each error with file:line:col; only the phase it
        // reached.
        try fixture.write("workers: 2\nlisteners:\n  - name: web\n    adress: 127.0.0.1:0\n")
        _ = await master.reload(trigger: "SIGHUP")
        let failed = try #require(await master.events(since: reload.id).first { $0.type == .reload })
        #expect(failed.outcome == .failed && failed.reason?.hasPrefix("invalid config") == true)
        #expect(failed.details?.contains { $0.contains("gateway.yaml:4:5") } == true, "\(failed)")
        #expect(failed.phases?.keys.map { $0 } == ["validate"] && failed.diff == nil)
        try await fixture.stop()
    }

    @Test("a follower gets the backlog, then each new event")
    func follower() async throws {
        let fixture = try await Fixture { _, _ in .healthy() }
        let master = fixture.master
        let (backlog, stream) = await master.follow(since: nil)
        #expect(backlog.map(\.type) == [.start])
        _ = await master.reload(trigger: "test")
        var seen: [GatewayEvent.Kind] = []
        for await line in stream {
            if let event = line.event { seen.append(event.type) }
            if seen.contains(.reload) { break }
        }
        #expect(seen.first == .reload)
        try await fixture.stop()
    }

    @Test("the history keeps the newest 100, and ids go on after an upgrade's")
    func historyCapacity() {
        var history = EventHistory()
        history.adopt((1...40).map { GatewayEvent(id: $0, type: .reload, time: 0, masterPid: 1) })
        for _ in 0..<150 { history.record(GatewayEvent(type: .workerExit, time: 0, masterPid: 2)) }
        #expect(history.events.count == EventHistory.capacity)
        #expect(history.events.first?.id == 91 && history.events.last?.id == 190)
    }
}

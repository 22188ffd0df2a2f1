import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The upgrade protocol's two sides against each other, in-process: what the old master sends
/// the new one takes whole (fds included), a version it cannot read is refused before the
/// rest is read, and every sequence the protocol does not allow is refused, naming it,
/// without leaving a received fd open.
@Suite("Upgrade protocol", .serialized, .timeLimit(.minutes(1)))
struct UpgradeChannelTests {
    let segment: SharedMemory
    let listeners: [CInt]
    let control: CInt

    init() throws {
        segment = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        listeners = try (0..<3).map { _ in
            try ListeningSocket.bind(try ListenerAddress(parsing: "127.0.0.1:0"), backlog: 8)
        }
        control = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    func close() {
        for fd in listeners + [control] { closeDescriptor(fd) }
    }

    func inheritance(version: Int = UpgradeProtocol.spokenVersion) throws -> UpgradeInheritance {
        let reload = GatewayEvent(
            id: 1, type: .reload, time: 1_795_000_000, trigger: "SIGHUP", outcome: .failed, reason: "invalid config",
            details: ["/etc/g.yaml:3:5: unknown key 'adress'"], phases: ["validate": 0.5], durationMs: 4.5,
            masterPid: 42)
        let exit = GatewayEvent(
            id: 2, type: .workerExit, time: 1_795_000_001, outcome: .failed, reason: "killed by SIGKILL",
            generation: 3, worker: 1, pid: 4711, masterPid: 42)
        return UpgradeInheritance(
            state: .init(
                version: version, masterPid: 42, configPath: "/etc/g.yaml", nextGeneration: 9, reloads: 7,
                failedReloads: 2, watchdogMicroseconds: 10_000_000, trigger: "SIGUSR2", startedAt: 1_795_000_001,
                ticketKeys: .init(keys: Self.ticketKeys, ageMilliseconds: 1_234_567)),
            listeners: try listeners.enumerated().map { index, fd in
                HandedOverListener(
                    name: "l\(index)", origin: index == 0 ? .inherited : .bound,
                    configuredAddress: try ListenerAddress(parsing: "127.0.0.1:0"), backlog: Int32(100 + index),
                    stored: index == 2, fd: fd)
            },
            sharedMemory: (try #require(segment.descriptor), segment.handoff),
            controlSocket: ("/run/gatewayd/control.sock", control), history: [reload, exit])
    }

    /// `send` runs on another thread against the new master's side.
    private func exchange(
        _ send: @escaping @Sendable (UpgradeChannel) -> Void
    ) throws -> Result<UpgradeInheritance, UpgradeProtocolError> {
        let (old, newEnd) = try UpgradeChannel.makePair()
        let new = UpgradeChannel(descriptor: newEnd, intake: .fromOldMaster)
        let sent = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            send(old)
            old.close()
            sent.signal()
        }
        let result = Result { () throws(UpgradeProtocolError) in try new.receiveInheritance() }
        new.close()
        sent.wait()
        return result
    }

    @Test(
        "everything the old master holds crosses: sockets with name, origin and store flag, segment, control socket, state, history"
    )
    func wholeHandover() throws {
        defer { close() }
        let sending = try inheritance()
        let received = try exchange { try? $0.sendInheritance(sending) }.get()
        // The segment's fd is the adopted segment's (below), which closes it.
        defer { for fd in received.listeners.map(\.fd) + [received.controlSocket.fd] { closeDescriptor(fd) } }
        #expect(received.state == sending.state)
        #expect(received.history == sending.history)
        #expect(received.listeners.map(\.name) == ["l0", "l1", "l2"])
        #expect(received.listeners.map(\.origin) == [.inherited, .bound, .bound])
        #expect(received.listeners.map(\.stored) == [false, false, true])
        #expect(received.listeners.map(\.backlog) == [100, 101, 102])
        for (got, sent) in zip(received.listeners, sending.listeners) {
            #expect(try ListeningSocket.localAddress(fd: got.fd) == ListeningSocket.localAddress(fd: sent.fd))
        }
        #expect(received.sharedMemory.handoff == segment.handoff)
        // The new master maps the very segment: what one writes, the other reads.
        let adopted = try SharedMemory.adopt(
            descriptor: received.sharedMemory.fd, handoff: received.sharedMemory.handoff)
        #expect(adopted.hashSeed == segment.hashSeed)
        #expect(received.controlSocket.path == "/run/gatewayd/control.sock")
        var info = stat()
        fstat(received.controlSocket.fd, &info)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
    }

    static let ticketKeys: SessionTicketKeys = {
        var keys = SessionTicketKeys()
        keys.rotate()
        return keys
    }()

    @Test("ticket keys cross in state, with their age; malformed ones are refused, and no message shows a key")
    func ticketKeys() throws {
        let keys = Self.ticketKeys.keys.map { Data($0).base64EncodedString() }
        func state(_ extra: String) -> String {
            """
            {"type":"state","version":\(UpgradeProtocol.spokenVersion),"master_pid":1,"config_path":"/g.yaml",\
            "next_generation":2,"reloads":0,"failed_reloads":0,"trigger":"gatewayctl","started_at":1\(extra)}
            """
        }
        let decoded = try UpgradeMessage.decode(
            payload: Array(state(#","ticket_keys":["\#(keys[0])","\#(keys[1])"],"ticket_keys_age_ms":5"#).utf8))
        guard case .state(let carried) = decoded else {
            Issue.record("decoded as \(decoded.type)")
            return
        }
        #expect(carried.ticketKeys == .init(keys: Self.ticketKeys, ageMilliseconds: 5))
        // From a master that carries none (an age alone is no keys): the new master makes its own.
        for none in ["", #","ticket_keys_age_ms":5"#] {
            let decoded = try UpgradeMessage.decode(payload: Array(state(none).utf8))
            guard case .state(let without) = decoded else {
                Issue.record("decoded as \(decoded.type)")
                return
            }
            #expect(without.ticketKeys == nil)
        }
        for bad in [
            #","ticket_keys":["c2hvcnQ="],"ticket_keys_age_ms":5"#, #","ticket_keys":["\#(keys[0])"]"#,
            #","ticket_keys":["\#(keys[0])"],"ticket_keys_age_ms":-1"#, #","ticket_keys":[],"ticket_keys_age_ms":5"#,
        ] {
            #expect(throws: UpgradeProtocolError.self, "\(bad)") {
                try UpgradeMessage.decode(payload: Array(state(bad).utf8))
            }
        }
        let shown = "\(Self.ticketKeys) \(carried)"
        #expect(!keys.contains { shown.contains($0) } && shown.contains("2 ticket keys (not shown)"), "\(shown)")
    }

    @Test("a master of the version before sends no history, and is taken over all the same")
    func previousVersion() throws {
        defer { close() }
        let previous = UpgradeProtocol.spokenVersion - 1
        try #require(UpgradeProtocol.readableVersions.contains(previous))
        let sending = try inheritance(version: previous)
        let received = try exchange { try? $0.sendInheritance(sending) }.get()
        defer { for fd in received.descriptors { closeDescriptor(fd) } }
        #expect(received.state.version == previous)
        #expect(received.history.isEmpty)
        #expect(received.listeners.count == 3)
    }

    @Test("a future version is refused by its number, before the rest is read, and its fds are not kept")
    func futureVersion() throws {
        defer { close() }
        let sending = try inheritance(version: UpgradeProtocol.spokenVersion + 1)
        let before = openSockets()
        let result = try exchange { try? $0.sendInheritance(sending) }
        guard case .failure(let error) = result else {
            Issue.record("a future version was taken over")
            return
        }
        #expect(error.kind == .unsupportedVersion)
        #expect(error.description.contains("speaks upgrade protocol \(UpgradeProtocol.spokenVersion + 1)"))
        #expect(error.description.contains("cannot hand over to an older one"), "\(error)")
        #expect(openSockets() == before)
    }

    @Test("frames out of their place are refused, naming the frame, and nothing received stays open")
    func outOfPlace() throws {
        defer { close() }
        let state = try inheritance().state
        let (segmentFD, handoff, control, listener) = (
            try #require(segment.descriptor), segment.handoff, control, listeners[0]
        )
        let before = openSockets()
        let cases: [(String, @Sendable (UpgradeChannel) -> Void)] = [
            ("expected state, got end", { try? $0.send(.end(listenerCount: 0)) }),
            (
                "control_socket frame before shared_memory",
                { channel in
                    try? channel.send(.state(state))
                    try? channel.send(.controlSocket(path: "/c"), descriptors: [control])
                }
            ),
            (
                "end frame says 2 listeners, 1 arrived",
                { channel in
                    try? channel.send(.state(state))
                    try? channel.send(
                        .listeners(
                            .init(
                                names: ["a"], origins: [.bound],
                                addresses: [try! ListenerAddress(parsing: "127.0.0.1:1")],
                                backlogs: [1], stored: [false])), descriptors: [listener])
                    try? channel.send(.sharedMemory(handoff), descriptors: [segmentFD])
                    try? channel.send(.controlSocket(path: "/c"), descriptors: [control])
                    try? channel.send(.history([]))
                    try? channel.send(.end(listenerCount: 2))
                }
            ),
            (
                "the channel closed where the rest of the handover",
                { channel in try? channel.send(.state(state)) }
            ),
        ]
        for (expected, send) in cases {
            let result = try exchange(send)
            guard case .failure(let error) = result else {
                Issue.record("accepted; expected '\(expected)'")
                continue
            }
            #expect(error.description.contains(expected), "\(error)")
        }
        #expect(openSockets() == before)
    }

    @Test("every frame survives a round trip")
    func roundTrip() throws {
        defer { close() }
        let (a, bEnd) = try UpgradeChannel.makePair()
        let b = UpgradeChannel(descriptor: bEnd, intake: .fromOldMaster)
        defer {
            a.close()
            b.close()
        }
        let messages: [UpgradeMessage] = [
            .hello(.init(pid: 7, binaryVersion: "1.2.3")), .starting(generation: 4, readyTimeoutMilliseconds: 10_000),
            .ready(generation: 4), .failed(reason: "invalid config", details: ["g.yaml:1:2: x"]), .committed,
            .commit, .released, .end(listenerCount: 3), .history([]),
        ]
        for message in messages {
            try a.send(message)
            #expect(try #require(try b.receive()).message == message)
        }
    }

    @Test("a history frame with records alone, as a master from before events sends it, arrives as reload events")
    func historyFromRecordsAlone() throws {
        let frame = Array(
            #"{"type":"history","records":[{"kind":"reload","trigger":"SIGHUP","started_at":1795000000,"duration_ms":4.5,"outcome":"ok","generation":3,"master_pid":42,"timings":{"validate_ms":0.5,"bind_ms":0,"spawn_ms":1,"ready_ms":2,"switch_ms":1,"total_ms":4.5}}]}"#
                .utf8)
        guard case .history(let events) = try UpgradeMessage.decode(payload: frame) else {
            Issue.record("not a history frame")
            return
        }
        #expect(events.count == 1)
        #expect(events.first?.type == .reload && events.first?.generation == 3 && events.first?.id == 1)
        #expect(events.first?.phases?["ready"] == 2)
        // And every frame still carries `records`, for a master that reads nothing else.
        let written = String(decoding: UpgradeMessage.history(events).encodeFrame().dropFirst(4), as: UTF8.self)
        #expect(written.contains(#""records":[{"#) && written.contains(#""events":[{"#), "\(written)")
    }

    /// This process's open sockets and memfds: received copies that were not closed show here.
    private func openSockets() -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.filter { entry in
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)")) ?? ""
            return target.hasPrefix("socket:") || target.contains("gatewayd-shared")
        }.count
    }
}

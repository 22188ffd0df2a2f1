import CGatewayShim
import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Handoff protocol", .timeLimit(.minutes(1)))
struct HandoffChannelTests {
    private func pair() throws -> (HandoffChannel, HandoffChannel) {
        let (master, workerEnd) = try HandoffChannel.makePair()
        return (master, HandoffChannel(descriptor: workerEnd))
    }

    @Test("every message survives a round trip")
    func roundTrip() throws {
        let (a, b) = try pair()
        defer { a.close(); b.close() }
        let messages: [HandoffMessage] = [
            .hello(
                .init(
                    generation: 7, worker: 1, configPath: "/etc/g.yaml",
                    config: Array("a: \u{0}\u{ff}".utf8) + [0xff, 0])),
            .file(path: "/etc/keys.txt", bytes: [0, 0xff, 10]), .start(listenerCount: 0, fileCount: 1), .drain,
            .ready(pid: 42), .failed(reason: "no"), .connections(count: 3), .draining,
            .ticketKeys(rotatedKeys),
        ]
        for message in messages {
            try a.send(message)
            let received = try #require(try b.receive())
            #expect(received.message == message)
            #expect(received.descriptors.isEmpty)
        }
    }

    var rotatedKeys: SessionTicketKeys {
        var keys = SessionTicketKeys()
        for _ in 0..<5 { keys.rotate() }
        return keys
    }

    @Test("ticket keys: random, newest first, three kept; a frame with a key of the wrong size is refused")
    func ticketKeys() throws {
        var keys = SessionTicketKeys()
        let first = keys.keys[0]
        keys.rotate()
        #expect(keys.keys.count == 2 && keys.keys[1] == first && keys.keys[0] != first)
        #expect(rotatedKeys.keys.count == SessionTicketKeys.keptKeys)
        #expect(rotatedKeys.keys.allSatisfy { $0.count == SessionTicketKeys.keyLength })
        let short = #"{"type":"ticket_keys","ticket_keys":["AAAA"]}"#
        #expect(throws: HandoffProtocolError.self) { try HandoffMessage.decode(payload: Array(short.utf8)) }
    }

    @Test("300 listening fds cross in batches of at most 253, in order, CLOEXEC, after the shared segment")
    func manyDescriptors() throws {
        let (master, worker) = try pair()
        defer { master.close(); worker.close() }
        var sockets: [(name: String, fd: CInt, backlog: Int32)] = []
        for i in 0..<300 {
            let fd = try ListeningSocket.bind(try ListenerAddress(parsing: "127.0.0.1:0"), backlog: 16)
            sockets.append((name: "l\(i)", fd: fd, backlog: Int32(100 + i)))
        }
        defer { for s in sockets { closeDescriptor(s.fd) } }
        // The sender blocks once the socket buffer is full; send from another thread.
        let sent = DispatchSemaphore(value: 0)
        let hello = HandoffMessage.Hello(generation: 1, worker: 0, configPath: "x", config: [1, 2, 3])
        let toSend = sockets
        let segment = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        let segmentFD = try #require(segment.descriptor)
        Thread.detachNewThread {
            try? master.sendHandoff(
                hello: hello, sharedMemory: (fd: segmentFD, handoff: segment.handoff), listeners: toSend)
            sent.signal()
        }
        guard case .hello = try #require(try worker.receive()).message else {
            Issue.record("expected hello")
            return
        }
        let (sharedFrame, sharedFDs) = try #require(try worker.receive())
        // Size, layout and seed, to the bit.
        #expect(sharedFrame == .sharedMemory(segment.handoff))
        #expect(sharedFDs.count == 1)
        if let fd = sharedFDs.first {
            // A copy of the master's memfd, CLOEXEC, that maps the same segment.
            #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
            let mapped = try SharedMemory.map(descriptor: fd, handoff: segment.handoff)
            #expect(mapped.hashSeed == segment.hashSeed)
            closeDescriptor(fd)
        }
        var received: [(String, CInt, Int32)] = []
        var batches: [Int] = []
        while true {
            let (message, fds) = try #require(try worker.receive())
            if case .listeners(let batch) = message {
                batches.append(fds.count)
                for (i, fd) in fds.enumerated() { received.append((batch.names[i], fd, batch.backlogs[i])) }
            } else if case .start(let count, let fileCount) = message {
                #expect(count == 300)
                #expect(fileCount == 0)
                break
            }
        }
        sent.wait()
        #expect(batches == [253, 47])
        #expect(received.count == 300)
        for (i, (name, fd, backlog)) in received.enumerated() {
            #expect(name == "l\(i)")
            #expect(backlog == Int32(100 + i))
            // The same socket: same bound address as the original.
            #expect(try ListeningSocket.localAddress(fd: fd) == (try ListeningSocket.localAddress(fd: sockets[i].fd)))
            #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0, "received fd \(fd) is not CLOEXEC")
            closeDescriptor(fd)
        }
    }

    @Test("a shared_memory frame without its fd is a protocol violation")
    func sharedMemoryWithoutDescriptor() throws {
        let (a, b) = try pair()
        defer { a.close(); b.close() }
        let frame = HandoffMessage.sharedMemory(
            .init(size: 4096, layout: .init(rateSlots: 8, metricSlots: 4), seed: (.max, 1))
        ).encodeFrame()
        _ = frame.withUnsafeBytes { write(a.descriptor, $0.baseAddress, $0.count) }
        expectViolation(b, "shared_memory frame names 1 fds, 0 arrived")
    }

    @Test("end of file is reported as nil, not an error")
    func endOfFile() throws {
        let (a, b) = try pair()
        defer { b.close() }
        a.close()
        #expect(try b.receive() == nil)
    }

    @Test("a frame with a corrupt length is a protocol violation")
    func corruptLength() throws {
        let (a, b) = try pair()
        defer { a.close(); b.close() }
        let garbage: [UInt8] = [0xff, 0xff, 0xff, 0xff, 1, 2, 3]
        _ = garbage.withUnsafeBytes { write(a.descriptor, $0.baseAddress, $0.count) }
        #expect(throws: HandoffChannelError.self) { try b.receive() }
    }

    @Test("an unknown frame type is a protocol violation naming it")
    func unknownType() throws {
        let (a, b) = try pair()
        defer { a.close(); b.close() }
        let json = Array(#"{"type":"launch_missiles"}"#.utf8)
        let frame = [0, 0, 0, UInt8(json.count)] + json
        _ = frame.withUnsafeBytes { write(a.descriptor, $0.baseAddress, $0.count) }
        expectViolation(b, "launch_missiles")
    }
}

@Suite("Handoff protocol violations", .timeLimit(.minutes(1)))
struct HandoffViolationTests {
    @Test(
        "the master's end takes no fd from a worker, not even inside a frame not yet whole: none is installed, the channel fails"
    )
    func masterEndRefusesDescriptors() throws {
        let (master, workerEnd) = try HandoffChannel.makePair()
        defer { master.close() }
        var pipeFDs: [CInt] = [-1, -1]
        #expect(pipe(&pipeFDs) == 0)
        defer { closeDescriptor(pipeFDs[0]) }
        // A length prefix and no frame, then one byte and 253 copies of the pipe's write end:
        // before, the master kept fds that came while a frame was incomplete.
        #expect(write(workerEnd, [0, 0, 0xff, 0xff] as [UInt8], 4) == 4)
        var byte: UInt8 = 0x7b
        let fds = [CInt](repeating: pipeFDs[1], count: HandoffProtocol.maximumDescriptorsPerFrame)
        #expect(fds.withUnsafeBufferPointer { gw_sendmsg_fds(workerEnd, &byte, 1, $0.baseAddress, 253) } == 1)
        closeDescriptor(pipeFDs[1])
        expectViolation(master, "fds came with a frame from the worker")
        // Every copy is gone once the worker's end is: the pipe's read end sees end of file.
        closeDescriptor(workerEnd)
        var read1: UInt8 = 0
        #expect(read(pipeFDs[0], &read1, 1) == 0)
    }

    @Test("the master's end refuses a frame longer than 64 KiB at its length; the worker's end takes it")
    func masterEndFrameLimit() throws {
        let long = HandoffMessage.failed(reason: String(repeating: "x", count: 100_000))
        let (master, workerEnd) = try HandoffChannel.makePair()
        let worker = HandoffChannel(descriptor: workerEnd)
        defer { master.close(); worker.close() }
        // Only the length prefix: the master judges a frame before it has any of it.
        let prefix = Array(long.encodeFrame().prefix(4))
        #expect(write(workerEnd, prefix, 4) == 4)
        expectViolation(master, "out of range (1 to 65536 bytes)")
        let sent = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? master.send(long)
            sent.signal()
        }
        #expect(try worker.receive()?.message == long)
        sent.wait()
    }

    @Test("fds attached to a frame that may not carry any are refused and closed")
    func fdsOnWrongFrame() throws {
        let (a, workerEnd) = try HandoffChannel.makePair()
        let b = HandoffChannel(descriptor: workerEnd)
        defer { a.close(); b.close() }
        var pipeFDs: [CInt] = [-1, -1]
        #expect(pipe(&pipeFDs) == 0)
        defer { closeDescriptor(pipeFDs[0]) }
        let frame = HandoffMessage.drain.encodeFrame()
        var one = pipeFDs[1]
        let sent = frame.withUnsafeBytes { raw in
            gw_sendmsg_fds(a.descriptor, raw.baseAddress!, raw.count, &one, 1)
        }
        #expect(sent == frame.count)
        closeDescriptor(pipeFDs[1])
        expectViolation(b, "no frame may carry")
        // The smuggled fd was closed by the receiver: the pipe's read end sees end of file.
        var byte: UInt8 = 0
        #expect(read(pipeFDs[0], &byte, 1) == 0)
    }
}

/// Receives on `channel`, which must refuse what arrives with an error that says `text`.
private func expectViolation(
    _ channel: HandoffChannel, _ text: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    do {
        let received = try channel.receive()
        Issue.record("accepted: \(String(describing: received))", sourceLocation: sourceLocation)
    } catch {
        #expect("\(error)".contains(text), "\(error)", sourceLocation: sourceLocation)
    }
}

import Foundation
import GatewayCore
import Testing

@testable import Gateway

#if canImport(Glibc)
    import Glibc
#endif

/// The worker's side of the handoff (`WorkerProcess.receiveHandoff`) against frames written by
/// hand: what the master sends is accepted whole, and every sequence the protocol does not
/// allow is an error naming it.
@Suite("Handoff, the worker's side", .timeLimit(.minutes(1)))
struct HandoffReceiveTests {
    let hello = HandoffMessage.Hello(generation: 2, worker: 1, configPath: "/etc/g.yaml", config: Array("x".utf8))
    /// Never mapped here: the worker's side maps after the handoff.
    let segment = SharedMemory.Handoff(size: 4096, layout: .init(rateSlots: 8, metricSlots: 4), seed: (1, 2))

    /// Sends `messages` (a shared segment's fd with `shared_memory` and `access_log`) from another thread (a
    /// 1 MiB file is more than the socket buffer holds), closes the master's end, and returns
    /// what the worker made of it.
    private func receive(_ messages: [HandoffMessage]) throws -> Result<WorkerProcess.Handoff?, Error> {
        let (master, workerEnd) = try HandoffChannel.makePair()
        let worker = HandoffChannel(descriptor: workerEnd)
        defer { worker.close() }
        let segment = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        let segmentFD = try #require(segment.descriptor)
        let sent = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            for message in messages {
                switch message {
                case .sharedMemory, .accessLog: try? master.send(message, descriptors: [segmentFD])
                default: try? master.send(message)
                }
            }
            master.close()
            sent.signal()
        }
        let result = Result { try WorkerProcess.receiveHandoff(worker) }
        // A refusal stops reading: the sender ends on the closed channel.
        worker.close()
        sent.wait()
        if case .success(let handoff?) = result {
            closeDescriptor(handoff.sharedMemory.fd)
            if let log = handoff.accessLog { closeDescriptor(log.fd) }
        }
        return withExtendedLifetime(segment) { result }
    }

    private func expectRefused(_ messages: [HandoffMessage], _ reason: String) throws {
        switch try receive(messages) {
        case .success(let handoff):
            Issue.record("accepted: \(String(describing: handoff))")
        case .failure(let error):
            #expect("\(error)".contains(reason), "\(error)")
        }
    }

    @Test("files arrive in frames of their own, 1 MiB each, and are all there at start")
    func files() throws {
        let big = [UInt8](repeating: 0x61, count: 1 << 20)
        let handoff = try receive([
            .hello(hello), .file(path: "/k/a", bytes: big), .file(path: "/k/b", bytes: [0, 0xff]),
            .sharedMemory(segment), .start(listenerCount: 0, fileCount: 2),
        ]).get()
        let received = try #require(handoff)
        #expect(received.hello == hello)
        #expect(received.files == ["/k/a": big, "/k/b": [0, 0xff]])
    }

    @Test("a file sent twice, after shared_memory, or a count that does not match is refused")
    func refusals() throws {
        try expectRefused(
            [
                .hello(hello), .file(path: "/k/a", bytes: [1]), .file(path: "/k/a", bytes: [2]),
                .sharedMemory(segment), .start(listenerCount: 0, fileCount: 1),
            ], "file /k/a sent twice, or after shared_memory")
        try expectRefused(
            [
                .hello(hello), .sharedMemory(segment), .file(path: "/k/a", bytes: [1]),
                .start(listenerCount: 0, fileCount: 1),
            ], "file /k/a sent twice, or after shared_memory")
        try expectRefused(
            [
                .hello(hello), .file(path: "/k/a", bytes: [1]), .sharedMemory(segment),
                .start(listenerCount: 0, fileCount: 2),
            ],
            "start says 2 files, 1 arrived")
        try expectRefused(
            [.hello(hello), .sharedMemory(segment)], "the master closed the channel during the handoff")
        try expectRefused([.file(path: "/k/a", bytes: [1])], "expected hello, got file")
    }

    @Test("the access log's fd arrives after the shared segment's; any other place for it is refused")
    func accessLog() throws {
        let handoff = try receive([
            .hello(hello), .sharedMemory(segment), .accessLog(path: "/var/log/g.log"),
            .start(listenerCount: 0, fileCount: 0),
        ]).get()
        #expect(try #require(handoff).accessLog?.path == "/var/log/g.log")
        let misplaced = "an access_log frame before shared_memory, twice, or after the listeners"
        try expectRefused(
            [.hello(hello), .accessLog(path: "/l"), .sharedMemory(segment), .start(listenerCount: 0, fileCount: 0)],
            misplaced)
        try expectRefused(
            [
                .hello(hello), .sharedMemory(segment), .accessLog(path: "/l"), .accessLog(path: "/l"),
                .start(listenerCount: 0, fileCount: 0),
            ], misplaced)
    }
}

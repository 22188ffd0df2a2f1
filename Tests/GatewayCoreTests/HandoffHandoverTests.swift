import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Both sides of the handoff in GatewayCore, against each other: what `sendHandoff` writes,
/// `receiveHandoff` takes whole, fds included; what the protocol does not allow is refused,
/// naming it, and leaves no received fd open.
@Suite("Handoff, both sides", .timeLimit(.minutes(1)))
struct HandoffHandoverTests {
    let hello = HandoffMessage.Hello(generation: 3, worker: 0, configPath: "/etc/g.yaml", config: Array("c".utf8))

    /// Runs `send` on another thread (the socket buffer may fill) against the worker's side.
    private func exchange(
        _ send: @escaping @Sendable (HandoffChannel) -> Void
    ) throws -> Result<HandoffChannel.ReceivedHandoff?, Error> {
        let (master, workerEnd) = try HandoffChannel.makePair()
        let worker = HandoffChannel(descriptor: workerEnd)
        defer { worker.close() }
        let sent = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            send(master)
            master.close()
            sent.signal()
        }
        let result = Result { try worker.receiveHandoff() }
        worker.close()
        sent.wait()
        return result
    }

    @Test("listeners, the segment and the access log arrive with their fds, in order, as sent")
    func wholeHandoff() throws {
        let segment = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        let segmentFD = try #require(segment.descriptor)
        var sockets: [(name: String, fd: CInt, backlog: Int32)] = []
        for i in 0..<3 {
            let fd = try ListeningSocket.bind(try ListenerAddress(parsing: "127.0.0.1:0"), backlog: 8)
            sockets.append((name: "l\(i)", fd: fd, backlog: Int32(10 + i)))
        }
        defer { for socket in sockets { closeDescriptor(socket.fd) } }
        let log = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { closeDescriptor(log) }
        let (hello, toSend, handoff) = (self.hello, sockets, segment.handoff)
        let received = try #require(
            try exchange { master in
                try? master.sendHandoff(
                    hello: hello, files: ["/k": [1, 2]], sharedMemory: (segmentFD, handoff),
                    accessLog: ("/var/log/g.log", log), listeners: toSend)
            }.get())
        defer {
            for fd in received.listeners.map(\.fd) + [received.sharedMemory.fd, received.accessLog?.fd ?? -1]
            where fd >= 0 {
                closeDescriptor(fd)
            }
        }
        #expect(received.hello == hello)
        #expect(received.files == ["/k": [1, 2]])
        #expect(received.sharedMemory.handoff == segment.handoff)
        #expect(received.accessLog?.path == "/var/log/g.log")
        #expect(received.listeners.map(\.name) == ["l0", "l1", "l2"])
        #expect(received.listeners.map(\.backlog) == [10, 11, 12])
        for (listener, original) in zip(received.listeners, sockets) {
            #expect(try ListeningSocket.localAddress(fd: listener.fd) == ListeningSocket.localAddress(fd: original.fd))
        }
    }

    @Test("a refused handoff names what came instead and closes every fd it received")
    func refusalClosesReceivedDescriptors() throws {
        let segment = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        let segmentFD = try #require(segment.descriptor)
        let before = openCopies(of: segmentFD)
        let hello = self.hello
        let handoff = segment.handoff
        let result = try exchange { master in
            try? master.send(.hello(hello))
            try? master.send(.sharedMemory(handoff), descriptors: [segmentFD])
            try? master.send(.drain)
        }
        guard case .failure(let error) = result else {
            Issue.record("accepted: \(result)")
            return
        }
        #expect("\(error)".contains("unexpected drain during the handoff"), "\(error)")
        // The segment's copy that came with shared_memory is closed again.
        #expect(openCopies(of: segmentFD) == before)
        withExtendedLifetime(segment) {}
    }

    /// How many of this process's fds are `fd`'s file (same inode): copies received count.
    private func openCopies(of fd: CInt) -> Int {
        var target = stat()
        fstat(fd, &target)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.compactMap(CInt.init).filter { candidate in
            var info = stat()
            return fstat(candidate, &info) == 0 && info.st_ino == target.st_ino && info.st_dev == target.st_dev
        }.count
    }

    @Test("a master that closes before a word is a spare's end: nil, not an error")
    func closedBeforeHello() throws {
        let result = try exchange { _ in }
        #expect(try result.get() == nil)
    }
}

import CGatewayShim
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One end of a master⇄worker socketpair, speaking `HandoffProtocol` with blocking I/O.
///
/// Owns its fd. Sends may come from any thread (serialized by a lock); receives must come from
/// one thread at a time, which in both processes is a dedicated reader thread, never the
/// Swift concurrency pool.
public final class HandoffChannel: Sendable {
    /// What one end takes from its peer. A worker takes the handoff: fds, and frames as long
    /// as a config. The master takes neither from a worker, which may be compromised: nothing
    /// a worker says needs an fd or more than a few hundred bytes.
    public struct Intake: Sendable {
        /// The most fds one recvmsg installs: a whole `listeners` batch, or none at all.
        let descriptorRoom: Int
        let maximumFrameLength: Int

        /// The worker's end: what the master sends.
        public static let fromMaster = Intake(
            descriptorRoom: HandoffProtocol.maximumDescriptorsPerFrame,
            maximumFrameLength: HandoffProtocol.maximumFrameLength)
        /// The master's end: what a worker sends.
        public static let fromWorker = Intake(
            descriptorRoom: 0, maximumFrameLength: HandoffProtocol.maximumWorkerFrameLength)
    }

    public let descriptor: CInt
    private let intake: Intake
    private let sendLock = Mutex(())
    private let receiveState = Mutex(ReceiveState())
    private let closed = Atomic<Bool>(false)

    private struct ReceiveState: ~Copyable {
        var buffer: [UInt8] = []
        /// Fds received but not yet claimed by a frame that carries fds, in arrival order.
        var descriptors: [CInt] = []
    }

    public init(descriptor: CInt, intake: Intake = .fromMaster) {
        self.descriptor = descriptor
        self.intake = intake
    }

    /// A connected socketpair, both ends CLOEXEC. `.0` is the master's end.
    public static func makePair() throws(SystemCallError) -> (master: HandoffChannel, workerEnd: CInt) {
        var fds: [CInt] = [-1, -1]
        try syscall("socketpair") {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        }
        return (HandoffChannel(descriptor: fds[0], intake: .fromWorker), fds[1])
    }

    /// Sends one message. A message that carries fds (`shared_memory`, `listeners`) must come
    /// with exactly its fds.
    public func send(_ message: HandoffMessage, descriptors: [CInt] = []) throws(SystemCallError) {
        precondition(
            descriptors.count == message.descriptorCount, "\(message.type) frame with \(descriptors.count) fds")
        precondition(descriptors.count <= HandoffProtocol.maximumDescriptorsPerFrame)
        let frame = message.encodeFrame()
        try sendLock.withLock { (_) throws(SystemCallError) in
            var offset = 0
            var fdsToSend = descriptors
            while offset < frame.count {
                let sent = try syscall("sendmsg", on: "handoff channel fd \(descriptor)") {
                    frame.withUnsafeBytes { raw in
                        fdsToSend.withUnsafeBufferPointer { fdPtr in
                            gw_sendmsg_fds(
                                descriptor, raw.baseAddress! + offset, raw.count - offset, fdPtr.baseAddress,
                                CInt(fdPtr.count))
                        }
                    }
                }
                offset += sent
                // The fds went with the first byte; never send them twice.
                fdsToSend = []
            }
        }
    }

    /// Blocks until a whole frame arrives. Returns `nil` at end of file (the peer is gone).
    /// A protocol violation closes every fd that came with it and throws.
    public func receive() throws(HandoffChannelError) -> (message: HandoffMessage, descriptors: [CInt])? {
        try receiveState.withLock { (state) throws(HandoffChannelError) in
            while true {
                if let frame = try Self.extractFrame(&state, maximumLength: intake.maximumFrameLength) {
                    return frame
                }
                var chunk = [UInt8](repeating: 0, count: 64 * 1024)
                var fds = [CInt](repeating: -1, count: max(1, intake.descriptorRoom))
                var nfds: CInt = 0
                var truncated: CInt = 0
                let n: Int
                do throws(SystemCallError) {
                    n = try syscall("recvmsg", on: "handoff channel fd \(descriptor)") {
                        chunk.withUnsafeMutableBytes { raw in
                            gw_recvmsg_fds(
                                descriptor, raw.baseAddress, raw.count, &fds, CInt(intake.descriptorRoom), &nfds,
                                &truncated)
                        }
                    }
                } catch {
                    throw .system(error)
                }
                state.descriptors.append(contentsOf: fds.prefix(Int(nfds)))
                if intake.descriptorRoom == 0, nfds > 0 || truncated != 0 {
                    // With no room, the kernel installed none of them (MSG_CTRUNC says they
                    // came); were one installed all the same, discard closes it.
                    Self.discard(&state)
                    throw .protocolViolation(
                        HandoffProtocolError("fds came with a frame from the worker, which may send none (refused)"))
                }
                if truncated != 0 {
                    Self.discard(&state)
                    throw .protocolViolation(
                        HandoffProtocolError("control data truncated (too many fds in one message)"))
                }
                if n == 0 {
                    let leftover = state.buffer.count
                    Self.discard(&state)
                    if leftover > 0 {
                        throw .protocolViolation(HandoffProtocolError("end of file inside a frame (\(leftover) bytes)"))
                    }
                    return nil
                }
                state.buffer.append(contentsOf: chunk.prefix(n))
            }
        }
    }

    private static func extractFrame(
        _ state: inout ReceiveState, maximumLength: Int
    ) throws(HandoffChannelError) -> (message: HandoffMessage, descriptors: [CInt])? {
        guard state.buffer.count >= 4 else { return nil }
        let length =
            Int(state.buffer[0]) << 24 | Int(state.buffer[1]) << 16 | Int(state.buffer[2]) << 8 | Int(state.buffer[3])
        // Judged on the length alone, before any of the frame is kept.
        guard length > 0, length <= maximumLength else {
            discard(&state)
            throw .protocolViolation(
                HandoffProtocolError("frame length \(length) out of range (1 to \(maximumLength) bytes)"))
        }
        guard state.buffer.count >= 4 + length else { return nil }
        let message: HandoffMessage
        do {
            message = try HandoffMessage.decode(payload: state.buffer[4..<(4 + length)])
        } catch {
            discard(&state)
            throw .protocolViolation(error)
        }
        state.buffer.removeFirst(4 + length)
        // Fds arrive with the recvmsg that reads the first byte of their frame, and one
        // recvmsg may also return frames sent before it. So pending fds belong to the next
        // frame that wants some; once nothing more is buffered, no later frame can own them.
        let wanted = message.descriptorCount
        guard state.descriptors.count >= wanted else {
            let got = state.descriptors.count
            discard(&state)
            throw .protocolViolation(HandoffProtocolError("\(message.type) frame names \(wanted) fds, \(got) arrived"))
        }
        let fds = Array(state.descriptors.prefix(wanted))
        state.descriptors.removeFirst(wanted)
        if !state.descriptors.isEmpty && state.buffer.isEmpty {
            let extra = state.descriptors.count
            for fd in fds { closeDescriptor(fd) }
            discard(&state)
            throw .protocolViolation(
                HandoffProtocolError("\(extra) fds arrived that no frame may carry (after \(message.type))"))
        }
        return (message, fds)
    }

    private static func discard(_ state: inout ReceiveState) {
        for fd in state.descriptors { closeDescriptor(fd) }
        state.descriptors.removeAll()
        state.buffer.removeAll()
    }

    /// shutdown(2) both ways: wakes a reader blocked in `receive()` (it sees end of file)
    /// without closing the fd under it.
    public func shutdown() {
        _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR))
    }

    /// Closes the fd. Call once, after the reader thread is done with it.
    public func close() {
        if closed.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            closeDescriptor(descriptor)
        }
    }
}

public enum HandoffChannelError: Error, Sendable, CustomStringConvertible {
    case system(SystemCallError)
    case protocolViolation(HandoffProtocolError)

    public var description: String {
        switch self {
        case .system(let error): return error.description
        case .protocolViolation(let error): return "handoff protocol: \(error.description)"
        }
    }
}

extension HandoffChannel {
    /// The master's side of the handoff: hello, a frame per file, the shared segment's fd, the
    /// access log's fd, the listener fds in batches of at most 253, start.
    ///
    /// `files`: every file the config names that the master read while validating it (API
    /// keys), absolute path → bytes. The worker parses with these, never the disk, so it serves
    /// exactly what was validated (and needs no permission to read them).
    /// `accessLog`: the log file the master opened for the generation, when it is a file.
    public func sendHandoff(
        hello: HandoffMessage.Hello, files: [String: [UInt8]] = [:],
        sharedMemory: (fd: CInt, handoff: SharedMemory.Handoff), accessLog: (path: String, fd: CInt)? = nil,
        listeners: [(name: String, fd: CInt, backlog: Int32)]
    ) throws(SystemCallError) {
        try send(.hello(hello))
        for (path, bytes) in files.sorted(by: { $0.key < $1.key }) {
            try send(.file(path: path, bytes: bytes))
        }
        try send(.sharedMemory(sharedMemory.handoff), descriptors: [sharedMemory.fd])
        if let accessLog {
            try send(.accessLog(path: accessLog.path), descriptors: [accessLog.fd])
        }
        var index = 0
        while index < listeners.count {
            let batch = listeners[index..<min(index + HandoffProtocol.maximumDescriptorsPerFrame, listeners.count)]
            try send(
                .listeners(.init(names: batch.map(\.name), backlogs: batch.map(\.backlog))),
                descriptors: batch.map(\.fd))
            index += batch.count
        }
        try send(.start(listenerCount: listeners.count, fileCount: files.count))
    }
}

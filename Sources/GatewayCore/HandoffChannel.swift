#if canImport(Glibc)
    import Glibc
#endif

/// One end of a master⇄worker socketpair, speaking `HandoffProtocol` with blocking I/O over a
/// `FrameSocket`.
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

    private let socket: FrameSocket

    public var descriptor: CInt { socket.descriptor }

    public init(descriptor: CInt, intake: Intake = .fromMaster) {
        socket = FrameSocket(
            descriptor: descriptor,
            intake: .init(
                descriptorRoom: intake.descriptorRoom, maximumFrameLength: intake.maximumFrameLength,
                peer: "the worker"))
    }

    /// A connected socketpair, both ends CLOEXEC. `.0` is the master's end.
    public static func makePair() throws(SystemCallError) -> (master: HandoffChannel, workerEnd: CInt) {
        let (master, worker) = try FrameSocket.makePair()
        return (HandoffChannel(descriptor: master, intake: .fromWorker), worker)
    }

    /// Sends one message. A message that carries fds (`shared_memory`, `access_log`,
    /// `listeners`) must come with exactly its fds.
    public func send(_ message: HandoffMessage, descriptors: [CInt] = []) throws(SystemCallError) {
        precondition(
            descriptors.count == message.descriptorCount, "\(message.type) frame with \(descriptors.count) fds")
        precondition(descriptors.count <= HandoffProtocol.maximumDescriptorsPerFrame)
        try socket.send(frame: message.encodeFrame(), descriptors: descriptors, what: "handoff channel")
    }

    /// Blocks until a whole frame arrives. Returns `nil` at end of file (the peer is gone).
    /// A protocol violation closes every fd that came with it and throws.
    public func receive() throws(HandoffChannelError) -> (message: HandoffMessage, descriptors: [CInt])? {
        do {
            return try socket.receive(HandoffMessage.self, what: "handoff channel")
        } catch {
            switch error {
            case .system(let error): throw .system(error)
            case .violation(let violation): throw .protocolViolation(HandoffProtocolError(violation.description))
            }
        }
    }

    /// shutdown(2) both ways: wakes a reader blocked in `receive()` (it sees end of file)
    /// without closing the fd under it.
    public func shutdown() { socket.shutdown() }

    /// Closes the fd. Call once, after the reader thread is done with it.
    public func close() { socket.close() }
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

// MARK: - The handoff: send and receive side

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

    /// What a worker receives in its handoff. Every fd in it is the receiver's to close.
    public struct ReceivedHandoff: Sendable {
        public struct Listener: Sendable, Equatable {
            public var name: String
            public var fd: CInt
            public var backlog: Int32
        }
        public var hello: HandoffMessage.Hello
        /// The files the config names (`file` frames), absolute path → bytes.
        public var files: [String: [UInt8]]
        /// The shared segment's memfd and what the master said of it (`shared_memory`).
        public var sharedMemory: (fd: CInt, handoff: SharedMemory.Handoff)
        /// The access log's file, when it is one (`access_log`).
        public var accessLog: (path: String, fd: CInt)?
        public var listeners: [Listener]
    }

    /// The worker's side of the handoff, the reverse of `sendHandoff`: every frame in the
    /// order the protocol states, or an error naming what came instead. nil when the master
    /// closed the channel before sending anything: a spare whose master stopped or died, which
    /// has nothing to do but exit.
    public func receiveHandoff() throws -> ReceivedHandoff? {
        guard let (first, _) = try receive() else { return nil }
        guard case .hello(let hello) = first else {
            throw HandoffProtocolError("expected hello, got \(first.type)")
        }
        guard hello.version == HandoffProtocol.version else {
            throw HandoffProtocolError(
                "protocol version mismatch: master speaks \(hello.version), worker \(HandoffProtocol.version)")
        }
        var sharedMemory: (fd: CInt, handoff: SharedMemory.Handoff)?
        var accessLog: (path: String, fd: CInt)?
        var listeners: [ReceivedHandoff.Listener] = []
        var files: [String: [UInt8]] = [:]
        // On any refusal, nothing received is kept open.
        var accepted = false
        defer {
            if !accepted {
                for fd in [sharedMemory?.fd, accessLog?.fd].compactMap({ $0 }) + listeners.map(\.fd) {
                    closeDescriptor(fd)
                }
            }
        }
        while true {
            guard let (message, fds) = try receive() else {
                throw HandoffProtocolError("the master closed the channel during the handoff")
            }
            switch message {
            case .sharedMemory(let segment):
                guard sharedMemory == nil, listeners.isEmpty else {
                    for fd in fds { closeDescriptor(fd) }
                    throw HandoffProtocolError("a second shared_memory frame, or one after the listeners")
                }
                sharedMemory = (fds[0], segment)
            case .accessLog(let path):
                guard sharedMemory != nil, accessLog == nil, listeners.isEmpty else {
                    for fd in fds { closeDescriptor(fd) }
                    throw HandoffProtocolError(
                        "an access_log frame before shared_memory, twice, or after the listeners")
                }
                accessLog = (path, fds[0])
            case .listeners(let batch):
                for (i, fd) in fds.enumerated() {
                    listeners.append(.init(name: batch.names[i], fd: fd, backlog: batch.backlogs[i]))
                }
            case .file(let path, let bytes):
                guard sharedMemory == nil, files.updateValue(bytes, forKey: path) == nil else {
                    throw HandoffProtocolError("file \(path) sent twice, or after shared_memory")
                }
            case .start(let count, let fileCount):
                guard count == listeners.count else {
                    throw HandoffProtocolError("start says \(count) listeners, \(listeners.count) arrived")
                }
                guard fileCount == files.count else {
                    throw HandoffProtocolError("start says \(fileCount) files, \(files.count) arrived")
                }
                guard let sharedMemory else {
                    throw HandoffProtocolError("no shared_memory frame before start")
                }
                accepted = true
                return ReceivedHandoff(
                    hello: hello, files: files, sharedMemory: sharedMemory, accessLog: accessLog, listeners: listeners)
            default:
                throw HandoffProtocolError("unexpected \(message.type) during the handoff")
            }
        }
    }
}

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One end of the old master ⇄ new master socketpair, speaking `UpgradeProtocol` with blocking
/// I/O over a `FrameSocket`: both sides of the handover (`sendInheritance`,
/// `receiveInheritance`), next to each other.
///
/// Owns its fd. Sends may come from any thread; receives from one thread at a time, never the
/// Swift concurrency pool.
public final class UpgradeChannel: Sendable {
    /// What one end takes from the other: the new master takes fds and long frames (the
    /// history); the old master takes no fd at all.
    public struct Intake: Sendable {
        let descriptorRoom: Int
        let peer: String
        /// The new master's end: what the old master sends.
        public static let fromOldMaster = Intake(
            descriptorRoom: UpgradeProtocol.maximumDescriptorsPerFrame, peer: "the old master")
        /// The old master's end: what the new master sends.
        public static let fromNewMaster = Intake(descriptorRoom: 0, peer: "the new master")
    }

    private let socket: FrameSocket

    public var descriptor: CInt { socket.descriptor }

    public init(descriptor: CInt, intake: Intake) {
        socket = FrameSocket(
            descriptor: descriptor,
            intake: .init(
                descriptorRoom: intake.descriptorRoom, maximumFrameLength: UpgradeProtocol.maximumFrameLength,
                peer: intake.peer))
    }

    /// A connected socketpair, both ends CLOEXEC: the old master's end, and the fd that becomes
    /// the new master's fd 3.
    public static func makePair() throws(SystemCallError) -> (oldMaster: UpgradeChannel, newMasterEnd: CInt) {
        let (old, new) = try FrameSocket.makePair()
        return (UpgradeChannel(descriptor: old, intake: .fromNewMaster), new)
    }

    /// The new master's end, named by GATEWAYD_UPGRADE_FD in this process's environment; nil
    /// when this process was not started by an upgrade. The variable is removed, so nothing
    /// this process starts takes the fd for its own.
    public static func inherited() throws(UpgradeProtocolError) -> UpgradeChannel? {
        guard let text = getenv(UpgradeProtocol.channelEnvironmentVariable).map({ String(cString: $0) }) else {
            return nil
        }
        unsetenv(UpgradeProtocol.channelEnvironmentVariable)
        guard let fd = CInt(text), fd >= 0, fcntl(fd, F_GETFD) >= 0 else {
            throw UpgradeProtocolError(
                .system, "\(UpgradeProtocol.channelEnvironmentVariable)=\(text) names no open file descriptor")
        }
        // fd 3 lost CLOEXEC in the spawn's dup2, which is how it crossed exec; nothing this
        // master starts may inherit it.
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return UpgradeChannel(descriptor: fd, intake: .fromOldMaster)
    }

    /// Sends one message; one that carries fds must come with exactly its fds.
    public func send(_ message: UpgradeMessage, descriptors: [CInt] = []) throws(UpgradeProtocolError) {
        precondition(
            descriptors.count == message.descriptorCount, "\(message.type) frame with \(descriptors.count) fds")
        do {
            try socket.send(frame: message.encodeFrame(), descriptors: descriptors, what: "upgrade channel")
        } catch {
            throw UpgradeProtocolError(.system, "sending \(message.type): \(error)")
        }
    }

    /// Blocks until a whole frame arrives; nil at end of file (the other master is gone, or
    /// ended the upgrade). A violation closes the fds that came with it.
    public func receive() throws(UpgradeProtocolError) -> (message: UpgradeMessage, descriptors: [CInt])? {
        do {
            return try socket.receive(UpgradeMessage.self, what: "upgrade channel")
        } catch {
            switch error {
            case .system(let error): throw UpgradeProtocolError(.system, error.description)
            case .violation(let violation):
                throw violation.underlying as? UpgradeProtocolError
                    ?? UpgradeProtocolError(.violation, violation.description)
            }
        }
    }

    /// The next frame, which must come: end of file is `.peerGone`, naming what was awaited.
    public func expect(_ what: String) throws(UpgradeProtocolError) -> (message: UpgradeMessage, descriptors: [CInt]) {
        guard let received = try receive() else {
            throw UpgradeProtocolError(.peerGone, "the channel closed where \(what) was due")
        }
        return received
    }

    public func shutdown() { socket.shutdown() }
    public func close() { socket.close() }
}

// MARK: - The handover: send and receive side

/// A listening socket in the handover, with everything the new master's `ListenerTable`
/// needs to take it over as the old master held it.
public struct HandedOverListener: Sendable, Equatable {
    public var name: String
    public var origin: ListenerTable.Origin
    public var configuredAddress: ListenerAddress
    public var backlog: Int32
    /// In systemd's fd store under `name`.
    public var stored: Bool
    public var fd: CInt

    public init(
        name: String, origin: ListenerTable.Origin, configuredAddress: ListenerAddress, backlog: Int32, stored: Bool,
        fd: CInt
    ) {
        self.name = name
        self.origin = origin
        self.configuredAddress = configuredAddress
        self.backlog = backlog
        self.stored = stored
        self.fd = fd
    }
}

/// Everything the old master hands over. The fds in it are the receiver's to close.
public struct UpgradeInheritance: Sendable {
    public var state: UpgradeMessage.State
    public var listeners: [HandedOverListener]
    public var sharedMemory: (fd: CInt, handoff: SharedMemory.Handoff)
    public var controlSocket: (path: String, fd: CInt)
    /// Empty from a version-1 master, which sends none.
    public var history: [GatewayEvent]

    public init(
        state: UpgradeMessage.State, listeners: [HandedOverListener],
        sharedMemory: (fd: CInt, handoff: SharedMemory.Handoff), controlSocket: (path: String, fd: CInt),
        history: [GatewayEvent]
    ) {
        self.state = state
        self.listeners = listeners
        self.sharedMemory = sharedMemory
        self.controlSocket = controlSocket
        self.history = history
    }

    /// Every fd in it, for closing when the handover is abandoned.
    public var descriptors: [CInt] { listeners.map(\.fd) + [sharedMemory.fd, controlSocket.fd] }
}

extension UpgradeChannel {
    /// The old master's side: `state`, the listeners in batches of at most 253, the shared
    /// segment, the control socket, the history (from version 2), `end`. The fds are sent as
    /// given (SCM_RIGHTS gives the new master copies of its own); the caller keeps them open
    /// until this returns.
    public func sendInheritance(_ inheritance: UpgradeInheritance) throws(UpgradeProtocolError) {
        try send(.state(inheritance.state))
        let listeners = inheritance.listeners
        var index = 0
        while index < listeners.count {
            let batch = listeners[index..<min(index + UpgradeProtocol.maximumDescriptorsPerFrame, listeners.count)]
            try send(
                .listeners(
                    .init(
                        names: batch.map(\.name), origins: batch.map(\.origin),
                        addresses: batch.map(\.configuredAddress), backlogs: batch.map(\.backlog),
                        stored: batch.map(\.stored))), descriptors: batch.map(\.fd))
            index += batch.count
        }
        try send(.sharedMemory(inheritance.sharedMemory.handoff), descriptors: [inheritance.sharedMemory.fd])
        try send(.controlSocket(path: inheritance.controlSocket.path), descriptors: [inheritance.controlSocket.fd])
        if inheritance.state.version >= UpgradeProtocol.historyVersion {
            try send(.history(inheritance.history))
        }
        try send(.end(listenerCount: listeners.count))
    }

    /// The new master's side, the reverse of `sendInheritance`: every frame in the order the
    /// protocol states, or an error naming what came instead; on an error, nothing received
    /// is left open.
    public func receiveInheritance() throws(UpgradeProtocolError) -> UpgradeInheritance {
        let (first, _) = try expect("state")
        guard case .state(let state) = first else {
            throw UpgradeProtocolError(.violation, "expected state, got \(first.type)")
        }
        var listeners: [HandedOverListener] = []
        var sharedMemory: (fd: CInt, handoff: SharedMemory.Handoff)?
        var controlSocket: (path: String, fd: CInt)?
        var history: [GatewayEvent]?
        var accepted = false
        defer {
            if !accepted {
                for fd in listeners.map(\.fd) + [sharedMemory?.fd, controlSocket?.fd].compactMap({ $0 }) {
                    closeDescriptor(fd)
                }
            }
        }
        while true {
            let (message, fds) = try expect("the rest of the handover (\(listeners.count) listeners so far)")
            func misplaced(_ rule: String) -> UpgradeProtocolError {
                for fd in fds { closeDescriptor(fd) }
                return UpgradeProtocolError(.violation, "\(message.type) frame \(rule)")
            }
            switch message {
            case .listeners(let batch):
                guard sharedMemory == nil else { throw misplaced("after shared_memory") }
                for (i, fd) in fds.enumerated() {
                    listeners.append(
                        HandedOverListener(
                            name: batch.names[i], origin: batch.origins[i], configuredAddress: batch.addresses[i],
                            backlog: batch.backlogs[i], stored: batch.stored[i], fd: fd))
                }
            case .sharedMemory(let segment):
                guard sharedMemory == nil else { throw misplaced("twice") }
                sharedMemory = (fds[0], segment)
            case .controlSocket(let path):
                guard sharedMemory != nil, controlSocket == nil else {
                    throw misplaced("before shared_memory, or twice")
                }
                controlSocket = (path, fds[0])
            case .history(let records):
                guard state.version >= UpgradeProtocol.historyVersion, controlSocket != nil, history == nil else {
                    throw misplaced("from a version \(state.version) master, before control_socket, or twice")
                }
                history = records
            case .end(let count):
                guard count == listeners.count else {
                    throw misplaced("says \(count) listeners, \(listeners.count) arrived")
                }
                guard let sharedMemory, let controlSocket else {
                    throw misplaced("before shared_memory and control_socket")
                }
                if state.version >= UpgradeProtocol.historyVersion, history == nil {
                    throw misplaced("before history (version \(state.version) sends one)")
                }
                accepted = true
                return UpgradeInheritance(
                    state: state, listeners: listeners, sharedMemory: sharedMemory, controlSocket: controlSocket,
                    history: history ?? [])
            default:
                throw misplaced("during the handover")
            }
        }
    }
}

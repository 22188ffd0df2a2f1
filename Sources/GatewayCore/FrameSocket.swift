import CGatewayShim
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A message of one of gatewayd's socketpair protocols: the master ⇄ worker handoff
/// (`HandoffProtocol.swift`) and the old ⇄ new master upgrade (`UpgradeProtocol.swift`).
protocol FramedMessage: Sendable {
    /// The frame's JSON `type`.
    var type: String { get }
    /// How many fds must travel with this frame.
    var descriptorCount: Int { get }
    /// The whole frame: length prefix and JSON.
    func encodeFrame() -> [UInt8]
    /// One frame's JSON payload, without the length prefix.
    static func decodeFrame(_ payload: ArraySlice<UInt8>) throws(FrameViolation) -> Self
}

/// A frame that breaks its protocol's rules; `description` says which and how.
struct FrameViolation: Error, CustomStringConvertible {
    var description: String
    /// The protocol's own error, when its decoder threw one.
    var underlying: (any Error & Sendable)?
    init(_ description: String, underlying: (any Error & Sendable)? = nil) {
        self.description = description
        self.underlying = underlying
    }
}

enum FrameSocketError: Error {
    case system(SystemCallError)
    case violation(FrameViolation)
}

/// The transport both protocols share, with blocking I/O: frames of a 4-byte big-endian length
/// and that many bytes of JSON, and fds attached by SCM_RIGHTS to the sendmsg that carries a
/// frame's first byte. Received fds are CLOEXEC (MSG_CMSG_CLOEXEC).
///
/// Owns its fd. Sends may come from any thread (serialized by a lock); receives must come from
/// one thread at a time, a dedicated reader thread in every process, never the Swift
/// concurrency pool.
final class FrameSocket: Sendable {
    /// What this end takes from its peer.
    struct Intake: Sendable {
        /// The most fds one recvmsg installs; 0 refuses every fd the peer attaches.
        var descriptorRoom: Int
        var maximumFrameLength: Int
        /// Who the peer is, for the error when it attaches fds to an end that takes none.
        var peer: String
    }

    let descriptor: CInt
    let intake: Intake
    private let sendLock = Mutex(())
    private let receiveState = Mutex(ReceiveState())
    private let closed = Atomic<Bool>(false)

    private struct ReceiveState: ~Copyable {
        var buffer: [UInt8] = []
        /// Fds received but not yet claimed by a frame that carries fds, in arrival order.
        var descriptors: [CInt] = []
    }

    init(descriptor: CInt, intake: Intake) {
        self.descriptor = descriptor
        self.intake = intake
    }

    /// A connected AF_UNIX stream socketpair, both ends CLOEXEC.
    static func makePair() throws(SystemCallError) -> (CInt, CInt) {
        var fds: [CInt] = [-1, -1]
        try syscall("socketpair") {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        }
        return (fds[0], fds[1])
    }

    /// Sends one frame; `descriptors` go with its first byte.
    func send(frame: [UInt8], descriptors: [CInt], what: String) throws(SystemCallError) {
        try sendLock.withLock { (_) throws(SystemCallError) in
            var offset = 0
            var fdsToSend = descriptors
            while offset < frame.count {
                let sent = try syscall("sendmsg", on: "\(what) fd \(descriptor)") {
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
    func receive<Message: FramedMessage>(
        _: Message.Type, what: String
    ) throws(FrameSocketError) -> (message: Message, descriptors: [CInt])? {
        try receiveState.withLock { (state) throws(FrameSocketError) in
            while true {
                do throws(FrameViolation) {
                    if let frame = try Self.extractFrame(Message.self, &state, maximumLength: intake.maximumFrameLength)
                    {
                        return frame
                    }
                } catch {
                    throw .violation(error)
                }
                var chunk = [UInt8](repeating: 0, count: 64 * 1024)
                var fds = [CInt](repeating: -1, count: max(1, intake.descriptorRoom))
                var nfds: CInt = 0
                var truncated: CInt = 0
                let n: Int
                do throws(SystemCallError) {
                    n = try syscall("recvmsg", on: "\(what) fd \(descriptor)") {
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
                    throw .violation(
                        FrameViolation("fds came with a frame from \(intake.peer), which may send none (refused)"))
                }
                if truncated != 0 {
                    Self.discard(&state)
                    throw .violation(FrameViolation("control data truncated (too many fds in one message)"))
                }
                if n == 0 {
                    let leftover = state.buffer.count
                    Self.discard(&state)
                    if leftover > 0 {
                        throw .violation(FrameViolation("end of file inside a frame (\(leftover) bytes)"))
                    }
                    return nil
                }
                state.buffer.append(contentsOf: chunk.prefix(n))
            }
        }
    }

    private static func extractFrame<Message: FramedMessage>(
        _: Message.Type, _ state: inout ReceiveState, maximumLength: Int
    ) throws(FrameViolation) -> (message: Message, descriptors: [CInt])? {
        guard state.buffer.count >= 4 else { return nil }
        let length =
            Int(state.buffer[0]) << 24 | Int(state.buffer[1]) << 16 | Int(state.buffer[2]) << 8 | Int(state.buffer[3])
        // Judged on the length alone, before any of the frame is kept.
        guard length > 0, length <= maximumLength else {
            discard(&state)
            throw FrameViolation("frame length \(length) out of range (1 to \(maximumLength) bytes)")
        }
        guard state.buffer.count >= 4 + length else { return nil }
        let message: Message
        do {
            message = try Message.decodeFrame(state.buffer[4..<(4 + length)])
        } catch {
            discard(&state)
            throw error
        }
        state.buffer.removeFirst(4 + length)
        // Fds arrive with the recvmsg that reads the first byte of their frame, and one
        // recvmsg may also return frames sent before it. So pending fds belong to the next
        // frame that wants some; once nothing more is buffered, no later frame can own them.
        let wanted = message.descriptorCount
        guard state.descriptors.count >= wanted else {
            let got = state.descriptors.count
            discard(&state)
            throw FrameViolation("\(message.type) frame names \(wanted) fds, \(got) arrived")
        }
        let fds = Array(state.descriptors.prefix(wanted))
        state.descriptors.removeFirst(wanted)
        if !state.descriptors.isEmpty && state.buffer.isEmpty {
            let extra = state.descriptors.count
            for fd in fds { closeDescriptor(fd) }
            discard(&state)
            throw FrameViolation("\(extra) fds arrived that no frame may carry (after \(message.type))")
        }
        return (message, fds)
    }

    private static func discard(_ state: inout ReceiveState) {
        for fd in state.descriptors { closeDescriptor(fd) }
        state.descriptors.removeAll()
        state.buffer.removeAll()
    }

    /// shutdown(2) both ways: wakes a reader blocked in `receive` (it sees end of file)
    /// without closing the fd under it.
    func shutdown() {
        _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR))
    }

    /// Closes the fd. Call once, after the reader thread is done with it.
    func close() {
        if closed.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            closeDescriptor(descriptor)
        }
    }
}

extension SharedMemory.Handoff {
    /// From the fields of a `shared_memory` frame, which both protocols carry alike (size,
    /// layout_version, rate_slots, metric_slots, seed); the error names what is missing or
    /// wrong.
    static func fromFrame(
        size: Int?, layoutVersion: Int?, rateSlots: Int?, metricSlots: Int?, seed: String?
    ) throws(FrameViolation) -> SharedMemory.Handoff {
        func require<T>(_ value: T?, _ field: String) throws(FrameViolation) -> T {
            guard let value else { throw FrameViolation("shared_memory frame without '\(field)'") }
            return value
        }
        let size = try require(size, "size")
        guard size > 0 else { throw FrameViolation("shared_memory frame: size \(size)") }
        let seedText = try require(seed, "seed")
        guard
            let segment = SharedMemory.Handoff(
                size: size, layoutVersion: try require(layoutVersion, "layout_version"),
                layout: .init(
                    rateSlots: try require(rateSlots, "rate_slots"),
                    metricSlots: try require(metricSlots, "metric_slots")),
                seedText: seedText)
        else {
            throw FrameViolation("shared_memory frame: seed '\(seedText)' is not 32 hex digits")
        }
        return segment
    }
}

/// The length prefix and the JSON: the framing both protocols share.
func lengthPrefixed(json: [UInt8]) -> [UInt8] {
    let length = UInt32(json.count)
    var frame: [UInt8] = [
        UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
        UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
    ]
    frame.append(contentsOf: json)
    return frame
}

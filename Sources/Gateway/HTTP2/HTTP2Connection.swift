import GatewayConfig
import GatewayCore
import GatewayIO
import NIOHPACK

import struct NIOCore.ByteBuffer
import struct NIOCore.ByteBufferAllocator

#if canImport(Glibc)
    import Glibc
#endif

/// One HTTP/2 client connection (RFC 9113), on the worker's event loop like an HTTP/1.1 one: it
/// owns the fd (and the TLS session, when ALPN chose `h2`), the frame layer, the HPACK state,
/// the connection's flow-control windows, and its streams. Each stream (`HTTP2Stream`) carries
/// one request through the very path an HTTP/1.1 request takes (head parser, admission, routing,
/// proxying, access log), so that no check exists in one protocol and not in the other.
///
/// Limits, each against an abuse seen in the wild: `maxConcurrentStreams` (refused beyond it),
/// the header list size (`limits.max_header_bytes`, also against CONTINUATION floods), and
/// rapid reset (CVE-2023-44487): a client that resets more than `resetBudget` streams within a
/// second gets GOAWAY(ENHANCE_YOUR_CALM) and is closed.
///
/// Drain (RFC 9113 §6.8): GOAWAY with 2^31−1 at once, and a PING; after its ACK (one round trip,
/// so every stream the client had sent before seeing the GOAWAY has arrived) or
/// `goAwayRoundTrip`, a second GOAWAY with the last stream id processed. The streams up to it
/// are finished; those after it the client retries elsewhere (a new connection, which reaches
/// the new generation). Then the connection closes.
final class HTTP2Connection: IOHandler, LoopConnection {
    /// nginx's `http2_max_concurrent_streams` default, and what browsers open at most in
    /// practice: more buys a client nothing but our memory.
    static let maxConcurrentStreams = 128
    /// The connection-level receive window we open at the start (RFC 9113 §6.9.2 starts it at
    /// 64 KiB - 1, which would stall uploads on many streams at once): each stream's own window
    /// (64 KiB - 1, the default we keep) bounds what one request buffers.
    static let connectionWindow = 1 << 20
    /// Bytes of frames waiting for the socket past which streams stop producing DATA (control
    /// frames still go out): the connection's share of a slow client, as `outputHighWater` is
    /// for an HTTP/1.1 one, times a few streams.
    static let outputHighWater = 256 * 1024
    /// Frames waiting for the socket past which the client is not read: twice the DATA
    /// high-water mark, so control frames (which go out regardless) cannot grow it unbounded.
    static let readPauseOutput = 2 * outputHighWater
    /// RST_STREAMs from the client per second before it is treated as the rapid-reset attack.
    /// A browser resets a handful when the user navigates away; the attack sends thousands.
    /// Twice the concurrent streams lets a client cancel everything it has open, twice.
    static let resetBudget = 2 * maxConcurrentStreams
    /// How long the first GOAWAY waits for its PING's ACK before the second goes out anyway: a
    /// round trip on any network a gateway serves, bounded so a silent client cannot hold the
    /// drain (nginx and Envoy use about 1 s for the same step).
    static let goAwayRoundTrip: UInt64 = 1_000_000_000
    /// As `ClientConnection.lingerTimeout`: reading what the client still sends after our FIN.
    static let lingerTimeout: UInt64 = 2_000_000_000
    /// The opaque bytes of the drain's PING, to tell its ACK from a client's own.
    static let drainPing: [UInt8] = Array("gw-drain".utf8)

    private enum Phase {
        /// Waiting for the client's preface (24 bytes, then its SETTINGS).
        case preface
        case open
        /// GOAWAY sent with `lastStreamID`: the streams up to it finish, then the connection closes.
        case goingAway
        /// FIN sent: reading and dropping until the client's FIN or `lingerTimeout`.
        case lingering
        case closed
    }

    private enum Wait {
        /// The stalled case: streams wait for a window the client does not open.
        case preface, idle, goAwayAck, linger, stalled
    }

    let fd: CInt
    unowned let loop: WorkerLoop
    let spec: ListenerSpec
    let peer: ConnectionPeer
    let tls: TLSSession?
    let services: GatewayServices
    var loopIndex = -1
    private var registration: EventLoop.Registration?
    private var phase: Phase = .preface
    private var wait: Wait?

    let input: IOBuffer
    let output = IOBuffer(capacity: 16 * 1024, limit: 16 * 1024)
    private var readable = true
    private var writable = true
    private var inputClosed = false
    private var flushScheduled = false
    private var outputShutDown = false
    private var processing = false

    // HPACK (RFC 7541), through swift-nio-http2's NIOHPACK.
    private let allocator = ByteBufferAllocator()
    private var decoder: HPACKDecoder
    private(set) var encoder: HPACKEncoder
    /// A header block spread over HEADERS and CONTINUATION frames.
    private var headerBlock: (streamID: UInt32, endStream: Bool, bytes: [UInt8])?
    private let maxHeaderBlock: Int

    // Streams.
    private var streams: [UInt32: HTTP2Stream] = [:]
    private var lastStreamID: UInt32 = 0
    /// Set by the final GOAWAY: streams above it are not served.
    private var goAwayLastStreamID = HTTP2.maxStreamID
    /// Streams with DATA waiting for window or for room in the output.
    private var blocked: [HTTP2Stream] = []

    // Flow control: what we may send, and what the client may send us.
    private(set) var sendWindow = HTTP2.defaultWindow
    private(set) var peerInitialWindow = HTTP2.defaultWindow
    private(set) var peerMaxFrameSize = HTTP2.defaultMaxFrameSize
    private var receivedSinceUpdate = 0

    // Rapid reset accounting.
    private var resetsThisSecond = 0
    private var resetSecondStart: UInt64 = 0

    private(set) var draining: Bool

    init(fd: CInt, loop: WorkerLoop, spec: ListenerSpec, peer: ConnectionPeer, tls: TLSSession?, lameDuck: Bool) {
        self.fd = fd
        self.loop = loop
        self.spec = spec
        self.peer = peer
        self.tls = tls
        self.services = loop.services
        self.draining = lameDuck
        let headerLimit = loop.services.limits.maxHeaderBytes
        // A frame and its header; a larger frame is a FRAME_SIZE_ERROR, never buffered.
        self.input = IOBuffer(
            capacity: 16 * 1024 + 64, limit: HTTP2.defaultMaxFrameSize + 2 * HTTP2.frameHeaderLength + 64)
        // The decoded list may be as large as the head HTTP/1.1 takes; the encoded block
        // (HEADERS plus CONTINUATIONs) at most that too: HPACK never inflates a literal.
        self.decoder = HPACKDecoder(
            allocator: self.allocator, maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize,
            maxHeaderListSize: headerLimit)
        self.encoder = HPACKEncoder(allocator: self.allocator)
        self.maxHeaderBlock = headerLimit
    }

    var eventLoop: EventLoop { self.loop.eventLoop }

    /// Takes over the fd from the HTTP/1.1 connection that found `h2` (ALPN, or the h2c
    /// preface): `initial` is what it had read already.
    func start(initial: UnsafeBufferPointer<UInt8>) throws(SystemCallError) {
        self.registration = try self.eventLoop.register(self, fd: self.fd, events: IOEvent.connection)
        self.input.append(initial)
        // The server preface (RFC 9113 §3.4): our SETTINGS, first thing.
        self.output.appendSettings([
            (.maxConcurrentStreams, UInt32(Self.maxConcurrentStreams)),
            (.maxHeaderListSize, UInt32(self.maxHeaderBlock)),
            (.enablePush, 0),
        ])
        self.output.appendWindowUpdate(streamID: 0, increment: Self.connectionWindow - HTTP2.defaultWindow)
        self.arm(.preface)
        self.process()
    }

    // MARK: Events

    func handleEvents(_ events: UInt32) {
        if events & (IOEvent.error | IOEvent.hangUp) != 0, events & IOEvent.input == 0 {
            self.closeNow()
            return
        }
        if events & (IOEvent.input | IOEvent.readHangUp | IOEvent.hangUp) != 0 {
            self.readable = true
        }
        if events & IOEvent.output != 0 {
            self.writable = true
        }
        self.process()
    }

    func deadlinePassed() {
        guard let wait = self.wait else { return }
        self.wait = nil
        switch wait {
        case .preface:
            self.closeNow()
        case .idle:
            guard self.streams.isEmpty else { return }
            self.goAway(lastStreamID: self.lastStreamID, error: .noError)
        case .goAwayAck:
            self.sendFinalGoAway()
        case .linger:
            self.closeNow()
        case .stalled:
            guard !self.blocked.isEmpty else { return }
            self.connectionError(.enhanceYourCalm, "no flow-control window for idle_timeout")
        }
    }

    private func arm(_ wait: Wait) {
        guard let registration = self.registration else { return }
        let limits = self.services.limits
        let timeout: UInt64
        switch wait {
        case .preface: timeout = limits.headerTimeoutNanoseconds
        case .idle, .stalled: timeout = limits.idleTimeoutNanoseconds
        case .goAwayAck: timeout = Self.goAwayRoundTrip
        case .linger: timeout = Self.lingerTimeout
        }
        self.wait = wait
        self.eventLoop.setDeadline(registration, at: self.eventLoop.now + timeout)
    }

    private func disarm() {
        self.wait = nil
        if let registration = self.registration { self.eventLoop.setDeadline(registration, at: 0) }
    }

    // MARK: Reading

    /// Reads and handles frames until the socket is empty, then writes what they produced.
    func process() {
        guard !self.processing else { return }
        self.processing = true
        defer { self.processing = false }
        while self.phase != .closed {
            if self.phase == .lingering {
                self.discardInput()
                break
            }
            if !self.handleFrames() { break }
            guard self.readable, self.phase != .closed else { break }
            if self.output.readableCount >= Self.readPauseOutput {
                // A client that does not read what it asks for (PING, SETTINGS, resets: the
                // 2019 flood family) is not read either until its answers drain. The socket
                // being full, its output edge resumes this loop.
                self.flush()
                guard self.output.readableCount < Self.readPauseOutput, self.phase != .closed else { break }
            }
            guard self.readInput() else { break }
        }
        self.flush()
    }

    /// One read; false when nothing came (or the connection ended).
    private func readInput() -> Bool {
        guard self.input.reserve(HTTP2.frameHeaderLength) else {
            self.connectionError(.frameSizeError, "frame larger than the input buffer")
            return false
        }
        let result: IOResult
        if let tls = self.tls {
            result = tls.read(into: self.input, minimum: 4096)
        } else {
            result = self.input.read(from: self.fd, minimum: 4096)
        }
        switch result {
        case .bytes:
            return true
        case .wouldBlock:
            self.readable = false
            return false
        case .endOfFile:
            self.readable = false
            self.inputClosed = true
            // The client is gone: its streams cannot be answered.
            self.closeNow()
            return false
        case .full:
            self.connectionError(.frameSizeError, "frame larger than the input buffer")
            return false
        case .failed:
            self.closeNow()
            return false
        }
    }

    /// Handles every whole frame in the input. Returns false when the connection ended.
    private func handleFrames() -> Bool {
        if self.phase == .preface {
            guard self.input.readableCount >= HTTP2.preface.count else { return true }
            let matches = HTTP2.preface.withUnsafeBufferPointer {
                $0.elementsEqual(UnsafeBufferPointer(rebasing: self.input.readable[0..<HTTP2.preface.count]))
            }
            guard matches else {
                // Not HTTP/2 after all (a client that chose h2 and then speaks something else).
                self.closeNow()
                return false
            }
            self.input.consume(HTTP2.preface.count)
            self.phase = self.draining ? .goingAway : .open
            self.arm(.idle)
            if self.draining { self.beginDrain() }
        }
        while self.phase == .open || self.phase == .goingAway {
            let bytes = self.input.readable
            guard let header = HTTP2.FrameHeader(bytes) else { return true }
            guard header.length <= HTTP2.defaultMaxFrameSize else {
                self.connectionError(.frameSizeError, "a frame of \(header.length) bytes (we take 16,384)")
                return false
            }
            let total = HTTP2.frameHeaderLength + header.length
            guard bytes.count >= total else {
                _ = self.input.reserve(total - bytes.count)
                return true
            }
            let payload = UnsafeBufferPointer(rebasing: bytes[HTTP2.frameHeaderLength..<total])
            let keepGoing = self.handleFrame(header, payload)
            if self.phase == .closed || self.phase == .lingering { return false }
            self.input.consume(total)
            if !keepGoing { return false }
        }
        return true
    }

    // swiftlint:disable:next cyclomatic_complexity
    private func handleFrame(_ header: HTTP2.FrameHeader, _ payload: UnsafeBufferPointer<UInt8>) -> Bool {
        if let block = self.headerBlock {
            // RFC 9113 §6.10: nothing may come between a HEADERS without END_HEADERS and its
            // CONTINUATIONs.
            guard header.type == HTTP2.FrameType.continuation.rawValue, header.streamID == block.streamID else {
                return self.connectionError(.protocolError, "expected CONTINUATION of stream \(block.streamID)")
            }
        }
        guard let type = HTTP2.FrameType(rawValue: header.type) else { return true }
        switch type {
        case .data:
            return self.receiveData(header, payload)
        case .headers:
            return self.receiveHeaders(header, payload)
        case .continuation:
            guard var block = self.headerBlock else {
                return self.connectionError(.protocolError, "CONTINUATION without HEADERS")
            }
            guard block.bytes.count + payload.count <= self.maxHeaderBlock else {
                return self.connectionError(.enhanceYourCalm, "header block larger than \(self.maxHeaderBlock) bytes")
            }
            block.bytes.append(contentsOf: payload)
            self.headerBlock = block
            if header.flags & HTTP2.Flags.endHeaders != 0 {
                self.headerBlock = nil
                return self.headerBlockComplete(streamID: block.streamID, endStream: block.endStream, block.bytes)
            }
            return true
        case .priority:
            guard header.streamID != 0 else { return self.connectionError(.protocolError, "PRIORITY on stream 0") }
            guard payload.count == 5 else { return self.streamError(header.streamID, .frameSizeError) }
            return true
        case .rstStream:
            guard header.streamID != 0, payload.count == 4 else {
                return self.connectionError(.protocolError, "malformed RST_STREAM")
            }
            guard header.streamID <= self.lastStreamID else {
                return self.connectionError(.protocolError, "RST_STREAM on idle stream \(header.streamID)")
            }
            if let stream = self.streams[header.streamID] {
                self.streams[header.streamID] = nil
                stream.reset()
                self.services.metrics.http2StreamReset()
                self.streamClosed(stream)
            }
            // Every reset counts, also of a stream already answered: the attack's streams are
            // often answered before their reset arrives, and still cost a request each.
            return self.countReset()
        case .settings:
            return self.receiveSettings(header, payload)
        case .pushPromise:
            return self.connectionError(.protocolError, "a client sent PUSH_PROMISE")
        case .ping:
            guard header.streamID == 0, payload.count == 8 else {
                return self.connectionError(.protocolError, "malformed PING")
            }
            if header.flags & HTTP2.Flags.ack != 0 {
                if payload.elementsEqual(Self.drainPing) { self.sendFinalGoAway() }
            } else {
                self.output.appendPing(payload, ack: true)
            }
            return true
        case .goAway:
            // The client will open no more streams: the connection ends with its last one.
            if self.phase == .open { self.goAway(lastStreamID: self.lastStreamID, error: .noError) }
            return true
        case .windowUpdate:
            guard payload.count == 4 else { return self.connectionError(.frameSizeError, "malformed WINDOW_UPDATE") }
            let increment = Int(HTTP2.uint32(payload, at: 0) & 0x7fff_ffff)
            if header.streamID == 0 {
                guard increment > 0 else { return self.connectionError(.protocolError, "WINDOW_UPDATE of 0") }
                guard self.sendWindow + increment <= HTTP2.maxWindow else {
                    return self.connectionError(.flowControlError, "connection window above 2^31-1")
                }
                self.sendWindow += increment
                self.wakeBlocked()
            } else if let stream = self.streams[header.streamID] {
                guard increment > 0 else { return self.streamError(header.streamID, .protocolError) }
                guard stream.sendWindow + increment <= HTTP2.maxWindow else {
                    return self.streamError(header.streamID, .flowControlError)
                }
                stream.sendWindow += increment
                if stream.isBlocked { self.wakeBlocked() } else { stream.pump() }
            }
            return true
        }
    }

    private func receiveSettings(_ header: HTTP2.FrameHeader, _ payload: UnsafeBufferPointer<UInt8>) -> Bool {
        guard header.streamID == 0 else { return self.connectionError(.protocolError, "SETTINGS on a stream") }
        if header.flags & HTTP2.Flags.ack != 0 {
            guard payload.isEmpty else { return self.connectionError(.frameSizeError, "SETTINGS ACK with a payload") }
            return true
        }
        guard payload.count % 6 == 0 else {
            return self.connectionError(.frameSizeError, "SETTINGS of \(payload.count) bytes")
        }
        var offset = 0
        // Applied once, after the frame: a frame can repeat a setting thousands of times.
        var newInitialWindow: Int?
        while offset < payload.count {
            let identifier = HTTP2.uint16(payload, at: offset)
            let value = HTTP2.uint32(payload, at: offset + 2)
            offset += 6
            switch HTTP2.Setting(rawValue: identifier) {
            case .headerTableSize:
                // What the client's decoder keeps: our encoder must not use more.
                try? self.encoder.setDynamicTableSize(Int(min(value, 4096)))
            case .enablePush:
                guard value <= 1 else { return self.connectionError(.protocolError, "ENABLE_PUSH of \(value)") }
            case .initialWindowSize:
                guard value <= UInt32(HTTP2.maxWindow) else {
                    return self.connectionError(.flowControlError, "INITIAL_WINDOW_SIZE above 2^31-1")
                }
                newInitialWindow = Int(value)
            case .maxFrameSize:
                guard value >= 16_384, value <= 16_777_215 else {
                    return self.connectionError(.protocolError, "MAX_FRAME_SIZE of \(value)")
                }
                self.peerMaxFrameSize = Int(value)
            case .maxConcurrentStreams, .maxHeaderListSize, nil:
                // Server push is off; what the client takes of our headers is what we send.
                break
            }
        }
        if let window = newInitialWindow, window != self.peerInitialWindow {
            // RFC 9113 §6.9.2: every open stream's window moves by the difference.
            let delta = window - self.peerInitialWindow
            self.peerInitialWindow = window
            for stream in self.streams.values {
                stream.sendWindow += delta
                guard stream.sendWindow <= HTTP2.maxWindow else {
                    return self.connectionError(.flowControlError, "a stream window above 2^31-1")
                }
            }
            if delta > 0 { self.wakeAll() }
        }
        self.output.appendFrameHeader(length: 0, type: .settings, flags: HTTP2.Flags.ack, streamID: 0)
        return true
    }

    private func receiveHeaders(_ header: HTTP2.FrameHeader, _ payload: UnsafeBufferPointer<UInt8>) -> Bool {
        let id = header.streamID
        guard id != 0 else { return self.connectionError(.protocolError, "HEADERS on stream 0") }
        guard var fragment = Self.unpadded(header, payload) else {
            return self.connectionError(.protocolError, "padding longer than the frame")
        }
        if header.flags & HTTP2.Flags.priority != 0 {
            guard fragment.count >= 5 else { return self.connectionError(.frameSizeError, "HEADERS too short") }
            fragment = UnsafeBufferPointer(rebasing: fragment[5...])
        }
        let endStream = header.flags & HTTP2.Flags.endStream != 0
        guard header.flags & HTTP2.Flags.endHeaders != 0 else {
            guard fragment.count <= self.maxHeaderBlock else {
                return self.connectionError(.enhanceYourCalm, "header block larger than \(self.maxHeaderBlock) bytes")
            }
            self.headerBlock = (id, endStream, Array(fragment))
            return true
        }
        return self.headerBlockComplete(streamID: id, endStream: endStream, Array(fragment))
    }

    /// A whole header block: a new stream's request, or an open stream's trailers.
    private func headerBlockComplete(streamID id: UInt32, endStream: Bool, _ block: [UInt8]) -> Bool {
        // Decoded whatever happens to the stream: the HPACK table is the connection's.
        var buffer = self.allocator.buffer(bytes: block)
        let headers: HPACKHeaders
        do {
            headers = try self.decoder.decodeHeaders(from: &buffer)
        } catch {
            return self.connectionError(.compressionError, "header block: \(error)")
        }
        if let stream = self.streams[id] {
            // Trailers: they end the request body; gatewayd forwards no request trailers
            // (neither does nginx to an HTTP/1.1 upstream).
            guard endStream else { return self.streamError(id, .protocolError) }
            stream.receiveEnd()
            return true
        }
        guard id & 1 == 1 else { return self.connectionError(.protocolError, "HEADERS on even stream \(id)") }
        guard id > self.lastStreamID else {
            // A stream we already ended or reset (trailers still in flight after an early
            // answer): decoded above for the HPACK state, and dropped (RFC 9113 §5.1).
            return true
        }
        self.lastStreamID = id
        if id > self.goAwayLastStreamID {
            // After our final GOAWAY: not processed; the client retries it elsewhere.
            return true
        }
        guard self.streams.count < Self.maxConcurrentStreams else {
            self.output.appendResetStream(streamID: id, error: .refusedStream)
            return true
        }
        let stream = HTTP2Stream(id: id, connection: self)
        self.streams[id] = stream
        if self.wait == .idle { self.disarm() }
        stream.start(headers: headers, endStream: endStream)
        return true
    }

    private func receiveData(_ header: HTTP2.FrameHeader, _ payload: UnsafeBufferPointer<UInt8>) -> Bool {
        let id = header.streamID
        guard id != 0 else { return self.connectionError(.protocolError, "DATA on stream 0") }
        guard let data = Self.unpadded(header, payload) else {
            return self.connectionError(.protocolError, "padding longer than the frame")
        }
        // The whole frame counts against the connection's window (padding too); it is given
        // back at once (the streams' windows are what bound our memory).
        self.receivedSinceUpdate += payload.count
        if self.receivedSinceUpdate >= Self.connectionWindow / 2 {
            self.output.appendWindowUpdate(streamID: 0, increment: self.receivedSinceUpdate)
            self.receivedSinceUpdate = 0
        }
        guard let stream = self.streams[id] else {
            if id > self.lastStreamID { return self.connectionError(.protocolError, "DATA on idle stream \(id)") }
            // A stream we already ended or reset: what was in flight is dropped.
            return true
        }
        stream.receiveData(
            data, padding: payload.count - data.count, endStream: header.flags & HTTP2.Flags.endStream != 0)
        return true
    }

    private static func unpadded(_ header: HTTP2.FrameHeader, _ payload: UnsafeBufferPointer<UInt8>)
        -> UnsafeBufferPointer<UInt8>?
    {
        guard header.flags & HTTP2.Flags.padded != 0 else { return payload }
        guard let first = payload.first, Int(first) < payload.count else { return nil }
        return UnsafeBufferPointer(rebasing: payload[1..<(payload.count - Int(first))])
    }

    /// Counts one reset by the client; false (and the connection closed) past the budget.
    private func countReset() -> Bool {
        let now = self.eventLoop.now
        if now &- self.resetSecondStart > 1_000_000_000 {
            self.resetSecondStart = now
            self.resetsThisSecond = 0
        }
        self.resetsThisSecond += 1
        guard self.resetsThisSecond <= Self.resetBudget else {
            self.loop.logger.warning(
                "closing an HTTP/2 connection from \(self.peer.text): \(self.resetsThisSecond) streams reset within a second (rapid reset, CVE-2023-44487)"
            )
            return self.connectionError(.enhanceYourCalm, "too many streams reset", rapidReset: true)
        }
        return true
    }

    // MARK: Streams

    /// A stream's response and request are both over: it leaves the table.
    func streamClosed(_ stream: HTTP2Stream) {
        if self.streams[stream.id] === stream { self.streams[stream.id] = nil }
        if stream.isBlocked {
            stream.isBlocked = false
            self.blocked.removeAll { $0 === stream }
        }
        if self.streams.isEmpty {
            if self.phase == .goingAway, self.goAwayLastStreamID != HTTP2.maxStreamID {
                self.finish()
            } else if self.phase == .open {
                self.arm(.idle)
            }
        }
    }

    /// The stream stops before its end (a malformed request, our reset): RST_STREAM.
    ///
    /// A reset the client caused (a malformed request, a flow-control error) counts against the
    /// same budget as its own resets: otherwise a client could have its streams reset for it,
    /// each one routed and proxied first ("MadeYouReset", CVE-2025-8671). Our own failures
    /// (`internalError`) do not count.
    @discardableResult
    func streamError(_ id: UInt32, _ error: HTTP2.ErrorCode) -> Bool {
        self.output.appendResetStream(streamID: id, error: error)
        if let stream = self.streams[id] {
            self.streams[id] = nil
            stream.reset()
            self.streamClosed(stream)
        }
        self.scheduleFlush()
        return error == .internalError || self.countReset()
    }

    /// Whether DATA may be added to the output now.
    var outputHasRoom: Bool { self.output.readableCount < Self.outputHighWater && self.phase != .closed }

    func waitForWindow(_ stream: HTTP2Stream) {
        guard !stream.isBlocked else { return }
        stream.isBlocked = true
        self.blocked.append(stream)
        // A client that opens no window holds the stream (and its upstream connection): it
        // has `idle_timeout` to open one, as an HTTP/1.1 client that stops reading does.
        if self.wait == nil { self.arm(.stalled) }
    }

    private func wakeBlocked() {
        guard !self.blocked.isEmpty else { return }
        let waiting = self.blocked
        self.blocked = []
        for stream in waiting { stream.isBlocked = false }
        if self.wait == .stalled { self.disarm() }
        for stream in waiting where self.sendWindow > 0 && self.outputHasRoom {
            stream.pump()
        }
        for stream in waiting where !stream.isDone && !stream.isBlocked && stream.hasPendingData {
            self.waitForWindow(stream)
        }
    }

    private func wakeAll() {
        for stream in self.streams.values { stream.pump() }
    }

    /// DATA was framed: the connection window shrinks.
    func consumeSendWindow(_ count: Int) {
        self.sendWindow -= count
    }

    // MARK: Writing

    /// Writes the output at the end of this loop iteration: the frames of every stream that
    /// answered in it go out in one write.
    func scheduleFlush() {
        guard !self.flushScheduled, !self.processing else { return }
        self.flushScheduled = true
        self.eventLoop.atEndOfIteration { [weak self] in
            guard let self else { return }
            self.flushScheduled = false
            self.flush()
        }
    }

    func flush() {
        while true {
            while !self.output.isEmpty, self.writable, self.phase != .closed {
                let result =
                    if let tls = self.tls { tls.write(from: self.output) } else { self.output.write(to: self.fd) }
                switch result {
                case .bytes(let count):
                    if count == 0 { return }
                case .wouldBlock:
                    self.writable = false
                case .failed, .endOfFile, .full:
                    self.closeNow()
                    return
                }
            }
            guard self.phase != .closed else { return }
            // Room again: streams that waited for it frame their DATA now, and it goes out in
            // this same flush (a flush scheduled from here would be dropped while processing,
            // and no output edge comes for a socket that is not full).
            guard self.writable, !self.blocked.isEmpty, self.output.readableCount < Self.outputHighWater / 2 else {
                break
            }
            let before = self.output.readableCount
            self.wakeBlocked()
            if self.output.readableCount == before { break }
        }
        if self.output.isEmpty {
            if self.phase == .lingering, !self.outputShutDown { self.shutDownWrite() }
            self.output.shrink(to: 16 * 1024)
        }
    }

    // MARK: Ending

    func beginDraining() {
        guard !self.draining else { return }
        self.draining = true
        guard self.phase == .open else { return }
        self.phase = .goingAway
        self.beginDrain()
        self.flush()
    }

    /// The first GOAWAY of the two (RFC 9113 §6.8) and the PING that times the second.
    private func beginDrain() {
        self.output.appendGoAway(lastStreamID: HTTP2.maxStreamID, error: .noError)
        Self.drainPing.withUnsafeBufferPointer { self.output.appendPing($0, ack: false) }
        self.arm(.goAwayAck)
    }

    private func sendFinalGoAway() {
        guard self.phase == .goingAway, self.goAwayLastStreamID == HTTP2.maxStreamID else { return }
        self.goAway(lastStreamID: self.lastStreamID, error: .noError)
    }

    /// GOAWAY with the last stream we will process; the connection closes once they are done.
    private func goAway(lastStreamID: UInt32, error: HTTP2.ErrorCode) {
        self.goAwayLastStreamID = lastStreamID
        self.output.appendGoAway(lastStreamID: lastStreamID, error: error)
        self.phase = .goingAway
        if self.wait == .goAwayAck || self.wait == .idle { self.disarm() }
        if self.streams.isEmpty { self.finish() }
        self.scheduleFlush()
    }

    /// A connection error (RFC 9113 §5.4.1): GOAWAY with its code, then close. Returns false
    /// so that frame handling stops.
    @discardableResult
    func connectionError(_ error: HTTP2.ErrorCode, _ reason: String, rapidReset: Bool = false) -> Bool {
        guard self.phase != .closed, self.phase != .lingering else { return false }
        ProxyLog.step(
            "http2 connection error", ["client": "\(self.peer.text)", "error": "\(error)", "reason": "\(reason)"])
        self.services.metrics.http2ConnectionError(rapidReset: rapidReset)
        self.output.appendGoAway(lastStreamID: self.lastStreamID, error: error)
        for stream in self.streams.values { stream.reset() }
        self.streams = [:]
        self.finish()
        return false
    }

    /// Everything answered (or given up): the output goes out, then FIN and linger.
    private func finish() {
        guard self.phase != .closed, self.phase != .lingering else { return }
        self.phase = .lingering
        self.disarm()
        self.arm(.linger)
        self.readable = true
        self.flush()
        if !self.processing { self.process() }
    }

    private func shutDownWrite() {
        self.outputShutDown = true
        self.tls?.closeNotify()
        _ = shutdown(self.fd, CInt(SHUT_WR))
        if self.inputClosed { self.closeNow() }
    }

    private func discardInput() {
        while self.readable {
            self.input.clear()
            switch self.input.read(from: self.fd, minimum: 4096) {
            case .bytes:
                continue
            case .endOfFile, .failed:
                self.readable = false
                self.inputClosed = true
                if self.output.isEmpty { self.closeNow() }
                return
            case .wouldBlock, .full:
                self.readable = false
            }
        }
        self.input.clear()
    }

    func closeNow() {
        guard self.phase != .closed else { return }
        self.phase = .closed
        self.wait = nil
        let streams = self.streams
        self.streams = [:]
        self.blocked = []
        for stream in streams.values { stream.reset() }
        if let registration = self.registration {
            self.registration = nil
            self.eventLoop.forget(registration)
        }
        closeDescriptor(self.fd)
        self.input.clear()
        self.output.clear()
        self.loop.connectionClosed(self)
    }
}

extension HTTP2Connection {
    /// How each response field is encoded, by name; a name not here is a literal without
    /// indexing (as nginx sends every field). Indexed (entered in the dynamic table, so a later
    /// response sends an index): fields whose values repeat from one response to the next. Not
    /// indexed: one whose value changes each time (x-request-id, date, content-length, etag)
    /// would only churn the table, and NIOHPACK finds entries by a linear scan: with
    /// x-request-id filling the table, that scan was 6 % of a proxied HTTP/2 request's CPU
    /// (perf, h2load -m1 through gatewayd to an nginx origin). Never indexed, by us or by any
    /// intermediary (RFC 7541 §7.1.3): a cookie, whose value in a compression context could be
    /// guessed byte by byte (CRIME).
    static let responseFieldIndexing: [String: HPACKIndexing] = [
        ":status": .indexable, "server": .indexable, "content-type": .indexable, "content-encoding": .indexable,
        "cache-control": .indexable, "vary": .indexable, "access-control-allow-origin": .indexable,
        "strict-transport-security": .indexable, "x-content-type-options": .indexable, "x-frame-options": .indexable,
        "set-cookie": .neverIndexed,
    ]

    /// Encodes a response's fields (lowercase names) into the header block `encoder` has begun:
    /// one table lookup per field.
    static func appendResponseFields(_ fields: [(String, String)], to encoder: inout HPACKEncoder) throws {
        for (name, value) in fields {
            switch responseFieldIndexing[name] ?? .nonIndexable {
            case .indexable: try encoder.append(header: name, value: value)
            case .neverIndexed: try encoder.appendNeverIndexed(header: name, value: value)
            case .nonIndexable: try encoder.appendNonIndexed(header: name, value: value)
            }
        }
    }

    /// A response's HEADERS (and CONTINUATIONs past the client's frame size), HPACK-encoded
    /// with the connection's one encoder: blocks go out in the order they were encoded.
    func writeHeaders(streamID: UInt32, _ fields: [(String, String)], endStream: Bool) {
        let block: ByteBuffer
        do {
            try self.encoder.beginEncoding(allocator: self.allocator)
            try Self.appendResponseFields(fields, to: &self.encoder)
            block = try self.encoder.endEncoding()
        } catch {
            // Only a misuse of the encoder's begin/end pairing throws.
            self.streamError(streamID, .internalError)
            return
        }
        block.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var offset = 0
            var first = true
            repeat {
                let count = min(bytes.count - offset, self.peerMaxFrameSize)
                let lastFragment = offset + count == bytes.count
                var flags: UInt8 = lastFragment ? HTTP2.Flags.endHeaders : 0
                if first, endStream { flags |= HTTP2.Flags.endStream }
                self.output.appendFrameHeader(
                    length: count, type: first ? .headers : .continuation, flags: flags, streamID: streamID)
                self.output.append(UnsafeBufferPointer(rebasing: bytes[offset..<(offset + count)]))
                offset += count
                first = false
            } while offset < bytes.count
        }
        self.scheduleFlush()
    }
}

/// What the worker loop keeps of each client connection it serves, HTTP/1.1 or HTTP/2: its
/// place in the loop's table, and the two ways the loop ends it.
protocol LoopConnection: AnyObject {
    var loopIndex: Int { get set }
    func beginDraining()
    func closeNow()
}

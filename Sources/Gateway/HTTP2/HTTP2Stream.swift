import GatewayHTTP
import GatewayIO
import NIOHPACK

#if canImport(Glibc)
    import Glibc
#endif

/// One HTTP/2 stream: one request and its response. The request is rewritten as the
/// HTTP/1.1 message it stands for (RFC 9113 §8.3 → RFC 9112) and served by a `ClientConnection`
/// whose socket is this stream: the same head parser, admission, routing, proxying and access
/// log as every HTTP/1.1 request, so that a rule (an auth check, a path canonicalization) cannot
/// hold for one protocol and not the other. The HTTP/1.1 response it writes is turned back into
/// HEADERS and DATA frames, within the stream's and the connection's send windows.
///
/// nginx does the same at a different layer (a fake `ngx_connection_t` per stream feeding the
/// HTTP/1 request pipeline); HAProxy converts both protocols to one internal form (HTX).
final class HTTP2Stream {
    /// Decoded response body waiting for send window, past which the stream stops taking
    /// the response (and its `ProxyExchange` stops reading the upstream): the same bound as an
    /// HTTP/1.1 connection's `outputHighWater`.
    static let pendingHighWater = 64 * 1024
    /// Window given back to the client once this much of the request body went upstream: a
    /// WINDOW_UPDATE per quarter window, not per DATA frame.
    static let windowRefundStep = HTTP2.defaultWindow / 4

    let id: UInt32
    unowned let connection: HTTP2Connection
    /// The HTTP/1.1 request path serving this stream; nil once it closed.
    private var client: ClientConnection?

    // The request, as HTTP/1.1 bytes for `client` to read.
    private let inbound = IOBuffer(capacity: 2048, limit: 2048)
    private var inboundEnded = false
    private var chunkedBody = false
    private var declaredLength: UInt64?
    private var receivedBody: UInt64 = 0
    /// What the client may still send on this stream before a WINDOW_UPDATE.
    private var receiveWindow = HTTP2.defaultWindow
    /// DATA bytes in `inbound` whose window is not given back yet, and what is owed now.
    private var unrefunded = 0
    private var refundDue = 0

    // The response.
    private enum Response {
        case head
        case body
        /// The whole body is in `pending` (or sent).
        case ended
        case reset
    }
    private var response: Response = .head
    private var parser = HeadParser(.response)
    private var head = MessageHead()
    private var framing: BodyFraming = .none
    private var remaining: UInt64 = 0
    private var decoder = ChunkedDecoder()
    private var isHEAD = false
    private let pending = IOBuffer(capacity: 4096, limit: 4096)
    private var endStreamSent = false
    /// `client` was told would-block: it is waiting for an output event.
    private var clientBlocked = false
    private var insideWrite = false
    /// Out of the connection's table.
    private var closed = false
    var sendWindow: Int
    /// On the connection's list of streams waiting for a window or for room in its output.
    var isBlocked = false

    init(id: UInt32, connection: HTTP2Connection) {
        self.id = id
        self.connection = connection
        self.sendWindow = connection.peerInitialWindow
    }

    var isDone: Bool { self.endStreamSent || self.response == .reset }
    var hasPendingData: Bool { !self.pending.isEmpty || (self.response == .ended && !self.endStreamSent) }
    var secure: Bool { self.connection.tls != nil }

    // MARK: The request

    /// The request's header block: checked as RFC 9113 §8.2 and §8.3 require, then written as
    /// an HTTP/1.1 head. A malformed request is a stream error (PROTOCOL_ERROR), never served.
    func start(headers: HPACKHeaders, endStream: Bool) {
        guard let request = HTTP2RequestHead(headers, endStream: endStream) else {
            self.connection.streamError(self.id, .protocolError)
            return
        }
        self.declaredLength = request.contentLength
        self.chunkedBody = request.chunked
        self.isHEAD = request.method == "HEAD"
        request.write(into: self.inbound)
        let client = ClientConnection(stream: self, connection: self.connection)
        self.client = client
        if endStream { self.inboundEnded = true }
        client.startStream()
    }

    func receiveData(_ data: UnsafeBufferPointer<UInt8>, padding: Int, endStream: Bool) {
        guard !self.inboundEnded, self.response != .reset else {
            self.connection.streamError(self.id, .streamClosed)
            return
        }
        guard data.count + padding <= self.receiveWindow else {
            self.connection.streamError(self.id, .flowControlError)
            return
        }
        self.receiveWindow -= data.count + padding
        self.refundDue += padding
        self.receivedBody += UInt64(data.count)
        if let declared = self.declaredLength, self.receivedBody > declared {
            // RFC 9113 §8.1.1: more DATA than content-length is malformed.
            self.connection.streamError(self.id, .protocolError)
            return
        }
        if !data.isEmpty {
            if self.chunkedBody {
                self.inbound.appendHex(UInt64(data.count))
                self.inbound.append("\r\n")
                self.inbound.append(data)
                self.inbound.append("\r\n")
            } else {
                self.inbound.append(data)
            }
            self.unrefunded += data.count
        }
        if endStream {
            self.receiveEnd()
        } else {
            self.clientCanRead()
        }
    }

    /// END_STREAM (on DATA, or trailers).
    func receiveEnd() {
        guard !self.inboundEnded else { return }
        if let declared = self.declaredLength, self.receivedBody != declared {
            self.connection.streamError(self.id, .protocolError)
            return
        }
        if self.chunkedBody { self.inbound.append("0\r\n\r\n") }
        self.inboundEnded = true
        self.clientCanRead()
        self.closeIfFinished()
    }

    private func clientCanRead() {
        guard let client = self.client else { return }
        client.readable = true
        client.process()
    }

    /// `ClientConnection.receive` on a stream: the request's bytes, as a socket would give them.
    func read(into buffer: IOBuffer, minimum: Int) -> IOResult {
        guard !self.inbound.isEmpty else { return self.inboundEnded ? .endOfFile : .wouldBlock }
        guard buffer.reserve(min(minimum, self.inbound.readableCount)) || buffer.writableCount > 0 else { return .full }
        let count = min(buffer.writableCount, self.inbound.readableCount)
        (buffer.storage + buffer.writerIndex).update(
            from: self.inbound.storage + self.inbound.readerIndex, count: count)
        buffer.didWrite(count)
        self.inbound.consume(count)
        // What the read took is body and chunk framing mixed; window is given back for the
        // body's share only (all of it once `inbound` is empty), so that one-byte DATA frames,
        // six bytes each once framed, cannot make `inbound` outgrow the window.
        let before = self.inbound.readableCount + count
        let refund =
            self.inbound.isEmpty ? self.unrefunded : min(self.unrefunded, self.unrefunded * count / max(before, 1))
        self.unrefunded -= refund
        self.refundDue += refund
        if self.refundDue >= Self.windowRefundStep || (self.inbound.isEmpty && self.refundDue > 0), !self.inboundEnded {
            self.connection.output.appendWindowUpdate(streamID: self.id, increment: self.refundDue)
            self.receiveWindow += self.refundDue
            self.refundDue = 0
            self.connection.scheduleFlush()
        }
        return .bytes(count)
    }

    /// Whether a read now would find nothing (and no end either).
    var inboundDrained: Bool { self.inbound.isEmpty && !self.inboundEnded }

    // MARK: The response

    /// `ClientConnection`'s writes on a stream: HTTP/1.1 response bytes, taken as far as the
    /// stream can hold them. Would-block when it holds `pendingHighWater` already.
    func write(_ bytes: UnsafeBufferPointer<UInt8>) -> IOResult {
        self.insideWrite = true
        defer { self.insideWrite = false }
        var consumed = 0
        loop: while consumed < bytes.count {
            let rest = UnsafeBufferPointer(rebasing: bytes[consumed...])
            switch self.response {
            case .head:
                switch self.parser.parse(rest, into: &self.head) {
                case .incomplete:
                    break loop
                case .failed:
                    // Our own HTTP/1.1 writer produced it: cannot happen, but must not hang.
                    self.connection.streamError(self.id, .internalError)
                    return .failed(EPROTO)
                case .complete:
                    self.parser.reset()
                    consumed += self.head.length
                    self.responseHead(rest)
                }
            case .body:
                if self.pending.readableCount >= Self.pendingHighWater {
                    // Full: frame what the windows allow first. Still full means the stream
                    // waits for a window (it is on the connection's blocked list), which wakes
                    // the HTTP/1.1 side when it drains.
                    self.frameData()
                    guard self.pending.readableCount < Self.pendingHighWater else { break loop }
                }
                consumed += self.takeBody(rest)
            case .ended:
                // Nothing follows a whole response on a stream.
                consumed = bytes.count
            case .reset:
                return .failed(EPIPE)
            }
        }
        self.pump()
        if consumed == 0, !bytes.isEmpty, self.response == .body {
            self.clientBlocked = true
            return .wouldBlock
        }
        return .bytes(consumed)
    }

    func write(from buffer: IOBuffer) -> IOResult {
        let result = self.write(buffer.readable)
        if case .bytes(let count) = result { buffer.consume(count) }
        return result
    }

    private func responseHead(_ bytes: UnsafeBufferPointer<UInt8>) {
        let head = self.head
        if head.status < 200 {
            // 100 Continue and 103 Early Hints: not forwarded (the client gets the final answer).
            return
        }
        var fields: [(String, String)] = [(":status", String(head.status))]
        fields.reserveCapacity(head.fields.count + 1)
        for field in head.fields where !field.name.isHopByHop {
            let name = String(decoding: bytes[field.nameRange], as: UTF8.self).lowercased()
            fields.append((name, String(decoding: bytes[field.valueRange], as: UTF8.self)))
        }
        let method: Method = self.isHEAD ? .head : .get
        self.framing = ResponseFraming.body(status: head.status, framing: head.framing, requestMethod: method)
        let noBody: Bool
        switch self.framing {
        case .none: noBody = true
        case .length(let length):
            noBody = length == 0
            self.remaining = length
        case .chunked:
            noBody = false
            self.decoder.reset()
        case .untilClose:
            noBody = false
        }
        self.connection.writeHeaders(streamID: self.id, fields, endStream: noBody)
        if noBody {
            self.response = .ended
            self.endStreamSent = true
        } else {
            self.response = .body
        }
    }

    /// Body bytes of the HTTP/1.1 response into `pending`, unframed; how many were used.
    private func takeBody(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        switch self.framing {
        case .length:
            let count = Int(min(UInt64(bytes.count), self.remaining))
            self.pending.append(UnsafeBufferPointer(rebasing: bytes[0..<count]))
            self.remaining -= UInt64(count)
            if self.remaining == 0 { self.response = .ended }
            return count
        case .chunked:
            let pending = self.pending
            switch self.decoder.decode(bytes, data: { pending.append(UnsafeBufferPointer(rebasing: bytes[$0])) }) {
            case .consumed(let count, let ended):
                if ended { self.response = .ended }
                return count
            case .failed:
                self.connection.streamError(self.id, .internalError)
                return bytes.count
            }
        case .untilClose:
            self.pending.append(bytes)
            return bytes.count
        case .none:
            self.response = .ended
            return 0
        }
    }

    /// DATA frames from `pending`, as far as both windows and the connection's output allow.
    func pump() {
        if !self.endStreamSent, self.response != .reset { self.frameData() }
        if self.clientBlocked, !self.insideWrite,
            self.endStreamSent || self.pending.readableCount < Self.pendingHighWater / 2
        {
            self.clientBlocked = false
            self.client?.handleEvents(IOEvent.output)
        }
        self.closeIfFinished()
    }

    private func frameData() {
        let connection = self.connection
        while !self.pending.isEmpty {
            let window = min(self.sendWindow, connection.sendWindow)
            guard window > 0, connection.outputHasRoom else {
                connection.waitForWindow(self)
                break
            }
            let count = min(self.pending.readableCount, window, connection.peerMaxFrameSize)
            let last = self.response == .ended && count == self.pending.readableCount
            connection.output.appendFrameHeader(
                length: count, type: .data, flags: last ? HTTP2.Flags.endStream : 0, streamID: self.id)
            connection.output.append(UnsafeBufferPointer(rebasing: self.pending.readable[0..<count]))
            self.pending.consume(count)
            self.sendWindow -= count
            connection.consumeSendWindow(count)
            if last { self.endStreamSent = true }
        }
        if self.pending.isEmpty, self.response == .ended, !self.endStreamSent {
            connection.output.appendFrameHeader(length: 0, type: .data, flags: HTTP2.Flags.endStream, streamID: self.id)
            self.endStreamSent = true
        }
        connection.scheduleFlush()
    }

    /// Both directions over: the stream leaves the connection. A response that ended before
    /// the request did tells the client to stop sending (RFC 9113 §8.1: RST_STREAM NO_ERROR).
    private func closeIfFinished() {
        guard !self.closed, self.endStreamSent, self.client == nil || self.inboundEnded else { return }
        // Once out of the table the stream never touches its connection again: the connection
        // may close (and go) as soon as its last stream is done.
        self.closed = true
        if !self.inboundEnded {
            self.connection.output.appendResetStream(streamID: self.id, error: .noError)
        }
        self.connection.streamClosed(self)
    }

    // MARK: The end

    /// The HTTP/1.1 side finished its response (its FIN): a body read until close ends here.
    func responseFinished() {
        if self.response == .body, self.framing == .untilClose { self.response = .ended }
        self.pump()
    }

    /// The HTTP/1.1 side closed. Before the whole response: the stream is reset (as the
    /// HTTP/1.1 connection would have been cut).
    func clientClosed() {
        self.client = nil
        guard !self.closed else { return }
        if self.response == .ended {
            self.closeIfFinished()
        } else if self.response != .reset {
            self.connection.streamError(self.id, .internalError)
        }
    }

    /// Reset, by the client's RST_STREAM or by ours: the HTTP/1.1 side is closed (its request
    /// logged as cut) and the buffers go back.
    func reset() {
        self.closed = true
        self.response = .reset
        self.pending.clear()
        self.pending.park()
        self.inbound.clear()
        self.inbound.park()
        self.client?.closeNow()
        self.client = nil
    }
}

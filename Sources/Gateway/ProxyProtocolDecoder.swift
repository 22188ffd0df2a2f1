import GatewayHTTP
import NIOCore

/// First handler of a connection on a `proxy_protocol: true` listener: reads the PROXY
/// protocol header (v1 or v2), tells the connection's `ConnectionPeer` whom it is for, passes
/// on whatever followed it, and leaves the pipeline. A connection that does not start with a
/// valid header within `header_timeout` is closed without an answer (the spec: never guess;
/// an HTTP error would tell a scanner what listens here).
final class ProxyProtocolDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let peer: ConnectionPeer
    private let timeout: TimeAmount
    private var buffered: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var done = false

    init(peer: ConnectionPeer, timeout: TimeAmount) {
        self.peer = peer
        self.timeout = timeout
    }

    func channelActive(context: ChannelHandlerContext) {
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) { [weak context] in
            context?.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.done else {
            context.fireChannelRead(data)
            return
        }
        var incoming = Self.unwrapInboundIn(data)
        if var buffered = self.buffered {
            buffered.writeBuffer(&incoming)
            incoming = buffered
        }
        let outcome = incoming.withUnsafeReadableBytes { raw in
            ProxyProtocolHeader.parse(raw.assumingMemoryBound(to: UInt8.self))
        }
        switch outcome {
        case .incomplete:
            self.buffered = incoming
        case .invalid:
            self.done = true
            self.buffered = nil
            context.close(promise: nil)
        case .complete(let length, let source, _):
            self.done = true
            self.buffered = nil
            if let source {
                self.peer.replace(with: source)
            }
            incoming.moveReaderIndex(forwardBy: length)
            // What followed the header is the connection's first bytes: passed on before this
            // handler leaves (the read burst's channelReadComplete follows on its own).
            if incoming.readableBytes > 0 {
                context.fireChannelRead(Self.wrapInboundOut(incoming))
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

@available(*, unavailable)
extension ProxyProtocolDecoder: Sendable {}

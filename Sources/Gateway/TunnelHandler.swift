import NIOCore

/// One side of a byte tunnel (after `101 Switching Protocols`): what one channel reads, its peer
/// writes, with backpressure both ways (a side stops reading while its peer cannot write).
/// Both channels are on the same event loop, so a side calls its peer directly.
///
/// The tunnel lives as long as both ends do: a drain leaves it open (it is a request in
/// flight) until the drain timeout closes the worker's connections.
final class TunnelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var peer: TunnelHandler?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var pendingFlush = false

    static func pair() -> (TunnelHandler, TunnelHandler) {
        let a = TunnelHandler()
        let b = TunnelHandler()
        a.peer = b
        b.peer = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.peer = nil
    }

    private var canRead: Bool {
        self.peer?.context?.channel.isWritable ?? true
    }

    func read(context: ChannelHandlerContext) {
        if self.canRead {
            context.read()
        } else {
            self.readPending = true
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peerContext = self.peer?.context else { return }
        peerContext.write(Self.wrapOutboundOut(Self.unwrapInboundIn(data)), promise: nil)
        self.peer?.pendingFlush = true
    }

    /// Flushes what this side passed to its peer (bytes delivered outside a read burst).
    func flushPeer() {
        if let peer = self.peer, peer.pendingFlush, let peerContext = peer.context {
            peer.pendingFlush = false
            peerContext.flush()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let peer = self.peer, peer.pendingFlush, let peerContext = peer.context {
            peer.pendingFlush = false
            peerContext.flush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Our channel can take bytes again: the peer may read.
        if context.channel.isWritable, let peer = self.peer, peer.readPending, let peerContext = peer.context {
            peer.readPending = false
            peerContext.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // Half-close travels through: the peer gets our FIN after what we read.
            if let peerContext = self.peer?.context {
                peerContext.flush()
                peerContext.close(mode: .output, promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let peerContext = self.peer?.context {
            peerContext.flush()
            peerContext.close(promise: nil)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

import NIOCore

/// One side of a byte tunnel (after `101 Switching Protocols`): what one channel reads, its peer
/// writes, with backpressure both ways (a side stops reading while its peer cannot write).
/// Both channels are on the same event loop, so a side calls its peer directly.
///
/// The tunnel lives as long as both ends do, or until no byte went either way for
/// `limits.tunnel_idle_timeout`: then both are closed. A drain leaves it open (it is a request
/// in flight) until the drain timeout closes the worker's connections.
final class TunnelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var peer: TunnelHandler?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var pendingFlush = false
    private let idleClock: IdleClock

    private init(idleClock: IdleClock) {
        self.idleClock = idleClock
    }

    static func pair(idleTimeout: TimeAmount) -> (TunnelHandler, TunnelHandler) {
        let clock = IdleClock(timeout: idleTimeout)
        let a = TunnelHandler(idleClock: clock)
        let b = TunnelHandler(idleClock: clock)
        a.peer = b
        b.peer = a
        clock.first = a
        clock.second = b
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.idleClock.start(on: context.eventLoop)
    }

    /// Nothing went either way for the idle timeout: close this side (the peer is closed by
    /// the clock too, and by `channelInactive`).
    fileprivate func idleTimedOut() {
        self.context?.close(promise: nil)
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
        // Once per read burst: bytes went one way, the tunnel is not idle.
        self.idleClock.touch()
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
        self.idleClock.stop()
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

/// The idle clock both sides of a tunnel share: a read on either side moves the deadline. One
/// scheduled task per tunnel, moved lazily as `ConnectionHandler`'s wait timer is: it fires at
/// its time and schedules itself again if the deadline moved, so a busy tunnel costs a clock
/// read per read burst, not a timer per read. On the tunnel's event loop (both sides share it).
private final class IdleClock {
    let timeout: TimeAmount
    weak var first: TunnelHandler?
    weak var second: TunnelHandler?
    private var deadline: NIODeadline = .distantFuture
    private var task: Scheduled<Void>?
    private var stopped = false

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func touch() {
        self.deadline = .now() + self.timeout
    }

    /// Called by each side as it joins; the first one starts the clock.
    func start(on eventLoop: any EventLoop) {
        guard self.task == nil, !self.stopped else { return }
        self.touch()
        self.schedule(at: self.deadline, on: eventLoop)
    }

    private func schedule(at deadline: NIODeadline, on eventLoop: any EventLoop) {
        self.task = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self else { return }
            self.task = nil
            guard !self.stopped else { return }
            if self.deadline > .now() {
                self.schedule(at: self.deadline, on: eventLoop)
            } else {
                self.stopped = true
                self.first?.idleTimedOut()
                self.second?.idleTimedOut()
            }
        }
    }

    /// Either side closed (which closes the other): the task must not wait in the loop's
    /// timer heap for an hour.
    func stop() {
        self.stopped = true
        self.task?.cancel()
        self.task = nil
    }
}

import GatewayConfig
import GatewayCore
import GatewayNIO
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The HTTP/1.1 server a worker process runs on the listening sockets the master handed it.
///
/// Lifecycle: `start` once, then `drain` (graceful: see `docs/gateway-drain.md`) and/or
/// `shutdownNow` (hard). All state lives in one lock; every step that awaits re-checks it.
public final class GatewayServer: Sendable {
    private enum Lifecycle {
        case idle
        case starting
        case serving
        case draining
        case stopped
    }

    /// What a newly accepted connection gets.
    private enum AcceptMode {
        case serve
        /// Created during a drain: it answers what it receives with `Connection: close`.
        case lameDuck
        /// After `shutdownNow`: closed at once.
        case reject
    }

    private struct State {
        var lifecycle: Lifecycle = .idle
        var acceptMode: AcceptMode = .serve
        /// Serving listeners, not yet closed by `drain`/`shutdownNow`.
        var serverChannels: [any Channel] = []
        var connections: [ObjectIdentifier: any Channel] = [:]
        /// `drain`/`shutdownNow` calls waiting for `connections` to become empty.
        var zeroConnectionWaiters: [CheckedContinuation<Void, Never>] = []
        /// `drain` has closed the listeners (tests wait for it).
        var listenersClosedByDrain = false
    }

    private let configuration: GatewayConfiguration
    private let generation: Int
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let connectionCountDidChange: @Sendable (Int) -> Void
    /// Routes compiled (responses precomputed) at init; an invalid route fails `start`.
    private let routing: Result<RoutingTable, GatewayServerError>
    private let services: GatewayServices
    private let state = Mutex(State())
    /// Serialises `connectionCountDidChange` calls so that the last one reports the last count.
    private let notifyLock = Mutex(())

    public init(
        configuration: GatewayConfiguration,
        generation: Int,
        eventLoopGroup: MultiThreadedEventLoopGroup,
        logger: Logger,
        sharedState: SharedState? = nil,
        accessLog: AccessLog? = nil,
        connectionCountDidChange: @escaping @Sendable (Int) -> Void
    ) {
        self.configuration = configuration
        var exposition: (@Sendable () -> String)?
        if let metrics = sharedState?.metrics {
            exposition = { metrics.render() }
        }
        self.services = GatewayServices(
            configuration: configuration, rateLimiter: sharedState?.rateLimiter, accessLog: accessLog,
            metrics: GatewayMetrics(), metricsExposition: exposition)
        self.generation = generation
        self.group = eventLoopGroup
        var logger = logger
        logger[metadataKey: "generation"] = "\(generation)"
        self.logger = logger
        self.connectionCountDidChange = connectionCountDidChange
        do throws(GatewayServerError) {
            self.routing = .success(try RoutingTable(configuration: configuration))
        } catch {
            self.routing = .failure(error)
        }
    }

    /// Open connections (including ones that are draining or lingering).
    public var connectionCount: Int {
        self.state.withLock { $0.connections.count }
    }

    /// Whether listeners may accept: not once a drain or a stop has begun.
    private var isAccepting: Bool {
        self.state.withLock { $0.lifecycle == .starting || $0.lifecycle == .serving }
    }

    /// Whether `drain` has stopped accepting (its step 1 is over). For tests.
    var listenersClosedByDrain: Bool {
        self.state.withLock { $0.listenersClosedByDrain }
    }

    // MARK: Start

    /// Serves on every listener. Returns once every listener is serving; throws a
    /// `GatewayServerError` naming the listener otherwise (every fd is closed then).
    public func start(listeners: [HandedOffListener]) async throws {
        let mayStart = self.state.withLock { state -> Bool in
            guard state.lifecycle == .idle else { return false }
            state.lifecycle = .starting
            return true
        }
        guard mayStart else {
            // These fds may well be the ones already serving: do not touch them.
            throw GatewayServerError.alreadyStarted
        }
        let routing: RoutingTable
        switch self.routing {
        case .success(let table):
            routing = table
        case .failure(let error):
            self.failStart(closing: listeners[...])
            throw error
        }

        for (index, listener) in listeners.enumerated() {
            if !routing.hasListener(listener.name) {
                self.logger.warning(
                    "listener is not in the configuration: only routes without 'listener' apply",
                    metadata: ["listener": "\(listener.name)"])
            }
            do throws(GatewayServerError) {
                try Self.checkListeningSocket(listener)
            } catch {
                await self.closeServerChannelsAfterFailedStart()
                self.failStart(closing: listeners[index...])
                throw error
            }

            let channel: any Channel
            do {
                channel = try await self.makeBootstrap(
                    router: routing.router(for: listener.name),
                    isAdmin: listener.name == self.configuration.admin?.listener,
                    listener: listener
                )
                .withBoundSocket(listener.fd)
                .get()
            } catch {
                // NIO owns this fd now (and closes it when registration fails).
                await self.closeServerChannelsAfterFailedStart()
                self.failStart(closing: listeners[(index + 1)...])
                throw GatewayServerError.listenerFailed(
                    listener: listener.name, fd: listener.fd, reason: "cannot serve: \(error)")
            }

            // Again, checked this time: the call in the initializer cannot fail the start.
            do {
                try ListeningSocket.restoreBacklog(fd: listener.fd, backlog: listener.backlog)
            } catch {
                try? await channel.close().get()
                await self.closeServerChannelsAfterFailedStart()
                self.failStart(closing: listeners[(index + 1)...])
                throw GatewayServerError.listenerFailed(
                    listener: listener.name, fd: listener.fd, reason: "cannot restore the backlog: \(error)")
            }

            let stillStarting = self.state.withLock { state -> Bool in
                guard state.lifecycle == .starting else { return false }
                state.serverChannels.append(channel)
                return true
            }
            guard stillStarting else {
                // drain() or shutdownNow() ran meanwhile and closed the listeners it knew about.
                try? await channel.close().get()
                self.closeDescriptors(listeners[(index + 1)...])
                throw GatewayServerError.stoppedWhileStarting
            }
            self.logger.info(
                "serving",
                metadata: [
                    "listener": "\(listener.name)", "fd": "\(listener.fd)", "backlog": "\(listener.backlog)",
                ])
        }

        let serving = self.state.withLock { state -> Bool in
            guard state.lifecycle == .starting else { return false }
            state.lifecycle = .serving
            return true
        }
        self.services.ready.store(serving, ordering: .relaxed)
        guard serving else {
            // Whoever stopped us took the server channels and closes them.
            throw GatewayServerError.stoppedWhileStarting
        }
    }

    private func makeBootstrap(router: ListenerRouter, isAdmin: Bool, listener: HandedOffListener) -> ServerBootstrap {
        let logger = self.logger
        let trusted = TrustedProxies(ranges: self.configuration.trustedProxies(on: listener.name))
        let proxyProtocol = self.configuration.listeners.first { $0.name == listener.name }?.proxyProtocol ?? false
        return ServerBootstrap(group: self.group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // NIO's server socket channel called listen(fd, 128) when it was created,
                    // shrinking the queue every generation shares: set it back at once, not
                    // after registration, so a burst during a reload finds the full backlog.
                    try? ListeningSocket.restoreBacklog(fd: listener.fd, backlog: listener.backlog)
                    // Out of fds, accept(2) would be retried at once, forever.
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptPauseHandler("accept on listener \(listener.name) failed", logger: logger) {
                            [weak self] in self?.isAccepting ?? false
                        })
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorLogger(logger: logger))
                }
            }
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            // A client that half-closes after its request still gets its response.
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [trusted, proxyProtocol] channel in
                self.initializeConnection(
                    channel, router: router, isAdmin: isAdmin, trusted: trusted, proxyProtocol: proxyProtocol)
            }
    }

    /// Runs on the connection's event loop, before it is registered.
    private func initializeConnection(
        _ channel: any Channel, router: ListenerRouter, isAdmin: Bool, trusted: TrustedProxies, proxyProtocol: Bool
    ) -> EventLoopFuture<Void> {
        let id = ObjectIdentifier(channel)
        let mode = self.state.withLock { state -> AcceptMode in
            if state.acceptMode != .reject {
                state.connections[id] = channel
            }
            return state.acceptMode
        }
        if mode == .reject {
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        self.notifyConnectionCount()
        channel.closeFuture.whenComplete { _ in
            self.connectionClosed(id)
        }
        do {
            let limits = self.configuration.limits
            let pipeline = channel.pipeline.syncOperations
            let peer = ConnectionPeer(channel.remoteAddress)
            if proxyProtocol {
                // Before everything: the header is not HTTP, and it says who the peer is.
                try pipeline.addHandler(ProxyProtocolDecoder(peer: peer, timeout: TimeAmount(limits.headerTimeout)))
            }
            let connection = ConnectionHandler(
                draining: mode == .lameDuck, headerTimeout: TimeAmount(limits.headerTimeout),
                idleTimeout: TimeAmount(limits.idleTimeout), bodyTimeout: TimeAmount(limits.bodyTimeout))
            try pipeline.addHandler(connection)
            // Built by hand rather than with `configureHTTPServerPipeline`:
            // - the decoder forwards the bytes it holds when it is removed, for a WebSocket
            //   tunnel after a 101;
            // - it enforces `max_header_bytes` (llhttp's header overflow → 431);
            // - the encoder never adds framing headers: `RequestHandler` decides framing for
            //   proxied responses itself (it knows HEAD and HTTP/1.0 clients);
            // - errors are answered by `RequestHandler` (400, or 431), not NIO's handler.
            // No outbound header validation: constant headers are checked once in
            // `RoutingTable.compile`, proxied ones were parsed by llhttp.
            var decoderLimits = NIOHTTPDecoderLimitConfiguration()
            decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
            decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
            var encoderConfiguration = HTTPResponseEncoder.Configuration()
            encoderConfiguration.automaticallySetFramingHeaders = false
            try pipeline.addHandler(HTTPResponseEncoder(configuration: encoderConfiguration))
            try pipeline.addHandler(
                ByteToMessageHandler(
                    HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: decoderLimits)))
            try pipeline.addHandler(HTTPServerPipelineHandler())
            try pipeline.addHandler(
                RequestHandler(
                    connection: connection, peer: peer, trusted: trusted,
                    router: isAdmin ? ListenerRouter.admin : router, services: self.services,
                    upstreams: self.services.upstreams(on: channel.eventLoop)))
            return channel.eventLoop.makeSucceededVoidFuture()
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    private func connectionClosed(_ id: ObjectIdentifier) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.connections.removeValue(forKey: id)
            guard state.connections.isEmpty else { return [] }
            defer { state.zeroConnectionWaiters = [] }
            return state.zeroConnectionWaiters
        }
        self.notifyConnectionCount()
        for waiter in waiters {
            waiter.resume()
        }
    }

    private func notifyConnectionCount() {
        self.notifyLock.withLock { _ in
            let count = self.connectionCount
            self.services.metrics.connectionCount(count)
            self.connectionCountDidChange(count)
        }
    }

    // MARK: Stop

    /// Graceful drain. Returns when no connection is left.
    ///
    /// 1. Stop accepting without closing a connection already accepted: `autoRead` off on
    ///    every listener, an event-loop barrier, then close the listeners. Connections still
    ///    in the kernel's accept queue stay there (the master holds the same socket) for the
    ///    next generation.
    /// 2. Lame duck: a request in flight completes; every response now carries
    ///    `Connection: close`; idle keep-alive connections are closed after
    ///    `ConnectionHandler.idleGrace`.
    /// 3. Every close is polite (FIN, then read and discard until the peer closes).
    ///
    /// `stoppedAccepting` is called once this server has closed its copies of the listening
    /// sockets (or at once if another drain already did): the master waits for that before it
    /// tells a reload's caller that only the new generation accepts.
    public func drain(stoppedAccepting: @Sendable () -> Void = {}) async {
        let serverChannels = self.state.withLock { state -> [any Channel]? in
            switch state.lifecycle {
            case .idle:
                state.lifecycle = .stopped
                state.acceptMode = .reject
                return []
            case .starting, .serving:
                self.services.ready.store(false, ordering: .relaxed)
                state.lifecycle = .draining
                // Set before the listeners close: a connection set up from now on (on another
                // event loop, say) starts in lame-duck mode on its own.
                state.acceptMode = .lameDuck
                defer { state.serverChannels = [] }
                return state.serverChannels
            case .draining, .stopped:
                return nil  // Someone else is stopping the server: wait for the same end.
            }
        }
        if let serverChannels {
            self.logger.info("draining", metadata: ["connections": "\(self.connectionCount)"])
            // Requests in flight finish on the connections they have; nothing is pooled from
            // now on (the upstream sees our idle connections close, not linger until exit).
            self.services.closeUpstreams()
            await self.stopAccepting(serverChannels)
            stoppedAccepting()
            let connections = self.state.withLock { state in
                state.listenersClosedByDrain = true
                return Array(state.connections.values)
            }
            for channel in connections {
                channel.eventLoop.execute {
                    channel.pipeline.syncOperations.fireUserInboundEventTriggered(DrainRequestedEvent())
                }
            }
        } else {
            stoppedAccepting()
        }
        await self.waitForZeroConnections()
        self.state.withLock { state in
            if state.lifecycle == .draining {
                state.lifecycle = .stopped
                state.acceptMode = .reject
            }
        }
        self.logger.info("drained")
    }

    /// Hard stop: closes every listener and connection now.
    public func shutdownNow() async {
        await self.closeEverything(announce: true)
        await self.waitForZeroConnections()
        self.services.closeUpstreams()
    }

    /// Stops the server for good: listeners closed, every connection closed at once.
    private func closeEverything(announce: Bool) async {
        self.services.ready.store(false, ordering: .relaxed)
        let serverChannels = self.state.withLock { state -> [any Channel] in
            state.lifecycle = .stopped
            state.acceptMode = .reject
            defer { state.serverChannels = [] }
            return state.serverChannels
        }
        for channel in serverChannels {
            try? await channel.close().get()
        }
        let connections = self.state.withLock { Array($0.connections.values) }
        if announce && !connections.isEmpty {
            self.logger.info("closing connections now", metadata: ["connections": "\(connections.count)"])
        }
        for channel in connections {
            channel.close(promise: nil)
        }
    }

    private func stopAccepting(_ serverChannels: [any Channel]) async {
        for channel in serverChannels {
            try? await channel.setOption(ChannelOptions.autoRead, value: false).get()
        }
        // Closing a listener makes NIO close every child it accepted whose setup has not come
        // back to the listener's loop yet. That setup is a chain of tasks across loops (the
        // child's loop runs the initializer, the listener's loop checks the listener is still
        // active, the child's loop registers): with accepting stopped, two rounds of no-op
        // tasks on every loop let every such chain finish before the close.
        for _ in 0..<2 {
            for eventLoop in self.group.makeIterator() {
                try? await eventLoop.submit {}.get()
            }
        }
        for channel in serverChannels {
            try? await channel.close().get()
        }
    }

    private func waitForZeroConnections() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.state.withLock { state -> Bool in
                if state.connections.isEmpty { return true }
                state.zeroConnectionWaiters.append(continuation)
                return false
            }
            if resumeNow {
                continuation.resume()
            }
        }
    }

    // MARK: Failed start

    private func failStart(closing listeners: ArraySlice<HandedOffListener>) {
        self.state.withLock { state in
            if state.lifecycle == .starting {
                state.lifecycle = .stopped
                state.acceptMode = .reject
            }
        }
        self.closeDescriptors(listeners)
    }

    private func closeServerChannelsAfterFailedStart() async {
        await self.closeEverything(announce: false)
    }

    private func closeDescriptors(_ listeners: ArraySlice<HandedOffListener>) {
        for listener in listeners where fcntl(listener.fd, F_GETFD) != -1 {
            closeDescriptor(listener.fd)
        }
    }

    /// A clear error before NIO gets the fd: NIO's own failures are less readable.
    static func checkListeningSocket(_ listener: HandedOffListener) throws(GatewayServerError) {
        func option(_ name: CInt) throws(GatewayServerError) -> CInt {
            var value: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            guard getsockopt(listener.fd, SOL_SOCKET, name, &value, &length) == 0 else {
                let reason = String(cString: strerror(errno))
                throw .listenerFailed(
                    listener: listener.name, fd: listener.fd, reason: "not a socket: \(reason)")
            }
            return value
        }
        let domain = try option(SO_DOMAIN)
        guard domain == AF_INET || domain == AF_INET6 else {
            throw .listenerFailed(
                listener: listener.name, fd: listener.fd, reason: "not an IPv4/IPv6 socket")
        }
        guard try option(SO_TYPE) == CInt(SOCK_STREAM.rawValue) else {
            throw .listenerFailed(listener: listener.name, fd: listener.fd, reason: "not a TCP socket")
        }
        guard try option(SO_ACCEPTCONN) != 0 else {
            throw .listenerFailed(listener: listener.name, fd: listener.fd, reason: "not listening")
        }
    }
}

/// Logs what goes wrong on a listener, but for want of fds (`AcceptPauseHandler` has those).
private final class AcceptErrorLogger: ChannelInboundHandler {
    typealias InboundIn = Any
    typealias InboundOut = Any

    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let channelError = error as? ChannelError, channelError == .ioOnClosedChannel {
            // A connection refused by a stopped server, or set up after its listener closed.
            return
        }
        self.logger.warning("accept failed", metadata: ["error": "\(error)"])
    }
}

@available(*, unavailable)
extension AcceptErrorLogger: Sendable {}

import CGatewayIO
import Foundation
import GatewayConfig
import GatewayCore
import GatewayIO
import Logging
import Synchronization
import Tracing

#if canImport(Glibc)
    import Glibc
#endif

/// The HTTP/1.1 server a worker process runs on the listening sockets the master handed it:
/// `loops` event loops of its own (`GatewayIO.EventLoop`, one thread each; a worker runs one,
/// nginx's model), every one of them accepting on every listener.
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

    private struct State {
        var lifecycle: Lifecycle = .idle
        /// `drain` and `shutdownNow` waiting for the last connection to close.
        var zeroConnectionWaiters: [CheckedContinuation<Void, Never>] = []
        /// `drain` has closed the listeners (tests wait for it).
        var listenersClosedByDrain = false
        /// The listening fds this server serves: closed once, when accepting stops.
        var listenerDescriptors: [CInt] = []
        /// `shutdownNow` has begun: the loops stop at its end, and run nothing after.
        var shuttingDown = false
        var loopsStopped = false
        /// Later `shutdownNow` calls, waiting for the first to end.
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let configuration: GatewayConfiguration
    private let generation: Int
    private let logger: Logger
    private let connectionCountDidChange: @Sendable (Int) -> Void
    /// Routes compiled (responses precomputed) at init; an invalid route fails `start`.
    private let routing: Result<RoutingTable, GatewayServerError>
    let services: GatewayServices
    private let state = Mutex(State())
    private let openConnections = Atomic<Int>(0)
    let loops: [WorkerLoop]

    public init(
        configuration: GatewayConfiguration,
        generation: Int,
        loops: Int = 1,
        logger: Logger,
        sharedState: SharedState? = nil,
        accessLog: AccessLog? = nil,
        tracer: (any Tracer)? = nil,
        sampleRatio: Double = 1,
        connectionCountDidChange: @escaping @Sendable (Int) -> Void
    ) throws(SystemCallError) {
        self.configuration = configuration
        var exposition: (@Sendable () -> String)?
        if let metrics = sharedState?.metrics {
            exposition = { metrics.render() }
        }
        self.services = GatewayServices(
            configuration: configuration, rateLimiter: sharedState?.rateLimiter, accessLog: accessLog,
            metrics: GatewayMetrics(), metricsExposition: exposition,
            tracing: tracer.map { RequestTracing(tracer: $0, sampleRatio: sampleRatio) })
        self.generation = generation
        var logger = logger
        logger[metadataKey: "generation"] = "\(generation)"
        self.logger = logger
        self.connectionCountDidChange = connectionCountDidChange
        do throws(GatewayServerError) {
            self.routing = .success(try RoutingTable(configuration: configuration))
        } catch {
            self.routing = .failure(error)
        }
        var made: [WorkerLoop] = []
        for index in 0..<max(1, loops) {
            made.append(try WorkerLoop(index: index, services: self.services, logger: logger))
        }
        self.loops = made
        for loop in self.loops {
            loop.server = self
            try loop.eventLoop.startThread(name: "gatewayd-loop-\(loop.index)")
        }
    }

    /// Open connections (including ones that are draining or lingering).
    public var connectionCount: Int {
        self.openConnections.load(ordering: .relaxed)
    }

    /// Whether `drain` has stopped accepting (its step 1 is over). For tests.
    var listenersClosedByDrain: Bool {
        self.state.withLock { $0.listenersClosedByDrain }
    }

    /// The first loop: what runs the worker's periodic marks (the stall check).
    public var mainLoop: EventLoop { self.loops[0].eventLoop }

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
            self.failStart(closing: listeners)
            throw error
        }
        if case .failure(let error) = self.services.upstreamTLS {
            self.failStart(closing: listeners)
            throw error
        }
        for listener in listeners {
            do throws(GatewayServerError) {
                try Self.checkListeningSocket(listener)
            } catch {
                self.failStart(closing: listeners)
                throw error
            }
            if !routing.hasListener(listener.name) {
                self.logger.warning(
                    "listener is not in the configuration: only routes without 'listener' apply",
                    metadata: ["listener": "\(listener.name)"])
            }
            // The configured backlog, in case whoever held the socket shrank it.
            try? ListeningSocket.restoreBacklog(fd: listener.fd, backlog: listener.backlog)
        }
        var made: [ListenerSpec] = []
        for listener in listeners {
            let configured = self.configuration.listeners.first { $0.name == listener.name }
            var tls: TLSServerContext?
            if let configuration = configured?.tls {
                do throws(GatewayServerError) {
                    tls = try TLSServerContext(configuration, listener: listener.name)
                } catch {
                    self.failStart(closing: listeners)
                    throw error
                }
            }
            made.append(
                ListenerSpec(
                    name: listener.name, fd: listener.fd, router: routing.router(for: listener.name),
                    isAdmin: listener.name == self.configuration.admin?.listener,
                    trusted: TrustedProxies(ranges: self.configuration.trustedProxies(on: listener.name)),
                    proxyProtocol: configured?.proxyProtocol ?? false, tls: tls,
                    h2c: configured?.h2c ?? false, http2: configured?.tls?.alpn.contains("h2") ?? false))
        }
        let specs = made
        self.state.withLock { $0.listenerDescriptors = listeners.map(\.fd) }
        do {
            for loop in self.loops {
                try await loop.run { try loop.startAccepting(specs) }
            }
        } catch {
            for loop in self.loops {
                await loop.run { loop.stopAccepting() }
            }
            self.failStart(closing: listeners)
            throw GatewayServerError.listenerFailed(
                listener: listeners.first?.name ?? "?", fd: listeners.first?.fd ?? -1, reason: "cannot serve: \(error)")
        }
        let serving = self.state.withLock { state -> Bool in
            guard state.lifecycle == .starting else { return false }
            state.lifecycle = .serving
            return true
        }
        self.services.ready.store(serving, ordering: .relaxed)
        guard serving else {
            // Whoever stopped us closes the listeners.
            throw GatewayServerError.stoppedWhileStarting
        }
        for listener in listeners {
            self.logger.info(
                "serving",
                metadata: [
                    "listener": "\(listener.name)", "fd": "\(listener.fd)", "backlog": "\(listener.backlog)",
                ])
        }
    }

    // MARK: Connections

    /// From a loop, when it opens or closes a connection.
    func connectionOpened() {
        let count = self.openConnections.add(1, ordering: .relaxed).newValue
        self.services.metrics.connectionCount(count)
        self.connectionCountDidChange(count)
    }

    func connectionClosed() {
        let count = self.openConnections.subtract(1, ordering: .relaxed).newValue
        self.services.metrics.connectionCount(count)
        self.connectionCountDidChange(count)
        guard count == 0 else { return }
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state.zeroConnectionWaiters = [] }
            return state.zeroConnectionWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Whether new connections are served normally (else they start as lame ducks).
    var isDraining: Bool {
        self.state.withLock { $0.lifecycle == .draining }
    }

    // MARK: Stop

    /// Graceful drain. Returns when no connection is left.
    ///
    /// 1. Stop accepting without closing a connection already accepted: every loop takes the
    ///    listeners out of its epoll set, then this server closes its copies. Connections
    ///    still in the kernel's accept queue stay there (the master holds the same socket) for
    ///    the next generation.
    /// 2. Lame duck: a request in flight completes; every response now carries
    ///    `Connection: close`; idle keep-alive connections are closed after
    ///    `ClientConnection.idleGrace`.
    /// 3. Every close is polite (FIN, then read and discard until the peer closes).
    ///
    /// `stoppedAccepting` is called once this server has closed its copies of the listening
    /// sockets (or at once if another drain already did): the master waits for that before it
    /// tells a reload's caller that only the new generation accepts.
    public func drain(stoppedAccepting: @Sendable () -> Void = {}) async {
        let mayDrain = self.state.withLock { state -> Bool in
            switch state.lifecycle {
            case .idle:
                state.lifecycle = .stopped
                return false
            case .starting, .serving:
                state.lifecycle = .draining
                return true
            case .draining, .stopped:
                return false  // Someone else is stopping the server: wait for the same end.
            }
        }
        if self.state.withLock({ $0.shuttingDown }) {
            stoppedAccepting()
            await self.waitForZeroConnections()
            return
        }
        if mayDrain {
            self.services.ready.store(false, ordering: .relaxed)
            self.logger.info("draining", metadata: ["connections": "\(self.connectionCount)"])
            for loop in self.loops {
                await loop.run { loop.stopAccepting() }
            }
            self.closeListeners()
            stoppedAccepting()
            self.state.withLock { $0.listenersClosedByDrain = true }
            // Requests in flight finish on the connections they have; nothing is pooled from
            // now on (the upstream sees our idle connections close, not linger until exit).
            for loop in self.loops {
                await loop.run { loop.beginDraining() }
            }
        } else {
            stoppedAccepting()
        }
        await self.waitForZeroConnections()
        self.state.withLock { state in
            if state.lifecycle == .draining { state.lifecycle = .stopped }
        }
        self.logger.info("drained")
    }

    /// Hard stop: closes every listener and connection now, then ends the loops' threads. A
    /// second call waits for the first.
    public func shutdownNow() async {
        self.services.ready.store(false, ordering: .relaxed)
        let first = self.state.withLock { state -> Bool in
            state.lifecycle = .stopped
            guard !state.shuttingDown else { return false }
            state.shuttingDown = true
            return true
        }
        guard first else {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = self.state.withLock { state -> Bool in
                    if state.loopsStopped { return true }
                    state.shutdownWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
            return
        }
        for loop in self.loops {
            await loop.run { loop.stopAccepting() }
        }
        self.closeListeners()
        let connections = self.connectionCount
        if connections > 0 {
            self.logger.info("closing connections now", metadata: ["connections": "\(connections)"])
        }
        for loop in self.loops {
            await loop.run { loop.closeEverything() }
        }
        await self.waitForZeroConnections()
        for loop in self.loops {
            loop.eventLoop.stop()
        }
        // Off the cooperative pool: pthread_join blocks its thread until the loop has ended.
        let loops = self.loops.map(\.eventLoop)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                for loop in loops { loop.joinThread() }
                continuation.resume()
            }
        }
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.loopsStopped = true
            defer { state.shutdownWaiters = [] }
            return state.shutdownWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func closeListeners() {
        let descriptors = self.state.withLock { state -> [CInt] in
            defer { state.listenerDescriptors = [] }
            return state.listenerDescriptors
        }
        for fd in descriptors { closeDescriptor(fd) }
    }

    private func waitForZeroConnections() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.state.withLock { state -> Bool in
                if self.openConnections.load(ordering: .relaxed) == 0 { return true }
                state.zeroConnectionWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    // MARK: Failed start

    private func failStart(closing listeners: [HandedOffListener]) {
        self.state.withLock { state in
            if state.lifecycle == .starting { state.lifecycle = .stopped }
            state.listenerDescriptors = []
        }
        for listener in listeners where fcntl(listener.fd, F_GETFD) != -1 {
            closeDescriptor(listener.fd)
        }
    }

    /// A clear error for an fd that is not a listening TCP socket.
    static func checkListeningSocket(_ listener: HandedOffListener) throws(GatewayServerError) {
        func option(_ name: CInt) throws(GatewayServerError) -> CInt {
            var value: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            guard getsockopt(listener.fd, SOL_SOCKET, name, &value, &length) == 0 else {
                let reason = String(cString: strerror(errno))
                throw .listenerFailed(listener: listener.name, fd: listener.fd, reason: "not a socket: \(reason)")
            }
            return value
        }
        let domain = try option(SO_DOMAIN)
        guard domain == AF_INET || domain == AF_INET6 else {
            throw .listenerFailed(listener: listener.name, fd: listener.fd, reason: "not an IPv4/IPv6 socket")
        }
        guard try option(SO_TYPE) == CInt(SOCK_STREAM.rawValue) else {
            throw .listenerFailed(listener: listener.name, fd: listener.fd, reason: "not a TCP socket")
        }
        guard try option(SO_ACCEPTCONN) != 0 else {
            throw .listenerFailed(listener: listener.name, fd: listener.fd, reason: "not listening")
        }
    }
}

/// What a loop needs to serve one listening socket.
struct ListenerSpec: Sendable {
    var name: String
    var fd: CInt
    var router: ListenerRouter
    var isAdmin: Bool
    var trusted: TrustedProxies
    var proxyProtocol: Bool
    /// A TLS listener's certificates; nil for plaintext.
    var tls: TLSServerContext?
    /// Prior-knowledge HTTP/2 on this plaintext listener.
    var h2c = false
    /// `h2` is offered in ALPN on this TLS listener.
    var http2 = false
}

import CGatewayIO
import GatewayConfig
import GatewayCore
import GatewayIO
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// One event loop of a worker and everything that lives on it: its listeners' handlers, its
/// client connections (the loop owns them: one owner per fd), its upstream pools. Touched only
/// on its loop's thread, except `run`, which hops there.
final class WorkerLoop: @unchecked Sendable {
    let index: Int
    let eventLoop: EventLoop
    let services: GatewayServices
    let logger: Logger
    weak var server: GatewayServer?
    /// This loop's upstream pools (connections are not shared between loops).
    let upstreams: LoopUpstreams

    private var listeners: [Listener] = []
    /// Every open client connection; each knows its index here (removal swaps the last in).
    private(set) var connections: [any LoopConnection] = []
    /// New connections start as lame ducks, idle ones close after the grace.
    private(set) var draining = false
    /// After `closeEverything`: a connection accepted now is closed at once.
    private var closed = false

    init(index: Int, services: GatewayServices, logger: Logger) throws(SystemCallError) {
        self.index = index
        self.eventLoop = try EventLoop()
        self.services = services
        self.logger = logger
        self.upstreams = LoopUpstreams(
            configurations: services.upstreamConfigurations, tls: (try? services.upstreamTLS.get()) ?? [:],
            loop: self.eventLoop, metrics: services.metrics)
    }

    /// Runs `body` on this loop and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            self.eventLoop.execute {
                continuation.resume(with: Result { try body() })
            }
        }
    }

    func run(_ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { continuation in
            self.eventLoop.execute {
                body()
                continuation.resume()
            }
        }
    }

    // MARK: Listeners

    func startAccepting(_ specs: [ListenerSpec]) throws(SystemCallError) {
        for spec in specs {
            let listener = Listener(spec: spec, loop: self)
            try listener.register()
            self.listeners.append(listener)
        }
    }

    /// Takes every listener out of this loop's epoll set; the server closes the fds.
    func stopAccepting() {
        for listener in self.listeners { listener.deregister() }
        self.listeners = []
    }

    // MARK: Connections

    func accepted(_ fd: CInt, address: sockaddr_storage, spec: ListenerSpec) {
        guard !self.closed, let server = self.server else {
            closeDescriptor(fd)
            return
        }
        var on: CInt = 1
        _ = setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<CInt>.size))
        var tls: TLSSession?
        if let context = spec.tls {
            tls = TLSSession(context: context, fd: fd)
            guard tls != nil else {
                self.logger.warning("cannot serve a TLS connection: OpenSSL could not make one (out of memory?)")
                closeDescriptor(fd)
                return
            }
        }
        let connection = ClientConnection(
            fd: fd, loop: self, spec: spec, peer: ConnectionPeer(address), tls: tls, lameDuck: self.draining)
        do {
            try connection.register()
        } catch {
            self.logger.warning("cannot serve a connection: \(error)")
            closeDescriptor(fd)
            return
        }
        ProxyLog.step("accepted", ["listener": "\(spec.name)", "client": "\(connection.peer.text)", "fd": "\(fd)"])
        connection.loopIndex = self.connections.count
        self.connections.append(connection)
        server.connectionOpened()
        connection.started()
    }

    /// An HTTP/1.1 connection that found HTTP/2 (ALPN `h2`, or the h2c preface) hands its fd
    /// and its place in the table to the `HTTP2Connection` that serves it from now on.
    func replace(_ old: ClientConnection, with new: HTTP2Connection) {
        let index = old.loopIndex
        guard index >= 0, index < self.connections.count, self.connections[index] === old else { return }
        self.connections[index] = new
        new.loopIndex = index
        old.loopIndex = -1
    }

    /// From a connection that closed its fd.
    func connectionClosed(_ connection: any LoopConnection) {
        let index = connection.loopIndex
        guard index >= 0, index < self.connections.count, self.connections[index] === connection else { return }
        let last = self.connections.removeLast()
        if index < self.connections.count {
            self.connections[index] = last
            last.loopIndex = index
        }
        connection.loopIndex = -1
        self.server?.connectionClosed()
    }

    func beginDraining() {
        self.draining = true
        self.upstreams.closeAll()
        for connection in self.connections { connection.beginDraining() }
    }

    func closeEverything() {
        self.closed = true
        self.upstreams.closeAll()
        for connection in self.connections { connection.closeNow() }
    }
}

/// Accepts on one listening socket for one loop. Level-triggered with EPOLLEXCLUSIVE, as nginx
/// does: of the loops and workers waiting on the socket, one is woken per connection.
final class Listener: IOHandler {
    /// accept4(2) calls per wake-up: one, as nginx's default (`multi_accept off`). The socket is
    /// level-triggered, so a burst is still taken, one wake-up per connection, by whichever
    /// worker is free. Measured (docs/benchmarks.md, wrk -c64, 2 workers): 64 per wake-up let
    /// the first worker woken take the whole burst in about half the runs (80-99 % of the
    /// connections on one worker, 20-29k req/s); one gives an even split and 28-41k.
    static let acceptsPerWakeUp = 1
    /// nginx pauses accepting for 500 ms (`accept_mutex_delay`) when out of fds; 100 ms costs
    /// ten failed accept(2) a second and lets a waiting connection in within 100 ms of an fd
    /// coming free. (The same as `AcceptPauseHandler.pause` on the master's control socket.)
    static let pauseNanoseconds: UInt64 = 100_000_000

    let spec: ListenerSpec
    unowned let loop: WorkerLoop
    private var registration: EventLoop.Registration?
    private var paused = false
    private var throttle = LogThrottle()

    init(spec: ListenerSpec, loop: WorkerLoop) {
        self.spec = spec
        self.loop = loop
    }

    func register() throws(SystemCallError) {
        // Nonblocking: the loop never waits in accept(2). The flag is on the open file
        // description, which every generation's workers share: they all accept this way.
        let flags = fcntl(self.spec.fd, F_GETFL)
        if flags & O_NONBLOCK == 0 {
            _ = try syscall("fcntl", on: "listener \(self.spec.name)") {
                fcntl(self.spec.fd, F_SETFL, flags | O_NONBLOCK)
            }
        }
        self.registration = try self.loop.eventLoop.register(self, fd: self.spec.fd, events: IOEvent.listener)
    }

    func deregister() {
        guard let registration = self.registration else { return }
        self.registration = nil
        self.loop.eventLoop.deregister(registration, fd: self.spec.fd)
    }

    func handleEvents(_ events: UInt32) {
        var address = sockaddr_storage()
        for _ in 0..<Self.acceptsPerWakeUp {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = gw_io_accept(self.spec.fd, &address, &length)
            if fd >= 0 {
                self.loop.accepted(fd, address: address, spec: self.spec)
                continue
            }
            switch errno {
            case EAGAIN:
                return
            case EINTR, ECONNABORTED, EPROTO:
                continue
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                self.pause(errno)
                return
            default:
                if let quiet = self.throttle.shouldReport() {
                    let since = quiet > 0 ? " (\(quiet) more since the last message)" : ""
                    self.loop.logger.warning(
                        "accept on listener \(self.spec.name) failed: \(String(cString: strerror(errno)))\(since)")
                }
                return
            }
        }
    }

    /// Out of fds: the socket stays readable and accept(2) would fail at once, forever. Out of
    /// the epoll set for a while; connections wait in the kernel's queue meanwhile.
    private func pause(_ code: CInt) {
        guard !self.paused, let registration = self.registration else { return }
        if let quiet = self.throttle.shouldReport() {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            let since = quiet > 0 ? " (\(quiet) more since the last message)" : ""
            self.loop.logger.error(
                "accept on listener \(self.spec.name) failed: \(String(cString: strerror(code)))\(since); fd limit \(limit.rlim_cur); accepting again every 100 ms, new connections wait in the listen queue"
            )
        }
        self.paused = true
        self.registration = nil
        self.loop.eventLoop.deregister(registration, fd: self.spec.fd)
        self.loop.eventLoop.schedule(at: self.loop.eventLoop.now + Self.pauseNanoseconds) { [weak self] in
            guard let self else { return }
            self.paused = false
            guard self.loop.server?.isDraining == false else { return }
            try? self.register()
        }
    }
}

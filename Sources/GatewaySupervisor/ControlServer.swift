import CGatewayShim
import Foundation
import GatewayCore
import GatewayNIO
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The master's control socket: a Unix stream socket, mode 0600, speaking `ControlProtocol`.
/// Peers are checked with SO_PEERCRED (same uid as the master, or root) even if someone
/// loosened the file's mode by hand.
final class ControlServer: Sendable {
    /// A client that has not sent a whole request line this long after connecting is answered
    /// with an error and cut: a real request arrives in microseconds, and a stuck or slowly
    /// dripping client must not hold a connection for long. Counted from the connect, not
    /// from the last byte, so a byte every few seconds does not extend it.
    static let requestTimeout: TimeAmount = .seconds(10)

    let path: String
    /// The listening socket's fd, owned by `channel`: an upgrade hands a copy to the new master.
    let descriptor: CInt
    private let channel: Channel
    private let group: MultiThreadedEventLoopGroup
    /// Connections accepted and not closed yet.
    private let connections: ConnectionCount

    private init(
        path: String, descriptor: CInt, channel: Channel, group: MultiThreadedEventLoopGroup,
        connections: ConnectionCount
    ) {
        self.path = path
        self.descriptor = descriptor
        self.channel = channel
        self.group = group
        self.connections = connections
    }

    /// Binds the control socket at `path` and serves it.
    static func start(path: String, master: Master, logger: Logger) async throws -> ControlServer {
        try prepareSocketPath(path)
        let descriptor = try bindListeningSocket(path)
        return try await start(listeningOn: descriptor, path: path, master: master, logger: logger)
    }

    /// Serves a control socket that already listens: one this master bound, one an old master
    /// handed over in an upgrade, or its own again after a failed upgrade. The channel owns
    /// `descriptor` from here on.
    static func start(
        listeningOn descriptor: CInt, path: String, master: Master, logger: Logger
    ) async throws -> ControlServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let reserve = ReservedDescriptor()
        let connections = ConnectionCount()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: backlog)
            // Out of fds, the master would retry accept(2) at once, forever, and never say why
            // gatewayctl gets no answer. With the reserve, one client at a time is answered.
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptPauseHandler("control socket: accept failed", logger: logger, reserve: reserve))
                }
            }
            .childChannelInitializer { channel in
                // Its fd may be the reserve's: taken back as soon as it is free again.
                connections.count.add(1, ordering: .relaxed)
                channel.closeFuture.whenComplete { _ in
                    connections.count.subtract(1, ordering: .relaxed)
                    reserve.acquire()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ControlConnectionHandler(master: master, logger: logger, requestTimeout: requestTimeout))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.withBoundSocket(descriptor).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        logger.info("control socket ready", metadata: ["path": "\(path)"])
        return ControlServer(
            path: path, descriptor: descriptor, channel: channel, group: group, connections: connections)
    }

    /// The listen(2) queue: clients wait in it while the master is busy, and during an
    /// upgrade's switch, when neither master accepts for a few milliseconds.
    static let backlog: Int32 = 128

    /// socket, bind and listen, CLOEXEC from birth, and mode 0600 from birth (the umask
    /// around bind): no window in which another user could connect.
    private static func bindListeningSocket(_ path: String) throws(SystemCallError) -> CInt {
        guard var address = unixAddress(path) else {
            throw SystemCallError("bind", on: path, errno: .fileNameTooLong)
        }
        let fd = try syscall("socket", on: path) {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        let oldMask = umask(0o177)
        defer { umask(oldMask) }
        do throws(SystemCallError) {
            try syscall("bind", on: path) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            try syscall("listen", on: path) { listen(fd, backlog) }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        return fd
    }

    private static func unixAddress(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// Makes the directory if needed, and removes a stale socket file, but refuses to take the
    /// path from a master that is still running.
    private static func prepareSocketPath(_ path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw ControlServerError("\(path) exists and is not a socket")
        }
        if isSomeoneListening(path) {
            throw ControlServerError("\(path) is in use by a running gatewayd")
        }
        unlink(path)
    }

    private static func isSomeoneListening(_ path: String) -> Bool {
        guard var address = unixAddress(path) else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return rc == 0
    }

    /// Stops accepting, at an upgrade's switch: this master's fd is closed, and the socket
    /// lives on in the new master's copy, its queue included. Connections accepted before are
    /// still answered.
    func stopAccepting() async {
        try? await channel.close()
    }

    /// Waits until every connection accepted has been answered and closed, at most `limit`:
    /// a master that handed over in an upgrade exits only then, so that its last answers (the
    /// upgrade's own, a request it forwarded) reach their callers.
    func waitUntilAnswered(atMost limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while connections.count.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Stops accepting and removes the socket file, unless another master serves it now
    /// (`removingFile: false`).
    func close(removingFile: Bool = true) {
        if removingFile { unlink(path) }
        channel.close(promise: nil)
        group.shutdownGracefully { _ in }
    }
}

/// How many control connections are open, counted on the event loop, read by the actor.
private final class ConnectionCount: Sendable {
    let count = Atomic<Int>(0)
}

/// The process on the other end of a control connection, as SO_PEERCRED tells it.
struct ControlPeer: Sendable, Equatable {
    var uid: UInt32
    var pid: Int32

    /// How an event names it: the uid, because that is who asked.
    var trigger: String { "control socket (uid \(uid))" }
}

struct ControlServerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One control connection: check the peer, read one line, answer, close.
private final class ControlConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let master: Master
    private let logger: Logger
    private var buffer: ByteBuffer?
    private var state: State = .checkingPeer
    private let requestTimeout: TimeAmount
    private var deadline: Scheduled<Void>?
    /// Who is on the other end (SO_PEERCRED), once checked.
    private var peer: ControlPeer?
    /// The request being answered; cancelled when the client goes away (a follower that
    /// stops following).
    private var answering: Task<Void, Never>?

    private enum State {
        case checkingPeer
        case reading
        case answering
    }

    init(master: Master, logger: Logger, requestTimeout: TimeAmount) {
        self.master = master
        self.logger = logger
        self.requestTimeout = requestTimeout
    }

    func channelActive(context: ChannelHandlerContext) {
        let timeoutBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let seconds = requestTimeout.nanoseconds / 1_000_000_000
        deadline = context.eventLoop.scheduleTask(in: requestTimeout) {
            let (handler, context) = timeoutBound.value
            guard handler.state != .answering else { return }
            handler.respond(context: context, .failure("no whole request line within \(seconds) s of connecting"))
        }
        guard let provider = context.channel as? SocketOptionProvider else {
            refuse(context: context, reason: "cannot check peer credentials")
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SO_PEERCRED).whenComplete {
            (result: Result<gw_ucred, Error>) in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let cred) where cred.uid == 0 || cred.uid == getuid():
                handler.peer = ControlPeer(uid: cred.uid, pid: cred.pid)
                handler.state = .reading
                handler.processBuffer(context: context)
            case .success(let cred):
                handler.logger.warning(
                    "control socket: refused peer", metadata: ["uid": "\(cred.uid)", "pid": "\(cred.pid)"])
                handler.refuse(
                    context: context, reason: "permission denied: uid \(cred.uid) is neither root nor the master's")
            case .failure(let error):
                handler.refuse(context: context, reason: "cannot check peer credentials: \(error)")
            }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        guard state != .answering else { return }
        if buffer == nil {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        if state == .reading { processBuffer(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        answering?.cancel()
        answering = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func processBuffer(context: ChannelHandlerContext) {
        guard var buffer, state == .reading else { return }
        let limit = ControlProtocol.maximumRequestLength
        let tooLong = ControlResponse.failure(
            "request line too long: more than \(limit) bytes without a newline (the limit is \(limit / 1024) KiB)")
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            // Checked on every read, so at most one read's worth past the limit is ever held.
            if buffer.readableBytes > limit { respond(context: context, tooLong) }
            return
        }
        guard newline - buffer.readerIndex <= limit else {
            respond(context: context, tooLong)
            return
        }
        let length = newline - buffer.readerIndex
        let line = buffer.readBytes(length: length) ?? []
        self.buffer = nil
        state = .answering
        let request: ControlRequest
        do {
            request = try ControlRequest(line: line)
        } catch {
            respond(context: context, .failure(error.description))
            return
        }
        let master = self.master
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let peer = self.peer
        // Lines and the response are written in the order they are made: each is one task on
        // the connection's event loop, which runs them in order.
        let emit: @Sendable (ControlLine) -> Void = { line in
            eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.write(context: context, line.encodedLine())
            }
        }
        answering = Task {
            let response = await master.handle(request, from: peer, emit: emit)
            eventLoop.execute {
                let (handler, context) = loopBound.value
                if let response {
                    handler.respond(context: context, response)
                } else {
                    context.close(promise: nil)
                }
            }
        }
    }

    /// A stream line: the connection stays open.
    private func write(context: ChannelHandlerContext, _ bytes: [UInt8]) {
        guard context.channel.isActive else { return }
        var out = context.channel.allocator.buffer(capacity: bytes.count)
        out.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    private func refuse(context: ChannelHandlerContext, reason: String) {
        state = .answering
        respond(context: context, .failure(reason))
    }

    private func respond(context: ChannelHandlerContext, _ response: ControlResponse) {
        state = .answering
        let bytes = response.encodedLine()
        var out = context.channel.allocator.buffer(capacity: bytes.count)
        out.writeBytes(bytes)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

import GatewayCore
import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Pauses accepting on a listening socket while accept(2) fails for want of fds (EMFILE,
/// ENFILE) or memory, for the workers' listeners and the master's control socket alike.
///
/// While connections wait, the listening socket stays readable and NIO accepts again at once:
/// a core spent and the error logged about 25 000 times a second (measured, one worker).
/// NIO's `AcceptBackoffHandler` does not help: it delays the next `read()`, but a server
/// channel whose first accept of a wake-up failed keeps its read pending and stays registered
/// for readability, so no `read()` comes to delay. Turning `autoRead` off unregisters it;
/// after `pause` it is turned on again, if `mayResume` (a draining server stays off). The
/// connections wait in the kernel's queue meanwhile, and the error is logged at most every
/// 10 s (`LogThrottle`).
///
/// With a `reserve` (the master's control socket), EMFILE or ENFILE first gives up the
/// reserved fd and lets the server channel accept again at once: one connection gets in. The
/// owner takes the reserve back when that connection closes; the next failure with no reserve
/// held pauses as above.
public final class AcceptPauseHandler: ChannelInboundHandler {
    public typealias InboundIn = Any
    public typealias InboundOut = Any

    /// nginx pauses its accepts for 500 ms (`accept_mutex_delay`) in the same case; 100 ms
    /// costs ten failed accept(2) a second and lets a waiting connection in within 100 ms of an
    /// fd coming free.
    public static let pause: TimeAmount = .milliseconds(100)

    private let what: String
    private let logger: Logger
    private let mayResume: @Sendable () -> Bool
    private let reserve: ReservedDescriptor?
    private var throttle = LogThrottle()
    private var reserveJustReleased = false

    /// `what` starts each message: `accept on listener web failed`.
    public init(
        _ what: String, logger: Logger, reserve: ReservedDescriptor? = nil,
        mayResume: @escaping @Sendable () -> Bool = { true }
    ) {
        self.what = what
        self.logger = logger
        self.reserve = reserve
        self.mayResume = mayResume
    }

    /// After each batch of accepts but the one that gave the reserve up (its fd is for the next
    /// batch's accept): the reserve back as soon as an fd is free, also when the connection it
    /// let in never became a child channel, or another thread took the fd.
    public func channelReadComplete(context: ChannelHandlerContext) {
        if reserveJustReleased {
            reserveJustReleased = false
        } else {
            reserve?.acquire()
        }
        context.fireChannelReadComplete()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let code = (error as? IOError)?.errnoCode, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(code) else {
            context.fireErrorCaught(error)
            return
        }
        // The server channel keeps its read pending after a failed accept: with the reserve's fd
        // free, the next accept, on the loop's next turn, takes it.
        let usesReserve = [EMFILE, ENFILE].contains(code) && self.reserve?.release() == true
        if let quiet = self.throttle.shouldReport() {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            let since = quiet > 0 ? " (\(quiet) more since the last message)" : ""
            let then =
                usesReserve
                ? "one connection is let in on the fd kept in reserve, the others wait in the listen queue"
                : "accepting again every \(Self.pause.nanoseconds / 1_000_000) ms, new connections wait in the listen queue"
            self.logger.error(
                "\(self.what): \(String(cString: strerror(code)))\(since); fd limit \(limit.rlim_cur); \(then)")
        }
        if usesReserve {
            reserveJustReleased = true
            return
        }
        let channel = context.channel
        try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        let mayResume = self.mayResume
        let reserve = self.reserve
        context.eventLoop.scheduleTask(in: Self.pause) {
            guard channel.isActive, mayResume() else { return }
            reserve?.acquire()
            channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
    }
}

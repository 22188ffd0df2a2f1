/// Why `GatewayServer.start` failed.
public enum GatewayServerError: Error, Sendable, CustomStringConvertible {
    /// A route of the configuration cannot be served (e.g. a header with a line break).
    case invalidRoute(route: String, reason: String)
    /// The listener could not be served: not a listening TCP socket, or NIO refused it.
    case listenerFailed(listener: String, fd: CInt, reason: String)
    /// An upstream cannot be served (its TLS context cannot be built).
    case upstreamFailed(upstream: String, reason: String)
    /// `start` was called twice, or after `drain`/`shutdownNow`.
    case alreadyStarted
    /// `drain` or `shutdownNow` was called while `start` was still running.
    case stoppedWhileStarting

    public var description: String {
        switch self {
        case .invalidRoute(let route, let reason):
            return "route \"\(route)\": \(reason)"
        case .listenerFailed(let listener, let fd, let reason):
            return "listener \"\(listener)\" (fd \(fd)): \(reason)"
        case .upstreamFailed(let upstream, let reason):
            return "upstream \"\(upstream)\": \(reason)"
        case .alreadyStarted:
            return "the gateway server was already started or stopped"
        case .stoppedWhileStarting:
            return "the gateway server was stopped while starting"
        }
    }
}

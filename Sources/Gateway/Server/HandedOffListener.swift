/// A listening socket the master handed to this worker.
public struct HandedOffListener: Sendable {
    /// The listener name from the configuration; routes with `listener:` match on it.
    public var name: String
    /// A listening TCP socket, already bound and listening, CLOEXEC. `GatewayServer.start`
    /// takes ownership: the fd is closed when the server stops (or when `start` fails).
    public var fd: CInt
    /// The configured listen(2) backlog, restored after NIO's own `listen(fd, 128)`.
    public var backlog: Int32

    public init(name: String, fd: CInt, backlog: Int32) {
        self.name = name
        self.fd = fd
        self.backlog = backlog
    }
}

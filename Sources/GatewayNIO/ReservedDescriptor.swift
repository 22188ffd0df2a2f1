import GatewayCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One fd held open on /dev/null, given up when accept(2) fails for want of fds so that one
/// connection can still get in, and taken back when it is closed: libev's and libuv's answer to
/// EMFILE. The master keeps one for its control socket, so `gatewayctl status` and `stop`
/// answer a master that has run out of fds instead of waiting in the listen queue.
///
/// Not for the workers' listeners: there a connection let in could only be answered with an
/// error, while one left in the queue is served as soon as an fd comes free.
public final class ReservedDescriptor: Sendable {
    private let descriptor = Mutex<CInt>(-1)

    public init() {
        acquire()
    }

    deinit {
        descriptor.withLock { if $0 >= 0 { closeDescriptor($0) } }
    }

    /// Opens the reserve again if it was given up; does nothing while no fd is free (the
    /// next closed connection, or the next accept pause, tries again).
    public func acquire() {
        descriptor.withLock { fd in
            guard fd < 0 else { return }
            fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        }
    }

    /// Closes the reserve; `false` if it was not held (given up already and not taken back).
    public func release() -> Bool {
        descriptor.withLock { fd in
            guard fd >= 0 else { return false }
            closeDescriptor(fd)
            fd = -1
            return true
        }
    }
}

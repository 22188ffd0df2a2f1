import SystemPackage

/// A failed system call: what was called, on what, and why.
///
/// `description` reads `bind 127.0.0.1:8080: Address already in use`.
public struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call, as in its man page: `bind`, `sendmsg`, `posix_spawn`.
    public var call: String
    /// What it was called on (an address, a path, `fd 7`), when that helps the reader.
    public var subject: String?
    public var errno: Errno

    public init(_ call: String, on subject: String? = nil, errno: Errno) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    public var description: String {
        if let subject {
            return "\(call) \(subject): \(errno.description)"
        }
        return "\(call): \(errno.description)"
    }
}

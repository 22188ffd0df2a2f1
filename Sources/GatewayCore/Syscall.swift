import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Every system call goes through here: EINTR is retried, any other failure becomes a
/// `SystemCallError` that names the call. EBADF is a bug in fd ownership, never a runtime
/// condition, so it traps instead of being thrown.
@inlinable
@discardableResult
public func syscall<T: FixedWidthInteger>(
    _ name: String,
    on subject: @autoclosure () -> String? = nil,
    _ body: () -> T
) throws(SystemCallError) -> T {
    while true {
        let result = body()
        if result != -1 {
            return result
        }
        let code = Glibc.errno
        if code == EINTR {
            continue
        }
        if code == EBADF {
            preconditionFailure("\(name) \(subject() ?? ""): EBADF: an fd was used after it was closed")
        }
        throw SystemCallError(name, on: subject(), errno: Errno(rawValue: code))
    }
}

/// For calls that return an errno value instead of setting errno (posix_spawn, pthread_*).
@inlinable
public func syscallReturningErrno(
    _ name: String,
    on subject: @autoclosure () -> String? = nil,
    _ body: () -> CInt
) throws(SystemCallError) {
    while true {
        let code = body()
        if code == 0 { return }
        if code == EINTR { continue }
        throw SystemCallError(name, on: subject(), errno: Errno(rawValue: code))
    }
}

/// close(2) without retry: on Linux the fd is gone even when close reports EINTR, and
/// retrying could close an fd another thread just opened.
public func closeDescriptor(_ fd: CInt) {
    let rc = Glibc.close(fd)
    if rc == -1 && Glibc.errno == EBADF {
        preconditionFailure("close fd \(fd): EBADF: an fd was closed twice")
    }
}

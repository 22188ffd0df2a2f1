#if canImport(Glibc)
    import Glibc
#endif

/// The access log's file, opened by the master once per generation and handed to each of its
/// workers (the handoff's `access_log` frame), which write to their copy of the fd and never
/// open the path.
///
/// The master opens it, not the workers: a worker opened it as root before dropping to its
/// account, so a link planted in a log directory that account can write turned the next
/// reload into a write as root wherever the link pointed (nginx's CVE-2016-1247). `O_NOFOLLOW`
/// refuses a link as the file itself, dangling or not; the directories above it are the
/// operator's to keep unwritable by others. Owned by its generation: closed when the
/// generation is gone; each handoff sends a copy.
public final class AccessLogFile: Sendable {
    public let path: String
    public let descriptor: CInt

    /// Opens (creating it 0640 if needed) for appending. Throws a `SystemCallError` naming the
    /// path, and saying so when it is a link or a FIFO with no reader.
    public init(path: String) throws(SystemCallError) {
        // O_NONBLOCK for the open only: a FIFO with no reader would block it (and the reload)
        // until ready_timeout; non-blocking, it fails at once with ENXIO. Writes stay
        // blocking, on each worker's flush thread (the flag belongs to the open file, which
        // the workers share).
        let fd: CInt
        do throws(SystemCallError) {
            fd = try syscall("open", on: path) {
                open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW, 0o640)
            }
        } catch {
            throw Self.explained(error, path: path)
        }
        do throws(SystemCallError) {
            let flags = try syscall("fcntl F_GETFL", on: path) { fcntl(fd, F_GETFL) }
            _ = try syscall("fcntl F_SETFL", on: path) { fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        self.path = path
        self.descriptor = fd
    }

    deinit { closeDescriptor(descriptor) }

    /// Whether an `access_log.path` names a file: `stdout` and `stderr` are the process's own
    /// streams, which every worker has.
    public static func isFile(_ path: String) -> Bool {
        path != "stdout" && path != "stderr"
    }

    /// ELOOP and ENXIO, said as what they mean here: open(2)'s own text for them ("Too many
    /// levels of symbolic links", "No such device or address") names neither cause.
    private static func explained(_ error: SystemCallError, path: String) -> SystemCallError {
        var info = stat()
        guard lstat(path, &info) == 0 else { return error }
        switch (error.errno.rawValue, info.st_mode & S_IFMT) {
        case (ELOOP, S_IFLNK):
            return SystemCallError("open", on: "\(path) (a symbolic link: refused)", errno: error.errno)
        case (ENXIO, S_IFIFO):
            return SystemCallError("open", on: "\(path) (a FIFO with no reader)", errno: error.errno)
        default:
            // ENXIO also means a Unix socket or a device with nothing behind it.
            return error
        }
    }
}

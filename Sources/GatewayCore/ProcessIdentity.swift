#if canImport(Glibc)
    import Glibc
#endif

/// One process incarnation: its pid and its start time (field 22 of /proc/PID/stat, clock
/// ticks since boot). A pid alone is not an identity: the kernel hands a freed pid to the
/// next process, and a gauge slot of a dead worker must not come back to life in a stranger.
public struct ProcessIdentity: Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// This process.
    public static let current: ProcessIdentity = {
        let pid = getpid()
        return ProcessIdentity(pid: pid, startTime: statusOf(pid)?.startTime ?? 0)
    }()

    /// The process with this pid now, if any runs (zombies do not).
    public static func running(pid: Int32) -> ProcessIdentity? {
        guard let status = statusOf(pid), status.state != "Z", status.state != "X" else { return nil }
        return ProcessIdentity(pid: pid, startTime: status.startTime)
    }

    /// Whether this incarnation still runs: its pid exists, is not a zombie, and started when
    /// this one did. Errs towards "alive" (a dead process's gauge counted a little longer)
    /// and never the other way: a live worker whose gauge slot were freed would go on writing
    /// into a slot that another series may take. So where /proc tells nothing, kill(pid, 0)
    /// decides, and a start time of 0 (unknown) matches any.
    public var isAlive: Bool {
        guard let status = Self.statusOf(pid) else {
            return kill(pid, 0) == 0 || errno == EPERM
        }
        if status.state == "Z" || status.state == "X" { return false }
        return startTime == 0 || status.startTime == startTime
    }

    public var description: String { "pid \(pid) (start \(startTime))" }

    /// State and start time from /proc/PID/stat. The command name (field 2) is in parentheses
    /// and may hold spaces or parentheses itself: fields are counted after its last ')'.
    private static func statusOf(_ pid: Int32) -> (state: Character, startTime: UInt64)? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { closeDescriptor(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0, let close = buffer[..<count].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // After ") ": field 3 (state) is the first, field 22 (starttime) the 20th.
        let fields = buffer[(close + 1)..<count].split(separator: UInt8(ascii: " "))
        guard fields.count >= 20, let state = fields[0].first,
            let startTime = UInt64(String(decoding: fields[19], as: UTF8.self))
        else { return nil }
        return (Character(UnicodeScalar(state)), startTime)
    }
}

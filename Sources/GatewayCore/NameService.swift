import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Users and groups through NSS, for the config check (does `user:` exist?) and for the worker
/// (which uid and gid to become). One lookup for both, so the two never disagree on what
/// "not found" is.
///
/// Only the reentrant calls (`getpwnam_r` and friends): config parses run on threads of their
/// own, and a worker has its event loop running when it resolves its account.
public enum NameService {
    public struct User: Sendable, Equatable {
        public var uid: uid_t
        public var gid: gid_t
        public var name: String

        public init(uid: uid_t, gid: gid_t, name: String) {
            self.uid = uid
            self.gid = gid
            self.name = name
        }
    }

    /// `text` is a user name, or a uid in decimal (as systemd's `User=` reads it). `nil`: no
    /// such user.
    public static func user(_ text: String) throws(SystemCallError) -> User? {
        switch DecimalID(text) {
        case .invalid:
            return nil
        case .id(let uid):
            return try lookUp("getpwuid_r", text, empty: passwd()) {
                getpwuid_r(uid, $0, $1, $2, $3)
            } read: {
                User(uid: $0.pw_uid, gid: $0.pw_gid, name: String(cString: $0.pw_name))
            }
        case .name:
            return try lookUp("getpwnam_r", text, empty: passwd()) {
                getpwnam_r(text, $0, $1, $2, $3)
            } read: {
                User(uid: $0.pw_uid, gid: $0.pw_gid, name: String(cString: $0.pw_name))
            }
        }
    }

    /// `text` is a group name, or a gid in decimal. `nil`: no such group.
    public static func group(_ text: String) throws(SystemCallError) -> gid_t? {
        switch DecimalID(text) {
        case .invalid:
            return nil
        case .id(let gid):
            return try lookUp("getgrgid_r", text, empty: Glibc.group()) {
                getgrgid_r(gid, $0, $1, $2, $3)
            } read: {
                $0.gr_gid
            }
        case .name:
            return try lookUp("getgrnam_r", text, empty: Glibc.group()) {
                getgrnam_r(text, $0, $1, $2, $3)
            } read: {
                $0.gr_gid
            }
        }
    }

    /// A uid or gid written in decimal: digits only (`+5` is a name, as for systemd).
    public enum DecimalID: Equatable {
        case id(UInt32)
        /// Digits, but past `UInt32` or the reserved -1: nobody has it.
        case invalid
        case name

        public init(_ text: String) {
            guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                self = .name
                return
            }
            guard let id = UInt32(text), id != UInt32.max else {
                self = .invalid
                return
            }
            self = .id(id)
        }
    }

    /// Runs one `get*_r` call with a buffer grown on ERANGE (up to 1 MiB: a group with
    /// thousands of members), and reads the record before the buffer it points into is freed.
    private static func lookUp<Record, Value>(
        _ call: String, _ subject: String, empty: Record,
        _ body: (
            UnsafeMutablePointer<Record>, UnsafeMutablePointer<CChar>, Int,
            UnsafeMutablePointer<UnsafeMutablePointer<Record>?>
        ) -> CInt,
        read: (Record) -> Value
    ) throws(SystemCallError) -> Value? {
        var size = 16 * 1024
        while true {
            var record = empty
            var result: UnsafeMutablePointer<Record>?
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            let code = body(&record, buffer, size, &result)
            switch code {
            case 0:
                // `result` points at `record` (or is nil); `record` itself is the one to read,
                // while `buffer`, which its strings point into, is still allocated.
                return result == nil ? nil : read(record)
            case ERANGE where size < 1 << 20:
                size *= 2
            case ENOENT, ESRCH, EBADF, EPERM:
                // getpwnam_r(3): what some NSS modules return for "not found".
                return nil
            default:
                throw SystemCallError(call, on: subject, errno: Errno(rawValue: code))
            }
        }
    }
}

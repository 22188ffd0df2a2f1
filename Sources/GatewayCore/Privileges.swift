import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// The account a worker runs as once it holds its sockets (`user:` and `group:` in the config).
///
/// The master binds (ports below 1024 included) and stays root; each worker drops to this
/// account after its handoff and before it serves anything, as nginx's workers do.
public struct WorkerAccount: Sendable, Equatable, CustomStringConvertible {
    public var uid: uid_t
    public var gid: gid_t
    /// Supplementary groups: the user's groups from NSS (as `initgroups` would set them) with
    /// `gid` first; just `gid` for a uid that has no passwd entry.
    public var groups: [gid_t]
    /// As written in the config, for messages: `nobody`, `65534`.
    public var userName: String

    /// `65534 (nobody)`: what error messages name.
    public var description: String {
        userName == "\(uid)" ? "\(uid)" : "\(uid) (\(userName))"
    }

    /// Resolves `user` (a name or a numeric uid) and `group` (a name, a numeric gid, or `nil`
    /// for the user's primary group) through NSS, with the reentrant calls: the worker has
    /// threads running already.
    public static func resolve(user: String, group: String?) throws(PrivilegeError) -> WorkerAccount {
        let entry: PasswdEntry?
        if let uid = UInt32(user) {
            entry = try lookUpUser { getpwuid_r(uid_t(uid), &$0, $1, $2, &$3) }
            if entry == nil && group == nil {
                throw PrivilegeError("user \(user): no such uid, and no group: to run in")
            }
        } else {
            entry = try lookUpUser { getpwnam_r(user, &$0, $1, $2, &$3) }
            guard entry != nil else { throw PrivilegeError("user \(user): no such user") }
        }
        let uid = entry?.uid ?? uid_t(UInt32(user)!)
        var gid = entry?.gid ?? 0
        if let group {
            if let number = UInt32(group) {
                gid = gid_t(number)
            } else {
                guard let found = try lookUpGroup(group) else { throw PrivilegeError("group \(group): no such group") }
                gid = found
            }
        }
        var groups: [gid_t] = [gid]
        if let entry {
            groups = supplementaryGroups(of: entry.name, primary: gid)
        }
        let name = entry.map { UInt32(user) == nil ? user : $0.name } ?? user
        return WorkerAccount(uid: uid, gid: gid, groups: groups, userName: name)
    }

    /// setgroups, setgid, setuid, in that order (once setuid has run, the other two are no
    /// longer allowed), then checks that the change holds and cannot be undone.
    ///
    /// Glibc's wrappers, never the raw system calls: Linux credentials are per thread, and
    /// glibc applies each change to every thread of the process (the event loop and Dispatch
    /// threads already run).
    public func apply() throws(PrivilegeError) {
        do {
            try syscall("setgroups", on: description) {
                groups.withUnsafeBufferPointer { setgroups($0.count, $0.baseAddress) }
            }
            try syscall("setgid", on: "\(gid) for \(description)") { setgid(gid) }
            try syscall("setuid", on: description) { setuid(uid) }
        } catch {
            throw PrivilegeError(error.description)
        }
        guard getuid() == uid, geteuid() == uid, getgid() == gid, getegid() == gid else {
            throw PrivilegeError(
                "setuid \(description): still uid \(getuid())/\(geteuid()), gid \(getgid())/\(getegid())")
        }
        if uid != 0 && setuid(0) == 0 {
            throw PrivilegeError("setuid \(description): setuid(0) succeeded afterwards; root can be regained")
        }
    }

    struct PasswdEntry {
        var uid: uid_t
        var gid: gid_t
        var name: String
    }

    private static func lookUpUser(
        _ call: (inout passwd, UnsafeMutablePointer<CChar>, Int, inout UnsafeMutablePointer<passwd>?) -> CInt
    ) throws(PrivilegeError) -> PasswdEntry? {
        var size = 16 * 1024
        while true {
            var record = passwd()
            var result: UnsafeMutablePointer<passwd>?
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            let rc = call(&record, buffer, size, &result)
            if rc == ERANGE && size < 1 << 20 {
                size *= 2
                continue
            }
            if rc != 0 { throw PrivilegeError("getpwnam_r: \(Errno(rawValue: rc))") }
            guard let found = result?.pointee else { return nil }
            return PasswdEntry(uid: found.pw_uid, gid: found.pw_gid, name: String(cString: found.pw_name))
        }
    }

    private static func lookUpGroup(_ name: String) throws(PrivilegeError) -> gid_t? {
        var size = 16 * 1024
        while true {
            var record = group()
            var result: UnsafeMutablePointer<group>?
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            let rc = getgrnam_r(name, &record, buffer, size, &result)
            if rc == ERANGE && size < 1 << 20 {
                size *= 2
                continue
            }
            if rc != 0 { throw PrivilegeError("getgrnam_r \(name): \(Errno(rawValue: rc))") }
            return result?.pointee.gr_gid
        }
    }

    /// getgrouplist(3): `primary` and every group that lists `user` as a member.
    private static func supplementaryGroups(of user: String, primary: gid_t) -> [gid_t] {
        var count: CInt = 32
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            var found = count
            if getgrouplist(user, primary, &groups, &found) >= 0 {
                return Array(groups.prefix(Int(found)))
            }
            guard found > count, found < 65536 else { return [primary] }
            count = found
        }
    }
}

/// Why a worker cannot run as its configured account; `description` is what `failed` reports.
public struct PrivilegeError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

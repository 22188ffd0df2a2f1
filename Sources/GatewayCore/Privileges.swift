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
        let entry: NameService.User?
        do { entry = try NameService.user(user) } catch { throw PrivilegeError(error.description) }
        let uid: uid_t
        if let entry {
            uid = entry.uid
        } else if case .id(let number) = NameService.DecimalID(user) {
            // A uid with no passwd entry (a container's), as systemd's User= allows.
            guard group != nil else { throw PrivilegeError("user \(user): no such uid, and no group: to run in") }
            uid = number
        } else {
            throw PrivilegeError("user \(user): no such user")
        }
        var gid = entry?.gid ?? 0
        if let group {
            if case .id(let number) = NameService.DecimalID(group) {
                gid = number
            } else {
                let found: gid_t?
                do { found = try NameService.group(group) } catch { throw PrivilegeError(error.description) }
                guard let found else { throw PrivilegeError("group \(group): no such group") }
                gid = found
            }
        }
        var groups: [gid_t] = [gid]
        if let entry {
            groups = supplementaryGroups(of: entry.name, primary: gid)
        }
        let name = entry.map { NameService.DecimalID(user) == .name ? user : $0.name } ?? user
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

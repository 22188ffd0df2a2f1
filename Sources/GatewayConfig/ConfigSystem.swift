import GatewayCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What validation asks of the system beyond the configuration text: other files (keys files),
/// whether a directory exists, users and groups, host names. One struct of functions, so tests
/// swap in fakes (no DNS, no /etc/passwd) and the validator never calls libc itself.
struct ConfigSystem: Sendable {
    /// Why a call failed, as `strerror` or `gai_strerror` words it: `No such file or directory`.
    struct Failure: Error, Equatable, Sendable {
        var reason: String
    }

    enum FileKind: Equatable, Sendable {
        case directory
        case other
    }

    /// At most `limit + 1` bytes, so a caller can tell "too large" without reading it all.
    var readFile: @Sendable (_ path: String, _ limit: Int) -> Result<[UInt8], Failure>
    /// `nil`: nothing at `path`.
    var fileKind: @Sendable (_ path: String) -> Result<FileKind?, Failure>
    /// `nameOrID` is a user name, or a uid in decimal.
    var userExists: @Sendable (_ nameOrID: String) -> Result<Bool, Failure>
    /// `nameOrID` is a group name, or a gid in decimal.
    var groupExists: @Sendable (_ nameOrID: String) -> Result<Bool, Failure>
    /// The first address `getaddrinfo` gives for `host` (any family), port 0.
    var resolveHost: @Sendable (_ host: String) -> Result<ListenerAddress, Failure>
    /// For relative configuration paths; `nil` if it cannot be read.
    var currentDirectory: @Sendable () -> String?
    /// Seconds since the epoch: whether a certificate has expired.
    var now: @Sendable () -> Int64 = { Int64(time(nil)) }

    static let live = ConfigSystem(
        readFile: { path, limit in
            do throws(SystemCallError) {
                return .success(try readAtMost(limit + 1, bytesOf: path))
            } catch {
                return .failure(Failure(reason: error.errno.description))
            }
        },
        fileKind: { path in
            var info = stat()
            do throws(SystemCallError) {
                try syscall("stat", on: path) { stat(path, &info) }
            } catch {
                if error.errno.rawValue == ENOENT { return .success(nil) }
                return .failure(Failure(reason: error.errno.description))
            }
            return .success(info.st_mode & S_IFMT == S_IFDIR ? .directory : .other)
        },
        userExists: { text in exists { () throws(SystemCallError) in try NameService.user(text) } },
        groupExists: { text in exists { () throws(SystemCallError) in try NameService.group(text) } },
        resolveHost: resolve,
        currentDirectory: {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&buffer, buffer.count) != nil else { return nil }
            return string(buffer)
        })

    private static func exists<Value>(_ lookUp: () throws(SystemCallError) -> Value?) -> Result<Bool, Failure> {
        do throws(SystemCallError) {
            return .success(try lookUp() != nil)
        } catch {
            return .failure(Failure(reason: error.errno.description))
        }
    }

    /// A NUL-terminated C string in a buffer.
    private static func string(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func resolve(_ host: String) -> Result<ListenerAddress, Failure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let code = getaddrinfo(host, nil, &hints, &list)
        guard code == 0, let list else {
            let reason =
                code == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(code))
            return .failure(Failure(reason: reason))
        }
        defer { freeaddrinfo(list) }
        // The first entry: getaddrinfo already sorted them (RFC 6724, /etc/gai.conf).
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let info = list.pointee
        switch info.ai_family {
        case AF_INET:
            var address = info.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            guard inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count)) != nil else { break }
            return .success(ListenerAddress(family: .ipv4, host: string(buffer), port: 0))
        case AF_INET6:
            var address = info.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            guard inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count)) != nil else { break }
            return .success(ListenerAddress(family: .ipv6, host: string(buffer), port: 0))
        default:
            break
        }
        return .failure(Failure(reason: "no IPv4 or IPv6 address"))
    }
}

/// Reads at most `limit` bytes of `path`: a huge file (or /dev/zero) costs no more than that.
func readAtMost(_ limit: Int, bytesOf path: String) throws(SystemCallError) -> [UInt8] {
    let fd = try syscall("open", on: path) { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
    defer { closeDescriptor(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while bytes.count < limit {
        let wanted = min(chunk.count, limit - bytes.count)
        let count = try syscall("read", on: path) {
            chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, wanted) }
        }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[..<count])
    }
    return bytes
}

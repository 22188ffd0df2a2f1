import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Opening, inspecting and re-arming TCP listening sockets. Raw fds: the `ListenerTable`
/// decides who owns them.
public enum ListeningSocket {
    /// socket + SO_REUSEADDR + bind + listen, CLOEXEC from birth. No SO_REUSEPORT: one
    /// socket (one accept queue) shared by every generation is what makes handoff lossless.
    public static func bind(_ address: ListenerAddress, backlog: Int32) throws(SystemCallError) -> CInt {
        let domain = address.family == .ipv4 ? AF_INET : AF_INET6
        let fd = try syscall("socket", on: "\(address)") {
            Glibc.socket(domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do throws(SystemCallError) {
            var one: CInt = 1
            try syscall("setsockopt SO_REUSEADDR", on: "\(address)") {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
            }
            if address.family == .ipv6 {
                // [::]:80 means IPv6 only, as in nginx; list 0.0.0.0:80 too for IPv4.
                try syscall("setsockopt IPV6_V6ONLY", on: "\(address)") {
                    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<CInt>.size))
                }
            }
            _ = try withSockaddr(address) { (sa, len) throws(SystemCallError) in
                try syscall("bind", on: "\(address)") { Glibc.bind(fd, sa, len) }
            }
            try syscall("listen", on: "\(address)") { Glibc.listen(fd, backlog) }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        return fd
    }

    /// listen(2) again on an already listening socket: changes only its backlog. Needed
    /// because NIO's `withBoundSocket` calls `listen(fd, 128)` itself.
    public static func restoreBacklog(fd: CInt, backlog: Int32) throws(SystemCallError) {
        try syscall("listen", on: "fd \(fd)") { Glibc.listen(fd, backlog) }
    }

    /// The address a socket is bound to (getsockname), e.g. to learn the port after binding port 0.
    public static func localAddress(fd: CInt) throws(SystemCallError) -> ListenerAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (ptr) throws(SystemCallError) in
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemCallError) in
                try syscall("getsockname", on: "fd \(fd)") { getsockname(fd, sa, &len) }
            }
        }
        return try decode(storage, what: "getsockname fd \(fd)")
    }

    static func decode(_ storage: sockaddr_storage, what: String) throws(SystemCallError) -> ListenerAddress {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var addr = sin.pointee.sin_addr
                    var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                    inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
                    return ListenerAddress(
                        family: .ipv4, host: buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) },
                        port: UInt16(bigEndian: sin.pointee.sin_port))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var addr = sin6.pointee.sin6_addr
                    var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
                    return ListenerAddress(
                        family: .ipv6, host: buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) },
                        port: UInt16(bigEndian: sin6.pointee.sin6_port))
                }
            }
        default:
            throw SystemCallError(what, errno: .addressFamilyNotSupported)
        }
    }

    /// `address` as the socket address bind(2) and connect(2) take; nil when its host is not
    /// a literal of its family. The listeners bind with it, the worker's upstream pools
    /// connect with it.
    public static func socketAddress(_ address: ListenerAddress) -> (storage: sockaddr_storage, length: socklen_t)? {
        var storage = sockaddr_storage()
        let length: socklen_t
        switch address.family {
        case .ipv4:
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = address.port.bigEndian
            guard inet_pton(AF_INET, address.host, &sin.sin_addr) == 1 else { return nil }
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: sin) { raw.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        case .ipv6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = address.port.bigEndian
            guard inet_pton(AF_INET6, address.host, &sin6.sin6_addr) == 1 else { return nil }
            withUnsafeMutableBytes(of: &storage) { raw in withUnsafeBytes(of: sin6) { raw.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
        return (storage, length)
    }

    static func withSockaddr<R>(
        _ address: ListenerAddress,
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws(SystemCallError) -> R
    ) throws(SystemCallError) -> R {
        // A ListenerAddress is parsed from a literal of its family: the conversion holds.
        var (storage, length) = socketAddress(address) ?? (sockaddr_storage(), 0)
        return try withUnsafePointer(to: &storage) { (ptr) throws(SystemCallError) in
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemCallError) in
                try body(sa, length)
            }
        }
    }
}

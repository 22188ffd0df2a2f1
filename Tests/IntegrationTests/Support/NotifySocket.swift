import CGatewayShim
import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// A test-owned NOTIFY_SOCKET: a Unix datagram socket that records every sd_notify message
/// gatewayd sends, with the fds that come with it (the fd store).
final class NotifySocket: @unchecked Sendable {
    struct Message {
        var fields: [String: String]
        var fds: [CInt]
        var text: String
    }

    let path: String
    private let fd: CInt
    private let messages = Mutex2<[Message]>([])
    private let done = Mutex2<Bool>(false)

    init(directory: String) throws {
        path = directory + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else { throw HarnessError("bind \(path): \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            var fds = [CInt](repeating: -1, count: 16)
            while !done.get() {
                var nfds: CInt = 0
                var truncated: CInt = 0
                let n = buffer.withUnsafeMutableBytes {
                    gw_recvmsg_fds(fd, $0.baseAddress, $0.count, &fds, 16, &nfds, &truncated)
                }
                guard n > 0 else { continue }
                let text = String(decoding: buffer.prefix(n), as: UTF8.self)
                var fields: [String: String] = [:]
                for line in text.split(separator: "\n") {
                    if let eq = line.firstIndex(of: "=") {
                        fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
                    }
                }
                let message = Message(fields: fields, fds: Array(fds.prefix(Int(nfds))), text: text)
                messages.update { $0.append(message) }
            }
        }
    }

    deinit {
        done.set(true)
        usleep(150_000)
        close(fd)
        for message in messages.get() { for fd in message.fds { close(fd) } }
    }

    var all: [Message] { messages.get() }

    /// The messages from the `from`-th on that have `key`.
    func with(_ key: String, from: Int = 0) -> [Message] {
        Array(all.dropFirst(from)).filter { $0.fields[key] != nil }
    }

    func waitFor(_ key: String, value: String? = nil, from: Int = 0, timeout: Duration = .seconds(20)) throws -> Message
    {
        var found: Message?
        try waitUntil("sd_notify \(key)\(value.map { "=\($0)" } ?? "")", timeout: timeout) {
            found = with(key, from: from).first { value == nil || $0.fields[key] == value }
            return found != nil
        }
        return found!
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock of MONOTONIC_USEC.
func monotonicMicroseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it in
/// between, which on a test machine does not happen in practice).
func freePort() throws -> UInt16 {
    let fd = try ListeningSocket.bind(try ListenerAddress(parsing: "127.0.0.1:0"), backlog: 1)
    defer { closeDescriptor(fd) }
    return try ListeningSocket.localAddress(fd: fd).port
}

import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// A raw AF_UNIX stream client of the control socket, for sending what gatewayctl never would:
/// garbage, huge lines, nothing at all. Reads report whether the master answered, closed or
/// reset, so tests see exactly what a hostile client sees.
final class RawControlSocket {
    let fd: CInt
    private(set) var received: [UInt8] = []

    init(path: String, timeout: Duration = .seconds(30)) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        let (seconds, attoseconds) = timeout.components
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw HarnessError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let code = errno
            close(fd)
            throw HarnessError("connect \(path): \(String(cString: strerror(code)))")
        }
    }

    deinit { close(fd) }

    /// Sends as much of `bytes` as the master takes; returns how many bytes went out. A master
    /// that closes part-way (EPIPE, ECONNRESET) ends the send early rather than throwing.
    @discardableResult
    func send(_ bytes: [UInt8]) throws -> Int { try sendAll(fd, bytes) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads until the master closes (or resets, or the timeout passes); what it sent is in
    /// `received`, and `text` decodes it.
    @discardableResult
    func readUntilClosed() -> ReadOutcome {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received.append(contentsOf: chunk.prefix(n))
                continue
            }
            if n == 0 { return .eof }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return .timedOut }
            return .reset
        }
    }

    var text: String { String(decoding: received, as: UTF8.self) }

    /// The master's answer, decoded; nil if it sent no whole JSON line.
    var response: ControlResponse? {
        guard let newline = received.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        return try? JSONDecoder().decode(ControlResponse.self, from: Data(received[..<newline]))
    }
}

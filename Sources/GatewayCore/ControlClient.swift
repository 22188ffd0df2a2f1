import Foundation
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking client of the master's control socket (gatewayctl, tests).
public struct ControlClient: Sendable {
    public var socketPath: String
    /// How long to wait for the answer; `nil` waits as long as the master takes (a reload
    /// answers after ready_timeout at most, but may queue behind other reloads).
    public var timeout: Duration?

    public init(socketPath: String, timeout: Duration? = nil) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    public enum Failure: Error, Sendable, CustomStringConvertible {
        case connect(SystemCallError)
        case io(SystemCallError)
        case badResponse(String)

        public var description: String {
            switch self {
            case .connect(let error):
                if error.errno == .noSuchFileOrDirectory || error.errno == .connectionRefused {
                    return "\(error) (is gatewayd running?)"
                }
                return error.description
            case .io(let error): return error.description
            case .badResponse(let text): return "unexpected answer from gatewayd: \(text)"
            }
        }
    }

    /// Sends one request and returns the response; stream lines, if any, are skipped.
    public func send(_ request: ControlRequest) throws(Failure) -> ControlResponse {
        var response: ControlResponse?
        try exchange(request) { line in
            if case .response(let answer) = line { response = answer }
            return response == nil
        }
        guard let response else { throw Failure.badResponse("connection closed without an answer") }
        return response
    }

    /// Sends one request and hands every line to `body` as it arrives, until the master closes
    /// the connection or `body` returns false (a follower that is done).
    public func exchange(_ request: ControlRequest, _ body: (ControlLine) -> Bool) throws(Failure) {
        let fd = try connect()
        defer { closeDescriptor(fd) }
        let line = request.encodedLine()
        do {
            var offset = 0
            var sendError: SystemCallError?
            while offset < line.count {
                let n = line.withUnsafeBytes {
                    Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
                }
                if n >= 0 {
                    offset += n
                    continue
                }
                let code = Errno(rawValue: errno)
                if code == .interrupted { continue }
                let error = SystemCallError("send", on: socketPath, errno: code)
                // The master may answer and close before reading the request (a refused peer):
                // its answer is still there to read.
                guard code == .brokenPipe || code == .connectionReset else { throw error }
                sendError = error
                break
            }
            var pending: [UInt8] = []
            var received = false
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            reading: while true {
                let n = try syscall("recv", on: socketPath) {
                    chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                }
                if n > 0 { received = true }
                pending.append(contentsOf: chunk.prefix(n))
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let text = pending[..<newline]
                    pending.removeSubrange(...newline)
                    guard body(try Self.decode(text)) else { break reading }
                }
                if n == 0 {
                    // A last line without its newline is still a line.
                    if !pending.isEmpty { _ = body(try Self.decode(pending[...])) }
                    break
                }
            }
            if !received, let sendError { throw sendError }
        } catch let error as SystemCallError {
            if error.errno == .resourceTemporarilyUnavailable {
                throw .io(
                    SystemCallError(
                        "recv", on: "\(socketPath) (no answer within \(timeout.map { "\($0)" } ?? "the timeout"))",
                        errno: error.errno))
            }
            throw .io(error)
        } catch let error as Failure {
            throw error
        } catch {
            throw .badResponse("\(error)")
        }
    }

    /// A response has `ok`; a stream line has not.
    private static func decode(_ text: ArraySlice<UInt8>) throws(Failure) -> ControlLine {
        struct Probe: Decodable { var ok: Bool? }
        let data = Data(text)
        if let probe = try? JSONDecoder().decode(Probe.self, from: data), probe.ok == nil,
            let line = try? JSONDecoder().decode(ControlStreamLine.self, from: data)
        {
            return .stream(line)
        }
        guard let decoded = try? JSONDecoder().decode(ControlResponse.self, from: data) else {
            let shown = String(decoding: text.prefix(200), as: UTF8.self)
            throw Failure.badResponse(shown.isEmpty ? "connection closed without an answer" : shown)
        }
        return .response(decoded)
    }

    private func connect() throws(Failure) -> CInt {
        let fd: CInt
        do {
            fd = try syscall("socket", on: socketPath) {
                socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            }
        } catch {
            throw .connect(error)
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            closeDescriptor(fd)
            throw .connect(SystemCallError("connect", on: socketPath, errno: .fileNameTooLong))
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        do {
            try syscall("connect", on: socketPath) {
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
        } catch {
            closeDescriptor(fd)
            throw .connect(error)
        }
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        return fd
    }
}

import Foundation
import GatewayConfig
import GatewayCore
import Logging
import Synchronization
import Testing

@testable import Gateway

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Errors

enum ClientError: Error, Equatable, CustomStringConvertible {
    /// The server closed (FIN) before a complete response.
    case eof(bytesBuffered: Int)
    /// ECONNRESET / EPIPE.
    case reset
    /// SO_RCVTIMEO expired.
    case timeout
    case malformed(String)
    case system(String, Int32)

    var description: String {
        switch self {
        case .eof(let n): return "EOF with \(n) bytes of a response"
        case .reset: return "connection reset"
        case .timeout: return "timeout"
        case .malformed(let s): return "malformed response: \(s)"
        case .system(let call, let code): return "\(call): \(String(cString: strerror(code)))"
        }
    }
}

// MARK: - A blocking HTTP/1.1 client on a raw socket

struct TestResponse {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: String

    func header(_ name: String) -> String? {
        self.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    var closesConnection: Bool {
        self.header("connection")?.lowercased() == "close"
    }
}

/// What a read found once the server was expected to close.
enum ReadEnd: Equatable {
    case eof
    case reset
    case timeout
    case data(Int)
}

/// One TCP connection to 127.0.0.1, blocking, with receive/send timeouts so tests never hang.
/// Unchecked Sendable: used by one thread at a time (handed to `onThread` for long waits).
final class RawClient: @unchecked Sendable {
    let fd: CInt
    private var buffer: [UInt8] = []
    private var closed = false

    init(port: UInt16, timeout: Double = 5) throws(ClientError) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        self.fd = fd
        self.setTimeout(timeout)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let code = errno
            Glibc.close(fd)
            self.closed = true
            throw .system("connect", code)
        }
    }

    deinit {
        self.close()
    }

    func setTimeout(_ seconds: Double) {
        var tv = timeval(
            tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(self.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) throws(ClientError) {
        try self.send(bytes: Array(text.utf8))
    }

    func send(bytes: [UInt8]) throws(ClientError) {
        var bytes = bytes
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                Glibc.send(self.fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == ECONNRESET || code == EPIPE { throw .reset }
                if code == EAGAIN || code == EWOULDBLOCK { throw .timeout }
                throw .system("send", code)
            }
            offset += n
        }
        bytes.removeAll()
    }

    /// Half-close: send FIN.
    func shutdownOutput() {
        Glibc.shutdown(self.fd, Int32(SHUT_WR))
    }

    /// recv into the buffer; returns the byte count (0 = EOF).
    private func fill() throws(ClientError) -> Int {
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.recv(self.fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                self.buffer.append(contentsOf: chunk[0..<n])
                return n
            }
            if n == 0 { return 0 }
            let code = errno
            if code == EINTR { continue }
            if code == ECONNRESET || code == EPIPE { throw .reset }
            if code == EAGAIN || code == EWOULDBLOCK { throw .timeout }
            throw .system("recv", code)
        }
    }

    /// Reads one response. `bodyless`: the request was HEAD (content-length but no body).
    func readResponse(bodyless: Bool = false) throws(ClientError) -> TestResponse {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while true {
            if let index = self.find(separator) {
                headEnd = index
                break
            }
            if try self.fill() == 0 {
                throw .eof(bytesBuffered: self.buffer.count)
            }
        }
        let headBytes = self.buffer[0..<headEnd!]
        guard let headText = String(bytes: headBytes, encoding: .utf8) else {
            throw .malformed("not UTF-8")
        }
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw .malformed(statusLine)
        }
        var headers: [(name: String, value: String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw .malformed(line) }
            headers.append(
                (
                    String(line[..<colon]),
                    line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                ))
        }
        var response = TestResponse(status: status, headers: headers, body: "")
        let bodyStart = headEnd! + 4
        var length = 0
        if !bodyless, !(100..<200).contains(status), status != 204, status != 304 {
            guard let declared = response.header("content-length").flatMap(Int.init) else {
                throw .malformed("no content-length")
            }
            length = declared
        }
        while self.buffer.count < bodyStart + length {
            if try self.fill() == 0 {
                throw .eof(bytesBuffered: self.buffer.count)
            }
        }
        response.body = String(decoding: self.buffer[bodyStart..<(bodyStart + length)], as: UTF8.self)
        self.buffer.removeFirst(bodyStart + length)
        return response
    }

    /// Everything until the server closes (a close-delimited or `Connection: close` exchange).
    func readUntilEOF() throws(ClientError) -> String {
        while try self.fill() > 0 {}
        defer { self.buffer.removeAll() }
        return String(decoding: self.buffer, as: UTF8.self)
    }

    /// Exactly `count` bytes (after what a `readResponse` left buffered).
    func read(count: Int) throws(ClientError) -> [UInt8] {
        while self.buffer.count < count {
            if try self.fill() == 0 {
                throw .eof(bytesBuffered: self.buffer.count)
            }
        }
        defer { self.buffer.removeFirst(count) }
        return Array(self.buffer[0..<count])
    }

    /// How many bytes arrive until the server closes (bodies too large to keep as text).
    func countUntilEOF() throws(ClientError) -> Int {
        var total = self.buffer.count
        self.buffer.removeAll()
        while case let n = try self.fill(), n > 0 {
            total += n
            self.buffer.removeAll(keepingCapacity: true)
        }
        return total
    }

    /// After the response that closed the connection: what comes next (EOF expected).
    func readEnd() -> ReadEnd {
        if !self.buffer.isEmpty {
            return .data(self.buffer.count)
        }
        do {
            let n = try self.fill()
            return n == 0 ? .eof : .data(n)
        } catch .reset {
            return .reset
        } catch .timeout {
            return .timeout
        } catch {
            return .reset
        }
    }

    func close() {
        if !self.closed {
            self.closed = true
            Glibc.close(self.fd)
        }
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard self.buffer.count >= pattern.count else { return nil }
        for i in 0...(self.buffer.count - pattern.count) where self.buffer[i] == pattern[0] {
            if Array(self.buffer[i..<(i + pattern.count)]) == pattern {
                return i
            }
        }
        return nil
    }
}

/// One GET on a fresh connection.
func fetch(port: UInt16, _ target: String, headers: [String] = []) throws -> TestResponse {
    try fetch(port: port, "GET", target, headers: headers)
}

/// One request on a fresh connection.
func fetch(
    port: UInt16, _ method: String, _ target: String, headers: [String] = [], body: String? = nil
) throws -> TestResponse {
    let client = try RawClient(port: port)
    defer { client.close() }
    var request = "\(method) \(target) HTTP/1.1\r\nHost: localhost\r\n"
    if headers.contains(where: { $0.lowercased().hasPrefix("host:") }) {
        request = "\(method) \(target) HTTP/1.1\r\n"
    }
    for header in headers {
        request += header + "\r\n"
    }
    if let body {
        request += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    } else {
        request += "\r\n"
    }
    try client.send(request)
    return try client.readResponse(bodyless: method == "HEAD")
}

// MARK: - Listening sockets and servers

/// A listening socket as the master would hold it, plus its port.
final class TestListener: Sendable {
    let name: String
    /// The master's copy; closed by `close()`.
    let masterFD: CInt
    let port: UInt16
    let backlog: Int32

    init(name: String = "public", backlog: Int32 = 128) throws {
        self.name = name
        self.backlog = backlog
        self.masterFD = try ListeningSocket.bind(
            ListenerAddress(parsing: "127.0.0.1:0"), backlog: backlog)
        self.port = try ListeningSocket.localAddress(fd: self.masterFD).port
    }

    var config: ListenerConfig {
        get throws {
            ListenerConfig(
                name: self.name, address: try ListenerAddress(parsing: "127.0.0.1:\(self.port)"),
                backlog: self.backlog)
        }
    }

    /// A fresh dup, as handed to one generation's worker (the server takes ownership).
    func handOff() -> HandedOffListener {
        let fd = fcntl(self.masterFD, F_DUPFD_CLOEXEC, 0)
        precondition(fd >= 0, "dup failed")
        return HandedOffListener(name: self.name, fd: fd, backlog: self.backlog)
    }

    func close() {
        Glibc.close(self.masterFD)
    }
}

final class CountRecorder: Sendable {
    let values = Mutex<[Int]>([])
    func record(_ value: Int) { self.values.withLock { $0.append(value) } }
    var last: Int? { self.values.withLock { $0.last } }
}

func testLogger() -> Logger {
    var logger = Logger(label: "gateway-test")
    logger.logLevel = .warning
    return logger
}

/// Starts a server (its own event loop group) on hand-offs of `listeners`; stops everything
/// afterwards, even when `body` throws.
func withServer<T>(
    configuration: GatewayConfiguration,
    listeners: [TestListener],
    threads: Int = 1,
    sharedState: SharedState? = nil,
    accessLog: AccessLog? = nil,
    _ body: (GatewayServer, CountRecorder) async throws -> T
) async throws -> T {
    let counts = CountRecorder()
    let server = try GatewayServer(
        configuration: configuration, generation: 1, loops: threads, logger: testLogger(),
        sharedState: sharedState, accessLog: accessLog,
        connectionCountDidChange: { counts.record($0) })
    do {
        try await server.start(listeners: listeners.map { $0.handOff() })
        let result = try await body(server, counts)
        await server.shutdownNow()
        return result
    } catch {
        await server.shutdownNow()
        throw error
    }
}

func directRoute(
    _ name: String, listener: String? = nil, _ match: RouteMatch, status: Int = 200, body: String,
    headers: [HeaderField] = []
) -> RouteConfig {
    RouteConfig(
        name: name, listener: listener, match: match,
        action: .directResponse(DirectResponse(status: status, headers: headers, body: body)))
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Runs blocking work on a dedicated thread (never on the cooperative pool, which has as
/// many threads as cores).
func onThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(returning: work())
        }
        thread.start()
    }
}

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberately small HTTP/1.1 client over raw sockets, so tests see exactly what the
/// server sent: EOF versus reset, `Connection: close`, bytes on the wire.
struct HTTPResponse {
    var status: Int
    var headers: [(String, String)]
    var body: String

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

enum ReadOutcome: Equatable {
    case eof
    case reset
    case timedOut
    case data
}

final class TestConnection {
    let fd: CInt
    private var buffer: [UInt8] = []

    init(port: UInt16, timeout: Duration = .seconds(10)) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        setTimeout(timeout)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 {
            let code = errno
            close(fd)
            throw HarnessError("connect 127.0.0.1:\(port): \(String(cString: strerror(code)))")
        }
    }

    deinit { close(fd) }

    /// The port this end of the connection is bound to.
    var localPort: UInt16 {
        var addr = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return UInt16(bigEndian: addr.sin_port)
    }

    func setTimeout(_ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) throws { try send(bytes: Array(text.utf8)) }

    /// One read: what the peer did next.
    func readSome() -> ReadOutcome {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buffer.append(contentsOf: chunk.prefix(n))
                return .data
            }
            if n == 0 { return .eof }
            if errno == EINTR { continue }
            if errno == ECONNRESET { return .reset }
            if errno == EAGAIN || errno == EWOULDBLOCK { return .timedOut }
            return .reset
        }
    }

    /// Reads one response (Content-Length framed, or to EOF without it).
    func readResponse() throws -> HTTPResponse {
        while true {
            if let response = try parse() { return response }
            switch readSome() {
            case .data: continue
            case .eof:
                if let response = try parse(atEOF: true) { return response }
                throw HarnessError("connection closed before a whole response (\(buffer.count) bytes)")
            case .reset: throw HarnessError("connection reset while reading a response")
            case .timedOut: throw HarnessError("timed out reading a response")
            }
        }
    }

    func request(_ path: String = "/", host: String = "localhost", headers: [String: String] = [:]) throws
        -> HTTPResponse
    {
        var text = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        try send(text)
        return try readResponse()
    }

    func send(bytes: [UInt8]) throws {
        let sent = try sendAll(fd, bytes)
        if sent < bytes.count { throw HarnessError("send: the peer closed after \(sent) of \(bytes.count) bytes") }
    }

    /// Reads one response head only (status and headers; `body` is empty), leaving what follows
    /// it (a tunnel's first bytes) for `read(exactly:)`.
    func readHead() throws -> HTTPResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        while buffer.firstRange(of: separator) == nil {
            let outcome = readSome()
            guard outcome == .data else { throw HarnessError("\(outcome) before a whole response head") }
        }
        let end = buffer.firstRange(of: separator)!
        let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
        buffer.removeFirst(end.upperBound)
        let (status, headers) = try Self.parseHead(head)
        return HTTPResponse(status: status, headers: headers, body: "")
    }

    /// Exactly `count` bytes; throws (naming EOF, reset or timeout) if they do not come.
    func read(exactly count: Int) throws -> [UInt8] {
        while buffer.count < count {
            let outcome = readSome()
            guard outcome == .data else { throw HarnessError("\(outcome) after \(buffer.count) of \(count) bytes") }
        }
        let bytes = Array(buffer.prefix(count))
        buffer.removeFirst(count)
        return bytes
    }

    /// Waits for the server to close: EOF (polite) or reset.
    func waitForClose() -> ReadOutcome {
        while true {
            let outcome = readSome()
            if outcome != .data { return outcome }
        }
    }

    /// Status and headers of a response head (without its empty line).
    private static func parseHead(_ head: String) throws -> (status: Int, headers: [(String, String)]) {
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
            throw HarnessError("bad status line in \(head)")
        }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return (status, headers)
    }

    private func parse(atEOF: Bool = false) throws -> HTTPResponse? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headEnd = buffer.firstRange(of: separator) else { return nil }
        let head = String(decoding: buffer[..<headEnd.lowerBound], as: UTF8.self)
        let (status, headers) = try Self.parseHead(head)
        let bodyStart = headEnd.upperBound
        if let lengthText = headers.first(where: { $0.0.lowercased() == "content-length" })?.1,
            let length = Int(lengthText)
        {
            guard buffer.count - bodyStart >= length else { return nil }
            let body = String(decoding: buffer[bodyStart..<(bodyStart + length)], as: UTF8.self)
            buffer.removeFirst(bodyStart + length)
            return HTTPResponse(status: status, headers: headers, body: body)
        }
        guard atEOF else { return nil }
        let body = String(decoding: buffer[bodyStart...], as: UTF8.self)
        buffer.removeAll()
        return HTTPResponse(status: status, headers: headers, body: body)
    }
}

/// One request on a new connection.
func httpGet(port: UInt16, path: String = "/", host: String = "localhost") throws -> HTTPResponse {
    let connection = try TestConnection(port: port)
    return try connection.request(path, host: host, headers: ["Connection": "close"])
}

/// Writes all of `bytes` to a socket (EINTR retried, no SIGPIPE). Returns how many went out:
/// fewer than all when the peer closed part-way (EPIPE, ECONNRESET).
func sendAll(_ fd: CInt, _ bytes: [UInt8]) throws -> Int {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes {
            Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
        }
        if n < 0 {
            if errno == EINTR { continue }
            if errno == EPIPE || errno == ECONNRESET { return offset }
            throw HarnessError("send: \(String(cString: strerror(errno)))")
        }
        offset += n
    }
    return offset
}

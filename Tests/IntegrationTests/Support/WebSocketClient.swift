import Foundation

/// A minimal RFC 6455 client on a `TestConnection`, for tests that keep one tunnel open across
/// steps (clients.py ws-echo runs a whole exchange at once). Text frames only, masked as a
/// client must; what the server sends is read frame by frame.
final class WebSocketClient {
    enum Frame: Equatable {
        case text(String)
        case close(code: UInt16?)
        case other(opcode: UInt8)
    }

    let connection: TestConnection
    /// The 101's headers.
    let handshake: HTTPResponse

    init(port: UInt16, path: String = "/ws", timeout: Duration = .seconds(10)) throws {
        connection = try TestConnection(port: port, timeout: timeout)
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        try connection.send(
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n")
        handshake = try connection.readHead()
        guard handshake.status == 101 else { throw HarnessError("WebSocket handshake got \(handshake.status)") }
    }

    func send(text: String) throws {
        let payload = Array(text.utf8)
        precondition(payload.count < 126, "short messages only")
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        var frame: [UInt8] = [0x81, 0x80 | UInt8(payload.count)] + mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try connection.send(bytes: frame)
    }

    func receive() throws -> Frame {
        let head = try connection.read(exactly: 2)
        var length = Int(head[1] & 0x7f)
        if length == 126 {
            let extended = try connection.read(exactly: 2)
            length = Int(extended[0]) << 8 | Int(extended[1])
        } else if length == 127 {
            length = try connection.read(exactly: 8).reduce(0) { $0 << 8 | Int($1) }
        }
        guard head[1] & 0x80 == 0 else { throw HarnessError("the server masked a frame") }
        let payload = try connection.read(exactly: length)
        switch head[0] & 0x0f {
        case 0x1: return .text(String(decoding: payload, as: UTF8.self))
        case 0x8: return .close(code: payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil)
        case let opcode: return .other(opcode: opcode)
        }
    }

    /// Sends `text` and returns what came back.
    func echo(_ text: String) throws -> Frame {
        try send(text: text)
        return try receive()
    }
}

import Foundation
import GatewayIO
import Testing

/// The connection buffers' storage rules: parked while idle, taken again on first use.
@Suite("IOBuffer")
struct IOBufferTests {
    @Test("a parked buffer holds no storage, and takes its first capacity again when written or read into")
    func parkAndReuse() throws {
        let buffer = IOBuffer(capacity: 4096, limit: 32 * 1024)
        buffer.append("GET / HTTP/1.1\r\n\r\n")
        buffer.park()
        #expect(!buffer.isParked, "a buffer with bytes in it is not parked")
        buffer.consume(buffer.readableCount)
        buffer.park()
        #expect(buffer.isParked)
        #expect(buffer.capacity == 0 && buffer.isEmpty && buffer.readable.isEmpty)
        buffer.shrink(to: 2048)
        #expect(buffer.isParked)

        buffer.append("hello")
        #expect(buffer.capacity == 4096)
        #expect(String(decoding: buffer.readable, as: UTF8.self) == "hello")

        buffer.consume(5)
        buffer.park()
        var fds: [CInt] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        #expect(write(fds[1], "world", 5) == 5)
        #expect(buffer.read(from: fds[0], minimum: 1024) == .bytes(5))
        #expect(buffer.capacity == 4096)
        #expect(String(decoding: buffer.readable, as: UTF8.self) == "world")

        // Growing past the first capacity, then parking, gives the larger block back too.
        buffer.append([UInt8](repeating: 0x61, count: 10_000))
        #expect(buffer.capacity == 16384)
        buffer.consume(buffer.readableCount)
        buffer.park()
        #expect(buffer.isParked)
    }
}

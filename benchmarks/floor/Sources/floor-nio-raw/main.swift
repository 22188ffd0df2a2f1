// floor-nio-raw PORT [THREADS]: SwiftNIO with no HTTP codec. Counts "\r\n\r\n" in what
// arrives and writes one fixed response per request head, flushed once per read burst.
import NIOCore
import NIOPosix

let response = ByteBuffer(
    string: "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello world!\n")
let closeResponse = ByteBuffer(
    string:
        "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello world!\n"
)

final class FixedResponder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    /// How many bytes of "\r\n\r\n" the previous read ended with.
    private var matched = 0
    private var pending = false
    private var closeAfter = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { bytes in
            // "Connection: close" anywhere in a read (wrk -H 'Connection: close'): answer, close.
            if !self.closeAfter, containsClose(bytes) { self.closeAfter = true }
            for byte in bytes {
                if byte == 13 {
                    self.matched = (self.matched == 0 || self.matched == 2) ? self.matched + 1 : 1
                } else if byte == 10, self.matched == 1 || self.matched == 3 {
                    self.matched += 1
                    if self.matched == 4 {
                        self.matched = 0
                        self.pending = true
                        context.write(Self.wrapOutboundOut(self.closeAfter ? closeResponse : response), promise: nil)
                    }
                } else {
                    self.matched = 0
                }
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.pending {
            self.pending = false
            if self.closeAfter {
                context.flush()
                context.close(promise: nil)
            } else {
                context.flush()
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// "close" after "Connection:" (either case of the name), without allocating.
func containsClose(_ bytes: UnsafeRawBufferPointer) -> Bool {
    let needle: [UInt8] = Array("onnection: close".utf8)
    guard bytes.count >= needle.count else { return false }
    var i = 0
    while i <= bytes.count - needle.count {
        var j = 0
        while j < needle.count, bytes[i + j] == needle[j] { j += 1 }
        if j == needle.count { return true }
        i += 1
    }
    return false
}

let port = Int(CommandLine.arguments.dropFirst().first ?? "18081") ?? 18081
let threads = Int(CommandLine.arguments.dropFirst(2).first ?? "2") ?? 2
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let channel = try ServerBootstrap(group: group)
    .serverChannelOption(ChannelOptions.backlog, value: 1024)
    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FixedResponder()) }
    }
    .bind(host: "127.0.0.1", port: port).wait()
print("READY \(port)")
try channel.closeFuture.wait()

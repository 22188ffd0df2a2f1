// floor-nio-http1 PORT [THREADS]: SwiftNIO with NIOHTTP1's request decoder (llhttp) and no
// encoder: each request's end writes one fixed response, flushed once per read burst.
import NIOCore
import NIOHTTP1
import NIOPosix

let response = ByteBuffer(
    string: "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello world!\n")
let closeResponse = ByteBuffer(
    string:
        "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello world!\n"
)

final class FixedResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer
    private var keepAlive = true
    private var pending = false
    private var closing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.keepAlive = head.isKeepAlive
        case .body:
            ()
        case .end:
            guard !self.closing else { return }
            self.pending = true
            if self.keepAlive {
                context.write(Self.wrapOutboundOut(response), promise: nil)
            } else {
                self.closing = true
                context.write(Self.wrapOutboundOut(closeResponse), promise: nil)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.pending {
            self.pending = false
            context.flush()
            if self.closing { context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

let port = Int(CommandLine.arguments.dropFirst().first ?? "18082") ?? 18082
let threads = Int(CommandLine.arguments.dropFirst(2).first ?? "2") ?? 2
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let channel = try ServerBootstrap(group: group)
    .serverChannelOption(ChannelOptions.backlog, value: 1024)
    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
            try channel.pipeline.syncOperations.addHandler(FixedResponder())
        }
    }
    .bind(host: "127.0.0.1", port: port).wait()
print("READY \(port)")
try channel.closeFuture.wait()

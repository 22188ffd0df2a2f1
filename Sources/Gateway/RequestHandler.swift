import NIOCore
import NIOHTTP1

/// The last handler: routes each request and writes its precomputed response.
///
/// The response is written when the request's `.end` arrives; request bodies are dropped part
/// by part as they are decoded, never buffered. Responses are flushed at the end of a read
/// burst, so pipelined requests answered together go out in one `writev`.
final class RequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private static let continueHead = HTTPResponseHead(version: .http1_1, status: .continue)

    private let connection: ConnectionHandler
    private let router: ListenerRouter

    private var response: PreparedResponse?
    private var keepAlive = true
    private var isHTTP10 = false
    private var isHeadRequest = false
    private var needsFlush = false

    init(connection: ConnectionHandler, router: ListenerRouter) {
        self.connection = connection
        self.router = router
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            guard self.connection.acceptsRequests else {
                // Pipelined after the response that closes this connection: the client
                // retries it on a new connection (it was never answered).
                self.response = nil
                return
            }
            self.connection.requestStarted()
            self.response = self.router.route(head)
            self.keepAlive = head.isKeepAlive
            self.isHTTP10 = head.version == .http1_0
            self.isHeadRequest = head.method == .HEAD
            if head.method != .GET, head.method != .HEAD, Self.expectsContinue(head.headers) {
                context.writeAndFlush(Self.wrapOutboundOut(.head(Self.continueHead)), promise: nil)
            }
        case .body:
            ()  // Dropped: direct responses do not look at bodies.
        case .end:
            guard let response = self.response else {
                return
            }
            self.response = nil
            self.respond(context: context, response: response)
        }
    }

    private func respond(context: ChannelHandlerContext, response: PreparedResponse) {
        let close = !self.keepAlive || self.connection.draining || self.connection.inputClosed
        // State first: writing `.end` may synchronously deliver the next pipelined request.
        self.connection.responseWillComplete(closing: close)
        let head: HTTPResponseHead
        if close {
            head = response.closeHead
        } else if self.isHTTP10 {
            head = response.keepAliveHead10
        } else {
            head = response.keepAliveHead
        }
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        if !self.isHeadRequest, response.body.readableBytes > 0 {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        if close {
            self.connection.sealOutputAfterNextWrite()
            // With a promise the encoder always emits a (zero-length) write for `.end`: that
            // write is the one that seals the output.
            context.write(Self.wrapOutboundOut(.end(nil)), promise: context.eventLoop.makePromise())
            self.connection.closePolitely()
        } else {
            self.needsFlush = true
            context.write(Self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let channelEvent = event as? ChannelEvent, case .inputClosed = channelEvent {
            // The client is done sending; everything it sent has been answered (responses are
            // written synchronously). Flush and close.
            self.needsFlush = false
            self.connection.closePolitely()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is HTTPParserError {
            // HTTPServerProtocolErrorHandler has already written `400` with `connection: close`.
            self.needsFlush = false
            self.connection.closePolitely()
        } else {
            context.close(promise: nil)
        }
    }

    private static func expectsContinue(_ headers: HTTPHeaders) -> Bool {
        for value in headers[canonicalForm: "expect"] where value.utf8.count == 12 {
            if value.lowercased() == "100-continue" {
                return true
            }
        }
        return false
    }
}

@available(*, unavailable)
extension RequestHandler: Sendable {}

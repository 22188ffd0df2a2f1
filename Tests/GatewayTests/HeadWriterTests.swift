import GatewayConfig
import GatewayHTTP
import GatewayIO
import Testing

@testable import Gateway

#if canImport(Glibc)
    import Glibc
#endif

/// The heads the proxy writes, byte for byte: the client's field lines copied as they came,
/// with the edits spliced in.
@Suite("Upstream request and client response heads")
struct HeadWriterTests {
    static func peer(_ address: String) -> ConnectionPeer {
        var storage = sockaddr_storage()
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                pointer.pointee.sin_family = sa_family_t(AF_INET)
                pointer.pointee.sin_addr.s_addr = inet_addr(address)
            }
        }
        return ConnectionPeer(storage)
    }

    static func requestID() -> RequestIDBytes {
        var id = RequestIDBytes()
        _ = Array("id-1".utf8).withUnsafeBufferPointer { id.adopt($0) }
        return id
    }

    /// Parses `request`, writes its upstream head, returns it as text.
    static func upstreamHead(
        _ request: String, trusted: Bool = false, rules: CompiledHeaderRules = .none, stripPrefix: String? = nil,
        secure: Bool = false
    ) throws -> String {
        let bytes = Array(request.utf8)
        return try bytes.withUnsafeBufferPointer { buffer in
            var parser = HeadParser(.request)
            var head = MessageHead()
            guard parser.parse(buffer, into: &head) == .complete else { throw WriterTestError.unparsed }
            let target = try RequestTarget.parse(UnsafeBufferPointer(rebasing: buffer[head.target]))
            let route = RouteHandling(name: "r", action: .notFound, requestHeaders: rules)
            let writer = UpstreamHeadWriter(
                head: head, bytes: buffer, target: target, peer: peer("10.0.0.9"), peerTrusted: trusted,
                route: route, requestID: requestID(), caseSensitive: true, secure: secure)
            let output = IOBuffer(capacity: 256, limit: 256)
            _ = writer.write(into: output, stripPrefix: stripPrefix)
            return String(decoding: output.readable, as: UTF8.self)
        }
    }

    @Test("hop-by-hop fields, Expect and forwarding fields are replaced; the rest is copied as it came")
    func requestHead() throws {
        let head = try Self.upstreamHead(
            "GET /a/./b?x=1 HTTP/1.1\r\nHost: h.test\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
                + "Keep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
                + "Via: 1.0 edge\r\nX-Keep: y\r\nX-Also:  kept  \r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        #expect(
            head
                == "GET /a/b?x=1 HTTP/1.1\r\nHost: h.test\r\nX-Keep: y\r\nX-Also:  kept  \r\n"
                + "x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h.test\r\n"
                + "via: 1.0 edge, 1.1 gatewayd\r\ncontent-length: 3\r\nx-request-id: id-1\r\n")
    }

    @Test("from a trusted proxy the chain and the scheme are kept")
    func trustedPeer() throws {
        let head = try Self.upstreamHead(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n"
                + "X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.test\r\n\r\n", trusted: true)
        #expect(
            head
                == "GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\n"
                + "x-forwarded-proto: https\r\nx-forwarded-host: public.test\r\nvia: 1.1 gatewayd\r\n"
                + "x-request-id: id-1\r\n")
    }

    @Test("over TLS the scheme is https, whatever an untrusted client claims; a trusted proxy's value is kept")
    func secureClient() throws {
        let request = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\n\r\n"
        #expect(try Self.upstreamHead(request, secure: true).contains("\r\nx-forwarded-proto: https\r\n"))
        #expect(try Self.upstreamHead(request, secure: false).contains("\r\nx-forwarded-proto: http\r\n"))
        #expect(try Self.upstreamHead(request, trusted: true, secure: true).contains("\r\nx-forwarded-proto: http\r\n"))
    }

    @Test("absolute-form: the authority is the Host; strip_prefix on the canonical path; chunked framing")
    func absoluteForm() throws {
        let head = try Self.upstreamHead(
            "POST http://api.test/v1//users?q HTTP/1.1\r\nHost: other.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            stripPrefix: "/v1")
        #expect(
            head
                == "POST /users?q HTTP/1.1\r\nhost: api.test\r\nx-forwarded-for: 10.0.0.9\r\n"
                + "x-forwarded-proto: http\r\nx-forwarded-host: api.test\r\nvia: 1.1 gatewayd\r\n"
                + "transfer-encoding: chunked\r\nx-request-id: id-1\r\n")
    }

    @Test("a route's rules remove and set fields, the forwarding ones included; an upgrade is forwarded")
    func rulesAndUpgrade() throws {
        let rules = CompiledHeaderRules(set: [("X-Forwarded-Proto", "https"), ("X-Env", "prod")], remove: ["x-drop"])
        let head = try Self.upstreamHead(
            "GET /ws HTTP/1.1\r\nHost: h\r\nX-Drop: 1\r\nX-ENV: dev\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            rules: rules)
        #expect(
            head
                == "GET /ws HTTP/1.1\r\nHost: h\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-host: h\r\n"
                + "via: 1.1 gatewayd\r\nX-Forwarded-Proto: https\r\nX-Env: prod\r\n"
                + "connection: upgrade\r\nupgrade: websocket\r\nx-request-id: id-1\r\n")
    }

    /// Parses `response`, writes the client's head, returns it and the body framing chosen.
    static func clientHead(
        _ response: String, http10: Bool = false, method: Method = .get, rules: CompiledHeaderRules = .none
    ) throws -> (String, ClientBodyFraming, Bool) {
        let bytes = Array(response.utf8)
        return try bytes.withUnsafeBufferPointer { buffer in
            var parser = HeadParser(.response)
            var head = MessageHead()
            guard parser.parse(buffer, into: &head) == .complete else { throw WriterTestError.unparsed }
            let writer = ResponseHeadWriter(head: head, bytes: buffer, rules: rules)
            let output = IOBuffer(capacity: 256, limit: 256)
            var close = false
            let body = ResponseFraming.body(status: head.status, framing: head.framing, requestMethod: method)
            let framing = writer.write(
                into: output, upstreamBody: body, clientIsHTTP10: http10, close: &close, requestID: requestID(),
                upgrade: false)
            return (String(decoding: output.readable, as: UTF8.self), framing, close)
        }
    }

    @Test("response heads: chunked as it came, unchunked for HTTP/1.0, re-chunked to the close, lengths kept")
    func responseHeads() throws {
        let chunked = try Self.clientHead(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nTrailer: x-sum\r\n"
                + "Connection: close, X-Hop\r\nX-Hop: 1\r\nX-Request-Id: up\r\n\r\n")
        #expect(
            chunked.0
                == "HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nX-Request-Id: up\r\ntransfer-encoding: chunked\r\n\r\n")
        #expect(chunked.1 == .chunkedAsIs && !chunked.2)

        let old = try Self.clientHead(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n", http10: true)
        #expect(old.0 == "HTTP/1.1 200 OK\r\nx-request-id: id-1\r\nconnection: close\r\n\r\n")
        #expect(old.1 == .unchunked && old.2)

        let toClose = try Self.clientHead("HTTP/1.0 200 OK\r\nX-A: b\r\n\r\n")
        #expect(toClose.0 == "HTTP/1.1 200 OK\r\nX-A: b\r\nx-request-id: id-1\r\ntransfer-encoding: chunked\r\n\r\n")
        #expect(toClose.1 == .rechunked)

        let head = try Self.clientHead("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method: .head)
        #expect(head.0 == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-request-id: id-1\r\n\r\n")
        #expect(head.1 == ClientBodyFraming.none)

        let rules = CompiledHeaderRules(set: [("x-served-by", "gw")], remove: ["server"])
        let ruled = try Self.clientHead("HTTP/1.1 404 \r\nServer: up\r\nContent-Length: 0\r\n\r\n", rules: rules)
        #expect(
            ruled.0 == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nx-served-by: gw\r\nx-request-id: id-1\r\n\r\n")
    }
}

enum WriterTestError: Error {
    case unparsed
}

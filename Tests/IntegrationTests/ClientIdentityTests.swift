import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Who the client is behind a load balancer: `trusted_proxies` with `X-Forwarded-For`, and the
/// PROXY protocol from raw sockets and from a real HAProxy 2.6 (`send-proxy`, `send-proxy-v2`).
@Suite("Client identity: trusted proxies and the PROXY protocol", .serialized, .timeLimit(.minutes(2)))
struct ClientIdentityTests {
    static func config(upstream: DemoUpstream, accessLog: String) -> String {
        """
        workers: 1
        trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]
        access_log: { path: \(accessLog), format: json }
        limits: { header_timeout: 1s }
        listeners:
          - { name: web, address: "127.0.0.1:0" }
          - { name: edge, address: "127.0.0.1:0", trusted_proxies: [] }
          - { name: pp, address: "127.0.0.1:0", proxy_protocol: true, trusted_proxies: [10.0.0.0/8] }
        upstreams:
          origin:
            endpoints: ["\(upstream.endpoint)"]
        routes:
          - name: limited
            match: { path_prefix: /echo/limited }
            rate_limit: { per: client_ip, rate: 1/s, burst: 1 }
            upstream: origin
          - name: public
            match: { path_prefix: / }
            upstream: origin

        """
    }

    struct Setup {
        let upstream: DemoUpstream
        let directory: TemporaryDirectory
        let gatewayd: GatewaydProcess
        var accessLog: String { directory.file("access.log") }
    }

    static func start() throws -> Setup {
        let upstream = try DemoUpstream()
        let directory = try TemporaryDirectory()
        let gatewayd = try GatewaydProcess(
            config: config(upstream: upstream, accessLog: directory.file("access.log")))
        return Setup(upstream: upstream, directory: directory, gatewayd: gatewayd)
    }

    /// One request on a new connection; `prefix` goes before it (a PROXY header).
    static func get(
        _ port: UInt16, _ path: String, headers: String = "", prefix: [UInt8] = []
    ) throws -> HTTPResponse {
        let connection = try TestConnection(port: port)
        try connection.send(bytes: prefix + Array("GET \(path) HTTP/1.1\r\nHost: gw.test\r\n\(headers)\r\n".utf8))
        return try connection.readResponse()
    }

    static func forwarded(_ response: HTTPResponse, _ name: String) -> [String] {
        HostileRequestTests.echoedHeaders(response).filter { $0.0.lowercased() == name }.map(\.1)
    }

    @Test(
        "from a trusted proxy: the rightmost untrusted X-Forwarded-For hop is the client; X-Forwarded-Proto and -Host are kept"
    )
    func trustedProxy() throws {
        let setup = try Self.start()
        let web = try setup.gatewayd.port(of: "web")
        let response = try Self.get(
            web, "/echo/a",
            headers:
                "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n"
                + "X-Forwarded-Host: public.example\r\nX-Request-Id: trusted-1\r\n"
                + "Forwarded: for=203.0.113.7\r\nX-Real-IP: 203.0.113.7\r\n")
        #expect(response.status == 200)
        // Client addresses gatewayd does not rewrite pass on from a trusted proxy (and are
        // dropped from anyone else: the reverse proxy tests).
        #expect(Self.forwarded(response, "forwarded") == ["for=203.0.113.7"])
        #expect(Self.forwarded(response, "x-real-ip") == ["203.0.113.7"])
        #expect(Self.forwarded(response, "x-forwarded-for") == ["203.0.113.7, 10.1.2.3, 127.0.0.1"])
        #expect(Self.forwarded(response, "x-forwarded-proto") == ["https"])
        #expect(Self.forwarded(response, "x-forwarded-host") == ["public.example"])
        try waitUntil("the access log line") { readWholeFile(setup.accessLog).contains("trusted-1") }
        let line = readWholeFile(setup.accessLog).split(separator: "\n").first { $0.contains("trusted-1") } ?? ""
        #expect(line.contains("\"client\":\"203.0.113.7\""), "\(line)")

        // A token that is not an address ends the walk at the last address read.
        let garbled = try Self.get(web, "/echo/b", headers: "X-Forwarded-For: 198.51.100.1, junk, 10.1.2.3\r\n")
        #expect(Self.forwarded(garbled, "x-forwarded-for") == ["198.51.100.1, junk, 10.1.2.3, 127.0.0.1"])

        // Rate limits per client address count the client, not the proxy.
        let first = try Self.get(web, "/echo/limited", headers: "X-Forwarded-For: 203.0.113.7\r\n")
        let again = try Self.get(web, "/echo/limited", headers: "X-Forwarded-For: 203.0.113.7\r\n")
        let other = try Self.get(web, "/echo/limited", headers: "X-Forwarded-For: 203.0.113.8\r\n")
        #expect([first.status, again.status, other.status] == [200, 429, 200] as [Int])
    }

    @Test("from anyone else: X-Forwarded-For, -Proto and -Host are replaced, and the peer is the client")
    func untrustedPeer() throws {
        let setup = try Self.start()
        let edge = try setup.gatewayd.port(of: "edge")
        let response = try Self.get(
            edge, "/echo/a",
            headers: "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n")
        #expect(Self.forwarded(response, "x-forwarded-for") == ["127.0.0.1"])
        #expect(Self.forwarded(response, "x-forwarded-proto") == ["http"])
        #expect(Self.forwarded(response, "x-forwarded-host") == ["gw.test"])
        // One bucket for every spoofed address: the peer's.
        let first = try Self.get(edge, "/echo/limited", headers: "X-Forwarded-For: 203.0.113.9\r\n")
        let spoofed = try Self.get(edge, "/echo/limited", headers: "X-Forwarded-For: 203.0.113.10\r\n")
        #expect([first.status, spoofed.status] == [200, 429] as [Int])
    }

    @Test("PROXY protocol v1 and v2 name the client; the header's source is trusted or not like any peer")
    func proxyProtocol() throws {
        let setup = try Self.start()
        let pp = try setup.gatewayd.port(of: "pp")
        let cases: [(String, [UInt8], String)] = [
            ("v1 TCP4", Array("PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n".utf8), "198.51.100.9"),
            ("v1 TCP6", Array("PROXY TCP6 2001:db8::5 ::1 40000 80\r\n".utf8), "2001:db8::5"),
            ("v1 UNKNOWN", Array("PROXY UNKNOWN\r\n".utf8), "127.0.0.1"),
            ("v2 IPv4", Self.proxyV2(source: [198, 51, 100, 10]), "198.51.100.10"),
            ("v2 LOCAL", Self.proxyV2(source: [198, 51, 100, 11], local: true), "127.0.0.1"),
            (
                "v2 with a TLV", Self.proxyV2(source: [198, 51, 100, 12], tlv: [0x04, 0x00, 0x03, 0x61, 0x62, 0x63]),
                "198.51.100.12"
            ),
        ]
        for (name, header, client) in cases {
            let response = try Self.get(pp, "/echo/pp", prefix: header)
            #expect(response.status == 200, "\(name)")
            #expect(Self.forwarded(response, "x-forwarded-for") == [client], "\(name)")
        }
        // A balancer that is itself behind trusted proxies: the header's source is trusted (10/8
        // on this listener), so its X-Forwarded-For names the client.
        let chained = try Self.get(
            pp, "/echo/pp", headers: "X-Forwarded-For: 203.0.113.50\r\n",
            prefix: Array("PROXY TCP4 10.9.9.9 127.0.0.1 40000 80\r\n".utf8))
        #expect(Self.forwarded(chained, "x-forwarded-for") == ["203.0.113.50, 10.9.9.9"])
    }

    @Test("a connection without a valid PROXY header is closed without an answer; the worker serves on")
    func malformedProxyHeaders() throws {
        let setup = try Self.start()
        let pp = try setup.gatewayd.port(of: "pp")
        var v2BadVersion = Self.proxyV2(source: [1, 2, 3, 4])
        v2BadVersion[12] = 0x31
        var v2Oversized = Self.proxyV2(source: [1, 2, 3, 4])
        v2Oversized[14] = 0xFF
        v2Oversized[15] = 0xFF
        let cases: [(String, [UInt8])] = [
            ("plain HTTP", Array("GET /echo/x HTTP/1.1\r\nHost: gw.test\r\n\r\n".utf8)),
            ("bad v1 address", Array("PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n".utf8)),
            ("v1 family mismatch", Array("PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n".utf8)),
            ("v1 port out of range", Array("PROXY TCP4 1.2.3.4 127.0.0.1 70000 2\r\n".utf8)),
            ("v1 too long", Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8)),
            ("v1 bare LF", Array("PROXY TCP4 1.2.3.4 127.0.0.1 1 2\nGET / HTTP/1.1\r\n\r\n".utf8)),
            ("v2 bad version", v2BadVersion),
            ("v2 oversized", v2Oversized),
            ("TLS client hello", [0x16, 0x03, 0x01, 0x00, 0xA5, 0x01, 0x00, 0x00, 0xA1, 0x03, 0x03]),
        ]
        for (name, bytes) in cases {
            let connection = try TestConnection(port: pp, timeout: .seconds(5))
            try connection.send(bytes: bytes)
            let started = ContinuousClock.now
            let outcome = connection.waitForClose()
            #expect(outcome == .eof || outcome == .reset, "\(name): \(outcome)")
            #expect(ContinuousClock.now - started < .seconds(3), "\(name): closed after header_timeout, not at once")
            #expect((try? connection.readResponse()) == nil, "\(name): got an answer")
        }
        // Part of a header, then nothing: closed at header_timeout (1 s), without an answer.
        let stalled = try TestConnection(port: pp, timeout: .seconds(5))
        try stalled.send("PROXY TCP4 1.2")
        let started = ContinuousClock.now
        #expect(stalled.waitForClose() != .timedOut)
        let waited = ContinuousClock.now - started
        #expect(waited > .milliseconds(800) && waited < .seconds(3), "\(waited)")
        // The worker is unaffected.
        let response = try Self.get(pp, "/echo/after", prefix: Array("PROXY TCP4 198.51.100.3 127.0.0.1 1 2\r\n".utf8))
        #expect(response.status == 200)
        #expect(try setup.gatewayd.status().generations.flatMap(\.workers).map(\.restarts) == [0])
    }

    @Test("behind a real HAProxy 2.6 with send-proxy and send-proxy-v2, the client is HAProxy's client")
    func behindHAProxy() throws {
        let setup = try Self.start()
        let pp = try setup.gatewayd.port(of: "pp")
        guard
            let haproxy = try HAProxyProcess([
                .init(source: "198.51.100.21", sendProxy: "send-proxy", target: pp),
                .init(source: "198.51.100.22", sendProxy: "send-proxy-v2", target: pp),
            ])
        else { return }
        let (v1Port, v2Port) = (haproxy.ports[0], haproxy.ports[1])
        for (port, client) in [(v1Port, "198.51.100.21"), (v2Port, "198.51.100.22")] {
            let response = try Self.get(port, "/echo/haproxy")
            #expect(response.status == 200, "\(response.status) \(response.body)")
            #expect(Self.forwarded(response, "x-forwarded-for") == [client])
        }
    }

    /// A PROXY v2 header for TCP over IPv4 from `source` (port 40000) to 127.0.0.1:80.
    static func proxyV2(source: [UInt8], local: Bool = false, tlv: [UInt8] = []) -> [UInt8] {
        let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        let addresses = source + [127, 0, 0, 1] + [0x9C, 0x40, 0x00, 0x50]
        let length = addresses.count + tlv.count
        return signature + [local ? 0x20 : 0x21, 0x11, UInt8(length >> 8), UInt8(length & 0xFF)] + addresses + tlv
    }
}

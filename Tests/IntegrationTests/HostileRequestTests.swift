import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// An attacker's requests against a real worker: every spelling of a guarded path, credentials
/// and Host twice, framing the upstream would read another way, HTTP/1.0 without Host. The rule
/// under test: the upstream sees exactly what was routed, and nothing of a refused request.
@Suite("Hostile requests: one path from client to upstream", .serialized, .timeLimit(.minutes(2)))
struct HostileRequestTests {
    static let key = "k-alice-0123456789"

    /// `/echo/admin` is guarded, `/v1` strips its prefix, `/old` redirects, the rest is public.
    /// The demo upstream's `/echo…` answers with the target it received.
    static func config(upstream: DemoUpstream, keysFile: String, extra: String = "") -> String {
        """
        workers: 1
        listeners:
          - { name: web, address: "127.0.0.1:0" }
        upstreams:
          origin:
            endpoints: ["\(upstream.endpoint)"]
        \(extra)
        routes:
          - name: admin
            match: { path_prefix: /echo/admin }
            auth: { api_keys: { header: x-api-key, keys_file: \(keysFile) } }
            upstream: origin
          - name: v1
            match: { path_prefix: /v1/ }
            strip_prefix: /v1
            upstream: origin
          - name: old
            match: { path: /old }
            redirect: { status: 301, location: /new }
          - name: public
            match: { path_prefix: / }
            upstream: origin

        """
    }

    enum Outcome: CustomStringConvertible {
        /// 400 and nothing upstream.
        case refused
        /// 401: routed as the guarded path.
        case guarded
        /// Proxied (200) and the upstream received this target.
        case upstream(String)
        /// Answered from the config (the redirect).
        case status(Int)

        var description: String {
            switch self {
            case .refused: return "400"
            case .guarded: return "401"
            case .upstream(let path): return "200 upstream \(path)"
            case .status(let status): return "\(status)"
            }
        }
    }

    /// What an attacker would try for `/echo/admin/users` (and the strip_prefix and redirect
    /// routes), with what each must get. Without a key, a form reaching the guarded path may
    /// only be 401 or 400, never 200.
    static let forms: [(target: String, outcome: Outcome)] = [
        ("/echo/admin/users", .guarded),
        ("//echo/admin/users", .guarded),
        ("/echo//admin/users", .guarded),
        ("///echo///admin///users", .guarded),
        ("/./echo/admin/users", .guarded),
        ("/echo/./admin/users", .guarded),
        ("/echo/x/../admin/users", .guarded),
        ("/public/../echo/admin/users", .guarded),
        ("/echo/%61dmin/users", .guarded),
        ("/%65%63%68%6F/%61%64%6D%69%6E/users", .guarded),
        ("/echo/x/%2e%2e/admin/users", .guarded),
        ("/echo/x/%2E%2e/admin/users", .guarded),
        ("/echo/x/.%2e/admin/users", .guarded),
        ("/echo/x/%2e./admin/users", .guarded),
        ("/echo/%2e/admin/users", .guarded),
        ("/echo/x/..//admin/users", .guarded),
        ("http://gw.test/echo/x/../admin/users", .guarded),
        ("HTTP://gw.test//echo/admin/users", .guarded),
        ("http://gw.test:80/echo/%61dmin/users?q=1", .guarded),
        ("/v1/../echo/admin/users", .guarded),
        ("/v1/%2e%2e/echo/admin/users", .guarded),
        ("/v1/x/../../echo/admin/users", .guarded),
        ("/echo/admin%2fusers", .refused),
        ("/echo%2Fadmin/users", .refused),
        ("/echo/x/..%2fadmin/users", .refused),
        ("/echo/x/..%2Fadmin/users", .refused),
        ("/echo/x/..%5cadmin/users", .refused),
        ("/echo/x\\..\\admin\\users", .refused),
        ("/echo\\admin\\users", .refused),
        ("/echo/admin;x/users", .refused),
        ("/echo/admin/users;", .refused),
        ("/echo/x/..;/admin/users", .refused),
        ("/echo/admin%3b/users", .refused),
        ("/echo/admin/users%00", .refused),
        ("/echo/admin/users%0d%0aX-Injected:%20y", .refused),
        ("/echo/%c0%afadmin/users", .refused),
        ("/../echo/admin/users", .refused),
        ("/echo/admin/users%zz", .refused),
        ("http://user@gw.test/echo/admin/users", .refused),
        ("ftp://gw.test/echo/admin/users", .refused),
        ("echo/admin/users", .refused),
        // Routed as sent, and sent as routed: a single-decoding upstream sees `%61`, not `a`.
        ("/echo/%2561dmin/users", .upstream("/echo/%2561dmin/users")),
        // Case-sensitive, as nginx, Envoy and HAProxy match (paths.case_sensitive: false for
        // upstreams that ignore case).
        ("/echo/ADMIN/users", .upstream("/echo/ADMIN/users")),
        // The public route gets the canonical path, the query as sent.
        ("/echo/public//x/../y?a=/../&b=%2F", .upstream("/echo/public/y?a=/../&b=%2F")),
        ("/echo/%7euser/%c3%a9", .upstream("/echo/~user/%C3%A9")),
        ("http://gw.test/echo/p?x", .upstream("/echo/p?x")),
        // strip_prefix on the canonical path.
        ("/v1//echo/users", .upstream("/echo/users")),
        ("/v1/x/../echo/users?z", .upstream("/echo/users?z")),
        ("/v1/%65cho", .upstream("/echo")),
        ("/v1/..%2fecho/admin", .refused),
        // The redirect matches every spelling of its path.
        ("/old", .status(301)),
        ("//old", .status(301)),
        ("/x/../old", .status(301)),
        ("/%6fld", .status(301)),
        ("/old;x", .refused),
    ]

    @Test("every spelling of a guarded path is routed as that path or refused; the upstream gets the canonical path")
    func pathForms() throws {
        let upstream = try DemoUpstream()
        let keys = try TemporaryDirectory()
        try "\(Self.key)\n".write(toFile: keys.file("keys"), atomically: false, encoding: .utf8)
        let gatewayd = try GatewaydProcess(config: Self.config(upstream: upstream, keysFile: keys.file("keys")))
        let port = try gatewayd.port()
        var failures: [String] = []
        for (target, expected) in Self.forms {
            let before = try upstream.requestCount()
            let connection = try TestConnection(port: port)
            try connection.send("GET \(target) HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            let response = try connection.readResponse()
            let reached = try upstream.requestCount() - before
            let got = Self.describe(response)
            switch expected {
            case .refused:
                if response.status != 400 || reached != 0 {
                    failures.append("\(target): \(got), upstream saw \(reached)")
                }
            case .guarded:
                if response.status != 401 || reached != 0 {
                    failures.append("\(target): \(got), upstream saw \(reached)")
                }
            case .status(let status):
                if response.status != status || reached != 0 { failures.append("\(target): \(got)") }
            case .upstream(let path):
                if response.status != 200 || Self.echoedPath(response) != path {
                    failures.append("\(target): \(got), expected upstream \(path)")
                }
            }
        }
        #expect(
            failures.isEmpty, "\(failures.count) of \(Self.forms.count) forms:\n\(failures.joined(separator: "\n"))")

        // With the key, the guarded forms reach the upstream, all as the one canonical path.
        for (target, expected) in Self.forms {
            guard case .guarded = expected else { continue }
            let connection = try TestConnection(port: port)
            try connection.send(
                "GET \(target) HTTP/1.1\r\nHost: gw.test\r\nx-api-key: \(Self.key)\r\nConnection: close\r\n\r\n")
            let response = try connection.readResponse()
            let path = Self.echoedPath(response).map { String($0.prefix { $0 != "?" }) }
            #expect(response.status == 200 && path == "/echo/admin/users", "\(target): \(Self.describe(response))")
        }
    }

    @Test("a credential or Host sent twice gets 400, and nothing reaches the upstream")
    func duplicatedCredentials() throws {
        let upstream = try DemoUpstream()
        let keys = try TemporaryDirectory()
        try "\(Self.key)\n".write(toFile: keys.file("keys"), atomically: false, encoding: .utf8)
        let gatewayd = try GatewaydProcess(config: Self.config(upstream: upstream, keysFile: keys.file("keys")))
        let port = try gatewayd.port()
        let cases: [(String, String)] = [
            ("a valid key then another", "x-api-key: \(Self.key)\r\nx-api-key: other\r\n"),
            ("another then a valid key", "x-api-key: other\r\nX-Api-Key: \(Self.key)\r\n"),
            ("the valid key twice", "x-api-key: \(Self.key)\r\nx-api-key: \(Self.key)\r\n"),
            ("Authorization twice", "x-api-key: \(Self.key)\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n"),
            (
                "Proxy-Authorization twice",
                "x-api-key: \(Self.key)\r\nProxy-Authorization: a\r\nProxy-Authorization: b\r\n"
            ),
            ("Host twice", "x-api-key: \(Self.key)\r\nHost: other.test\r\n"),
        ]
        for path in ["/echo/admin/users", "/echo/public"] {
            for (name, headers) in cases {
                let before = try upstream.requestCount()
                let connection = try TestConnection(port: port)
                try connection.send("GET \(path) HTTP/1.1\r\nHost: gw.test\r\n\(headers)\r\n")
                let response = try connection.readResponse()
                #expect(response.status == 400, "\(path), \(name): \(Self.describe(response))")
                #expect(try upstream.requestCount() == before, "\(path), \(name): reached the upstream")
                #expect(connection.waitForClose() == .eof, "\(path), \(name): the connection stays open")
            }
        }
    }

    /// The fuzz corpus' framing cases (`clients.py`), sent to a proxied path: each is refused and
    /// none of its bytes reach the upstream, although its head may look whole.
    @Test("a request refused for its framing never reaches the upstream")
    func framingNeverReachesUpstream() throws {
        let upstream = try DemoUpstream()
        let keys = try TemporaryDirectory()
        try "\(Self.key)\n".write(toFile: keys.file("keys"), atomically: false, encoding: .utf8)
        let gatewayd = try GatewaydProcess(config: Self.config(upstream: upstream, keysFile: keys.file("keys")))
        let port = try gatewayd.port()
        let chunked = "Transfer-Encoding: chunked\r\n"
        let cases: [(String, String)] = [
            ("te-gzip", "Transfer-Encoding: gzip\r\n\r\nhello"),
            ("te-identity", "Transfer-Encoding: identity\r\n\r\nhello"),
            ("te-chunked-identity", "Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("te-xchunked", "Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("te-chunkedx", "Transfer-Encoding: chunkedx\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("cl-and-te", "Content-Length: 5\r\n\(chunked)\r\n0\r\n\r\n"),
            ("te-and-cl", "\(chunked)Content-Length: 5\r\n\r\n0\r\n\r\n"),
            ("double-cl-different", "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            ("cl-list-different", "Content-Length: 5, 6\r\n\r\nhello!"),
            ("cl-negative", "Content-Length: -1\r\n\r\n"),
            ("cl-plus-sign", "Content-Length: +5\r\n\r\nhello"),
            ("cl-hex", "Content-Length: 0x5\r\n\r\nhello"),
            ("cl-overflow", "Content-Length: 18446744073709551616\r\n\r\nhello"),
            ("te-space-before-colon", "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            ("te-vertical-tab", "Transfer-Encoding: \u{0B}chunked\r\n\r\n0\r\n\r\n"),
            ("te-obs-fold", "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
            ("te-http10", "\(chunked)\r\n0\r\n\r\n"),
        ]
        for (name, rest) in cases {
            let version = name == "te-http10" ? "HTTP/1.0" : "HTTP/1.1"
            let before = try upstream.requestCount()
            let connection = try TestConnection(port: port)
            try connection.send("POST /echo/public \(version)\r\nHost: gw.test\r\n\(rest)")
            let response = try connection.readResponse()
            #expect((400...499).contains(response.status), "\(name): \(Self.describe(response))")
            #expect(try upstream.requestCount() == before, "\(name): the upstream received the request")
        }
    }

    @Test("HTTP/1.0 without Host: the upstream gets the endpoint's host:port, or the upstream's host")
    func http10WithoutHost() throws {
        let upstream = try DemoUpstream()
        let keys = try TemporaryDirectory()
        try "\(Self.key)\n".write(toFile: keys.file("keys"), atomically: false, encoding: .utf8)
        for configured in [nil, "api.internal:8443"] as [String?] {
            var config = Self.config(upstream: upstream, keysFile: keys.file("keys"))
            if let configured {
                config = config.replacingOccurrences(
                    of: "endpoints: [\"\(upstream.endpoint)\"]",
                    with: "endpoints: [\"\(upstream.endpoint)\"]\n    host: \(configured)")
            }
            let gatewayd = try GatewaydProcess(config: config)
            let connection = try TestConnection(port: try gatewayd.port())
            try connection.send("GET /echo/h10 HTTP/1.0\r\n\r\n")
            let response = try connection.readResponse()
            let hosts = Self.echoedHeaders(response).filter { $0.0.lowercased() == "host" }.map(\.1)
            #expect(response.status == 200)
            #expect(hosts == [configured ?? upstream.endpoint], "\(response.body)")
        }
    }

    // MARK: Helpers

    static func describe(_ response: HTTPResponse) -> String {
        "\(response.status) \(response.body.prefix(120))"
    }

    static func echo(_ response: HTTPResponse) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
    }

    static func echoedPath(_ response: HTTPResponse) -> String? {
        echo(response)?["path"] as? String
    }

    static func echoedHeaders(_ response: HTTPResponse) -> [(String, String)] {
        (echo(response)?["headers"] as? [[String]] ?? []).compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
    }
}

import GatewayConfig
import GatewayCore
import GatewayHTTP
import Testing

/// `paths`, `trusted_proxies`, `proxy_protocol` and an upstream's `host`.
@Suite struct ClientAndPathConfigTests {
    @Test func defaultsAreNginxs() throws {
        let config = try #require(parse(minimalListeners))
        #expect(
            config.paths == PathsConfig(rules: PathRules(mergeSlashes: true, semicolons: .reject), caseSensitive: true))
        #expect(config.trustedProxies.isEmpty)
        #expect(config.listeners[0].proxyProtocol == false)
        #expect(config.listeners[0].trustedProxies == nil)
    }

    @Test func everyKey() throws {
        let config = try #require(
            parse(
                """
                paths: { merge_slashes: false, semicolons: allow, case_sensitive: false }
                trusted_proxies: [10.0.0.0/8, 192.0.2.7, "fd00::/8"]
                listeners:
                  - { name: web, address: 127.0.0.1:8080, proxy_protocol: true, trusted_proxies: [] }
                  - { name: api, address: 127.0.0.1:8081 }
                upstreams:
                  app: { endpoints: [127.0.0.1:9000], host: "app.internal:8443" }

                """))
        #expect(
            config.paths == PathsConfig(rules: PathRules(mergeSlashes: false, semicolons: .allow), caseSensitive: false)
        )
        #expect(config.trustedProxies.map(\.description) == ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"])
        #expect(config.listeners[0].proxyProtocol)
        #expect(config.trustedProxies(on: "web").isEmpty)
        #expect(config.trustedProxies(on: "api").count == 3)
        #expect(config.upstreams[0].host == "app.internal:8443")
    }

    @Test func addressRanges() throws {
        let block = try AddressRange(parsing: "10.0.0.0/8")
        #expect(block.contains(try #require(IPAddress("10.200.3.4"))))
        #expect(!block.contains(try #require(IPAddress("11.0.0.1"))))
        // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6.
        #expect(block.contains(try #require(IPAddress("::ffff:10.1.1.1"))))
        let v6 = try AddressRange(parsing: "2001:db8::/32")
        #expect(v6.contains(try #require(IPAddress("2001:db8:1::5"))))
        #expect(!v6.contains(try #require(IPAddress("2001:db9::5"))))
        #expect(try AddressRange(parsing: "0.0.0.0/0").contains(try #require(IPAddress("203.0.113.9"))))
        #expect(!(try AddressRange(parsing: "0.0.0.0/0").contains(try #require(IPAddress("2001:db8::1")))))
        #expect(IPAddress("2001:db8::1")?.description == "2001:db8::1")
        #expect(IPAddress("10.0.0.1")?.description == "10.0.0.1")
        for text in ["0.0.0.0", "255.255.255.255", "192.0.2.10", "10.0.100.7", "1.22.203.99"] {
            #expect(IPAddress(text)?.description == text)
        }
    }

    @Test func mistakesAreNamedWhereTheyAre() {
        #expect(
            problems(
                """
                paths: { merge_slashes: yes, semicolons: strip }
                trusted_proxies: [10.1.2.3/8, "10.0.0.0/33", example.com]
                listeners:
                  - { name: web, address: 127.0.0.1:8080, proxy_protocol: 1 }
                upstreams:
                  app: { endpoints: [127.0.0.1:9000], host: "user@app" }

                """) == [
                    "gateway.yaml:1:25: paths.merge_slashes: expected true or false, got a boolean yes",
                    "gateway.yaml:1:42: paths.semicolons: must be reject or allow, got \"strip\"",
                    "gateway.yaml:2:19: trusted_proxies[0]: invalid address range \"10.1.2.3/8\": host bits are set; the network is 10.0.0.0/8",
                    "gateway.yaml:2:31: trusted_proxies[1]: invalid address range \"10.0.0.0/33\": the prefix length must be a number from 0 to 32",
                    "gateway.yaml:2:46: trusted_proxies[2]: invalid address range \"example.com\": \"example.com\" is not an IP address",
                    "gateway.yaml:4:59: listeners[0].proxy_protocol: expected true or false, got an integer 1",
                    "gateway.yaml:6:45: upstreams.app.host: invalid host \"user@app\": expected HOST or HOST:PORT",
                ])
    }

    /// A route path that no canonical request path can equal is a mistake worth an error.
    @Test func routePathsMustBeCanonical() {
        #expect(
            problems(
                minimalListeners + """
                    routes:
                      - { name: a, match: { path_prefix: /a//b }, direct_response: { status: 200 } }
                      - { name: b, match: { path: /b/./c }, direct_response: { status: 200 } }
                      - { name: c, match: { path_prefix: /%61pi }, direct_response: { status: 200 } }
                      - { name: d, match: { path_prefix: /x;y }, direct_response: { status: 200 } }
                      - { name: e, match: { path: /a%2Fb }, direct_response: { status: 200 } }
                      - { name: f, match: { path: /ok/%c3%a9 }, direct_response: { status: 200 } }

                    """) == [
                    "gateway.yaml:5:38: routes[0].match.path_prefix: \"/a//b\" can never match: requests are routed on their canonical path, here \"/a/b\"",
                    "gateway.yaml:6:31: routes[1].match.path: \"/b/./c\" can never match: requests are routed on their canonical path, here \"/b/c\"",
                    "gateway.yaml:7:38: routes[2].match.path_prefix: \"/%61pi\" can never match: requests are routed on their canonical path, here \"/api\"",
                    "gateway.yaml:8:38: routes[3].match.path_prefix: \"/x;y\" can never match: such a request is refused (a ';' in the path (path parameters are refused: paths.semicolons))",
                    "gateway.yaml:9:31: routes[4].match.path: \"/a%2Fb\" can never match: such a request is refused (an encoded '/' (%2F) in the path)",
                    "gateway.yaml:10:31: routes[5].match.path: \"/ok/%c3%a9\" can never match: requests are routed on their canonical path, here \"/ok/%C3%A9\"",
                ])
        // With merge_slashes off, empty segments are paths of their own.
        #expect(
            problems(
                "paths: { merge_slashes: false }\n" + minimalListeners
                    + "routes:\n  - { name: a, match: { path_prefix: /a//b }, direct_response: { status: 200 } }\n")
                == [])
    }
}

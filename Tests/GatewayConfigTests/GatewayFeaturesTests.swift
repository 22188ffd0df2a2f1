import GatewayCore
import Testing

@testable import GatewayConfig

/// The gateway sections: upstreams, proxy and redirect routes, header rules, auth, rate limits,
/// limits, access log, admin, user and group. Parsed with `FakeSystem`: no DNS, no disk.
@Suite struct GatewayFeaturesTests {
    /// The example from docs/configuration.md, with the listeners it needs.
    static let example = """
        user: www-data
        group: www-data
        listeners:
          - { name: web, address: "0.0.0.0:8080" }
          - { name: admin, address: "127.0.0.1:9090" }
        upstreams:
          api:
            endpoints: [127.0.0.1:9001, 127.0.0.1:9002]
            balance: round_robin
            connect_timeout: 2s
            response_timeout: 30s
            keepalive: { max_idle_per_endpoint: 32, idle_timeout: 60s }
            health: { max_failures: 3, eject_for: 10s }
            retries: 1
        routes:
          - name: api
            match: { host: api.example.com, path_prefix: /v1/, methods: [GET, POST] }
            upstream: api
            strip_prefix: /v1
            request_headers: { set: { x-env: prod }, remove: [x-debug] }
            response_headers: { set: { x-served-by: gatewayd } }
            auth: { api_keys: { header: x-api-key, keys_file: keys.txt } }
            rate_limit: { per: api_key, rate: 100/s, burst: 200 }
          - name: old
            match: { path_prefix: /old/ }
            redirect: { status: 301, location: https://example.com/new/ }
        limits: { max_header_bytes: 32KiB, max_body_bytes: 10MiB, header_timeout: 10s, idle_timeout: 60s }
        access_log: { path: stdout, format: json }
        admin: { listener: admin }

        """

    static func endpoint(_ text: String) -> UpstreamEndpoint {
        UpstreamEndpoint(text: text, address: try! ListenerAddress(parsing: text))
    }

    @Test func parsesTheExample() throws {
        let (config, files) = try #require(FakeSystem().parse(Self.example))
        let expected = GatewayConfiguration(
            listeners: [
                ListenerConfig(name: "web", address: try ListenerAddress(parsing: "0.0.0.0:8080")),
                ListenerConfig(name: "admin", address: try ListenerAddress(parsing: "127.0.0.1:9090")),
            ],
            routes: [
                RouteConfig(
                    name: "api",
                    match: RouteMatch(pathPrefix: "/v1/", host: .exact("api.example.com"), methods: ["GET", "POST"]),
                    action: .upstream(ProxyAction(upstream: "api", stripPrefix: "/v1")),
                    requestHeaders: HeaderRules(set: [HeaderField(name: "x-env", value: "prod")], remove: ["x-debug"]),
                    responseHeaders: HeaderRules(set: [HeaderField(name: "x-served-by", value: "gatewayd")]),
                    auth: AuthConfig(
                        scheme: .apiKey(header: "x-api-key"), keysFile: "/etc/gw/keys.txt",
                        keys: ["key-one", "key-two"]),
                    rateLimit: RateLimitConfig(per: .apiKey, rate: 100, burst: 200)),
                RouteConfig(
                    name: "old", match: RouteMatch(pathPrefix: "/old/"),
                    action: .redirect(Redirect(status: 301, location: "https://example.com/new/"))),
            ],
            upstreams: [
                UpstreamConfig(
                    name: "api", endpoints: [Self.endpoint("127.0.0.1:9001"), Self.endpoint("127.0.0.1:9002")])
            ],
            limits: LimitsConfig(),
            accessLog: AccessLogConfig(path: "stdout", format: .json),
            admin: AdminConfig(listener: "admin"),
            user: "www-data",
            group: "www-data")
        #expect(config == expected)
        #expect(files == ["/etc/gw/keys.txt": Array(FakeSystem().files["/etc/gw/keys.txt"]!.utf8)])
    }

    @Test func everyValueDifferentFromItsDefault() throws {
        let system = FakeSystem()
        let (config, _) = try #require(
            system.parse(
                twoListeners + """
                    user: 33
                    group: "0"
                    upstreams:
                      pool-1:
                        endpoints: ["[::1]:9001", localhost:9002, backend.internal:80]
                        balance: least_request
                        connect_timeout: 250ms
                        response_timeout: 1m30s
                        read_timeout: 2m
                        keepalive: { max_idle_per_endpoint: 0, idle_timeout: 5s }
                        health: { max_failures: 1, eject_for: 1m }
                        retries: 0
                      pool.2:
                        endpoints: [10.0.0.1:1]
                    routes:
                      - name: a
                        upstream: pool.2
                        auth: { bearer: { keys_file: /etc/gw/keys.txt } }
                        rate_limit: { per: client_ip, rate: 30/m }
                      - name: b
                        redirect: { status: 308, location: /elsewhere }
                        response_headers: { remove: [Server, X-Powered-By, server] }
                    limits:
                      { max_header_bytes: 1024, max_body_bytes: 0, header_timeout: 1s, idle_timeout: 2h, body_timeout: 5s,
                        tunnel_idle_timeout: 10m }
                    access_log: { path: /var/log/gatewayd/access.log, format: combined }

                    """))
        #expect(config.user == "33")
        #expect(config.group == "0")
        #expect(
            config.upstreams == [
                UpstreamConfig(
                    name: "pool-1",
                    endpoints: [
                        Self.endpoint("[::1]:9001"),
                        UpstreamEndpoint(
                            text: "localhost:9002", address: try ListenerAddress(parsing: "127.0.0.1:9002")),
                        UpstreamEndpoint(
                            text: "backend.internal:80", address: try ListenerAddress(parsing: "[fd00::7]:80")),
                    ],
                    balance: .leastRequest, connectTimeout: .milliseconds(250), responseTimeout: .seconds(90),
                    readTimeout: .seconds(120),
                    keepalive: UpstreamKeepalive(maxIdlePerEndpoint: 0, idleTimeout: .seconds(5)),
                    health: PassiveHealth(maxFailures: 1, ejectFor: .seconds(60)), retries: 0),
                UpstreamConfig(name: "pool.2", endpoints: [Self.endpoint("10.0.0.1:1")]),
            ])
        #expect(
            config.routes == [
                RouteConfig(
                    name: "a", match: RouteMatch(), action: .upstream(ProxyAction(upstream: "pool.2")),
                    auth: AuthConfig(scheme: .bearer, keysFile: "/etc/gw/keys.txt", keys: ["key-one", "key-two"]),
                    // 30/m is half a request a second; the burst is still 1.
                    rateLimit: RateLimitConfig(per: .clientIP, rate: 0.5, burst: 1)),
                RouteConfig(
                    name: "b", match: RouteMatch(), action: .redirect(Redirect(status: 308, location: "/elsewhere")),
                    responseHeaders: HeaderRules(remove: ["server", "x-powered-by"])),
            ])
        #expect(
            config.limits
                == LimitsConfig(
                    maxHeaderBytes: 1024, maxBodyBytes: 0, headerTimeout: .seconds(1), idleTimeout: .seconds(7200),
                    bodyTimeout: .seconds(5), tunnelIdleTimeout: .seconds(600)))
        #expect(config.accessLog == AccessLogConfig(path: "/var/log/gatewayd/access.log", format: .combined))
        #expect(config.admin == nil)
    }

    @Test func defaults() throws {
        let (config, files) = try #require(
            FakeSystem().parse(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                    routes:
                      - { name: a, upstream: api, rate_limit: { per: client_ip, rate: 2.5/s } }
                      - { name: b, redirect: { location: "https://example.com/" } }
                      - name: c
                        upstream: api
                        auth: { api_keys: { keys_file: keys.txt } }
                    limits: {}
                    access_log: {}

                    """))
        let upstream = try #require(config.upstreams.first)
        #expect(upstream.balance == .roundRobin)
        #expect(upstream.connectTimeout == .seconds(2))
        #expect(upstream.responseTimeout == .seconds(30))
        #expect(upstream.keepalive == UpstreamKeepalive(maxIdlePerEndpoint: 32, idleTimeout: .seconds(60)))
        #expect(upstream.health == PassiveHealth(maxFailures: 3, ejectFor: .seconds(10)))
        #expect(upstream.retries == 1)
        #expect(config.routes[0].rateLimit == RateLimitConfig(per: .clientIP, rate: 2.5, burst: 3))
        #expect(config.routes[0].requestHeaders.isEmpty && config.routes[0].responseHeaders.isEmpty)
        #expect(config.routes[1].action == .redirect(Redirect(status: 301, location: "https://example.com/")))
        #expect(config.routes[2].auth?.scheme == .apiKey(header: "x-api-key"))
        #expect(config.limits == LimitsConfig())
        #expect(
            config.limits
                == LimitsConfig(
                    maxHeaderBytes: 32768, maxBodyBytes: 10_485_760, headerTimeout: .seconds(10),
                    idleTimeout: .seconds(60)))
        #expect(config.accessLog == AccessLogConfig(path: "stdout", format: .json))
        #expect(config.admin == nil && config.user == nil && config.group == nil)
        #expect(files.keys.sorted() == ["/etc/gw/keys.txt"])

        // Left out entirely (or null): no access log, no admin, default limits, no upstreams.
        let (bare, bareFiles) = try #require(FakeSystem().parse(twoListeners + "access_log:\nadmin: ~\n"))
        #expect(bare.accessLog == nil && bare.admin == nil && bare.upstreams.isEmpty && bare.limits == LimitsConfig())
        #expect(bareFiles.isEmpty)
    }

    // MARK: - Upstreams

    @Test func upstreamKeysAndNames() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      "bad name": { endpoints: [127.0.0.1:1] }
                      api:
                        endpoint: [127.0.0.1:1]
                        balance: random
                        retry: 2
                      empty: { endpoints: [] }
                      none:
                      list: [127.0.0.1:1]

                    """) == [
                    "gateway.yaml:5:3: upstreams: invalid name \"bad name\": use 1 to 64 letters, digits, '_', '.' or '-'",
                    "gateway.yaml:7:5: unknown key 'endpoint' in upstreams.api (did you mean 'endpoints'?)",
                    "gateway.yaml:7:5: upstreams.api: missing required key 'endpoints'",
                    "gateway.yaml:8:14: upstreams.api.balance: must be round_robin or least_request, got \"random\"",
                    "gateway.yaml:9:5: unknown key 'retry' in upstreams.api",
                    "gateway.yaml:10:23: upstreams.empty.endpoints: at least one endpoint is required",
                    "gateway.yaml:11:8: upstreams.none: expected a mapping, got null",
                    "gateway.yaml:12:9: upstreams.list: expected a mapping, got a list",
                ])
        #expect(
            FakeSystem().problems(twoListeners + "upstreams: [a]\n") == [
                "gateway.yaml:4:12: upstreams: expected a mapping, got a list"
            ])
    }

    @Test func upstreamValues() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      api:
                        endpoints: [127.0.0.1:1]
                        balance: roundrobin
                        connect_timeout: 0s
                        response_timeout: 30
                        read_timeout: -1s
                        keepalive: { max_idle_per_endpoint: 10001, idle_timeout: 0ms, max_idle: 1 }
                        health: { max_failures: 0, eject_for: 25h }
                        retries: 11

                    """) == [
                    "gateway.yaml:7:14: upstreams.api.balance: must be round_robin or least_request, got \"roundrobin\" (did you mean 'round_robin'?)",
                    "gateway.yaml:8:22: upstreams.api.connect_timeout: must be greater than 0s",
                    "gateway.yaml:9:23: upstreams.api.response_timeout: invalid duration \"30\" (expected e.g. 250ms, 30s, 2m); a unit is required",
                    "gateway.yaml:10:19: upstreams.api.read_timeout: invalid duration \"-1s\" (expected e.g. 250ms, 30s, 2m)",
                    "gateway.yaml:11:41: upstreams.api.keepalive.max_idle_per_endpoint: must be from 0 to 10000, got 10001",
                    "gateway.yaml:11:62: upstreams.api.keepalive.idle_timeout: must be greater than 0s",
                    "gateway.yaml:11:67: unknown key 'max_idle' in upstreams.api.keepalive",
                    "gateway.yaml:12:29: upstreams.api.health.max_failures: must be at least 1, got 0",
                    "gateway.yaml:12:43: upstreams.api.health.eject_for: must be at most 24h",
                    "gateway.yaml:13:14: upstreams.api.retries: must be from 0 to 10, got 11",
                ])
    }

    @Test func endpoints() {
        let system = FakeSystem()
        #expect(
            system.problems(
                twoListeners + """
                    upstreams:
                      api:
                        endpoints:
                          - 127.0.0.1
                          - 127.0.0.1:0
                          - 127.0.0.1:65536
                          - ::1:80
                          - "[::1]"
                          - "[nope]:80"
                          - 127.0.0.256:80
                          - 127.1:80
                          - "bad host:80"
                          - a..b:80
                          - nowhere.invalid:80
                          - 127.0.0.1:9001
                          - 127.0.0.1:9001
                          - localhost:9001
                          - "[::1]:9001"
                          - "[0:0::1]:9001"
                          - { host: x }

                    """) == [
                    "gateway.yaml:7:9: upstreams.api.endpoints[0]: invalid endpoint \"127.0.0.1\": expected HOST:PORT",
                    "gateway.yaml:8:9: upstreams.api.endpoints[1]: invalid endpoint \"127.0.0.1:0\": the port must be a number from 1 to 65535",
                    "gateway.yaml:9:9: upstreams.api.endpoints[2]: invalid endpoint \"127.0.0.1:65536\": the port must be a number from 1 to 65535",
                    "gateway.yaml:10:9: upstreams.api.endpoints[3]: invalid endpoint \"::1:80\": IPv6 addresses need brackets: [::1]:9001",
                    "gateway.yaml:11:9: upstreams.api.endpoints[4]: invalid endpoint \"[::1]\": expected [IPV6]:PORT",
                    "gateway.yaml:12:9: upstreams.api.endpoints[5]: invalid endpoint \"[nope]:80\": \"nope\" is not an IPv6 address",
                    "gateway.yaml:13:9: upstreams.api.endpoints[6]: invalid endpoint \"127.0.0.256:80\": \"127.0.0.256\" is not a valid IP address",
                    "gateway.yaml:14:9: upstreams.api.endpoints[7]: invalid endpoint \"127.1:80\": \"127.1\" is not a valid IP address",
                    "gateway.yaml:15:9: upstreams.api.endpoints[8]: invalid endpoint \"bad host:80\": \"bad host\" is neither an IP address nor a host name (letters, digits, '-' and '.'; internationalized names in their xn-- form)",
                    "gateway.yaml:16:9: upstreams.api.endpoints[9]: invalid endpoint \"a..b:80\": empty label in \"a..b\" (two dots in a row, or a dot at the start or end)",
                    "gateway.yaml:17:9: upstreams.api.endpoints[10]: cannot resolve \"nowhere.invalid\": Name or service not known",
                    "gateway.yaml:19:9: upstreams.api.endpoints[12]: 127.0.0.1:9001 is already listed as endpoints[11]",
                    "gateway.yaml:20:9: upstreams.api.endpoints[13]: \"localhost:9001\" (127.0.0.1:9001) is already listed as endpoints[11]",
                    "gateway.yaml:22:9: upstreams.api.endpoints[15]: \"[0:0::1]:9001\" ([::1]:9001) is already listed as endpoints[14]",
                    "gateway.yaml:23:9: upstreams.api.endpoints[16]: expected a string, got a mapping",
                ])
        // Only the host names were looked up, each once.
        #expect(
            system.log.lookups.withLock { $0 } == ["resolve nowhere.invalid", "resolve localhost"])
    }

    // MARK: - Actions

    @Test func routeActions() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                      apps: { endpoints: [127.0.0.1:9002] }
                      broken: { endpoints: [] }
                    routes:
                      - { name: a, upstream: apj }
                      - { name: b, upstream: pool }
                      - { name: c, upstream: broken }
                      - { name: d, upstream: api, redirect: { location: / } }
                      - { name: e, upstream: [api] }
                      - name: f
                        redirect: { status: 200, location: "" }
                      - name: g
                        redirect: { status: "301", location: "/a\\r\\nSet-Cookie: x=1", code: 302 }
                      - name: h
                        redirect: {}

                    """) == [
                    "gateway.yaml:7:24: upstreams.broken.endpoints: at least one endpoint is required",
                    "gateway.yaml:9:26: routes[0].upstream: unknown upstream 'apj' (did you mean 'api'?)",
                    "gateway.yaml:10:26: routes[1].upstream: unknown upstream 'pool' (upstreams: api, apps, broken)",
                    "gateway.yaml:12:31: routes[3]: route 'd' has more than one action (upstream, redirect); a route takes exactly one",
                    "gateway.yaml:13:26: routes[4].upstream: expected a string, got a list",
                    "gateway.yaml:15:25: routes[5].redirect.status: must be 301, 302, 303, 307 or 308, got 200",
                    "gateway.yaml:15:40: routes[5].redirect.location: must not be empty",
                    "gateway.yaml:17:25: routes[6].redirect.status: expected an integer, got a string \"301\"",
                    "gateway.yaml:17:42: routes[6].redirect.location: must not contain control characters such as CR or LF, found CR",
                    "gateway.yaml:17:67: unknown key 'code' in routes[6].redirect",
                    "gateway.yaml:19:15: routes[7].redirect: missing required key 'location'",
                ])
        #expect(
            FakeSystem().problems(twoListeners + "routes:\n  - { name: a, upstream: api }\n") == [
                "gateway.yaml:5:26: routes[0].upstream: unknown upstream 'api' (no upstreams are defined)"
            ])
    }

    @Test func stripPrefix() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                    routes:
                      - { name: a, upstream: api, strip_prefix: v1 }
                      - { name: b, upstream: api, strip_prefix: /v1/ }
                      - { name: c, upstream: api, strip_prefix: / }
                      - { name: d, match: { path_prefix: /v2/ }, upstream: api, strip_prefix: /v1 }
                      - { name: e, match: { path: /x }, upstream: api, strip_prefix: /x/y }
                      - { name: f, redirect: { location: / }, strip_prefix: /v1 }
                      - { name: g, direct_response: { status: 200 }, request_headers: { remove: [x-a] } }
                      - { name: h, upstream: api, strip_prefix: /a b }

                    """) == [
                    "gateway.yaml:7:45: routes[0].strip_prefix: must start with '/', got \"v1\"",
                    "gateway.yaml:8:45: routes[1].strip_prefix: must not end with '/' (the rest of the path keeps its leading '/': write \"/v1\")",
                    "gateway.yaml:9:45: routes[2].strip_prefix: must not end with '/' (the rest of the path keeps its leading '/': '/' would strip nothing)",
                    "gateway.yaml:10:75: routes[3].strip_prefix: \"/v1\" is not a prefix of match.path_prefix \"/v2/\", so it would never be stripped",
                    "gateway.yaml:11:66: routes[4].strip_prefix: \"/x/y\" is not a prefix of match.path \"/x\", so it would never be stripped",
                    "gateway.yaml:12:43: routes[5].strip_prefix: only a route with 'upstream' forwards requests; this one has 'redirect'",
                    "gateway.yaml:13:50: routes[6].request_headers: only a route with 'upstream' forwards requests; this one has 'direct_response'",
                    "gateway.yaml:14:45: routes[7].strip_prefix: must not contain spaces",
                ])
    }

    // MARK: - Header rules

    @Test func headerRules() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                    routes:
                      - name: a
                        upstream: api
                        request_headers:
                          set:
                            "bad name": x
                            Connection: close
                            X-Env: prod
                            x-env: staging
                            x-split: "a\\nb"
                            x-tab: "a\\tb"
                            x-list: [a]
                          remove: [x-debug, Transfer-Encoding, "a b", te, 5]
                          add: { x: y }
                        response_headers:
                          set: { Content-Length: "0", keep-alive: "timeout=5", upgrade: h2c, trailer: x }
                          remove: [Proxy-Connection]
                      - name: b
                        direct_response: { status: 200 }
                        response_headers: { remove: x-a, set: [x] }

                    """) == [
                    "gateway.yaml:11:9: routes[0].request_headers.set: invalid header name 'bad name'",
                    "gateway.yaml:12:9: routes[0].request_headers.set: 'Connection' is hop-by-hop; gatewayd manages it for each connection, so it cannot be configured",
                    "gateway.yaml:14:9: routes[0].request_headers.set.x-env: the same header as 'X-Env' (line 13); header names are case-insensitive",
                    "gateway.yaml:15:18: routes[0].request_headers.set.x-split: a header value must not contain control characters such as CR or LF, found LF",
                    "gateway.yaml:17:17: routes[0].request_headers.set.x-list: expected a string, got a list",
                    "gateway.yaml:18:25: routes[0].request_headers.remove[1]: 'Transfer-Encoding' frames the message; gatewayd writes it from the body, so it cannot be configured",
                    "gateway.yaml:18:44: routes[0].request_headers.remove[2]: invalid header name 'a b'",
                    "gateway.yaml:18:51: routes[0].request_headers.remove[3]: 'te' is hop-by-hop; gatewayd manages it for each connection, so it cannot be configured",
                    "gateway.yaml:19:7: unknown key 'add' in routes[0].request_headers",
                    "gateway.yaml:21:14: routes[0].response_headers.set: 'Content-Length' frames the message; gatewayd writes it from the body, so it cannot be configured",
                    "gateway.yaml:21:35: routes[0].response_headers.set: 'keep-alive' is hop-by-hop; gatewayd manages it for each connection, so it cannot be configured",
                    "gateway.yaml:21:60: routes[0].response_headers.set: 'upgrade' is hop-by-hop; gatewayd manages it for each connection, so it cannot be configured",
                    "gateway.yaml:21:74: routes[0].response_headers.set: 'trailer' announces the trailer fields of a chunked body; gatewayd forwards the sender's, so it cannot be configured",
                    "gateway.yaml:22:16: routes[0].response_headers.remove[0]: 'Proxy-Connection' is hop-by-hop; gatewayd manages it for each connection, so it cannot be configured",
                    "gateway.yaml:25:33: routes[1].response_headers.remove: expected a list, got a string \"x-a\"",
                    "gateway.yaml:25:43: routes[1].response_headers.set: expected a mapping, got a list",
                ])
    }

    @Test func headerNamesAreKeptOrLowerCased() throws {
        let (config, _) = try #require(
            FakeSystem().parse(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                    routes:
                      - name: a
                        upstream: api
                        request_headers: { set: { X-Env: prod, Host: api.internal, x-tab: "a\\tb", x-empty: "" }, remove: [X-Debug, x-debug] }

                    """))
        #expect(
            config.routes[0].requestHeaders
                == HeaderRules(
                    set: [
                        HeaderField(name: "X-Env", value: "prod"), HeaderField(name: "Host", value: "api.internal"),
                        HeaderField(name: "x-tab", value: "a\tb"), HeaderField(name: "x-empty", value: ""),
                    ],
                    remove: ["x-debug"]))
    }

    // MARK: - Auth

    @Test func authSchemes() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                    routes:
                      - { name: a, upstream: api, auth: {} }
                      - { name: b, upstream: api, auth: { api_keys: { keys_file: keys.txt }, bearer: { keys_file: keys.txt } } }
                      - { name: c, upstream: api, auth: { api_key: { keys_file: keys.txt } } }
                      - { name: d, upstream: api, auth: { api_keys: { header: "x key", keys_file: keys.txt } } }
                      - { name: e, upstream: api, auth: { api_keys: { header: Connection, keys_file: keys.txt } } }
                      - { name: f, upstream: api, auth: { api_keys: { header: x-key } } }
                      - { name: g, upstream: api, auth: { bearer: { keys_file: keys.txt, header: x } } }
                      - { name: h, upstream: api, auth: { bearer: { keys_file: "" } } }

                    """) == [
                    "gateway.yaml:7:37: routes[0].auth: needs a scheme: api_keys or bearer",
                    "gateway.yaml:8:74: routes[1].auth: has more than one scheme (api_keys, bearer); a route takes exactly one",
                    "gateway.yaml:9:37: routes[2].auth: needs a scheme: api_keys or bearer",
                    "gateway.yaml:9:39: unknown key 'api_key' in routes[2].auth (did you mean 'api_keys'?)",
                    "gateway.yaml:10:59: routes[3].auth.api_keys.header: invalid header name 'x key'",
                    "gateway.yaml:11:59: routes[4].auth.api_keys.header: 'Connection' is hop-by-hop; gatewayd manages it for each connection, so it cannot be configured",
                    "gateway.yaml:12:49: routes[5].auth.api_keys: missing required key 'keys_file'",
                    "gateway.yaml:13:70: unknown key 'header' in routes[6].auth.bearer",
                    "gateway.yaml:14:60: routes[7].auth.bearer.keys_file: must not be empty",
                ])
    }

    @Test func keysFiles() throws {
        var system = FakeSystem()
        system.files["/etc/gw/empty.txt"] = "# nothing yet\n\n   \n"
        system.files["/etc/gw/big.txt"] = String(repeating: "k", count: (1 << 20) + 1)
        system.files["/etc/gw/spaces.txt"] = "good-key\nsecret with spaces\nsecret\u{1}ctl\nanother one\n"
        system.files["/etc/gw/tokens.txt"] = "abc.DEF-123_~+/==\nnot=inside\n"
        system.files["/etc/gw/utf8.txt"] = "clé\n"
        let errors = system.problems(
            twoListeners + """
                upstreams:
                  api: { endpoints: [127.0.0.1:9001] }
                routes:
                  - { name: a, upstream: api, auth: { api_keys: { keys_file: /etc/gw/missing.txt } } }
                  - { name: b, upstream: api, auth: { api_keys: { keys_file: empty.txt } } }
                  - { name: c, upstream: api, auth: { api_keys: { keys_file: big.txt } } }
                  - { name: d, upstream: api, auth: { api_keys: { keys_file: ./spaces.txt } } }
                  - { name: e, upstream: api, auth: { bearer: { keys_file: tokens.txt } } }
                  - { name: f, upstream: api, auth: { api_keys: { keys_file: utf8.txt } } }
                  - { name: g, upstream: api, auth: { api_keys: { keys_file: /etc/gw } } }

                """)
        #expect(
            errors == [
                "gateway.yaml:7:62: routes[0].auth.api_keys.keys_file: cannot read '/etc/gw/missing.txt': No such file or directory",
                "gateway.yaml:8:62: routes[1].auth.api_keys.keys_file: '/etc/gw/empty.txt' has no keys (only blank lines and '#' comments)",
                "gateway.yaml:9:62: routes[2].auth.api_keys.keys_file: '/etc/gw/big.txt' is larger than 1MiB",
                "gateway.yaml:10:62: routes[3].auth.api_keys.keys_file: line 2 (and 2 more lines) of '/etc/gw/spaces.txt': a key is made of visible ASCII characters, without spaces",
                "gateway.yaml:11:60: routes[4].auth.bearer.keys_file: line 2 of '/etc/gw/tokens.txt': a bearer token is made of letters, digits, '-', '.', '_', '~', '+' and '/', with '=' only at its end (RFC 6750)",
                "gateway.yaml:12:62: routes[5].auth.api_keys.keys_file: line 1 of '/etc/gw/utf8.txt': a key is made of visible ASCII characters, without spaces",
                "gateway.yaml:13:62: routes[6].auth.api_keys.keys_file: cannot read '/etc/gw': Is a directory",
            ])
        // No key, good or bad, is ever shown.
        for secret in ["good-key", "secret", "another", "abc.DEF", "not=inside", "clé", "kkkk"] {
            #expect(!errors.joined().contains(secret))
        }
    }

    @Test func keysStayOutOfDescriptions() throws {
        let (config, _) = try #require(FakeSystem().parse(Self.example))
        let auth = try #require(config.routes[0].auth)
        #expect(auth.description == "AuthConfig(apiKey(header: \"x-api-key\"), keys_file: /etc/gw/keys.txt, 2 keys)")
        var dumped = ""
        dump(config, to: &dumped)
        #expect(dumped.contains("keys_file") || dumped.contains("keysFile"))
        for text in [
            String(describing: config), String(reflecting: config), String(describing: config.routes[0]), dumped,
        ] {
            #expect(!text.contains("key-one") && !text.contains("key-two"))
        }
    }

    // MARK: - Rate limits

    @Test func rateLimits() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    upstreams:
                      api: { endpoints: [127.0.0.1:9001] }
                    routes:
                      - { name: a, upstream: api, rate_limit: { per: api_key, rate: 10/s } }
                      - { name: b, upstream: api, rate_limit: { per: client, rate: 10 } }
                      - { name: c, upstream: api, rate_limit: { per: client_ip, rate: 0/s, burst: 0 } }
                      - { name: d, upstream: api, rate_limit: { per: client_ip, rate: 2000000000/s } }
                      - { name: e, upstream: api, rate_limit: { per: client_ip, rate: 10 per second } }
                      - { name: f, upstream: api, rate_limit: { rate: 1/s, limit: 1 } }
                      - { name: g, upstream: api, auth: { bearer: { keys_file: nope } }, rate_limit: { per: api_key, rate: 1/h } }

                    """) == [
                    "gateway.yaml:7:50: routes[0].rate_limit.per: api_key needs 'auth' on this route to know the key (or use client_ip)",
                    "gateway.yaml:8:50: routes[1].rate_limit.per: must be api_key or client_ip, got \"client\"",
                    "gateway.yaml:8:64: routes[1].rate_limit.rate: invalid rate \"10\" (expected e.g. 100/s, 6000/m, 0.5/s); a unit is required",
                    "gateway.yaml:9:67: routes[2].rate_limit.rate: must be more than 0, got \"0/s\"",
                    "gateway.yaml:9:79: routes[2].rate_limit.burst: must be at least 1, got 0",
                    "gateway.yaml:10:67: routes[3].rate_limit.rate: must be at most 1000000000/s, got \"2000000000/s\"",
                    "gateway.yaml:11:67: routes[4].rate_limit.rate: invalid rate \"10 per second\" (expected e.g. 100/s, 6000/m, 0.5/s)",
                    "gateway.yaml:12:43: routes[5].rate_limit: missing required key 'per'",
                    "gateway.yaml:12:56: unknown key 'limit' in routes[5].rate_limit",
                    "gateway.yaml:13:60: routes[6].auth.bearer.keys_file: cannot read '/etc/gw/nope': No such file or directory",
                ])
    }

    // MARK: - limits, access_log, admin, user, group

    @Test func limits() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    limits:
                      max_header_bytes: 512
                      max_body_bytes: 10 MiB
                      header_timeout: 0s
                      idle_timeout: forever
                      max_headers: 100
                      body_timeout: 60
                      tunnel_idle_timeout: 25h

                    """) == [
                    "gateway.yaml:5:21: limits.max_header_bytes: must be from 1KiB to 1MiB, got 512",
                    "gateway.yaml:6:19: limits.max_body_bytes: invalid size \"10 MiB\" (expected bytes, or a whole number with KiB, MiB or GiB, e.g. 32KiB)",
                    "gateway.yaml:7:19: limits.header_timeout: must be greater than 0s",
                    "gateway.yaml:8:17: limits.idle_timeout: invalid duration \"forever\" (expected e.g. 250ms, 30s, 2m)",
                    "gateway.yaml:9:3: unknown key 'max_headers' in limits",
                    "gateway.yaml:10:17: limits.body_timeout: invalid duration \"60\" (expected e.g. 250ms, 30s, 2m); a unit is required",
                    "gateway.yaml:11:24: limits.tunnel_idle_timeout: must be at most 24h",
                ])
        #expect(
            FakeSystem().problems(
                twoListeners
                    + "limits: { max_header_bytes: 2MiB, max_body_bytes: -1, idle_timeout: 1s }\nlimits2: 1\n")
                == [
                    "gateway.yaml:4:29: limits.max_header_bytes: must be from 1KiB to 1MiB, got 2MiB",
                    "gateway.yaml:4:51: limits.max_body_bytes: invalid size \"-1\" (expected bytes, or a whole number with KiB, MiB or GiB, e.g. 32KiB)",
                    "gateway.yaml:5:1: unknown key 'limits2' at the top level (did you mean 'limits'?)",
                ])
        #expect(
            FakeSystem().problems(twoListeners + "limits: { max_header_bytes: 01024, max_body_bytes: 1.5 }\n") == [
                "gateway.yaml:4:29: limits.max_header_bytes: leading zeros are not allowed (YAML would read 01024 as octal)",
                "gateway.yaml:4:52: limits.max_body_bytes: expected a size such as 32KiB, got a number 1.5",
            ])
    }

    @Test func accessLog() throws {
        var system = FakeSystem()
        system.files["/var/log/file"] = "x"
        let problems = { (value: String) in system.problems(twoListeners + "access_log: { path: \(value) }\n") }
        #expect(
            problems("/var/log/nope/access.log") == [
                "gateway.yaml:4:21: access_log.path: directory '/var/log/nope' does not exist"
            ])
        #expect(
            problems("/var/log/file/access.log") == [
                "gateway.yaml:4:21: access_log.path: '/var/log/file' is not a directory"
            ])
        #expect(
            problems("/var/log") == [
                "gateway.yaml:4:21: access_log.path: '/var/log' is a directory; name a file in it"
            ])
        #expect(problems("\"\"") == ["gateway.yaml:4:21: access_log.path: must not be empty"])
        #expect(
            system.problems(twoListeners + "access_log: { format: clf, paht: x }\n") == [
                "gateway.yaml:4:23: access_log.format: must be json or combined, got \"clf\"",
                "gateway.yaml:4:28: unknown key 'paht' in access_log (did you mean 'path'?)",
            ])
        for (path, stored) in [
            ("stderr", "stderr"), ("access.log", "/etc/gw/access.log"),
            ("/var/log//./access.log", "/var/log/access.log"),
            ("/access.log", "/access.log"),
        ] {
            let parsed = system.parse(twoListeners + "access_log: { path: \(path) }\n")
            #expect(parsed?.configuration.accessLog?.path == stored)
        }
        // A relative path is relative to the configuration file, not to the current directory.
        let parsed = system.parse(twoListeners + "access_log: { path: gatewayd/a.log }\n", file: "/var/log/gw.yaml")
        #expect(parsed?.configuration.accessLog?.path == "/var/log/gatewayd/a.log")
    }

    @Test func admin() {
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    admin: { listener: admn }
                    routes:
                      - { name: a, listener: admin, direct_response: { status: 200 } }

                    """) == [
                    "gateway.yaml:4:20: admin.listener: unknown listener 'admn' (did you mean 'admin'?)"
                ])
        #expect(
            FakeSystem().problems(
                twoListeners + """
                    admin: { listener: admin, path: /x }
                    routes:
                      - { name: a, listener: admin, direct_response: { status: 200 } }
                      - { name: b, direct_response: { status: 200 } }

                    """) == [
                    "gateway.yaml:4:27: unknown key 'path' in admin",
                    "gateway.yaml:6:26: routes[0].listener: 'admin' is the admin listener, which serves only /healthz, /readyz and /metrics",
                ])
        #expect(
            FakeSystem().problems(twoListeners + "admin: {}\n") == [
                "gateway.yaml:4:8: admin: missing required key 'listener'"
            ])
    }

    @Test func userAndGroup() {
        let system = FakeSystem()
        #expect(
            system.problems("user: wwwdata\ngroup: 4242\n" + twoListeners) == [
                "gateway.yaml:1:7: user: no such user 'wwwdata'",
                "gateway.yaml:2:8: group: no group has gid 4242",
            ])
        #expect(
            system.problems("user: 4242\ngroup: staff\n" + twoListeners) == [
                "gateway.yaml:1:7: user: no user has uid 4242",
                "gateway.yaml:2:8: group: no such group 'staff'",
            ])
        #expect(
            system.problems("user: \"\"\ngroup: \"a b\"\n" + twoListeners) == [
                "gateway.yaml:1:7: user: must not be empty (leave it out to keep the master's user)",
                "gateway.yaml:2:8: group: a group name must not contain spaces",
            ])
        #expect(
            system.problems("user: [root]\n" + twoListeners) == [
                "gateway.yaml:1:7: user: expected a string, got a list"
            ])
    }

    @Test func liveUserAndGroupLookUps() {
        // Every Linux has root; a name this long and odd is nobody's.
        #expect(problems("user: root\ngroup: \"0\"\n" + minimalListeners).isEmpty)
        #expect(
            problems("user: gatewayd-test-no-such-user\n" + minimalListeners) == [
                "gateway.yaml:1:7: user: no such user 'gatewayd-test-no-such-user'"
            ])
        #expect(
            problems("group: 4294967295\n" + minimalListeners) == [
                "gateway.yaml:1:8: group: no group has gid 4294967295"
            ])
    }

    @Test func liveHostNameResolution() throws {
        // localhost comes from /etc/hosts (or systemd's nss-myhostname): no DNS needed.
        let config = try #require(
            parse(minimalListeners + "upstreams:\n  a: { endpoints: [localhost:9001] }\n"))
        let address = try #require(config.upstreams.first?.endpoints.first?.address)
        #expect(["127.0.0.1", "::1"].contains(address.host))
        #expect(address.port == 9001)
    }
}

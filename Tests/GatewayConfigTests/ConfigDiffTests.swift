import GatewayConfig
import GatewayCore
import Testing

@Suite struct ConfigDiffTests {
    func listener(_ name: String, _ address: String, backlog: Int32 = ListenerConfig.defaultBacklog) -> ListenerConfig {
        ListenerConfig(name: name, address: try! ListenerAddress(parsing: address), backlog: backlog)
    }

    func route(_ name: String, status: Int = 200, listener: String? = nil) -> RouteConfig {
        RouteConfig(
            name: name, listener: listener, match: RouteMatch(), action: .directResponse(DirectResponse(status: status))
        )
    }

    func config(
        _ listeners: [ListenerConfig], routes: [RouteConfig] = [], workers: Int? = nil,
        drain: Duration = .seconds(30)
    ) -> GatewayConfiguration {
        GatewayConfiguration(workers: workers, drainTimeout: drain, listeners: listeners, routes: routes)
    }

    @Test func identicalConfigurationsDiffEmpty() {
        let a = config([listener("web", "127.0.0.1:80")], routes: [route("r")])
        let diff = ConfigDiff(from: a, to: a)
        #expect(diff.isEmpty)
        #expect(diff.keptListeners == a.listeners)
        #expect(diff.changedSettings.isEmpty)
        #expect(diff.description == "no changes")
    }

    @Test func classifiesListenersByName() {
        let old = config([
            listener("web", "127.0.0.1:80"),
            listener("admin", "127.0.0.1:81"),
            listener("old", "127.0.0.1:82"),
        ])
        let new = config([
            listener("api", "[::]:8443"),
            listener("admin", "0.0.0.0:81"),
            listener("web", "127.0.0.1:80", backlog: 128),
        ])
        let diff = ConfigDiff(from: old, to: new)
        #expect(diff.addedListeners == [listener("api", "[::]:8443")])
        #expect(diff.removedListeners == [listener("old", "127.0.0.1:82")])
        #expect(
            diff.rebindListeners == [
                ListenerChange(old: listener("admin", "127.0.0.1:81"), new: listener("admin", "0.0.0.0:81"))
            ])
        #expect(diff.rebindListeners.map(\.name) == ["admin"])
        // A backlog change alone keeps the socket.
        #expect(diff.keptListeners == [listener("web", "127.0.0.1:80", backlog: 128)])
        #expect(diff.changedSettings == ["listener 'web' backlog 4096 -> 128"])
        #expect(!diff.isEmpty)
        #expect(
            diff.description
                == "listeners: +api [::]:8443, -old, admin 127.0.0.1:81 -> 0.0.0.0:81; listener 'web' backlog 4096 -> 128"
        )
    }

    @Test func reportsChangedSettings() {
        let web = [listener("web", "127.0.0.1:80")]
        var new = config(web, workers: 4, drain: .seconds(10))
        new.readyTimeout = .milliseconds(2500)
        new.maxDrainingGenerations = 2
        new.controlSocket = "/tmp/gw.sock"
        let diff = ConfigDiff(from: config(web, workers: nil), to: new)
        #expect(
            diff.changedSettings == [
                "workers auto -> 4",
                "drain_timeout 30s -> 10s",
                "ready_timeout 10s -> 2500ms",
                "max_draining_generations 4 -> 2",
                "control_socket default -> /tmp/gw.sock",
            ])
        #expect(diff.addedListeners.isEmpty && diff.removedListeners.isEmpty && diff.rebindListeners.isEmpty)
        #expect(diff.keptListeners == web)
    }

    @Test func summarizesRouteChanges() {
        let web = [listener("web", "127.0.0.1:80")]
        let old = config(web, routes: [route("a"), route("b"), route("y"), route("c")])
        let new = config(web, routes: [route("a", status: 201), route("b", listener: "web"), route("c"), route("x")])
        #expect(
            ConfigDiff(from: old, to: new).changedSettings == ["routes: 1 added (x), 1 removed (y), 2 changed (a, b)"])

        let reordered = config(web, routes: [route("c"), route("a"), route("b"), route("y")])
        #expect(ConfigDiff(from: old, to: reordered).changedSettings == ["routes: order changed"])

        let many = config(web, routes: old.routes + (1...7).map { route("n\($0)") })
        #expect(ConfigDiff(from: old, to: many).changedSettings == ["routes: 7 added (n1, n2, n3, n4, n5, ...)"])
    }

    @Test func diffsParsedConfigurations() throws {
        let old = try #require(parse(ConfigLoaderTests.specExample))
        let new = try #require(
            parse(
                ConfigLoaderTests.specExample
                    .replacingOccurrences("workers: 2 ", with: "workers: 3 ")
                    .replacingOccurrences("127.0.0.1:8080", with: "127.0.0.1:8081")))
        let diff = ConfigDiff(from: old, to: new)
        #expect(diff.rebindListeners.map(\.new.address.port) == [8081])
        #expect(diff.keptListeners.map(\.name) == ["admin"])
        #expect(diff.changedSettings == ["workers 2 -> 3"])
    }
}

@Suite struct ConfigDiffGatewayTests {
    static let web = [ListenerConfig(name: "web", address: try! ListenerAddress(parsing: "127.0.0.1:80"))]

    static func upstream(_ name: String, _ endpoints: String..., retries: Int = 1) -> UpstreamConfig {
        UpstreamConfig(
            name: name,
            endpoints: endpoints.map { UpstreamEndpoint(text: $0, address: try! ListenerAddress(parsing: $0)) },
            retries: retries)
    }

    @Test func reportsUpstreamChangesByName() {
        var old = GatewayConfiguration(listeners: Self.web, routes: [])
        old.upstreams = [
            Self.upstream("a", "127.0.0.1:1"), Self.upstream("b", "127.0.0.1:2"), Self.upstream("c", "127.0.0.1:3"),
        ]
        var new = old
        new.upstreams = [
            Self.upstream("c", "127.0.0.1:3"), Self.upstream("a", "127.0.0.1:1", "127.0.0.1:4"),
            Self.upstream("d", "127.0.0.1:5"),
        ]
        let diff = ConfigDiff(from: old, to: new)
        #expect(diff.changedSettings == ["upstreams: 1 added (d), 1 removed (b), 1 changed (a)"])
        #expect(diff.description == "upstreams: 1 added (d), 1 removed (b), 1 changed (a)")

        // Upstreams are found by name: a new order alone changes nothing.
        var reordered = old
        reordered.upstreams.reverse()
        #expect(ConfigDiff(from: old, to: reordered).isEmpty)

        var retried = old
        retried.upstreams[1].retries = 3
        #expect(ConfigDiff(from: old, to: retried).changedSettings == ["upstreams: 1 changed (b)"])
    }

    @Test func reportsServerSettings() {
        let old = GatewayConfiguration(listeners: Self.web, routes: [])
        var new = old
        new.limits = LimitsConfig(
            maxHeaderBytes: 64 * 1024, maxBodyBytes: 0, headerTimeout: .seconds(5), idleTimeout: .milliseconds(1500),
            bodyTimeout: .seconds(20), tunnelIdleTimeout: .seconds(300))
        new.accessLog = AccessLogConfig(path: "stdout", format: .json)
        new.admin = AdminConfig(listener: "web")
        new.user = "www-data"
        new.group = "33"
        let diff = ConfigDiff(from: old, to: new)
        #expect(
            diff.changedSettings == [
                "limits.max_header_bytes 32KiB -> 64KiB",
                "limits.max_body_bytes 10MiB -> unlimited",
                "limits.header_timeout 10s -> 5s",
                "limits.idle_timeout 1m -> 1500ms",
                "limits.body_timeout 1m -> 20s",
                "limits.tunnel_idle_timeout 1h -> 5m",
                "access_log off -> stdout (json)",
                "admin.listener none -> web",
                "user none -> www-data",
                "group none -> 33",
            ])
        var back = new
        back.accessLog = AccessLogConfig(path: "/var/log/gw.log", format: .combined)
        back.admin = nil
        back.user = nil
        #expect(
            ConfigDiff(from: new, to: back).changedSettings == [
                "access_log stdout (json) -> /var/log/gw.log (combined)",
                "admin.listener web -> none",
                "user www-data -> none",
            ])
        var traced = back
        traced.tracing = TracingConfig(otlpEndpoint: "http://127.0.0.1:4318/v1/traces", sampleRatio: 0.01)
        #expect(
            ConfigDiff(from: back, to: traced).changedSettings == [
                "tracing off -> http://127.0.0.1:4318/v1/traces (sample_ratio 0.01)"
            ])
    }

    @Test func aKeysFileWithNewKeysChangesItsRoute() {
        func route(_ keys: Set<String>) -> RouteConfig {
            RouteConfig(
                name: "api", match: RouteMatch(), action: .upstream(ProxyAction(upstream: "a")),
                auth: AuthConfig(scheme: .bearer, keysFile: "/etc/gw/keys.txt", keys: keys))
        }
        var old = GatewayConfiguration(listeners: Self.web, routes: [route(["k1"])])
        old.upstreams = [Self.upstream("a", "127.0.0.1:1")]
        var new = old
        new.routes = [route(["k1", "k2"])]
        let diff = ConfigDiff(from: old, to: new)
        #expect(diff.changedSettings == ["routes: 1 changed (api)"])
        #expect(!diff.description.contains("k1") && !diff.description.contains("k2"))
    }
}

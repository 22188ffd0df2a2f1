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

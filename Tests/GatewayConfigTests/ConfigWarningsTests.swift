import GatewayConfig
import Testing

/// `ConfigLoader.warnings`: valid settings that are almost certainly mistakes.
@Suite struct ConfigWarningsTests {
    /// The warnings for `routes` (a YAML list body) after two listeners and one upstream `api`.
    func warnings(routes: String, upstreams: String = "  api: { endpoints: [\"127.0.0.1:9\"] }\n") -> [String] {
        let yaml = """
            listeners:
              - { name: web, address: "127.0.0.1:8080" }
              - { name: other, address: "127.0.0.1:8081" }
            upstreams:
            \(upstreams)routes:
            \(routes)
            """
        guard let configuration = parse(yaml) else { return ["did not parse"] }
        let loaded = LoadedConfiguration(path: "gateway.yaml", bytes: Array(yaml.utf8), configuration: configuration)
        return ConfigLoader.warnings(for: loaded).map { $0.formatted(.warning) }
    }

    func shadowed(_ earlier: String, _ later: String) -> Bool {
        let routes = """
              - { name: a, \(earlier)upstream: api }
              - { name: b, \(later)upstream: api }
            """
        return warnings(routes: routes).contains { $0.contains("route 'b' never matches: route 'a'") }
    }

    @Test("a route is shadowed when the earlier one matches every request it would")
    func shadowing() {
        #expect(shadowed("", "match: { path: /x }, "))
        #expect(shadowed("match: { path_prefix: /api/ }, ", "match: { path_prefix: /api/v2/ }, "))
        #expect(shadowed("match: { path_prefix: /api/ }, ", "match: { path: /api/users }, "))
        #expect(shadowed("match: { path: /x }, ", "match: { path: /x, methods: [GET] }, "))
        #expect(shadowed("match: { methods: [GET, POST] }, ", "match: { methods: [GET] }, "))
        #expect(shadowed("match: { host: \"*.example.com\" }, ", "match: { host: api.example.com }, "))
        #expect(shadowed("match: { host: \"*.example.com\" }, ", "match: { host: \"*.eu.example.com\" }, "))
        #expect(shadowed("", "listener: other, "))
        #expect(shadowed("listener: web, ", "listener: web, match: { path: /x }, "))
    }

    @Test("a route that matches something the earlier one does not is not shadowed")
    func notShadowing() {
        #expect(!shadowed("match: { path: /x }, ", ""))
        #expect(!shadowed("match: { path_prefix: /api/v2/ }, ", "match: { path_prefix: /api/ }, "))
        #expect(!shadowed("match: { path: /x }, ", "match: { path: /y }, "))
        #expect(!shadowed("match: { methods: [GET] }, ", "match: { methods: [GET, POST] }, "))
        #expect(!shadowed("match: { methods: [GET] }, ", ""))
        #expect(!shadowed("match: { host: api.example.com }, ", "match: { host: \"*.example.com\" }, "))
        #expect(!shadowed("match: { host: \"*.example.com\" }, ", "match: { host: example.com }, "))
        #expect(!shadowed("match: { host: \"*.example.com\" }, ", ""))
        #expect(!shadowed("listener: web, ", ""))
        #expect(!shadowed("listener: web, ", "listener: other, "))
    }

    @Test("positions: the later route's name, the earlier one's line; an unused upstream's key")
    func positions() {
        let routes = """
              - name: all
                upstream: api
              - name: never
                match: { path: /x }
                direct_response: { status: 204 }
            """
        let upstreams = "  api: { endpoints: [\"127.0.0.1:9\"] }\n  spare: { endpoints: [\"127.0.0.1:9\"] }\n"
        #expect(
            warnings(routes: routes, upstreams: upstreams) == [
                "gateway.yaml:6:3: warning: upstreams.spare: no route uses upstream 'spare'",
                "gateway.yaml:10:11: warning: routes[1]: route 'never' never matches: route 'all' (line 8) comes "
                    + "first and matches every request it would (first match wins)",
            ])
    }

    @Test("no warning for an upstream in use and a single route")
    func none() {
        #expect(warnings(routes: "  - { name: a, upstream: api }\n") == [])
    }
}

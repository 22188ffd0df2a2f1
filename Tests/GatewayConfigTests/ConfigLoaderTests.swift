import GatewayConfig
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct ConfigLoaderTests {
    static let specExample = """
        workers: 2                  # optional
        drain_timeout: 30s
        ready_timeout: 10s
        max_draining_generations: 4
        control_socket: /run/gatewayd/control.sock
        listeners:
          - name: web
            address: 127.0.0.1:8080
            backlog: 4096
          - name: admin
            address: "[::1]:9090"
        routes:
          - name: hello
            listener: web
            match: { path_prefix: /, path: /exact, host: "*.example.com", methods: [GET, POST] }
            direct_response: { status: 200, headers: { content-type: text/plain }, body: "hello\\n" }
          - name: fallback
            direct_response:
              status: 404

        """

    @Test func parsesTheSpecExample() throws {
        let config = try #require(parse(Self.specExample))
        let expected = GatewayConfiguration(
            workers: 2,
            drainTimeout: .seconds(30),
            readyTimeout: .seconds(10),
            maxDrainingGenerations: 4,
            controlSocket: "/run/gatewayd/control.sock",
            listeners: [
                ListenerConfig(name: "web", address: ListenerAddress(family: .ipv4, host: "127.0.0.1", port: 8080)),
                ListenerConfig(name: "admin", address: ListenerAddress(family: .ipv6, host: "::1", port: 9090)),
            ],
            routes: [
                RouteConfig(
                    name: "hello", listener: "web",
                    match: RouteMatch(
                        pathPrefix: "/", path: "/exact", host: .suffix(".example.com"), methods: ["GET", "POST"]),
                    action: .directResponse(
                        DirectResponse(
                            status: 200, headers: [HeaderField(name: "content-type", value: "text/plain")],
                            body: "hello\n"))),
                RouteConfig(
                    name: "fallback", match: RouteMatch(), action: .directResponse(DirectResponse(status: 404))),
            ])
        #expect(config == expected)
    }

    @Test func absentOptionalKeysTakeTheirDefaults() throws {
        let config = try #require(parse(minimalListeners))
        #expect(config.workers == nil)
        #expect(config.drainTimeout == GatewayConfiguration.defaultDrainTimeout)
        #expect(config.drainTimeout == .seconds(30))
        #expect(config.readyTimeout == .seconds(10))
        #expect(config.maxDrainingGenerations == 4)
        #expect(config.controlSocket == nil)
        #expect(config.listeners.map(\.backlog) == [ListenerConfig.defaultBacklog])
        #expect(config.routes.isEmpty)
    }

    @Test func workerWatchdogTimeout() throws {
        #expect(try #require(parse(minimalListeners)).workerWatchdogTimeout == .seconds(10))
        #expect(
            try #require(parse("worker_watchdog_timeout: 3s\n" + minimalListeners)).workerWatchdogTimeout == .seconds(3)
        )
        #expect(
            problems("worker_watchdog_timeout: 1500ms\n" + minimalListeners) == [
                "gateway.yaml:1:26: worker_watchdog_timeout: must be at least 2s (workers report once a second)"
            ])
    }

    @Test func nullMeansTheDefault() throws {
        let config = try #require(
            parse(
                """
                workers:
                drain_timeout: ~
                control_socket: null
                \(minimalListeners)    backlog:
                routes:
                  - name: all
                    match:
                    direct_response: { status: 204, headers: ~, body: }

                """))
        #expect(config.workers == nil)
        #expect(config.drainTimeout == .seconds(30))
        #expect(config.controlSocket == nil)
        #expect(config.listeners[0].backlog == 4096)
        #expect(
            config.routes == [
                RouteConfig(name: "all", match: RouteMatch(), action: .directResponse(DirectResponse(status: 204)))
            ])
    }

    @Test func emptyRoutesIsValid() throws {
        #expect(try #require(parse(minimalListeners + "routes: []\n")).routes.isEmpty)
    }

    @Test func normalizesMatchValues() throws {
        let config = try #require(
            parse(
                minimalListeners + """
                    routes:
                      - name: a
                        match: { host: API.Example.COM, methods: [get, Post, GET] }
                        direct_response: { status: 200 }
                      - name: b
                        match: { host: "[2001:DB8::1]" }
                        direct_response: { status: 200 }

                    """))
        #expect(config.routes[0].match.host == .exact("api.example.com"))
        #expect(config.routes[0].match.methods == ["GET", "POST"])
        #expect(config.routes[1].match.host == .exact("[2001:db8::1]"))
    }

    @Test func keepsHeaderOrderAndBlockScalarBodies() throws {
        let config = try #require(
            parse(
                minimalListeners + """
                    routes:
                      - name: a
                        direct_response:
                          status: 503
                          headers:
                            retry-after: 120
                            Content-Type: text/html
                            x-empty: ""
                          body: |
                            <h1>Down for maintenance</h1>

                    """))
        guard case .directResponse(let response) = config.routes[0].action else { return }
        #expect(response.headers.map(\.name) == ["retry-after", "Content-Type", "x-empty"])
        #expect(response.headers.map(\.value) == ["120", "text/html", ""])
        #expect(response.body == "<h1>Down for maintenance</h1>\n")
    }

    @Test func portZeroMayRepeat() throws {
        let config = try #require(
            parse(
                """
                listeners:
                  - { name: a, address: "127.0.0.1:0" }
                  - { name: b, address: "127.0.0.1:0" }

                """))
        #expect(config.listeners.count == 2)
    }

    @Test func aliasesWorkForValues() throws {
        let config = try #require(
            parse(
                minimalListeners + """
                    routes:
                      - name: a
                        match: { path: /a }
                        direct_response: &gone { status: 410, body: gone }
                      - name: b
                        match: { path: /b }
                        direct_response: *gone

                    """))
        #expect(config.routes[0].action == config.routes[1].action)
    }

    @Test func byteOrderMarkAndCRLFAreFine() throws {
        let text = "\u{FEFF}" + minimalListeners.replacingOccurrences("\n", with: "\r\n")
        #expect(parse(text) != nil)
        // Lines still count one per CRLF, and the BOM takes no column.
        #expect(
            problems(
                "\u{FEFF}wrkers: 1\r\n" + minimalListeners.replacingOccurrences("\n", with: "\r\n") + "    x: 1\r\n")
                == [
                    "gateway.yaml:1:1: unknown key 'wrkers' at the top level (did you mean 'workers'?)",
                    "gateway.yaml:5:5: unknown key 'x' in listeners[0]",
                ])
    }

    @Test func loadReadsTheFileAndKeepsItsBytes() throws {
        let path = try temporaryFile(contents: Self.specExample)
        defer { unlink(path) }
        let loaded = try ConfigLoader.load(path: path)
        #expect(loaded.path == path)
        #expect(loaded.bytes == Array(Self.specExample.utf8))
        #expect(loaded.configuration == parse(Self.specExample))
    }

    @Test func theShippedExampleLoads() throws {
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let loaded = try ConfigLoader.load(path: "/" + root + "/examples/gateway.yaml")
        #expect(!loaded.configuration.routes.isEmpty)
        #expect(loaded.files.isEmpty)
    }

    @Test func loadReportsUnreadableFilesAtLineOne() {
        #expect(
            throws: ConfigError(diagnostics: [
                ConfigDiagnostic(
                    file: "/nonexistent/gateway.yaml", line: 1, column: 1,
                    message: "cannot read: No such file or directory")
            ])
        ) {
            try ConfigLoader.load(path: "/nonexistent/gateway.yaml")
        }
        #expect(
            throws: ConfigError(diagnostics: [
                ConfigDiagnostic(file: "/", line: 1, column: 1, message: "cannot read: Is a directory")
            ])
        ) {
            try ConfigLoader.load(path: "/")
        }
    }

    @Test func loadStopsReadingPastTheLimit() {
        #expect(problems(bytes: []).count == 1)
        do {
            _ = try ConfigLoader.load(path: "/dev/zero")
            Issue.record("/dev/zero parsed")
        } catch {
            #expect(
                error.description
                    == "/dev/zero:1:1: the file is larger than 1048576 bytes (1 MiB), the limit for a configuration")
        }
    }

    @Test func refusesMoreThanOneMebibyte() {
        let big = minimalListeners + "#" + String(repeating: "x", count: ConfigLoader.maximumSize) + "\n"
        #expect(
            problems(big) == [
                "gateway.yaml:1:1: the file is larger than 1048576 bytes (1 MiB), the limit for a configuration"
            ])
    }

    @Test func descriptionsUseTheCompilerFormat() {
        let diagnostic = ConfigDiagnostic(file: "g.yaml", line: 3, column: 16, message: "drain_timeout: bad")
        #expect(diagnostic.description == "g.yaml:3:16: drain_timeout: bad")
        let error = ConfigError(diagnostics: [
            diagnostic, ConfigDiagnostic(file: "g.yaml", line: 4, column: 1, message: "x"),
        ])
        #expect(error.description == "g.yaml:3:16: drain_timeout: bad\ng.yaml:4:1: x")
    }
}

func temporaryFile(contents: String) throws -> String {
    var template = Array("/tmp/gatewayconfig-test-XXXXXX.yaml".utf8CString)
    let fd = mkstemps(&template, 5)
    try #require(fd >= 0)
    defer { close(fd) }
    let bytes = Array(contents.utf8)
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    try #require(written == bytes.count)
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension String {
    /// Foundation-free, so the tests need no more than the module does.
    func replacingOccurrences(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

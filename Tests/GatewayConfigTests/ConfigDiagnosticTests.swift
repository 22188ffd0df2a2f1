import GatewayConfig
import Testing

/// Every error names the file, the 1-based line and column of the offending key or value, and
/// the key path. Each expectation spells out the whole line.
@Suite struct ConfigDiagnosticTests {
    // MARK: Keys

    @Test func unknownKeysAtEveryLevelWithSuggestions() {
        #expect(
            problems(
                """
                wrokers: 2
                listeners:
                  - name: web
                    adress: 127.0.0.1:8080
                routes:
                  - name: r
                    match: { path_prefx: / }
                    direct_response: { status: 200, bdy: x }
                    colour: blue

                """) == [
                    "gateway.yaml:1:1: unknown key 'wrokers' at the top level (did you mean 'workers'?)",
                    "gateway.yaml:3:5: listeners[0]: missing required key 'address'",
                    "gateway.yaml:4:5: unknown key 'adress' in listeners[0] (did you mean 'address'?)",
                    "gateway.yaml:7:14: unknown key 'path_prefx' in routes[0].match (did you mean 'path_prefix'?)",
                    "gateway.yaml:8:37: unknown key 'bdy' in routes[0].direct_response (did you mean 'body'?)",
                    "gateway.yaml:9:5: unknown key 'colour' in routes[0]",
                ])
    }

    @Test func suggestsAcrossCaseAndSeparators() {
        #expect(
            problems("drainTimeout: 5s\n" + minimalListeners) == [
                "gateway.yaml:1:1: unknown key 'drainTimeout' at the top level (did you mean 'drain_timeout'?)"
            ])
    }

    @Test func missingRequiredKeysPointAtTheirMapping() {
        #expect(problems("workers: 2\n") == ["gateway.yaml:1:1: missing required key 'listeners'"])
        #expect(
            problems(
                """
                listeners:
                  - address: 127.0.0.1:80
                routes:
                  - name: r
                    direct_response:
                      body: x

                """) == [
                    "gateway.yaml:2:5: listeners[0]: missing required key 'name'",
                    "gateway.yaml:6:7: routes[0].direct_response: missing required key 'status'",
                ])
    }

    @Test func repeatedYAMLKeysAreReportedWhereTheyRepeat() {
        #expect(
            problems(
                """
                listeners:
                  - name: web
                    address: 127.0.0.1:80
                    name: other
                    name: third
                workers: 1
                workers: 2

                """) == [
                    "gateway.yaml:4:5: duplicate key 'name' in listeners[0] (first defined at line 2)",
                    "gateway.yaml:5:5: duplicate key 'name' in listeners[0] (first defined at line 2)",
                    "gateway.yaml:7:1: duplicate key 'workers' at the top level (first defined at line 6)",
                ])
    }

    @Test func repeatedKeysInFlowMappings() {
        #expect(
            problems(
                """
                listeners:
                  - { "name": a, address: "127.0.0.1:1", name: b, backlog: x }

                """) == [
                    "gateway.yaml:2:42: duplicate key 'name' in listeners[0] (first defined at line 2)",
                    "gateway.yaml:2:60: listeners[0].backlog: expected an integer, got a string \"x\"",
                ])
    }

    @Test func keysMustBeStrings() {
        #expect(
            problems("[a, b]: 1\n~: 2\n" + minimalListeners) == [
                "gateway.yaml:1:1: keys must be strings, got a list as a key at the top level",
                "gateway.yaml:2:1: keys must be strings, got null as a key at the top level",
            ])
        #expect(
            problems("base: &base { workers: 2 }\n<<: *base\n" + minimalListeners) == [
                "gateway.yaml:1:1: unknown key 'base' at the top level",
                "gateway.yaml:2:1: merge keys ('<<') are not supported at the top level",
            ])
    }

    // MARK: Types and values

    @Test func wrongTypes() {
        #expect(
            problems(
                """
                workers: two
                ready_timeout: [1s]
                max_draining_generations: "4"
                listeners: { name: web }

                """) == [
                    "gateway.yaml:1:10: workers: expected an integer, got a string \"two\"",
                    "gateway.yaml:2:16: ready_timeout: expected a string, got a list",
                    "gateway.yaml:3:27: max_draining_generations: expected an integer, got a string \"4\"",
                    "gateway.yaml:4:12: listeners: expected a list, got a mapping",
                ])
        #expect(
            problems(
                minimalListeners + """
                    routes:
                      - name: r
                        match: [/a]
                        direct_response: 200
                      - name: s
                        match: { methods: GET }
                        direct_response: { status: 200, headers: [a] }

                    """) == [
                    "gateway.yaml:6:12: routes[0].match: expected a mapping, got a list",
                    "gateway.yaml:7:22: routes[0].direct_response: expected a mapping, got an integer 200",
                    "gateway.yaml:9:23: routes[1].match.methods: expected a list, got a string \"GET\"",
                    "gateway.yaml:10:46: routes[1].direct_response.headers: expected a mapping, got a list",
                ])
    }

    @Test func integersArePlainDecimalAndInRange() {
        #expect(
            problems(
                """
                workers: 2000
                max_draining_generations: 0
                listeners:
                  - { name: a, address: "127.0.0.1:1", backlog: 99999999999999999999999 }
                  - { name: b, address: "127.0.0.1:2", backlog: 1.5 }
                  - { name: c, address: "127.0.0.1:3", backlog: 0x10 }
                  - { name: d, address: "127.0.0.1:4", backlog: 010 }
                  - { name: e, address: "127.0.0.1:5", backlog: true }

                """) == [
                    "gateway.yaml:1:10: workers: must be from 1 to 1024, got 2000",
                    "gateway.yaml:2:27: max_draining_generations: must be at least 1, got 0",
                    "gateway.yaml:4:49: listeners[0].backlog: must be from 1 to 65535, got 99999999999999999999999",
                    "gateway.yaml:5:49: listeners[1].backlog: expected an integer, got a number 1.5",
                    "gateway.yaml:6:49: listeners[2].backlog: expected a decimal integer, got 0x10",
                    "gateway.yaml:7:49: listeners[3].backlog: leading zeros are not allowed (YAML would read 010 as octal)",
                    "gateway.yaml:8:49: listeners[4].backlog: expected an integer, got a boolean true",
                ])
    }

    @Test func durations() {
        #expect(
            problems(
                """
                # comment

                drain_timeout: 30 sec
                ready_timeout: 10

                """ + minimalListeners) == [
                    "gateway.yaml:3:16: drain_timeout: invalid duration \"30 sec\" (expected e.g. 250ms, 30s, 2m)",
                    "gateway.yaml:4:16: ready_timeout: invalid duration \"10\" (expected e.g. 250ms, 30s, 2m); a unit is required",
                ])
        #expect(
            problems("drain_timeout: 0s\nready_timeout: 25h\n" + minimalListeners) == [
                "gateway.yaml:1:16: drain_timeout: must be greater than 0s",
                "gateway.yaml:2:16: ready_timeout: must be at most 24h",
            ])
    }

    @Test func controlSocketPath() {
        let long = "/" + String(repeating: "s", count: 107)
        #expect(
            problems("control_socket: \(long)\n" + minimalListeners) == [
                "gateway.yaml:1:17: control_socket: a Unix socket path can have at most 107 bytes, this one has 108"
            ])
        #expect(
            problems("control_socket: \"\"\n" + minimalListeners) == [
                "gateway.yaml:1:17: control_socket: must not be empty (leave it out for the default)"
            ])
    }

    // MARK: Listeners

    @Test func emptyListeners() {
        #expect(problems("listeners: []\n") == ["gateway.yaml:1:12: listeners: at least one listener is required"])
        #expect(
            problems("workers: 1\nlisteners:\n") == ["gateway.yaml:2:11: listeners: at least one listener is required"])
    }

    @Test func listenerNamesAndAddresses() {
        #expect(
            problems(
                """
                listeners:
                  - name: web
                    address: 127.0.0.1:8080
                  - name: api
                    address: localhost:80
                  - name: web
                    address: 127.0.0.1:8081
                  - name: "we b"
                    address: "::1:80"
                  - name: \(String(repeating: "n", count: 65))
                    address: 127.0.0.1:8080

                """) == [
                    "gateway.yaml:5:14: listeners[1].address: invalid address \"localhost:80\": \"localhost\" is not an IP address (host names are not accepted)",
                    "gateway.yaml:6:11: listeners[2].name: duplicate listener name 'web' (first defined at line 2)",
                    "gateway.yaml:8:11: listeners[3].name: invalid name \"we b\": use 1 to 64 letters, digits, '_', '.' or '-'",
                    "gateway.yaml:9:14: listeners[3].address: invalid address \"::1:80\": IPv6 addresses need brackets: [::1]:8080",
                    "gateway.yaml:10:11: listeners[4].name: invalid name \"\(String(repeating: "n", count: 60))...\": use 1 to 64 letters, digits, '_', '.' or '-'",
                    "gateway.yaml:11:14: listeners[4].address: 127.0.0.1:8080 is already used by listener 'web' (line 3)",
                ])
    }

    // MARK: Routes

    @Test func routeListenerMustExist() {
        #expect(
            problems(
                """
                listeners:
                  - { name: web, address: "127.0.0.1:80" }
                  - { name: admin, address: "127.0.0.1:81" }
                routes:
                  - { name: a, listener: wbe, direct_response: { status: 200 } }
                  - { name: b, listener: public, direct_response: { status: 200 } }

                """) == [
                    "gateway.yaml:5:26: routes[0].listener: unknown listener 'wbe' (did you mean 'web'?)",
                    "gateway.yaml:6:26: routes[1].listener: unknown listener 'public' (listeners: admin, web)",
                ])
    }

    @Test func aListenerWithOtherErrorsIsStillKnownToRoutes() {
        #expect(
            problems(
                """
                listeners:
                  - { name: web, address: "nowhere:80" }
                routes:
                  - { name: a, listener: web, direct_response: { status: 200 } }

                """) == [
                    "gateway.yaml:2:27: listeners[0].address: invalid address \"nowhere:80\": \"nowhere\" is not an IP address (host names are not accepted)"
                ])
    }

    @Test func routesNeedExactlyOneActionAndUniqueNames() {
        #expect(
            problems(
                minimalListeners + """
                    routes:
                      - name: a
                        match: { path: /a }
                      - name: a
                        direct_response: { status: 200 }
                      - match: { path: /c }

                    """) == [
                    "gateway.yaml:5:5: routes[0]: route 'a' needs an action: one of direct_response, upstream, redirect",
                    "gateway.yaml:7:11: routes[1].name: duplicate route name 'a' (first defined at line 5)",
                    "gateway.yaml:9:5: routes[2]: missing required key 'name'",
                    "gateway.yaml:9:5: routes[2]: this route needs an action: one of direct_response, upstream, redirect",
                ])
    }

    @Test func matchValues() {
        #expect(
            problems(
                minimalListeners + """
                    routes:
                      - name: r
                        match:
                          path_prefix: api
                          path: "/a b"
                          host: example.com:8080
                          methods: []
                        direct_response: { status: 200 }
                      - name: s
                        match:
                          path: /x?y=1
                          host: "api.*.example.com"
                          methods: [GET, "BAD METHOD"]
                        direct_response: { status: 200 }

                    """) == [
                    "gateway.yaml:7:20: routes[0].match.path_prefix: must start with '/', got \"api\"",
                    "gateway.yaml:8:13: routes[0].match.path: must not contain spaces",
                    "gateway.yaml:9:13: routes[0].match.host: invalid host \"example.com:8080\": must not include a port (the request's port is ignored when matching)",
                    "gateway.yaml:10:16: routes[0].match.methods: must list at least one method (leave it out to match any method)",
                    "gateway.yaml:14:13: routes[1].match.path: must not contain '?' or '#': the path is matched without the query string",
                    "gateway.yaml:15:13: routes[1].match.host: invalid host \"api.*.example.com\": '*' is only allowed as the whole first label, as in \"*.example.com\"",
                    "gateway.yaml:16:22: routes[1].match.methods[1]: invalid method \"BAD METHOD\"",
                ])
    }

    @Test func directResponseValues() {
        #expect(
            problems(
                minimalListeners + """
                    routes:
                      - name: r
                        direct_response:
                          status: 600
                          headers:
                            "bad name": x
                            Content-Length: 5
                            x-split: "a\\r\\nb"
                      - name: s
                        direct_response: { status: "200" }
                      - name: t
                        direct_response: { status: 304, body: "not modified" }

                    """) == [
                    "gateway.yaml:7:15: routes[0].direct_response.status: must be from 100 to 599, got 600",
                    "gateway.yaml:9:9: routes[0].direct_response.headers: invalid header name 'bad name'",
                    "gateway.yaml:10:9: routes[0].direct_response.headers.Content-Length: gatewayd sets this header itself; it cannot be configured",
                    "gateway.yaml:11:18: routes[0].direct_response.headers.x-split: a header value must not contain control characters such as CR or LF, found CR",
                    "gateway.yaml:13:32: routes[1].direct_response.status: expected an integer, got a string \"200\"",
                    "gateway.yaml:15:43: routes[2].direct_response.body: a 304 response cannot have a body",
                ])
    }

    // MARK: Document level

    @Test func documentShape() {
        #expect(problems("") == ["gateway.yaml:1:1: the configuration is empty: it needs at least a 'listeners' list"])
        #expect(
            problems("# only a comment\n") == [
                "gateway.yaml:1:1: the configuration is empty: it needs at least a 'listeners' list"
            ])
        #expect(
            problems("- a\n- b\n") == [
                "gateway.yaml:1:1: the configuration must be a mapping of keys to values, got a list"
            ])
        #expect(
            problems(minimalListeners + "---\nworkers: 1\n") == [
                "gateway.yaml:4:1: invalid YAML: only one document is allowed, found a second one"
            ])
    }

    @Test func yamlSyntaxErrors() {
        #expect(
            problems("workers: 2\nlisteners: [\n") == [
                "gateway.yaml:3:1: invalid YAML: did not find expected node content (while parsing a flow node at line 3, column 1)"
            ])
        #expect(
            problems("listeners:\n  - name: web\n   address: 127.0.0.1:80\n") == [
                "gateway.yaml:3:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection at line 2, column 3)"
            ])
        #expect(
            problems("workers: \"2\n") == [
                "gateway.yaml:2:1: invalid YAML: found unexpected end of stream (while scanning a quoted scalar at line 1, column 10)"
            ])
        #expect(
            problems(minimalListeners + "routes:\n  - name: r\n    match: { host: *.example.com }\n") == [
                "gateway.yaml:6:21: invalid YAML: did not find expected alphabetic or numeric character (while scanning an alias at line 6, column 20); a value that starts with '*' must be quoted, as in \"*.example.com\""
            ])
        #expect(problems("workers: *nothing\n") == ["gateway.yaml:1:10: invalid YAML: found undefined alias"])
    }

    @Test func encodingErrors() {
        #expect(
            problems(bytes: Array("workers: 2\nlisteners: é".utf8) + [0xFF]) == [
                "gateway.yaml:2:13: invalid UTF-8 (byte 0xFF); the configuration must be UTF-8 text"
            ])
        #expect(
            problems("workers: 2\n  \u{1}") == [
                "gateway.yaml:2:3: control character U+0001 is not allowed (write it as an escape inside a double-quoted string)"
            ])
    }

    @Test func aliasesCannotBeKeys() {
        #expect(
            problems("k: &k workers\n*k : 2\n" + minimalListeners) == [
                "gateway.yaml:2:1: an alias cannot be used as a mapping key"
            ])
    }

    @Test func collectsEveryErrorInFileOrder() {
        let errors = problems(
            """
            workers: 0
            drain_timeout: soon
            listeners:
              - name: web
                address: 127.0.0.1
              - name: web
                address: "[::1]:80"
            routes:
              - name: r
                listener: nope
                direct_response: { status: 1000 }

            """)
        #expect(
            errors == [
                "gateway.yaml:1:10: workers: must be from 1 to 1024, got 0",
                "gateway.yaml:2:16: drain_timeout: invalid duration \"soon\" (expected e.g. 250ms, 30s, 2m)",
                "gateway.yaml:5:14: listeners[0].address: invalid address \"127.0.0.1\": expected HOST:PORT",
                "gateway.yaml:6:11: listeners[1].name: duplicate listener name 'web' (first defined at line 4)",
                "gateway.yaml:10:15: routes[0].listener: unknown listener 'nope' (listeners: web)",
                "gateway.yaml:11:32: routes[0].direct_response.status: must be from 100 to 599, got 1000",
            ])
    }

    @Test func capsTheNumberOfDiagnostics() {
        let many = minimalListeners + (0..<300).map { "x\($0): 1\n" }.joined()
        let errors = problems(many)
        #expect(errors.count == 201)
        #expect(errors.last == "gateway.yaml:203:1: 100 more errors not shown")
    }
}

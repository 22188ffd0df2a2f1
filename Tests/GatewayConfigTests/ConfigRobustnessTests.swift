import Testing

@testable import GatewayConfig

/// No input may crash or hang the parser: every outcome is a configuration or a ConfigError
/// with usable positions.
@Suite struct ConfigRobustnessTests {
    /// Mutations turn IP addresses into host names: resolving them would make DNS queries.
    static let system = FakeSystem().system

    /// Parses and checks the outcome's shape; returns the diagnostics (empty if it parsed).
    @discardableResult
    func check(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigDiagnostic] {
        do {
            _ = try ConfigLoader.parse(bytes, path: "fuzz.yaml", files: nil, system: Self.system)
            return []
        } catch {
            let lines = bytes.count { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") } + 1
            #expect(!error.diagnostics.isEmpty, sourceLocation: sourceLocation)
            for diagnostic in error.diagnostics {
                #expect(diagnostic.file == "fuzz.yaml", sourceLocation: sourceLocation)
                #expect(
                    diagnostic.line >= 1 && diagnostic.line <= lines + 1, "\(diagnostic)",
                    sourceLocation: sourceLocation)
                #expect(diagnostic.column >= 1, "\(diagnostic)", sourceLocation: sourceLocation)
                #expect(!diagnostic.message.isEmpty, sourceLocation: sourceLocation)
            }
            return error.diagnostics
        }
    }

    @discardableResult
    func check(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigDiagnostic] {
        check(Array(text.utf8), sourceLocation: sourceLocation)
    }

    static let seeds: [String] = [
        ConfigLoaderTests.specExample,
        """
        workers: 4
        listeners: [{ name: a, address: "0.0.0.0:80" }, { name: b, address: "[::]:443", backlog: 128 }]
        routes:
          - name: shared
            match: { host: "*.Example.org", methods: [GET] }
            direct_response: &ok { status: 200, headers: { x-a: "1", x-b: '2' }, body: "ok" }
          - name: again
            listener: b
            direct_response: *ok

        """,
        """
        drain_timeout: 1m30s
        ready_timeout: 250ms
        listeners:
          - name: web
            address: 127.0.0.1:8080
        routes:
          - name: page
            match:
              path: /index.html
            direct_response:
              status: 200
              body: |
                <p>hello</p>
              headers:
                content-type: "text/html; charset=utf-8"

        """,
        """
        user: www-data
        listeners: [{ name: web, address: "127.0.0.1:8080" }, { name: admin, address: "127.0.0.1:9090" }]
        upstreams:
          api:
            endpoints: [127.0.0.1:9001, "[::1]:9002", localhost:9003]
            balance: least_request
            keepalive: { max_idle_per_endpoint: 8, idle_timeout: 30s }
            health: { max_failures: 2, eject_for: 5s }
            retries: 2
        routes:
          - name: api
            match: { path_prefix: /v1/, methods: [GET] }
            upstream: api
            strip_prefix: /v1
            request_headers: { set: { x-env: prod }, remove: [x-debug] }
            response_headers: { set: { x-served-by: gatewayd } }
            auth: { api_keys: { header: x-key, keys_file: keys.txt } }
            rate_limit: { per: api_key, rate: 100/s, burst: 200 }
          - name: old
            redirect: { status: 302, location: "https://example.com/" }
        limits: { max_header_bytes: 16KiB, max_body_bytes: 1m, header_timeout: 5s }
        access_log: { path: /var/log/gatewayd/access.log, format: combined }
        admin: { listener: admin }

        """,
    ]

    /// YAML's structural characters, to make mutations that reach past the scanner.
    static let fragments: [[UInt8]] = [
        ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "*", "&a ", "*a", "!", "!!str ", "?", "? ", "|", ">", "#", "'",
        "\"", "\n", "\n  ", "\t", "  ", "<<: ", "~", "\\", "%YAML 1.1\n", "---\n", "...\n", "0x1F",
        "99999999999999999999",
        "\u{FEFF}", "é", "\r\n",
    ].map { Array($0.utf8) }

    static func mutate(_ input: [UInt8], with random: inout SplitMix64) -> [UInt8] {
        var bytes = input
        for _ in 0...(random.next() % 3) {
            let position = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
            switch random.next() % 7 {
            case 0 where !bytes.isEmpty:
                bytes[position] ^= UInt8(truncatingIfNeeded: 1 << (random.next() % 8))
            case 1 where !bytes.isEmpty:
                bytes[position] = UInt8(truncatingIfNeeded: random.next())
            case 2:
                bytes = Array(bytes[..<position])
            case 3:
                let length = Int(random.next() % 20)
                bytes.removeSubrange(position..<min(bytes.count, position + length))
            case 4:
                let length = Int(random.next() % 40)
                let slice = bytes[position..<min(bytes.count, position + length)]
                let target = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
                bytes.insert(contentsOf: slice, at: target)
            default:
                let fragment = fragments[Int(random.next() % UInt64(fragments.count))]
                bytes.insert(contentsOf: fragment, at: position)
            }
        }
        return bytes
    }

    @Test func mutatedConfigurationsNeverCrash() {
        var random = SplitMix64(seed: 0x6761_7465_7761_7964)
        var outcomes = (parsed: 0, failed: 0)
        for index in 0..<3000 {
            let seed = Array(Self.seeds[index % Self.seeds.count].utf8)
            let variant = Self.mutate(seed, with: &random)
            if check(variant).isEmpty { outcomes.parsed += 1 } else { outcomes.failed += 1 }
        }
        // Both outcomes occur, or the mutations are not exercising anything.
        #expect(outcomes.parsed > 100)
        #expect(outcomes.failed > 1000)
    }

    @Test func randomBytes() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<300 {
            let count = Int(random.next() % 300)
            check((0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) })
            // Printable ASCII only, to get past the UTF-8 and control character checks.
            check((0..<count).map { _ in UInt8(32 + random.next() % 95) })
        }
    }

    @Test func deepNesting() {
        for depth in [100, 999, 1000, 20_000] {
            check(String(repeating: "[", count: depth) + String(repeating: "]", count: depth))
            check("listeners: " + String(repeating: "{a: ", count: depth) + "1" + String(repeating: "}", count: depth))
            check("listeners:\n" + String(repeating: "- ", count: depth) + "x\n")
        }
        #expect(
            check(String(repeating: "[", count: 5000)).map(\.message) == [
                "invalid YAML: nested too deeply (libyaml allows 1000 levels)"
            ])
        var indented = "listeners:\n"
        for level in 0..<900 {
            indented += String(repeating: " ", count: level) + "- \n"
        }
        check(indented)
    }

    static let billionLaughs: String = {
        var text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for level in 1...9 {
            text +=
                "l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ")
                + "]\n"
        }
        return text
    }()

    @Test func aliasExpansionIsBounded() {
        let asValue = check(Self.billionLaughs + minimalListeners)
        #expect(
            asValue.map(\.description) == [
                "fuzz.yaml:1:1: the configuration is too large: more than 1000000 YAML nodes once aliases are expanded"
            ])
        let inRoutes = check(
            minimalListeners + "routes: " + "*l9\n" + Self.billionLaughs.replacingOccurrences("l", with: "m"))
        #expect(!inRoutes.isEmpty)
        // Yams hashes keys to find duplicates: an expanded alias there would take forever.
        #expect(
            check(Self.billionLaughs + "? *l9\n: 1\n").map(\.description) == [
                "fuzz.yaml:11:3: an alias cannot be used as a mapping key"
            ])
        #expect(
            check(Self.billionLaughs + "[*l9, *l9]: 1\n").map(\.description) == [
                "fuzz.yaml:11:1: an alias cannot be used as a mapping key"
            ])
        #expect(
            check(Self.billionLaughs + "{ a: { *l9 : 1 } }: 1\n").map(\.description) == [
                "fuzz.yaml:11:1: an alias cannot be used as a mapping key"
            ])
    }

    @Test func hugeValues() {
        check("workers: 1" + String(repeating: "0", count: 100_000) + "\n" + minimalListeners)
        check("drain_timeout: " + String(repeating: "9", count: 100_000) + "h\n" + minimalListeners)
        check(String(repeating: "k", count: 100_000) + ": 1\n" + minimalListeners)
        check(minimalListeners + "    name: " + String(repeating: "n", count: 200_000) + "\n")
        // Near the size limit, with as many nodes as 1 MiB can hold.
        let wide = "unused: [" + Array(repeating: "1", count: 500_000).joined(separator: ",") + "]\n" + minimalListeners
        #expect(check(wide).map(\.message) == ["unknown key 'unused' at the top level"])
    }

    @Test func manyRoutesParseQuickly() throws {
        var text = minimalListeners + "routes:\n"
        for index in 0..<3000 {
            text += "  - { name: r\(index), match: { path: /p\(index) }, direct_response: { status: 200, body: x } }\n"
        }
        let config = try #require(parse(text))
        #expect(config.routes.count == 3000)
    }

    @Test func manyDuplicateKeys() {
        // More repeated keys than the composer gets past one by one: still an answer, not a loop.
        // (Yams reports repeats in sorted order, so the 16th is x5.)
        let text = minimalListeners + (0..<40).map { "x\($0 % 20): 1\n" }.joined()
        #expect(
            check(text).map(\.description) == [
                "fuzz.yaml:9:1: duplicate key 'x5' (repeated later in the same mapping; "
                    + "the file has too many repeated keys to report each where it repeats)"
            ])
    }
}

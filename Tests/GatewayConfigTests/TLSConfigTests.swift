import Foundation
import Testing

@testable import GatewayConfig

/// Certificates made at run time by examples/make-tls-certificate.sh (ECDSA P-256), read into a
/// fake system under /etc/gw/tls: what `tls:` accepts and how each refusal reads.
@Suite struct TLSConfigTests {
    /// PEM text by name: `a.pem`/`a.key` (a.test, *.a.test), `b.pem`/`b.key` (b.test), and
    /// `nameless.pem`/`nameless.key` (no subjectAltName, no CN).
    static let certificates: [String: String] = {
        let directory = NSTemporaryDirectory() + "gatewayd-tls-config-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/make-tls-certificate.sh").path
        func run(_ path: String, _ arguments: [String]) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            try? process.run()
            process.waitUntilExit()
        }
        run(script, [directory, "a.test", "*.a.test"])
        run(script, [directory, "b.test"])
        run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", "/O=gatewayd tests", "-keyout", directory + "/nameless.key", "-out",
                directory + "/nameless.pem",
            ])
        var files: [String: String] = [:]
        for name in ["a.test", "b.test", "nameless"] {
            for suffix in ["pem", "key"] {
                files["\(name).\(suffix)"] =
                    (try? String(contentsOfFile: "\(directory)/\(name).\(suffix)", encoding: .utf8)) ?? ""
            }
        }
        return files
    }()

    static func system() -> FakeSystem {
        var system = FakeSystem()
        system.directories.insert("/etc/gw/tls")
        for (name, text) in certificates { system.files["/etc/gw/tls/" + name] = text }
        system.files["/etc/gw/tls/garbage.pem"] = "hello\n"
        return system
    }

    static func listener(_ tls: String, extra: String = "") -> String {
        """
        listeners:
          - name: web
            address: 127.0.0.1:8443\(extra)
            tls:
        \(tls)
        """
    }

    @Test(
        "certificates in order, names from subjectAltName, defaults for alpn and min_version; a worker given the files parses the same"
    )
    func valid() throws {
        let system = Self.system()
        let yaml = Self.listener(
            """
                  certificates:
                    - { cert: tls/a.test.pem, key: tls/a.test.key }
                    - { cert: /etc/gw/tls/b.test.pem, key: /etc/gw/tls/b.test.key }
            """)
        let (configuration, files) = try #require(system.parse(yaml))
        let tls = try #require(configuration.listeners[0].tls)
        #expect(tls.certificates.map(\.names) == [["a.test", "*.a.test"], ["b.test"]])
        #expect(tls.certificates.map(\.certificatePath) == ["/etc/gw/tls/a.test.pem", "/etc/gw/tls/b.test.pem"])
        #expect(tls.alpn == ["http/1.1"] && tls.minVersion == .tls12 && tls.sessionTickets)
        #expect(tls.certificates[0].certificatePEM == Array(Self.certificates["a.test.pem"]!.utf8))
        #expect(tls.certificates[0].keyPEM == Array(Self.certificates["a.test.key"]!.utf8))
        #expect(
            files.keys.sorted() == [
                "/etc/gw/tls/a.test.key", "/etc/gw/tls/a.test.pem", "/etc/gw/tls/b.test.key", "/etc/gw/tls/b.test.pem",
            ])
        // A worker: the master's bytes, no disk, and no clock (a certificate that expired since
        // its master checked it is still served by that generation).
        var later = FakeSystem()
        later.files = [:]
        later.clock = tls.certificates[0].notAfter + 1
        let again = try #require(later.parse(yaml, files: files))
        #expect(again.configuration == configuration)
        #expect(later.log.reads.withLock { $0 }.isEmpty)

        let explicit = Self.listener(
            """
                  certificates: [{ cert: tls/b.test.pem, key: tls/b.test.key }]
                  alpn: [http/1.1]
                  min_version: tls1.3
                  session_tickets: false
            """)
        let explicitTLS = try #require(system.parse(explicit)?.configuration.listeners[0].tls)
        #expect(explicitTLS.minVersion == .tls13 && !explicitTLS.sessionTickets)
    }

    @Test("each refusal names the key's position and the file")
    func refusals() throws {
        var system = Self.system()
        func problems(_ tls: String, extra: String = "") -> [String] {
            system.problems(Self.listener(tls, extra: extra))
        }
        // Line 5 holds the one certificate: `cert` at column 24, `key` at 46.
        #expect(
            problems("      certificates: [{ cert: tls/garbage.pem, key: tls/a.test.key }]") == [
                "gateway.yaml:5:24: listeners[0].tls.certificates[0].cert: certificate '/etc/gw/tls/garbage.pem': "
                    + "does not parse: no PEM block found"
            ])
        #expect(
            problems("      certificates: [{ cert: tls/a.test.pem, key: tls/a.test.pem }]") == [
                "gateway.yaml:5:46: listeners[0].tls.certificates[0].key: key '/etc/gw/tls/a.test.pem': "
                    + "does not parse: no PEM private key found"
            ])
        #expect(
            problems("      certificates: [{ cert: tls/a.test.pem, key: tls/b.test.key }]") == [
                "gateway.yaml:5:46: listeners[0].tls.certificates[0].key: key '/etc/gw/tls/b.test.key': "
                    + "does not match certificate '/etc/gw/tls/a.test.pem'"
            ])
        #expect(
            problems("      certificates: [{ cert: tls/missing.pem, key: tls/a.test.key }]") == [
                "gateway.yaml:5:24: listeners[0].tls.certificates[0].cert: cannot read '/etc/gw/tls/missing.pem': "
                    + "No such file or directory"
            ])
        #expect(
            problems("      certificates: [{ cert: tls/nameless.pem, key: tls/nameless.key }]") == [
                "gateway.yaml:5:24: listeners[0].tls.certificates[0].cert: certificate '/etc/gw/tls/nameless.pem': "
                    + "names no host (no DNS name in subjectAltName, no CN)"
            ])
        system.clock = 4_102_444_800  // 2100-01-01
        let expired = problems("      certificates: [{ cert: tls/a.test.pem, key: tls/a.test.key }]")
        #expect(expired.count == 1 && expired[0].contains("certificate '/etc/gw/tls/a.test.pem': expired on 20"))
        system.clock = 0
        let early = problems("      certificates: [{ cert: tls/a.test.pem, key: tls/a.test.key }]")
        #expect(early.count == 1 && early[0].contains(": not valid before 20"), "\(early)")
        system.clock = nil

        #expect(
            problems("      certificates: []") == [
                "gateway.yaml:5:21: listeners[0].tls.certificates: at least one certificate is required"
            ])
        let valid = "      certificates: [{ cert: tls/a.test.pem, key: tls/a.test.key }]\n"
        #expect(problems(valid + "      alpn: [h2, http/1.1]") == [])
        #expect(
            problems(valid + "      alpn: [h3, http/1.1]") == [
                "gateway.yaml:6:14: listeners[0].tls.alpn[0]: \"h3\" is not supported (the protocols gatewayd "
                    + "speaks inside TLS are h2, http/1.1)"
            ])
        #expect(
            problems(valid, extra: "\n    h2c: true") == [
                "gateway.yaml:4:5: listeners[0].h2c: h2c is HTTP/2 without TLS; on a TLS listener, offer h2 in "
                    + "tls.alpn instead"
            ])
        #expect(
            problems(valid + "      min_version: tls1.1") == [
                "gateway.yaml:6:20: listeners[0].tls.min_version: must be tls1.2 or tls1.3, got \"tls1.1\" "
                    + "(did you mean 'tls1.2'?)"
            ])
        #expect(
            problems(valid + "      session_tickets: maybe") == [
                "gateway.yaml:6:24: listeners[0].tls.session_tickets: expected true or false, got a string \"maybe\""
            ])
        // The PROXY header is read in plaintext before the handshake (ClientConnection+Close).
        #expect(problems(valid, extra: "\n    proxy_protocol: true") == [])
    }

    static func upstream(_ tls: String) -> String {
        """
        listeners: [{ name: web, address: "127.0.0.1:8080" }]
        routes: [{ name: r, match: { path_prefix: / }, upstream: u }]
        upstreams:
          u: { endpoints: ["127.0.0.1:9000"], tls: \(tls) }
        """
    }

    @Test("upstream tls: ca read by the master and handed over, sni and verify; refusals at their key")
    func upstreamTLS() throws {
        let system = Self.system()
        let (configuration, files) = try #require(system.parse(Self.upstream("{ ca: tls/a.test.pem, sni: a.test }")))
        let tls = try #require(configuration.upstreams.first?.tls)
        #expect(tls.caPath == "/etc/gw/tls/a.test.pem" && tls.caPEM == Array(Self.certificates["a.test.pem"]!.utf8))
        #expect(tls.serverName == "a.test" && tls.verify)
        #expect(files.keys.sorted() == ["/etc/gw/tls/a.test.pem"])
        // A worker parses the master's bytes, not the disk.
        var worker = FakeSystem()
        worker.files = [:]
        #expect(
            try #require(worker.parse(Self.upstream("{ ca: tls/a.test.pem, sni: a.test }"), files: files)).configuration
                == configuration)
        // No ca: the system's store; no sni: the endpoint's host as written.
        let plain = try #require(system.parse(Self.upstream("{}"))).configuration.upstreams[0]
        #expect(plain.tls?.caPEM == nil && plain.tls?.name(for: plain.endpoints[0]) == "127.0.0.1")

        #expect(
            system.problems(Self.upstream("{ ca: tls/garbage.pem }")) == [
                "gateway.yaml:4:46: upstreams.u.tls.ca: certificate '/etc/gw/tls/garbage.pem': does not parse: "
                    + "no PEM block found"
            ])
        #expect(
            system.problems(Self.upstream("{ ca: tls/missing.pem }")) == [
                "gateway.yaml:4:46: upstreams.u.tls.ca: cannot read '/etc/gw/tls/missing.pem': No such file or directory"
            ])
        #expect(
            system.problems(Self.upstream("{ sni: \"a b\" }")) == [
                "gateway.yaml:4:51: upstreams.u.tls.sni: invalid server name \"a b\": expected a host name "
                    + "(letters, digits, '-', '.') or an IP address"
            ])
        #expect(
            system.problems(Self.upstream("{ verify: maybe }")).first?.hasPrefix(
                "gateway.yaml:4:54: upstreams.u.tls.verify:") == true)
    }

    @Test("a reload that changes certificates says so, without a byte of them")
    func diff() throws {
        let system = Self.system()
        let a = try #require(
            system.parse(Self.listener("      certificates: [{ cert: tls/a.test.pem, key: tls/a.test.key }]")))
        let b = try #require(
            system.parse(Self.listener("      certificates: [{ cert: tls/b.test.pem, key: tls/b.test.key }]")))
        let diff = ConfigDiff(from: a.configuration, to: b.configuration)
        #expect(diff.changedSettings == ["listener 'web' tls certificates changed"])
        #expect(diff.keptListeners.map(\.name) == ["web"])
        let c = try #require(
            system.parse(
                Self.listener(
                    """
                          certificates: [{ cert: tls/b.test.pem, key: tls/b.test.key }]
                          session_tickets: false
                    """)))
        #expect(
            ConfigDiff(from: b.configuration, to: c.configuration).changedSettings == [
                "listener 'web' tls session_tickets on -> off"
            ])
    }
}

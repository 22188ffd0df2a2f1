import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// HTTP/2 end to end: `h2` chosen by ALPN on a TLS listener and prior-knowledge h2c on a
/// plaintext one, served by a real master's workers to real clients (curl, openssl s_client,
/// and clients.py writing frames by hand to misbehave on purpose).
@Suite("HTTP/2", .serialized, .timeLimit(.minutes(3)))
struct HTTP2Tests {
    static let key = "h2-test-key-not-secret"

    /// What every test here starts from: a certificate for a.test, the demo upstream, a keys file.
    final class Fixture {
        let certificates: TLSTests.Certificates
        let upstream: DemoUpstream
        let files: TemporaryDirectory

        init() throws {
            certificates = try TLSTests.Certificates([["a.test"]])
            upstream = try DemoUpstream()
            files = try TemporaryDirectory()
            try "\(HTTP2Tests.key)\n".write(toFile: files.file("keys"), atomically: true, encoding: .utf8)
        }

        func config(workers: Int = 1, body: String = "h2 ok") -> String {
            HTTP2Tests.config(
                certificates, upstream: upstream, keysFile: files.file("keys"), workers: workers, body: body)
        }
    }

    static func config(
        _ certificates: TLSTests.Certificates, upstream: DemoUpstream, keysFile: String, workers: Int = 1,
        body: String = "h2 ok"
    ) -> String {
        """
        workers: \(workers)
        drain_timeout: 10s
        listeners:
          - name: web
            address: "127.0.0.1:0"
            backlog: 1024
            tls:
              certificates:
                - { cert: \(certificates.certificate("a.test")), key: \(certificates.key("a.test")) }
              alpn: [h2, http/1.1]
          - { name: plain, address: "127.0.0.1:0", h2c: true, backlog: 1024 }
        routes:
          - name: admin
            match: { path_prefix: /echo/admin }
            auth: { api_keys: { header: x-api-key, keys_file: \(keysFile) } }
            upstream: origin
          - { name: echo, match: { path_prefix: /echo }, upstream: origin }
          - { name: bytes, match: { path_prefix: /bytes }, upstream: origin }
          - { name: upload, match: { path_prefix: /upload }, upstream: origin }
          - name: hello
            match: { path_prefix: / }
            direct_response: { status: 200, headers: { content-type: text/plain }, body: "\(body)" }
        upstreams:
          origin: { endpoints: ["\(upstream.endpoint)"] }

        """
    }

    /// curl to `url` with `arguments`; the body, then a line "CODE VERSION".
    static func curl(_ arguments: [String], _ url: String, ca: String? = nil, port: UInt16? = nil) throws
        -> CommandResult
    {
        var all = ["--silent", "--show-error", "--max-time", "20", "--write-out", "\n%{http_code} %{http_version}"]
        if let ca, let port { all += ["--cacert", ca, "--resolve", "a.test:\(port):127.0.0.1"] }
        return try runCommand("/usr/bin/curl", all + arguments + [url], timeout: .seconds(30))
    }

    @Test("h2 by ALPN and h2c by prior knowledge: routing, auth on every path form, bodies both ways, https upstream")
    func serving() throws {
        let fixture = try Fixture()
        defer { fixture.upstream.stop() }
        let (certificates, upstream, files) = (fixture.certificates, fixture.upstream, fixture.files)
        let gatewayd = try GatewaydProcess(config: fixture.config())
        let tlsPort = try gatewayd.port(of: "web")
        let plainPort = try gatewayd.port(of: "plain")
        let ca = certificates.certificate("a.test")
        let https = "https://a.test:\(tlsPort)"

        // ALPN: h2 when offered, HTTP/1.1 for a client that offers only that.
        let h2 = try Self.curl(["--http2"], https + "/", ca: ca, port: tlsPort)
        #expect(h2.status == 0 && h2.stdout == "h2 ok\n200 2", "\(h2)")
        let h1 = try Self.curl(["--http1.1"], https + "/", ca: ca, port: tlsPort)
        #expect(h1.status == 0 && h1.stdout == "h2 ok\n200 1.1", "\(h1)")
        let sClient = try TLSTests.sClient(tlsPort, ["-servername", "a.test", "-alpn", "h2"])
        #expect((sClient.stdout + sClient.stderr).contains("ALPN protocol: h2"), "\(sClient)")
        // h2c with prior knowledge, and HTTP/1.1 on the same plaintext listener.
        let h2c = try Self.curl(["--http2-prior-knowledge"], "http://127.0.0.1:\(plainPort)/")
        #expect(h2c.status == 0 && h2c.stdout == "h2 ok\n200 2", "\(h2c)")
        let plain = try Self.curl([], "http://127.0.0.1:\(plainPort)/")
        #expect(plain.status == 0 && plain.stdout == "h2 ok\n200 1.1", "\(plain)")

        // Proxied over h2: the upstream hears HTTP/1.1, https, and the body.
        let echo = try Self.curl(["--http2", "--data-binary", "over h2"], https + "/echo/x?y=1", ca: ca, port: tlsPort)
        #expect(echo.stdout.hasSuffix("\n200 2"), "\(echo)")
        #expect(echo.stdout.contains(#"["x-forwarded-proto", "https"]"#), "\(echo)")
        #expect(echo.stdout.contains(#"["via", "2 gatewayd"]"#), "\(echo)")
        #expect(
            echo.stdout.contains(#""path": "/echo/x?y=1""#) && echo.stdout.contains(#""body_length": 7"#), "\(echo)")

        // The guarded route holds over HTTP/2 for every spelling of its path (the HTTP/1.1
        // canonicalization applies: one request path for both protocols).
        for path in [
            "/echo/admin", "/echo/%61dmin", "//echo/admin", "/echo/./admin", "/x/../echo/admin", "/echo/admin/",
        ] {
            let result = try Self.curl(
                ["--http2-prior-knowledge", "--path-as-is", "--output", "/dev/null"],
                "http://127.0.0.1:\(plainPort)\(path)")
            let code = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
            #expect(code == "401 2" || code == "400 2", "\(path): \(result)")
        }
        let allowed = try Self.curl(
            ["--http2-prior-knowledge", "--header", "x-api-key: \(Self.key)", "--output", "/dev/null"],
            "http://127.0.0.1:\(plainPort)/echo/admin")
        #expect(allowed.stdout.hasSuffix("200 2"), "\(allowed)")

        // Flow control both ways: 8 MiB down (well past every window), 4 MiB up, byte for byte.
        let download = try runCommand(
            "/bin/sh",
            [
                "-c",
                "curl -sS --http2 --max-time 30 --cacert \(ca) --resolve a.test:\(tlsPort):127.0.0.1 "
                    + "'\(https)/bytes?n=8388608' | sha256sum",
            ], timeout: .seconds(40))
        let expected = try runCommand("/usr/bin/curl", ["-sS", "http://\(upstream.endpoint)/bytes-sha?n=8388608"])
        #expect(
            download.stdout.split(separator: " ").first.map(String.init)
                == expected.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "\(download) vs \(expected)")
        let uploadFile = files.file("upload.bin")
        #expect(FileManager.default.createFile(atPath: uploadFile, contents: Data(repeating: 0x5a, count: 4 << 20)))
        let upload = try Self.curl(
            ["--http2-prior-knowledge", "--upload-file", uploadFile], "http://127.0.0.1:\(plainPort)/upload")
        #expect(upload.stdout.contains(#""length": 4194304"#) && upload.stdout.hasSuffix("200 2"), "\(upload)")
        // The same, streamed without a length (curl sends no content-length for stdin).
        let streamed = try runCommand(
            "/bin/sh",
            [
                "-c",
                "curl -sS --http2-prior-knowledge --max-time 30 -T - http://127.0.0.1:\(plainPort)/upload < \(uploadFile)",
            ],
            timeout: .seconds(40))
        #expect(streamed.stdout.contains(#""length": 4194304"#), "\(streamed)")
    }

    @Test("malformed requests are stream errors, rapid reset closes the connection, the worker goes on")
    func abuse() throws {
        let fixture = try Fixture()
        defer { fixture.upstream.stop() }
        let gatewayd = try GatewaydProcess(config: fixture.config())
        let port = try gatewayd.port(of: "plain")
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)

        // An uppercase name, a connection-specific field, a CR LF in a value, an absolute-form
        // :path naming another host: each its stream's
        // PROTOCOL_ERROR, and the next request on the same connection is served.
        let malformed = try runClient(["h2", "--port", String(port), "--scenario", "malformed", "--path", "/echo"])
        #expect(malformed.exit == 0, "\(malformed)")
        // CVE-2023-44487: 2,000 streams opened and reset at once: GOAWAY(ENHANCE_YOUR_CALM), closed.
        let rapid = try runClient(["h2", "--port", String(port), "--scenario", "rapid-reset", "--path", "/echo"])
        #expect(rapid.exit == 0, "\(rapid)")
        #expect(gatewayd.log.contains("rapid reset, CVE-2023-44487"), "\(gatewayd.log)")

        let after = try Self.curl(["--http2-prior-knowledge"], "http://127.0.0.1:\(port)/")
        #expect(after.stdout == "h2 ok\n200 2", "\(after)")
        #expect(try gatewayd.status().generations.flatMap(\.workers).map(\.pid) == workers, "no worker died")
    }

    @Test("a drain sends GOAWAY twice (2^31-1, then the last stream) and closes the connection")
    func goAwayDrain() throws {
        let fixture = try Fixture()
        defer { fixture.upstream.stop() }
        let gatewayd = try GatewaydProcess(config: fixture.config())
        let port = try gatewayd.port(of: "plain")
        let client = try PythonClient(["h2", "--port", String(port), "--scenario", "goaway"], timeout: 20)
        let first = try client.firstLine()
        #expect((first["bodies"] as? [String: String])?["1"] == "h2 ok", "\(first)")
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload)")
        let result = try client.wait()
        #expect(result.exit == 0, "\(result)")
        try gatewayd.waitUntilSingleGeneration()
    }

    @Test("5,000 multiplexed requests (curl --parallel, 32 streams) across reloads: zero failed")
    func multiplexedAcrossReloads() throws {
        let fixture = try Fixture()
        defer { fixture.upstream.stop() }
        let (certificates, files) = (fixture.certificates, fixture.files)
        let config = { (round: Int) in fixture.config(workers: 2, body: "v\(round)") }
        let gatewayd = try GatewaydProcess(config: config(0))
        let port = try gatewayd.port(of: "web")
        // One in ten proxied, the rest answered by the worker: the drain must finish both kinds.
        var urls = ""
        for index in 0..<5000 {
            let path = index % 10 == 0 ? "/echo/\(index)" : "/r/\(index)"
            urls += "url = \"https://a.test:\(port)\(path)\"\noutput = \"/dev/null\"\n"
        }
        try urls.write(toFile: files.file("urls"), atomically: true, encoding: .utf8)
        let codes = files.file("codes")
        let curl = try ChildProcess(
            [
                "/bin/sh", "-c",
                "exec curl -sS --http2 --parallel --parallel-max 32 --max-time 120 --cacert "
                    + "\(certificates.certificate("a.test")) --resolve a.test:\(port):127.0.0.1 -K \(files.file("urls")) "
                    + "--write-out '%{http_code} %{http_version}\\n' > \(codes)",
            ], environment: ProcessInfo.processInfo.environment, output: files.file("curl.err"))
        defer { if curl.isRunning { kill(curl.pid, SIGKILL) } }
        var rounds = 0
        while curl.isRunning, rounds < 40 {
            try gatewayd.writeConfig(config(rounds + 1))
            let result = try gatewayd.reload()
            #expect(result.status == 0, "round \(rounds): \(result.stderr)")
            rounds += 1
        }
        try waitUntil("curl to finish", timeout: .seconds(120)) { !curl.isRunning }
        let lines = try String(contentsOfFile: codes, encoding: .utf8).split(separator: "\n")
        let good = lines.filter { $0 == "200 2" }.count
        let errors = (try? String(contentsOfFile: files.file("curl.err"), encoding: .utf8)) ?? ""
        #expect(
            good == 5000,
            "\(good) of 5000 answered 200 over h2; \(Set(lines.filter { $0 != "200 2" }))\n\(errors.suffix(2000))")
        #expect(rounds >= 3, "only \(rounds) reloads happened while curl ran")
        try gatewayd.waitUntilSingleGeneration()
    }
}

import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// TLS listeners end to end: a real master reads the certificates (made at run time by
/// examples/make-tls-certificate.sh, ECDSA P-256), its workers terminate TLS, and real clients
/// (curl, openssl s_client, Python's ssl, wrk) check what they are served.
@Suite("TLS listeners", .serialized, .timeLimit(.minutes(3)))
struct TLSTests {
    /// Certificates in `DIR/tls/`, each file named after its first name.
    final class Certificates {
        let directory: TemporaryDirectory
        init(_ sets: [[String]]) throws {
            directory = try TemporaryDirectory()
            for names in sets { try Self.make(in: directory.path + "/tls", names) }
        }

        static func make(in directory: String, _ names: [String]) throws {
            let script = repositoryRoot.appendingPathComponent("examples/make-tls-certificate.sh").path
            let result = try runCommand(script, [directory] + names, timeout: .seconds(20))
            guard result.status == 0 else { throw HarnessError("make-tls-certificate.sh: \(result.stderr)") }
        }

        func certificate(_ name: String) -> String { directory.path + "/tls/\(name).pem" }
        func key(_ name: String) -> String { directory.path + "/tls/\(name).key" }

        /// What Python's `getpeercert(binary_form=True)` hashes to: the DER's SHA-256, in hex.
        static func fingerprint(_ path: String) throws -> String {
            let result = try runCommand("/usr/bin/openssl", ["x509", "-in", path, "-noout", "-fingerprint", "-sha256"])
            guard result.status == 0, let value = result.stdout.split(separator: "=").last else {
                throw HarnessError("openssl x509 \(path): \(result.stderr)")
            }
            return value.filter { $0 != ":" && !$0.isWhitespace }.lowercased()
        }
    }

    static func config(
        _ certificates: Certificates, names: [String], workers: Int = 1, upstream: UInt16? = nil,
        headerTimeout: String = "10s", body: String = "tls ok", proxyProtocol: Bool = false, settings: String = ""
    ) -> String {
        var text = """
            workers: \(workers)
            drain_timeout: 10s
            limits: { header_timeout: \(headerTimeout) }
            \(settings)
            listeners:
              - name: web
                address: "127.0.0.1:0"
                backlog: 1024
                proxy_protocol: \(proxyProtocol)
                tls:
                  certificates:

            """
        for name in names {
            text += "        - { cert: \(certificates.certificate(name)), key: \(certificates.key(name)) }\n"
        }
        text += "routes:\n"
        if upstream != nil {
            for path in ["/echo", "/ws", "/bytes", "/upload"] {
                text += "  - { name: \"\(path.dropFirst())\", match: { path_prefix: \(path) }, upstream: origin }\n"
            }
        }
        text += """
              - name: hello
                match: { path_prefix: / }
                direct_response: { status: 200, headers: { content-type: text/plain }, body: "\(body)" }

            """
        if let upstream {
            text += "upstreams:\n  origin: { endpoints: [\"127.0.0.1:\(upstream)\"] }\n"
        }
        return text
    }

    /// curl over HTTP/1.1 on TLS to `name` (resolved to 127.0.0.1), trusting `ca` only.
    static func curl(_ port: UInt16, _ name: String, ca: String, path: String = "/") throws -> CommandResult {
        try runCommand(
            "/usr/bin/curl",
            [
                "--silent", "--show-error", "--http1.1", "--max-time", "10", "--cacert", ca, "--resolve",
                "\(name):\(port):127.0.0.1", "--write-out", "\n%{http_code} %{http_version}",
                "https://\(name):\(port)\(path)",
            ])
    }

    static func sClient(_ port: UInt16, _ arguments: [String]) throws -> CommandResult {
        try runCommand(
            "/usr/bin/openssl", ["s_client", "-connect", "127.0.0.1:\(port)"] + arguments,
            timeout: .seconds(20))
    }

    @Test("SNI chooses the certificate (the first for an unknown name), ALPN is http/1.1, upstreams hear https")
    func handshakes() throws {
        let certificates = try Certificates([["a.test", "*.a.test"], ["b.test"]])
        let upstream = try DemoUpstream()
        defer { upstream.stop() }
        let gatewayd = try GatewaydProcess(
            config: Self.config(certificates, names: ["a.test", "b.test"], upstream: upstream.port))
        let port = try gatewayd.port()

        // Each name verifies against its own certificate only: the right one was served.
        for (name, file) in [("a.test", "a.test"), ("b.test", "b.test"), ("x.a.test", "a.test")] {
            let result = try Self.curl(port, name, ca: certificates.certificate(file))
            #expect(result.status == 0 && result.stdout == "tls ok\n200 1.1", "\(name): \(result)")
        }
        let wrong = try Self.curl(port, "b.test", ca: certificates.certificate("a.test"))
        #expect(wrong.status == 60, "b.test must not verify with a.test's certificate: \(wrong)")

        // An unknown name gets the default (first) certificate; ALPN picks http/1.1.
        let unknown = try Self.sClient(port, ["-servername", "c.test", "-alpn", "h2,http/1.1"])
        let said = unknown.stdout + unknown.stderr
        #expect(said.contains("CN = a.test") && said.contains("ALPN protocol: http/1.1"), "\(unknown)")
        // A client that speaks only h2 is refused with no_application_protocol (RFC 7301).
        let h2 = try Self.sClient(port, ["-servername", "a.test", "-alpn", "h2"])
        #expect(h2.status != 0 && (h2.stdout + h2.stderr).contains("no application protocol"), "\(h2)")

        // Python's ssl, as an application would use it: checked certificate, ALPN, TLS 1.3, and
        // the upstream told the client came over https.
        let python = try runClient([
            "tls", "--port", String(port), "--server-name", "b.test", "--cafile", certificates.certificate("b.test"),
            "--alpn", "http/1.1", "--path", "/echo",
        ])
        #expect(python.exit == 0, "\(python)")
        #expect(python["alpn"] as? String == "http/1.1" && python["version"] as? String == "TLSv1.3", "\(python)")
        let echoed = (python["body"] as? String ?? "").lowercased()
        #expect(echoed.contains("[\"x-forwarded-proto\", \"https\"]"), "\(python)")
    }

    @Test("through TLS: a WebSocket tunnel, a 16 MiB download and an 8 MiB upload, byte for byte")
    func largeTransfers() throws {
        let certificates = try Certificates([["a.test"]])
        let upstream = try DemoUpstream()
        defer { upstream.stop() }
        let gatewayd = try GatewaydProcess(
            config: Self.config(certificates, names: ["a.test"], upstream: upstream.port))
        let tls = [
            "--port", String(try gatewayd.port()), "--server-name", "a.test", "--cafile",
            certificates.certificate("a.test"),
        ]
        let size = 16 << 20
        // Records of 16 KiB, a socket that fills: partial writes and would-blocks on both sides.
        let download = try runClient(["download", "--path", "/bytes?n=\(size)"] + tls, timeout: 60)
        #expect(download.exit == 0 && download["length"] as? Int == size, "\(download)")
        // Under limits.max_body_bytes (10 MiB by default).
        let upload = try runClient(["upload", "--bytes", String(8 << 20)] + tls, timeout: 60)
        #expect(upload.exit == 0 && upload["match"] as? Bool == true, "\(upload)")
        let websocket = try runClient(["ws-echo", "--messages", "20", "--size", "70000"] + tls)
        #expect(websocket.exit == 0 && websocket["echoed"] as? Int == 20, "\(websocket)")
    }

    @Test("plaintext, garbage and a stalled handshake are closed cleanly; the worker serves on")
    func badInput() throws {
        let certificates = try Certificates([["a.test"]])
        let gatewayd = try GatewaydProcess(
            config: Self.config(certificates, names: ["a.test"], headerTimeout: "1s"))
        let port = try gatewayd.port()
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)

        let plaintext = Array("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n".utf8).map { String(format: "%02x", $0) }
        let garbage = (0..<512).map { String(format: "%02x", ($0 * 37 + 11) % 256) }
        for (what, bytes) in [("plaintext", plaintext.joined()), ("garbage", garbage.joined())] {
            let result = try runClient(["raw", "--port", String(port), "--send-hex", bytes, "--idle-ms", "5000"])
            #expect(result["peer"] as? String == "closed", "\(what): \(result)")
            #expect((result["statuses"] as? [Int])?.isEmpty == true, "\(what): \(result)")
            #expect((result["elapsed_ms"] as? Double ?? 9e9) < 900, "\(what): closed at once, \(result)")
        }
        // Half a record header, then nothing: cut at header_timeout (1 s), not before.
        let stalled = try runClient(["raw", "--port", String(port), "--send-hex", "160301", "--idle-ms", "5000"])
        #expect(stalled["peer"] as? String == "closed", "\(stalled)")
        let elapsed = stalled["elapsed_ms"] as? Double ?? 0
        #expect(elapsed > 900 && elapsed < 4000, "\(stalled)")

        let after = try Self.curl(port, "a.test", ca: certificates.certificate("a.test"))
        #expect(after.status == 0 && after.stdout.hasSuffix("200 1.1"), "\(after)")
        #expect(try gatewayd.status().generations.flatMap(\.workers).map(\.pid) == workers, "a worker was replaced")
    }

    @Test(
        "a reload rotates the certificate: new connections get the new one, one held across it keeps working and is closed with close_notify"
    )
    func rotation() throws {
        let certificates = try Certificates([["a.test"]])
        let next = certificates.directory.path + "/next"
        try Certificates.make(in: next, ["a.test"])
        let old = try Certificates.fingerprint(certificates.certificate("a.test"))
        let new = try Certificates.fingerprint(next + "/a.test.pem")
        #expect(old != new)
        let config = Self.config(certificates, names: ["a.test"])
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()

        let go = certificates.directory.path + "/go"
        func holder(_ then: String) throws -> PythonClient {
            try PythonClient([
                "tls", "--port", String(port), "--server-name", "a.test", "--cafile",
                certificates.certificate("a.test"),
                "--cafile", next + "/a.test.pem", "--then-file", go, "--then", then,
            ])
        }
        let requesting = try holder("request")
        let idle = try holder("wait")
        #expect(try requesting.firstLine()["cert_sha256"] as? String == old)
        #expect(try idle.firstLine()["cert_sha256"] as? String == old)

        // New files under the same names (renamed over, as certbot's deploy hooks do), then a reload.
        for suffix in ["pem", "key"] {
            #expect(rename(next + "/a.test.\(suffix)", certificates.directory.path + "/tls/a.test.\(suffix)") == 0)
        }
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload)")
        // Within the draining worker's idle grace (1 s): one holder asks again on its old connection.
        #expect(FileManager.default.createFile(atPath: go, contents: nil))

        let held = try requesting.wait()
        #expect(held.exit == 0, "\(held)")
        #expect(held["second_status"] as? Int == 200 && held["second_connection"] as? String == "close", "\(held)")
        #expect(held["second_cert_sha256"] as? String == old, "\(held)")
        #expect(held["closed"] as? String == "close_notify", "\(held)")
        let waited = try idle.wait()
        #expect(waited["closed"] as? String == "close_notify", "the idle connection: \(waited)")

        let fresh = try runClient([
            "tls", "--port", String(port), "--server-name", "a.test", "--cafile", certificates.certificate("a.test"),
        ])
        #expect(fresh.exit == 0 && fresh["cert_sha256"] as? String == new, "\(fresh)")
        try gatewayd.waitUntilSingleGeneration()
    }

    @Test("behind HAProxy in TCP mode (send-proxy, send-proxy-v2): the PROXY header is read before the handshake")
    func proxyProtocol() throws {
        let certificates = try Certificates([["a.test"]])
        let upstream = try DemoUpstream()
        defer { upstream.stop() }
        let accessLog = certificates.directory.file("access.log")
        let gatewayd = try GatewaydProcess(
            config: Self.config(
                certificates, names: ["a.test"], upstream: upstream.port, proxyProtocol: true,
                settings: "access_log: { path: \(accessLog), format: json }"))
        let port = try gatewayd.port()
        let clients = ["198.51.100.21", "198.51.100.22"]
        guard
            let haproxy = try HAProxyProcess([
                .init(source: clients[0], sendProxy: "send-proxy", target: port),
                .init(source: clients[1], sendProxy: "send-proxy-v2", target: port),
            ])
        else { return }
        for (through, client) in zip(haproxy.ports, clients) {
            let result = try Self.curl(through, "a.test", ca: certificates.certificate("a.test"), path: "/echo")
            #expect(result.status == 0 && result.stdout.hasSuffix("200 1.1"), "\(result)")
            #expect(result.stdout.lowercased().contains("[\"x-forwarded-for\", \"\(client)\"]"), "\(result)")
        }
        try waitUntil("two access log lines") {
            readWholeFile(accessLog).split(separator: "\n").count >= 2
        }
        let logged = readWholeFile(accessLog)
        #expect(clients.allSatisfy { logged.contains("\"client\":\"\($0)\"") }, "\(logged)")
        // A ClientHello where the header should be: closed, as any connection without one is.
        let direct = try Self.curl(port, "a.test", ca: certificates.certificate("a.test"))
        #expect(direct.status != 0, "\(direct)")
    }

    /// What one `ticketRequest` handshake did: resumed a session, and how many new tickets the
    /// server sent.
    struct TicketHandshake {
        var resumed: Bool
        var ticketsIssued: Int
    }

    /// One request over `openssl s_client` (`-tls1_2` or `-tls1_3`), saving the session to
    /// `saveTo` and/or resuming the one in `resume`.
    static func ticketRequest(
        _ port: UInt16, _ version: String, path: String, saveTo: String? = nil, resume: String? = nil
    ) throws -> TicketHandshake {
        var options = "-connect 127.0.0.1:\(port) -servername a.test \(version) -ign_eof -msg"
        if let saveTo { options += " -sess_out \(saveTo)" }
        if let resume { options += " -sess_in \(resume)" }
        // -ign_eof: s_client stays for the response (and, in TLS 1.3, the tickets before it),
        // and leaves when the server closes after it.
        let request = "GET \(path) HTTP/1.1\\r\\nHost: a.test\\r\\nConnection: close\\r\\n\\r\\n"
        let result = try runCommand(
            "/bin/sh", ["-c", "printf '\(request)' | /usr/bin/openssl s_client \(options)"], timeout: .seconds(20))
        let said = result.stdout + result.stderr
        guard said.contains("HTTP/1.1 200") else { throw HarnessError("s_client \(options): \(said)") }
        let lines = said.split(separator: "\n")
        guard let line = lines.first(where: { $0.hasPrefix("Reused,") || $0.hasPrefix("New,") })
        else { throw HarnessError("s_client \(options): no session line: \(said)") }
        let tickets = lines.filter { $0.hasPrefix("<<<") && $0.hasSuffix("NewSessionTicket") }.count
        return TicketHandshake(resumed: line.hasPrefix("Reused,"), ticketsIssued: tickets)
    }

    /// The pid of the worker that logged `path` in the JSON access log.
    static func servedBy(_ accessLog: String, path: String) throws -> Int32 {
        var pid: Int32?
        try waitUntil("\(path) in the access log") {
            for line in readWholeFile(accessLog).split(separator: "\n") where line.contains("\"path\":\"\(path)\"") {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                pid = (object?["pid"] as? Int).map(Int32.init)
            }
            return pid != nil
        }
        return pid ?? 0
    }

    @Test("session tickets (TLS 1.2 and 1.3) resume on another worker and across a reload: the master's keys")
    func sessionResumption() throws {
        let certificates = try Certificates([["a.test"]])
        let accessLog = certificates.directory.file("access.log")
        // /metrics on a plaintext admin listener: the handshakes, full and resumed.
        let config = Self.config(
            certificates, names: ["a.test"], workers: 2,
            settings: "access_log: { path: \(accessLog), format: json }\nadmin: { listener: admin }"
        ).replacingOccurrences(of: "listeners:\n", with: "listeners:\n  - { name: admin, address: \"127.0.0.1:0\" }\n")
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port(of: "web")
        for version in ["-tls1_2", "-tls1_3"] {
            let session = certificates.directory.file("session\(version)")
            #expect(try !Self.ticketRequest(port, version, path: "/issue\(version)", saveTo: session).resumed)
            let issuer = try Self.servedBy(accessLog, path: "/issue\(version)")
            // The issuer stopped, the kernel gives the connection to the other worker (an idle
            // worker would otherwise get every connection: EPOLLEXCLUSIVE wakes the first).
            kill(issuer, SIGSTOP)
            let resumed = Result { try Self.ticketRequest(port, version, path: "/other\(version)", resume: session) }
            kill(issuer, SIGCONT)
            #expect(try resumed.get().resumed, "\(version): no resumption on the other worker")
            #expect(try Self.servedBy(accessLog, path: "/other\(version)") != issuer)
        }
        let before = Set(try gatewayd.status().generations.flatMap(\.workers).map(\.pid))
        #expect(try gatewayd.reload().status == 0)
        try gatewayd.waitUntilSingleGeneration()
        for version in ["-tls1_2", "-tls1_3"] {
            let session = certificates.directory.file("session\(version)")
            #expect(
                try Self.ticketRequest(port, version, path: "/reloaded\(version)", resume: session).resumed,
                "\(version)")
            #expect(!before.contains(try Self.servedBy(accessLog, path: "/reloaded\(version)")))
        }
        // A TLS 1.3 client uses a ticket once (RFC 8446 C.4), so each resumption must bring a
        // new one, or every other connection would be a full handshake; a TLS 1.2 client reuses
        // its ticket, renewed only once its key is old.
        let first = certificates.directory.file("chain-1"), second = certificates.directory.file("chain-2")
        #expect(try Self.ticketRequest(port, "-tls1_3", path: "/chain0", saveTo: first).ticketsIssued >= 1)
        let resumed = try Self.ticketRequest(port, "-tls1_3", path: "/chain1", saveTo: second, resume: first)
        #expect(resumed.resumed && resumed.ticketsIssued == 1, "\(resumed)")
        #expect(try Self.ticketRequest(port, "-tls1_3", path: "/chain2", resume: second).resumed)
        let session12 = certificates.directory.file("session-tls1_2")
        let resumed12 = try Self.ticketRequest(port, "-tls1_2", path: "/chain12", resume: session12)
        #expect(resumed12.resumed && resumed12.ticketsIssued == 0, "\(resumed12)")
        // 3 full handshakes (the two issues and /chain0), 7 resumed; counted as they finish.
        let admin = try gatewayd.port(of: "admin")
        try waitUntil("the handshakes in /metrics") {
            let metrics = try httpGet(port: admin, path: "/metrics").body
            return metrics.contains("gatewayd_tls_handshakes_total{resumed=\"false\"} 3\n")
                && metrics.contains("gatewayd_tls_handshakes_total{resumed=\"true\"} 7\n")
        }
    }

    @Test("tickets resume across gatewayctl upgrade: the new master serves the old one's keys")
    func ticketsAcrossUpgrade() throws {
        let certificates = try Certificates([["a.test"]])
        let gatewayd = try GatewaydProcess(config: Self.config(certificates, names: ["a.test"]))
        let lineage = MasterLineage(gatewayd)
        defer { lineage.stop() }
        let port = try gatewayd.port()
        let oldMaster = gatewayd.pid
        for version in ["-tls1_2", "-tls1_3"] {
            let session = certificates.directory.file("session\(version)")
            #expect(try !Self.ticketRequest(port, version, path: "/before", saveTo: session).resumed)
        }
        let upgrade = try lineage.upgrade()
        #expect(upgrade.status == 0, "\(upgrade.stderr)\n\(gatewayd.log)")
        // Once the old master is gone, only the new master's workers accept.
        try waitUntil("the old master to exit", timeout: .seconds(15)) { !isProcessRunning(oldMaster) }
        #expect(try lineage.current() != oldMaster)
        for version in ["-tls1_2", "-tls1_3"] {
            let session = certificates.directory.file("session\(version)")
            #expect(try Self.ticketRequest(port, version, path: "/after", resume: session).resumed, "\(version)")
        }
    }

    @Test("session_tickets: false: no tickets in TLS 1.2 or 1.3, so every handshake is a full one")
    func sessionTicketsOff() throws {
        let certificates = try Certificates([["a.test"]])
        let config = Self.config(certificates, names: ["a.test"])
            .replacingOccurrences(of: "    tls:\n", with: "    tls:\n      session_tickets: false\n")
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()
        for version in ["-tls1_2", "-tls1_3"] {
            let session = certificates.directory.file("session\(version)")
            let first = try Self.ticketRequest(port, version, path: "/first", saveTo: session)
            #expect(!first.resumed && first.ticketsIssued == 0, "\(version): \(first)")
            // No ticket and no session id (there is no cache): s_client may have nothing to save.
            if FileManager.default.fileExists(atPath: session) {
                #expect(try !Self.ticketRequest(port, version, path: "/second", resume: session).resumed, "\(version)")
            }
        }
    }

    @Test("a ticket resumes after one rotation of the keys, and gets a full handshake once its key is gone")
    func ticketKeyRotation() throws {
        let certificates = try Certificates([["a.test"]])
        // Test builds only: the keys rotate every second instead of every hour.
        let config = "# gatewayd-fault: ticket-key-rotation=1s\n" + Self.config(certificates, names: ["a.test"])
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()
        func rotations() -> Int { gatewayd.log.components(separatedBy: "TLS session ticket keys rotated").count - 1 }
        let session = certificates.directory.file("session")
        #expect(try !Self.ticketRequest(port, "-tls1_3", path: "/issue", saveTo: session).resumed)
        // Counted after the ticket: its key is at most this many rotations old.
        let issued = rotations()
        try waitUntil("one rotation") { rotations() >= issued + 1 }
        #expect(
            try Self.ticketRequest(port, "-tls1_3", path: "/kept", resume: session).resumed, "the previous key decrypts"
        )
        // The third rotation drops the key; one more, so the worker has surely applied it.
        try waitUntil("four rotations", timeout: .seconds(10)) { rotations() >= issued + 4 }
        #expect(try !Self.ticketRequest(port, "-tls1_3", path: "/dropped", resume: session).resumed, "a full handshake")
    }

    /// `Support/tls-upstream.py`: an HTTPS origin whose answers say which TLS connection
    /// carried them. Killed at deinit.
    final class TLSUpstream {
        let port: UInt16
        private let process: ChildProcess

        init(certificate: String, key: String, directory: TemporaryDirectory) throws {
            let script = repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Support/tls-upstream.py").path
            let output = directory.file("tls-upstream.log")
            let process = try ChildProcess(
                ["/usr/bin/python3", script, certificate, key], environment: [:], output: output)
            self.process = process
            var port: UInt16?
            do {
                try waitUntil("tls-upstream.py to print READY") {
                    let text = readWholeFile(output)
                    port = text.split(separator: "\n").first { $0.hasPrefix("READY ") }.flatMap {
                        UInt16($0.dropFirst(6))
                    }
                    guard port != nil || process.isRunning else {
                        throw HarnessError("tls-upstream.py exited: \(text)")
                    }
                    return port != nil
                }
            } catch {
                Self.kill(process)
                throw error
            }
            self.port = port ?? 0
        }

        deinit { Self.kill(process) }

        private static func kill(_ process: ChildProcess) {
            Glibc.kill(process.pid, SIGKILL)
            while process.isRunning { usleep(1_000) }
        }
    }

    @Test(
        "upstream TLS: checked against ca and sni, pooled like plaintext; a wrong CA or name is a 502 and an error line"
    )
    func upstreamTLS() throws {
        // Each certificate is its own CA (make-tls-certificate.sh): upstream.test's is the CA
        // that signed the origin's (which also names 127.0.0.1), other.test's one that did not.
        let certificates = try Certificates([["upstream.test", "127.0.0.1"], ["other.test"]])
        let origin = try TLSUpstream(
            certificate: certificates.certificate("upstream.test"), key: certificates.key("upstream.test"),
            directory: certificates.directory)
        let right = certificates.certificate("upstream.test")
        let wrong = certificates.certificate("other.test")
        var config = """
            workers: 1
            listeners: [{ name: web, address: "127.0.0.1:0" }]
            routes:

            """
        // name: the upstream's `tls` mapping.
        let upstreams = [
            ("good", "sni: upstream.test, ca: \(right)"), ("wrongca", "sni: upstream.test, ca: \(wrong)"),
            ("wrongname", "sni: other.test, ca: \(right)"),
            // No sni: the endpoint's IP is checked against the certificate's IP names, and no
            // SNI is sent (RFC 6066 §3 has no IP names).
            ("ipname", "ca: \(right)"),
            // verify: false trusts anything, and still sends the name.
            ("noverify", "sni: other.test, ca: \(wrong), verify: false"),
            // No ca: the system's store, which knows nothing of a self-signed certificate.
            ("systemstore", "sni: upstream.test"),
        ]
        for (name, _) in upstreams {
            config += "  - { name: \(name), match: { path_prefix: /\(name) }, upstream: \(name) }\n"
        }
        config += "upstreams:\n"
        for (name, tls) in upstreams {
            config += "  \(name): { endpoints: [\"127.0.0.1:\(origin.port)\"], retries: 0, tls: { \(tls) } }\n"
        }
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()

        // Three requests from three client connections: one TLS connection upstream.
        for request in 1...3 {
            let response = try httpGet(port: port, path: "/good")
            #expect(response.status == 200, "\(response.status) \(response.body)")
            let answer = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
            #expect(answer?["connection"] as? Int == 1 && answer?["request"] as? Int == request, "\(response.body)")
            #expect(answer?["sni"] as? String == "upstream.test", "\(response.body)")
        }
        for (path, sni) in [("/ipname", nil), ("/noverify", "other.test")] as [(String, String?)] {
            let response = try httpGet(port: port, path: path)
            #expect(response.status == 200, "\(path): \(response.status) \(response.body)")
            let answer = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
            #expect(answer?["sni"] as? String == sni, "\(path): \(response.body)")
        }
        // The origin's certificate is self-signed: with another CA, nothing vouches for it.
        for (path, reason) in [
            ("/wrongca", "self-signed certificate"), ("/wrongname", "hostname mismatch"),
            ("/systemstore", "self-signed certificate"),
        ] {
            let response = try httpGet(port: port, path: path)
            #expect(response.status == 502, "\(path): \(response.status) \(response.body)")
            #expect(response.body.contains("TLS handshake: certificate verify failed: \(reason)"), "\(response.body)")
            try waitUntil("the error line for \(path)") {
                gatewayd.log.split(separator: "\n").contains {
                    $0.contains("error") && $0.contains("upstream \(path.dropFirst()) endpoint")
                        && $0.contains("TLS handshake: certificate verify failed: \(reason)")
                }
            }
        }
    }

    @Test("wrk over HTTPS across 10 reloads: zero failed requests")
    func reloadsUnderLoad() throws {
        let certificates = try Certificates([["a.test"]])
        let gatewayd = try GatewaydProcess(config: Self.config(certificates, names: ["a.test"], workers: 2))
        let port = try gatewayd.port()
        let load = try WrkLoad(port: port, seconds: 6, connections: 16, scheme: "https")
        try gatewayd.reloadsUnderLoad(load, rounds: 10) { round in
            Self.config(certificates, names: ["a.test"], workers: 2, body: "v\(round)")
        }
    }
}

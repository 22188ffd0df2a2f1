import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The control socket against hostile or broken clients, on a real gatewayd: every client gets
/// an error line or a close, the master's memory does not follow what clients send, and
/// `status` keeps answering at once.
@Suite("Control socket", .serialized, .timeLimit(.minutes(2)))
struct ControlSocketTests {
    /// How fast `status` must answer while hostile clients are connected: a request on an idle
    /// master takes well under a millisecond, so this only fails if something blocks.
    static let statusBudget: Duration = .milliseconds(200)

    /// Sends one request line on a fresh connection; returns what the master answered and
    /// whether it then closed.
    func exchange(_ gatewayd: GatewaydProcess, _ bytes: [UInt8]) throws -> (ControlResponse?, ReadOutcome, String) {
        let connection = try RawControlSocket(path: gatewayd.socketPath, timeout: .seconds(15))
        try connection.send(bytes)
        let outcome = connection.readUntilClosed()
        return (connection.response, outcome, connection.text)
    }

    func timedStatus(_ gatewayd: GatewaydProcess) throws -> Duration {
        let started = ContinuousClock.now
        let response = try ControlClient(socketPath: gatewayd.socketPath, timeout: .seconds(5)).send(
            ControlRequest(command: .status))
        let elapsed = ContinuousClock.now - started
        #expect(response.ok && response.status != nil, "\(response)")
        return elapsed
    }

    @Test("malformed JSON, an unknown command, a wrong version: an error naming the problem, then a close")
    func malformedRequests() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(workers: 1))
        let cases: [(request: [UInt8], expected: [String])] = [
            (Array("not json at all\n".utf8), ["malformed request: not JSON"]),
            (Array("{\"version\":1,\"command\":\n".utf8), ["malformed request: not JSON"]),
            (Array("[1,2,3]\n".utf8), ["malformed request: expected a JSON object"]),
            (Array("{\"command\":\"status\"}\n".utf8), ["malformed request: missing 'version'"]),
            (Array("{\"version\":\"1\",\"command\":\"status\"}\n".utf8), ["malformed request: 'version'"]),
            ([0xFF, 0xFE, 0x7B, 0xC3, 0x28, 0x0A], ["malformed request"]),
            (
                Array("{\"version\":1,\"command\":\"explode\"}\n".utf8),
                ["unknown command 'explode'", "'status'", "'reload'", "'stop'"]
            ),
            (Array("{\"version\":2,\"command\":\"status\"}\n".utf8), ["unsupported protocol version 2"]),
            (Array("\n".utf8), ["malformed request"]),
        ]
        for (request, expected) in cases {
            let (response, outcome, text) = try exchange(gatewayd, request)
            let shown = String(decoding: request, as: UTF8.self)
            #expect(response?.ok == false, "\(shown) -> \(text)")
            for fragment in expected {
                #expect(response?.error?.contains(fragment) == true, "\(shown) -> \(text)")
            }
            #expect(outcome == .eof, "\(shown): the master closes after answering")
        }
        #expect(try gatewayd.status().state == .running)
    }

    @Test("a 10 MiB line: 'line too long' and a close, and the master's RSS stays within 4 MiB")
    func hugeLine() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(workers: 1))
        _ = try gatewayd.status()
        let before = try #require(residentBytes(gatewayd.pid))
        let sampler = ResidentSampler(pids: [gatewayd.pid])
        for _ in 0..<3 {
            let connection = try RawControlSocket(path: gatewayd.socketPath, timeout: .seconds(15))
            // No newline anywhere: the master must give up at 64 KiB, not buffer the lot.
            let sent = try connection.send([UInt8](repeating: UInt8(ascii: "a"), count: 10 << 20))
            let outcome = connection.readUntilClosed()
            #expect(outcome == .eof || outcome == .reset)
            #expect(sent < 10 << 20, "the master stopped reading: the send could not finish")
            let error = try #require(connection.response?.error, "answer: \(connection.text)")
            #expect(error.contains("request line too long") && error.contains("64 KiB"), "\(error)")
        }
        let peak = sampler.stop()[gatewayd.pid] ?? 0
        let after = try #require(residentBytes(gatewayd.pid))
        let mib = { (bytes: Int) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        print(
            "control socket, 3 x 10 MiB lines: master RSS \(mib(before)) before, peak \(mib(peak)), \(mib(after)) after"
        )
        #expect(peak - before < 4 << 20, "RSS \(mib(before)) -> peak \(mib(peak))")
        #expect(after - before < 4 << 20, "RSS \(mib(before)) -> \(mib(after))")
        #expect(try timedStatus(gatewayd) < Self.statusBudget)
    }

    @Test(
        "100 clients at once (50 silent, 50 garbage) and a slow dripper: errors or closes, silent ones cut after the request timeout, status at once throughout; then HTTP and reload still work"
    )
    func manyHostileClients() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 1))
        let port = try gatewayd.port()
        let connectedAt = ContinuousClock.now
        let silent = try (0..<50).map { _ in try RawControlSocket(path: gatewayd.socketPath, timeout: .seconds(20)) }
        let garbage = try (0..<50).map { _ in try RawControlSocket(path: gatewayd.socketPath, timeout: .seconds(20)) }
        // One byte of a request every 2 s: the timeout counts from the connect, so this is cut too.
        let dripper = try RawControlSocket(path: gatewayd.socketPath, timeout: .seconds(20))
        let dripping = Mutex2(true)
        let dripDone = DispatchSemaphore(value: 0)
        let dripFD = dripper.fd
        DispatchQueue.global().async {
            for byte in Array("{\"version\":1,\"command\":\"status\"}".utf8) where dripping.get() {
                _ = [byte].withUnsafeBytes { Glibc.send(dripFD, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
                for _ in 0..<20 where dripping.get() { usleep(100_000) }
            }
            dripDone.signal()
        }
        defer {
            dripping.set(false)
            dripDone.wait()
            withExtendedLifetime(dripper) {}
        }

        var random = SystemRandomNumberGenerator()
        for (index, connection) in garbage.enumerated() {
            let bytes: [UInt8]
            switch index % 5 {
            case 0: bytes = (0..<200).map { _ in UInt8.random(in: 0...255, using: &random) } + [0x0A]
            case 1: bytes = Array("{\"version\":1,\"command\":\"launch-missiles\"}\n".utf8)
            case 2: bytes = [UInt8](repeating: UInt8(ascii: "{"), count: 100_000)
            case 3: bytes = Array("{\"version\":1,\"command\":\"status\",\"wait\":\"soon\"}\n".utf8)
            default: bytes = Array(String(repeating: "[", count: 10_000).utf8) + [0x0A]
            }
            try connection.send(bytes)
        }
        let duringGarbage = try timedStatus(gatewayd)
        for connection in garbage {
            let outcome = connection.readUntilClosed()
            #expect(outcome == .eof || outcome == .reset, "a garbage client was left open")
            #expect(connection.response?.ok == false, "a garbage client got \(connection.text)")
        }
        // 50 silent clients still connected: status is not queued behind them.
        var worst = duringGarbage
        for _ in 0..<10 { worst = max(worst, try timedStatus(gatewayd)) }
        let ctl = try gatewayd.gatewayctl(["status"], timeout: .seconds(10))
        #expect(ctl.status == 0, "\(ctl.stderr)")
        print("control socket, 100 hostile clients: slowest status \(worst)")
        #expect(worst < Self.statusBudget)

        for connection in silent + [dripper] {
            let outcome = connection.readUntilClosed()
            let waited = ContinuousClock.now - connectedAt
            #expect(outcome == .eof || outcome == .reset, "a silent client was not cut (\(waited))")
            #expect(waited < .seconds(14), "a silent client held on for \(waited)")
            #expect(
                connection.response?.error?.contains("no whole request line within 10 s") == true,
                "\(connection.text)")
        }
        #expect(ContinuousClock.now - connectedAt >= .seconds(9), "the request timeout is 10 s")

        #expect(try httpGet(port: port).body == "v1")
        try gatewayd.writeConfig(Configs.hello(body: "v2", workers: 1))
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(try httpGet(port: port).body == "v2")
        #expect(!gatewayd.log.contains("fatal") && gatewayd.process.isRunning)
    }

    @Test("SO_PEERCRED: a peer that is neither root nor the master's uid is refused even through a 0666 socket")
    func foreignUidRefused() throws {
        try #require(getuid() == 0, "needs root to act as another user")
        let gatewayd = try GatewaydProcess(config: Configs.hello(workers: 1))
        // Only the credential check stands in the way: the directory and the file let anyone in.
        #expect(chmod(gatewayd.directory.path, 0o755) == 0)
        #expect(chmod(gatewayd.socketPath, 0o666) == 0)
        let result = try runCommand(
            "/usr/bin/setpriv",
            [
                "--reuid=65534", "--regid=65534", "--clear-groups", Binaries.gatewayctl, "status", "--socket",
                gatewayd.socketPath,
            ],
            timeout: .seconds(10))
        #expect(result.status != 0)
        #expect(result.stderr.contains("permission denied: uid 65534"), "\(result.stderr)")
        try waitUntil("the refusal in the log", timeout: .seconds(5)) {
            gatewayd.log.split(separator: "\n").contains {
                $0.contains("refused peer") && $0.contains("uid=65534") && $0.contains("pid=")
            }
        }
        // The master's own uid still gets in.
        #expect(try gatewayd.status().state == .running)
    }
}

import Foundation
import GatewayConfig
import GatewayCore
import Synchronization

@testable import Gateway

/// The repository root (tests find `examples/demo-upstream.py` and the Python clients there).
let repositoryRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// A real upstream: `examples/demo-upstream.py` on a free port of 127.0.0.1. Ready when its
/// `READY <port>` line arrived; killed (and reaped) by `stop()`, or with the test process
/// (it exits when its stdin closes).
final class DemoUpstream: Sendable {
    let name: String
    let port: UInt16
    private let process: Process
    private let stdin: Pipe

    init(name: String) throws {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", repositoryRoot.appendingPathComponent("examples/demo-upstream.py").path, "--port", "0",
            "--name", name, "--exit-on-stdin-eof",
        ]
        let output = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardInput = input
        try process.run()
        self.process = process
        self.stdin = input
        // Readiness: the one line it prints once listening (bounded: the read ends at EOF if
        // the script dies).
        var line = Data()
        let handle = output.fileHandleForReading
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("READY "), let port = UInt16(text.dropFirst(6)) else {
            process.terminate()
            waitForExit(process)
            throw UpstreamError.notReady(text)
        }
        self.port = port
    }

    enum UpstreamError: Error {
        case notReady(String)
    }

    var endpoint: UpstreamEndpoint {
        UpstreamEndpoint(
            text: "127.0.0.1:\(self.port)", address: try! ListenerAddress(parsing: "127.0.0.1:\(self.port)"))
    }

    /// `/stats` of the upstream, read directly.
    func requestCount() throws -> Int {
        let response = try fetch(port: self.port, "/stats")
        let json = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
        return json?["requests"] as? Int ?? -1
    }

    func stop() {
        if self.process.isRunning {
            self.process.terminate()
        }
        waitForExit(self.process)
    }
}

/// An upstream that answers what the test scripts, byte by byte, for the cases a well-behaved
/// server never produces. Each accepted connection runs `script` on a thread of its own with the
/// connection's index (0, 1, …); `stop()` closes the listener and waits for every script.
final class ScriptedUpstream: Sendable {
    private let listener: TestListener
    private let stopping = Mutex<Bool>(false)
    private let running = DispatchGroup()
    let accepted = Mutex<Int>(0)
    /// Connections whose script has returned (the gateway closed it, or the script ended it).
    let finished = Mutex<Int>(0)

    init(_ script: @escaping @Sendable (RawClient, Int) throws -> Void) throws {
        self.listener = try TestListener(name: "upstream")
        let fd = self.listener.masterFD
        let accepter = Thread { [self] in
            while !self.stopping.withLock({ $0 }) {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 50) == 1 else { continue }
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { continue }
                let index = self.accepted.withLock { count in
                    defer { count += 1 }
                    return count
                }
                self.running.enter()
                Thread {
                    let client = RawClient(accepted: connection)
                    try? script(client, index)
                    client.close()
                    self.finished.withLock { $0 += 1 }
                    self.running.leave()
                }.start()
            }
            self.running.leave()
        }
        self.running.enter()
        accepter.start()
    }

    var endpoint: UpstreamEndpoint {
        UpstreamEndpoint(
            text: "127.0.0.1:\(self.listener.port)",
            address: try! ListenerAddress(parsing: "127.0.0.1:\(self.listener.port)"))
    }

    /// Bounded: scripts read with the client's 5 s timeouts.
    func stop() {
        self.stopping.withLock { $0 = true }
        _ = self.running.wait(timeout: .now() + 15)
        self.listener.close()
    }
}

/// An endpoint nothing listens on (a port bound then closed: connect gets ECONNREFUSED).
func deadEndpoint() throws -> UpstreamEndpoint {
    let listener = try TestListener()
    let port = listener.port
    listener.close()
    return UpstreamEndpoint(text: "127.0.0.1:\(port)", address: try ListenerAddress(parsing: "127.0.0.1:\(port)"))
}

/// What a Python test client (Tests/IntegrationTests/Support/clients.py) printed.
struct ClientResult: Sendable, CustomStringConvertible {
    var exit: Int32
    /// Its last line: one JSON object.
    var output: String

    var description: String { "exit \(self.exit): \(self.output)" }
}

/// Runs a Python test client and waits for it (each bounds itself with `--timeout`).
func runClient(_ arguments: [String], timeout: Int = 60) throws -> ClientResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments =
        ["python3", repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Support/clients.py").path]
        + arguments + ["--timeout", String(timeout)]
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    // Its stdout closed: it has exited (or is exiting); reap it.
    var status: Int32 = 0
    while waitpid(process.processIdentifier, &status, 0) == -1, errno == EINTR {}
    let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    let exit = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return ClientResult(exit: exit, output: String(text.split(separator: "\n").last ?? ""))
}

/// Foundation's `waitUntilExit` can block for good on Linux when the test process has other
/// children; its `isRunning`, updated by Foundation's own reaper, does not. Bounded: 10 s.
func waitForExit(_ process: Process) {
    let pid = process.processIdentifier
    guard pid > 0 else { return }
    kill(pid, SIGKILL)
    // ECHILD if Foundation's reaper got there first: either way it is gone.
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1, errno == EINTR {}
}

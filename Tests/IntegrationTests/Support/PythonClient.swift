import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A run of `Tests/IntegrationTests/Support/clients.py` (one JSON line on stdout; exit 0 means
/// the exchange went as expected). Started at once; `wait()` collects it. Bounded twice: the
/// client's own `--timeout`, and a kill a few seconds past it.
final class PythonClient: @unchecked Sendable {
    struct Result: CustomStringConvertible {
        var exit: Int32
        var line: String
        var json: [String: Any]

        var description: String { "exit \(exit): \(line)" }
        subscript(key: String) -> Any? { json[key] }
    }

    let started = ContinuousClock.now
    private let process: ChildProcess
    private let directory: TemporaryDirectory
    private let outputPath: String
    private let timeout: Double

    init(_ arguments: [String], timeout: Double = 30) throws {
        directory = try TemporaryDirectory()
        outputPath = directory.file("client.out")
        self.timeout = timeout
        let script = repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Support/clients.py").path
        process = try ChildProcess(
            ["/usr/bin/env", "python3", script] + arguments + ["--timeout", String(timeout)],
            environment: ProcessInfo.processInfo.environment, output: outputPath)
    }

    deinit {
        if process.isRunning {
            kill(process.pid, SIGKILL)
            while process.isRunning { usleep(1_000) }
        }
    }

    var isRunning: Bool { process.isRunning }

    /// The first JSON line of a client that goes on after it (`tls --then-file`): its signal
    /// that the first exchange is over.
    func firstLine(timeout: Duration = .seconds(20)) throws -> [String: Any] {
        var json: [String: Any] = [:]
        try waitUntil("clients.py's first line", timeout: timeout) {
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("{") }) else {
                if !process.isRunning { throw HarnessError("clients.py exited without a line:\n\(text)") }
                return false
            }
            json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
            return true
        }
        return json
    }

    func wait() throws -> Result {
        do {
            try waitUntil("clients.py to exit", timeout: .milliseconds(Int((timeout + 5) * 1000))) {
                !process.isRunning
            }
        } catch {
            kill(process.pid, SIGKILL)
            throw error
        }
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        guard !json.isEmpty else {
            throw HarnessError("clients.py exited \(process.terminationStatus) without a JSON line:\n\(text)")
        }
        return Result(exit: process.terminationStatus, line: line, json: json)
    }
}

/// Runs a clients.py command to its end.
func runClient(_ arguments: [String], timeout: Double = 30) throws -> PythonClient.Result {
    try PythonClient(arguments, timeout: timeout).wait()
}

/// A connection of `clients.py slowloris` that the server ended: with a 408, or by closing it.
func slowlorisConnectionWasCut(_ connection: [String: Any]) -> Bool {
    let outcome = connection["outcome"] as? String
    return (outcome == "response" && connection["status"] as? Int == 408) || outcome == "closed" || outcome == "reset"
}

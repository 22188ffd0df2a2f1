import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// wrk running in the background, for at most `seconds`. Started with posix_spawn and an
/// empty signal mask (ChildProcess), so that SIGINT reaches it: wrk then stops and prints its
/// summary, which lets a test end the load as soon as its faults are done.
final class WrkLoad {
    struct Summary: CustomStringConvertible {
        var requests = 0
        var connectErrors = 0
        var readErrors = 0
        var writeErrors = 0
        var timeouts = 0
        var non2xx = 0
        var raw = ""

        var failures: Int { connectErrors + readErrors + writeErrors + timeouts + non2xx }
        var description: String {
            "\(requests) requests, errors: connect \(connectErrors), read \(readErrors), write \(writeErrors), timeout \(timeouts), non-2xx \(non2xx)"
        }
    }

    private let process: ChildProcess
    private let outputPath: String
    private let seconds: Int

    init(
        port: UInt16, seconds: Int, connections: Int = 16, threads: Int = 2, closeEachRequest: Bool = false,
        path: String = "/", scheme: String = "http"
    ) throws {
        var arguments = ["/usr/bin/wrk", "-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--timeout", "5s"]
        if closeEachRequest { arguments += ["-H", "Connection: close"] }
        // https: wrk speaks TLS (OpenSSL) and does not check the certificate.
        arguments.append("\(scheme)://127.0.0.1:\(port)\(path)")
        outputPath = NSTemporaryDirectory() + "gatewayd-wrk-\(UUID().uuidString).txt"
        self.seconds = seconds
        process = try ChildProcess(arguments, environment: ProcessInfo.processInfo.environment, output: outputPath)
    }

    deinit {
        if process.isRunning {
            kill(process.pid, SIGKILL)
            _ = try? waitUntil("wrk to die", timeout: .seconds(5)) { !process.isRunning }
        }
        unlink(outputPath)
    }

    var isRunning: Bool { process.isRunning }

    /// Ends the load now (SIGINT: wrk stops its threads and prints what it measured).
    func stop() throws -> Summary {
        if process.isRunning { kill(process.pid, SIGINT) }
        return try finish()
    }

    /// Waits for wrk to end and parses its summary.
    func finish() throws -> Summary {
        // wrk ends by itself after its -d; the slack covers its last --timeout (5 s).
        try waitUntil("wrk to end", timeout: .seconds(seconds + 15)) { !process.isRunning }
        let text = readWholeFile(outputPath)
        var summary = Summary(raw: text)
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.contains("requests in") {
                summary.requests = Int(trimmed.split(separator: " ")[0]) ?? 0
            } else if trimmed.hasPrefix("Socket errors:") {
                let numbers = trimmed.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
                if numbers.count == 4 {
                    (summary.connectErrors, summary.readErrors, summary.writeErrors, summary.timeouts) =
                        (numbers[0], numbers[1], numbers[2], numbers[3])
                }
            } else if trimmed.hasPrefix("Non-2xx or 3xx responses:") {
                summary.non2xx = Int(trimmed.split(separator: " ").last ?? "") ?? 0
            }
        }
        guard summary.requests > 0 else { throw HarnessError("wrk reported no requests:\n\(text)") }
        return summary
    }
}

extension GatewaydProcess {
    /// The zero-loss promise under `load`: once wrk's connections are up (the workers report
    /// them: a signal, not a sleep), `rounds` reloads, each after writing `config(round)`; the
    /// load must outlast them, and no request may fail.
    func reloadsUnderLoad(
        _ load: WrkLoad, rounds: Int, sourceLocation: SourceLocation = #_sourceLocation,
        config: (Int) -> String
    ) throws {
        try waitUntil("wrk to connect") {
            try status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } > 0
        }
        for round in 0..<rounds {
            try writeConfig(config(round))
            let result = try reload()
            #expect(result.status == 0, "round \(round): \(result.stderr)", sourceLocation: sourceLocation)
        }
        #expect(
            load.isRunning, "the reloads outlasted the load; they were not all under load",
            sourceLocation: sourceLocation)
        let summary = try load.finish()
        #expect(summary.failures == 0, "\(summary)\n\(summary.raw)", sourceLocation: sourceLocation)
        #expect(summary.requests > 1000, "\(summary)", sourceLocation: sourceLocation)
        try waitUntilSingleGeneration()
    }
}

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// wrk running in the background for a fixed time. (Not stopped by SIGINT: under the test
/// runner the signal can arrive blocked, and wrk would run its whole -d.)
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

    private let process = Process()
    private let output = Pipe()

    init(
        port: UInt16, seconds: Int, connections: Int = 16, threads: Int = 2, closeEachRequest: Bool = false,
        path: String = "/"
    ) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
        var arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--timeout", "5s"]
        if closeEachRequest { arguments += ["-H", "Connection: close"] }
        arguments.append("http://127.0.0.1:\(port)\(path)")
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    var isRunning: Bool { process.isRunning }

    /// Waits for wrk to end and parses its summary.
    func finish() throws -> Summary {
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
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

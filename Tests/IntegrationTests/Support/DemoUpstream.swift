import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The repository root: where `examples/demo-upstream.py` is.
let repositoryRoot = Binaries.packageRoot

/// A real origin: `examples/demo-upstream.py` on a free port of 127.0.0.1, started with
/// posix_spawn. Ready once its `READY <port>` line is in its output file. Its stdin is a FIFO
/// that only this object holds open for writing (`--exit-on-stdin-eof`): if the test process
/// dies, however it dies, the upstream reads EOF and exits. `stop()` (or deinit) kills and reaps it.
final class DemoUpstream: @unchecked Sendable {
    let name: String
    let port: UInt16
    private let process: ChildProcess
    private let directory: TemporaryDirectory
    private var stdinHolder: CInt

    init(name: String = "origin", timeout: Duration = .seconds(20)) throws {
        self.name = name
        directory = try TemporaryDirectory()
        let script = repositoryRoot.appendingPathComponent("examples/demo-upstream.py").path
        let started = try ReadyPortProcess(
            [script, "--port", "0", "--name", name, "--exit-on-stdin-eof"],
            environment: ProcessInfo.processInfo.environment, in: directory, what: "demo-upstream \(name)",
            timeout: timeout)
        process = started.process
        stdinHolder = started.stdinHolder
        port = started.port
    }

    deinit { stop() }

    var endpoint: String { "127.0.0.1:\(port)" }

    /// The upstream's own `/stats`: requests whose head it read (not counting /stats).
    func requestCount() throws -> Int {
        let response = try httpGet(port: port, path: "/stats")
        let json = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
        guard let requests = json?["requests"] as? Int else { throw HarnessError("bad /stats: \(response.body)") }
        return requests
    }

    func stop() {
        if stdinHolder >= 0 {
            close(stdinHolder)
            stdinHolder = -1
        }
        ReadyPortProcess.terminate(process)
    }
}

/// A Python script started with posix_spawn that prints `READY <port>` once it listens, its
/// output in `directory`. Its stdin is a FIFO that only `stdinHolder` holds open for writing
/// (the script's `--exit-on-stdin-eof`): if the test process dies, however it dies, the script
/// reads EOF and exits. The owner closes `stdinHolder` and reaps `process`.
struct ReadyPortProcess {
    let process: ChildProcess
    let stdinHolder: CInt
    let port: UInt16

    init(
        _ arguments: [String], environment: [String: String], in directory: TemporaryDirectory, what: String,
        timeout: Duration
    ) throws {
        let outputPath = directory.file("output.log")
        let fifo = directory.file("stdin")
        guard mkfifo(fifo, 0o600) == 0 else { throw HarnessError("mkfifo: \(String(cString: strerror(errno)))") }
        // Read-write, so that the open does not wait for a reader (Linux allows it on a FIFO).
        let stdinHolder = open(fifo, O_RDWR | O_CLOEXEC)
        guard stdinHolder >= 0 else { throw HarnessError("open \(fifo): \(String(cString: strerror(errno)))") }
        let process: ChildProcess
        do {
            process = try ChildProcess(
                ["/bin/sh", "-c", "exec python3 \"$@\" <'\(fifo)'", "sh"] + arguments, environment: environment,
                output: outputPath)
        } catch {
            close(stdinHolder)
            throw error
        }
        var port: UInt16?
        do {
            try waitUntil("\(what) to print READY", timeout: timeout) {
                let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
                if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("READY ") }) {
                    port = UInt16(line.dropFirst(6))
                    return true
                }
                guard process.isRunning else { throw HarnessError("\(what) exited: \(text)") }
                return false
            }
            guard let port else { throw HarnessError("\(what) printed a bad READY line") }
            self.port = port
        } catch {
            kill(process.pid, SIGKILL)
            while process.isRunning { usleep(1_000) }
            close(stdinHolder)
            throw error
        }
        self.process = process
        self.stdinHolder = stdinHolder
    }

    /// SIGTERM, then SIGKILL after 5 s (a Python server that is stuck); reaped either way.
    static func terminate(_ process: ChildProcess) {
        guard process.isRunning else { return }
        kill(process.pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { usleep(2_000) }
        if process.isRunning {
            kill(process.pid, SIGKILL)
            while process.isRunning { usleep(1_000) }
        }
    }
}

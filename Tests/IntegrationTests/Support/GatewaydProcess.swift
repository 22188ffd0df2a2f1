import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// One gatewayd master started by a test, with its own temp dir, config file, control
/// socket and log. `stop()` (or deinit) leaves no process behind: the master and every worker
/// pid ever seen in `status` are killed if still alive.
final class GatewaydProcess: @unchecked Sendable {
    let directory: TemporaryDirectory
    let configPath: String
    let socketPath: String
    let logPath: String
    let process: Process
    private let seenWorkerPids = Mutex2<Set<Int32>>([])

    var pid: Int32 { process.processIdentifier }

    init(config: String, extraArguments: [String] = [], waitForReady: Bool = true) throws {
        directory = try TemporaryDirectory()
        configPath = directory.file("gateway.yaml")
        socketPath = directory.file("control.sock")
        logPath = directory.file("gatewayd.log")
        try config.write(toFile: configPath, atomically: false, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.gatewayd)
        process.arguments = ["--config", configPath, "--control-socket", socketPath] + extraArguments
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        if waitForReady {
            do {
                try waitUntilServing()
            } catch {
                stop()
                throw HarnessError("\(error)\n--- gatewayd log ---\n\(self.log)")
            }
        }
    }

    deinit { stop() }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    var client: ControlClient { ControlClient(socketPath: socketPath, timeout: .seconds(60)) }

    func status() throws -> StatusReport {
        let response = try client.send(ControlRequest(command: .status))
        guard let status = response.status else { throw HarnessError("no status: \(response)") }
        for generation in status.generations {
            seenWorkerPids.update { seen in seen.formUnion(generation.workers.map(\.pid)) }
        }
        return status
    }

    /// Waits until exactly one generation is serving with every worker ready, and nothing
    /// else is starting (the control socket answering is the readiness signal).
    func waitUntilServing(timeout: Duration = .seconds(30)) throws {
        try waitUntil("gatewayd to serve", timeout: timeout) {
            guard process.isRunning else { throw HarnessError("gatewayd exited with \(process.terminationStatus)") }
            guard FileManager.default.fileExists(atPath: socketPath), let status = try? status() else { return false }
            return status.state == "running"
                && status.generations.contains {
                    $0.state == "serving" && $0.workers.allSatisfy { $0.state == "ready" }
                }
        }
    }

    /// Waits until no generation other than the serving one is left (old ones drained).
    func waitUntilSingleGeneration(timeout: Duration = .seconds(30)) throws {
        try waitUntil("old generations to finish", timeout: timeout) {
            let status = try status()
            return status.generations.count == 1 && status.generations[0].state == "serving"
        }
    }

    func port(of listener: String = "web") throws -> UInt16 {
        guard let entry = try status().listeners.first(where: { $0.name == listener }) else {
            throw HarnessError("no listener \(listener)")
        }
        return try ListenerAddress(parsing: entry.address).port
    }

    func writeConfig(_ text: String) throws {
        // Write-then-rename, as editors and config management do: a reload never reads half a file.
        let temporary = configPath + ".tmp"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary, configPath) == 0 else { throw HarnessError("rename failed") }
    }

    func gatewayctl(_ arguments: [String], timeout: Duration = .seconds(60)) throws -> CommandResult {
        try runCommand(Binaries.gatewayctl, arguments + ["--socket", socketPath], timeout: timeout)
    }

    func reload() throws -> CommandResult {
        try gatewayctl(["reload"])
    }

    /// Sends a signal to the master.
    func signal(_ signal: Int32) {
        kill(pid, signal)
    }

    /// Waits for the master to exit; returns its status.
    func waitForExit(timeout: Duration = .seconds(30)) throws -> Int32 {
        try waitUntil("gatewayd to exit", timeout: timeout) { !process.isRunning }
        return process.terminationStatus
    }

    var workerPidsSeen: Set<Int32> { seenWorkerPids.get() }

    func stop() {
        seenWorkerPids.update { $0.formUnion(childPids(of: pid)) }
        if process.isRunning {
            kill(pid, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(10)
            while process.isRunning && ContinuousClock.now < deadline { usleep(5_000) }
            if process.isRunning {
                kill(pid, SIGKILL)
                process.waitUntilExit()
            }
        }
        for worker in seenWorkerPids.get() where isAlive(worker) {
            kill(worker, SIGKILL)
        }
    }
}

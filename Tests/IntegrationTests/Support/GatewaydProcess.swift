import CGatewayShim
import Foundation
import GatewayCore

/// A child process started with posix_spawn (not Foundation's Process: under
/// systemd-socket-activate the program execs again, which Process mistakes for an exit, and
/// it then blocks reaping every other child on that one).
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    private let status = Mutex2<Int32?>(nil)

    init(_ command: [String], environment: [String: String], output: String) throws {
        var pid: pid_t = 0
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        let rc = gw_spawn_with_output(&pid, command[0], argv, envp, output)
        guard rc == 0 else { throw HarnessError("posix_spawn \(command[0]): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    var isRunning: Bool {
        if status.get() != nil { return false }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return true }
        // Exit code, or 128 + signal as a shell reports it.
        status.set(raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f))
        return false
    }

    var terminationStatus: Int32 {
        _ = isRunning
        return status.get() ?? -1
    }
}

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
    let process: ChildProcess
    private let seenWorkerPids = Mutex2<Set<Int32>>([])

    var pid: Int32 { process.pid }

    /// `launcher` runs before gatewayd (e.g. systemd-socket-activate and its options);
    /// `environment` is added to the test's own.
    init(
        config: String, extraArguments: [String] = [], waitForReady: Bool = true, launcher: [String] = [],
        environment: [String: String] = [:]
    ) throws {
        directory = try TemporaryDirectory()
        configPath = directory.file("gateway.yaml")
        socketPath = directory.file("control.sock")
        logPath = directory.file("gatewayd.log")
        try config.write(toFile: configPath, atomically: false, encoding: .utf8)
        let command =
            launcher + [Binaries.gatewayd, "--config", configPath, "--control-socket", socketPath] + extraArguments
        process = try ChildProcess(
            command, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, output: logPath)
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
            return status.state == .running
                && status.generations.contains {
                    $0.state == .serving && $0.workers.allSatisfy { $0.state == .ready }
                }
        }
    }

    /// Waits until no generation other than the serving one is left (old ones drained).
    func waitUntilSingleGeneration(timeout: Duration = .seconds(30)) throws {
        try waitUntil("old generations to finish", timeout: timeout) {
            let status = try status()
            return status.generations.count == 1 && status.generations[0].state == .serving
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
                while process.isRunning { usleep(1_000) }
            }
        }
        for worker in seenWorkerPids.get() where isProcessRunning(worker) {
            kill(worker, SIGKILL)
        }
    }
}

extension GatewaydProcess {
    /// The master's fd count and number of children once neither changes for 50 ms (the
    /// spares of the last reload started, the last control connection closed).
    func steadyResources() throws -> (fds: Int, children: Int) {
        var sample = (fds: -1, children: -1)
        try waitUntil("the master's fds and children to be steady", timeout: .seconds(10)) {
            let previous = sample
            usleep(50_000)
            sample = (openFileDescriptorCount(pid), childPids(of: pid).count)
            return sample == previous
        }
        return sample
    }
}

import ArgumentParser
import Foundation
import GatewayConfig
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

@main
struct GatewayCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatewayctl",
        abstract: "Control a running gatewayd through its control socket.",
        discussion: """
            Options go before or after the subcommand: `gatewayctl --socket PATH reload` and \
            `gatewayctl reload --socket PATH` are the same.

            EXIT STATUS
              0   done: reloaded, status shown, events shown (or followed until gatewayd stopped), log \
            level shown or changed, stopped, upgraded.
              1   gatewayd answered, but the command failed: the reload failed (the old generation \
            keeps serving), an unknown log level or target, the upgrade failed (the old master keeps serving), or the master was \
            still running when --timeout ran out after a stop.
              2   gatewayd could not be asked: no control socket, connection refused, permission \
            denied, no answer within --timeout, or an answer that is not the control protocol.
              64  usage error: an unknown option or an invalid value on the command line.
            """,
        version: GatewayVersion.current,
        subcommands: [Reload.self, Status.self, Events.self, LogLevel.self, Stop.self, Upgrade.self]
    )

    // Declared here too so that they may come before the subcommand; the subcommands read their own copy.
    @OptionGroup var socket: SocketOptions
}

struct SocketOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Control socket path (default: $\(ControlProtocol.socketEnvironmentVariable) or \(ControlProtocol.defaultSocketPath)).",
            valueName: "path")
    )
    var socket: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "How long to wait for an answer, e.g. 30s, 1.5s, 250ms (a bare number is seconds); by default, as long as it takes (a reload may wait for ready_timeout, and behind other reloads).",
            valueName: "duration"),
        transform: SocketOptions.parseTimeout
    )
    var timeout: Duration?

    /// A duration as in the config; a bare number is seconds, which is what --timeout took before
    /// durations. Zero means no limit.
    static func parseTimeout(_ text: String) throws -> Duration {
        if let seconds = Int(text), seconds >= 0 { return .seconds(seconds) }
        guard let duration = DurationText.parse(text) else {
            throw ValidationError("--timeout: invalid duration '\(text)' (expected e.g. 30s, 1.5s, 250ms)")
        }
        return duration
    }

    /// nil: no limit.
    var limit: Duration? { timeout.flatMap { $0 > .zero ? $0 : nil } }

    var client: ControlClient {
        let path =
            socket ?? ProcessInfo.processInfo.environment[ControlProtocol.socketEnvironmentVariable]
            ?? ControlProtocol.defaultSocketPath
        return ControlClient(socketPath: path, timeout: limit)
    }

    func send(_ request: ControlRequest) throws -> ControlResponse {
        do {
            return try client.send(request)
        } catch {
            printError("gatewayctl: \(error)")
            throw ExitCode(2)
        }
    }

    /// Sends `request`, hands each stream line to `onStream` as it arrives, and returns the
    /// response.
    func send(_ request: ControlRequest, onStream: (ControlStreamLine) -> Void) throws -> ControlResponse {
        var response: ControlResponse?
        do {
            try client.exchange(request) { line in
                switch line {
                case .response(let answer): response = answer
                case .stream(let streamed): onStream(streamed)
                }
                return true
            }
        } catch {
            printError("gatewayctl: \(error)")
            throw ExitCode(2)
        }
        guard let response else {
            printError("gatewayctl: \(ControlClient.Failure.badResponse("connection closed without an answer"))")
            throw ExitCode(2)
        }
        return response
    }
}

/// Whether standard output is a terminal (live progress is for people).
var standardOutputIsTerminal: Bool { isatty(STDOUT_FILENO) != 0 }

/// One compact JSON object on a line of its own, flushed at once (a stream's consumer reads it
/// as it comes).
func printJSONLine<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    if let data = try? encoder.encode(value) {
        print(String(decoding: data, as: UTF8.self))
        fflush(nil)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    if let data = try? encoder.encode(value) {
        print(String(decoding: data, as: UTF8.self))
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reload the config: start a new generation, then drain the old one.",
        discussion:
            "Waits for the outcome: exit 0 when the new generation serves, 1 when the reload failed (the old generation keeps serving). On a terminal, each phase is shown as it ends; with --json, each phase is a JSON line ({\"phase\":{\"name\",\"ms\"}}) before the answer."
    )
    @OptionGroup var socket: SocketOptions
    @Flag(name: .long, help: "Return once the reload is accepted, without waiting for its outcome.")
    var noWait = false
    @Flag(name: .long, help: "Print the answer as JSON.")
    var json = false

    func run() throws {
        // Phases as they end: JSON lines with --json, a line each on a terminal; otherwise the
        // output is the answer alone, as it always was.
        let live = !noWait && (json || standardOutputIsTerminal)
        let request = ControlRequest(command: .reload, wait: !noWait, progress: live ? true : nil)
        let response = try socket.send(request) { line in
            guard let phase = line.phase else { return }
            if json {
                printJSONLine(line)
            } else {
                let name = phase.name.padding(toLength: 8, withPad: " ", startingAt: 0)
                print("  \(name)\(String(format: "%8.1f", phase.ms)) ms")
                fflush(nil)
            }
        }
        if json { printJSON(response) }
        guard response.ok else {
            if !json {
                printError("reload failed: \(response.error ?? "unknown error")")
                for line in response.details ?? [] { printError(line) }
            }
            throw ExitCode(1)
        }
        guard !json else { return }
        if response.accepted == true {
            print("reload accepted")
            return
        }
        print("reloaded: generation \(response.generation ?? 0) serving")
        if let t = response.timings {
            print(
                String(
                    format:
                        "  validate %.1f ms, bind %.1f ms, spawn %.1f ms, ready %.1f ms, switch %.1f ms, total %.1f ms",
                    t.validateMs, t.bindMs, t.spawnMs, t.readyMs, t.switchMs, t.totalMs))
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show generations, workers and listeners.")
    @OptionGroup var socket: SocketOptions
    @Flag(
        name: .long,
        help: "Print JSON: {\"master_pid\", \"generations\": [{\"id\", \"state\", \"workers\": [...]}], ...}.")
    var json = false

    func run() throws {
        let response = try socket.send(ControlRequest(command: .status))
        guard response.ok, let status = response.status else {
            printError("status failed: \(response.error ?? "no status in the answer")")
            throw ExitCode(1)
        }
        if json {
            printJSON(status)
            return
        }
        print(
            "gatewayd \(status.version ?? "(older than 'version' in status)"), master pid \(status.masterPid), \(status.state.rawValue), config \(status.configPath)"
        )
        print(
            "reloads: \(status.reloads) (\(status.failedReloads) failed), reload phase: \(status.reloadPhase.rawValue)")
        print("spare workers (started ahead of the next reload): \(status.spareWorkers.count)")
        for generation in status.generations {
            if let degraded = generation.degraded { print("generation \(generation.id) DEGRADED: \(degraded)") }
        }
        print("")
        print(
            pad("GEN", 5) + pad("STATE", 10) + pad("WORKER", 8) + pad("PID", 9) + pad("WSTATE", 13) + pad("CONNS", 7)
                + "RESTARTS")
        for generation in status.generations {
            if generation.workers.isEmpty {
                print(pad("\(generation.id)", 5) + generation.state.rawValue)
            }
            for worker in generation.workers {
                print(
                    pad("\(generation.id)", 5) + pad(generation.state.rawValue, 10) + pad("\(worker.index)", 8)
                        + pad("\(worker.pid)", 9) + pad(worker.state.rawValue, 13) + pad("\(worker.connections)", 7)
                        + "\(worker.restarts)")
            }
        }
        print("")
        print(pad("LISTENER", 20) + pad("ADDRESS", 26) + pad("FD", 6) + "ORIGIN")
        for listener in status.listeners {
            print(
                pad(listener.name, 20) + pad(listener.address, 26) + pad("\(listener.fd)", 6) + listener.origin.rawValue
            )
        }
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop gatewayd: drain every generation, then exit (or --now: stop at once).",
        discussion: "Waits until the master has exited, at most --timeout."
    )
    @OptionGroup var socket: SocketOptions
    @Flag(name: .long, help: "Do not drain: close every connection now.")
    var now = false
    @Flag(name: .long, help: "Return once the stop is accepted.")
    var noWait = false

    func run() throws {
        let status = try socket.send(ControlRequest(command: .status))
        let response = try socket.send(ControlRequest(command: .stop, now: now))
        guard response.ok else {
            printError("stop failed: \(response.error ?? "unknown error")")
            throw ExitCode(1)
        }
        guard !noWait, let pid = status.status?.masterPid else {
            print("stop accepted")
            return
        }
        let deadline = socket.limit.map { ContinuousClock.now + $0 }
        // The master is not our child, so there is nothing to wait(2) for: poll its pid.
        while isProcessRunning(pid) {
            if let deadline, let limit = socket.limit, ContinuousClock.now > deadline {
                printError("gatewayd (pid \(pid)) still running after \(DurationText.format(limit))")
                throw ExitCode(1)
            }
            usleep(20_000)
        }
        print("stopped")
    }
}

struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upgrade gatewayd itself: a new master takes over the sockets, then the old one drains and exits.",
        discussion:
            "Waits for the outcome: exit 0 when the new master serves and is in charge (its pid and version are printed), 1 when the upgrade failed (the old master keeps serving and stays in charge; the reason is printed)."
    )
    @OptionGroup var socket: SocketOptions
    @Option(
        name: .long,
        help: "The new gatewayd binary (default: the path the running master was started from, as it is now).")
    var binary: String?
    @Flag(name: .long, help: "Print the answer as JSON.")
    var json = false

    func run() throws {
        // The master resolves a relative path against its own working directory, not ours.
        let path = binary.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let response = try socket.send(ControlRequest(command: .upgrade, binary: path))
        if json { printJSON(response) }
        guard response.ok else {
            if !json {
                printError("upgrade failed: \(response.error ?? "unknown error")")
                for line in response.details ?? [] { printError(line) }
            }
            throw ExitCode(1)
        }
        guard !json else { return }
        print(
            "upgraded: master pid \(response.masterPid.map(String.init) ?? "?") (\(response.masterVersion ?? "unknown version")) serves generation \(response.generation ?? 0)"
        )
    }
}

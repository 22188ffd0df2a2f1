import ArgumentParser
import Foundation
import Gateway
import GatewayConfig
import GatewayCore
import GatewaySupervisor
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A synchronous entry point whose main thread waits on a semaphore, instead of Swift's async
/// main. The async main parks the main thread in libdispatch's `dispatch_main`, which calls
/// `pthread_exit` and sleeps forever in a thread-specific-data destructor: glibc's `setuid`
/// skips a thread that is exiting, so a worker's main thread would stay root after the
/// privilege drop (seen in /proc/PID/task/PID/status), and code that gets to run on it (a signal
/// handler) would be root again. A thread blocked on a semaphore is an ordinary thread: the
/// drop reaches it. Nothing in gatewayd runs on the main actor or the main queue.
@main
enum Entry {
    static func main() {
        let finished = DispatchSemaphore(value: 0)
        // Detached: a task inheriting the main actor would wait for the main thread, which waits.
        Task.detached {
            await Gatewayd.main()
            finished.signal()
        }
        finished.wait()
    }
}

struct Gatewayd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatewayd",
        abstract: "A graceful-restart supervisor for an HTTP API gateway.",
        discussion: """
            Options go before or after the subcommand: `gatewayd -c FILE check` and \
            `gatewayd check -c FILE` are the same. Without a subcommand, gatewayd runs.

            EXIT STATUS
              0   run: stopped after a drain (SIGTERM, `gatewayctl stop`). check: the file is valid \
            (warnings, if any, are on stderr).
              1   run: could not start (invalid config, a port that cannot be bound, generation 1 \
            did not come up); the reason is on stderr. check: the file has errors.
              64  usage error: an unknown option or an invalid value on the command line.
            """,
        version: GatewayVersion.current,
        subcommands: [Run.self, Check.self, Worker.self],
        defaultSubcommand: Run.self
    )

    // Declared here too so that it may come before the subcommand; the subcommands read their own copy.
    @OptionGroup var config: ConfigOption
}

struct ConfigOption: ParsableArguments {
    static let defaultPath = "/etc/gatewayd/gatewayd.yaml"

    @Option(name: [.short, .long], help: ArgumentHelp("The YAML config file.", valueName: "file"))
    var config: String = ConfigOption.defaultPath
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension GatewayLogHandler.Format: ExpressibleByArgument {}

struct DurationArgument: ExpressibleByArgument {
    var duration: Duration
    init?(argument: String) {
        guard let parsed = DurationText.parse(argument) else { return nil }
        duration = parsed
    }
}

struct LogOptions: ParsableArguments {
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info
    @Option(name: .long, help: "text or json.")
    var logFormat: GatewayLogHandler.Format = .text
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the master: bind the listeners, start the workers, supervise (the default).")

    @OptionGroup var config: ConfigOption
    @Option(name: .long, help: "Workers per generation (overrides `workers`).")
    var workers: Int?
    @Option(name: .long, help: "Control socket path (overrides `control_socket`).")
    var controlSocket: String?
    @Option(name: .long, help: ArgumentHelp("e.g. 30s, 1.5s (overrides `drain_timeout`).", valueName: "duration"))
    var drainTimeout: DurationArgument?
    @Option(name: .long, help: ArgumentHelp("e.g. 10s, 500ms (overrides `ready_timeout`).", valueName: "duration"))
    var readyTimeout: DurationArgument?
    @Option(name: .long, help: "Write the master's pid here.")
    var pidFile: String?
    @Flag(
        inversion: .prefixedNo,
        help:
            "Keep one started worker process per worker waiting for the next reload (faster reloads, one idle process each)."
    )
    var prestartWorkers = true
    @Flag(
        name: .long,
        help: "Put every listening socket the master binds into systemd's fd store (also on when systemd sets FDSTORE)."
    )
    var fdStore = false
    @OptionGroup var log: LogOptions

    func validate() throws {
        if let workers, !(1...1024).contains(workers) {
            throw ValidationError("--workers must be from 1 to 1024")
        }
    }

    func run() async throws {
        GatewayLogHandler.bootstrap(format: log.logFormat, level: log.logLevel)
        let logger = Logger(label: "gatewayd")
        let config = self.config.config
        logger.notice(
            "gatewayd \(GatewayVersion.current) starting", metadata: ["config": "\(config)", "pid": "\(getpid())"])
        let options = SupervisorOptions(
            configPath: config, workers: workers, controlSocket: controlSocket, drainTimeout: drainTimeout?.duration,
            readyTimeout: readyTimeout?.duration, pidFile: pidFile, logLevel: log.logLevel, logFormat: log.logFormat,
            prestartWorkers: prestartWorkers,
            fdStore: fdStore || (Int(ProcessInfo.processInfo.environment["FDSTORE"] ?? "") ?? 0) > 0)
        // Started by `gatewayctl upgrade` or SIGUSR2 (GATEWAYD_UPGRADE_FD): take over from the
        // old master, which hears of every failure, its config check's included.
        if let tookOver = await Master.takeOver(options: options, logger: logger) {
            guard tookOver else { throw ExitCode(1) }
            return
        }
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(path: config)
        } catch {
            for diagnostic in error.diagnostics { printError(diagnostic.formatted(.error)) }
            throw ExitCode(1)
        }
        for warning in ConfigLoader.warnings(for: loaded) { logger.warning("\(warning)") }
        let master = Master(options: options, loaded: loaded, logger: logger)
        let signals = Task { await master.handleSignals() }
        defer { signals.cancel() }
        do {
            try await master.run()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a config file and exit.",
        discussion: """
            Prints `FILE: ok` on stdout and exits 0 when the file is valid, or one \
            `FILE:LINE:COL: error: message` line per problem on stderr and exits 1. Valid but \
            suspicious settings (a route an earlier route shadows, an upstream no route uses) \
            print `FILE:LINE:COL: warning: message` on stderr and do not change the exit status.
            """)

    @OptionGroup var config: ConfigOption

    func run() throws {
        let path = config.config
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(path: path)
        } catch {
            for diagnostic in error.diagnostics { printError(diagnostic.formatted(.error)) }
            throw ExitCode(1)
        }
        for warning in ConfigLoader.warnings(for: loaded) { printError(warning.formatted(.warning)) }
        print("\(path): ok")
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// What the master spawns. Not for people: it expects the handoff channel on fd 3.
struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker (started by the master, with its handoff channel on fd 3).",
        shouldDisplay: false)

    @OptionGroup var log: LogOptions

    @Option(name: .long, help: "The master's pid: the worker drains and exits once its parent is no longer this.")
    var masterPid: Int32?

    func run() async throws {
        GatewayLogHandler.bootstrap(format: log.logFormat, level: log.logLevel)
        await WorkerProcess.run(logger: Logger(label: "gatewayd-worker"), masterPID: masterPid)
    }
}

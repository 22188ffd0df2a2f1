import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What `gatewayd run` was told on its command line. Flags override the config file.
public struct SupervisorOptions: Sendable {
    public var configPath: String
    public var workers: Int?
    public var controlSocket: String?
    public var drainTimeout: Duration?
    public var readyTimeout: Duration?
    public var pidFile: String?
    public var logLevel: Logger.Level
    public var logFormat: GatewayLogHandler.Format
    /// argv[0] shown by ps for workers, and the program they run.
    public var workerExecutable: String
    /// Keep one started worker process per worker waiting for the next reload (see
    /// `Master.replenishSpares`).
    public var prestartWorkers: Bool
    /// Put every socket the master binds into systemd's fd store (`--fd-store`, or systemd's
    /// FDSTORE environment variable), so a restarted master gets them back.
    public var fdStore: Bool
    /// The master's command line, argv[0] first: an upgrade starts the new binary with the
    /// same arguments.
    public var arguments: [String]
    /// What an upgrade starts when no binary is named: the path this master was started from,
    /// made absolute when it started (argv[0] against the working directory, or $PATH), and
    /// opened anew at each upgrade, so that a package upgrade that replaced the file is picked
    /// up. Not /proc/self/exe, which is the old file even after it was replaced.
    public var upgradeBinary: String

    public init(
        configPath: String, workers: Int? = nil, controlSocket: String? = nil, drainTimeout: Duration? = nil,
        readyTimeout: Duration? = nil, pidFile: String? = nil, logLevel: Logger.Level = .info,
        logFormat: GatewayLogHandler.Format = .text, workerExecutable: String = "/proc/self/exe",
        prestartWorkers: Bool = true, fdStore: Bool = false, arguments: [String] = CommandLine.arguments
    ) {
        self.arguments = arguments
        self.upgradeBinary = Self.absolutePath(ofCommand: arguments.first ?? "gatewayd")
        self.prestartWorkers = prestartWorkers
        self.fdStore = fdStore
        self.configPath = configPath
        self.workers = workers
        self.controlSocket = controlSocket
        self.drainTimeout = drainTimeout
        self.readyTimeout = readyTimeout
        self.pidFile = pidFile
        self.logLevel = logLevel
        self.logFormat = logFormat
        self.workerExecutable = workerExecutable
    }
}

extension SupervisorOptions {
    /// `command` as a shell would have found it: a path with a slash against the working
    /// directory, a bare name in $PATH (the first executable match); as given if neither.
    static func absolutePath(ofCommand command: String) -> String {
        if command.hasPrefix("/") { return command }
        if command.contains("/") {
            return FileManager.default.currentDirectoryPath + "/" + command
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(command)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return command
    }
}

/// The master's settings for one generation: the file's values with the command line's on top.
struct EffectiveSettings: Sendable, Equatable {
    var workers: Int
    var drainTimeout: Duration
    var readyTimeout: Duration
    var maxDrainingGenerations: Int
    var workerWatchdogTimeout: Duration
    var controlSocket: String

    init(_ config: GatewayConfiguration, options: SupervisorOptions, cpuCount: Int) {
        workers = options.workers ?? config.workers ?? max(1, cpuCount)
        drainTimeout = options.drainTimeout ?? config.drainTimeout
        readyTimeout = options.readyTimeout ?? config.readyTimeout
        maxDrainingGenerations = config.maxDrainingGenerations
        workerWatchdogTimeout = config.workerWatchdogTimeout
        controlSocket = options.controlSocket ?? config.controlSocket ?? ControlProtocol.defaultSocketPath
    }
}

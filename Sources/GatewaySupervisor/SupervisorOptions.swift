import GatewayConfig
import GatewayCore
import Logging

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

    public init(
        configPath: String, workers: Int? = nil, controlSocket: String? = nil, drainTimeout: Duration? = nil,
        readyTimeout: Duration? = nil, pidFile: String? = nil, logLevel: Logger.Level = .info,
        logFormat: GatewayLogHandler.Format = .text, workerExecutable: String = "/proc/self/exe",
        prestartWorkers: Bool = true, fdStore: Bool = false
    ) {
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

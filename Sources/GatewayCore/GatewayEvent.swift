/// One thing that happened to the gateway at run time, as the master saw it: a reload, an
/// upgrade, a worker's exit or restart, a watchdog kill, a drain, a stop, a change of log
/// level. The master keeps the last `capacity` (GatewaySupervisor's `EventHistory`), answers
/// them to `gatewayctl events`, streams new ones to `events --follow`, and hands them to the
/// next master in an upgrade (`UpgradeMessage.history`), so that the history of a gateway does
/// not end with the process that wrote it.
///
/// Every field but `id`, `type`, `time` and `master_pid` is optional: each type fills what it
/// has (docs/observability.md lists which). Clients must ignore fields and types they do not
/// know: both grow within version 1 of the control protocol.
public struct GatewayEvent: Codable, Sendable, Equatable {
    /// What happened. A string, not a closed enum: a client of a newer master must still
    /// decode, and show, a type it does not know.
    public struct Kind: RawRepresentable, Codable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(from decoder: any Decoder) throws {
            rawValue = try decoder.singleValueContainer().decode(String.self)
        }
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(rawValue)
        }
        public var description: String { rawValue }

        /// The master started and its first generation serves.
        public static let start = Kind(rawValue: "start")
        public static let reload = Kind(rawValue: "reload")
        public static let upgrade = Kind(rawValue: "upgrade")
        /// A worker of a serving generation died (it is restarted: `worker_restart`).
        public static let workerExit = Kind(rawValue: "worker_exit")
        /// The replacement of a dead worker is ready.
        public static let workerRestart = Kind(rawValue: "worker_restart")
        /// The worker watchdog killed a silent worker.
        public static let watchdogKill = Kind(rawValue: "watchdog_kill")
        /// An old generation's drain ended: every connection closed, or some cut at
        /// drain_timeout.
        public static let drain = Kind(rawValue: "drain")
        public static let stop = Kind(rawValue: "stop")
        public static let logLevel = Kind(rawValue: "log_level")
    }

    public enum Outcome: String, Codable, Sendable, CaseIterable {
        case ok
        case failed
    }

    /// What a reload changed, each entry named (ConfigDiff's, in a form for the wire).
    public struct Diff: Codable, Sendable, Equatable {
        public var listenersAdded: [String]
        public var listenersRemoved: [String]
        /// Same name, another address or backlog.
        public var listenersChanged: [String]
        public var routesAdded: [String]
        public var routesRemoved: [String]
        public var routesChanged: [String]
        /// Added, removed or changed, by name.
        public var upstreamsChanged: [String]
        /// Every other changed setting, one line each (`workers 2 -> 4`).
        public var settings: [String]

        public init(
            listenersAdded: [String] = [], listenersRemoved: [String] = [], listenersChanged: [String] = [],
            routesAdded: [String] = [], routesRemoved: [String] = [], routesChanged: [String] = [],
            upstreamsChanged: [String] = [], settings: [String] = []
        ) {
            self.listenersAdded = listenersAdded
            self.listenersRemoved = listenersRemoved
            self.listenersChanged = listenersChanged
            self.routesAdded = routesAdded
            self.routesRemoved = routesRemoved
            self.routesChanged = routesChanged
            self.upstreamsChanged = upstreamsChanged
            self.settings = settings
        }

        public var isEmpty: Bool { self == Diff() }

        enum CodingKeys: String, CodingKey {
            case listenersAdded = "listeners_added", listenersRemoved = "listeners_removed",
                listenersChanged = "listeners_changed", routesAdded = "routes_added", routesRemoved = "routes_removed",
                routesChanged = "routes_changed", upstreamsChanged = "upstreams_changed", settings
        }
    }

    /// Increasing within a master and carried across upgrades: `events --follow` resumes after
    /// the last one it printed.
    public var id: Int
    public var type: Kind
    /// When it began, wall clock seconds since 1970.
    public var time: Double
    /// What asked for it: `SIGHUP`, `control socket (uid 1000)`, `SIGUSR2`, `drain_timeout`…
    public var trigger: String?
    /// The control socket peer's uid (SO_PEERCRED), when a control request asked for it.
    public var peerUID: UInt32?
    public var outcome: Outcome?
    /// Why it failed, or why a worker exited; a stop's is how it goes (`drain` or `now`).
    public var reason: String?
    /// Each of a failed reload's config errors, with its `file:line:col`.
    public var details: [String]?
    /// The generation it concerns: the one serving after a reload, the one drained, the
    /// worker's.
    public var generation: Int?
    /// Phase name → milliseconds: validate, bind, spawn, ready, switch (a reload); drain.
    public var phases: [String: Double]?
    public var durationMs: Double?
    /// A reload's changes.
    public var diff: Diff?
    /// A worker's index and pid.
    public var worker: Int?
    public var pid: Int32?
    /// A drain: the connections open when it began.
    public var connections: Int?
    /// A drain: the connections still open at drain_timeout, closed by SIGTERM.
    public var cut: Int?
    /// A log-level change: the new level and the target it applies to (`all`, or one).
    public var level: String?
    public var target: String?
    /// The master that recorded it (an upgrade's is the old master's).
    public var masterPid: Int32

    public init(
        id: Int = 0, type: Kind, time: Double, trigger: String? = nil, peerUID: UInt32? = nil,
        outcome: Outcome? = nil, reason: String? = nil, details: [String]? = nil, generation: Int? = nil,
        phases: [String: Double]? = nil, durationMs: Double? = nil, diff: Diff? = nil, worker: Int? = nil,
        pid: Int32? = nil, connections: Int? = nil, cut: Int? = nil, level: String? = nil, target: String? = nil,
        masterPid: Int32
    ) {
        self.id = id
        self.type = type
        self.time = time
        self.trigger = trigger
        self.peerUID = peerUID
        self.outcome = outcome
        self.reason = reason
        self.details = details
        self.generation = generation
        self.phases = phases
        self.durationMs = durationMs
        self.diff = diff
        self.worker = worker
        self.pid = pid
        self.connections = connections
        self.cut = cut
        self.level = level
        self.target = target
        self.masterPid = masterPid
    }

    enum CodingKeys: String, CodingKey {
        case id, type, time, trigger, peerUID = "peer_uid", outcome, reason, details, generation, phases,
            durationMs = "duration_ms", diff, worker, pid, connections, cut, level, target, masterPid = "master_pid"
    }
}

extension ReloadTimings {
    /// The phases as an event names them (`validate`, `bind`, `spawn`, `ready`, `switch`).
    public var phases: [String: Double] {
        ReloadPhase.allCases.reduce(into: [:]) { phases, phase in
            if let name = phase.eventName { phases[name] = self[phase] }
        }
    }
}

extension ReloadPhase {
    /// The short name an event's `phases` and a reload's live progress use; nil for `idle`.
    public var eventName: String? {
        switch self {
        case .idle: return nil
        case .validating: return "validate"
        case .binding: return "bind"
        case .spawning: return "spawn"
        case .waitingForReady: return "ready"
        case .switching: return "switch"
        }
    }
}

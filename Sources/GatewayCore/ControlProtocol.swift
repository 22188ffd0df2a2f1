// The control protocol between gatewayctl (or any client) and the master, version 1.
//
// Transport: a Unix stream socket (default path `ControlProtocol.defaultSocketPath`), mode
// 0600; the master also checks the peer's uid with SO_PEERCRED (same uid or root).
// Framing: JSON lines. The client speaks first: one request line, at most
// `maximumRequestLength` bytes. The master answers with one response line and closes; a
// request that asks for progress (`reload` with `"progress": true`) or follows events
// (`events` with `"follow": true`) also gets stream lines (`ControlStreamLine`: objects
// without `ok`), before the response (progress) or after it (follow, until the client
// closes or the master ends). A client tells them apart by `ok`, which only a response has.
// A `reload` with `"wait": true` is answered when the reload has ended, which may take up to
// ready_timeout plus the time to read the config. An `upgrade` is answered when the new master
// is in charge (or the upgrade failed and the old one still is), by the old master, on the
// connection it accepted.
//
// Requests:   {"version":1,"command":"status"}
//             {"version":1,"command":"reload","wait":true}
//             {"version":1,"command":"stop","now":false}
//             {"version":1,"command":"upgrade","binary":"/usr/local/bin/gatewayd"}
//             {"version":1,"command":"reload","progress":true}
//             {"version":1,"command":"events","follow":true,"since":41}
//             {"version":1,"command":"log_level","level":"debug","target":"proxy"}
// Responses:  {"ok":true, ...command-specific fields}
//             {"ok":false,"error":"what went wrong","details":["gateway.yaml:3:5: ..."]}
//
// Changes within version 1 are additions only, which a client of an older or newer master must
// tolerate missing or unknown (JSONDecoder ignores unknown keys):
// - status.version: the master's version string (gatewayd --version).
// - the `upgrade` command (an older master answers "unknown command"), `master_pid` and
//   `master_version` in its answer, and `status.upgrade_phase`.
// - the `events` command (`events` in its answer, then stream lines with `follow`), and
//   `progress` on `reload` (stream lines a master that does not know it never sends: a client
//   then sees the response alone).
// - the `log_level` command, and `log_levels` in its answer.

import Foundation

public enum ControlProtocol {
    public static let version = 1
    /// Under /run, as systemd's RuntimeDirectory=gatewayd makes it.
    public static let defaultSocketPath = "/run/gatewayd/control.sock"
    public static let socketEnvironmentVariable = "GATEWAYD_SOCKET"
    /// A request is a few dozen bytes; anything near this is garbage or hostile.
    public static let maximumRequestLength = 64 * 1024
}

public struct ControlRequest: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable, CaseIterable {
        case status, reload, stop, upgrade, events
        case logLevel = "log_level"
    }
    public var version: Int
    public var command: Command
    /// reload: wait for the outcome (default true).
    public var wait: Bool?
    /// stop: skip the drain.
    public var now: Bool?
    /// upgrade: the new binary, an absolute path (default: the one the master was started
    /// from).
    public var binary: String?
    /// reload: send a stream line (`phase`) as each phase ends, before the response.
    public var progress: Bool?
    /// events: after the response, send each new event (and drain progress) as a stream line
    /// until the client closes.
    public var follow: Bool?
    /// events: only those with a greater id (a follower that reconnects).
    public var since: Int?
    /// log_level: the level to set (`trace` … `critical`); without it, the levels are only read.
    public var level: String?
    /// log_level: the target (`LogTarget`) to set; without it, every target.
    public var target: String?

    public init(
        command: Command, wait: Bool? = nil, now: Bool? = nil, binary: String? = nil, progress: Bool? = nil,
        follow: Bool? = nil, since: Int? = nil, level: String? = nil, target: String? = nil
    ) {
        self.level = level
        self.target = target
        self.version = ControlProtocol.version
        self.command = command
        self.wait = wait
        self.now = now
        self.binary = binary
        self.progress = progress
        self.follow = follow
        self.since = since
    }
}

/// A line the master sends: the response, or a stream line around it.
public enum ControlLine: Sendable, Equatable {
    case response(ControlResponse)
    case stream(ControlStreamLine)

    public func encodedLine() -> [UInt8] {
        switch self {
        case .response(let response): return response.encodedLine()
        case .stream(let line): return line.encodedLine()
        }
    }
}

/// A line of a stream, sent beside a response (see the header): one of its fields is set.
public struct ControlStreamLine: Codable, Sendable, Equatable {
    /// A reload's phase that just ended, and how long it took.
    public struct Phase: Codable, Sendable, Equatable {
        /// `validate`, `bind`, `spawn`, `ready`, `switch` (`ReloadPhase.eventName`).
        public var name: String
        public var ms: Double
        public init(name: String, ms: Double) {
            self.name = name
            self.ms = ms
        }
    }

    /// A draining generation's open connections, each time the count changes.
    public struct Drain: Codable, Sendable, Equatable {
        public var generation: Int
        public var connections: Int
        public init(generation: Int, connections: Int) {
            self.generation = generation
            self.connections = connections
        }
    }

    public var phase: Phase?
    public var event: GatewayEvent?
    public var drain: Drain?

    public init(phase: Phase? = nil, event: GatewayEvent? = nil, drain: Drain? = nil) {
        self.phase = phase
        self.event = event
        self.drain = drain
    }

    public func encodedLine() -> [UInt8] { ControlProtocol.encodedLine(self) }
}

/// How long each phase of a reload took, in milliseconds.
public struct ReloadTimings: Codable, Sendable, Equatable {
    public var validateMs: Double
    public var bindMs: Double
    public var spawnMs: Double
    public var readyMs: Double
    public var switchMs: Double
    public var totalMs: Double

    public init(
        validateMs: Double = 0, bindMs: Double = 0, spawnMs: Double = 0, readyMs: Double = 0, switchMs: Double = 0,
        totalMs: Double = 0
    ) {
        self.validateMs = validateMs
        self.bindMs = bindMs
        self.spawnMs = spawnMs
        self.readyMs = readyMs
        self.switchMs = switchMs
        self.totalMs = totalMs
    }

    enum CodingKeys: String, CodingKey {
        case validateMs = "validate_ms", bindMs = "bind_ms", spawnMs = "spawn_ms", readyMs = "ready_ms",
            switchMs = "switch_ms", totalMs = "total_ms"
    }

    /// The time spent in one phase; `idle` has none (reads 0, writes are dropped).
    public subscript(phase: ReloadPhase) -> Double {
        get {
            switch phase {
            case .idle: return 0
            case .validating: return validateMs
            case .binding: return bindMs
            case .spawning: return spawnMs
            case .waitingForReady: return readyMs
            case .switching: return switchMs
            }
        }
        set {
            switch phase {
            case .idle: break
            case .validating: validateMs = newValue
            case .binding: bindMs = newValue
            case .spawning: spawnMs = newValue
            case .waitingForReady: readyMs = newValue
            case .switching: switchMs = newValue
            }
        }
    }

    /// The JSON key (and log metadata key) of a phase's time; nil for `idle`.
    public static func key(of phase: ReloadPhase) -> String? {
        switch phase {
        case .idle: return nil
        case .validating: return CodingKeys.validateMs.rawValue
        case .binding: return CodingKeys.bindMs.rawValue
        case .spawning: return CodingKeys.spawnMs.rawValue
        case .waitingForReady: return CodingKeys.readyMs.rawValue
        case .switching: return CodingKeys.switchMs.rawValue
        }
    }
}

public struct StatusReport: Codable, Sendable, Equatable {
    public struct Worker: Codable, Sendable, Equatable {
        public var index: Int
        public var pid: Int32
        public var state: WorkerState
        public var connections: Int
        public var restarts: Int
        public init(index: Int, pid: Int32, state: WorkerState, connections: Int, restarts: Int) {
            self.index = index
            self.pid = pid
            self.state = state
            self.connections = connections
            self.restarts = restarts
        }
    }
    public struct Generation: Codable, Sendable, Equatable {
        public var id: Int
        public var state: GenerationState
        public var startedAt: Double
        public var workers: [Worker]
        /// Why a serving generation is below strength (a worker down, restarting or
        /// crash-looping), or nil when it is not.
        public var degraded: String?
        public init(id: Int, state: GenerationState, startedAt: Double, workers: [Worker], degraded: String? = nil) {
            self.id = id
            self.state = state
            self.startedAt = startedAt
            self.workers = workers
            self.degraded = degraded
        }
        enum CodingKeys: String, CodingKey { case id, state, startedAt = "started_at", workers, degraded }
    }
    public struct Listener: Codable, Sendable, Equatable {
        public var name: String
        public var address: String
        public var fd: Int32
        public var origin: ListenerTable.Origin
        public init(name: String, address: String, fd: Int32, origin: ListenerTable.Origin) {
            self.name = name
            self.address = address
            self.fd = fd
            self.origin = origin
        }
    }
    public var masterPid: Int32
    public var state: MasterState
    public var configPath: String
    public var reloadPhase: ReloadPhase
    public var reloads: Int
    public var failedReloads: Int
    public var generations: [Generation]
    public var listeners: [Listener]
    /// Pids of the pre-started workers waiting for the next reload.
    public var spareWorkers: [Int32]
    /// The master's version (`gatewayd --version`). Added after version 1 was first released:
    /// a master from before sends none, and clients must take it as optional.
    public var version: String?
    /// Where an upgrade of the master stands (`idle` when none runs); nil from a master
    /// before upgrades.
    public var upgradePhase: UpgradePhase?

    public init(
        masterPid: Int32, state: MasterState, configPath: String, reloadPhase: ReloadPhase, reloads: Int,
        failedReloads: Int, generations: [Generation], listeners: [Listener], spareWorkers: [Int32] = [],
        version: String? = GatewayVersion.current, upgradePhase: UpgradePhase? = nil
    ) {
        self.version = version
        self.upgradePhase = upgradePhase
        self.spareWorkers = spareWorkers
        self.masterPid = masterPid
        self.state = state
        self.configPath = configPath
        self.reloadPhase = reloadPhase
        self.reloads = reloads
        self.failedReloads = failedReloads
        self.generations = generations
        self.listeners = listeners
    }

    enum CodingKeys: String, CodingKey {
        case masterPid = "master_pid", state, configPath = "config_path", reloadPhase = "reload_phase", reloads,
            failedReloads = "failed_reloads", generations, listeners, spareWorkers = "spare_workers", version,
            upgradePhase = "upgrade_phase"
    }
}

public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    public var details: [String]?
    /// reload: the generation now serving.
    public var generation: Int?
    public var timings: ReloadTimings?
    /// reload --no-wait: accepted, outcome not known yet.
    public var accepted: Bool?
    public var status: StatusReport?
    /// upgrade: the new master, in charge now, and its version (`gatewayd --version`).
    public var masterPid: Int32?
    public var masterVersion: String?
    /// events: the recent events, oldest first.
    public var events: [GatewayEvent]?
    /// log_level: every target's level (after the change, if one was asked for).
    public var logLevels: [String: String]?

    public init(
        ok: Bool, error: String? = nil, details: [String]? = nil, generation: Int? = nil, timings: ReloadTimings? = nil,
        accepted: Bool? = nil, status: StatusReport? = nil, masterPid: Int32? = nil, masterVersion: String? = nil,
        events: [GatewayEvent]? = nil, logLevels: [String: String]? = nil
    ) {
        self.events = events
        self.logLevels = logLevels
        self.masterPid = masterPid
        self.masterVersion = masterVersion
        self.ok = ok
        self.error = error
        self.details = details
        self.generation = generation
        self.timings = timings
        self.accepted = accepted
        self.status = status
    }

    public static func failure(_ error: String, details: [String]? = nil) -> ControlResponse {
        ControlResponse(ok: false, error: error, details: details)
    }

    enum CodingKeys: String, CodingKey {
        case ok, error, details, generation, timings, accepted, status, masterPid = "master_pid",
            masterVersion = "master_version", events, logLevels = "log_levels"
    }
}

/// Why a request line was refused; `description` is the `error` the master answers with.
public struct ControlRequestError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension ControlRequest {
    /// Just the fields every version has, read first so that a wrong version or an unknown
    /// command is reported as such rather than as a decoding failure.
    private struct Envelope: Decodable {
        var version: Int
        var command: String
    }

    /// Decodes one request line (without its newline): malformed JSON, a missing field, an
    /// unknown command or another protocol version each get an error saying which.
    public init(line: [UInt8]) throws(ControlRequestError) {
        let data = Data(line)
        let envelope: Envelope
        do {
            envelope = try JSONDecoder().decode(Envelope.self, from: data)
        } catch {
            throw ControlRequestError("malformed request: \(Self.describe(error, in: data))")
        }
        guard envelope.version == ControlProtocol.version else {
            throw ControlRequestError(
                "unsupported protocol version \(envelope.version) (this gatewayd speaks \(ControlProtocol.version))")
        }
        guard Command(rawValue: envelope.command) != nil else {
            let known = Command.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            throw ControlRequestError("unknown command '\(envelope.command)' (known commands: \(known))")
        }
        do {
            self = try JSONDecoder().decode(ControlRequest.self, from: data)
        } catch {
            throw ControlRequestError("malformed request: \(Self.describe(error, in: data))")
        }
    }

    private static func describe(_ error: Error, in data: Data) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty:
            // JSONDecoder on Linux says only that the data is not valid JSON; JSONSerialization
            // says what and where ("Invalid value around character 1.").
            do {
                _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            } catch {
                if let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String {
                    return "not JSON: \(detail)"
                }
            }
            return "not JSON: \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context):
            return "'\(context.codingPath.map(\.stringValue).joined(separator: "."))': \(context.debugDescription)"
        case DecodingError.keyNotFound(let key, _):
            return "missing '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "expected a JSON object" : "'\(path)': \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    public func encodedLine() -> [UInt8] { ControlProtocol.encodedLine(self) }
}

extension ControlResponse {
    public func encodedLine() -> [UInt8] { ControlProtocol.encodedLine(self) }
}

extension ControlProtocol {
    /// One line of the protocol: compact JSON with sorted keys, and a newline.
    static func encodedLine(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return [UInt8]((try? encoder.encode(value)) ?? Data()) + [UInt8(ascii: "\n")]
    }
}

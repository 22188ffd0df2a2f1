// The old master ⇄ new master upgrade protocol, version 2.
//
// Transport: one private AF_UNIX SOCK_STREAM socketpair, made by the old master just before
// it starts the new binary. The new master's end is its fd 3, and the environment variable
// GATEWAYD_UPGRADE_FD=3 says so: a gatewayd started without it is an ordinary master, and one
// started with it takes over and never binds its control socket anew. Nothing else of the old
// master's reaches the new one (posix_spawn closes fds 4 and up).
//
// Framing: as the handoff protocol's (`HandoffProtocol.swift`): a 4-byte big-endian length N
// (1 ≤ N ≤ maximumFrameLength) and N bytes of UTF-8 JSON, one object whose "type" names the
// message.
//
// File descriptors: only the old master sends fds, by SCM_RIGHTS with the frame that names
// them: `listeners` at most 253 (Linux's per-message limit), in the order of its `names`;
// `shared_memory` exactly 1 (the shared segment's memfd); `control_socket` exactly 1 (the
// control socket's listening fd). Fds on any other frame, or a count that does not match, is a
// protocol error and every fd that came with it is closed. The old master's end takes no fd
// at all (its recvmsg has room for none). Received fds are CLOEXEC.
//
// Who speaks first: the new master, so that a binary that does not speak this protocol (one
// from before it, or not gatewayd at all) is found out before any fd leaves the old master:
//   new → old  hello{version, pid, binary_version}
//   old → new  state{version, master_pid, config_path, next_generation, reloads,
//                    failed_reloads, watchdog_usec?, trigger, started_at,
//                    ticket_keys?, ticket_keys_age_ms?}
//              listeners{names, origins, addresses, backlogs, stored} + fds   (as many
//                    frames as 253-fd batches need: every socket the old master holds, with
//                    its origin (bound, or inherited from systemd), the address as configured
//                    (port 0 stays 0) and whether it is in systemd's fd store)
//              shared_memory{size, layout_version, rate_slots, metric_slots, seed} + 1 fd
//              control_socket{path} + 1 fd
//              history{records, events?}   (version 2 and later: the recent reloads and
//                    upgrades in `records`; and, from masters that keep them, every recent
//                    event in `events` (`GatewayEvent`), which a reader prefers when present)
//              end{listener_count}
//   new → old  starting{generation, ready_timeout_ms}   (the config on disk is valid; its
//                    first generation starts), then ready{generation} once every worker of
//                    it serves, or failed{reason, details} at any step before
//   old → new  commit   (the old master no longer accepts on the control socket)
//   new → old  committed   (the new master accepts on it, and is in charge from now on)
//   old → new  released   (the old master has told systemd, MAINPID=, that the new one is the
//                    service's main process; it drains its generations and exits)
// The new master decides whether it can read the old master's version: it reads `version`
// before anything else of `state`, and answers `failed` naming both versions when it cannot.
// A master reads its own version and the one before (`readableVersions`), so a new binary
// always takes over from the release before it; a newer master never hands over to an older
// binary (restart to downgrade).
// End of file before `commit` (either side) ends the upgrade: the old master stays in charge,
// the new one drains what its first generation may have accepted and exits. End of file after
// `committed` changes nothing: the new master is in charge.
//
// Any change to this file's frames or rules bumps `version`; a master must keep reading the
// version before its own. Two additions were made within version 2, because they change
// nothing for a reader that does not know them (JSON decoders ignore a key they do not know):
// `events` beside `records` in `history` (`records` is still written in full), and
// `ticket_keys` with `ticket_keys_age_ms` in `state`: the TLS session ticket keys (base64, the
// handoff's `ticket_keys` form) and how long ago the newest was made, so that tickets resume
// across the upgrade and the rotation keeps its schedule. A master without them makes new keys
// (tickets from before get one full handshake). The channel is the two masters' own: the keys
// go nowhere a worker's handoff does not already take them.

import Foundation

public enum UpgradeProtocol {
    /// 1: the sockets, the shared segment, the control socket, the config path, the
    /// generation counter and the reload counts.
    /// 2: the `history` frame (the recent reloads and upgrades); a version-1 master sends
    /// none, and the new master starts with an empty history. Later within 2, optional:
    /// `events` in `history`, `ticket_keys` and `ticket_keys_age_ms` in `state`.
    public static let version = 2
    /// The first version with a `history` frame.
    public static let historyVersion = 2
    /// The new master's end of the socketpair, where posix_spawn puts it.
    public static let newMasterDescriptor: CInt = 3
    /// Names the new master's end in its environment; its absence means "not an upgrade".
    public static let channelEnvironmentVariable = "GATEWAYD_UPGRADE_FD"
    /// As the handoff's: a history of 100 records is about 30 KiB, a `failed` with every
    /// error of a broken config a few KiB; 4 MiB bounds what a corrupt length makes a reader
    /// allocate.
    public static let maximumFrameLength = HandoffProtocol.maximumFrameLength
    public static let maximumDescriptorsPerFrame = HandoffProtocol.maximumDescriptorsPerFrame

    /// The version this master speaks: `version`, except in a test build started with
    /// GATEWAYD_TEST_UPGRADE_PROTOCOL=N in its environment, which speaks N, to test a handoff
    /// from the version before and one from a future version. Read once; an old master does
    /// not pass the variable on to the new one.
    public static let spokenVersion: Int = {
        #if GATEWAYD_FAULT_INJECTION
            if let text = ProcessInfo.processInfo.environment[testVersionEnvironmentVariable], let forced = Int(text) {
                return forced
            }
        #endif
        return version
    }()
    public static let testVersionEnvironmentVariable = "GATEWAYD_TEST_UPGRADE_PROTOCOL"

    /// The versions of an old master that this one can take over from: its own and the one
    /// before.
    public static var readableVersions: ClosedRange<Int> { max(1, spokenVersion - 1)...spokenVersion }
}

public enum UpgradeMessage: Sendable, Equatable {
    // new master → old master
    case hello(Hello)
    /// The config is valid; `generation` starts, and the old master waits for it at most its
    /// `ready_timeout` (the new config's) and a margin.
    case starting(generation: Int, readyTimeoutMilliseconds: Int)
    case ready(generation: Int)
    case failed(reason: String, details: [String])
    case committed
    // old master → new master
    case state(State)
    case listeners(ListenerBatch)
    /// The shared segment's memfd travels with it, and all a master needs to know about it.
    case sharedMemory(SharedMemory.Handoff)
    /// The control socket's listening fd travels with it.
    case controlSocket(path: String)
    /// The recent events (`GatewayEvent`): `events` on the wire, and the reloads and upgrades
    /// among them also as `records`.
    case history([GatewayEvent])
    case end(listenerCount: Int)
    case commit
    case released

    public struct Hello: Sendable, Equatable {
        public var version: Int
        public var pid: Int32
        /// `GatewayVersion.current` of the new binary (`gatewayd --version`), for the caller of the upgrade.
        public var binaryVersion: String
        public init(version: Int = UpgradeProtocol.spokenVersion, pid: Int32, binaryVersion: String) {
            self.version = version
            self.pid = pid
            self.binaryVersion = binaryVersion
        }
    }

    /// What the old master was, apart from its fds.
    public struct State: Sendable, Equatable {
        public var version: Int
        public var masterPid: Int32
        public var configPath: String
        /// The id the new master's first generation takes, so that ids never repeat.
        public var nextGeneration: Int
        public var reloads: Int
        public var failedReloads: Int
        /// systemd's WatchdogSec= in µs, when set: the old master took WATCHDOG_USEC from its
        /// environment (sd_watchdog_enabled unsets it), and systemd expects the same pings
        /// from the new main process.
        public var watchdogMicroseconds: UInt64?
        /// What asked for the upgrade, and when (wall clock, seconds since 1970): the new
        /// master records the upgrade in the history it carries on.
        public var trigger: String
        public var startedAt: Double
        /// The TLS session ticket keys, when the old master carries them (see the file's
        /// header): the new master serves the same keys and rotates them when the old one
        /// would have.
        public var ticketKeys: CarriedTicketKeys?
        public init(
            version: Int = UpgradeProtocol.spokenVersion, masterPid: Int32, configPath: String, nextGeneration: Int,
            reloads: Int, failedReloads: Int, watchdogMicroseconds: UInt64?, trigger: String, startedAt: Double,
            ticketKeys: CarriedTicketKeys? = nil
        ) {
            self.version = version
            self.masterPid = masterPid
            self.configPath = configPath
            self.nextGeneration = nextGeneration
            self.reloads = reloads
            self.failedReloads = failedReloads
            self.watchdogMicroseconds = watchdogMicroseconds
            self.trigger = trigger
            self.startedAt = startedAt
            self.ticketKeys = ticketKeys
        }
    }

    /// The keys, and how long before the `state` frame was sent the newest was made.
    public struct CarriedTicketKeys: Sendable, Equatable {
        public var keys: SessionTicketKeys
        public var ageMilliseconds: Int
        public init(keys: SessionTicketKeys, ageMilliseconds: Int) {
            self.keys = keys
            self.ageMilliseconds = ageMilliseconds
        }
    }

    public struct ListenerBatch: Sendable, Equatable {
        public var names: [String]
        public var origins: [ListenerTable.Origin]
        /// As configured (`ListenerTable.Listener.configuredAddress`): port 0 stays 0, so the
        /// new master reuses the socket for the same listener, not any listener on port 0.
        public var addresses: [ListenerAddress]
        public var backlogs: [Int32]
        /// In systemd's fd store under the listener's name.
        public var stored: [Bool]
        public init(
            names: [String], origins: [ListenerTable.Origin], addresses: [ListenerAddress], backlogs: [Int32],
            stored: [Bool]
        ) {
            self.names = names
            self.origins = origins
            self.addresses = addresses
            self.backlogs = backlogs
            self.stored = stored
        }
    }

    public var type: String {
        switch self {
        case .hello: return "hello"
        case .starting: return "starting"
        case .ready: return "ready"
        case .failed: return "failed"
        case .committed: return "committed"
        case .state: return "state"
        case .listeners: return "listeners"
        case .sharedMemory: return "shared_memory"
        case .controlSocket: return "control_socket"
        case .history: return "history"
        case .end: return "end"
        case .commit: return "commit"
        case .released: return "released"
        }
    }

    /// How many fds must travel with this frame.
    public var descriptorCount: Int {
        switch self {
        case .sharedMemory, .controlSocket: return 1
        case .listeners(let batch): return batch.names.count
        default: return 0
        }
    }
}

/// What went wrong in an upgrade's exchange, and of what kind (a struct around a private code,
/// so that kinds can be added).
public struct UpgradeProtocolError: Error, Sendable, CustomStringConvertible {
    public struct Kind: Sendable, Equatable, CustomStringConvertible {
        fileprivate enum Code: String {
            case unsupportedVersion = "unsupported version"
            case violation = "protocol violation"
            case peerGone = "peer gone"
            case system = "system call failed"
        }
        fileprivate let code: Code
        /// The old master speaks a version this binary cannot read.
        public static let unsupportedVersion = Kind(code: .unsupportedVersion)
        /// A frame out of place, malformed, or with fds it may not carry.
        public static let violation = Kind(code: .violation)
        /// The other side closed the channel where a frame was due.
        public static let peerGone = Kind(code: .peerGone)
        public static let system = Kind(code: .system)
        public var description: String { code.rawValue }
    }

    public let kind: Kind
    public let description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

// MARK: - Encoding

extension UpgradeMessage: FramedMessage {
    private struct Wire: Codable {
        var type: String
        var version: Int?
        var pid: Int32?
        var binary_version: String?
        var generation: Int?
        var ready_timeout_ms: Int?
        var reason: String?
        var details: [String]?
        var master_pid: Int32?
        var config_path: String?
        var next_generation: Int?
        var reloads: Int?
        var failed_reloads: Int?
        var watchdog_usec: UInt64?
        var trigger: String?
        var started_at: Double?
        var ticket_keys: [String]?
        var ticket_keys_age_ms: Int?
        var names: [String]?
        var origins: [ListenerTable.Origin]?
        var addresses: [String]?
        var backlogs: [Int32]?
        var stored: [Bool]?
        var size: Int?
        var layout_version: Int?
        var rate_slots: Int?
        var metric_slots: Int?
        /// 128 bits as 32 hex digits, as in the handoff.
        var seed: String?
        var path: String?
        var records: [ReloadRecord]?
        var events: [GatewayEvent]?
        var listener_count: Int?
    }

    public func encodeFrame() -> [UInt8] {
        var wire = Wire(type: type)
        switch self {
        case .hello(let hello):
            wire.version = hello.version
            wire.pid = hello.pid
            wire.binary_version = hello.binaryVersion
        case .starting(let generation, let readyTimeout):
            wire.generation = generation
            wire.ready_timeout_ms = readyTimeout
        case .ready(let generation):
            wire.generation = generation
        case .failed(let reason, let details):
            wire.reason = reason
            wire.details = details
        case .state(let state):
            wire.version = state.version
            wire.master_pid = state.masterPid
            wire.config_path = state.configPath
            wire.next_generation = state.nextGeneration
            wire.reloads = state.reloads
            wire.failed_reloads = state.failedReloads
            wire.watchdog_usec = state.watchdogMicroseconds
            wire.trigger = state.trigger
            wire.started_at = state.startedAt
            wire.ticket_keys = state.ticketKeys?.keys.wireForm
            wire.ticket_keys_age_ms = state.ticketKeys?.ageMilliseconds
        case .listeners(let batch):
            wire.names = batch.names
            wire.origins = batch.origins
            wire.addresses = batch.addresses.map(\.description)
            wire.backlogs = batch.backlogs
            wire.stored = batch.stored
        case .sharedMemory(let segment):
            wire.size = segment.size
            wire.layout_version = segment.layoutVersion
            wire.rate_slots = segment.layout.rateSlots
            wire.metric_slots = segment.layout.metricSlots
            wire.seed = segment.seedText
        case .controlSocket(let path):
            wire.path = path
        case .history(let events):
            wire.records = events.compactMap(ReloadRecord.init)
            wire.events = events
        case .end(let count):
            wire.listener_count = count
        case .committed, .commit, .released:
            break
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return lengthPrefixed(json: [UInt8]((try? encoder.encode(wire)) ?? Data()))
    }

    static func decodeFrame(_ payload: ArraySlice<UInt8>) throws(FrameViolation) -> UpgradeMessage {
        do {
            return try decode(payload: payload)
        } catch {
            throw FrameViolation(error.description, underlying: error)
        }
    }

    /// Decodes one frame's JSON payload (without the length prefix). A `state` whose version
    /// this binary cannot read is refused with `.unsupportedVersion` before anything else of
    /// it is read: a future version may have changed the rest.
    public static func decode(payload: some Collection<UInt8>) throws(UpgradeProtocolError) -> UpgradeMessage {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(payload))
        } catch {
            throw UpgradeProtocolError(.violation, "malformed frame: \(error)")
        }
        func require<T>(_ value: T?, _ field: String) throws(UpgradeProtocolError) -> T {
            guard let value else { throw UpgradeProtocolError(.violation, "\(wire.type) frame without '\(field)'") }
            return value
        }
        switch wire.type {
        case "hello":
            return .hello(
                Hello(
                    version: try require(wire.version, "version"), pid: try require(wire.pid, "pid"),
                    binaryVersion: try require(wire.binary_version, "binary_version")))
        case "starting":
            return .starting(
                generation: try require(wire.generation, "generation"),
                readyTimeoutMilliseconds: try require(wire.ready_timeout_ms, "ready_timeout_ms"))
        case "ready":
            return .ready(generation: try require(wire.generation, "generation"))
        case "failed":
            return .failed(reason: try require(wire.reason, "reason"), details: wire.details ?? [])
        case "committed": return .committed
        case "state":
            let version = try require(wire.version, "version")
            guard UpgradeProtocol.readableVersions.contains(version) else {
                let readable = UpgradeProtocol.readableVersions
                throw UpgradeProtocolError(
                    .unsupportedVersion,
                    "the running master speaks upgrade protocol \(version), this gatewayd reads versions \(readable.lowerBound) to \(readable.upperBound)"
                        + (version > readable.upperBound
                            ? ": a newer gatewayd cannot hand over to an older one (stop and start to downgrade)"
                            : ": upgrade through an intermediate release"))
            }
            // Strict, though optional: a master that sends them malformed is broken, and the
            // upgrade stops with the reason (the old master serves on).
            var ticketKeys: CarriedTicketKeys?
            if let wireForm = wire.ticket_keys {
                let keys: SessionTicketKeys
                do {
                    keys = try SessionTicketKeys(wireForm: wireForm)
                } catch {
                    throw UpgradeProtocolError(.violation, "state frame: \(error)")
                }
                guard let age = wire.ticket_keys_age_ms, age >= 0 else {
                    throw UpgradeProtocolError(.violation, "state frame: ticket_keys without a ticket_keys_age_ms ≥ 0")
                }
                ticketKeys = CarriedTicketKeys(keys: keys, ageMilliseconds: age)
            }
            return .state(
                State(
                    version: version, masterPid: try require(wire.master_pid, "master_pid"),
                    configPath: try require(wire.config_path, "config_path"),
                    nextGeneration: try require(wire.next_generation, "next_generation"),
                    reloads: try require(wire.reloads, "reloads"),
                    failedReloads: try require(wire.failed_reloads, "failed_reloads"),
                    watchdogMicroseconds: wire.watchdog_usec, trigger: try require(wire.trigger, "trigger"),
                    startedAt: try require(wire.started_at, "started_at"), ticketKeys: ticketKeys))
        case "listeners":
            let names = try require(wire.names, "names")
            let origins = try require(wire.origins, "origins")
            let addressTexts = try require(wire.addresses, "addresses")
            let backlogs = try require(wire.backlogs, "backlogs")
            let stored = try require(wire.stored, "stored")
            guard !names.isEmpty, names.count <= UpgradeProtocol.maximumDescriptorsPerFrame,
                [origins.count, addressTexts.count, backlogs.count, stored.count].allSatisfy({ $0 == names.count })
            else {
                throw UpgradeProtocolError(
                    .violation,
                    "listeners frame: \(names.count) names, \(origins.count) origins, \(addressTexts.count) addresses, \(backlogs.count) backlogs, \(stored.count) stored flags"
                )
            }
            var addresses: [ListenerAddress] = []
            for text in addressTexts {
                guard let address = try? ListenerAddress(parsing: text) else {
                    throw UpgradeProtocolError(.violation, "listeners frame: '\(text)' is not an address")
                }
                addresses.append(address)
            }
            return .listeners(
                ListenerBatch(names: names, origins: origins, addresses: addresses, backlogs: backlogs, stored: stored))
        case "shared_memory":
            do {
                return .sharedMemory(
                    try .fromFrame(
                        size: wire.size, layoutVersion: wire.layout_version, rateSlots: wire.rate_slots,
                        metricSlots: wire.metric_slots, seed: wire.seed))
            } catch {
                throw UpgradeProtocolError(.violation, error.description)
            }
        case "control_socket":
            return .controlSocket(path: try require(wire.path, "path"))
        case "history":
            if let events = wire.events { return .history(events) }
            return .history(try require(wire.records, "records").enumerated().map { GatewayEvent($1, id: $0 + 1) })
        case "end":
            return .end(listenerCount: try require(wire.listener_count, "listener_count"))
        case "commit": return .commit
        case "released": return .released
        default: throw UpgradeProtocolError(.violation, "unknown frame type '\(wire.type)'")
        }
    }
}

// The master ⇄ worker handoff protocol, version 7.
//
// Transport: one private AF_UNIX SOCK_STREAM socketpair per worker, made by the master just
// before it spawns the worker. The worker's end is its fd 3 (HandoffProtocol.workerDescriptor);
// nothing else of the master's reaches the worker (posix_spawn closes fds 4 and up).
//
// Framing: every frame is a 4-byte big-endian length N (1 ≤ N ≤ maximumFrameLength) followed by
// N bytes of UTF-8 JSON: one object whose "type" names the message. Nothing else is on the wire.
//
// File descriptors: only three frames may carry fds, all from the master, attached by
// SCM_RIGHTS to the sendmsg that carries the frame: `shared_memory` exactly 1 (the gateway's
// shared segment, a memfd), `access_log` exactly 1 (the log file the master opened), and
// `listeners` at most 253 (Linux's per-message limit, measured), in the same order as the
// frame's `names`. The worker collects fds from every recvmsg in arrival order and assigns
// them to the frame that carries them when it is decoded; a frame that arrives with fds it may
// not carry, or a count that does not match, is a protocol error and the fds are closed.
// Received fds are CLOEXEC (MSG_CMSG_CLOEXEC). The master's end takes no fd at all: its
// recvmsg has room for none, so the kernel installs none of what a worker attaches (it
// releases them and sets MSG_CTRUNC), and the master kills that worker.
//
// Trust: a worker runs the exposed code and may be compromised; the master never trusts what
// it sends. Its frames are at most `maximumWorkerFrameLength`, its numbers are clamped, its
// text is escaped before it is logged (`LogText`), and a worker that sends frames faster than
// a worker does is killed (GatewaySupervisor's `WorkerReader`). Nothing a worker needs to know
// about the shared segment is read from the segment, which every worker can write: its size,
// layout and hash seed travel in `shared_memory`.
//
// Who speaks first: the master. It writes, without waiting for anything:
//   hello{version, generation, worker, config_path, config, drain_timeout_ms, log_levels,
//         ticket_keys}   then
//   file{path, bytes}   (one per file the config names, API keys files: each in a frame of its
//                        own, so no number of them makes one frame too long)   then
//   shared_memory{size, layout_version, rate_slots, metric_slots, seed} + 1 fd
//                        (the same segment to every worker of every generation)   then
//   access_log{path} + 1 fd   (only when the access log is a file: opened by the master, once
//                        per generation, so that no worker opens it as root)   then
//   listeners{names, backlogs} + fds   (as many frames as 253-fd batches need)   then
//   start{listener_count, file_count}
// The worker checks `version` (a mismatch: `failed` and exit), parses the config bytes (never
// the file), maps the shared segment as `shared_memory` describes it (`SharedMemory.map`; a
// size that does not match the fd's: `failed`), writes its access log to the fd it got, serves
// on exactly the listening fds it got, and answers `ready` or `failed{reason}`.
// After that the worker sends `connections{count}` when its count changes (rate-limited) and at
// least every 500 ms while its event loop runs: the heartbeat. A worker silent for
// worker_watchdog_timeout is stopped or stuck, and the master kills it. The master may send
// `log_levels{levels}` at any time after the handoff (`gatewayctl log-level`: the worker applies
// them at once, and answers nothing), `status_page{snapshot}` (what `/status` on the admin
// listener shows: the worker keeps the last one), `ticket_keys{keys}` (the TLS session ticket
// keys after a rotation, newest first: the worker uses them at once, and answers nothing), and
// `drain`; the worker answers `draining` once it has stopped accepting
// (its copies of the listening sockets are closed) and exits when its last connection is gone.
// End of file on either side means the peer is gone: a worker whose master vanished drains
// and exits; a master that sees a worker's channel close reaps the worker.
//
// Both sides of the handoff are `HandoffChannel`'s (HandoffChannel.swift): `sendHandoff` (the
// master) and `receiveHandoff` (the worker), over the framing `FrameSocket` shares with the
// upgrade protocol.
//
// Any change to this file's frames or rules bumps `version`.

import Foundation

public enum HandoffProtocol {
    /// 2: the `shared_memory` frame. 3: `connections` is also a heartbeat.
    /// 4: files in `file` frames of their own, not in `hello` (four 1 MB keys files made a
    /// hello longer than a frame may be).
    /// 5: the `access_log` frame (the master opens the log, with O_NOFOLLOW: a worker that
    /// opened it as root followed a link planted in the log directory); `shared_memory`
    /// carries the segment's layout and hash seed, which workers read from the segment's
    /// header before (a worker could rewrite it under the next one).
    /// 6: `log_levels` in `hello` and as a frame of its own after the handoff (the live log
    /// level, `gatewayctl log-level`); `status_page` (the master's status for `/status`).
    /// 7: `ticket_keys` in `hello` and as a frame of its own after the handoff (TLS session
    /// tickets shared by every worker, rotated by the master: `SessionTicketKeys`).
    public static let version = 7
    /// The worker's end of the channel, where posix_spawn puts it.
    public static let workerDescriptor: CInt = 3
    /// Large enough for a config of ConfigLoader's 1 MiB cap, or a keys file of the validator's
    /// 1 MiB cap, in base64; small enough that a corrupt length cannot make the reader allocate
    /// gigabytes.
    public static let maximumFrameLength = 4 * 1024 * 1024
    /// What the master reads of one frame from a worker. A worker's longest frame is `failed`
    /// with one error's text, a few hundred bytes; 64 KiB is a hundred times that, and bounds
    /// what a worker can make the master buffer.
    public static let maximumWorkerFrameLength = 64 * 1024
    /// Linux refuses a 254th fd in one SCM_RIGHTS message (EINVAL, measured).
    public static let maximumDescriptorsPerFrame = 253
}

public enum HandoffMessage: Sendable, Equatable {
    // master → worker
    case hello(Hello)
    /// A file the config names, as the master read it while validating (absolute path).
    case file(path: String, bytes: [UInt8])
    /// The shared segment's memfd travels with it, and all a worker needs to know about it.
    case sharedMemory(SharedMemory.Handoff)
    /// The access log's file, opened by the master, travels with it (`path` as configured).
    case accessLog(path: String)
    case listeners(ListenerBatch)
    case start(listenerCount: Int, fileCount: Int)
    case drain
    /// The log level of each target (`LogTarget` name → `Logger.Level` name), now.
    case logLevels([String: String])
    /// What `/status` shows, as the master sees it now.
    case statusPage(StatusSnapshot)
    /// The TLS session ticket keys after a rotation.
    case ticketKeys(SessionTicketKeys)
    // worker → master
    case ready(pid: Int32)
    case failed(reason: String)
    case connections(count: Int)
    case draining

    public struct Hello: Sendable, Equatable, Codable {
        public var version: Int
        public var generation: Int
        public var worker: Int
        public var configPath: String
        /// The exact bytes the master validated, base64 so any byte survives JSON.
        public var config: [UInt8]
        /// The master's drain_timeout (command line included). A worker whose master died
        /// enforces it on itself, since no one else will send it SIGTERM.
        public var drainTimeoutMilliseconds: Int
        /// The master's live log levels by target: a spare started before a `log-level`
        /// change, or a worker started after one, logs at the level of the moment.
        public var logLevels: [String: String]
        /// The master's TLS session ticket keys of the moment (they outlive generations).
        public var ticketKeys: SessionTicketKeys

        public init(
            version: Int = HandoffProtocol.version, generation: Int, worker: Int, configPath: String, config: [UInt8],
            drainTimeoutMilliseconds: Int = 30_000, logLevels: [String: String] = [:],
            ticketKeys: SessionTicketKeys = SessionTicketKeys()
        ) {
            self.logLevels = logLevels
            self.ticketKeys = ticketKeys
            self.version = version
            self.generation = generation
            self.worker = worker
            self.configPath = configPath
            self.config = config
            self.drainTimeoutMilliseconds = drainTimeoutMilliseconds
        }
    }

    public struct ListenerBatch: Sendable, Equatable, Codable {
        public var names: [String]
        public var backlogs: [Int32]
        public init(names: [String], backlogs: [Int32]) {
            self.names = names
            self.backlogs = backlogs
        }
    }

    public var type: String {
        switch self {
        case .hello: return "hello"
        case .file: return "file"
        case .sharedMemory: return "shared_memory"
        case .accessLog: return "access_log"
        case .listeners: return "listeners"
        case .start: return "start"
        case .drain: return "drain"
        case .logLevels: return "log_levels"
        case .statusPage: return "status_page"
        case .ticketKeys: return "ticket_keys"
        case .ready: return "ready"
        case .failed: return "failed"
        case .connections: return "connections"
        case .draining: return "draining"
        }
    }

    /// How many fds must travel with this frame.
    public var descriptorCount: Int {
        switch self {
        case .sharedMemory, .accessLog: return 1
        case .listeners(let batch): return batch.names.count
        default: return 0
        }
    }
}

public struct HandoffProtocolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

// MARK: - Encoding

extension HandoffMessage: FramedMessage {
    private struct Wire: Codable {
        var type: String
        var version: Int?
        var generation: Int?
        var worker: Int?
        var config_path: String?
        var config: String?
        var drain_timeout_ms: Int?
        var path: String?
        var bytes: String?
        var file_count: Int?
        var names: [String]?
        var backlogs: [Int32]?
        var listener_count: Int?
        var pid: Int32?
        var reason: String?
        var count: Int?
        var size: Int?
        var layout_version: Int?
        var rate_slots: Int?
        var metric_slots: Int?
        /// 128 bits as 32 hex digits: JSON numbers do not all survive 64 bits.
        var seed: String?
        var log_levels: [String: String]?
        var snapshot: StatusSnapshot?
        /// Each key base64, newest first.
        var ticket_keys: [String]?
    }

    /// The whole frame: length prefix and JSON.
    public func encodeFrame() -> [UInt8] {
        var wire = Wire(type: type)
        switch self {
        case .hello(let hello):
            wire.version = hello.version
            wire.generation = hello.generation
            wire.worker = hello.worker
            wire.config_path = hello.configPath
            wire.config = Data(hello.config).base64EncodedString()
            wire.drain_timeout_ms = hello.drainTimeoutMilliseconds
            wire.log_levels = hello.logLevels
            wire.ticket_keys = hello.ticketKeys.wireForm
        case .file(let path, let bytes):
            wire.path = path
            wire.bytes = Data(bytes).base64EncodedString()
        case .sharedMemory(let segment):
            wire.size = segment.size
            wire.layout_version = segment.layoutVersion
            wire.rate_slots = segment.layout.rateSlots
            wire.metric_slots = segment.layout.metricSlots
            wire.seed = segment.seedText
        case .accessLog(let path):
            wire.path = path
        case .listeners(let batch):
            wire.names = batch.names
            wire.backlogs = batch.backlogs
        case .start(let listenerCount, let fileCount):
            wire.listener_count = listenerCount
            wire.file_count = fileCount
        case .ready(let pid):
            wire.pid = pid
        case .failed(let reason):
            wire.reason = reason
        case .connections(let count):
            wire.count = count
        case .logLevels(let levels):
            wire.log_levels = levels
        case .statusPage(let snapshot):
            wire.snapshot = snapshot
        case .ticketKeys(let keys):
            wire.ticket_keys = keys.wireForm
        case .drain, .draining:
            break
        }
        return lengthPrefixed(json: [UInt8]((try? JSONEncoder().encode(wire)) ?? Data()))
    }

    static func decodeFrame(_ payload: ArraySlice<UInt8>) throws(FrameViolation) -> HandoffMessage {
        do {
            return try decode(payload: payload)
        } catch {
            throw FrameViolation(error.description, underlying: error)
        }
    }

    /// Decodes one frame's JSON payload (without the length prefix).
    public static func decode(payload: some Collection<UInt8>) throws(HandoffProtocolError) -> HandoffMessage {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(payload))
        } catch {
            throw HandoffProtocolError("malformed frame: \(error)")
        }
        func require<T>(_ value: T?, _ field: String) throws(HandoffProtocolError) -> T {
            guard let value else { throw HandoffProtocolError("\(wire.type) frame without '\(field)'") }
            return value
        }
        switch wire.type {
        case "hello":
            guard let config = Data(base64Encoded: try require(wire.config, "config")) else {
                throw HandoffProtocolError("hello frame: config is not base64")
            }
            return .hello(
                Hello(
                    version: try require(wire.version, "version"),
                    generation: try require(wire.generation, "generation"),
                    worker: try require(wire.worker, "worker"),
                    configPath: try require(wire.config_path, "config_path"),
                    config: [UInt8](config),
                    drainTimeoutMilliseconds: try require(wire.drain_timeout_ms, "drain_timeout_ms"),
                    logLevels: try require(wire.log_levels, "log_levels"),
                    ticketKeys: try SessionTicketKeys(wireForm: try require(wire.ticket_keys, "ticket_keys"))
                ))
        case "file":
            let path = try require(wire.path, "path")
            guard let bytes = Data(base64Encoded: try require(wire.bytes, "bytes")) else {
                throw HandoffProtocolError("file frame: \(path) is not base64")
            }
            return .file(path: path, bytes: [UInt8](bytes))
        case "shared_memory":
            do {
                return .sharedMemory(
                    try .fromFrame(
                        size: wire.size, layoutVersion: wire.layout_version, rateSlots: wire.rate_slots,
                        metricSlots: wire.metric_slots, seed: wire.seed))
            } catch {
                throw HandoffProtocolError(error.description)
            }
        case "access_log":
            return .accessLog(path: try require(wire.path, "path"))
        case "listeners":
            let names = try require(wire.names, "names")
            let backlogs = try require(wire.backlogs, "backlogs")
            guard names.count == backlogs.count, !names.isEmpty,
                names.count <= HandoffProtocol.maximumDescriptorsPerFrame
            else {
                throw HandoffProtocolError("listeners frame: \(names.count) names, \(backlogs.count) backlogs")
            }
            return .listeners(ListenerBatch(names: names, backlogs: backlogs))
        case "start":
            return .start(
                listenerCount: try require(wire.listener_count, "listener_count"),
                fileCount: try require(wire.file_count, "file_count"))
        case "drain": return .drain
        case "log_levels": return .logLevels(try require(wire.log_levels, "log_levels"))
        case "status_page": return .statusPage(try require(wire.snapshot, "snapshot"))
        case "ticket_keys":
            return .ticketKeys(try SessionTicketKeys(wireForm: try require(wire.ticket_keys, "ticket_keys")))
        case "ready": return .ready(pid: try require(wire.pid, "pid"))
        case "failed": return .failed(reason: try require(wire.reason, "reason"))
        case "connections": return .connections(count: try require(wire.count, "count"))
        case "draining": return .draining
        default: throw HandoffProtocolError("unknown frame type '\(wire.type)'")
        }
    }
}

extension SessionTicketKeys {
    var wireForm: [String] { keys.map { Data($0).base64EncodedString() } }

    init(wireForm: [String]) throws(HandoffProtocolError) {
        let decoded = wireForm.compactMap { Data(base64Encoded: $0).map { [UInt8]($0) } }
        guard decoded.count == wireForm.count, let keys = SessionTicketKeys(keys: decoded) else {
            throw HandoffProtocolError(
                "ticket_keys: \(wireForm.count) keys; 1 to \(SessionTicketKeys.keptKeys), "
                    + "each \(SessionTicketKeys.keyLength) bytes in base64")
        }
        self = keys
    }
}

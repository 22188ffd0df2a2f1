import Logging
import Synchronization

/// What a log line is about; each has a level of its own, which `gatewayctl log-level` changes
/// while gatewayd runs.
public enum LogTarget: String, Codable, Sendable, CaseIterable {
    /// The master: generations, reloads, upgrades, the control socket, systemd.
    case supervisor
    /// A worker's own life: handoff, ready, drain, exit, and what goes wrong while serving.
    case worker
    /// A worker's connections and requests, step by step at `debug`: accepted, routed, the
    /// upstream chosen, answered. Nothing is logged for them above `debug`.
    case proxy

    /// The logger label each target's lines carry (and the one that selects the target).
    public var label: String {
        switch self {
        case .supervisor: return "gatewayd"
        case .worker: return "gatewayd-worker"
        case .proxy: return "gatewayd-proxy"
        }
    }

    public init?(label: String) {
        guard let target = Self.allCases.first(where: { $0.label == label }) else { return nil }
        self = target
    }
}

/// The process's log level per target, read by every log call (one relaxed atomic load) and
/// changed at once for every logger of the process: swift-log keeps a level in each `Logger`
/// value, which a copy would keep stale, so `GatewayLogHandler` reads it from here instead.
public enum LiveLogLevels {
    /// One byte per target (`shift`) holding its level (`levelIndex`), in one word: a read is
    /// one relaxed load. Every target starts at `info`.
    private static let packed = Atomic<UInt32>(
        LogTarget.allCases.reduce(0) { word, target in word | (levelIndex(.info) << shift(target)) })

    public static func level(of target: LogTarget) -> Logger.Level {
        switch (packed.load(ordering: .relaxed) >> shift(target)) & 0xff {
        case 0: return .trace
        case 1: return .debug
        case 2: return .info
        case 3: return .notice
        case 4: return .warning
        case 5: return .error
        default: return .critical
        }
    }

    public static func set(_ level: Logger.Level, for target: LogTarget) {
        var word = packed.load(ordering: .relaxed)
        while true {
            let new = (word & ~(0xff << shift(target))) | (levelIndex(level) << shift(target))
            let (exchanged, original) = packed.compareExchange(
                expected: word, desired: new, ordering: .relaxed)
            if exchanged { return }
            word = original
        }
    }

    /// A switch, not `allCases`: this is on every log call, and `allCases` makes an array.
    private static func levelIndex(_ level: Logger.Level) -> UInt32 {
        switch level {
        case .trace: return 0
        case .debug: return 1
        case .info: return 2
        case .notice: return 3
        case .warning: return 4
        case .error: return 5
        case .critical: return 6
        }
    }

    private static func shift(_ target: LogTarget) -> UInt32 {
        switch target {
        case .supervisor: return 0
        case .worker: return 8
        case .proxy: return 16
        }
    }

    /// Every target's level, by target name (what the control protocol and the handoff carry).
    public static var all: [String: String] {
        Dictionary(uniqueKeysWithValues: LogTarget.allCases.map { ($0.rawValue, level(of: $0).rawValue) })
    }

    /// Applies levels by name; unknown targets or levels are skipped (a newer master may know
    /// more of them).
    public static func apply(_ named: [String: String]) {
        for (target, level) in named {
            guard let target = LogTarget(rawValue: target), let level = Logger.Level(rawValue: level) else { continue }
            set(level, for: target)
        }
    }
}

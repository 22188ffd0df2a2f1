import GatewayCore
import GatewayHTTP
import Yams

/// Walks the composed YAML against the configuration schema, reporting every problem it can
/// find with the position and key path of the offending key or value, and builds the model
/// only when there were none.
///
/// The walk is driven by the schema, never by the shape of the input, so its depth is fixed;
/// its length is bounded by `maximumNodes`, checked before it starts.
struct ConfigValidator {
    var sink: DiagnosticSink
    /// From `YAMLComposer`: keys renamed to get past Yams' duplicate-key check.
    let renamedKeys: [SourcePosition: String]
    /// Files, directories, users, host names.
    var environment: ConfigEnvironment
    /// Every upstream name declared (valid or not), for the routes' `upstream`.
    var upstreamNames: Set<String> = []
    /// From `paths:`, read before the routes: their paths must be canonical under these.
    var pathRules = PathRules()

    /// Far more than 1 MiB of YAML can hold without aliases (two bytes per node at best), so
    /// only alias expansion reaches it.
    static let maximumNodes = 1_000_000

    static let topLevelKeys = [
        "workers", "drain_timeout", "ready_timeout", "max_draining_generations", "worker_watchdog_timeout",
        "control_socket",
        "listeners", "routes", "upstreams", "limits", "access_log", "admin", "user", "group", "paths",
        "trusted_proxies", "tracing",
    ]
    static let maximumWorkers = 1024
    static let maximumTimeout: Duration = .seconds(24 * 3600)
    /// sun_path is 108 bytes including the terminating NUL.
    static let maximumSocketPathBytes = 107

    init(sink: DiagnosticSink, renamedKeys: [SourcePosition: String], environment: ConfigEnvironment) {
        self.sink = sink
        self.renamedKeys = renamedKeys
        self.environment = environment
    }

    mutating func error(_ message: String, at position: SourcePosition?) {
        sink.error(message, at: position)
    }

    mutating func configuration(from root: Node?) -> GatewayConfiguration? {
        guard let root else {
            error("the configuration is empty: it needs at least a 'listeners' list", at: .start)
            return nil
        }
        guard root.expandedCount(limit: ConfigValidator.maximumNodes) <= ConfigValidator.maximumNodes else {
            error(
                "the configuration is too large: more than \(ConfigValidator.maximumNodes) YAML nodes "
                    + "once aliases are expanded", at: root.position)
            return nil
        }
        guard case .mapping = root else {
            error(
                "the configuration must be a mapping of keys to values, got \(root.kindDescription)",
                // A null document (comments and `~`, or a bare `---`) is placed by Yams after
                // its last line: reported where the file starts, as an empty one is.
                at: root.isNull ? .start : root.position)
            return nil
        }
        guard let fields = fields(of: root, path: "", allowed: ConfigValidator.topLevelKeys) else { return nil }

        let workers = fields.optionalValue("workers").flatMap {
            integer($0, path: "workers", in: 1...ConfigValidator.maximumWorkers)
        }
        let drainTimeout = timeout(fields, "drain_timeout", default: GatewayConfiguration.defaultDrainTimeout)
        let readyTimeout = timeout(fields, "ready_timeout", default: GatewayConfiguration.defaultReadyTimeout)
        let maxDraining =
            fields.optionalValue("max_draining_generations").map {
                integer($0, path: "max_draining_generations", in: 1...Int.max)
            } ?? GatewayConfiguration.defaultMaxDrainingGenerations
        let watchdogTimeout = timeout(
            fields, "worker_watchdog_timeout", default: GatewayConfiguration.defaultWorkerWatchdogTimeout)
        if let watchdogTimeout, watchdogTimeout < .seconds(2),
            let node = fields.optionalValue("worker_watchdog_timeout")
        {
            // Workers report once a second: less than two would kill a worker for one late beat.
            error("worker_watchdog_timeout: must be at least 2s (workers report once a second)", at: node.position)
        }
        let controlSocket = fields.optionalValue("control_socket").flatMap { socketPath($0, path: "control_socket") }
        let user = fields.optionalValue("user").flatMap { account($0, path: "user", kind: .user) }
        let group = fields.optionalValue("group").flatMap { account($0, path: "group", kind: .group) }
        var paths: PathsConfig? = PathsConfig()
        if let node = fields.optionalValue("paths") {
            paths = self.paths(node)
            if let paths { pathRules = paths.rules }
        }
        var trustedProxies: [AddressRange]? = []
        if let node = fields.optionalValue("trusted_proxies") {
            trustedProxies = addressRanges(node, path: "trusted_proxies")
        }
        let (listeners, listenerNames) = listeners(fields)
        let admin = fields.optionalValue("admin").flatMap { self.admin($0, listenerNames: listenerNames) }
        let upstreams = self.upstreams(fields)
        let routes = self.routes(fields, listenerNames: listenerNames, adminListener: admin?.listener)
        var limits: LimitsConfig? = LimitsConfig()
        if let node = fields.optionalValue("limits") {
            limits = self.limits(node)
        }
        let accessLog = fields.optionalValue("access_log").flatMap { self.accessLog($0) }
        let tracing = fields.optionalValue("tracing").flatMap { self.tracing($0) }

        guard sink.isEmpty, let drainTimeout, let readyTimeout, let maxDraining, let watchdogTimeout, let limits,
            let paths, let trustedProxies
        else {
            return nil
        }
        return GatewayConfiguration(
            workers: workers,
            drainTimeout: drainTimeout,
            readyTimeout: readyTimeout,
            maxDrainingGenerations: maxDraining,
            workerWatchdogTimeout: watchdogTimeout,
            controlSocket: controlSocket,
            listeners: listeners,
            routes: routes,
            upstreams: upstreams,
            limits: limits,
            accessLog: accessLog,
            admin: admin,
            user: user,
            group: group,
            paths: paths,
            trustedProxies: trustedProxies,
            tracing: tracing)
    }

    // MARK: - Mappings

    /// Checks a mapping's keys: strings, not repeated, and (unless `allowed` is nil) known.
    /// Reports and returns nil if `node` is not a mapping.
    mutating func fields(of node: Node, path: String, allowed: [String]?) -> MappingFields? {
        let position = node.position ?? .start
        guard case .mapping(let mapping) = node else {
            error("\(path): expected a mapping, got \(node.kindDescription)", at: position)
            return nil
        }
        var fields = MappingFields(path: path, position: position)
        var seen: [String: SourcePosition] = [:]
        for (key, value) in mapping {
            let keyPosition = key.position ?? position
            guard case .scalar(let scalar) = key, scalar.kind != .null else {
                error("keys must be strings, got \(key.kindDescription) as a key \(fields.location)", at: keyPosition)
                continue
            }
            let name = renamedKeys[keyPosition] ?? scalar.string
            if let first = seen[name] {
                error(
                    "duplicate key \(displayName(name)) \(fields.location) (first defined at line \(first.line))",
                    at: keyPosition)
                continue
            }
            seen[name] = keyPosition
            if let allowed, !allowed.contains(name) {
                var message = "unknown key \(displayName(name)) \(fields.location)"
                if name == "<<" && scalar.style == .plain {
                    message = "merge keys ('<<') are not supported \(fields.location)"
                } else if let guess = suggestion(for: name, among: allowed) {
                    message += " (did you mean '\(guess)'?)"
                }
                error(message, at: keyPosition)
                continue
            }
            fields.append(.init(name: name, key: key, value: value, keyPosition: keyPosition))
        }
        return fields
    }

    /// The value of a required key; reports its absence at the mapping.
    mutating func required(_ fields: MappingFields, _ name: String) -> Node? {
        guard let value = fields.value(name) else {
            let prefix = fields.path.isEmpty ? "" : "\(fields.path): "
            error("\(prefix)missing required key '\(name)'", at: fields.position)
            return nil
        }
        return value
    }

    // MARK: - Scalars

    mutating func string(_ node: Node, path: String) -> String? {
        guard case .scalar(let scalar) = node, scalar.kind != .null else {
            error("\(path): expected a string, got \(node.kindDescription)", at: node.position)
            return nil
        }
        return scalar.string
    }

    /// Plain decimal integers only: `"8080"` in quotes, `0x10`, `1_000` and `1.0` are refused.
    mutating func integer(_ node: Node, path: String, in range: ClosedRange<Int>) -> Int? {
        guard case .scalar(let scalar) = node, scalar.kind == .int else {
            error("\(path): expected an integer, got \(node.kindDescription)", at: node.position)
            return nil
        }
        let text = scalar.string
        let digits = text.first == "-" || text.first == "+" ? text.dropFirst() : Substring(text)
        guard digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            error("\(path): expected a decimal integer, got \(text)", at: node.position)
            return nil
        }
        guard digits == "0" || digits.first != "0" else {
            error("\(path): leading zeros are not allowed (YAML would read \(text) as octal)", at: node.position)
            return nil
        }
        guard let value = scalar.decimalInteger, range.contains(value) else {
            let bounds =
                range.upperBound == Int.max
                ? "at least \(range.lowerBound)" : "from \(range.lowerBound) to \(range.upperBound)"
            error("\(path): must be \(bounds), got \(text)", at: node.position)
            return nil
        }
        return value
    }

    /// A duration that must be positive; absent or null means `defaultValue`.
    mutating func timeout(_ fields: MappingFields, _ name: String, default defaultValue: Duration) -> Duration? {
        guard let node = fields.optionalValue(name) else { return defaultValue }
        let name = fields.path(of: name)
        guard let text = string(node, path: name) else { return nil }
        guard let duration = DurationText.parse(text) else {
            var message = "\(name): invalid duration \(quoted(text)) (expected e.g. 250ms, 30s, 2m)"
            if text.allSatisfy({ $0.isASCII && $0.isNumber }) {
                message += "; a unit is required"
            }
            error(message, at: node.position)
            return nil
        }
        guard duration > .zero else {
            error("\(name): must be greater than 0s", at: node.position)
            return nil
        }
        guard duration <= ConfigValidator.maximumTimeout else {
            error("\(name): must be at most \(DurationText.format(ConfigValidator.maximumTimeout))", at: node.position)
            return nil
        }
        return duration
    }

    private mutating func socketPath(_ node: Node, path: String) -> String? {
        guard let text = string(node, path: path) else { return nil }
        if text.isEmpty {
            error("\(path): must not be empty (leave it out for the default)", at: node.position)
            return nil
        }
        if text.unicodeScalars.contains("\u{0}") {
            error("\(path): must not contain a NUL character", at: node.position)
            return nil
        }
        if text.utf8.count > ConfigValidator.maximumSocketPathBytes {
            error(
                "\(path): a Unix socket path can have at most \(ConfigValidator.maximumSocketPathBytes) bytes, "
                    + "this one has \(text.utf8.count)", at: node.position)
            return nil
        }
        return text
    }

    // MARK: - Names

    static let maximumNameLength = 64

    /// Listener and route names go into logs, metrics and systemd's FileDescriptorName=, so
    /// they stay short and plain.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maximumNameLength
            && name.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
                    return true
                default:
                    return false
                }
            }
    }

    /// A required, valid name; nil (reported) otherwise.
    mutating func name(_ fields: MappingFields) -> (name: String, position: SourcePosition)? {
        guard let node = required(fields, "name"), let text = string(node, path: fields.path(of: "name")) else {
            return nil
        }
        let position = node.position ?? fields.position
        guard ConfigValidator.isValidName(text) else {
            error(invalidName(text, path: fields.path(of: "name")), at: position)
            return nil
        }
        return (text, position)
    }

    func invalidName(_ text: String, path: String) -> String {
        "\(path): invalid name \(quoted(text)): use 1 to \(ConfigValidator.maximumNameLength) letters, digits, '_', '.' or '-'"
    }

    // MARK: - Lists

    mutating func list(_ node: Node, path: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            error("\(path): expected a list, got \(node.kindDescription)", at: node.position)
            return nil
        }
        return Array(sequence)
    }
}

import Yams

/// The sections that apply to the whole server: `limits`, `access_log`, `admin`, `user`, `group`.
extension ConfigValidator {
    static let limitsKeys = [
        "max_header_bytes", "max_body_bytes", "header_timeout", "idle_timeout", "body_timeout", "tunnel_idle_timeout",
    ]
    static let accessLogKeys = ["path", "format"]
    static let adminKeys = ["listener"]
    /// 1 KiB holds a request line and a few headers, less than any real client sends; past
    /// 1 MiB a header block is an attack, not a request (nginx's largest default is 32 KiB).
    static let headerBytesRange: ClosedRange<Int64> = 1024...(1 << 20)

    // MARK: - limits

    mutating func limits(_ node: Node) -> LimitsConfig? {
        guard let fields = fields(of: node, path: "limits", allowed: ConfigValidator.limitsKeys) else { return nil }
        let defaults = LimitsConfig()
        let headerBytes = byteSize(
            fields, "max_header_bytes", default: Int64(defaults.maxHeaderBytes), in: ConfigValidator.headerBytesRange)
        let bodyBytes = byteSize(fields, "max_body_bytes", default: defaults.maxBodyBytes, in: 0...Int64.max)
        let headerTimeout = timeout(fields, "header_timeout", default: defaults.headerTimeout)
        let idleTimeout = timeout(fields, "idle_timeout", default: defaults.idleTimeout)
        let bodyTimeout = timeout(fields, "body_timeout", default: defaults.bodyTimeout)
        let tunnelIdleTimeout = timeout(fields, "tunnel_idle_timeout", default: defaults.tunnelIdleTimeout)
        guard let headerBytes, let bodyBytes, let headerTimeout, let idleTimeout, let bodyTimeout, let tunnelIdleTimeout
        else { return nil }
        return LimitsConfig(
            maxHeaderBytes: Int(headerBytes), maxBodyBytes: bodyBytes, headerTimeout: headerTimeout,
            idleTimeout: idleTimeout, bodyTimeout: bodyTimeout, tunnelIdleTimeout: tunnelIdleTimeout)
    }

    /// A size in bytes (see `ByteSizeText`); absent or null means `defaultValue`.
    mutating func byteSize(
        _ fields: MappingFields, _ name: String, default defaultValue: Int64, in range: ClosedRange<Int64>
    ) -> Int64? {
        guard let node = fields.optionalValue(name) else { return defaultValue }
        let path = fields.path(of: name)
        guard case .scalar(let scalar) = node, scalar.kind == .int || scalar.kind == .string else {
            error("\(path): expected a size such as 32KiB, got \(node.kindDescription)", at: node.position)
            return nil
        }
        let text = scalar.string
        if scalar.kind == .int, text.count > 1, text.first == "0" {
            error("\(path): leading zeros are not allowed (YAML would read \(text) as octal)", at: node.position)
            return nil
        }
        guard let bytes = ByteSizeText.parse(text) else {
            error(
                "\(path): invalid size \(quoted(text)) (expected bytes, or a whole number with KiB, MiB or GiB, "
                    + "e.g. 32KiB)", at: node.position)
            return nil
        }
        guard range.contains(bytes) else {
            let lower = ByteSizeText.format(range.lowerBound)
            let bounds =
                range.upperBound == Int64.max
                ? "at least \(lower)" : "from \(lower) to \(ByteSizeText.format(range.upperBound))"
            error("\(path): must be \(bounds), got \(text)", at: node.position)
            return nil
        }
        return bytes
    }

    // MARK: - access_log

    mutating func accessLog(_ node: Node) -> AccessLogConfig? {
        guard let fields = fields(of: node, path: "access_log", allowed: ConfigValidator.accessLogKeys) else {
            return nil
        }
        let defaults = AccessLogConfig()
        var path: String? = defaults.path
        if let node = fields.optionalValue("path") {
            path = accessLogPath(node, path: fields.path(of: "path"))
        }
        var format: AccessLogConfig.Format? = defaults.format
        if let node = fields.optionalValue("format") {
            format = choice(node, path: fields.path(of: "format"), [("json", .json), ("combined", .combined)])
        }
        guard let path, let format else { return nil }
        return AccessLogConfig(path: path, format: format)
    }

    private mutating func accessLogPath(_ node: Node, path: String) -> String? {
        guard let text = string(node, path: path) else { return nil }
        if text == "stdout" || text == "stderr" { return text }
        guard let file = filePath(node, text, path: path) else { return nil }
        guard environment.checksSystem else { return file }
        // The workers open the file; the master only checks now that they will be able to
        // create it, so a typo in the directory fails the reload instead of every worker.
        let directory = String(file[..<file.lastIndex(of: "/")!])
        switch environment.system.fileKind(directory.isEmpty ? "/" : directory) {
        case .success(.directory):
            break
        case .success(nil):
            error("\(path): directory \(displayPath(directory)) does not exist", at: node.position)
            return nil
        case .success(.other):
            error("\(path): \(displayPath(directory)) is not a directory", at: node.position)
            return nil
        case .failure(let failure):
            error("\(path): cannot check directory \(displayPath(directory)): \(failure.reason)", at: node.position)
            return nil
        }
        if case .success(.directory) = environment.system.fileKind(file) {
            error("\(path): \(displayPath(file)) is a directory; name a file in it", at: node.position)
            return nil
        }
        return file
    }

    /// A file named in the configuration, absolute (relative names are relative to the
    /// configuration file's directory).
    mutating func filePath(_ node: Node, _ text: String, path: String) -> String? {
        if text.isEmpty {
            error("\(path): must not be empty", at: node.position)
            return nil
        }
        if text.unicodeScalars.contains("\u{0}") {
            error("\(path): must not contain a NUL character", at: node.position)
            return nil
        }
        guard let absolute = environment.absolutePath(text) else {
            error(
                "\(path): \(displayPath(text)) is relative to the configuration's directory, which is relative to "
                    + "the current directory, which cannot be read", at: node.position)
            return nil
        }
        return absolute
    }

    // MARK: - admin

    mutating func admin(_ node: Node, listenerNames: Set<String>) -> AdminConfig? {
        guard let fields = fields(of: node, path: "admin", allowed: ConfigValidator.adminKeys),
            let node = required(fields, "listener"),
            let listener = string(node, path: fields.path(of: "listener"))
        else { return nil }
        guard listenerNames.contains(listener) else {
            unknownName(listener, kind: "listener", among: listenerNames, path: fields.path(of: "listener"), at: node)
            return nil
        }
        return AdminConfig(listener: listener)
    }

    // MARK: - user, group

    enum AccountKind: String {
        case user, group
    }

    /// A user or group name, or a numeric id, that must exist (checked with NSS, so LDAP and
    /// systemd's dynamic users count). Stored as written: the master resolves it again when it
    /// starts workers, since ids can change between a reload and the next start.
    mutating func account(_ node: Node, path: String, kind: AccountKind) -> String? {
        guard let text = string(node, path: path) else { return nil }
        if text.isEmpty {
            error("\(path): must not be empty (leave it out to keep the master's \(kind.rawValue))", at: node.position)
            return nil
        }
        if let bad = text.unicodeScalars.first(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0 == ":" }) {
            error(
                "\(path): a \(kind.rawValue) name must not contain \(bad == ":" ? "':'" : ConfigValidator.describe(bad))",
                at: node.position)
            return nil
        }
        guard environment.checksSystem else { return text }
        let lookUp = kind == .user ? environment.system.userExists : environment.system.groupExists
        switch lookUp(text) {
        case .success(true):
            return text
        case .success(false):
            let isNumeric = text.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
            let id = kind == .user ? "uid" : "gid"
            error(
                isNumeric
                    ? "\(path): no \(kind.rawValue) has \(id) \(text)"
                    : "\(path): no such \(kind.rawValue) \(displayName(text))", at: node.position)
        case .failure(let failure):
            error("\(path): cannot look up \(kind.rawValue) \(displayName(text)): \(failure.reason)", at: node.position)
        }
        return nil
    }

    // MARK: - Helpers

    /// One of a fixed set of words: `balance: round_robin`.
    mutating func choice<T>(_ node: Node, path: String, _ options: [(String, T)]) -> T? {
        guard let text = string(node, path: path) else { return nil }
        if let match = options.first(where: { $0.0 == text }) { return match.1 }
        let words = options.map(\.0)
        var message = "\(path): must be \(ConfigValidator.alternatives(words)), got \(quoted(text))"
        if let guess = suggestion(for: text, among: words) {
            message += " (did you mean '\(guess)'?)"
        }
        error(message, at: node.position)
        return nil
    }

    /// "unknown listener 'wbe' (did you mean 'web'?)", or the names there are, or that there are none.
    mutating func unknownName(_ name: String, kind: String, among known: Set<String>, path: String, at node: Node) {
        let names = known.sorted()
        var message = "\(path): unknown \(kind) \(displayName(name))"
        if let guess = suggestion(for: name, among: names) {
            message += " (did you mean '\(guess)'?)"
        } else if names.isEmpty {
            message += " (no \(kind)s are defined)"
        } else {
            message += " (\(kind)s: \(names.joined(separator: ", ")))"
        }
        error(message, at: node.position)
    }

    /// "a", "a or b", "a, b or c".
    static func alternatives(_ words: [String]) -> String {
        guard words.count > 1 else { return words.first ?? "" }
        return words.dropLast().joined(separator: ", ") + " or " + words.last!
    }
}

import Yams

/// `auth` and `rate_limit` on a route.
///
/// Keys read from a keys file never appear in a message: a problem with one is reported by its
/// line number in the file.
extension ConfigValidator {
    static let authKeys = ["api_keys", "bearer"]
    static let apiKeysKeys = ["header", "keys_file"]
    static let bearerKeys = ["keys_file"]
    static let rateLimitKeys = ["per", "rate", "burst"]
    /// Sent by most API-key schemes that are not `Authorization` (AWS API Gateway, many SaaS).
    static let defaultAPIKeyHeader = "x-api-key"
    /// Ten thousand keys of a hundred bytes; a file larger than this is the wrong file.
    static let maximumKeysFileSize = 1 << 20

    mutating func auth(_ node: Node, path: String) -> AuthConfig? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.authKeys) else { return nil }
        let present = ConfigValidator.authKeys.compactMap { fields.entry($0) }
        guard let scheme = present.first else {
            error("\(path): needs a scheme: api_keys or bearer", at: fields.position)
            return nil
        }
        if present.count > 1 {
            error(
                "\(path): has more than one scheme (api_keys, bearer); a route takes exactly one",
                at: present[1].keyPosition)
            return nil
        }
        let schemePath = fields.path(of: scheme.name)
        if scheme.name == "api_keys" {
            guard let fields = self.fields(of: scheme.value, path: schemePath, allowed: ConfigValidator.apiKeysKeys)
            else { return nil }
            var header: String? = ConfigValidator.defaultAPIKeyHeader
            if let node = fields.optionalValue("header") {
                let headerPath = fields.path(of: "header")
                header = string(node, path: headerPath).flatMap { headerName($0, path: headerPath, at: node.position) }
            }
            let keys = keysFile(fields, bearer: false)
            guard let header, let keys else { return nil }
            return AuthConfig(scheme: .apiKey(header: header), keysFile: keys.path, keys: keys.keys)
        } else {
            guard let fields = self.fields(of: scheme.value, path: schemePath, allowed: ConfigValidator.bearerKeys),
                let keys = keysFile(fields, bearer: true)
            else { return nil }
            return AuthConfig(scheme: .bearer, keysFile: keys.path, keys: keys.keys)
        }
    }

    /// Reads `keys_file` (through the environment: the disk, or the master's files): one key a
    /// line, whitespace around it trimmed, blank lines and lines starting with `#` skipped.
    private mutating func keysFile(_ fields: MappingFields, bearer: Bool) -> (path: String, keys: Set<String>)? {
        let path = fields.path(of: "keys_file")
        guard let node = required(fields, "keys_file"), let text = string(node, path: path),
            let file = filePath(node, text, path: path)
        else { return nil }
        let bytes: [UInt8]
        switch environment.contents(of: file, limit: ConfigValidator.maximumKeysFileSize) {
        case .success(let contents):
            bytes = contents
        case .failure(let failure):
            error("\(path): \(failure.reason)", at: node.position)
            return nil
        }
        var keys: Set<String> = []
        var badLines: [Int] = []
        for (index, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 || byte == 0x0D }
            let key = line.drop(while: isSpace).reversed().drop(while: isSpace).reversed()
            if key.isEmpty || key.first == UInt8(ascii: "#") { continue }
            guard ConfigValidator.isValidKey(key, bearer: bearer) else {
                badLines.append(index + 1)
                continue
            }
            keys.insert(String(decoding: key, as: UTF8.self))
        }
        if let first = badLines.first {
            let more =
                badLines.count > 1 ? " (and \(badLines.count - 1) more line\(badLines.count > 2 ? "s" : ""))" : ""
            let rule =
                bearer
                ? "a bearer token is made of letters, digits, '-', '.', '_', '~', '+' and '/', "
                    + "with '=' only at its end (RFC 6750)"
                : "a key is made of visible ASCII characters, without spaces"
            error("\(path): line \(first)\(more) of \(displayPath(file)): \(rule)", at: node.position)
            return nil
        }
        if keys.isEmpty {
            error("\(path): \(displayPath(file)) has no keys (only blank lines and '#' comments)", at: node.position)
            return nil
        }
        return (file, keys)
    }

    /// An API key is compared with a whole header value, so anything visible but a space;
    /// a bearer token has RFC 6750's `b64token` syntax, as clients send it.
    private static func isValidKey(_ key: some Collection<UInt8>, bearer: Bool) -> Bool {
        guard bearer else { return key.allSatisfy { $0 > 0x20 && $0 < 0x7F } }
        let body = key.reversed().drop { $0 == UInt8(ascii: "=") }
        return !body.isEmpty
            && body.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"):
                    return true
                default:
                    return "-._~+/".utf8.contains(byte)
                }
            }
    }

    // MARK: - rate_limit

    /// `hasAuth`: the route has an `auth` key (valid or not, so an invalid one is not also
    /// reported here).
    mutating func rateLimit(_ node: Node, path: String, hasAuth: Bool) -> RateLimitConfig? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.rateLimitKeys) else { return nil }
        var per: RateLimitConfig.Key?
        if let node = required(fields, "per") {
            per = choice(node, path: fields.path(of: "per"), [("api_key", .apiKey), ("client_ip", .clientIP)])
            if per == .apiKey, !hasAuth {
                error(
                    "\(fields.path(of: "per")): api_key needs 'auth' on this route to know the key (or use client_ip)",
                    at: node.position)
                per = nil
            }
        }
        var rate: Double?
        if let node = required(fields, "rate"), let text = string(node, path: fields.path(of: "rate")) {
            rate = self.rate(text, path: fields.path(of: "rate"), at: node.position)
        }
        var burst: Int?
        if let node = fields.optionalValue("burst") {
            burst = integer(node, path: fields.path(of: "burst"), in: 1...Int.max)
            if burst == nil { return nil }
        }
        guard let per, let rate else { return nil }
        // A second's worth of requests: a client may send at its full rate in bursts, as
        // clients do, without being refused; never 0, which would refuse everything.
        return RateLimitConfig(per: per, rate: rate, burst: burst ?? max(1, Int(rate.rounded(.up))))
    }

    private mutating func rate(_ text: String, path: String, at position: SourcePosition?) -> Double? {
        if let rate = RateText.parse(text) { return rate }
        var message = "\(path): invalid rate \(quoted(text)) (expected e.g. 100/s, 6000/m, 0.5/s)"
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 1, Double(text) != nil {
            message += "; a unit is required"
        } else if parts.count == 2, let unit = RateText.units.first(where: { $0.suffix == parts[1] }),
            let number = Double(parts[0]), number.isFinite
        {
            if number <= 0 {
                message = "\(path): must be more than 0, got \(quoted(text))"
            } else if number / unit.seconds > RateText.maximumPerSecond {
                message = "\(path): must be at most \(Int(RateText.maximumPerSecond))/s, got \(quoted(text))"
            }
        }
        error(message, at: position)
        return nil
    }
}

import Yams

/// `request_headers` and `response_headers`: `set` and `remove`.
extension ConfigValidator {
    static let headerRuleKeys = ["set", "remove"]
    /// Headers that belong to one connection or frame one message (RFC 9110 §7.6.1, RFC 9112
    /// §6): gatewayd writes them for each hop itself, and a rule changing them would
    /// contradict what it does on the wire (or smuggle a second message through it).
    static let unconfigurableHeaders: [String: String] = [
        "content-length": "frames the message; gatewayd writes it from the body",
        "transfer-encoding": "frames the message; gatewayd writes it from the body",
        "connection": "is hop-by-hop; gatewayd manages it for each connection",
        "keep-alive": "is hop-by-hop; gatewayd manages it for each connection",
        "proxy-connection": "is hop-by-hop; gatewayd manages it for each connection",
        "upgrade": "is hop-by-hop; gatewayd manages it for each connection",
        "te": "is hop-by-hop; gatewayd manages it for each connection",
        "trailer": "announces the trailer fields of a chunked body; gatewayd forwards the sender's",
    ]

    mutating func headerRules(_ node: Node, path: String) -> HeaderRules? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.headerRuleKeys) else { return nil }
        var rules: HeaderRules? = HeaderRules()
        if let node = fields.optionalValue("set") {
            if let set = headersToSet(node, path: fields.path(of: "set")) {
                rules?.set = set
            } else {
                rules = nil
            }
        }
        if let node = fields.optionalValue("remove") {
            if let remove = headersToRemove(node, path: fields.path(of: "remove")) {
                rules?.remove = remove
            } else {
                rules = nil
            }
        }
        return rules
    }

    private mutating func headersToSet(_ node: Node, path: String) -> [HeaderField]? {
        guard let fields = fields(of: node, path: path, allowed: nil) else { return nil }
        var headers: [HeaderField] = []
        var firstByName: [String: (name: String, line: Int)] = [:]
        var ok = true
        for entry in fields.entries {
            guard headerName(entry.name, path: path, at: entry.keyPosition) != nil else {
                ok = false
                continue
            }
            let lowered = entry.name.lowercased()
            if let first = firstByName[lowered] {
                error(
                    "\(fields.path(of: entry.name)): the same header as \(displayName(first.name)) "
                        + "(line \(first.line)); header names are case-insensitive", at: entry.keyPosition)
                ok = false
                continue
            }
            firstByName[lowered] = (entry.name, entry.keyPosition.line)
            guard let value = headerValue(entry.value, path: fields.path(of: entry.name)) else {
                ok = false
                continue
            }
            headers.append(HeaderField(name: entry.name, value: value))
        }
        return ok ? headers : nil
    }

    private mutating func headersToRemove(_ node: Node, path: String) -> [String]? {
        guard let items = list(node, path: path) else { return nil }
        var names: [String] = []
        var ok = true
        for (index, item) in items.enumerated() {
            guard let text = string(item, path: "\(path)[\(index)]"),
                let name = headerName(text, path: "\(path)[\(index)]", at: item.position)
            else {
                ok = false
                continue
            }
            if !names.contains(name) {
                names.append(name)
            }
        }
        return ok ? names : nil
    }

    /// A header name a rule may name: a token, and not one of `unconfigurableHeaders`.
    /// Lower-cased.
    mutating func headerName(_ name: String, path: String, at position: SourcePosition?) -> String? {
        guard ConfigValidator.isToken(name) else {
            error("\(path): invalid header name \(displayName(name))", at: position)
            return nil
        }
        let lowered = name.lowercased()
        if let reason = ConfigValidator.unconfigurableHeaders[lowered] {
            error("\(path): \(displayName(name)) \(reason), so it cannot be configured", at: position)
            return nil
        }
        return lowered
    }

    /// Any text but control characters (a tab is allowed, as RFC 9110 allows it).
    mutating func headerValue(_ node: Node, path: String) -> String? {
        guard let value = string(node, path: path) else { return nil }
        if let bad = value.unicodeScalars.first(where: { ($0.value < 0x20 && $0 != "\t") || $0 == "\u{7F}" }) {
            error(
                "\(path): a header value must not contain control characters such as CR or LF, found "
                    + ConfigValidator.describe(bad), at: node.position)
            return nil
        }
        return value
    }
}

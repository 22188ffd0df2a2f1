import Yams

extension ConfigValidator {
    static let routeKeys =
        ["name", "listener", "match"] + RouteActionKind.keys
        + ["strip_prefix", "request_headers", "response_headers", "auth", "rate_limit"]
    static let matchKeys = ["path_prefix", "path", "host", "methods"]
    static let directResponseKeys = ["status", "headers", "body"]
    /// Headers the worker writes itself (framing from the body, keep-alive from the connection's
    /// state); a configured copy would contradict them.
    static let reservedResponseHeaders: Set<String> = ["content-length", "transfer-encoding", "connection"]

    /// `adminListener`: the listener `admin` names, which routes cannot name.
    mutating func routes(_ root: MappingFields, listenerNames: Set<String>, adminListener: String?) -> [RouteConfig] {
        guard let node = root.optionalValue("routes"), let items = list(node, path: "routes") else { return [] }
        var routes: [RouteConfig] = []
        var firstByName: [String: SourcePosition] = [:]
        for (index, item) in items.enumerated() {
            let path = "routes[\(index)]"
            guard let fields = fields(of: item, path: path, allowed: ConfigValidator.routeKeys) else { continue }

            var name = self.name(fields)
            let label = name.map { "route '\($0.name)'" } ?? "this route"
            if let (text, position) = name {
                if let first = firstByName[text] {
                    error(
                        "\(fields.path(of: "name")): duplicate route name '\(text)' (first defined at line \(first.line))",
                        at: position)
                    name = nil
                } else {
                    firstByName[text] = position
                }
            }

            var listenerOK = true
            var listener: String?
            if let node = fields.optionalValue("listener") {
                let path = fields.path(of: "listener")
                listener = string(node, path: path)
                if let text = listener, !listenerNames.contains(text) {
                    unknownName(text, kind: "listener", among: listenerNames, path: path, at: node)
                } else if let text = listener, text == adminListener {
                    error(
                        "\(path): \(displayName(text)) is the admin listener, which serves only /healthz, /readyz "
                            + "and /metrics", at: node.position)
                    listener = nil
                }
                listenerOK = listener.map(listenerNames.contains) ?? false
            }

            let match = routeMatch(fields.optionalValue("match"), path: fields.path(of: "match"))
            var action = routeAction(fields, label: label)
            // The action named, valid or not, for the keys that only some actions take.
            let actionKey = RouteActionKind.keys.first { fields.entry($0) != nil }
            var ok = true
            func onlyUpstream(_ key: String) -> Node? {
                guard let entry = fields.entry(key), !entry.value.isNull else { return nil }
                if let actionKey, actionKey != "upstream" {
                    error(
                        "\(fields.path(of: key)): only a route with 'upstream' forwards requests; this one has "
                            + "'\(actionKey)'", at: entry.keyPosition)
                    ok = false
                    return nil
                }
                return entry.value
            }
            if let node = onlyUpstream("strip_prefix") {
                let prefix = stripPrefix(node, path: fields.path(of: "strip_prefix"), match: match)
                if case .upstream(var proxy) = action, let prefix {
                    proxy.stripPrefix = prefix
                    action = .upstream(proxy)
                }
                ok = ok && prefix != nil
            }
            var requestHeaders: HeaderRules? = HeaderRules()
            if let node = onlyUpstream("request_headers") {
                requestHeaders = headerRules(node, path: fields.path(of: "request_headers"))
            }
            var responseHeaders: HeaderRules? = HeaderRules()
            if let node = fields.optionalValue("response_headers") {
                responseHeaders = headerRules(node, path: fields.path(of: "response_headers"))
            }
            var auth: AuthConfig?
            if let node = fields.optionalValue("auth") {
                auth = self.auth(node, path: fields.path(of: "auth"))
                ok = ok && auth != nil
            }
            var rateLimit: RateLimitConfig?
            if let node = fields.optionalValue("rate_limit") {
                rateLimit = self.rateLimit(
                    node, path: fields.path(of: "rate_limit"), hasAuth: fields.optionalValue("auth") != nil)
                ok = ok && rateLimit != nil
            }

            if let name, listenerOK, let match, let action, let requestHeaders, let responseHeaders, ok {
                routes.append(
                    RouteConfig(
                        name: name.name, listener: listener, match: match, action: action,
                        requestHeaders: requestHeaders, responseHeaders: responseHeaders, auth: auth,
                        rateLimit: rateLimit))
            }
        }
        return routes
    }

    /// `label` is "route 'name'", or "this route" if it has no valid name.
    private mutating func routeAction(_ fields: MappingFields, label route: String) -> RouteAction? {
        let present = RouteActionKind.all.compactMap { kind in fields.entry(kind.key).map { (kind, $0) } }
        guard let (kind, entry) = present.first else {
            error("\(fields.path): \(route) needs an action: \(RouteActionKind.choices)", at: fields.position)
            return nil
        }
        if present.count > 1 {
            let names = present.map(\.0.key).joined(separator: ", ")
            error(
                "\(fields.path): \(route) has more than one action (\(names)); a route takes exactly one",
                at: present[1].1.keyPosition)
            return nil
        }
        return kind.parse(&self, entry.value, fields.path(of: kind.key))
    }

    // MARK: - Match

    private mutating func routeMatch(_ node: Node?, path: String) -> RouteMatch? {
        guard let node else { return RouteMatch() }
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.matchKeys) else { return nil }
        var ok = true
        var match = RouteMatch()
        if let node = fields.optionalValue("path_prefix") {
            match.pathPrefix = requestPath(node, path: fields.path(of: "path_prefix"))
            ok = ok && match.pathPrefix != nil
        }
        if let node = fields.optionalValue("path") {
            match.path = requestPath(node, path: fields.path(of: "path"))
            ok = ok && match.path != nil
        }
        if let node = fields.optionalValue("host") {
            match.host = host(node, path: fields.path(of: "host"))
            ok = ok && match.host != nil
        }
        if let node = fields.optionalValue("methods") {
            match.methods = methods(node, path: fields.path(of: "methods"))
            ok = ok && match.methods != nil
        }
        return ok ? match : nil
    }

    mutating func requestPath(_ node: Node, path: String) -> String? {
        guard let text = string(node, path: path) else { return nil }
        guard text.hasPrefix("/") else {
            error("\(path): must start with '/', got \(quoted(text))", at: node.position)
            return nil
        }
        if let bad = text.unicodeScalars.first(where: {
            $0.properties.isWhitespace || $0.value < 0x20 || $0 == "\u{7F}"
        }) {
            error("\(path): must not contain \(ConfigValidator.describe(bad))", at: node.position)
            return nil
        }
        if text.contains("?") || text.contains("#") {
            error(
                "\(path): must not contain '?' or '#': the path is matched without the query string",
                at: node.position)
            return nil
        }
        return checkCanonical(text, path: path, at: node) ? text : nil
    }

    private mutating func host(_ node: Node, path: String) -> HostMatch? {
        guard let text = string(node, path: path) else { return nil }
        let host = text.lowercased()
        func invalid(_ why: String) -> HostMatch? {
            error("\(path): invalid host \(quoted(text)): \(why)", at: node.position)
            return nil
        }
        if host.isEmpty {
            return invalid("must not be empty")
        }
        if let bad = host.unicodeScalars.first(where: { $0.properties.isWhitespace || $0.value < 0x20 }) {
            return invalid("must not contain \(ConfigValidator.describe(bad))")
        }
        if host.hasPrefix("[") {
            let inner = host.dropFirst().dropLast()
            guard host.hasSuffix("]"), !inner.isEmpty,
                inner.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." })
            else {
                return invalid("an IPv6 address is written in brackets, without a port: [2001:db8::1]")
            }
            return .exact(host)
        }
        if host.contains(":") {
            return invalid("must not include a port (the request's port is ignored when matching)")
        }
        var name = Substring(host)
        let wildcard = name.hasPrefix("*.")
        if wildcard {
            name = name.dropFirst(2)
        }
        if name.contains("*") {
            return invalid("'*' is only allowed as the whole first label, as in \"*.example.com\"")
        }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            if label.isEmpty {
                return invalid("empty label (two dots in a row, or a dot at the start or end)")
            }
            if !label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
                return invalid("use letters, digits, '-' and '.' (internationalized names in their xn-- form)")
            }
        }
        return wildcard ? .suffix("." + name) : .exact(String(name))
    }

    private mutating func methods(_ node: Node, path: String) -> [String]? {
        guard let items = list(node, path: path) else { return nil }
        if items.isEmpty {
            error("\(path): must list at least one method (leave it out to match any method)", at: node.position)
            return nil
        }
        var methods: [String] = []
        var ok = true
        for (index, item) in items.enumerated() {
            guard let text = string(item, path: "\(path)[\(index)]") else {
                ok = false
                continue
            }
            guard ConfigValidator.isToken(text) else {
                error("\(path)[\(index)]: invalid method \(quoted(text))", at: item.position)
                ok = false
                continue
            }
            let method = text.uppercased()
            if !methods.contains(method) {
                methods.append(method)
            }
        }
        return ok ? methods : nil
    }

    // MARK: - direct_response

    mutating func directResponse(_ node: Node, path: String) -> DirectResponse? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.directResponseKeys) else { return nil }
        var ok = true
        var status: Int?
        if let node = required(fields, "status") {
            status = integer(node, path: fields.path(of: "status"), in: 100...599)
        }
        var headers: [HeaderField] = []
        if let node = fields.optionalValue("headers") {
            if let parsed = responseHeaders(node, path: fields.path(of: "headers")) {
                headers = parsed
            } else {
                ok = false
            }
        }
        var body = ""
        if let node = fields.optionalValue("body") {
            if let text = string(node, path: fields.path(of: "body")) {
                body = text
                if let status, status < 200 || status == 204 || status == 304, !body.isEmpty {
                    error("\(fields.path(of: "body")): a \(status) response cannot have a body", at: node.position)
                    ok = false
                }
            } else {
                ok = false
            }
        }
        guard ok, let status else { return nil }
        return DirectResponse(status: status, headers: headers, body: body)
    }

    private mutating func responseHeaders(_ node: Node, path: String) -> [HeaderField]? {
        guard let fields = fields(of: node, path: path, allowed: nil) else { return nil }
        var headers: [HeaderField] = []
        var ok = true
        for entry in fields.entries {
            let headerPath = fields.path(of: entry.name)
            guard ConfigValidator.isToken(entry.name) else {
                error("\(path): invalid header name \(displayName(entry.name))", at: entry.keyPosition)
                ok = false
                continue
            }
            if ConfigValidator.reservedResponseHeaders.contains(entry.name.lowercased()) {
                error("\(headerPath): gatewayd sets this header itself; it cannot be configured", at: entry.keyPosition)
                ok = false
                continue
            }
            guard let value = headerValue(entry.value, path: headerPath) else {
                ok = false
                continue
            }
            headers.append(HeaderField(name: entry.name, value: value))
        }
        return ok ? headers : nil
    }

    // MARK: - Helpers

    /// RFC 9110 token: what method and header names are made of.
    static func isToken(_ text: String) -> Bool {
        HTTPToken.isValid(text)
    }

    static func describe(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case " ": return "spaces"
        case "\t": return "tabs"
        case "\r": return "CR"
        case "\n": return "LF"
        default: return SourceText.codePoint(scalar)
        }
    }
}

import Yams

/// The `upstream` and `redirect` actions, and `strip_prefix`.
extension ConfigValidator {
    static let redirectKeys = ["status", "location"]
    static let redirectStatuses = [301, 302, 303, 307, 308]

    /// `upstream: NAME`; `strip_prefix` is the route's and is added by `routes`.
    mutating func proxyAction(_ node: Node, path: String) -> ProxyAction? {
        guard let name = string(node, path: path) else { return nil }
        guard upstreamNames.contains(name) else {
            unknownName(name, kind: "upstream", among: upstreamNames, path: path, at: node)
            return nil
        }
        return ProxyAction(upstream: name)
    }

    mutating func redirect(_ node: Node, path: String) -> Redirect? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.redirectKeys) else { return nil }
        // 301 as in the model: a moved page is what redirects in a gateway's configuration are
        // mostly for. Browsers cache a 301 without limit, so a temporary one should say 302/307.
        var status: Int? = 301
        if let node = fields.optionalValue("status") {
            status = integer(node, path: fields.path(of: "status"), in: 0...Int.max)
            if let value = status, !ConfigValidator.redirectStatuses.contains(value) {
                let allowed = ConfigValidator.alternatives(ConfigValidator.redirectStatuses.map(String.init))
                error("\(fields.path(of: "status")): must be \(allowed), got \(value)", at: node.position)
                status = nil
            }
        }
        var location: String?
        if let node = required(fields, "location"), let text = string(node, path: fields.path(of: "location")) {
            location = text
            if text.isEmpty {
                error("\(fields.path(of: "location")): must not be empty", at: node.position)
                location = nil
            } else if let bad = text.unicodeScalars.first(where: { $0.value < 0x20 || $0 == "\u{7F}" }) {
                error(
                    "\(fields.path(of: "location")): must not contain control characters such as CR or LF, found "
                        + ConfigValidator.describe(bad), at: node.position)
                location = nil
            }
        }
        guard let status, let location else { return nil }
        return Redirect(status: status, location: location)
    }

    /// `strip_prefix: /v1` turns `/v1/users` into `/users`. It must be a prefix of what the
    /// route matches, or it would never apply.
    mutating func stripPrefix(_ node: Node, path: String, match: RouteMatch?) -> String? {
        guard let prefix = requestPath(node, path: path) else { return nil }
        if prefix.hasSuffix("/") {
            let trimmed = prefix == "/" ? "" : String(prefix.dropLast())
            error(
                "\(path): must not end with '/' (the rest of the path keeps its leading '/': "
                    + (trimmed.isEmpty ? "'/' would strip nothing)" : "write \(quoted(trimmed)))"), at: node.position)
            return nil
        }
        for (key, matched) in [("path_prefix", match?.pathPrefix), ("path", match?.path)] {
            if let matched, !matched.hasPrefix(prefix) {
                error(
                    "\(path): \(quoted(prefix)) is not a prefix of match.\(key) \(quoted(matched)), so it would never "
                        + "be stripped", at: node.position)
                return nil
            }
        }
        return prefix
    }
}

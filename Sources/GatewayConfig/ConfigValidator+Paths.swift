import GatewayCore
import GatewayHTTP
import Yams

extension ConfigValidator {
    static let pathsKeys = ["merge_slashes", "semicolons", "case_sensitive"]

    /// `paths: { merge_slashes, semicolons, case_sensitive }`. Read before the routes, whose
    /// paths must be canonical under these rules (`requestPath`).
    mutating func paths(_ node: Node) -> PathsConfig? {
        guard let fields = fields(of: node, path: "paths", allowed: ConfigValidator.pathsKeys) else { return nil }
        var config = PathsConfig()
        var ok = true
        if let node = fields.optionalValue("merge_slashes") {
            if let value = boolean(node, path: fields.path(of: "merge_slashes")) {
                config.rules.mergeSlashes = value
            } else {
                ok = false
            }
        }
        if let node = fields.optionalValue("semicolons") {
            if let value = choice(
                node, path: fields.path(of: "semicolons"), PathRules.Semicolons.allCases.map { ($0.rawValue, $0) })
            {
                config.rules.semicolons = value
            } else {
                ok = false
            }
        }
        if let node = fields.optionalValue("case_sensitive") {
            if let value = boolean(node, path: fields.path(of: "case_sensitive")) {
                config.caseSensitive = value
            } else {
                ok = false
            }
        }
        return ok ? config : nil
    }

    /// A route's `path` or `path_prefix` must be a canonical path: requests are routed on theirs,
    /// so `/a//b` or `/a/./b` could never match, and `/a;b` or `/a%2Fb` belong to requests that
    /// are refused.
    mutating func checkCanonical(_ text: String, path: String, at node: Node) -> Bool {
        do {
            let canonical = try RequestTarget.parse(text, rules: self.pathRules).path
            guard canonical == text else {
                error(
                    "\(path): \(quoted(text)) can never match: requests are routed on their canonical path, "
                        + "here \(quoted(canonical))", at: node.position)
                return false
            }
            return true
        } catch {
            self.error(
                "\(path): \(quoted(text)) can never match: such a request is refused (\(error))", at: node.position)
            return false
        }
    }

    /// `trusted_proxies: [CIDR, …]`: addresses (`10.0.0.7`) or blocks (`10.0.0.0/8`, `fd00::/8`).
    mutating func addressRanges(_ node: Node, path: String) -> [AddressRange]? {
        guard let items = list(node, path: path) else { return nil }
        var ranges: [AddressRange] = []
        var ok = true
        for (index, item) in items.enumerated() {
            guard let text = string(item, path: "\(path)[\(index)]") else {
                ok = false
                continue
            }
            do {
                ranges.append(try AddressRange(parsing: text))
            } catch {
                self.error("\(path)[\(index)]: \(error.description)", at: item.position)
                ok = false
            }
        }
        return ok ? ranges : nil
    }

    /// `true` or `false` (YAML 1.2's core schema: not `yes`, `on` or `1`).
    mutating func boolean(_ node: Node, path: String) -> Bool? {
        if case .scalar(let scalar) = node, scalar.style == .plain {
            switch scalar.string {
            case "true": return true
            case "false": return false
            default: break
            }
        }
        error("\(path): expected true or false, got \(node.kindDescription)", at: node.position)
        return nil
    }
}

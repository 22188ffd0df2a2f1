import Yams

/// How serious a diagnostic is. Errors make a configuration invalid; warnings point at what is
/// valid but almost certainly not meant (a route that can never match, an upstream nothing
/// uses), and change nothing about what gatewayd does.
public enum DiagnosticSeverity: String, Sendable {
    case error, warning
}

extension ConfigDiagnostic {
    /// `FILE:LINE:COL: error: message`, as compilers and `nginx -t` print them.
    public func formatted(_ severity: DiagnosticSeverity) -> String {
        "\(file):\(line):\(column): \(severity.rawValue): \(message)"
    }
}

extension ConfigLoader {
    /// What is valid in `loaded` but probably a mistake, in file order: a route that an earlier
    /// route shadows (it matches every request the later one would, so the later one never
    /// serves), and an upstream that no route uses. Reads positions from `loaded.bytes` again,
    /// since the model keeps none.
    public static func warnings(for loaded: LoadedConfiguration) -> [ConfigDiagnostic] {
        let configuration = loaded.configuration
        let positions = LargeStack.run { () -> (routes: [SourcePosition?], upstreams: [String: SourcePosition]) in
            var sink = DiagnosticSink(file: loaded.path)
            guard let source = try? SourceText(validating: loaded.bytes, file: loaded.path),
                let document = YAMLComposer.compose(source, into: &sink), case .mapping(let root)? = document.root
            else { return ([], [:]) }
            var routes: [SourcePosition?] = []
            var upstreams: [String: SourcePosition] = [:]
            for (key, value) in root {
                switch key.string {
                case "routes":
                    guard case .sequence(let items) = value else { continue }
                    routes = items.map { item in
                        // The route's name when it has one: that is what a reader looks for.
                        if case .mapping(let fields) = item, let name = fields.first(where: { $0.key.string == "name" })
                        {
                            return name.value.position
                        }
                        return item.position
                    }
                case "upstreams":
                    guard case .mapping(let entries) = value else { continue }
                    for (name, _) in entries {
                        if let text = name.string, let position = name.position { upstreams[text] = position }
                    }
                default: continue
                }
            }
            return (routes, upstreams)
        }

        var warnings: [ConfigDiagnostic] = []
        func warn(_ message: String, at position: SourcePosition?) {
            let position = position ?? .start
            warnings.append(
                ConfigDiagnostic(file: loaded.path, line: position.line, column: position.column, message: message))
        }
        let routes = configuration.routes
        for (index, route) in routes.enumerated() {
            guard let earlier = routes[..<index].firstIndex(where: { $0.shadows(route) }) else { continue }
            let at = positions.routes.indices.contains(index) ? positions.routes[index] : nil
            let earlierLine = positions.routes.indices.contains(earlier) ? positions.routes[earlier]?.line : nil
            warn(
                "routes[\(index)]: route '\(route.name)' never matches: route '\(routes[earlier].name)'"
                    + (earlierLine.map { " (line \($0))" } ?? "")
                    + " comes first and matches every request it would (first match wins)", at: at)
        }
        let used = Set(
            routes.compactMap { route -> String? in
                if case .upstream(let proxy) = route.action { return proxy.upstream }
                return nil
            })
        for upstream in configuration.upstreams where !used.contains(upstream.name) {
            warn(
                "upstreams.\(upstream.name): no route uses upstream '\(upstream.name)'",
                at: positions.upstreams[upstream.name])
        }
        return warnings.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }
}

extension RouteConfig {
    /// True when every request `later` matches is matched by `self` too, on every listener
    /// `later` applies to: `self` coming first, `later` never serves.
    func shadows(_ later: RouteConfig) -> Bool {
        if let listener, listener != later.listener { return false }
        return match.covers(later.match)
    }
}

extension RouteMatch {
    /// Each condition of `self` is implied by the conditions of `other`.
    func covers(_ other: RouteMatch) -> Bool {
        if let methods {
            guard let otherMethods = other.methods, Set(otherMethods).isSubset(of: methods) else { return false }
        }
        if let path, other.path != path { return false }
        if let pathPrefix {
            // `other` may have both: each one alone already limits it to paths under pathPrefix.
            let implied =
                (other.path?.hasPrefix(pathPrefix) ?? false) || (other.pathPrefix?.hasPrefix(pathPrefix) ?? false)
            guard implied else { return false }
        }
        if let host {
            guard let otherHost = other.host, host.covers(otherHost) else { return false }
        }
        return true
    }
}

extension HostMatch {
    func covers(_ other: HostMatch) -> Bool {
        switch (self, other) {
        case (.exact(let a), .exact(let b)): return a == b
        case (.suffix(let a), .exact(let b)): return b.hasSuffix(a) && b.count > a.count
        case (.suffix(let a), .suffix(let b)): return b.hasSuffix(a)
        case (.exact, .suffix): return false
        }
    }
}

/// A listener whose name stayed but whose address changed: the master binds the new address
/// and stops handing out the old socket.
public struct ListenerChange: Sendable, Equatable {
    public var old: ListenerConfig
    public var new: ListenerConfig

    public init(old: ListenerConfig, new: ListenerConfig) {
        self.old = old
        self.new = new
    }

    public var name: String { new.name }
}

/// Items of one kind (routes, upstreams) matched by name between two configs.
public struct NamedChanges: Sendable, Equatable {
    public var added: [String] = []
    public var removed: [String] = []
    public var changed: [String] = []
    /// The kept ones are in another order (it counts for routes: the first match wins).
    public var orderChanged = false

    /// Upstreams and routes are matched by name. For routes order counts, because the first
    /// matching route wins; upstreams are looked up by name, so their order does not.
    init<T: Equatable>(from old: [T], to new: [T], _ name: (T) -> String, ordered: Bool) {
        let oldByName = Dictionary(old.map { (name($0), $0) }, uniquingKeysWith: { first, _ in first })
        let newNames = Set(new.map(name))
        added = new.filter { oldByName[name($0)] == nil }.map(name)
        removed = old.filter { !newNames.contains(name($0)) }.map(name)
        changed = new.filter { item in oldByName[name(item)].map { $0 != item } ?? false }.map(name)
        orderChanged =
            ordered && old.map(name).filter(newNames.contains) != new.map(name).filter { oldByName[$0] != nil }
    }

    public var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty && !orderChanged }

    /// `routes: 1 added (x), 1 removed (y), 2 changed (a, b)`; nil when nothing changed.
    func line(_ label: String) -> String? {
        var parts: [String] = []
        func list(_ names: [String]) -> String {
            let shown = names.prefix(5).joined(separator: ", ")
            return names.count > 5 ? "\(shown), ..." : shown
        }
        if !added.isEmpty { parts.append("\(added.count) added (\(list(added)))") }
        if !removed.isEmpty { parts.append("\(removed.count) removed (\(list(removed)))") }
        if !changed.isEmpty { parts.append("\(changed.count) changed (\(list(changed)))") }
        if orderChanged { parts.append("order changed") }
        return parts.isEmpty ? nil : "\(label): " + parts.joined(separator: ", ")
    }
}

/// What a reload from `old` to `new` changes. Listeners are matched by name, because the name
/// is what a socket is known by across generations (and by systemd's FileDescriptorName=).
public struct ConfigDiff: Sendable, Equatable, CustomStringConvertible {
    /// In `new`'s order.
    public var addedListeners: [ListenerConfig]
    /// In `old`'s order.
    public var removedListeners: [ListenerConfig]
    /// In `new`'s order.
    public var rebindListeners: [ListenerChange]
    /// Same name and address, in `new`'s order, as configured in `new`. A backlog change alone
    /// keeps the socket (it is listed in `changedSettings`).
    public var keptListeners: [ListenerConfig]
    /// One line per changed setting, e.g. `workers 2 -> 4`, `drain_timeout 30s -> 10s`,
    /// `routes: 1 added (x), 1 removed (y), 2 changed (a, b)`, `upstreams: 1 changed (api)`,
    /// `limits.max_body_bytes 10MiB -> unlimited`, `access_log off -> stdout (json)`.
    public var changedSettings: [String]
    /// Routes and upstreams by name (also summed up in `changedSettings`).
    public var routes: NamedChanges
    public var upstreams: NamedChanges
    /// Kept listeners (same name and address) whose backlog changed.
    public var backlogChangedListeners: [String]
    /// The lines of `changedSettings` that are neither listeners, routes nor upstreams.
    public var otherSettings: [String]

    public init(from old: GatewayConfiguration, to new: GatewayConfiguration) {
        let oldByName = Dictionary(old.listeners.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let newNames = Set(new.listeners.map(\.name))

        addedListeners = []
        rebindListeners = []
        keptListeners = []
        var backlogChanges: [String] = []
        backlogChangedListeners = []
        for listener in new.listeners {
            guard let previous = oldByName[listener.name] else {
                addedListeners.append(listener)
                continue
            }
            if previous.address != listener.address {
                rebindListeners.append(ListenerChange(old: previous, new: listener))
            } else {
                keptListeners.append(listener)
                if previous.backlog != listener.backlog {
                    backlogChanges.append(
                        "listener '\(listener.name)' backlog \(previous.backlog) -> \(listener.backlog)")
                    backlogChangedListeners.append(listener.name)
                }
                if previous.tls != listener.tls {
                    backlogChanges.append(
                        "listener '\(listener.name)' tls \(Self.tlsChange(previous.tls, listener.tls))")
                }
            }
        }
        removedListeners = old.listeners.filter { !newNames.contains($0.name) }

        var settings: [String] = []
        var plain: [String] = []
        func note<T: Equatable>(_ key: String, _ a: T, _ b: T, _ show: (T) -> String) {
            guard a != b else { return }
            settings.append("\(key) \(show(a)) -> \(show(b))")
            plain.append("\(key) \(show(a)) -> \(show(b))")
        }
        note("workers", old.workers, new.workers) { $0.map(String.init) ?? "auto" }
        note("drain_timeout", old.drainTimeout, new.drainTimeout, DurationText.format)
        note("ready_timeout", old.readyTimeout, new.readyTimeout, DurationText.format)
        note("max_draining_generations", old.maxDrainingGenerations, new.maxDrainingGenerations) { String($0) }
        note("worker_watchdog_timeout", old.workerWatchdogTimeout, new.workerWatchdogTimeout, DurationText.format)
        note("control_socket", old.controlSocket, new.controlSocket) { $0 ?? "default" }
        settings += backlogChanges
        upstreams = NamedChanges(from: old.upstreams, to: new.upstreams, \.name, ordered: false)
        routes = NamedChanges(from: old.routes, to: new.routes, \.name, ordered: true)
        if let line = upstreams.line("upstreams") { settings.append(line) }
        if let line = routes.line("routes") { settings.append(line) }
        note("limits.max_header_bytes", old.limits.maxHeaderBytes, new.limits.maxHeaderBytes) {
            ByteSizeText.format(Int64($0))
        }
        note("limits.max_body_bytes", old.limits.maxBodyBytes, new.limits.maxBodyBytes) {
            $0 == 0 ? "unlimited" : ByteSizeText.format($0)
        }
        note("limits.header_timeout", old.limits.headerTimeout, new.limits.headerTimeout, DurationText.format)
        note("limits.idle_timeout", old.limits.idleTimeout, new.limits.idleTimeout, DurationText.format)
        note("limits.body_timeout", old.limits.bodyTimeout, new.limits.bodyTimeout, DurationText.format)
        note(
            "limits.tunnel_idle_timeout", old.limits.tunnelIdleTimeout, new.limits.tunnelIdleTimeout,
            DurationText.format)
        note("access_log", old.accessLog, new.accessLog) { $0.map { "\($0.path) (\($0.format.rawValue))" } ?? "off" }
        note("admin.listener", old.admin?.listener, new.admin?.listener) { $0 ?? "none" }
        note("user", old.user, new.user) { $0 ?? "none" }
        note("group", old.group, new.group) { $0 ?? "none" }
        note("tracing", old.tracing, new.tracing) {
            $0.map { "\($0.otlpEndpoint) (sample_ratio \($0.sampleRatio))" } ?? "off"
        }
        changedSettings = settings
        otherSettings = plain
    }

    /// Kept listeners do not count: a reload that keeps every socket and changes nothing else
    /// is empty.
    public var isEmpty: Bool {
        addedListeners.isEmpty && removedListeners.isEmpty && rebindListeners.isEmpty && changedSettings.isEmpty
    }

    /// One line for the reload log, e.g.
    /// `listeners: +api [::]:8443, -old, web 127.0.0.1:8080 -> 0.0.0.0:8080; workers 2 -> 4`.
    public var description: String {
        if isEmpty { return "no changes" }
        var listenerParts: [String] = []
        listenerParts += addedListeners.map { "+\($0.name) \($0.address)" }
        listenerParts += removedListeners.map { "-\($0.name)" }
        listenerParts += rebindListeners.map { "\($0.name) \($0.old.address) -> \($0.new.address)" }
        var parts: [String] = []
        if !listenerParts.isEmpty {
            parts.append("listeners: " + listenerParts.joined(separator: ", "))
        }
        parts += changedSettings
        return parts.joined(separator: "; ")
    }
}

extension ConfigDiff {
    /// `off -> on`, `on -> off`, or what changed (`certificates changed`): a certificate
    /// rotation shows in a reload's summary, without a byte of a key.
    fileprivate static func tlsChange(_ old: TLSConfig?, _ new: TLSConfig?) -> String {
        guard let old, let new else { return old == nil ? "off -> on" : "on -> off" }
        var changes: [String] = []
        if old.certificates != new.certificates { changes.append("certificates changed") }
        if old.alpn != new.alpn { changes.append("alpn changed") }
        if old.minVersion != new.minVersion {
            changes.append("min_version \(old.minVersion.rawValue) -> \(new.minVersion.rawValue)")
        }
        if old.sessionTickets != new.sessionTickets {
            changes.append(
                "session_tickets \(old.sessionTickets ? "on" : "off") -> \(new.sessionTickets ? "on" : "off")")
        }
        return changes.joined(separator: ", ")
    }
}

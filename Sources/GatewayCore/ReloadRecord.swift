/// One reload or upgrade as it ended, as the upgrade protocol's `history` frame has carried it
/// since version 2 (`records`). A master now keeps `GatewayEvent`s, of every type; it still
/// writes its reloads and upgrades in this form beside them (`events`), so that a master that
/// reads only `records` takes over with its reload history, and reads them from a master that
/// sends nothing else.
public struct ReloadRecord: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case reload
        case upgrade
    }

    public enum Outcome: String, Codable, Sendable, CaseIterable {
        case ok
        case failed
    }

    public var kind: Kind
    /// What asked for it: "SIGHUP", "control socket", "SIGUSR2", …
    public var trigger: String
    /// Wall clock, seconds since 1970.
    public var startedAt: Double
    public var durationMilliseconds: Double
    public var outcome: Outcome
    /// Why it failed; nil when it did not.
    public var reason: String?
    /// The generation serving when it ended well.
    public var generation: Int?
    /// The master that ran it (an upgrade's record is written by the old master).
    public var masterPid: Int32
    /// A reload's phases; nil for an upgrade.
    public var timings: ReloadTimings?

    public init(
        kind: Kind, trigger: String, startedAt: Double, durationMilliseconds: Double, outcome: Outcome,
        reason: String? = nil, generation: Int? = nil, masterPid: Int32, timings: ReloadTimings? = nil
    ) {
        self.kind = kind
        self.trigger = trigger
        self.startedAt = startedAt
        self.durationMilliseconds = durationMilliseconds
        self.outcome = outcome
        self.reason = reason
        self.generation = generation
        self.masterPid = masterPid
        self.timings = timings
    }

    enum CodingKeys: String, CodingKey {
        case kind, trigger, startedAt = "started_at", durationMilliseconds = "duration_ms", outcome, reason,
            generation, masterPid = "master_pid", timings
    }
}

extension ReloadRecord {
    /// A reload or upgrade event in the old form; nil for every other type.
    public init?(_ event: GatewayEvent) {
        let kind: Kind
        switch event.type {
        case .reload: kind = .reload
        case .upgrade: kind = .upgrade
        default: return nil
        }
        self.init(
            kind: kind, trigger: event.trigger ?? "", startedAt: event.time,
            durationMilliseconds: event.durationMs ?? 0,
            outcome: event.outcome == .failed ? .failed : .ok, reason: event.reason, generation: event.generation,
            masterPid: event.masterPid, timings: event.reloadTimings)
    }
}

extension GatewayEvent {
    /// A record from a master that sent only `records`.
    public init(_ record: ReloadRecord, id: Int) {
        self.init(
            id: id, type: record.kind == .reload ? .reload : .upgrade, time: record.startedAt, trigger: record.trigger,
            outcome: record.outcome == .ok ? .ok : .failed, reason: record.reason, generation: record.generation,
            phases: record.timings?.phases, durationMs: record.durationMilliseconds, masterPid: record.masterPid)
    }

    /// A reload's phases as `ReloadTimings`; nil when it has none.
    public var reloadTimings: ReloadTimings? {
        guard let phases else { return nil }
        var timings = ReloadTimings(totalMs: durationMs ?? 0)
        for phase in ReloadPhase.allCases {
            if let name = phase.eventName, let ms = phases[name] { timings[phase] = ms }
        }
        return timings
    }
}

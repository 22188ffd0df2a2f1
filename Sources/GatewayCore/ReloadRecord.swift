/// One reload or upgrade as it ended: what a master keeps of its recent past
/// (GatewaySupervisor's `ReloadHistory`) and hands to the next master in an upgrade, so that
/// the history of a gateway does not end with the process that wrote it.
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

/// What the status page shows (`/status` on the admin listener), as the master sees it: its
/// status, the recent events and the log levels. Only the master knows them; it sends a
/// snapshot to the workers of every generation with an admin listener over their channels
/// (the handoff protocol's `status_page` frame) when it changes, at most every half second,
/// and a worker renders the last one it got.
public struct StatusSnapshot: Codable, Sendable, Equatable {
    /// The newest events a page shows: a screen's worth, and a frame of a few KiB.
    public static let eventCount = 20

    public var status: StatusReport
    /// The newest `eventCount`, oldest first.
    public var events: [GatewayEvent]
    public var logLevels: [String: String]
    /// When the master made it, wall clock seconds since 1970.
    public var time: Double

    public init(status: StatusReport, events: [GatewayEvent], logLevels: [String: String], time: Double) {
        self.status = status
        self.events = events
        self.logLevels = logLevels
        self.time = time
    }

    enum CodingKeys: String, CodingKey {
        case status, events, logLevels = "log_levels", time
    }
}

/// One message per `interval` about a failure that recurs at once (every accept, every flush
/// of the access log), with the number of occurrences kept quiet in between: a full disk or an
/// exhausted fd limit fails again and again, and a message each time would flood the log,
/// which may well be on the disk that is full.
public struct LogThrottle: Sendable {
    /// A `tail -f` still shows within seconds that the failure goes on, and a failure that
    /// repeats thousands of times a second costs six lines a minute.
    public static let defaultInterval: Duration = .seconds(10)

    public let interval: Duration
    private var lastReport: ContinuousClock.Instant?
    private var quiet = 0

    public init(interval: Duration = LogThrottle.defaultInterval) {
        self.interval = interval
    }

    /// Called at each occurrence: nil when this one is to stay quiet; otherwise it is to be
    /// reported, with how many were not since the previous report (0 for the first).
    public mutating func shouldReport(now: ContinuousClock.Instant = .now) -> Int? {
        if let lastReport, now - lastReport < self.interval {
            self.quiet += 1
            return nil
        }
        defer {
            self.lastReport = now
            self.quiet = 0
        }
        return self.quiet
    }
}

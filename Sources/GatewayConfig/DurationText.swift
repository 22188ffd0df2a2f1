/// Durations as written in the configuration: `250ms`, `30s`, `2m`, `1h`, or several of those
/// from the largest unit down, `1m30s`. Whole numbers only: `1.5s` is `1500ms`.
public enum DurationText {
    private static let units: [(suffix: String, milliseconds: Int64)] = [
        ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1),
    ]

    /// The longest duration accepted: what still fits in Int64 nanoseconds (about 292 years), so
    /// converting to NIO's `TimeAmount` or to `timespec` never overflows.
    private static let maximumMilliseconds = Int64.max / 1_000_000

    /// Nil for anything not in the grammar: no sign, no spaces, no fractions, no bare numbers,
    /// each unit at most once and in order h, m, s, ms.
    public static func parse(_ text: String) -> Duration? {
        var rest = Substring(text)
        var total: Int64 = 0
        var nextUnit = 0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 18, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let suffix = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(suffix.count)
            guard let unit = units[nextUnit...].firstIndex(where: { $0.suffix == suffix }) else { return nil }
            nextUnit = unit + 1
            let (scaled, overflow) = value.multipliedReportingOverflow(by: units[unit].milliseconds)
            guard !overflow else { return nil }
            let (sum, sumOverflow) = total.addingReportingOverflow(scaled)
            guard !sumOverflow, sum <= maximumMilliseconds else { return nil }
            total = sum
        }
        return .milliseconds(total)
    }

    /// The shortest text `parse` reads back as `duration`: `90s` rather than `1m30s`, but
    /// `1h1s` rather than `3601s`. Durations that are not whole milliseconds (never produced
    /// by `parse`) fall back to `Duration`'s own description.
    public static func format(_ duration: Duration) -> String {
        if duration < .zero {
            return duration == Duration(secondsComponent: .min, attosecondsComponent: 0)
                ? duration.description : "-" + format(.zero - duration)
        }
        let (seconds, attoseconds) = duration.components
        let attosecondsPerMillisecond: Int64 = 1_000_000_000_000_000
        guard attoseconds % attosecondsPerMillisecond == 0 else { return duration.description }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000)
        guard !overflow else { return duration.description }
        let total = scaled + attoseconds / attosecondsPerMillisecond
        if total == 0 { return "0s" }

        let single = units.first { total % $0.milliseconds == 0 }.map { "\(total / $0.milliseconds)\($0.suffix)" }!
        var remainder = total
        var combined = ""
        for unit in units where remainder >= unit.milliseconds {
            let count = remainder / unit.milliseconds
            remainder %= unit.milliseconds
            if count > 0 { combined += "\(count)\(unit.suffix)" }
        }
        return combined.count < single.count ? combined : single
    }
}

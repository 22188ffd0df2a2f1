/// Durations as written in the configuration and on the command line: `250ms`, `30s`, `2m`,
/// `1h`, with a decimal fraction if wanted (`1.5s`, `0.25s`, as Envoy, Caddy and Traefik take
/// them), or several of those from the largest unit down, `1m30s`.
public enum DurationText {
    private static let units: [(suffix: String, nanoseconds: Int128)] = [
        ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000),
    ]

    /// The longest duration accepted: what fits in Int64 nanoseconds (about 292 years), so
    /// converting to NIO's `TimeAmount` or to `timespec` never overflows.
    private static let maximumNanoseconds = Int128(Int64.max)

    /// Nil for anything not in the grammar: no sign, no spaces, no exponent, no bare numbers,
    /// each unit at most once and in order h, m, s, ms, and no fraction finer than a nanosecond
    /// (`0.5ms` is fine, `0.0000000001s` is not).
    public static func parse(_ text: String) -> Duration? {
        var rest = Substring(text)
        var total: Int128 = 0
        var nextUnit = 0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 18, let whole = Int128(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            var fraction: Substring = ""
            if rest.first == "." {
                fraction = rest.dropFirst().prefix { $0.isASCII && $0.isNumber }
                guard !fraction.isEmpty, fraction.count <= 18 else { return nil }
                rest = rest.dropFirst(1 + fraction.count)
            }
            let suffix = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(suffix.count)
            guard let unit = units[nextUnit...].firstIndex(where: { $0.suffix == suffix }) else { return nil }
            nextUnit = unit + 1
            let scale = units[unit].nanoseconds
            var value = whole * scale
            if let numerator = Int128(fraction) {
                var denominator: Int128 = 1
                for _ in fraction { denominator *= 10 }
                guard (numerator * scale) % denominator == 0 else { return nil }
                value += numerator * scale / denominator
            }
            total += value
            guard total <= maximumNanoseconds else { return nil }
        }
        return .nanoseconds(Int64(total))
    }

    /// The shortest text `parse` reads back as `duration`: `90s` rather than `1m30s`, but
    /// `1h1s` rather than `3601s`. A duration that is not whole milliseconds is written in
    /// milliseconds with a fraction (`0.5ms`, `1500.25ms`); one finer than a nanosecond (never
    /// produced by `parse`) falls back to `Duration`'s own description.
    public static func format(_ duration: Duration) -> String {
        if duration < .zero {
            return duration == Duration(secondsComponent: .min, attosecondsComponent: 0)
                ? duration.description : "-" + format(.zero - duration)
        }
        let (seconds, attoseconds) = duration.components
        let attosecondsPerMillisecond: Int64 = 1_000_000_000_000_000
        let attosecondsPerNanosecond: Int64 = 1_000_000_000
        guard attoseconds % attosecondsPerMillisecond == 0 else {
            guard attoseconds % attosecondsPerNanosecond == 0 else { return duration.description }
            let nanoseconds = Int128(seconds) * 1_000_000_000 + Int128(attoseconds / attosecondsPerNanosecond)
            var fraction = String(nanoseconds % 1_000_000)
            fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
            while fraction.hasSuffix("0") { fraction.removeLast() }
            return "\(nanoseconds / 1_000_000).\(fraction)ms"
        }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000)
        guard !overflow else { return duration.description }
        let total = scaled + attoseconds / attosecondsPerMillisecond
        if total == 0 { return "0s" }

        let units = Self.units.map { (suffix: $0.suffix, milliseconds: Int64($0.nanoseconds / 1_000_000)) }
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

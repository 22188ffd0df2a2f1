import GatewayConfig
import Testing

@Suite struct DurationTextTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)),
        ("30s", .seconds(30)),
        ("2m", .seconds(120)),
        ("1h", .seconds(3600)),
        ("1m30s", .seconds(90)),
        ("1h30m", .seconds(5400)),
        ("1h0m5s", .seconds(3605)),
        ("1s500ms", .milliseconds(1500)),
        ("0s", .zero),
        ("0ms", .zero),
        ("007s", .seconds(7)),
        ("1.5s", .milliseconds(1500)),
        ("0.25s", .milliseconds(250)),
        ("250ms", .milliseconds(250)),
        ("0.5ms", .microseconds(500)),
        ("1.5h", .seconds(5400)),
        ("1m0.5s", .milliseconds(60_500)),
        ("0.000000001s", .nanoseconds(1)),
        ("1.000s", .seconds(1)),
    ])
    func parses(text: String, expected: Duration) {
        #expect(DurationText.parse(text) == expected)
    }

    @Test(arguments: [
        "", "30", "30 s", " 30s", "30s ", "-1s", "+1s", "1.5", "1.s", ".5s", "1.5.5s", "1,5s", "1e3ms",
        "0.0000000001s", "0.0000001ms", "1x", "30S", "1M", "ms", "s", "1m30", "1s1m", "1s1s",
        "1ms1s", "1hms", "١s", "99999999999999999999h", "9223372036854s", "2562048h",
    ])
    func refuses(text: String) {
        #expect(DurationText.parse(text) == nil)
    }

    @Test func acceptsUpToWhatFitsInNanoseconds() {
        #expect(DurationText.parse("9223372036854ms") == .milliseconds(9_223_372_036_854))
        #expect(DurationText.parse("9223372036.854775807s") == .nanoseconds(Int64.max))
        #expect(DurationText.parse("9223372036.854775808s") == nil)
        #expect(DurationText.parse("9223372036855ms") == nil)
    }

    @Test(arguments: [
        (Duration.seconds(30), "30s"),
        (.milliseconds(250), "250ms"),
        (.seconds(90), "90s"),
        (.seconds(120), "2m"),
        (.seconds(3600), "1h"),
        (.seconds(3601), "1h1s"),
        (.seconds(5400), "90m"),
        (.milliseconds(1500), "1500ms"),
        (.milliseconds(3_600_001), "1h1ms"),
        (.zero, "0s"),
        (.seconds(-5), "-5s"),
    ])
    func formats(duration: Duration, expected: String) {
        #expect(DurationText.format(duration) == expected)
    }

    @Test func formatsSubMillisecondDurationsWithAFraction() {
        #expect(DurationText.format(.microseconds(1500)) == "1.5ms")
        #expect(DurationText.format(.nanoseconds(1)) == "0.000001ms")
        #expect(DurationText.parse(DurationText.format(.nanoseconds(123_456_789))) == .nanoseconds(123_456_789))
        let subNanosecond = Duration(secondsComponent: 0, attosecondsComponent: 1)
        #expect(DurationText.format(subNanosecond) == subNanosecond.description)
    }

    @Test func roundTrips() {
        var generator = SplitMix64(seed: 7)
        let samples: [Int64] =
            [0, 1, 999, 1000, 59_999, 60_000, 3_599_999, 3_600_000, 86_400_000]
            + (0..<2000).map { _ in Int64(generator.next() % 400_000_000) }
        for milliseconds in samples {
            let duration = Duration.milliseconds(milliseconds)
            let text = DurationText.format(duration)
            #expect(DurationText.parse(text) == duration, "\(milliseconds)ms formatted as \(text)")
        }
    }
}

/// Deterministic pseudo-random numbers, so a failing case can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

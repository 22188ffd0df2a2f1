import GatewayConfig
import Testing

@Suite struct RateTextTests {
    @Test(
        arguments: [
            ("100/s", 100),
            ("1/s", 1),
            ("0.5/s", 0.5),
            ("6000/m", 100),
            ("30/m", 0.5),
            ("3600/h", 1),
            ("1/h", 1.0 / 3600),
            ("1.5/m", 0.025),
            ("007/s", 7),
            ("1000000000/s", 1e9),
        ] as [(String, Double)])
    func parses(text: String, expected: Double) {
        #expect(RateText.parse(text) == expected)
    }

    @Test(
        arguments: [
            "", "100", "/s", "100/", "100/min", "100/S", "100 /s", "100/ s", " 100/s", "100/s ", "-1/s", "+1/s", "0/s",
            "0.0/s", ".5/s", "5./s", "1.2.3/s", "1e3/s", "inf/s", "nan/s", "1,5/s", "100/s/s", "1000000001/s",
            "60000000001/m", "١٠/s", String(repeating: "1", count: 40) + "/h",
        ] as [String])
    func refuses(text: String) {
        #expect(RateText.parse(text) == nil)
    }
}

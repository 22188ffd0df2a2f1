import GatewayConfig
import Testing

@Suite struct ByteSizeTextTests {
    @Test(
        arguments: [
            ("0", 0),
            ("16384", 16384),
            ("32KiB", 32 * 1024),
            ("32K", 32 * 1024),
            ("32k", 32 * 1024),
            ("10MiB", 10 << 20),
            ("10M", 10 << 20),
            ("10m", 10 << 20),
            ("1GiB", 1 << 30),
            ("1G", 1 << 30),
            ("2g", 2 << 30),
            ("0K", 0),
            ("8589934591G", 8_589_934_591 << 30),
            ("9223372036854775807", Int64.max),
        ] as [(String, Int64)])
    func parses(text: String, expected: Int64) {
        #expect(ByteSizeText.parse(text) == expected)
    }

    @Test(arguments: [
        "", "K", "KiB", "-1", "+1", "1.5M", "32 KiB", " 32K", "32K ", "32KB", "32kB", "32kib", "32Ki", "10MB", "1T",
        "1TiB", "1B", "1_000", "0x10", "8589934592G", "9223372036854775808", "99999999999999999999", "١K",
    ])
    func refuses(text: String) {
        #expect(ByteSizeText.parse(text) == nil)
    }

    @Test(
        arguments: [
            (0, "0"),
            (1, "1"),
            (1536, "1536"),
            (1024, "1KiB"),
            (32 * 1024, "32KiB"),
            (1 << 20, "1MiB"),
            (10 << 20, "10MiB"),
            (1 << 30, "1GiB"),
            (3 << 29, "1536MiB"),
        ] as [(Int64, String)])
    func formats(bytes: Int64, expected: String) {
        #expect(ByteSizeText.format(bytes) == expected)
        #expect(ByteSizeText.parse(expected) == bytes)
    }
}

import Foundation
import Testing

@testable import GatewayConfig

/// The shipped examples, mutated the ways real files go wrong (lines duplicated, deleted or
/// re-indented, numbers grown huge, nesting run deep, bytes that are not UTF-8) on top of the
/// byte-level mutations of `mutate`. Seeded: a failure prints the seed and the variant's index,
/// and GATEWAYD_FUZZ_SEED=<seed> replays the run.
extension ConfigRobustnessTests {
    static let examplesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples")

    /// The examples as the parser sees them, under /etc/gw with demo-keys.txt beside them, so the
    /// unmutated files parse (keys_file is relative to the config).
    static let exampleSystem: ConfigSystem = {
        var fake = FakeSystem()
        fake.files["/etc/gw/demo-keys.txt"] =
            (try? String(contentsOf: examplesDirectory.appendingPathComponent("demo-keys.txt"), encoding: .utf8)) ?? ""
        return fake.system
    }()

    static let hugeNumbers: [String] = [
        String(repeating: "9", count: 400), "18446744073709551616", "-9223372036854775809", "1e999", "-0", "0x7FFFFFFF",
        "0o777", ".inf", "NaN", "1_000_000", "4294967296s", "99999999999999999999h", "1.5e308KiB",
    ]

    static let invalidUTF8: [[UInt8]] = [
        [0xFF], [0xC3, 0x28], [0xE2, 0x28, 0xA1], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC0, 0xAF], [0x80],
        [0xF0, 0x9F, 0x98],
    ]

    /// One to three mutations that work on whole lines, numbers, nesting or encoding, then
    /// sometimes a byte-level one from `mutate`.
    static func mutateExample(_ input: [UInt8], with random: inout SplitMix64) -> [UInt8] {
        var lines = input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        func pick() -> Int { Int(random.next() % UInt64(max(lines.count, 1))) }
        for _ in 0...(random.next() % 3) where !lines.isEmpty {
            let index = pick()
            switch random.next() % 8 {
            case 0:
                lines.insert(lines[index], at: pick())
            case 1:
                lines.remove(at: index)
            case 2:
                let line = lines[index].drop { $0 == UInt8(ascii: " ") }
                let indent = Int(random.next() % 12)
                lines[index] =
                    [UInt8](repeating: UInt8(ascii: random.next() % 8 == 0 ? "\t" : " "), count: indent) + line
            case 3:
                lines.swapAt(index, pick())
            case 4:
                // A run of digits, or the end of the line, becomes a huge or odd number.
                let number = Array(hugeNumbers[Int(random.next() % UInt64(hugeNumbers.count))].utf8)
                if let start = lines[index].firstIndex(where: { (48...57).contains($0) }) {
                    let end = lines[index][start...].firstIndex { !(48...57).contains($0) } ?? lines[index].endIndex
                    lines[index].replaceSubrange(start..<end, with: number)
                } else {
                    lines[index] += Array(" ".utf8) + number
                }
            case 5:
                let depth = [10, 200, 999, 1001, 5000][Int(random.next() % 5)]
                let open = Array((random.next() % 2 == 0 ? "[" : "{a: ").utf8)
                let nested = Array(repeating: open, count: depth).flatMap { $0 }
                let colon = lines[index].firstIndex(of: UInt8(ascii: ":")).map { $0 + 1 } ?? lines[index].endIndex
                lines[index].insert(contentsOf: Array(" ".utf8) + nested, at: colon)
            case 6:
                let bytes = invalidUTF8[Int(random.next() % UInt64(invalidUTF8.count))]
                lines[index].insert(contentsOf: bytes, at: Int(random.next() % UInt64(lines[index].count + 1)))
            default:
                // Truncated somewhere inside this line, as a full disk leaves a file.
                lines[index] = Array(lines[index].prefix(Int(random.next() % UInt64(lines[index].count + 1))))
                lines.removeSubrange((index + 1)...)
            }
        }
        let joined = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        return random.next() % 3 == 0 ? mutate(joined, with: &random) : joined
    }

    /// Lines of the file as libyaml counts them (LF, CR, CRLF, NEL, LS, PS). A file that is not
    /// valid UTF-8 is counted on its bytes the same way: its error is at the first bad byte,
    /// whose line counts every break before it (GATEWAYD_FUZZ_SEED=1795801444016, variant 227,
    /// had CRs that a count of LFs alone missed).
    static func lineCount(_ bytes: [UInt8]) -> Int {
        if let text = try? SourceText(validating: bytes, file: "") { return text.lineStarts.count }
        var lines = 1
        var index = 0
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\n"): lines += 1
            case UInt8(ascii: "\r") where index + 1 >= bytes.count || bytes[index + 1] != UInt8(ascii: "\n"): lines += 1
            case 0xC2 where index + 1 < bytes.count && bytes[index + 1] == 0x85: lines += 1
            case 0xE2 where index + 2 < bytes.count && bytes[index + 1] == 0x80 && (bytes[index + 2] & 0xFE) == 0xA8:
                lines += 1
            default: break
            }
            index += 1
        }
        return lines
    }

    @Test("mutated examples: a config or errors at file:line:col inside the file, 4000 variants in under 60 s")
    func mutatedExamples() throws {
        let seed =
            ProcessInfo.processInfo.environment["GATEWAYD_FUZZ_SEED"].flatMap { UInt64($0) }
            ?? UInt64(Date().timeIntervalSince1970 * 1000)
        print("ConfigRobustnessTests.mutatedExamples: seed \(seed) (replay with GATEWAYD_FUZZ_SEED=\(seed))")
        var random = SplitMix64(seed: seed)
        let examples = try ["gateway.yaml", "gateway-proxy.yaml"].map { name in
            (
                path: "/etc/gw/\(name)",
                bytes: [UInt8](try Data(contentsOf: Self.examplesDirectory.appendingPathComponent(name)))
            )
        }
        for example in examples {
            #expect(throws: Never.self) {
                try ConfigLoader.parse(example.bytes, path: example.path, files: nil, system: Self.exampleSystem)
            }
        }
        let clock = ContinuousClock()
        let started = clock.now
        var slowest: (Duration, Int) = (.zero, -1)
        var outcomes = (parsed: 0, failed: 0)
        for index in 0..<4000 {
            let example = examples[index % examples.count]
            let variant = Self.mutateExample(example.bytes, with: &random)
            let lines = Self.lineCount(variant)
            let before = clock.now
            do {
                _ = try ConfigLoader.parse(variant, path: example.path, files: nil, system: Self.exampleSystem)
                outcomes.parsed += 1
            } catch {
                outcomes.failed += 1
                #expect(!error.diagnostics.isEmpty, "seed \(seed), variant \(index)")
                for diagnostic in error.diagnostics {
                    #expect(
                        diagnostic.file == example.path && (1...lines).contains(diagnostic.line)
                            && diagnostic.column >= 1
                            && !diagnostic.message.isEmpty,
                        "seed \(seed), variant \(index) (\(lines) lines): \(diagnostic)")
                }
            }
            let took = clock.now - before
            if took > slowest.0 { slowest = (took, index) }
            #expect(clock.now - started < .seconds(60), "seed \(seed): 60 s spent by variant \(index)")
            if clock.now - started >= .seconds(60) { break }
        }
        print(
            "ConfigRobustnessTests.mutatedExamples: \(outcomes.parsed) parsed, \(outcomes.failed) refused in \(clock.now - started); slowest variant \(slowest.1): \(slowest.0)"
        )
        #expect(outcomes.parsed > 50, "seed \(seed): the mutations barely leave a valid file")
        #expect(outcomes.failed > 1000, "seed \(seed): the mutations barely break anything")
    }
}

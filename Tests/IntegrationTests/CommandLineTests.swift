import Foundation
import Testing

@Suite("Command line", .timeLimit(.minutes(1)))
struct CommandLineTests {
    @Test("gatewayd check: FILE: ok on stdout, or FILE:LINE:COL: error: per error on stderr and exit 1")
    func check() throws {
        let directory = try TemporaryDirectory()
        let good = directory.file("good.yaml")
        try Configs.hello().write(toFile: good, atomically: false, encoding: .utf8)
        let ok = try runCommand(Binaries.gatewayd, ["check", "--config", good])
        #expect(ok.status == 0)
        #expect(ok.stdout == "\(good): ok\n")
        #expect(ok.stderr == "")

        let bad = directory.file("bad.yaml")
        try "workers: two\ndrain_timeout: 30 sec\nlisteners:\n  - name: web\n    address: localhost:80\n".write(
            toFile: bad, atomically: false, encoding: .utf8)
        let failed = try runCommand(Binaries.gatewayd, ["check", "--config", bad])
        #expect(failed.status == 1)
        #expect(failed.stdout == "")
        let lines = failed.stderr.split(separator: "\n")
        #expect(lines.count >= 3, "\(failed.stderr)")
        #expect(lines.allSatisfy { $0.hasPrefix("\(bad):") && $0.contains(": error: ") }, "\(failed.stderr)")
        #expect(lines.contains { $0.hasPrefix("\(bad):1:") && $0.contains(": error: workers") })
        #expect(lines.contains { $0.hasPrefix("\(bad):2:") && $0.contains("drain_timeout") })
        #expect(lines.contains { $0.hasPrefix("\(bad):5:") && $0.contains("address") })
    }

    @Test("gatewayd check on 50 mutated examples: exit 0 or 1, never a signal, errors as FILE:LINE:COL")
    func checkMutatedExamples() throws {
        let seed = fuzzSeed(for: "CommandLineTests.checkMutatedExamples")
        var random = SeededRandom(seed: seed)
        let examples = Binaries.packageRoot.appendingPathComponent("examples")
        let directory = try TemporaryDirectory()
        // keys_file in the proxy example is relative to the config.
        try FileManager.default.copyItem(
            atPath: examples.appendingPathComponent("demo-keys.txt").path, toPath: directory.file("demo-keys.txt"))
        let sources = try ["gateway.yaml", "gateway-proxy.yaml"].map {
            [UInt8](try Data(contentsOf: examples.appendingPathComponent($0)))
        }
        var outcomes = [Int32: Int]()
        for index in 0..<50 {
            var lines = sources[index % 2].split(separator: 10, omittingEmptySubsequences: false).map(Array.init)
            for _ in 0...(random.next() % 3) {
                let line = Int(random.next() % UInt64(lines.count))
                switch random.next() % 5 {
                case 0: lines.insert(lines[line], at: Int(random.next() % UInt64(lines.count)))
                case 1: lines.remove(at: line)
                case 2: lines[line].insert(contentsOf: [UInt8](repeating: 32, count: Int(random.next() % 6) + 1), at: 0)
                case 3: lines[line] += [0xC3, 0x28]
                default:
                    if !lines[line].isEmpty {
                        lines[line][Int(random.next() % UInt64(lines[line].count))] ^= UInt8(1 << (random.next() % 8))
                    }
                }
                if lines.isEmpty { lines = [[]] }
            }
            let path = directory.file("variant-\(index).yaml")
            try Data(lines.joined(separator: [10])).write(to: URL(fileURLWithPath: path))
            let result = try runCommand(Binaries.gatewayd, ["check", "--config", path], timeout: .seconds(20))
            outcomes[result.status, default: 0] += 1
            #expect(
                !result.signaled && (result.status == 0 || result.status == 1),
                "seed \(seed), variant \(index): \(result)")
            if result.status == 1 {
                let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix(path + ":") }
                #expect(!errors.isEmpty, "seed \(seed), variant \(index): \(result.stderr)")
            }
        }
        print("CommandLineTests.checkMutatedExamples: exit statuses \(outcomes)")
    }

    @Test("gatewayctl without a running gatewayd says so and exits 2")
    func gatewayctlWithoutMaster() throws {
        let directory = try TemporaryDirectory()
        let result = try runCommand(Binaries.gatewayctl, ["status", "--socket", directory.file("none.sock")])
        #expect(result.status == 2)
        #expect(result.stderr.contains("is gatewayd running?"), "\(result.stderr)")
    }
}

/// SplitMix64: a small seeded generator, so a failing run replays from its printed seed.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

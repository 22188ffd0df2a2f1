import Foundation
import Testing

@Suite("Command line", .timeLimit(.minutes(1)))
struct CommandLineTests {
    @Test("gatewayd check: FILE: ok, or FILE:LINE:COL per error and exit 1")
    func check() throws {
        let directory = try TemporaryDirectory()
        let good = directory.file("good.yaml")
        try Configs.hello().write(toFile: good, atomically: false, encoding: .utf8)
        let ok = try runCommand(Binaries.gatewayd, ["check", "--config", good])
        #expect(ok.status == 0)
        #expect(ok.stdout == "\(good): ok\n")

        let bad = directory.file("bad.yaml")
        try "workers: two\ndrain_timeout: 30 sec\nlisteners:\n  - name: web\n    address: localhost:80\n".write(
            toFile: bad, atomically: false, encoding: .utf8)
        let failed = try runCommand(Binaries.gatewayd, ["check", "--config", bad])
        #expect(failed.status == 1)
        let lines = failed.stdout.split(separator: "\n")
        #expect(lines.count >= 3, "\(failed.stdout)")
        #expect(lines.contains { $0.hasPrefix("\(bad):1:") && $0.contains("workers") })
        #expect(lines.contains { $0.hasPrefix("\(bad):2:") && $0.contains("drain_timeout") })
        #expect(lines.contains { $0.hasPrefix("\(bad):5:") && $0.contains("address") })
    }

    @Test("gatewayctl without a running gatewayd says so and exits 2")
    func gatewayctlWithoutMaster() throws {
        let directory = try TemporaryDirectory()
        let result = try runCommand(Binaries.gatewayctl, ["status", "--socket", directory.file("none.sock")])
        #expect(result.status == 2)
        #expect(result.stderr.contains("is gatewayd running?"), "\(result.stderr)")
    }
}

import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The conventions operators expect of both binaries: options on either side of the
/// subcommand, --version, -c, warnings, exit statuses, durations, completions.
@Suite("Operator command line", .timeLimit(.minutes(2)))
struct OperatorCommandLineTests {
    /// What `make test` built in (GATEWAYD_VERSION, from packaging/version.sh); nil when the
    /// tests run outside make.
    static let builtVersion = ProcessInfo.processInfo.environment["GATEWAYD_VERSION"]

    @Test("--version: both binaries print the one version set at build time")
    func version() throws {
        let gatewayd = try runCommand(Binaries.gatewayd, ["--version"])
        let gatewayctl = try runCommand(Binaries.gatewayctl, ["--version"])
        #expect(gatewayd.status == 0 && gatewayctl.status == 0)
        let version = gatewayd.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!version.isEmpty)
        #expect(gatewayctl.stdout == gatewayd.stdout)
        if let built = Self.builtVersion {
            #expect(version == built)
        } else {
            print("OperatorCommandLineTests.version: \(version) (GATEWAYD_VERSION not set: not run by make test)")
        }
    }

    @Test("the version in status and in the master's start-up line; gatewayctl options before the subcommand")
    func versionInStatusAndOptionsFirst() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(workers: 1))
        let version = try runCommand(Binaries.gatewayd, ["--version"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(gatewayd.log.contains("gatewayd \(version) starting"), "\(gatewayd.log)")
        #expect(try gatewayd.status().version == version)

        let before = try runCommand(
            Binaries.gatewayctl, ["--socket", gatewayd.socketPath, "--timeout", "1.5s", "status"])
        #expect(before.status == 0, "\(before.stderr)")
        #expect(before.stdout.hasPrefix("gatewayd \(version), master pid \(gatewayd.pid)"), "\(before.stdout)")
        let after = try runCommand(Binaries.gatewayctl, ["status", "--timeout", "30", "--socket", gatewayd.socketPath])
        #expect(after.stdout == before.stdout)
        let reload = try runCommand(Binaries.gatewayctl, ["--socket", gatewayd.socketPath, "reload", "--json"])
        #expect(reload.status == 0, "\(reload.stderr)")
    }

    @Test("-c, --config and the default path; options on either side of check")
    func configOption() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("gatewayd.yaml")
        try Configs.hello().write(toFile: path, atomically: false, encoding: .utf8)
        for arguments in [["check", "-c", path], ["-c", path, "check"], ["--config", path, "check"]] {
            let result = try runCommand(Binaries.gatewayd, arguments)
            #expect(result.status == 0 && result.stdout == "\(path): ok\n", "\(arguments): \(result)")
        }
        // Without -c: the documented default, named in the error when it is not there.
        if !FileManager.default.fileExists(atPath: "/etc/gatewayd/gatewayd.yaml") {
            let result = try runCommand(Binaries.gatewayd, ["check"])
            #expect(result.status == 1)
            #expect(result.stderr.hasPrefix("/etc/gatewayd/gatewayd.yaml:1:1: error: cannot read"), "\(result.stderr)")
        }
        let help = try runCommand(Binaries.gatewayd, ["check", "--help"]).stdout
        #expect(help.contains("-c, --config <file>") && help.contains("/etc/gatewayd/gatewayd.yaml"), "\(help)")
    }

    @Test("check warns, on stderr, of a shadowed route and an unused upstream, and still exits 0")
    func checkWarnings() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("gatewayd.yaml")
        try """
        listeners:
          - { name: web, address: "127.0.0.1:0" }
        upstreams:
          api: { endpoints: ["127.0.0.1:9"] }
          legacy: { endpoints: ["127.0.0.1:9"] }
        routes:
          - name: api
            match: { path_prefix: /api/ }
            upstream: api
          - name: api-v2
            match: { path_prefix: /api/v2/, methods: [GET] }
            upstream: api
          - name: rest
            direct_response: { status: 404 }

        """.write(toFile: path, atomically: false, encoding: .utf8)
        let result = try runCommand(Binaries.gatewayd, ["check", "-c", path])
        #expect(result.status == 0)
        #expect(result.stdout == "\(path): ok\n")
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(
            lines == [
                "\(path):5:3: warning: upstreams.legacy: no route uses upstream 'legacy'",
                "\(path):10:11: warning: routes[1]: route 'api-v2' never matches: route 'api' (line 7) comes first "
                    + "and matches every request it would (first match wins)",
            ], "\(result.stderr)")
    }

    @Test("exit statuses: 64 for a usage error, 2 when gatewayd cannot be asked; --help lists them")
    func exitStatuses() throws {
        #expect(try runCommand(Binaries.gatewayd, ["check", "--no-such-option"]).status == 64)
        #expect(try runCommand(Binaries.gatewayctl, ["status", "--timeout", "soon"]).status == 64)
        #expect(try runCommand(Binaries.gatewayctl, ["--no-such-option", "status"]).status == 64)
        for binary in [Binaries.gatewayd, Binaries.gatewayctl] {
            let help = try runCommand(binary, ["--help"]).stdout
            #expect(help.contains("EXIT STATUS") && help.contains("  64  usage error"), "\(help)")
        }
        #expect(try runCommand(Binaries.gatewayctl, ["--help"]).stdout.contains("  2   gatewayd could not be asked"))

        let directory = try TemporaryDirectory()
        let missing = try runCommand(Binaries.gatewayctl, ["--socket", directory.file("none.sock"), "status"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains(directory.file("none.sock")), "\(missing.stderr)")
    }

    @Test("gatewayctl --timeout takes a duration: 250ms against a master that never answers")
    func timeoutDuration() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("silent.sock")
        // A socket that listens and never accepts: connect succeeds (the backlog), no answer comes.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8))
            raw[path.utf8.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0 && listen(fd, 8) == 0)
        let start = ContinuousClock.now
        let result = try runCommand(Binaries.gatewayctl, ["--timeout", "250ms", "--socket", path, "status"])
        let elapsed = ContinuousClock.now - start
        #expect(result.status == 2)
        #expect(result.stderr.contains("no answer within"), "\(result.stderr)")
        #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(5), "\(elapsed)")
    }

    @Test("shell completions come from the binaries, for bash, zsh and fish")
    func completions() throws {
        for shell in ["bash", "zsh", "fish"] {
            let ctl = try runCommand(Binaries.gatewayctl, ["--generate-completion-script", shell])
            // fish spells options `-l socket`, bash and zsh `--socket`.
            #expect(ctl.status == 0 && ctl.stdout.contains("reload") && ctl.stdout.contains("socket"), "\(shell)")
            let d = try runCommand(Binaries.gatewayd, ["--generate-completion-script", shell])
            #expect(d.status == 0 && d.stdout.contains("check") && d.stdout.contains("drain-timeout"), "\(shell)")
        }
    }
}

import Foundation
import Testing

/// `make install`/`uninstall` and `make package-deb`, with the binaries under test (BUILT). The
/// .deb is installed, run and purged inside a LiveSystemd, whose overlays take dpkg's database,
/// the package's files and the user it creates: the machine itself is left exactly as it was,
/// whatever fails, and no other session's gatewayd can meet it.
@Suite("Packaging", .serialized, .timeLimit(.minutes(4)))
struct PackagingTests {
    static let root = Binaries.packageRoot.path
    static let built = (Binaries.gatewayd as NSString).deletingLastPathComponent
    /// Tags lintian still reports on the .deb, each explained in docs/install.md#lintian.
    /// (`custom-library-search-path`: the test build's RUNPATH to the toolchain's Swift runtime,
    /// which a release build links in instead.)
    static let acceptedLintianTags: Set<String> = [
        "embedded-library", "initial-upload-closes-no-bugs", "custom-library-search-path",
    ]

    @discardableResult
    func make(_ arguments: [String]) throws -> CommandResult {
        let result = try runCommand(
            "/usr/bin/make", ["--no-print-directory", "-C", Self.root] + arguments + ["BUILT=\(Self.built)"],
            timeout: .seconds(180))
        guard result.status == 0 else {
            throw HarnessError("make \(arguments.joined(separator: " ")): \(result.stdout)\(result.stderr)")
        }
        return result
    }

    func files(under directory: String) -> [String] {
        (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] ?? []).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: directory + "/" + $0, isDirectory: &isDirectory)
                && !isDirectory.boolValue
        }.sorted()
    }

    @Test(
        "make install PREFIX= DESTDIR=: binaries, man pages, completions, units with the prefix's paths; make uninstall removes it all"
    )
    func installAndUninstall() throws {
        let directory = try TemporaryDirectory()
        let destination = directory.file("root")
        let options = ["DESTDIR=\(destination)", "PREFIX=/opt/gatewayd", "SERVICE_UNIT=gatewayd-debian12.service"]
        try make(["install"] + options)
        let installed = files(under: destination)
        #expect(
            installed == [
                "etc/gatewayd/gatewayd.yaml", "opt/gatewayd/bin/gatewayctl", "opt/gatewayd/bin/gatewayd",
                "opt/gatewayd/lib/systemd/system/gatewayd.service", "opt/gatewayd/lib/systemd/system/gatewayd.socket",
                "opt/gatewayd/share/bash-completion/completions/gatewayctl",
                "opt/gatewayd/share/bash-completion/completions/gatewayd",
                "opt/gatewayd/share/doc/gatewayd/README.md",
                "opt/gatewayd/share/doc/gatewayd/examples/demo-keys.txt",
                "opt/gatewayd/share/doc/gatewayd/examples/gateway-proxy.yaml",
                "opt/gatewayd/share/doc/gatewayd/examples/gateway.yaml",
                "opt/gatewayd/share/fish/vendor_completions.d/gatewayctl.fish",
                "opt/gatewayd/share/fish/vendor_completions.d/gatewayd.fish",
                "opt/gatewayd/share/man/man1/gatewayctl.1", "opt/gatewayd/share/man/man1/gatewayd.1",
                "opt/gatewayd/share/zsh/site-functions/_gatewayctl", "opt/gatewayd/share/zsh/site-functions/_gatewayd",
            ], "\(installed)")
        let unit = try String(
            contentsOfFile: destination + "/opt/gatewayd/lib/systemd/system/gatewayd.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/gatewayd/bin/gatewayd --config /etc/gatewayd/gatewayd.yaml"))
        #expect(unit.contains("ExecReload=/opt/gatewayd/bin/gatewayctl reload"))
        #expect(!unit.contains("/usr/local"))
        let manual = try String(
            contentsOfFile: destination + "/opt/gatewayd/share/man/man1/gatewayctl.1", encoding: .utf8)
        #expect(manual.contains(".Nm gatewayctl") && manual.contains("reload") && manual.contains("EXIT STATUS"))
        let check = try runCommand(
            destination + "/opt/gatewayd/bin/gatewayd", ["check", "-c", destination + "/etc/gatewayd/gatewayd.yaml"])
        #expect(check.status == 0, "\(check)")

        // An existing config is the operator's: install keeps it, uninstall leaves it.
        try "# mine\n".write(toFile: destination + "/etc/gatewayd/gatewayd.yaml", atomically: false, encoding: .utf8)
        try make(["install"] + options)
        try make(["uninstall"] + options)
        #expect(files(under: destination) == ["etc/gatewayd/gatewayd.yaml"])
        try FileManager.default.removeItem(atPath: destination + "/etc/gatewayd/gatewayd.yaml")
        try make(["install"] + options)
        try make(["uninstall"] + options)
        #expect(files(under: destination) == [])
    }

    @Test(
        "make package-deb: lintian, then installed in a live systemd: user made, nothing enabled, serves, purged",
        .enabled(if: LiveSystemd.isAvailable, "needs a live systemd (root, unshare) to install the package into"))
    func debianPackage() throws {
        let directory = try TemporaryDirectory()
        let output = try make(["package-deb", "DEB_DIR=\(directory.path)"]).stdout
        let deb = try #require(output.split(separator: "\n").last.map(String.init), "\(output)")
        #expect(deb.hasPrefix(directory.path + "/gatewayd_") && deb.hasSuffix(".deb"), "\(output)")

        let lintian = try runCommand("/usr/bin/lintian", ["--no-tag-display-limit", deb], timeout: .seconds(180))
        let tags = lintian.stdout.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("E: ") || line.hasPrefix("W: ") else { return nil }
            return line.split(separator: " ").dropFirst(2).first.map(String.init)
        }
        print("PackagingTests.debianPackage: lintian: \(lintian.stdout.isEmpty ? "clean" : lintian.stdout)")
        #expect(Set(tags).isSubset(of: Self.acceptedLintianTags), "\(lintian.stdout)")

        let systemd = try LiveSystemd()
        defer { systemd.shutdown() }
        try systemd.copy(deb, to: "/tmp/gatewayd.deb", mode: 0o644)
        let install = try systemd.inside(["/usr/bin/dpkg", "-i", "/tmp/gatewayd.deb"], timeout: .seconds(120))
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        #expect(try systemd.inside(["/usr/bin/getent", "passwd", "gatewayd"]).status == 0)
        #expect(
            try systemd.systemctl(["is-enabled", "gatewayd.service", "gatewayd.socket"], check: false).stdout
                == "disabled\ndisabled\n")
        #expect(try systemd.property("ActiveState", of: "gatewayd.service") == "inactive")
        let version = try systemd.inside(["/usr/bin/gatewayd", "--version"]).stdout
        #expect(version == (try runCommand(Binaries.gatewayd, ["--version"]).stdout))
        for file in [
            "/usr/share/man/man1/gatewayd.1.gz", "/usr/share/man/man1/gatewayctl.1.gz",
            "/usr/share/bash-completion/completions/gatewayctl", "/usr/share/doc/gatewayd/copyright",
            "/lib/systemd/system/gatewayd.service", "/etc/gatewayd/gatewayd.yaml",
        ] {
            #expect(FileManager.default.fileExists(atPath: systemd.path(file)), "\(file)")
        }

        // Run it as installed, on a free port instead of the example's 8080.
        let port = try freePort()
        let config = try #require(systemd.read("/etc/gatewayd/gatewayd.yaml"))
        try systemd.write(
            config.replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(port)"),
            to: "/etc/gatewayd/gatewayd.yaml")
        try systemd.install(units: [
            "gatewayd.socket.d/port.conf": "[Socket]\nListenStream=\nListenStream=127.0.0.1:\(port)\n"
        ])
        try systemd.systemctl(["start", "gatewayd.socket", "gatewayd.service"])
        #expect(try httpGet(port: port).body == "hello from gatewayd\n")
        try systemd.systemctl(["stop", "gatewayd.socket", "gatewayd.service"])

        let purge = try systemd.inside(["/usr/bin/dpkg", "--purge", "gatewayd"], timeout: .seconds(120))
        #expect(purge.status == 0, "\(purge.stdout)\(purge.stderr)")
        for file in ["/usr/bin/gatewayd", "/lib/systemd/system/gatewayd.service", "/etc/gatewayd", "/var/log/gatewayd"]
        {
            #expect(!FileManager.default.fileExists(atPath: systemd.path(file)), "\(file) after purge")
        }
        // And the machine never saw any of it.
        #expect(!FileManager.default.fileExists(atPath: "/usr/bin/gatewayd"))
    }
}

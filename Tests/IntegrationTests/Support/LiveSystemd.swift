import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real systemd (the machine's, 252 on Debian 12) booted as PID 1 of private namespaces by
/// Support/live-systemd.sh, for tests that run units as an operator would: `systemctl start`,
/// `reload`, `restart`, the watchdog, socket activation, the fd store, packages.
///
/// The script alone decides what is private (read its header): /tmp, /var/tmp and /run are
/// fresh tmpfs mounts made before systemd starts (without them systemd's boot-time tmpfiles run
/// would empty the machine's /tmp); /etc, /usr, /var/lib, /var/log and /var/cache are overlays
/// whose writes vanish with the instance; the cgroups are the instance's own. So nothing a test
/// installs, creates or logs here reaches the machine, and instances of several test runs at
/// once do not meet. The network is shared: units listen on 127.0.0.1 ports the test reaches
/// directly. There is no other way to start one than `init`, so no caller can forget a mount.
///
/// Every instance is killed by `shutdown()` (or at deinit): SIGKILL to unshare, whose
/// --kill-child takes systemd and with it the whole PID namespace.
final class LiveSystemd {
    static let script = Binaries.packageRoot.appendingPathComponent("Tests/IntegrationTests/Support/live-systemd.sh")
        .path
    static let systemd = "/lib/systemd/systemd"

    /// Why a live systemd cannot run here (not root, no systemd, unshare refused: an
    /// unprivileged container), or nil when it can. Decided once, by trying the namespaces.
    static let unavailableReason: String? = {
        guard getuid() == 0 else { return "needs root (to create namespaces and mount)" }
        guard FileManager.default.isExecutableFile(atPath: systemd) else { return "no \(systemd)" }
        let probe = try? runCommand(
            "/usr/bin/unshare",
            ["--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup", "--mount-proc", "--kill-child", "/bin/true"],
            timeout: .seconds(10))
        guard let probe, probe.status == 0 else {
            return "unshare --pid --mount --cgroup is not allowed here: \(probe?.stderr ?? "did not run")"
        }
        return nil
    }()
    static var isAvailable: Bool {
        if let reason = unavailableReason { print("LiveSystemd: skipped, \(reason)") }
        return unavailableReason == nil
    }

    /// Unique among concurrent instances (it names their cgroups): our pid and a counter.
    let id: String
    /// systemd's pid as this process sees it (PID 1 inside).
    private(set) var pid: Int32 = 0
    private let launcher: Process
    private let logDirectory: TemporaryDirectory
    private var isShutDown = false
    nonisolated(unsafe) private static var count = 0
    private static let countLock = NSLock()

    /// Boots systemd up to basic.target and waits until it says it is running.
    init(timeout: Duration = .seconds(60)) throws {
        if let reason = Self.unavailableReason { throw HarnessError("no live systemd: \(reason)") }
        let number = Self.countLock.withLock {
            Self.count += 1
            return Self.count
        }
        id = "\(getpid())-\(number)"
        logDirectory = try TemporaryDirectory()
        launcher = Process()
        launcher.executableURL = URL(fileURLWithPath: Self.script)
        launcher.arguments = [id]
        guard FileManager.default.createFile(atPath: logDirectory.file("boot.log"), contents: nil) else {
            throw HarnessError("cannot create \(logDirectory.file("boot.log"))")
        }
        let log = FileHandle(forWritingAtPath: logDirectory.file("boot.log"))
        launcher.standardOutput = log
        launcher.standardError = log
        launcher.standardInput = FileHandle.nullDevice
        try launcher.run()
        do {
            let deadline = ContinuousClock.now + timeout
            try waitUntil("systemd to start under \(Self.script) (\(bootLog))", timeout: timeout) {
                guard launcher.isRunning else { throw HarnessError("live-systemd.sh exited: \(bootLog)") }
                guard let child = childPids(of: launcher.processIdentifier).first,
                    (try? String(contentsOfFile: "/proc/\(child)/comm", encoding: .utf8)) == "systemd\n"
                else { return false }
                pid = child
                return true
            }
            try verifyPrivateMounts()
            // systemctl talks to PID 1 on its private socket, there once the manager is up.
            try waitUntil("systemd's control socket", timeout: timeout) {
                FileManager.default.fileExists(atPath: path("/run/systemd/private"))
            }
            let remaining = max(deadline - ContinuousClock.now, .seconds(5))
            let state = try inside(["/bin/systemctl", "is-system-running", "--wait"], timeout: remaining)
            guard ["running", "degraded"].contains(state.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            else {
                throw HarnessError("systemd did not finish booting: \(state.stdout) \(state.stderr) \(bootLog)")
            }
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    private var bootLog: String { readWholeFile(logDirectory.file("boot.log")) }

    /// The script's own checks stop it before systemd starts if a mount failed; this checks again
    /// from outside, on the running instance: /tmp, /var/tmp and /run must be other file systems
    /// than the machine's. If not, the instance is killed at once.
    private func verifyPrivateMounts() throws {
        for path in ["/tmp", "/var/tmp", "/run"] {
            var inside = stat()
            var outside = stat()
            guard stat("/proc/\(pid)/root\(path)", &inside) == 0, stat(path, &outside) == 0,
                inside.st_dev != outside.st_dev
            else {
                shutdown()
                throw HarnessError("live systemd's \(path) is not a private mount: killed it")
            }
        }
    }

    /// Runs a command inside the instance's PID and mount namespaces (as root).
    @discardableResult
    func inside(_ arguments: [String], timeout: Duration = .seconds(60)) throws -> CommandResult {
        try runCommand(
            "/usr/bin/nsenter", ["--target", "\(pid)", "--pid", "--mount", "--uts", "--ipc", "--"] + arguments,
            timeout: timeout)
    }

    /// `systemctl ARGS` inside; throws with its output when it fails, unless `check` is false.
    @discardableResult
    func systemctl(_ arguments: [String], check: Bool = true, timeout: Duration = .seconds(60)) throws
        -> CommandResult
    {
        let result = try inside(["/bin/systemctl", "--no-pager"] + arguments, timeout: timeout)
        if check, result.status != 0 {
            throw HarnessError(
                "systemctl \(arguments.joined(separator: " ")) exited \(result.status): \(result.stdout)\(result.stderr)"
            )
        }
        return result
    }

    /// A path of the instance's file system, as this process can open it.
    func path(_ path: String) -> String { "/proc/\(pid)/root\(path)" }

    /// Writes a file inside (its directory is created): lands in the instance's overlays.
    func write(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        let outside = self.path(path)
        try FileManager.default.createDirectory(
            atPath: (outside as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: outside, atomically: false, encoding: .utf8)
        chmod(outside, mode)
    }

    /// Copies a file of the machine into the instance.
    func copy(_ source: String, to path: String, mode: mode_t = 0o755) throws {
        let outside = self.path(path)
        try FileManager.default.createDirectory(
            atPath: (outside as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: outside)
        try FileManager.default.copyItem(atPath: source, toPath: outside)
        chmod(outside, mode)
    }

    func read(_ path: String) -> String? { try? String(contentsOfFile: self.path(path), encoding: .utf8) }

    /// Unit files into /etc/systemd/system, then daemon-reload.
    func install(units: [String: String]) throws {
        for (name, text) in units { try write(text, to: "/etc/systemd/system/\(name)") }
        try systemctl(["daemon-reload"])
    }

    /// A system user and its group, as a package's postinst makes one.
    func addSystemUser(_ name: String) throws {
        let result = try inside([
            "/usr/sbin/useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", name,
        ])
        guard result.status == 0 else { throw HarnessError("useradd \(name): \(result.stderr)") }
    }

    /// A unit's property (`systemctl show -p NAME --value`).
    func property(_ name: String, of unit: String) throws -> String {
        try systemctl(["show", "-p", name, "--value", unit]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The unit's main process, as the instance numbers it (0 when there is none).
    func mainPID(_ unit: String) throws -> Int32 { Int32(try property("MainPID", of: unit)) ?? 0 }

    /// The unit's journal, for failure messages and checks of what was logged.
    func journal(_ unit: String) -> String {
        (try? inside(["/bin/journalctl", "--no-pager", "-o", "cat", "-u", unit], timeout: .seconds(20)).stdout) ?? ""
    }

    /// Kills the instance and everything in it, waits for it to be gone and removes its cgroups.
    func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        if launcher.isRunning { kill(launcher.processIdentifier, SIGKILL) }
        launcher.waitUntilExit()
        if pid > 0 {
            // systemd itself was SIGKILLed by unshare's --kill-child; its namespace dies with it.
            _ = try? waitUntil("live systemd \(pid) to be gone", timeout: .seconds(20)) {
                (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) != "systemd\n"
            }
        }
        // The cgroups empty as the kernel reaps the namespace's processes: retry until they go.
        _ = try? waitUntil("live systemd's cgroups to be removed", timeout: .seconds(20)) {
            _ = try? runCommand(Self.script, [id, "--cleanup"], timeout: .seconds(10))
            return
                (try? runCommand(
                    "/usr/bin/find", ["/sys/fs/cgroup", "-type", "d", "-path", "*/live-systemd-\(id)*"],
                    timeout: .seconds(10)
                ).stdout.isEmpty) ?? true
        }
    }
}

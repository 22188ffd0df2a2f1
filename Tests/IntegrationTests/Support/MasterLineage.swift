import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// Every master of one gatewayd across upgrades: the one the test started, and each that took
/// over, learnt from `status`. A new master is its old master's child, and once that one has
/// exited nobody the test can wait(2) for: `stop()` (and deinit) stops each that still runs,
/// then kills what is left of its children, so that no process outlives the test.
final class MasterLineage: @unchecked Sendable {
    let gatewayd: GatewaydProcess
    private let seen: Mutex2<[Int32]>

    init(_ gatewayd: GatewaydProcess) {
        self.gatewayd = gatewayd
        seen = Mutex2([gatewayd.pid])
    }

    var masters: [Int32] { seen.get() }

    private func remember(_ pid: Int32) {
        seen.update { if !$0.contains(pid) { $0.append(pid) } }
    }

    deinit { stop() }

    /// The master that answers the control socket now.
    func current() throws -> Int32 {
        let pid = try gatewayd.status().masterPid
        remember(pid)
        return pid
    }

    /// `gatewayctl upgrade` with `arguments`; the new master, when it took over, is remembered.
    func upgrade(_ arguments: [String] = [], timeout: Duration = .seconds(60)) throws -> CommandResult {
        let result = try gatewayd.gatewayctl(["upgrade"] + arguments, timeout: timeout)
        if let pid = Self.upgradedPid(result.stdout) { remember(pid) }
        return result
    }

    /// The pid in `upgraded: master pid N (…)`.
    static func upgradedPid(_ output: String) -> Int32? {
        guard let range = output.range(of: "master pid ") else { return nil }
        return Int32(output[range.upperBound...].prefix { $0.isNumber })
    }

    /// The pid a failed upgrade's reason names: `the new master (pid N, …)`.
    static func failedPid(_ output: String) -> Int32? {
        guard let range = output.range(of: "(pid ") else { return nil }
        return Int32(output[range.upperBound...].prefix { $0.isNumber })
    }

    func stop() {
        for master in masters.reversed() where master != gatewayd.pid {
            let children = childPids(of: master)
            if isProcessRunning(master) {
                kill(master, SIGTERM)
                let deadline = ContinuousClock.now + .seconds(10)
                while isProcessRunning(master) && ContinuousClock.now < deadline { usleep(5_000) }
                if isProcessRunning(master) { kill(master, SIGKILL) }
            }
            for child in children where isProcessRunning(child) { kill(child, SIGKILL) }
        }
        gatewayd.stop()
    }
}

/// The socket an fd of a process is, as /proc names it (`socket:[INODE]`): the same string in
/// two processes is the same socket.
func socketIdentity(pid: Int32, fd: Int32) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")
}

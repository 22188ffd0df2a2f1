import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The master's shared segment seen from outside, as root can: through /proc/PID/fd.
@Suite("Shared state", .serialized, .timeLimit(.minutes(3)))
struct SharedStateTests {
    @Test("workers of generation 2 add to the counter generation 1 wrote, in the master's one segment")
    func countersCarryOverReloads() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 2))
        let (segment, inode) = try masterSegment(pid: gatewayd.pid)
        // Each worker counts its handoff (WorkerProcess.attachSharedState) before it is ready.
        #expect(handoffs(in: segment) == 2)
        let result = try gatewayd.reload()
        #expect(result.status == 0, "\(result.stderr)")
        try waitUntil("generation 2's workers to count their handoff", timeout: .seconds(10)) {
            handoffs(in: segment) == 4
        }
        // The same segment after the reload: same fd inode in the master, mapped by each new
        // worker, whose own copy of the fd is closed (the mapping stays).
        #expect(try masterSegment(pid: gatewayd.pid).inode == inode)
        let workers = try gatewayd.status().generations.filter { $0.id == 2 }.flatMap(\.workers).map(\.pid)
        #expect(workers.count == 2)
        for pid in workers {
            let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
            let mapped = maps.split(separator: "\n").filter { $0.contains("/memfd:\(SharedMemory.memfdName)") }
            #expect(!mapped.isEmpty && mapped.allSatisfy { $0.split(separator: " ")[4] == "\(inode)" }, "\(mapped)")
            #expect(memfdDescriptors(pid: pid).isEmpty, "worker \(pid) kept its copy of the memfd")
        }
    }

    @Test("an upgrade hands the new master the very segment: the counters carry on")
    func countersCarryOverUpgrades() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", workers: 2))
        let lineage = MasterLineage(gatewayd)
        defer { lineage.stop() }
        let (segment, inode) = try masterSegment(pid: gatewayd.pid)
        #expect(handoffs(in: segment) == 2)
        let upgrade = try lineage.upgrade()
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        let newMaster = try #require(MasterLineage.upgradedPid(upgrade.stdout))
        #expect(try masterSegment(pid: newMaster).inode == inode)
        // The new master's workers count their handoffs in it, after the old ones'.
        try waitUntil("the new master's workers to count their handoff", timeout: .seconds(10)) {
            handoffs(in: segment) == 4
        }
    }
}

/// The master's shared segment, mapped here, and the memfd's inode.
private func masterSegment(pid: Int32) throws -> (memory: SharedMemory, inode: UInt64) {
    let fds = memfdDescriptors(pid: pid)
    guard fds.count == 1, let fd = fds.first else { throw HarnessError("master memfds: \(fds)") }
    let opened = open("/proc/\(pid)/fd/\(fd)", O_RDWR | O_CLOEXEC)
    guard opened >= 0 else { throw HarnessError("open /proc/\(pid)/fd/\(fd): \(errno)") }
    defer { closeDescriptor(opened) }
    var info = stat()
    guard fstat(opened, &info) == 0 else { throw HarnessError("fstat: \(errno)") }
    // What a worker is told in its handoff, read here from the header the master wrote (the
    // test trusts it; workers never read it).
    var words = [UInt64](repeating: 0, count: 9)
    guard pread(opened, &words, 72, 0) == 72 else { throw HarnessError("pread: \(errno)") }
    let handoff = SharedMemory.Handoff(
        size: Int(info.st_size), layout: .init(rateSlots: Int(words[6]), metricSlots: Int(words[8])),
        seed: (words[4], words[5]))
    return (try SharedMemory.map(descriptor: opened, handoff: handoff), UInt64(info.st_ino))
}

/// The fds of a process that are the gateway's memfd.
private func memfdDescriptors(pid: Int32) -> [Int] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
    return entries.compactMap { entry in
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(entry)")) ?? ""
        return target.hasPrefix("/memfd:\(SharedMemory.memfdName)") ? Int(entry) : nil
    }
}

private func handoffs(in segment: SharedMemory) -> UInt64? {
    segment.metricTable.entries(reclaimingDeadOwners: false)
        .first { $0.series == .init(kind: .counter, name: "gatewayd_worker_handoffs_total") }?.value
}

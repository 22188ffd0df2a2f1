import CGatewayShim
import Foundation
import Synchronization
import Testing

@testable import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// Small tables, so that full-table behaviour is a few slots away.
private let small = SharedMemory.Layout(rateSlots: 8, metricSlots: 4)
private let second: UInt64 = 1_000_000_000
/// A CLOCK_MONOTONIC-like start far from 0 (0 is an empty slot's TAT).
private let t0: UInt64 = 1_000 * second

/// A second, independent mapping of the same memfd: what another process sees.
private func secondMapping(of memory: SharedMemory) throws -> SharedMemory {
    try SharedMemory.map(descriptor: try #require(memory.descriptor), handoff: memory.handoff)
}

@Suite("Shared memory segment", .timeLimit(.minutes(1)))
struct SharedMemoryTests {
    @Test("SipHash-2-4 matches the reference vectors (key 00..0f, message 00..)")
    func sipHashVectors() {
        let key0 = UInt64(0x0706_0504_0302_0100)
        let key1 = UInt64(0x0f0e_0d0c_0b0a_0908)
        func hash(_ length: Int) -> UInt64 {
            var hasher = SipHasher24(key0: key0, key1: key1)
            hasher.combine(bytes: (0..<length).map { UInt8($0) })
            return hasher.finalize()
        }
        #expect(hash(0) == 0x726f_db47_dd0e_0e31)
        #expect(hash(1) == 0x74f8_39c5_93dc_67fd)
        #expect(hash(8) == 0x93f5_f579_9a93_2462)
        #expect(hash(15) == 0xa129_ca61_49be_45e5)
    }

    @Test("a new segment has a valid header, a random seed, and is sealed against resizing")
    func header() throws {
        let a = try SharedMemory.create(layout: small)
        let b = try SharedMemory.create(layout: small)
        #expect(a.size == 4096 + 8 * 16 + 4 * 256)
        #expect(a.creatorPid == getpid())
        #expect(a.hashSeed != b.hashSeed, "two segments share a hash seed")
        #expect(a.hashSeed.0 != 0 || a.hashSeed.1 != 0)
        let fd = try #require(a.descriptor)
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
        #expect(ftruncate(fd, 0) == -1 && errno == EPERM, "a holder of the fd could shrink the segment")
    }

    @Test("mapping checks the handoff's version and layout against the fd's size, naming what is wrong")
    func handoffValidation() throws {
        func expectMapError(
            _ kind: SharedMemoryError.Kind, fd: CInt, handoff: SharedMemory.Handoff, mentioning text: String
        ) {
            do {
                _ = try SharedMemory.map(descriptor: fd, handoff: handoff)
                Issue.record("mapped with a bad handoff (expected \(kind))")
            } catch {
                #expect(error.kind == kind, "\(error)")
                #expect(error.description.contains(text), "\(error)")
            }
        }
        let memory = try SharedMemory.create(layout: small)
        let fd = try #require(memory.descriptor)
        var handoff = memory.handoff
        handoff.layoutVersion = 99
        expectMapError(.unsupportedVersion, fd: fd, handoff: handoff, mentioning: "layout version 99")
        handoff = memory.handoff
        handoff.layout.rateSlots = 7
        expectMapError(.invalidLayout, fd: fd, handoff: handoff, mentioning: "does not make")
        handoff = memory.handoff
        handoff.size += 4096
        expectMapError(.invalidLayout, fd: fd, handoff: handoff, mentioning: "does not make")
        // A layout that makes its size, on an fd of another size.
        let other = gw_memfd_create("other-size")
        defer { closeDescriptor(other) }
        #expect(ftruncate(other, 8192) == 0)
        expectMapError(.sizeMismatch, fd: other, handoff: memory.handoff, mentioning: "announced")
    }

    @Test("a header rewritten by a worker changes nothing for one mapped later: layout and seed come from the handoff")
    func rewrittenHeaderIsIgnored() throws {
        let memory = try SharedMemory.create(layout: small)
        let first = try secondMapping(of: memory)
        #expect(first.rateLimiter.admit(route: "r", key: "k", rate: 1, burst: 1, now: t0) == .allowed)
        // What a hostile worker writes: no magic, slot counts and table offsets that would send
        // a later mapping past its end, a seed of its choosing.
        for (offset, value) in [
            (SharedMemory.HeaderOffset.magic, 0), (SharedMemory.HeaderOffset.version, 99),
            (SharedMemory.HeaderOffset.totalSize, 1 << 40), (SharedMemory.HeaderOffset.seed0, 0),
            (SharedMemory.HeaderOffset.seed1, 0), (SharedMemory.HeaderOffset.rateSlots, 1 << 26),
            (SharedMemory.HeaderOffset.rateTable, 1 << 40), (SharedMemory.HeaderOffset.metricSlots, 1 << 22),
            (SharedMemory.HeaderOffset.metricTable, 1 << 40),
        ] as [(Int, UInt64)] {
            memory.headerWord(offset).pointee = value
        }
        let later = try secondMapping(of: memory)
        #expect(later.layout == small)
        #expect(later.hashSeed == memory.hashSeed)
        // The same bucket, found with the same seed in the same table: the key has no token left.
        #expect(later.rateLimiter.admit(route: "r", key: "k", rate: 1, burst: 1, now: t0) != .allowed)
    }

    @Test("a failed call is named in the error")
    func systemErrorNamesTheCall() throws {
        let memory = try SharedMemory.create(layout: small)
        // The same memfd opened read-only: fstat agrees on the size, mmap for writing refuses.
        let readOnly = open("/proc/self/fd/\(try #require(memory.descriptor))", O_RDONLY | O_CLOEXEC)
        try #require(readOnly >= 0)
        defer { closeDescriptor(readOnly) }
        do {
            _ = try SharedMemory.map(descriptor: readOnly, handoff: memory.handoff)
            Issue.record("mapped a read-only fd for writing")
        } catch {
            #expect(error.kind == .system)
            #expect(error.systemCallError?.call == "mmap")
            #expect(error.description.hasPrefix("mmap shared memory fd \(readOnly)"), "\(error)")
        }
    }
}

@Suite("Shared rate limiter (GCRA)", .timeLimit(.minutes(1)))
struct SharedRateLimiterTests {
    @Test("admits exactly burst at once, then one per emission interval; Retry-After rounds up")
    func burstThenRate() throws {
        let limiter = try SharedMemory.create(layout: small).rateLimiter
        // 10/s: one every 100 ms; burst 5.
        func admit(_ now: UInt64) -> RateDecision {
            limiter.admit(route: "api", key: "client-a", rate: 10, burst: 5, now: now)
        }
        for _ in 0..<5 { #expect(admit(t0) == .allowed) }
        #expect(admit(t0) == .denied(retryAfterSeconds: 1))
        #expect(admit(t0 + 99_000_000) == .denied(retryAfterSeconds: 1))
        #expect(admit(t0 + 100_000_000) == .allowed)
        #expect(admit(t0 + 100_000_000) == .denied(retryAfterSeconds: 1))
        // A long pause refills to burst, not beyond.
        let later = t0 + 60 * second
        for _ in 0..<5 { #expect(admit(later) == .allowed) }
        #expect(admit(later) != .allowed)
        // Another key and another route have buckets of their own.
        #expect(limiter.admit(route: "api", key: "client-b", rate: 10, burst: 5, now: later) == .allowed)
        #expect(limiter.admit(route: "web", key: "client-a", rate: 10, burst: 5, now: later) == .allowed)
    }

    @Test("Retry-After is the wait in whole seconds, rounded up, at least 1")
    func retryAfter() throws {
        let limiter = try SharedMemory.create(layout: small).rateLimiter
        // One every 10 s, burst 1.
        #expect(limiter.admit(route: "r", key: "k", rate: 0.1, burst: 1, now: t0) == .allowed)
        #expect(limiter.admit(route: "r", key: "k", rate: 0.1, burst: 1, now: t0) == .denied(retryAfterSeconds: 10))
        #expect(
            limiter.admit(route: "r", key: "k", rate: 0.1, burst: 1, now: t0 + 9_500_000_000)
                == .denied(retryAfterSeconds: 1))
        #expect(
            limiter.admit(route: "r", key: "k", rate: 0.1, burst: 1, now: t0 + 1_500_000_000)
                == .denied(retryAfterSeconds: 9))
        #expect(limiter.admit(route: "r", key: "k", rate: 0.1, burst: 1, now: t0 + 10 * second) == .allowed)
        // Nonsense limits admit nothing.
        #expect(limiter.admit(route: "r", key: "z", rate: 0, burst: 1, now: t0) == .denied(retryAfterSeconds: 1))
        #expect(limiter.admit(route: "r", key: "z", rate: 1, burst: 0, now: t0) == .denied(retryAfterSeconds: 1))
    }

    @Test("two mappings of the same memfd (two processes) share one bucket")
    func sharedAcrossMappings() throws {
        let master = try SharedMemory.create(layout: small)
        let worker1 = try secondMapping(of: master)
        let worker2 = try secondMapping(of: master)
        for _ in 0..<3 {
            #expect(worker1.rateLimiter.admit(route: "r", key: "k", rate: 1, burst: 6, now: t0) == .allowed)
            #expect(worker2.rateLimiter.admit(route: "r", key: "k", rate: 1, burst: 6, now: t0) == .allowed)
        }
        #expect(worker1.rateLimiter.admit(route: "r", key: "k", rate: 1, burst: 6, now: t0) != .allowed)
        #expect(worker2.rateLimiter.admit(route: "r", key: "k", rate: 1, burst: 6, now: t0) != .allowed)
    }

    @Test("4 threads on one key through 2 mappings admit exactly burst: no lost update")
    func noLostUpdates() throws {
        let master = try SharedMemory.create()
        let mappings = [master, try secondMapping(of: master)]
        let allowed = Mutex(0)
        let burst = 20_000
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            let limiter = mappings[thread % 2].rateLimiter
            var mine = 0
            for _ in 0..<10_000 {
                // A fixed `now`: nothing refills, so exactly `burst` of the 40 000 may pass.
                if limiter.admit(route: "hot", key: "one-key", rate: 1, burst: burst, now: t0) == .allowed {
                    mine += 1
                }
            }
            allowed.withLock { $0 += mine }
        }
        #expect(allowed.withLock { $0 } == burst)
    }

    @Test("a slot whose bucket is full again is taken over by a new key, without eviction")
    func reclaimsExpiredSlots() throws {
        let memory = try SharedMemory.create(layout: small)
        let limiter = memory.rateLimiter
        // 8 keys fill the 8 slots (all probed from any start), each with one request: live for 1 s.
        for i in 0..<8 {
            #expect(limiter.admit(route: "r", key: "k\(i)", rate: 1, burst: 2, now: t0) == .allowed)
        }
        // 2 s later all are expired: a ninth key takes a slot over and gets its full burst.
        let later = t0 + 2 * second
        #expect(limiter.admit(route: "r", key: "new", rate: 1, burst: 2, now: later) == .allowed)
        #expect(limiter.admit(route: "r", key: "new", rate: 1, burst: 2, now: later) == .allowed)
        #expect(limiter.admit(route: "r", key: "new", rate: 1, burst: 2, now: later) != .allowed)
        #expect(memory.rateEvictions == 0)
        // The keys whose slots were kept or reclaimed still behave as fresh buckets.
        #expect(limiter.admit(route: "r", key: "k3", rate: 1, burst: 2, now: later) == .allowed)
    }

    @Test("table full of live buckets: the one closest to full is evicted, the new key admitted, counted")
    func fullTable() throws {
        let memory = try SharedMemory.create(layout: small)
        let limiter = memory.rateLimiter
        // 8 live keys; k0 is the least indebted (1 request), the others spent 3 of 4.
        #expect(limiter.admit(route: "r", key: "k0", rate: 1, burst: 4, now: t0) == .allowed)
        for i in 1..<8 {
            for _ in 0..<3 { #expect(limiter.admit(route: "r", key: "k\(i)", rate: 1, burst: 4, now: t0) == .allowed) }
        }
        for _ in 0..<4 {
            #expect(limiter.admit(route: "r", key: "newcomer", rate: 1, burst: 4, now: t0) == .allowed)
        }
        #expect(limiter.admit(route: "r", key: "newcomer", rate: 1, burst: 4, now: t0) != .allowed)
        #expect(memory.rateEvictions == 1)
        // The heavy users kept their state: one more each, then denied.
        for i in 1..<8 {
            #expect(limiter.admit(route: "r", key: "k\(i)", rate: 1, burst: 4, now: t0) == .allowed)
            #expect(limiter.admit(route: "r", key: "k\(i)", rate: 1, burst: 4, now: t0) != .allowed)
        }
    }

    @Test("the table stores hashes only, never the key's bytes")
    func keysAreNotStored() throws {
        let memory = try SharedMemory.create(layout: small)
        let secret = "sk_live_0123456789abcdef"
        _ = memory.rateLimiter.admit(route: "r", key: secret, rate: 1, burst: 1, now: t0)
        let bytes = UnsafeRawBufferPointer(start: memory.base, count: memory.size)
        let needle = Array(secret.utf8.prefix(8))
        let found = (0...(bytes.count - needle.count)).contains { i in
            bytes[i] == needle[0] && Array(bytes[i..<(i + needle.count)]) == needle
        }
        #expect(!found)
    }
}

@Suite("Shared metric table", .timeLimit(.minutes(1)))
struct SharedMetricTableTests {
    private let requests = SharedMetricTable.Series(
        kind: .counter, name: "requests_total", labels: [.init("route", "api"), .init("status", "200")])

    @Test("two mappings see one counter; 4 threads adding lose nothing")
    func sharedCounter() throws {
        let master = try SharedMemory.create()
        let mappings = [master, try secondMapping(of: master)]
        let series = requests
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            let slot = mappings[thread % 2].metricTable.slot(for: series)!
            for _ in 0..<100_000 { slot.add(1) }
        }
        #expect(master.metricTable.slot(for: series)?.load() == 400_000)
        let entries = mappings[1].metricTable.entries()
        #expect(entries.count == 1)
        #expect(entries.first?.series == series)
        #expect(entries.first?.value == 400_000)
    }

    @Test("concurrent first use of one series from 4 threads allocates one slot")
    func concurrentAllocation() throws {
        let master = try SharedMemory.create()
        let mappings = [master, try secondMapping(of: master)]
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for i in 0..<200 {
                let series = SharedMetricTable.Series(kind: .counter, name: "c\(i)")
                mappings[thread % 2].metricTable.slot(for: series)!.add(1)
            }
        }
        let entries = master.metricTable.entries()
        #expect(entries.count == 200)
        #expect(entries.allSatisfy { $0.value == 4 })
    }

    @Test("counters survive a reload: a new mapping of the same fd finds the same slot and value")
    func survivesReload() throws {
        let master = try SharedMemory.create()
        do {
            let generation1 = try secondMapping(of: master)
            generation1.metricTable.slot(for: requests)!.add(41)
        }  // generation 1's mapping is gone
        let generation2 = try secondMapping(of: master)
        let slot = try #require(generation2.metricTable.slot(for: requests))
        #expect(slot.load() == 41)
        slot.add(1)
        #expect(master.metricTable.entries().first?.value == 42)
    }

    @Test("table full or text too long: no slot, the overflow counter goes up, nothing crashes")
    func tableFull() throws {
        let memory = try SharedMemory.create(layout: small)
        for i in 0..<4 {
            #expect(memory.metricTable.slot(for: .init(kind: .counter, name: "c\(i)")) != nil)
        }
        #expect(memory.metricTable.slot(for: .init(kind: .counter, name: "one_too_many")) == nil)
        #expect(memory.metricOverflows == 1)
        // Existing series are still found.
        #expect(memory.metricTable.slot(for: .init(kind: .counter, name: "c2")) != nil)
        let long = String(repeating: "x", count: SharedMetricTable.textCapacity)
        #expect(memory.metricTable.slot(for: .init(kind: .counter, name: long)) == nil)
        #expect(memory.metricOverflows == 2)
    }

    @Test("a gauge of a process that exited is not read, and its slot is reused")
    func deadOwnerGauge() throws {
        let memory = try SharedMemory.create(layout: small)
        let child = try spawnAndReap("/bin/true")
        let dead = ProcessIdentity(pid: child, startTime: 1)
        #expect(!dead.isAlive)
        #expect(ProcessIdentity.current.isAlive)
        // Same pid, another start time: a stranger that got the pid, not us.
        #expect(!ProcessIdentity(pid: getpid(), startTime: ProcessIdentity.current.startTime + 1).isAlive)

        let table = memory.metricTable
        let gauge = { (owner: ProcessIdentity) in
            SharedMetricTable.Series(kind: .gauge, name: "open_connections", owner: owner)
        }
        table.slot(for: gauge(dead))!.storeDouble(7)
        table.slot(for: gauge(.current))!.storeDouble(3)
        table.slot(for: .init(kind: .counter, name: "a"))!.add(1)
        table.slot(for: .init(kind: .counter, name: "b"))!.add(1)
        // Full now; the dead owner's slot is read as absent and becomes free.
        #expect(table.slot(for: .init(kind: .counter, name: "c")) == nil)
        let gauges = table.entries().filter { $0.series.kind == .gauge }
        #expect(gauges.map(\.doubleValue) == [3])
        #expect(table.slot(for: .init(kind: .counter, name: "c")) != nil)
        // Our own gauge kept its slot and value.
        #expect(table.slot(for: gauge(.current))?.loadDouble() == 3)
    }
}

/// posix_spawn and waitpid: a pid that certainly no longer runs.
private func spawnAndReap(_ path: String) throws -> pid_t {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
    defer { free(argv[0]) }
    let rc = gw_spawn_with_output(&pid, path, argv, environ, "/dev/null")
    try #require(rc == 0)
    _ = try waitForExit(pid: pid)
    return pid
}

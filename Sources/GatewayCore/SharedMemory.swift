// The gateway-wide shared segment: one memfd that the master creates at start-up and keeps for
// its whole life, mapped MAP_SHARED by every worker of every generation. What lives in it
// (rate-limit buckets, metric counters) is therefore gateway-wide, the same for every worker,
// and carries on across reloads: a new generation maps the same pages the old one wrote.
//
// Layout, version 1 (native byte order; every word is 8 bytes and 8-byte aligned):
//
//   offset 0       header, one page (4096 bytes), written by the master at creation for people
//                  and tools (a hexdump says what the memfd is); no process reads it back but
//                  for the two counters, since any worker can write it:
//                    0 magic "GWSHARED"        8 layout version      16 total size
//                   24 header size            32 hash seed (2 words, random per segment)
//                   48 rate slot count        56 rate table offset
//                   64 metric slot count      72 metric table offset  80 metric slot size
//                   88 rate evictions (atomic counter)  96 metric overflows (atomic counter)
//                  104 creator pid           112 creation time (Unix seconds)
//   4096           rate table: rateSlots × 16 bytes (hashed key, theoretical arrival time)
//   4096 + 16·R    metric table: metricSlots × 256 bytes (see SharedMetricTable.swift)
//
// Concurrency: no locks, only 64-bit atomics (CGatewayShim's gw_atomic_*): a lock held by a
// worker that dies would stay held forever, and any process may die at any instruction.
// Every algorithm on the segment is written so that a process killed in the middle leaves at
// worst one slot unusable, never a stuck table.
//
// Trust: workers can write anywhere in the segment, so a worker can corrupt counters, but the
// size is sealed (F_SEAL_SHRINK | F_SEAL_GROW): no holder can truncate the memfd and make the
// others' next access a SIGBUS. What a process needs to find its way in the segment (size,
// slot counts, where the tables are, the hash seed) never comes from the segment: the master
// keeps it from `create` and hands it to every worker in the `shared_memory` frame
// (`Handoff`), so a worker that rewrites the header can neither send a sibling started later
// past the end of its mapping, nor make every later worker refuse the segment, nor choose the
// seed that clients' keys are hashed with. Readers of slots bound every length they read. The
// master never reads the segment's contents.
//
// Any change to this layout bumps `layoutVersion`.

import CGatewayShim
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A mapping of the gateway's shared segment. The master's (from `create`) also owns the
/// memfd; a worker's (from `map`) only owns its mapping, and its caller closes the fd.
///
/// `@unchecked Sendable`: the mapping is immutable once made, and every access to its
/// contents goes through 64-bit atomics (or, for slot text, is validated by a re-read of the
/// slot's atomic state word; see `SharedMetricTable`).
public final class SharedMemory: @unchecked Sendable {
    /// How many slots of each table. Both must be powers of two (slot index = hash & mask).
    public struct Layout: Sendable, Equatable {
        public var rateSlots: Int
        public var metricSlots: Int

        public init(rateSlots: Int, metricSlots: Int) {
            self.rateSlots = rateSlots
            self.metricSlots = metricSlots
        }

        /// 64 Ki rate slots (1 MiB) and 8 Ki metric slots (2 MiB): 3 MiB and a page in all.
        ///
        /// Why this size: a memfd's pages cost memory only once touched, so an empty table is
        /// nearly free, while a full one is what limits precision. A rate slot is live only
        /// while its key has recently sent (for at most burst/rate seconds after the last
        /// request), so 64 Ki slots track 64 Ki clients sending at once; past that the
        /// limiter evicts the bucket closest to expiry (see `SharedRateLimiter`). A metric
        /// series takes one slot (a histogram 13: 12 buckets and its sum), and series come
        /// from routes × statuses, not from clients: 8 Ki is well past what a config makes.
        public static let standard = Layout(rateSlots: 65_536, metricSlots: 8_192)

        var isValid: Bool {
            rateSlots > 0 && metricSlots > 0 && rateSlots.nonzeroBitCount == 1 && metricSlots.nonzeroBitCount == 1
                && rateSlots <= 1 << 26 && metricSlots <= 1 << 22
        }
    }

    /// What the master tells a worker about the segment, in the handoff's `shared_memory`
    /// frame: everything needed to use it, so that nothing is read from the header.
    public struct Handoff: Sendable, Equatable {
        /// Bytes; the fd's size must agree.
        public var size: Int
        public var layoutVersion: Int
        public var layout: Layout
        public var seed: (UInt64, UInt64)

        public init(
            size: Int, layoutVersion: Int = Int(SharedMemory.layoutVersion), layout: Layout, seed: (UInt64, UInt64)
        ) {
            self.size = size
            self.layoutVersion = layoutVersion
            self.layout = layout
            self.seed = seed
        }

        /// `seedText` is the seed as 32 hex digits (`seedText` of a Handoff); nil if it is not.
        public init?(size: Int, layoutVersion: Int, layout: Layout, seedText: String) {
            guard seedText.utf8.count == 32, let high = UInt64(seedText.prefix(16), radix: 16),
                let low = UInt64(seedText.suffix(16), radix: 16)
            else { return nil }
            self.init(size: size, layoutVersion: layoutVersion, layout: layout, seed: (high, low))
        }

        public var seedText: String {
            func hex(_ word: UInt64) -> String {
                let digits = String(word, radix: 16)
                return String(repeating: "0", count: 16 - digits.count) + digits
            }
            return hex(seed.0) + hex(seed.1)
        }

        public static func == (a: Handoff, b: Handoff) -> Bool {
            a.size == b.size && a.layoutVersion == b.layoutVersion && a.layout == b.layout && a.seed == b.seed
        }
    }

    /// "GWSHARED" as a little-endian word.
    public static let magic: UInt64 = 0x4445_5241_4853_5747
    public static let layoutVersion: UInt64 = 1
    static let headerSize = 4096
    static let rateSlotSize = 16
    static let metricSlotSize = 256
    /// The name /proc/PID/fd shows: `/memfd:gatewayd-shared (deleted)`.
    public static let memfdName = "gatewayd-shared"

    enum HeaderOffset {
        static let magic = 0
        static let version = 8
        static let totalSize = 16
        static let headerSize = 24
        static let seed0 = 32
        static let seed1 = 40
        static let rateSlots = 48
        static let rateTable = 56
        static let metricSlots = 64
        static let metricTable = 72
        static let metricSlotSize = 80
        static let rateEvictions = 88
        static let metricOverflows = 96
        static let creatorPid = 104
        static let createdAt = 112
    }

    /// The memfd, for the master to hand to workers; nil in a mapping made by `map`.
    public let descriptor: CInt?
    /// Bytes mapped, the whole segment.
    public let size: Int
    public let layout: Layout
    let base: UnsafeMutableRawPointer
    let seed: (UInt64, UInt64)
    let rateTableBase: UnsafeMutableRawPointer
    let metricTableBase: UnsafeMutableRawPointer

    /// From the master's own knowledge (`create`) or the handoff (`map`), never from the header.
    private init(base: UnsafeMutableRawPointer, handoff: Handoff, descriptor: CInt?) {
        self.base = base
        self.size = handoff.size
        self.descriptor = descriptor
        self.layout = handoff.layout
        self.seed = handoff.seed
        self.rateTableBase = base + Self.headerSize
        self.metricTableBase = base + Self.headerSize + handoff.layout.rateSlots * Self.rateSlotSize
    }

    deinit {
        munmap(base, size)
        if let descriptor { closeDescriptor(descriptor) }
    }

    static func totalSize(of layout: Layout) -> Int {
        headerSize + layout.rateSlots * rateSlotSize + layout.metricSlots * metricSlotSize
    }

    /// What to send each worker in its `shared_memory` frame.
    public var handoff: Handoff { Handoff(size: size, layout: layout, seed: seed) }

    // MARK: - Creation (master)

    /// memfd_create, ftruncate, seal the size, mmap MAP_SHARED, write the header with a fresh
    /// random hash seed. The master calls this once, before its first generation.
    public static func create(layout: Layout = .standard) throws(SharedMemoryError) -> SharedMemory {
        guard layout.isValid else {
            throw SharedMemoryError(.invalidLayout, "invalid layout \(layout): slot counts must be powers of two")
        }
        let size = totalSize(of: layout)
        let fd: CInt
        do {
            fd = try syscall("memfd_create", on: memfdName) { gw_memfd_create(memfdName) }
        } catch {
            throw SharedMemoryError(system: error)
        }
        let base: UnsafeMutableRawPointer
        do throws(SystemCallError) {
            try syscall("ftruncate", on: "memfd \(memfdName) to \(size) bytes") { ftruncate(fd, off_t(size)) }
            try syscall("fcntl F_ADD_SEALS", on: "memfd \(memfdName)") { gw_memfd_seal_size(fd) }
            base = try mapShared(fd: fd, size: size)
        } catch {
            closeDescriptor(fd)
            throw SharedMemoryError(system: error)
        }
        var random = SystemRandomNumberGenerator()  // getrandom(2)
        let handoff = Handoff(size: size, layout: layout, seed: (random.next(), random.next()))
        // The kernel zero-fills a new memfd: every slot starts empty. Only the header is written.
        func put(_ value: UInt64, _ offset: Int) { base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
        put(UInt64(size), HeaderOffset.totalSize)
        put(UInt64(headerSize), HeaderOffset.headerSize)
        put(handoff.seed.0, HeaderOffset.seed0)
        put(handoff.seed.1, HeaderOffset.seed1)
        put(UInt64(layout.rateSlots), HeaderOffset.rateSlots)
        put(UInt64(headerSize), HeaderOffset.rateTable)
        put(UInt64(layout.metricSlots), HeaderOffset.metricSlots)
        put(UInt64(headerSize + layout.rateSlots * rateSlotSize), HeaderOffset.metricTable)
        put(UInt64(metricSlotSize), HeaderOffset.metricSlotSize)
        put(UInt64(getpid()), HeaderOffset.creatorPid)
        put(UInt64(max(0, time(nil))), HeaderOffset.createdAt)
        put(layoutVersion, HeaderOffset.version)
        gw_atomic_store_u64(base.assumingMemoryBound(to: UInt64.self), magic)
        return SharedMemory(base: base, handoff: handoff, descriptor: fd)
    }

    // MARK: - Mapping (worker)

    /// Maps a segment received from the master, as the master described it. Does not take the
    /// fd: the caller closes it (the mapping stays). Reads nothing of the segment.
    ///
    /// The fd's own size (fstat) must be the one announced, because a mapping past the end of
    /// a file faults (SIGBUS) instead of failing, and the layout must fill exactly that size.
    public static func map(descriptor fd: CInt, handoff: Handoff) throws(SharedMemoryError) -> SharedMemory {
        SharedMemory(base: try checkedMapping(of: fd, handoff: handoff), handoff: handoff, descriptor: nil)
    }

    /// Takes over a segment an old master created (an upgrade): maps it as its handoff
    /// describes, as a worker does, and keeps the fd, as `create` does, to hand to this
    /// master's workers. On an error the caller still owns `fd`.
    public static func adopt(descriptor fd: CInt, handoff: Handoff) throws(SharedMemoryError) -> SharedMemory {
        SharedMemory(base: try checkedMapping(of: fd, handoff: handoff), handoff: handoff, descriptor: fd)
    }

    private static func checkedMapping(
        of fd: CInt, handoff: Handoff
    ) throws(SharedMemoryError) -> UnsafeMutableRawPointer {
        guard handoff.layoutVersion == Int(layoutVersion) else {
            throw SharedMemoryError(
                .unsupportedVersion,
                "shared memory: layout version \(handoff.layoutVersion), this worker reads \(layoutVersion)")
        }
        guard handoff.layout.isValid, totalSize(of: handoff.layout) == handoff.size else {
            throw SharedMemoryError(
                .invalidLayout, "shared memory: layout \(handoff.layout) does not make \(handoff.size) bytes")
        }
        var info = stat()
        do {
            try syscall("fstat", on: "shared memory fd \(fd)") { fstat(fd, &info) }
        } catch {
            throw SharedMemoryError(system: error)
        }
        guard Int(info.st_size) == handoff.size else {
            throw SharedMemoryError(
                .sizeMismatch, "shared memory fd \(fd) is \(info.st_size) bytes, the master announced \(handoff.size)")
        }
        do {
            return try mapShared(fd: fd, size: handoff.size)
        } catch {
            throw SharedMemoryError(system: error)
        }
    }

    private static func mapShared(fd: CInt, size: Int) throws(SystemCallError) -> UnsafeMutableRawPointer {
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
            base != UnsafeMutableRawPointer(bitPattern: -1)  // MAP_FAILED
        else {
            throw SystemCallError("mmap", on: "shared memory fd \(fd), \(size) bytes", errno: Errno(rawValue: errno))
        }
        return base
    }

    // MARK: - Header

    func headerWord(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }

    /// Rate-limit buckets that were evicted while still live because every probed slot was
    /// (see `SharedRateLimiter`). Gateway-wide, since the segment was created.
    public var rateEvictions: UInt64 { gw_atomic_load_relaxed_u64(headerWord(HeaderOffset.rateEvictions)) }

    /// Metric series that found no slot (table full, or name and labels too long to store).
    public var metricOverflows: UInt64 { gw_atomic_load_relaxed_u64(headerWord(HeaderOffset.metricOverflows)) }

    /// The pid of the master that created the segment.
    public var creatorPid: Int32 { Int32(truncatingIfNeeded: headerWord(HeaderOffset.creatorPid).pointee) }

    /// A fresh hasher keyed with this segment's seed: every process that maps the segment
    /// hashes alike, and no client can know where its keys land.
    func hasher() -> SipHasher24 {
        SipHasher24(key0: seed.0, key1: seed.1)
    }

    /// The hash seed, for tests that check two segments differ.
    public var hashSeed: (UInt64, UInt64) { seed }

    /// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine (Swift's
    /// ContinuousClock gives no absolute value to share). The rate limiter's `now`.
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// Why the shared segment could not be created or mapped. A struct around a private code, so
/// that kinds can be added without breaking callers that match on `kind`.
public struct SharedMemoryError: Error, Sendable, CustomStringConvertible {
    public struct Kind: Sendable, Equatable, CustomStringConvertible {
        private enum Code: String, Sendable {
            case system, unsupportedVersion, sizeMismatch, invalidLayout
        }
        private let code: Code
        private init(_ code: Code) { self.code = code }

        /// A system call failed (`systemCallError` says which).
        public static let system = Kind(.system)
        /// A gatewayd segment of another layout version.
        public static let unsupportedVersion = Kind(.unsupportedVersion)
        /// The fd's size is not what the master announced.
        public static let sizeMismatch = Kind(.sizeMismatch)
        /// Slot counts that are not powers of two, or do not make the announced size.
        public static let invalidLayout = Kind(.invalidLayout)

        public var description: String { code.rawValue }
    }

    public let kind: Kind
    public let description: String
    public let systemCallError: SystemCallError?

    init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
        self.systemCallError = nil
    }

    init(system error: SystemCallError) {
        self.kind = .system
        self.description = error.description
        self.systemCallError = error
    }
}

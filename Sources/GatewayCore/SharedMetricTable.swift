import CGatewayShim

#if canImport(Glibc)
    import Glibc
#endif

/// Metric series in the shared segment: named slots, each with one 64-bit value that every
/// process can add to and read. A series (kind, name, labels, histogram bucket, owner) gets
/// its slot on first use, by CAS, and keeps it: a counter written by generation 1 is the
/// counter generation 2 adds to.
///
/// Slot, 256 bytes:
///
///     0  state   0 empty · 1 tombstone · h claiming · h | 1<<63 ready (h: 63-bit identity hash ≥ 2)
///     8  meta    kind (byte 0), histogram bucket (byte 1), text length (bytes 2-3), label count (byte 4)
///    16  owner pid      24  owner start time      (gauges: the process the value belongs to)
///    32  value          UInt64 for counts, Double bits for gauges and histogram sums
///    40  text           name and labels, each a 2-byte length and UTF-8 (at most 216 bytes)
///
/// Allocation: open addressing with linear probing from `h & mask`. A process that wants a
/// series walks the chain until an empty slot: a ready slot with the same identity is its
/// slot; otherwise it claims the first tombstone or the empty slot (CAS to `h`), writes the
/// meta, owner, text and a zero value, and publishes with a release store of `h | ready`.
/// Readers only read ready slots. A claimer killed before publishing leaves one slot that
/// nobody will use again (it is skipped after a bounded wait); nothing blocks on it.
///
/// Gauges are per process (owner = pid and start time) and summed over the owners that still
/// run, so a dead worker's "open connections" stop counting the moment it is gone. A dead
/// owner's slot becomes a tombstone (`entries(reclaimingDeadOwners:)`) and is reused. Two
/// processes racing for the same series while a tombstone appears on its chain may end up
/// with two slots for it; readers add up every slot of a series, so that only costs a slot.
///
/// Full table (or a name and labels longer than 216 bytes): the series gets no slot,
/// `SharedMemory.metricOverflows` counts it, and the caller discards its values.
public struct SharedMetricTable: Sendable {
    public enum Kind: UInt8, Sendable, Hashable {
        /// Monotonic count (UInt64).
        case counter = 1
        /// One process's value (Double); readers sum the live owners.
        case gauge = 2
        /// One histogram bucket's count (UInt64), not cumulative; `bucket` orders them.
        case histogramBucket = 3
        /// A histogram's sum of observations (Double).
        case histogramSum = 4
    }

    public struct Label: Sendable, Hashable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// What identifies a slot.
    public struct Series: Sendable, Hashable {
        public var kind: Kind
        public var name: String
        /// In the order given; callers that want one slot per label set sort them.
        public var labels: [Label]
        /// Histogram bucket index (0 otherwise).
        public var bucket: Int
        /// The process a gauge's value belongs to; nil for shared series.
        public var owner: ProcessIdentity?

        public init(kind: Kind, name: String, labels: [Label] = [], bucket: Int = 0, owner: ProcessIdentity? = nil) {
            self.kind = kind
            self.name = name
            self.labels = labels
            self.bucket = bucket
            self.owner = owner
        }
    }

    /// One ready slot as read.
    public struct Entry: Sendable {
        public var series: Series
        /// The raw value: a count, or Double bits (`doubleValue`).
        public var value: UInt64
        public var doubleValue: Double { Double(bitPattern: value) }

        public init(series: Series, value: UInt64) {
            self.series = series
            self.value = value
        }
    }

    public static let slotSize = 256
    public static let textCapacity = 216
    static let textOffset = 40

    static let empty: UInt64 = 0
    static let tombstone: UInt64 = 1
    static let readyBit: UInt64 = 1 << 63

    let memory: SharedMemory

    init(memory: SharedMemory) {
        self.memory = memory
    }

    private func slotBase(_ index: Int) -> UnsafeMutableRawPointer {
        memory.metricTableBase + index * Self.slotSize
    }

    private func stateWord(_ base: UnsafeMutableRawPointer) -> UnsafeMutablePointer<UInt64> {
        base.assumingMemoryBound(to: UInt64.self)
    }

    // MARK: - Lookup and allocation

    /// The slot of `series`, allocated on first use; nil when it cannot have one (table full,
    /// text too long: counted in `SharedMemory.metricOverflows`). Creating handlers is not on
    /// the request path: callers keep the slot and use it for every update.
    public func slot(for series: Series) -> SharedMetricSlot? {
        guard let text = Self.encode(series), series.bucket >= 0, series.bucket < 256 else {
            overflow()
            return nil
        }
        let identity = identityHash(series, text: text)
        // A failed claim restarts the walk: the winner may have taken that slot for this very
        // series. Each restart means another process allocated meanwhile, so a few suffice.
        for _ in 0..<8 {
            switch walk(series: series, text: text, identity: identity) {
            case .found(let base):
                return SharedMetricSlot(memory: memory, value: (base + 32).assumingMemoryBound(to: UInt64.self))
            case .full:
                overflow()
                return nil
            case .lostRace:
                continue
            }
        }
        overflow()
        return nil
    }

    private enum WalkResult {
        case found(UnsafeMutableRawPointer)
        case full
        case lostRace
    }

    private func walk(series: Series, text: [UInt8], identity: UInt64) -> WalkResult {
        let count = memory.layout.metricSlots
        let first = Int(truncatingIfNeeded: identity) & (count - 1)
        var free: (base: UnsafeMutableRawPointer, state: UInt64)?
        for probe in 0..<count {
            let base = slotBase((first + probe) & (count - 1))
            let state = waitUnlessClaiming(stateWord(base))
            switch state {
            case Self.empty:
                return claim(free ?? (base, Self.empty), series: series, text: text, identity: identity)
            case Self.tombstone:
                if free == nil { free = (base, state) }
            case identity | Self.readyBit:
                if matches(base, series: series, text: text, state: state) { return .found(base) }
            default:
                continue  // another series, or a claim abandoned by a dead process
            }
        }
        if let free { return claim(free, series: series, text: text, identity: identity) }
        return .full
    }

    /// The state, after waiting (briefly) for a claim in progress to publish. A claimer writes
    /// 256 bytes and publishes: microseconds, unless it died, in which case we move on.
    private func waitUnlessClaiming(_ word: UnsafeMutablePointer<UInt64>) -> UInt64 {
        var state = gw_atomic_load_u64(word)
        var spins = 0
        while state > Self.tombstone, state & Self.readyBit == 0, spins < 10_000 {
            spins += 1
            if spins % 64 == 0 { sched_yield() }
            state = gw_atomic_load_u64(word)
        }
        return state
    }

    private func claim(
        _ free: (base: UnsafeMutableRawPointer, state: UInt64), series: Series, text: [UInt8], identity: UInt64
    ) -> WalkResult {
        var expected = free.state
        guard gw_atomic_cas_u64(stateWord(free.base), &expected, identity) != 0 else { return .lostRace }
        let base = free.base
        let meta =
            UInt64(series.kind.rawValue) | UInt64(series.bucket) << 8 | UInt64(text.count) << 16
            | UInt64(series.labels.count) << 32
        base.storeBytes(of: meta, toByteOffset: 8, as: UInt64.self)
        base.storeBytes(of: UInt64(UInt32(bitPattern: series.owner?.pid ?? 0)), toByteOffset: 16, as: UInt64.self)
        base.storeBytes(of: series.owner?.startTime ?? 0, toByteOffset: 24, as: UInt64.self)
        base.storeBytes(of: UInt64(0), toByteOffset: 32, as: UInt64.self)
        text.withUnsafeBytes { (base + Self.textOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        gw_atomic_store_u64(stateWord(base), identity | Self.readyBit)
        return .found(base)
    }

    private func matches(_ base: UnsafeMutableRawPointer, series: Series, text: [UInt8], state: UInt64) -> Bool {
        guard let entry = read(base, state: state) else { return false }
        return entry.series == series
    }

    // MARK: - Reading

    /// Every ready slot, in table order. With `reclaimingDeadOwners`, the slots of gauges
    /// whose owner no longer runs become tombstones and are left out.
    public func entries(reclaimingDeadOwners: Bool = true) -> [Entry] {
        var result: [Entry] = []
        var alive: [ProcessIdentity: Bool] = [:]
        for index in 0..<memory.layout.metricSlots {
            let base = slotBase(index)
            let word = stateWord(base)
            let state = gw_atomic_load_u64(word)
            guard state & Self.readyBit != 0, let entry = read(base, state: state) else { continue }
            if let owner = entry.series.owner {
                let isAlive = alive[owner] ?? owner.isAlive
                alive[owner] = isAlive
                if !isAlive {
                    if reclaimingDeadOwners {
                        var expected = state
                        _ = gw_atomic_cas_u64(word, &expected, Self.tombstone)
                    }
                    continue
                }
            }
            result.append(entry)
        }
        return result
    }

    /// One ready slot's contents, or nil if it changed while being read or makes no sense
    /// (a segment any worker can write must never crash a reader).
    private func read(_ base: UnsafeMutableRawPointer, state: UInt64) -> Entry? {
        let meta = base.load(fromByteOffset: 8, as: UInt64.self)
        let pid = Int32(truncatingIfNeeded: base.load(fromByteOffset: 16, as: UInt64.self))
        let startTime = base.load(fromByteOffset: 24, as: UInt64.self)
        let value = gw_atomic_load_relaxed_u64((base + 32).assumingMemoryBound(to: UInt64.self))
        let textLength = Int((meta >> 16) & 0xffff)
        guard let kind = Kind(rawValue: UInt8(meta & 0xff)), textLength <= Self.textCapacity else { return nil }
        let text = [UInt8](UnsafeRawBufferPointer(start: base + Self.textOffset, count: textLength))
        // Seqlock-style: what was copied is what was published only if the state is unchanged.
        guard gw_atomic_load_u64(stateWord(base)) == state,
            let (name, labels) = Self.decode(text, labelCount: Int((meta >> 32) & 0xff))
        else { return nil }
        let series = Series(
            kind: kind, name: name, labels: labels, bucket: Int((meta >> 8) & 0xff),
            owner: pid == 0 ? nil : ProcessIdentity(pid: pid, startTime: startTime))
        return Entry(series: series, value: value)
    }

    // MARK: - Encoding

    static func encode(_ series: Series) -> [UInt8]? {
        guard series.labels.count < 256 else { return nil }
        var text: [UInt8] = []
        func put(_ string: String) {
            let bytes = Array(string.utf8)
            text.append(UInt8(truncatingIfNeeded: bytes.count))
            text.append(UInt8(truncatingIfNeeded: bytes.count >> 8))
            text.append(contentsOf: bytes)
        }
        put(series.name)
        for label in series.labels {
            put(label.name)
            put(label.value)
        }
        return text.count <= textCapacity ? text : nil
    }

    static func decode(_ text: [UInt8], labelCount: Int) -> (String, [Label])? {
        var offset = 0
        func take() -> String? {
            guard offset + 2 <= text.count else { return nil }
            let length = Int(text[offset]) | Int(text[offset + 1]) << 8
            guard offset + 2 + length <= text.count else { return nil }
            defer { offset += 2 + length }
            return String(decoding: text[(offset + 2)..<(offset + 2 + length)], as: UTF8.self)
        }
        guard let name = take() else { return nil }
        var labels: [Label] = []
        for _ in 0..<labelCount {
            guard let key = take(), let value = take() else { return nil }
            labels.append(Label(key, value))
        }
        return offset == text.count ? (name, labels) : nil
    }

    private func identityHash(_ series: Series, text: [UInt8]) -> UInt64 {
        var hasher = memory.hasher()
        hasher.combine(series.kind.rawValue)
        hasher.combine(UInt8(truncatingIfNeeded: series.bucket))
        hasher.combine(bytes: withUnsafeBytes(of: series.owner?.pid ?? 0) { Array($0) })
        hasher.combine(bytes: withUnsafeBytes(of: series.owner?.startTime ?? 0) { Array($0) })
        hasher.combine(lengthPrefixed: text)
        let hash = hasher.finalize() & ~Self.readyBit
        return hash < 2 ? hash + 2 : hash
    }

    private func overflow() {
        _ = gw_atomic_fetch_add_u64(memory.headerWord(SharedMemory.HeaderOffset.metricOverflows), 1)
    }
}

/// One series' value word in the shared segment. Keeps the mapping alive.
///
/// `@unchecked Sendable`: the pointer is into a MAP_SHARED mapping that every process and
/// thread updates with atomics only.
public struct SharedMetricSlot: @unchecked Sendable {
    @usableFromInline let memory: SharedMemory
    @usableFromInline let value: UnsafeMutablePointer<UInt64>

    init(memory: SharedMemory, value: UnsafeMutablePointer<UInt64>) {
        self.memory = memory
        self.value = value
    }

    /// One atomic add (relaxed): the whole cost of a counter increment.
    @inlinable
    public func add(_ amount: UInt64) {
        _ = gw_atomic_fetch_add_u64(value, amount)
    }

    @inlinable
    public func load() -> UInt64 {
        gw_atomic_load_relaxed_u64(value)
    }

    @inlinable
    public func loadDouble() -> Double {
        Double(bitPattern: gw_atomic_load_relaxed_u64(value))
    }

    @inlinable
    public func storeDouble(_ newValue: Double) {
        gw_atomic_store_u64(value, newValue.bitPattern)
    }

    /// Adds to a Double value: a CAS loop, since no CPU adds floats atomically.
    @inlinable
    public func addDouble(_ amount: Double) {
        var current = gw_atomic_load_relaxed_u64(value)
        while gw_atomic_cas_u64(value, &current, (Double(bitPattern: current) + amount).bitPattern) == 0 {}
    }
}

extension SharedMemory {
    /// The metric series in this segment.
    public var metricTable: SharedMetricTable { SharedMetricTable(memory: self) }
}

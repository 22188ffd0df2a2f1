import CGatewayShim

/// What the rate limiter decided for one request.
public enum RateDecision: Sendable, Equatable {
    case allowed
    /// Over the limit: the value for `Retry-After`, whole seconds rounded up, at least 1.
    case denied(retryAfterSeconds: Int)

    public var isAllowed: Bool { self == .allowed }
}

/// Gateway-wide rate limits in the shared segment: GCRA (the generic cell rate algorithm),
/// lock-free across processes. A limit of 100/s admits 100/s whatever the number of workers,
/// and a reload does not refill anyone's bucket.
///
/// GCRA keeps one number per key, the theoretical arrival time (TAT): when the key's bucket
/// would be full again. With T = 1/rate (the emission interval), a request at `now` is
/// admitted if `max(TAT, now) + T - now ≤ burst · T`, and then TAT becomes `max(TAT, now) + T`
/// by compare-and-swap (a failed CAS retries with the value another process wrote). A
/// denial changes nothing. So `burst` requests pass at once, then one every T.
///
/// Slots: 16 bytes, (key hash, TAT), open addressing with linear probing over at most
/// `probes` slots from `hash & mask`. The key is a SipHash-2-4 of the route name and the key
/// bytes, keyed by the segment's random seed: the table never holds a key (API keys are
/// secrets), and no client can aim its keys at one slot. Hash 0 marks an empty slot.
///
/// Reclaiming: a slot whose TAT ≤ now is exactly a fresh bucket, so a new key takes it over
/// by one CAS of the hash word and keeps the old TAT (which already reads as "full"). Slots
/// never go back to empty, so a lookup stops at the first empty slot.
///
/// When every probed slot is live (the table is saturated by keys sending at once), the new
/// key takes the probed slot whose TAT is the smallest (the bucket closest to full again) and
/// starts with a full bucket; `SharedMemory.rateEvictions` counts it. That is nginx's choice
/// for a full limit_req zone (forget the least recently limited), and it keeps admitting new
/// clients at their limit instead of refusing everyone (fail closed) or admitting a flood
/// unmetered (fail open). The evicted key loses at most the remainder of its own debt, the
/// smallest among the probed.
///
/// Races, bounded and documented rather than locked away: a takeover racing with a request of
/// the old key may charge that one request to the new key; two processes creating the same
/// new key in the same nanoseconds may each take a slot, and the second one found is
/// forgotten once it expires (at most one extra burst, once).
public struct SharedRateLimiter: Sendable {
    let memory: SharedMemory
    /// Slots examined per lookup: 8 × 16 bytes, two cache lines.
    public static let probes = 8

    init(memory: SharedMemory) {
        self.memory = memory
    }

    /// Decides one request of `key` on `route`.
    ///
    /// - Parameters:
    ///   - rate: requests per second, > 0.
    ///   - burst: requests admitted at once from a full bucket, ≥ 1.
    ///   - now: CLOCK_MONOTONIC nanoseconds (`SharedMemory.monotonicNanoseconds()`), the same
    ///     clock in every process; tests pass their own.
    /// A rate that is not > 0, or a burst < 1, admits nothing (the config validator refuses
    /// both; this is the safe reading of a limit that makes no sense).
    public func admit(
        route: String, key: some Collection<UInt8>, rate: Double, burst: Int,
        now: UInt64 = SharedMemory.monotonicNanoseconds()
    ) -> RateDecision {
        guard rate > 0, burst >= 1 else { return .denied(retryAfterSeconds: 1) }
        // T in nanoseconds, at least 1 (a rate above 1e9/s is as good as no limit).
        let interval = UInt64(min(max((1e9 / rate).rounded(), 1), 1e18))
        let (product, overflow) = interval.multipliedReportingOverflow(by: UInt64(burst))
        let tolerance = overflow ? UInt64.max : product
        let hash = keyHash(route: route, key: key)

        for _ in 0..<16 {
            guard let slot = findOrClaim(hash: hash, now: now) else { continue }
            let tatWord = slot + 1
            var tat = gw_atomic_load_u64(tatWord)
            while true {
                let start = max(tat, now)
                let (newTAT, over) = start.addingReportingOverflow(interval)
                let ahead = (over ? UInt64.max : newTAT) - now
                if ahead > tolerance {
                    let wait = ahead - tolerance
                    let seconds = wait / 1_000_000_000 + (wait % 1_000_000_000 == 0 ? 0 : 1)
                    return .denied(retryAfterSeconds: Int(min(max(seconds, 1), UInt64(Int32.max))))
                }
                if gw_atomic_cas_u64(tatWord, &tat, newTAT) != 0 {
                    return .allowed
                }
                // Another process moved this TAT: `tat` now holds its value. If the slot
                // changed hands meanwhile, look the key up again.
                if gw_atomic_load_u64(slot) != hash { break }
            }
        }
        // Sixteen lookups each lost a race for a slot: contention no real load produces.
        // Admitting unmetered once is better than refusing a client for our bookkeeping.
        return .allowed
    }

    /// `admit` for a string key (an API key, a client address).
    public func admit(
        route: String, key: String, rate: Double, burst: Int, now: UInt64 = SharedMemory.monotonicNanoseconds()
    ) -> RateDecision {
        admit(route: route, key: key.utf8, rate: rate, burst: burst, now: now)
    }

    /// The 64-bit keyed hash of route and key; never 0 (0 marks an empty slot).
    func keyHash(route: String, key: some Collection<UInt8>) -> UInt64 {
        var hasher = memory.hasher()
        hasher.combine(lengthPrefixed: route.utf8)
        hasher.combine(lengthPrefixed: key)
        let hash = hasher.finalize()
        return hash == 0 ? 1 : hash
    }

    private func slotPointer(_ index: Int) -> UnsafeMutablePointer<UInt64> {
        (memory.rateTableBase + index * SharedMemory.rateSlotSize).assumingMemoryBound(to: UInt64.self)
    }

    /// The slot of `hash`: the one that holds it, else the first empty or expired one taken
    /// over, else the live one closest to expiry evicted. Nil when a takeover lost its CAS.
    private func findOrClaim(hash: UInt64, now: UInt64) -> UnsafeMutablePointer<UInt64>? {
        let mask = memory.layout.rateSlots - 1
        let first = Int(truncatingIfNeeded: hash) & mask
        var reclaimable: (slot: UnsafeMutablePointer<UInt64>, owner: UInt64)?
        var oldest: (slot: UnsafeMutablePointer<UInt64>, owner: UInt64, tat: UInt64)?
        for probe in 0..<Self.probes {
            let slot = slotPointer((first + probe) & mask)
            let owner = gw_atomic_load_u64(slot)
            if owner == hash { return slot }
            if owner == 0 {
                if reclaimable == nil { reclaimable = (slot, 0) }
                break
            }
            let tat = gw_atomic_load_u64(slot + 1)
            if tat <= now {
                if reclaimable == nil { reclaimable = (slot, owner) }
            } else if oldest == nil || tat < oldest!.tat {
                oldest = (slot, owner, tat)
            }
        }
        if let (slot, owner) = reclaimable {
            var expected = owner
            if gw_atomic_cas_u64(slot, &expected, hash) != 0 { return slot }
            // Someone took it first; if it was for this very key, share it.
            return expected == hash ? slot : nil
        }
        guard let (slot, owner, tat) = oldest else { return nil }
        var expected = owner
        guard gw_atomic_cas_u64(slot, &expected, hash) != 0 else { return expected == hash ? slot : nil }
        // A live bucket: the new key must not inherit its debt. A full bucket is TAT 0.
        var expectedTAT = tat
        _ = gw_atomic_cas_u64(slot + 1, &expectedTAT, 0)
        _ = gw_atomic_fetch_add_u64(memory.headerWord(SharedMemory.HeaderOffset.rateEvictions), 1)
        return slot
    }
}

extension SharedMemory {
    /// Gateway-wide rate limits in this segment.
    public var rateLimiter: SharedRateLimiter { SharedRateLimiter(memory: self) }
}

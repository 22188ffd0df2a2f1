/// SipHash-2-4 (Aumasson and Bernstein), 64-bit output, with a 128-bit secret key.
///
/// The shared segment's tables are indexed by a keyed hash of what a client sends (an API key,
/// a client address), so that a client who does not know the key cannot choose inputs that
/// land in one slot (hash flooding). Swift's `Hasher` is seeded per process and cannot be
/// shared; this one is seeded from the segment's header, so every process agrees.
public struct SipHasher24 {
    private var v0: UInt64
    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64
    /// Up to 7 bytes not yet compressed, little-endian in the low bits.
    private var tail: UInt64 = 0
    private var tailCount = 0
    private var length = 0

    public init(key0: UInt64, key1: UInt64) {
        v0 = key0 ^ 0x736f_6d65_7073_6575
        v1 = key1 ^ 0x646f_7261_6e64_6f6d
        v2 = key0 ^ 0x6c79_6765_6e65_7261
        v3 = key1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always)
    private mutating func round() {
        v0 &+= v1
        v1 = v1.rotateLeft(13)
        v1 ^= v0
        v0 = v0.rotateLeft(32)
        v2 &+= v3
        v3 = v3.rotateLeft(16)
        v3 ^= v2
        v0 &+= v3
        v3 = v3.rotateLeft(21)
        v3 ^= v0
        v2 &+= v1
        v1 = v1.rotateLeft(17)
        v1 ^= v2
        v2 = v2.rotateLeft(32)
    }

    @inline(__always)
    private mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        round()
        v0 ^= m
    }

    public mutating func combine(_ byte: UInt8) {
        tail |= UInt64(byte) << (8 * UInt64(tailCount))
        tailCount += 1
        length += 1
        if tailCount == 8 {
            compress(tail)
            tail = 0
            tailCount = 0
        }
    }

    public mutating func combine(bytes: some Sequence<UInt8>) {
        for byte in bytes { combine(byte) }
    }

    /// The length as 8 bytes, then the bytes: "ab"+"c" and "a"+"bc" hash differently.
    public mutating func combine(lengthPrefixed bytes: some Collection<UInt8>) {
        var count = UInt64(bytes.count)
        for _ in 0..<8 {
            combine(UInt8(truncatingIfNeeded: count))
            count >>= 8
        }
        combine(bytes: bytes)
    }

    public consuming func finalize() -> UInt64 {
        let b = UInt64(truncatingIfNeeded: length) << 56 | tail
        compress(b)
        v2 ^= 0xff
        round()
        round()
        round()
        round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inline(__always)
    fileprivate func rotateLeft(_ count: UInt64) -> UInt64 {
        (self << count) | (self >> (64 - count))
    }
}

#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address, as 16 bytes: IPv4 as its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`),
/// so a dual-stack listener's `::ffff:10.0.0.1` peer and a config's `10.0.0.0/8` compare as the
/// same address.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    /// `::ffff:0:0/96`
    private static let mappedPrefix: UInt64 = 0x0000_FFFF_0000_0000

    public var isIPv4: Bool { self.high == 0 && (self.low & 0xFFFF_FFFF_0000_0000) == Self.mappedPrefix }

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public init(ipv4 address: UInt32) {
        self.init(high: 0, low: Self.mappedPrefix | UInt64(address))
    }

    /// From `in_addr.s_addr` (network byte order).
    public init(inAddr: in_addr_t) {
        self.init(ipv4: UInt32(bigEndian: inAddr))
    }

    /// From `in6_addr`'s 16 bytes (network byte order).
    public init(in6Addr: in6_addr) {
        var copy = in6Addr
        let (high, low) = withUnsafeBytes(of: &copy) { raw in
            (
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            )
        }
        self.init(high: UInt64(bigEndian: high), low: UInt64(bigEndian: low))
    }

    /// An IP literal, without brackets or port: `10.0.0.1`, `2001:db8::1`, `::ffff:10.0.0.1`.
    public init?(_ text: String) {
        var copy = text
        guard let parsed = copy.withUTF8({ IPAddress(literal: $0) }) else { return nil }
        self = parsed
    }

    /// The same from bytes (at most 45 of them, INET6_ADDRSTRLEN - 1): no allocation.
    public init?(literal bytes: UnsafeBufferPointer<UInt8>) {
        guard !bytes.isEmpty, bytes.count < Int(INET6_ADDRSTRLEN) else { return nil }
        var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
        let parsed: IPAddress? = withUnsafeMutableBytes(of: &buffer) { raw -> IPAddress? in
            raw.copyMemory(from: UnsafeRawBufferPointer(bytes))
            raw[bytes.count] = 0
            let cString = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            if bytes.contains(UInt8(ascii: ":")) {
                var address = in6_addr()
                guard inet_pton(AF_INET6, cString, &address) == 1 else { return nil }
                return IPAddress(in6Addr: address)
            }
            var address = in_addr()
            guard inet_pton(AF_INET, cString, &address) == 1 else { return nil }
            return IPAddress(inAddr: address.s_addr)
        }
        guard let parsed else { return nil }
        self = parsed
    }

    public var description: String {
        if self.isIPv4 {
            // Written by hand: at most 15 bytes, a small string with no allocation, where
            // inet_ntop formats each octet with sprintf (a worker makes this text once per
            // client connection, for X-Forwarded-For and the access log).
            let value = UInt32(truncatingIfNeeded: self.low)
            return String(unsafeUninitializedCapacity: 15) { buffer in
                var count = 0
                for shift in stride(from: 24, through: 0, by: -8) {
                    let octet = Int((value >> UInt32(shift)) & 0xff)
                    if octet >= 100 {
                        buffer[count] = UInt8(ascii: "0") + UInt8(octet / 100)
                        count += 1
                    }
                    if octet >= 10 {
                        buffer[count] = UInt8(ascii: "0") + UInt8(octet / 10 % 10)
                        count += 1
                    }
                    buffer[count] = UInt8(ascii: "0") + UInt8(octet % 10)
                    count += 1
                    if shift > 0 {
                        buffer[count] = UInt8(ascii: ".")
                        count += 1
                    }
                }
                return count
            }
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var address = in6_addr()
        withUnsafeMutableBytes(of: &address) { raw in
            raw.storeBytes(of: self.high.bigEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: self.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// A CIDR block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7` is `/32`).
public struct AddressRange: Hashable, Sendable, CustomStringConvertible {
    public var network: IPAddress
    /// Of the 128-bit form: an IPv4 `/8` is stored as `/104`.
    public var prefixLength: Int

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var input: String
        public var reason: String
        public var description: String { "invalid address range \"\(input)\": \(reason)" }
    }

    public init(parsing text: String) throws(ParseError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else {
            throw ParseError(input: text, reason: "\"\(parts[0])\" is not an IP address")
        }
        let width = address.isIPv4 ? 32 : 128
        var length = width
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), parts[1].allSatisfy(\.isNumber), (0...width).contains(parsed) else {
                throw ParseError(input: text, reason: "the prefix length must be a number from 0 to \(width)")
            }
            length = parsed
        }
        let stored = address.isIPv4 ? length + 96 : length
        let masked = Self.mask(address, stored)
        guard masked == address else {
            // `10.1.2.3/8` is almost always a typo for a host or for `10.0.0.0/8`: say which.
            throw ParseError(
                input: text, reason: "host bits are set; the network is \(masked)/\(length)")
        }
        self.network = masked
        self.prefixLength = stored
    }

    public func contains(_ address: IPAddress) -> Bool {
        Self.mask(address, self.prefixLength) == self.network
    }

    private static func mask(_ address: IPAddress, _ length: Int) -> IPAddress {
        func bits(_ count: Int) -> UInt64 {
            count <= 0 ? 0 : count >= 64 ? .max : ~(UInt64.max >> UInt64(count))
        }
        return IPAddress(high: address.high & bits(length), low: address.low & bits(length - 64))
    }

    public var description: String {
        "\(self.network)/\(self.network.isIPv4 ? self.prefixLength - 96 : self.prefixLength)"
    }
}

/// Byte classes of RFC 3986 and RFC 9110, without Foundation and without allocating.
enum ASCII {
    @inline(__always)
    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    @inline(__always)
    static func upperHexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10
    }

    /// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
    @inline(__always)
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    @inline(__always)
    static func isSchemeByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }

    @inline(__always)
    static func lower(_ byte: UInt8) -> UInt8 {
        (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) ? byte | 0x20 : byte
    }

    /// `lowercase` must be lower-case ASCII.
    static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for index in 0..<bytes.count where lower(bytes[index]) != expected[index] {
            return false
        }
        return true
    }
}

/// RFC 3986 §3.2.2-3 for an `http` authority without userinfo: a bracketed IPv6/IPv4 literal,
/// or a non-empty reg-name or IPv4 address, then perhaps `:` and digits. The authority of an
/// absolute-form target becomes the upstream's `Host`, so it must be able to be one.
public enum Authority {
    public static func isValid(_ authority: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        if authority.first == UInt8(ascii: "[") {
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")), close > 1 else { return false }
            for byte in authority[1..<close] {
                guard ASCII.hexValue(byte) != nil || byte == UInt8(ascii: ":") || byte == UInt8(ascii: ".") else {
                    return false
                }
            }
            index = close + 1
        } else {
            while index < authority.count, authority[index] != UInt8(ascii: ":") {
                guard isRegNameByte(authority[index]) else { return false }
                index += 1
            }
            guard index > 0 else { return false }
        }
        guard index < authority.count else { return true }
        guard authority[index] == UInt8(ascii: ":") else { return false }
        for byte in authority[(index + 1)...] {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return false }
        }
        return true
    }

    /// unreserved, pct-encoded and sub-delims (RFC 3986 §3.2.2).
    @inline(__always)
    private static func isRegNameByte(_ byte: UInt8) -> Bool {
        if ASCII.isUnreserved(byte) { return true }
        switch byte {
        case UInt8(ascii: "%"), UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","),
            UInt8(ascii: ";"), UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }
}

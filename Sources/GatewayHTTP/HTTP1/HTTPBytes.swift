/// Byte classes and small comparisons of RFC 9110/9112, on raw bytes, without allocating.
public enum HTTPBytes {
    /// tchar (RFC 9110 §5.6.2) as a 256-bit set.
    private static let tokenMask: (UInt64, UInt64, UInt64, UInt64) = {
        var mask: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for byte in Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8) {
            let bit = UInt64(1) << UInt64(byte & 63)
            switch byte >> 6 {
            case 0: mask.0 |= bit
            case 1: mask.1 |= bit
            case 2: mask.2 |= bit
            default: mask.3 |= bit
            }
        }
        return mask
    }()

    @inline(__always)
    public static func isToken(_ byte: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: return tokenMask.0 & bit != 0
        case 1: return tokenMask.1 & bit != 0
        default: return false
        }
    }

    /// A request target's bytes: visible ASCII (a client escapes the rest, and llhttp refuses
    /// raw UTF-8 too); `RequestTarget` checks the rest.
    @inline(__always)
    public static func isTargetByte(_ byte: UInt8) -> Bool {
        (byte &- 0x21) < 0x5E
    }

    /// field-vchar, SP, HTAB (RFC 9110 §5.5); obs-text included, control bytes not.
    @inline(__always)
    public static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte >= 0x20 ? byte != 0x7F : byte == 0x09
    }

    @inline(__always)
    static func lower(_ byte: UInt8) -> UInt8 {
        (byte &- 0x41) < 26 ? byte | 0x20 : byte
    }

    /// Byte for byte.
    public static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount else { return false }
        let expected = text.utf8Start
        for index in 0..<bytes.count where bytes[index] != expected[index] {
            return false
        }
        return true
    }

    /// The first `count` bytes of `bytes` and of `other`, byte for byte.
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ other: UnsafePointer<UInt8>, count: Int) -> Bool {
        for index in 0..<count where bytes[index] != other[index] {
            return false
        }
        return true
    }

    /// ASCII case-insensitively; `lowercase` must be lower-case.
    public static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for index in 0..<bytes.count where lower(bytes[index]) != expected[index] {
            return false
        }
        return true
    }

    /// ASCII case-insensitively, both sides raw.
    public static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ other: UnsafeBufferPointer<UInt8>)
        -> Bool
    {
        guard bytes.count == other.count else { return false }
        for index in 0..<bytes.count where lower(bytes[index]) != lower(other[index]) {
            return false
        }
        return true
    }

    /// 1*DIGIT, at most Int64.max: a length past it is refused (no body is that long, and a
    /// peer that reads it modulo 2^64 would disagree about where the body ends).
    public static func decimal(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 19 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            let digit = byte &- 0x30
            guard digit < 10 else { return nil }
            value = value * 10 + UInt64(digit)
        }
        return value <= UInt64(Int64.max) ? value : nil
    }

    /// A coding list whose last element is `chunked` (`gzip, chunked`).
    static func endsWithChunkedCoding(_ value: UnsafeBufferPointer<UInt8>) -> Bool {
        var last: Range<Int>?
        forEachToken(value) { last = $0 }
        guard let last else { return false }
        return equalsIgnoringCase(UnsafeBufferPointer(rebasing: value[last]), "chunked")
    }

    /// The elements of a comma-separated list (RFC 9110 §5.6.1): OWS around each trimmed,
    /// empty elements skipped.
    @inline(__always)
    public static func forEachToken(_ value: UnsafeBufferPointer<UInt8>, _ body: (Range<Int>) -> Void) {
        var start = 0
        while start < value.count {
            var end = start
            while end < value.count, value[end] != UInt8(ascii: ",") { end += 1 }
            var lower = start
            var upper = end
            while lower < upper, value[lower] == SP || value[lower] == HTAB { lower += 1 }
            while upper > lower, value[upper - 1] == SP || value[upper - 1] == HTAB { upper -= 1 }
            if lower < upper { body(lower..<upper) }
            start = end + 1
        }
    }
}

extension FieldName {
    /// The field a name is, ASCII case-insensitively; `.other` for the rest. A switch on the
    /// length first: most names are compared with one candidate, or none.
    public static func identify(_ name: UnsafeBufferPointer<UInt8>) -> FieldName {
        switch name.count {
        case 2:
            if HTTPBytes.equalsIgnoringCase(name, "te") { return .te }
        case 3:
            if HTTPBytes.equalsIgnoringCase(name, "via") { return .via }
        case 4:
            if HTTPBytes.equalsIgnoringCase(name, "host") { return .host }
        case 6:
            if HTTPBytes.equalsIgnoringCase(name, "expect") { return .expect }
        case 7:
            if HTTPBytes.equalsIgnoringCase(name, "upgrade") { return .upgrade }
            if HTTPBytes.equalsIgnoringCase(name, "trailer") { return .trailer }
            if HTTPBytes.equalsIgnoringCase(name, "referer") { return .referer }
        case 9:
            if HTTPBytes.equalsIgnoringCase(name, "forwarded") { return .forwarded }
            if HTTPBytes.equalsIgnoringCase(name, "x-real-ip") { return .xRealIP }
            if HTTPBytes.equalsIgnoringCase(name, "x_real_ip") { return .forwardingAlias }
        case 10:
            if HTTPBytes.equalsIgnoringCase(name, "connection") { return .connection }
            if HTTPBytes.equalsIgnoringCase(name, "keep-alive") { return .keepAlive }
            if HTTPBytes.equalsIgnoringCase(name, "user-agent") { return .userAgent }
        case 12:
            if HTTPBytes.equalsIgnoringCase(name, "x-request-id") { return .xRequestID }
        case 13:
            if HTTPBytes.equalsIgnoringCase(name, "authorization") { return .authorization }
        case 14:
            if HTTPBytes.equalsIgnoringCase(name, "content-length") { return .contentLength }
        case 15:
            if HTTPBytes.equalsIgnoringCase(name, "x-forwarded-for") { return .xForwardedFor }
            if HTTPBytes.equalsIgnoringCase(name, "x_forwarded_for") { return .forwardingAlias }
        case 16:
            if HTTPBytes.equalsIgnoringCase(name, "proxy-connection") { return .proxyConnection }
            if HTTPBytes.equalsIgnoringCase(name, "x-forwarded-host") { return .xForwardedHost }
            if HTTPBytes.equalsIgnoringCase(name, "x_forwarded_host") { return .forwardingAlias }
        case 17:
            if HTTPBytes.equalsIgnoringCase(name, "transfer-encoding") { return .transferEncoding }
            if HTTPBytes.equalsIgnoringCase(name, "x-forwarded-proto") { return .xForwardedProto }
            if HTTPBytes.equalsIgnoringCase(name, "x_forwarded_proto") { return .forwardingAlias }
        case 19:
            if HTTPBytes.equalsIgnoringCase(name, "proxy-authorization") { return .proxyAuthorization }
        default:
            break
        }
        return .other
    }
}

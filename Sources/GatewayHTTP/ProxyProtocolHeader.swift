import GatewayCore

/// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a load balancer puts in
/// front of a connection's bytes to say whom it is for: HAProxy's `send-proxy`/`send-proxy-v2`,
/// AWS NLB, GCP's TCP proxy. Parsing only; the connection decides what to do with the result.
///
/// A listener with `proxy_protocol: true` requires it: a connection that does not start with a
/// valid header is closed without an answer (the spec: a receiver must not guess).
public enum ProxyProtocolHeader {
    /// v2's 12-byte signature: it cannot start an HTTP request, a TLS record or a v1 header.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// The spec's bound for a v1 line, CRLF included.
    public static let maximumV1Length = 107
    /// v2 allows 16 + 65535 bytes; the TLVs that balancers send (AWS's VPC endpoint id, SSL
    /// details) take a few hundred at most. Past this it is not a balancer talking.
    public static let maximumV2Length = 4096

    public enum Outcome: Sendable, Equatable {
        /// More bytes are needed.
        case incomplete
        /// The header is `length` bytes long. `source` is the client's address, or `nil` when
        /// the sender speaks for itself (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC or UNIX): then the
        /// connection's own peer is the client.
        case complete(length: Int, source: IPAddress?, sourcePort: UInt16?)
        case invalid(String)
    }

    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> Outcome {
        guard let first = bytes.first else { return .incomplete }
        if first == UInt8(ascii: "P") {
            return parseV1(bytes)
        }
        if first == signature[0] {
            return parseV2(bytes)
        }
        return .invalid("not a PROXY protocol header")
    }

    // MARK: v1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"

    private static func parseV1(_ bytes: UnsafeBufferPointer<UInt8>) -> Outcome {
        let prefix = Array("PROXY ".utf8)
        for index in 0..<min(prefix.count, bytes.count) where bytes[index] != prefix[index] {
            return .invalid("not a PROXY protocol header")
        }
        var end = 0
        while end + 1 < bytes.count, !(bytes[end] == 0x0D && bytes[end + 1] == 0x0A) {
            if end + 2 >= maximumV1Length { return .invalid("PROXY v1 line longer than 107 bytes") }
            end += 1
        }
        guard end + 1 < bytes.count else {
            return bytes.count >= maximumV1Length ? .invalid("PROXY v1 line longer than 107 bytes") : .incomplete
        }
        let line = UnsafeBufferPointer(rebasing: bytes[prefix.count..<end])
        let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard let family = fields.first else { return .invalid("PROXY v1: no protocol") }
        let length = end + 2
        if family.elementsEqual("UNKNOWN".utf8) {
            return .complete(length: length, source: nil, sourcePort: nil)
        }
        let isV4 = family.elementsEqual("TCP4".utf8)
        guard isV4 || family.elementsEqual("TCP6".utf8) else {
            return .invalid("PROXY v1: protocol must be TCP4, TCP6 or UNKNOWN")
        }
        guard fields.count == 5 else { return .invalid("PROXY v1: expected 4 fields after the protocol") }
        let source = IPAddress(literal: UnsafeBufferPointer(rebasing: fields[1]))
        let destination = IPAddress(literal: UnsafeBufferPointer(rebasing: fields[2]))
        guard let source, let destination, source.isIPv4 == isV4, destination.isIPv4 == isV4 else {
            return .invalid("PROXY v1: the addresses are not \(isV4 ? "IPv4" : "IPv6") addresses")
        }
        guard let sourcePort = port(fields[3]), port(fields[4]) != nil else {
            return .invalid("PROXY v1: ports must be numbers from 0 to 65535")
        }
        return .complete(length: length, source: source, sourcePort: sourcePort)
    }

    /// Decimal, no sign, no leading zero (the spec), at most 65535.
    private static func port(_ field: Slice<UnsafeBufferPointer<UInt8>>) -> UInt16? {
        guard !field.isEmpty, field.count <= 5, field.first != UInt8(ascii: "0") || field.count == 1 else {
            return nil
        }
        var value = 0
        for byte in field {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value <= 65535 ? UInt16(value) : nil
    }

    // MARK: v2: signature, version/command, family/protocol, length, addresses, TLVs

    private static func parseV2(_ bytes: UnsafeBufferPointer<UInt8>) -> Outcome {
        for index in 0..<min(signature.count, bytes.count) where bytes[index] != signature[index] {
            return .invalid("not a PROXY protocol header")
        }
        guard bytes.count >= 16 else { return .incomplete }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2: unknown version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2: unknown command \(command)") }
        let familyProtocol = bytes[13]
        let addressLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + addressLength
        guard length <= maximumV2Length else {
            return .invalid("PROXY v2: header of \(length) bytes, more than \(maximumV2Length)")
        }
        guard bytes.count >= length else { return .incomplete }
        if command == 0 {
            // LOCAL: the balancer's own connection (a health check): its address is the peer's.
            return .complete(length: length, source: nil, sourcePort: nil)
        }
        let transport = familyProtocol & 0x0F
        guard transport <= 1 else { return .invalid("PROXY v2: not a stream (TCP) connection") }
        let body = UnsafeBufferPointer(rebasing: bytes[16..<length])
        switch familyProtocol >> 4 {
        case 0x1:
            guard body.count >= 12 else { return .invalid("PROXY v2: IPv4 addresses need 12 bytes") }
            let address = UInt32(body[0]) << 24 | UInt32(body[1]) << 16 | UInt32(body[2]) << 8 | UInt32(body[3])
            return .complete(
                length: length, source: IPAddress(ipv4: address), sourcePort: UInt16(body[8]) << 8 | UInt16(body[9]))
        case 0x2:
            guard body.count >= 36 else { return .invalid("PROXY v2: IPv6 addresses need 36 bytes") }
            var high: UInt64 = 0
            var low: UInt64 = 0
            for index in 0..<8 {
                high = high << 8 | UInt64(body[index])
                low = low << 8 | UInt64(body[8 + index])
            }
            return .complete(
                length: length, source: IPAddress(high: high, low: low),
                sourcePort: UInt16(body[32]) << 8 | UInt16(body[33]))
        case 0x0, 0x3:
            // UNSPEC or UNIX: no IP address to report; the peer stands for the client.
            return .complete(length: length, source: nil, sourcePort: nil)
        default:
            return .invalid("PROXY v2: unknown address family \(familyProtocol >> 4)")
        }
    }
}

import GatewayCore
import GatewayHTTP
import Testing

@Suite("PROXY protocol header")
struct ProxyProtocolHeaderTests {
    static func parse(_ bytes: [UInt8]) -> ProxyProtocolHeader.Outcome {
        bytes.withUnsafeBufferPointer { ProxyProtocolHeader.parse($0) }
    }

    static func parse(_ text: String) -> ProxyProtocolHeader.Outcome {
        parse(Array(text.utf8))
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    @Test func v1() {
        let line = "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"
        #expect(
            Self.parse(line + "GET /")
                == .complete(length: line.utf8.count, source: IPAddress("192.0.2.1"), sourcePort: 56324))
        #expect(
            Self.parse("PROXY TCP6 2001:db8::1 ::1 1 2\r\n")
                == .complete(length: 32, source: IPAddress("2001:db8::1"), sourcePort: 1))
        #expect(Self.parse("PROXY UNKNOWN\r\n") == .complete(length: 15, source: nil, sourcePort: nil))
        #expect(Self.parse("PROXY UNKNOWN ffff::1 ::1 1 2\r\n") == .complete(length: 31, source: nil, sourcePort: nil))
        // Every prefix of a header is incomplete, never invalid.
        for count in 0..<line.utf8.count {
            #expect(Self.parse(Array(line.utf8.prefix(count))) == .incomplete, "\(count)")
        }
    }

    @Test func v1Refusals() {
        for bad in [
            "PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n", "PROXY TCP4 192.0.2.1  198.51.100.1 1 2\r\n",
            "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            "proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "GET / HTTP/1.1\r\n",
            "PROXY " + String(repeating: "x", count: 120),
        ] {
            guard case .invalid = Self.parse(bad) else {
                Issue.record("accepted \(bad.debugDescription)")
                continue
            }
        }
    }

    @Test func v2() {
        let ipv4 = Self.v2Signature + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2, 1, 198, 51, 100, 1, 0xDC, 0x04, 0x01, 0xBB]
        #expect(
            Self.parse(ipv4 + Array("GET".utf8))
                == .complete(length: 28, source: IPAddress("192.0.2.1"), sourcePort: 56324))
        for count in 0..<ipv4.count {
            #expect(Self.parse(Array(ipv4.prefix(count))) == .incomplete, "\(count)")
        }
        var ipv6 = Self.v2Signature + [0x21, 0x21, 0x00, 0x24]
        ipv6 += [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [5]
        ipv6 += [UInt8](repeating: 0, count: 15) + [1] + [0, 80, 1, 187]
        #expect(Self.parse(ipv6) == .complete(length: 52, source: IPAddress("2001:db8::5"), sourcePort: 80))
        let local = Self.v2Signature + [0x20, 0x00, 0x00, 0x00]
        #expect(Self.parse(local) == .complete(length: 16, source: nil, sourcePort: nil))
        let unix = Self.v2Signature + [0x21, 0x31, 0x00, 0xD8] + [UInt8](repeating: 0, count: 216)
        #expect(Self.parse(unix) == .complete(length: 232, source: nil, sourcePort: nil))
    }

    @Test func v2Refusals() {
        let cases: [[UInt8]] = [
            Self.v2Signature + [0x11, 0x11, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12),
            Self.v2Signature + [0x22, 0x11, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12),
            Self.v2Signature + [0x21, 0x12, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12),
            Self.v2Signature + [0x21, 0x11, 0x00, 0x04] + [UInt8](repeating: 1, count: 4),
            Self.v2Signature + [0x21, 0x11, 0xFF, 0xFF],
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x55, 0x0A, 0x21],
        ]
        for bytes in cases {
            guard case .invalid = Self.parse(bytes) else {
                Issue.record("accepted \(bytes)")
                continue
            }
        }
    }
}

import GatewayIO

/// HTTP/2's framing layer (RFC 9113 §4 and §6): the frame header, the types, flags, settings
/// and error codes gatewayd reads and writes, and the writers that append frames to a
/// connection's output. The wire format is RFC 9113's; there is no version of ours in it.
/// Header blocks are HPACK (RFC 7541), through swift-nio-http2's NIOHPACK (`HTTP2Connection`).
enum HTTP2 {
    /// RFC 9113 §3.4: what every client connection starts with.
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let frameHeaderLength = 9
    /// RFC 9113 §4.2: the largest payload a peer must accept before it raises
    /// SETTINGS_MAX_FRAME_SIZE; what we send and what we announce we take.
    static let defaultMaxFrameSize = 16_384
    /// RFC 9113 §6.9.2: every window starts here until SETTINGS say otherwise.
    static let defaultWindow = 65_535
    static let maxWindow = 0x7fff_ffff
    /// RFC 9113 §6.8: a stream id no client can reach; the first GOAWAY of a graceful
    /// shutdown carries it ("no new streams soon"), the second the real last one.
    static let maxStreamID: UInt32 = 0x7fff_ffff

    enum FrameType: UInt8 {
        case data = 0x0
        case headers = 0x1
        case priority = 0x2
        case rstStream = 0x3
        case settings = 0x4
        case pushPromise = 0x5
        case ping = 0x6
        case goAway = 0x7
        case windowUpdate = 0x8
        case continuation = 0x9
    }

    enum Flags {
        static let endStream: UInt8 = 0x1
        static let ack: UInt8 = 0x1
        static let endHeaders: UInt8 = 0x4
        static let padded: UInt8 = 0x8
        static let priority: UInt8 = 0x20
    }

    /// RFC 9113 §7.
    enum ErrorCode: UInt32 {
        case noError = 0x0
        case protocolError = 0x1
        case internalError = 0x2
        case flowControlError = 0x3
        case settingsTimeout = 0x4
        case streamClosed = 0x5
        case frameSizeError = 0x6
        case refusedStream = 0x7
        case cancel = 0x8
        case compressionError = 0x9
        case connectError = 0xa
        case enhanceYourCalm = 0xb
        case inadequateSecurity = 0xc
        case http11Required = 0xd
    }

    /// RFC 9113 §6.5.2.
    enum Setting: UInt16 {
        case headerTableSize = 0x1
        case enablePush = 0x2
        case maxConcurrentStreams = 0x3
        case initialWindowSize = 0x4
        case maxFrameSize = 0x5
        case maxHeaderListSize = 0x6
    }

    /// A frame's 9-byte header.
    struct FrameHeader {
        var length: Int
        /// Raw: an unknown type is read and ignored (RFC 9113 §4.1).
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32

        init?(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard bytes.count >= HTTP2.frameHeaderLength else { return nil }
            self.length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
            self.type = bytes[3]
            self.flags = bytes[4]
            self.streamID = HTTP2.uint32(bytes, at: 5) & 0x7fff_ffff
        }
    }

    static func uint32(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }

    static func uint16(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> UInt16 {
        UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
}

/// Appending frames to an output buffer.
extension IOBuffer {
    func appendFrameHeader(length: Int, type: HTTP2.FrameType, flags: UInt8, streamID: UInt32) {
        self.append(UInt8(truncatingIfNeeded: length >> 16))
        self.append(UInt8(truncatingIfNeeded: length >> 8))
        self.append(UInt8(truncatingIfNeeded: length))
        self.append(type.rawValue)
        self.append(flags)
        self.appendUInt32(streamID & 0x7fff_ffff)
    }

    func appendUInt32(_ value: UInt32) {
        self.append(UInt8(truncatingIfNeeded: value >> 24))
        self.append(UInt8(truncatingIfNeeded: value >> 16))
        self.append(UInt8(truncatingIfNeeded: value >> 8))
        self.append(UInt8(truncatingIfNeeded: value))
    }

    func appendSettings(_ settings: [(HTTP2.Setting, UInt32)]) {
        self.appendFrameHeader(length: settings.count * 6, type: .settings, flags: 0, streamID: 0)
        for (setting, value) in settings {
            self.append(UInt8(setting.rawValue >> 8))
            self.append(UInt8(truncatingIfNeeded: setting.rawValue))
            self.appendUInt32(value)
        }
    }

    func appendWindowUpdate(streamID: UInt32, increment: Int) {
        self.appendFrameHeader(length: 4, type: .windowUpdate, flags: 0, streamID: streamID)
        self.appendUInt32(UInt32(increment))
    }

    func appendResetStream(streamID: UInt32, error: HTTP2.ErrorCode) {
        self.appendFrameHeader(length: 4, type: .rstStream, flags: 0, streamID: streamID)
        self.appendUInt32(error.rawValue)
    }

    func appendGoAway(lastStreamID: UInt32, error: HTTP2.ErrorCode) {
        self.appendFrameHeader(length: 8, type: .goAway, flags: 0, streamID: 0)
        self.appendUInt32(lastStreamID)
        self.appendUInt32(error.rawValue)
    }

    func appendPing(_ opaque: UnsafeBufferPointer<UInt8>, ack: Bool) {
        self.appendFrameHeader(length: 8, type: .ping, flags: ack ? HTTP2.Flags.ack : 0, streamID: 0)
        self.append(opaque)
    }
}

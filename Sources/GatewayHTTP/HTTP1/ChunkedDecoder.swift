/// Follows a chunked body (RFC 9112 §7.1) byte by byte, resumable across reads, so that it can
/// be forwarded as the bytes that arrived while its end is found exactly (a request pipelined
/// behind it, or a response's end on a keep-alive connection) and anything malformed is
/// refused: a chunk size that is not hex or overflows, data longer than its size, a missing
/// CRLF, bare CR or LF, obs-fold or control bytes in trailers.
///
/// `decode` reports the data inside the framing through `data` (for re-framing: an HTTP/1.0
/// client gets the body without chunks) and how many bytes belong to the body.
public struct ChunkedDecoder: Sendable {
    fileprivate enum State: UInt8 {
        case size
        /// After `;`: a name (or another `;`).
        case extensionNameStart
        case extensionName
        case extensionValueStart
        case extensionToken
        case extensionQuoted
        case extensionQuotedPair
        /// Right after a quoted value: `;` or CR.
        case extensionQuoteEnd
        case sizeLF
        case data
        case dataCR
        case dataLF
        case trailerStart
        case trailerName
        case trailerValue
        case trailerLF
        case endLF
        case done
    }

    /// The size may take one more hex digit only while it stays within 64 bits: the test llhttp
    /// makes, so leading zeros (`000…05`) are taken however many, as llhttp takes them (found
    /// by the differential test).
    private static let largestSizeBeforeDigit: UInt64 = (UInt64.max - 0xf) / 16
    /// Trailer fields, all together: a body's end is not a place for a second head.
    public static let maxTrailerBytes = 16 * 1024

    private var state: State = .size
    private var sizeDigits = 0
    private var remaining: UInt64 = 0
    private var trailerBytes = 0
    /// The trailer name so far may still be one of `forbiddenTrailers` (a bit each).
    private var trailerCandidates: UInt8 = 0
    private var trailerNameLength = 0
    /// RFC 9110 §6.5.1: framing fields cannot be trailers (llhttp refuses them too).
    private static let forbiddenTrailers: [[UInt8]] = [Array("content-length".utf8), Array("transfer-encoding".utf8)]

    public init() {}

    public var isFinished: Bool { self.state == .done }

    public mutating func reset() {
        self = ChunkedDecoder()
    }

    public enum Outcome: Sendable, Equatable {
        /// `consumed` bytes belong to the body; `finished`: the last of them ended it (what
        /// follows is the next message).
        case consumed(Int, finished: Bool)
        case failed(HTTPParseError)
    }

    public mutating func decode(
        _ bytes: UnsafeBufferPointer<UInt8>, data: (Range<Int>) -> Void = { _ in }
    ) -> Outcome {
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            switch self.state {
            case .size:
                if let digit = ASCII.hexValue(byte) {
                    guard self.remaining <= Self.largestSizeBeforeDigit else {
                        return .failed(.init(400, "chunk size too large"))
                    }
                    self.remaining = self.remaining << 4 | UInt64(digit)
                    self.sizeDigits += 1
                } else if self.sizeDigits == 0 {
                    return .failed(.init(400, "invalid chunk size"))
                } else if byte == UInt8(ascii: ";") {
                    self.state = .extensionNameStart
                } else if byte == CR {
                    self.state = .sizeLF
                } else {
                    return .failed(.init(400, "invalid chunk size"))
                }
            // chunk-ext = *( ";" name [ "=" ( token / quoted-string ) ] ), read and ignored
            // however long. No whitespace anywhere: RFC 9112 §7.1.1 allows BWS around `;` and
            // `=`, but llhttp refuses it, and a line two parsers read differently is a
            // smuggling seam, so the stricter reading is the one to share.
            case .extensionNameStart:
                // llhttp takes an empty extension (`;;`, `;=v`); so do we.
                if HTTPBytes.isToken(byte) {
                    self.state = .extensionName
                } else if byte == UInt8(ascii: "=") {
                    self.state = .extensionValueStart
                } else if byte != UInt8(ascii: ";") {
                    return .failed(.init(400, "invalid chunk extension"))
                }
            case .extensionName:
                if byte == CR {
                    self.state = .sizeLF
                } else if byte == UInt8(ascii: "=") {
                    self.state = .extensionValueStart
                } else if byte == UInt8(ascii: ";") {
                    self.state = .extensionNameStart
                } else if !HTTPBytes.isToken(byte) {
                    return .failed(.init(400, "invalid chunk extension"))
                }
            case .extensionValueStart:
                // As llhttp: an empty value is taken.
                if HTTPBytes.isToken(byte) {
                    self.state = .extensionToken
                } else if byte == UInt8(ascii: "\"") {
                    self.state = .extensionQuoted
                } else if byte == CR {
                    self.state = .sizeLF
                } else if byte == UInt8(ascii: ";") {
                    self.state = .extensionNameStart
                } else {
                    return .failed(.init(400, "invalid chunk extension"))
                }
            case .extensionToken:
                if byte == CR {
                    self.state = .sizeLF
                } else if byte == UInt8(ascii: ";") {
                    self.state = .extensionNameStart
                } else if !HTTPBytes.isToken(byte) {
                    return .failed(.init(400, "invalid chunk extension"))
                }
            case .extensionQuoted:
                if byte == UInt8(ascii: "\"") {
                    self.state = .extensionQuoteEnd
                } else if byte == UInt8(ascii: "\\") {
                    self.state = .extensionQuotedPair
                } else if !HTTPBytes.isFieldValueByte(byte) {
                    return .failed(.init(400, "invalid chunk extension"))
                }
            case .extensionQuotedPair:
                guard HTTPBytes.isFieldValueByte(byte) else { return .failed(.init(400, "invalid chunk extension")) }
                self.state = .extensionQuoted
            case .extensionQuoteEnd:
                if byte == CR {
                    self.state = .sizeLF
                } else if byte == UInt8(ascii: ";") {
                    self.state = .extensionNameStart
                } else {
                    return .failed(.init(400, "invalid chunk extension"))
                }
            case .sizeLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF in a chunk")) }
                self.sizeDigits = 0
                self.state = self.remaining == 0 ? .trailerStart : .data
            case .data:
                let available = UInt64(bytes.count - index)
                let take = Int(min(available, self.remaining))
                data(index..<(index + take))
                self.remaining -= UInt64(take)
                index += take
                if self.remaining == 0 { self.state = .dataCR }
                continue
            case .dataCR:
                guard byte == CR else { return .failed(.init(400, "chunk data longer than its size")) }
                self.state = .dataLF
            case .dataLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF in a chunk")) }
                self.state = .size
            case .trailerStart:
                if byte == CR {
                    self.state = .endLF
                } else if HTTPBytes.isToken(byte) {
                    self.state = .trailerName
                    self.trailerCandidates = 0b11
                    self.trailerNameLength = 0
                    self.matchTrailerName(byte)
                } else {
                    return .failed(.init(400, "invalid trailer field"))
                }
            case .trailerName:
                if byte == COLON {
                    for (bit, name) in Self.forbiddenTrailers.enumerated()
                    where self.trailerCandidates & (1 << bit) != 0 && name.count == self.trailerNameLength {
                        return .failed(.init(400, "a framing field in the trailers"))
                    }
                    self.state = .trailerValue
                } else if HTTPBytes.isToken(byte) {
                    self.matchTrailerName(byte)
                } else {
                    return .failed(.init(400, "invalid trailer field"))
                }
            case .trailerValue:
                if byte == CR {
                    self.state = .trailerLF
                } else if !HTTPBytes.isFieldValueByte(byte) {
                    return .failed(.init(400, "invalid trailer field"))
                }
            case .trailerLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF in a trailer")) }
                self.state = .trailerStart
            case .endLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF at the end of a chunked body")) }
                self.state = .done
                return .consumed(index + 1, finished: true)
            case .done:
                return .consumed(index, finished: true)
            }
            if self.state.isTrailer {
                self.trailerBytes += 1
                if self.trailerBytes > Self.maxTrailerBytes { return .failed(.init(400, "trailers too large")) }
            }
            index += 1
        }
        return .consumed(index, finished: self.state == .done)
    }
}

extension ChunkedDecoder {
    private mutating func matchTrailerName(_ byte: UInt8) {
        let lower = HTTPBytes.lower(byte)
        for (bit, name) in Self.forbiddenTrailers.enumerated() where self.trailerCandidates & (1 << bit) != 0 {
            if self.trailerNameLength >= name.count || name[self.trailerNameLength] != lower {
                self.trailerCandidates &= ~(1 << bit)
            }
        }
        self.trailerNameLength += 1
    }
}

extension ChunkedDecoder.State {
    fileprivate var isTrailer: Bool {
        switch self {
        case .trailerStart, .trailerName, .trailerValue, .trailerLF: return true
        default: return false
        }
    }
}

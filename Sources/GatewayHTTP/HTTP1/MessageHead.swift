/// A parsed HTTP/1.x message head, a client's request or an upstream's response: offsets into
/// the bytes it was parsed from (nothing copied, no `String`), the fields the proxy acts on
/// identified once, and the framing decided.
///
/// The bytes stay in the connection's input buffer while the head is in use: offsets are
/// relative to the start of the buffer slice given to `HeadParser.parse`.
public struct MessageHead: Sendable {
    // Requests.
    public var method: Method = .get
    /// The method as sent (llhttp's method list; see `Method`).
    public var methodRange: Range<Int> = 0..<0
    public var target: Range<Int> = 0..<0
    // Responses.
    public var status: UInt16 = 0
    /// The status line's reason phrase (possibly empty).
    public var reason: Range<Int> = 0..<0
    /// `HTTP/1.0` (else 1.1).
    public var isHTTP10 = false
    /// Bytes of the whole head, from the first byte given (leading empty lines included) to the
    /// blank line's LF, inclusive.
    public var length = 0
    /// In order, every field line of the head.
    public var fields: [Field] = []

    // Decided from the fields, after the head is complete.
    public var framing: BodyFraming = .none
    /// `Content-Length` and `Transfer-Encoding` both came (a response's length is then the
    /// chunked one, RFC 9112 §6.3, and the Content-Length must not be forwarded).
    public var hasConflictingLength = false
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    public var keepAlive = true
    /// `Connection: upgrade` with an `Upgrade` field (llhttp stops parsing after such a head).
    public var wantsUpgrade = false
    /// `Expect: 100-continue`.
    public var expectsContinue = false
    /// `Host` fields seen, and the first one's value.
    public var hostCount = 0
    public var host: Range<Int>?
    /// Field names that `Connection` lists besides close, keep-alive and upgrade: hop-by-hop
    /// fields of this connection (RFC 9110 §7.6.1), as ranges of the `Connection` values.
    public var connectionOptions: [Range<Int>] = []

    public init() {
        self.fields.reserveCapacity(32)
        self.connectionOptions.reserveCapacity(4)
    }

    /// Clears everything, keeping the arrays' storage (no allocation per request).
    public mutating func reset() {
        self.method = .get
        self.methodRange = 0..<0
        self.target = 0..<0
        self.status = 0
        self.reason = 0..<0
        self.isHTTP10 = false
        self.hasConflictingLength = false
        self.length = 0
        self.fields.removeAll(keepingCapacity: true)
        self.framing = .none
        self.keepAlive = true
        self.wantsUpgrade = false
        self.expectsContinue = false
        self.hostCount = 0
        self.host = nil
        self.connectionOptions.removeAll(keepingCapacity: true)
    }

    /// The first field named `name`.
    public func first(_ name: FieldName) -> Field? {
        for field in self.fields where field.name == name {
            return field
        }
        return nil
    }

    public func count(_ name: FieldName) -> Int {
        var count = 0
        for field in self.fields where field.name == name {
            count += 1
        }
        return count
    }
}

/// One field line: where its name and value are; the value without surrounding whitespace.
public struct Field: Sendable, Equatable {
    public var nameStart: UInt32
    public var nameEnd: UInt32
    public var valueStart: UInt32
    public var valueEnd: UInt32
    public var name: FieldName
    /// The whole line, from the name to its CRLF inclusive: what is copied when the field is
    /// forwarded unchanged.
    public var lineEnd: UInt32

    @inline(__always) public var nameRange: Range<Int> { Int(self.nameStart)..<Int(self.nameEnd) }
    @inline(__always) public var valueRange: Range<Int> { Int(self.valueStart)..<Int(self.valueEnd) }
    @inline(__always) public var lineRange: Range<Int> { Int(self.nameStart)..<Int(self.lineEnd) }
}

/// How a message's body is delimited (RFC 9112 §6).
public enum BodyFraming: Sendable, Equatable {
    case none
    case length(UInt64)
    case chunked
    /// Responses only: the body ends when the connection does.
    case untilClose
}

/// The methods llhttp (NIOHTTP1's parser) knows; anything else is refused, as it does. The
/// common ones get a case, the rest are `.other` (their bytes are in `methodRange`).
public enum Method: UInt8, Sendable, Equatable {
    case get, head, post, put, delete, connect, options, trace, patch, other

    /// RFC 9110 §9.2.2.
    public var isIdempotent: Bool {
        switch self {
        case .get, .head, .options, .trace, .put, .delete: return true
        case .post, .connect, .patch, .other: return false
        }
    }
}

/// The fields gatewayd acts on, recognised once while parsing (case-insensitively).
public enum FieldName: UInt8, Sendable, Equatable {
    case other
    case host
    case contentLength
    case transferEncoding
    case connection
    case keepAlive
    case proxyConnection
    case te
    case upgrade
    case expect
    case trailer
    case xForwardedFor
    case xForwardedProto
    case xForwardedHost
    case xRequestID
    case via
    case authorization
    case proxyAuthorization
    case userAgent
    case referer
    /// RFC 7239's `Forwarded` and the de-facto `X-Real-IP`: client addresses an upstream may
    /// trust, which gatewayd does not write, so it passes them on only from a trusted proxy.
    case forwarded
    case xRealIP
    /// `x_forwarded_for`, `x_forwarded_host`, `x_forwarded_proto`, `x_real_ip`: underscore
    /// spellings that CGI-style frameworks read as the real field (both become
    /// `HTTP_X_FORWARDED_FOR`); nginx drops every field with an underscore by default
    /// (`underscores_in_headers off`).
    case forwardingAlias

    /// Hop-by-hop fields (RFC 9110 §7.6.1, plus the non-standard `keep-alive` and
    /// `proxy-connection` that clients still send): never forwarded. `Trailer` is not one.
    public var isHopByHop: Bool {
        switch self {
        case .connection, .keepAlive, .proxyConnection, .te, .transferEncoding, .upgrade: return true
        default: return false
        }
    }
}

/// Why a head was refused: the status to answer (400, 431, 501) and a reason for the body.
public struct HTTPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: UInt16
    public var reason: StaticString

    public init(_ status: UInt16, _ reason: StaticString) {
        self.status = status
        self.reason = reason
    }

    public var description: String { "\(self.reason)" }

    public static func == (lhs: HTTPParseError, rhs: HTTPParseError) -> Bool {
        lhs.status == rhs.status && lhs.reason.description == rhs.reason.description
    }
}

/// Parses an HTTP/1.x message head in place, a client's request or an upstream's response, one
/// byte at a time, resumable: nginx's `ngx_http_parse_request_line` shape (a state machine over
/// bytes, no allocation per field), with the offsets kept as HAProxy's HTX and httparse keep
/// them.
///
/// Resumable: given the same buffer grown by more bytes, `parse` continues where it stopped,
/// so a head that arrives a byte at a time costs one pass over its bytes, not one per read. A
/// bad byte is refused when it arrives, not when the head ends.
///
/// The grammar is RFC 9112's, as strictly as llhttp (NIOHTTP1's parser, which this replaces on
/// the data path) reads it: no bare LF, no bare CR, no obs-fold, no whitespace before a
/// field's colon, tokens for methods and field names, no control bytes in values, only
/// `HTTP/1.0` and `HTTP/1.1`. Where it is stricter than llhttp, `HTTPParseError.isStricterThanLLHTTP`
/// says so (the differential test against llhttp allows exactly those).
public struct HeadParser: Sendable {
    public enum Kind: Sendable {
        case request
        /// An upstream's response to a request with this method (a HEAD's has no body).
        case response
    }

    public let kind: Kind
    /// `limits.max_header_bytes`: past it, 431.
    public var maxHeadBytes: Int
    /// Field lines; past it, 431. nginx allows about 100 by default (its large buffers), Envoy 100.
    public var maxFields: Int

    private enum State: UInt8 {
        case start
        case method
        case target
        case version
        case statusVersion
        case statusCode
        case reason
        case requestLineLF
        case fieldStart
        case name
        case valueStart
        case value
        case fieldLF
        case headEndLF
    }

    private var state: State = .start
    /// Where parsing resumes.
    private var position = 0
    /// Start of the element being parsed (method, target, version, name or value).
    private var mark = 0
    private var nameStart = 0
    private var nameEnd = 0
    private var valueStart = 0
    /// One past the last non-whitespace byte of the value so far.
    private var valueEnd = 0
    /// The field being parsed, known from its colon on.
    private var currentName: FieldName = .other
    /// Content-Length fields so far: a second one is refused at its colon, as llhttp does.
    private var contentLengths = 0
    private var transferEncodings = 0

    public init(_ kind: Kind, maxHeadBytes: Int = 64 * 1024, maxFields: Int = 100) {
        self.kind = kind
        self.maxHeadBytes = maxHeadBytes
        self.maxFields = maxFields
    }

    public enum Outcome: Sendable, Equatable {
        /// More bytes are needed; nothing is wrong so far.
        case incomplete
        /// `head` is whole: `head.length` bytes.
        case complete
        case failed(HTTPParseError)
    }

    /// Forgets the head parsed so far: call before parsing the next request, with the next
    /// request's bytes at offset 0 of the buffer passed.
    public mutating func reset() {
        self.state = .start
        self.position = 0
        self.mark = 0
        self.contentLengths = 0
        self.transferEncodings = 0
    }

    /// Parses `bytes` (the whole head so far, from its first byte), continuing from the last
    /// call. `head` is filled in; on `.complete` its framing and flags are decided.
    public mutating func parse(_ bytes: UnsafeBufferPointer<UInt8>, into head: inout MessageHead) -> Outcome {
        if self.position == 0, self.state == .start {
            head.reset()
        }
        let limit = min(bytes.count, self.maxHeadBytes)
        var index = self.position
        defer { self.position = index }
        while index < limit {
            let byte = bytes[index]
            switch self.state {
            case .start:
                // llhttp and RFC 9112 §2.2: empty lines before a request line are ignored.
                if self.kind == .request, byte == CR || byte == LF {
                    index += 1
                    continue
                }
                self.mark = index
                if self.kind == .response {
                    self.state = .statusVersion
                    continue
                }
                guard HTTPBytes.isToken(byte) else { return .failed(.init(400, "invalid method")) }
                self.state = .method
            case .method:
                if HTTPBytes.isToken(byte) {
                    // Longer than any method llhttp knows: refused now, not at header_timeout.
                    guard index - self.mark < Self.longestMethod else { return .failed(.init(400, "unknown method")) }
                    break
                }
                guard byte == SP else { return .failed(.init(400, "invalid method")) }
                let range = self.mark..<index
                guard let method = Self.method(UnsafeBufferPointer(rebasing: bytes[range])) else {
                    if HTTPBytes.equals(UnsafeBufferPointer(rebasing: bytes[range]), "PRI") {
                        // llhttp waits for the rest of the preface before it refuses it.
                        return .failed(.init(400, "an HTTP/2 connection preface"))
                    }
                    return .failed(.init(400, "unknown method"))
                }
                head.method = method
                head.methodRange = range
                self.mark = index + 1
                self.state = .target
            case .target:
                if HTTPBytes.isTargetByte(byte) {
                    break
                }
                if byte == SP, index == self.mark {
                    return .failed(.init(400, "more than one space in the request line"))
                }
                guard byte == SP else {
                    return .failed(.init(400, "invalid byte in the request target"))
                }
                guard index > self.mark else { return .failed(.init(400, "empty request target")) }
                head.target = self.mark..<index
                if let error = Self.checkTargetForm(bytes, head) { return .failed(error) }
                self.mark = index + 1
                self.state = .version
            case .version:
                // "HTTP/1.0" or "HTTP/1.1", then CR.
                let offset = index - self.mark
                if offset < 7 {
                    if offset == 0, byte == SP {
                        return .failed(.init(400, "more than one space in the request line"))
                    }
                    guard byte == Self.versionPrefix[offset] else {
                        return .failed(.init(400, "invalid or unsupported HTTP version"))
                    }
                } else if offset == 7 {
                    guard byte == DIGIT0 || byte == DIGIT1 else {
                        return .failed(.init(400, "invalid or unsupported HTTP version"))
                    }
                    head.isHTTP10 = byte == DIGIT0
                } else {
                    guard byte == CR else { return .failed(.init(400, "invalid or unsupported HTTP version")) }
                    self.state = .requestLineLF
                }
            case .statusVersion:
                // "HTTP/1.x " (any digit: a response's version only tells what the upstream
                // speaks; 1.0 means no chunked coding and no keep-alive by default).
                let offset = index - self.mark
                if offset < 7 {
                    guard byte == Self.versionPrefix[offset] else {
                        return .failed(.init(502, "not an HTTP/1.x response"))
                    }
                } else if offset == 7 {
                    guard (byte &- DIGIT0) < 10 else { return .failed(.init(502, "not an HTTP/1.x response")) }
                    head.isHTTP10 = byte == DIGIT0
                } else {
                    guard byte == SP else { return .failed(.init(502, "not an HTTP/1.x response")) }
                    self.mark = index + 1
                    head.status = 0
                    self.state = .statusCode
                }
            case .statusCode:
                let offset = index - self.mark
                if offset < 3 {
                    let digit = byte &- DIGIT0
                    guard digit < 10, offset > 0 || digit > 0 else { return .failed(.init(502, "invalid status code")) }
                    head.status = head.status * 10 + UInt16(digit)
                } else if byte == SP {
                    self.mark = index + 1
                    self.state = .reason
                } else if byte == CR {
                    head.reason = index..<index
                    self.state = .requestLineLF
                } else {
                    return .failed(.init(502, "invalid status code"))
                }
            case .reason:
                if byte == CR {
                    head.reason = self.mark..<index
                    self.state = .requestLineLF
                } else if !HTTPBytes.isFieldValueByte(byte) {
                    return .failed(.init(502, "invalid byte in the reason phrase"))
                }
            case .requestLineLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF")) }
                self.state = .fieldStart
            case .fieldStart:
                if byte == CR {
                    self.state = .headEndLF
                } else if HTTPBytes.isToken(byte) {
                    guard head.fields.count < self.maxFields else {
                        return .failed(.init(431, "too many header fields"))
                    }
                    self.nameStart = index
                    self.state = .name
                } else if byte == SP || byte == HTAB {
                    return .failed(.init(400, "obsolete line folding"))
                } else {
                    return .failed(.init(400, "invalid header field name"))
                }
            case .name:
                if HTTPBytes.isToken(byte) {
                    break
                }
                guard byte == COLON else { return .failed(.init(400, "invalid header field name")) }
                self.nameEnd = index
                self.currentName = FieldName.identify(UnsafeBufferPointer(rebasing: bytes[self.nameStart..<index]))
                // Framing fields that cannot go together are refused at the colon, as llhttp does.
                if self.kind == .request, self.currentName == .contentLength {
                    self.contentLengths += 1
                    if self.contentLengths > 1 { return .failed(.init(400, "more than one Content-Length")) }
                    if self.transferEncodings > 0 {
                        return .failed(.init(400, "both Content-Length and Transfer-Encoding"))
                    }
                } else if self.kind == .request, self.currentName == .transferEncoding {
                    self.transferEncodings += 1
                    if self.transferEncodings > 1 { return .failed(.init(400, "invalid Transfer-Encoding")) }
                    if self.contentLengths > 0 {
                        return .failed(.init(400, "both Content-Length and Transfer-Encoding"))
                    }
                    // RFC 9112 §6.1: faulty framing in HTTP/1.0.
                    if head.isHTTP10 { return .failed(.init(400, "Transfer-Encoding in an HTTP/1.0 request")) }
                }
                self.state = .valueStart
            case .valueStart:
                if byte == SP || byte == HTAB {
                    break
                }
                self.valueStart = index
                self.valueEnd = index
                self.state = .value
                continue  // the same byte is the value's first (or its CR)
            case .value:
                if byte == CR {
                    self.state = .fieldLF
                } else if HTTPBytes.isFieldValueByte(byte) {
                    if self.kind == .request, self.currentName == .contentLength, byte == SP || byte == HTAB {
                        // llhttp refuses whitespace after a length's digits; so do we.
                        return .failed(.init(400, "invalid Content-Length"))
                    }
                    if self.kind == .request, self.currentName == .transferEncoding, byte == HTAB {
                        // llhttp takes a tab after `chunked` as part of another coding, so it
                        // refuses `chunked<TAB>`; an upstream built on it would disagree with us.
                        return .failed(.init(400, "invalid Transfer-Encoding"))
                    }
                    if self.kind == .request, self.currentName == .transferEncoding, byte != SP, byte != HTAB,
                        index - self.valueStart >= 7,
                        HTTPBytes.equalsIgnoringCase(
                            UnsafeBufferPointer(rebasing: bytes[self.valueStart..<(self.valueStart + 7)]), "chunked")
                    {
                        // `chunked` then another coding: refused as it comes, as llhttp does.
                        return .failed(.init(400, "invalid Transfer-Encoding"))
                    }
                    if byte != SP && byte != HTAB {
                        // A length is digits, checked as they come (llhttp refuses `5x` at the x).
                        if self.kind == .request, self.currentName == .contentLength,
                            (byte &- DIGIT0) >= 10 || index - self.valueStart >= 19
                        {
                            return .failed(.init(400, "invalid Content-Length"))
                        }
                        self.valueEnd = index + 1
                    }
                } else {
                    return .failed(.init(400, "invalid byte in a header field value"))
                }
            case .fieldLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF")) }
                let field = Field(
                    nameStart: UInt32(self.nameStart), nameEnd: UInt32(self.nameEnd),
                    valueStart: UInt32(self.valueStart), valueEnd: UInt32(self.valueEnd), name: self.currentName,
                    lineEnd: UInt32(index + 1))
                head.fields.append(field)
                if self.kind == .request, let error = self.checkFraming(field, bytes, head) { return .failed(error) }
                self.state = .fieldStart
            case .headEndLF:
                guard byte == LF else { return .failed(.init(400, "CR without LF")) }
                index += 1
                head.length = index
                let error = self.kind == .request ? Self.decide(bytes, &head) : Self.decideResponse(bytes, &head)
                if let error { return .failed(error) }
                return .complete
            }
            index += 1
        }
        if bytes.count >= self.maxHeadBytes {
            return .failed(
                self.kind == .request ? .init(431, "request headers too large") : .init(502, "response head too large"))
        }
        // A method or a target cut short must still be the start of one (llhttp refuses `h` or
        // `GET ;/` at once, not at header_timeout).
        if self.state == .method, !Self.isMethodPrefix(UnsafeBufferPointer(rebasing: bytes[self.mark..<index])) {
            return .failed(.init(400, "unknown method"))
        }
        if self.state == .target, index > self.mark, head.method != .connect,
            !Self.isTargetPrefix(UnsafeBufferPointer(rebasing: bytes[self.mark..<index]))
        {
            return .failed(.init(400, "invalid request target"))
        }
        return .incomplete
    }

    private static let versionPrefix: [UInt8] = Array("HTTP/1.".utf8)

    private static let methods: [StaticString] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "COPY", "LOCK", "MKCOL", "MOVE",
        "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY",
        "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK", "UNLINK",
        "SOURCE", "QUERY",
    ]
    private static let longestMethod = 11

    static func isMethodPrefix(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        // llhttp matches every method it knows (RTSP's, and PRI, which starts the HTTP/2
        // preface) before it refuses those that are not HTTP's.
        (methods + ["PRI", "DESCRIBE", "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "REDIRECT", "RECORD", "FLUSH"])
            .contains { name in
                name.utf8CodeUnitCount >= bytes.count
                    && HTTPBytes.equals(bytes, name.utf8Start, count: bytes.count)
            }
    }

    /// Whether `bytes` can start an origin-form, absolute-form or asterisk-form target.
    static func isTargetPrefix(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let first = bytes[0]
        if first == UInt8(ascii: "/") || first == UInt8(ascii: "*") { return true }
        guard (HTTPBytes.lower(first) &- UInt8(ascii: "a")) < 26 else { return false }
        var index = 1
        while index < bytes.count, ASCII.isSchemeByte(bytes[index]) { index += 1 }
        let rest: [UInt8] = [COLON, UInt8(ascii: "/"), UInt8(ascii: "/")]
        var offset = 0
        while index < bytes.count, offset < 3 {
            guard bytes[index] == rest[offset] else { return false }
            index += 1
            offset += 1
        }
        return true
    }

    /// Origin-form, absolute-form (`scheme://`), `*`, or authority-form for CONNECT only: what
    /// llhttp's URL parser takes. `RequestTarget` canonicalises and checks the rest.
    static func checkTargetForm(_ bytes: UnsafeBufferPointer<UInt8>, _ head: MessageHead) -> HTTPParseError? {
        let first = bytes[head.target.lowerBound]
        if first == UInt8(ascii: "/") || first == UInt8(ascii: "*") || head.method == .connect { return nil }
        var index = head.target.lowerBound
        while index < head.target.upperBound, ASCII.isSchemeByte(bytes[index]) { index += 1 }
        if index > head.target.lowerBound, index + 2 < head.target.upperBound, bytes[index] == COLON,
            bytes[index + 1] == UInt8(ascii: "/"), bytes[index + 2] == UInt8(ascii: "/")
        {
            return nil
        }
        return .init(400, "invalid request target")
    }

    /// llhttp's HTTP method list (its `HTTP_METHOD_MAP`); the rest are refused as it does.
    static func method(_ bytes: UnsafeBufferPointer<UInt8>) -> Method? {
        switch bytes.count {
        case 3:
            if HTTPBytes.equals(bytes, "GET") { return .get }
            if HTTPBytes.equals(bytes, "PUT") { return .put }
            if HTTPBytes.equals(bytes, "ACL") { return .other }
        case 4:
            if HTTPBytes.equals(bytes, "POST") { return .post }
            if HTTPBytes.equals(bytes, "HEAD") { return .head }
            for name: StaticString in ["COPY", "LOCK", "MOVE", "BIND", "LINK"] where HTTPBytes.equals(bytes, name) {
                return .other
            }
        case 5:
            if HTTPBytes.equals(bytes, "PATCH") { return .patch }
            if HTTPBytes.equals(bytes, "TRACE") { return .trace }
            for name: StaticString in ["MKCOL", "MERGE", "PURGE", "QUERY"] where HTTPBytes.equals(bytes, name) {
                return .other
            }
        case 6:
            if HTTPBytes.equals(bytes, "DELETE") { return .delete }
            for name: StaticString in ["SEARCH", "UNLOCK", "REBIND", "UNBIND", "REPORT", "NOTIFY", "UNLINK", "SOURCE"]
            where HTTPBytes.equals(bytes, name) {
                return .other
            }
        case 7:
            if HTTPBytes.equals(bytes, "OPTIONS") { return .options }
            if HTTPBytes.equals(bytes, "CONNECT") { return .connect }
        case 8:
            for name: StaticString in ["PROPFIND", "CHECKOUT", "M-SEARCH"]
            where HTTPBytes.equals(bytes, name) {
                return .other
            }
        case 9:
            for name: StaticString in ["PROPPATCH", "SUBSCRIBE"] where HTTPBytes.equals(bytes, name) {
                return .other
            }
        case 10:
            if HTTPBytes.equals(bytes, "MKACTIVITY") || HTTPBytes.equals(bytes, "MKCALENDAR") { return .other }
        case 11:
            if HTTPBytes.equals(bytes, "UNSUBSCRIBE") { return .other }
        default:
            break
        }
        return nil
    }

    /// A request's framing fields, checked as each completes (llhttp refuses them there, before
    /// the head ends). Stricter than RFC 9112 allows in two places, as nginx and HAProxy are: a
    /// `Content-Length` repeated (even with the same value, or as a list) and any transfer
    /// coding but a single `chunked` are refused, because each is a way for two parsers to
    /// disagree about where the body ends.
    private mutating func checkFraming(
        _ field: Field, _ bytes: UnsafeBufferPointer<UInt8>, _ head: MessageHead
    ) -> HTTPParseError? {
        switch field.name {
        case .contentLength:
            let value = UnsafeBufferPointer(rebasing: bytes[field.valueRange])
            guard HTTPBytes.decimal(value) != nil else { return .init(400, "invalid Content-Length") }
        case .transferEncoding:
            let value = UnsafeBufferPointer(rebasing: bytes[field.valueRange])
            guard !value.isEmpty else { return .init(400, "invalid Transfer-Encoding") }
            if !HTTPBytes.equalsIgnoringCase(value, "chunked") {
                // gzip, chunked: a coding gatewayd would have to undo (nginx answers 501 too).
                // Anything else: chunked is not the final coding (RFC 9112 §6.3): 400.
                return HTTPBytes.endsWithChunkedCoding(value)
                    ? .init(501, "transfer coding not supported") : .init(400, "invalid Transfer-Encoding")
            }
        default:
            break
        }
        return nil
    }

    // MARK: Semantics of a whole head

    /// Framing (RFC 9112 §6; the fields were checked by `checkFraming`), keep-alive, Host,
    /// Expect, upgrade.
    static func decide(_ bytes: UnsafeBufferPointer<UInt8>, _ head: inout MessageHead) -> HTTPParseError? {
        var contentLength: UInt64?
        var chunked = false
        var connectionClose = false
        var connectionKeepAlive = false
        var connectionUpgrade = false
        var upgradeField = false
        for field in head.fields {
            let value = UnsafeBufferPointer(rebasing: bytes[field.valueRange])
            switch field.name {
            case .host:
                head.hostCount += 1
                if head.host == nil { head.host = field.valueRange }
            case .contentLength:
                contentLength = HTTPBytes.decimal(value)
            case .transferEncoding:
                chunked = true
            case .connection:
                var failed = false
                HTTPBytes.forEachToken(value) { token in
                    let bytes = UnsafeBufferPointer(rebasing: value[token])
                    if HTTPBytes.equalsIgnoringCase(bytes, "close") {
                        connectionClose = true
                    } else if HTTPBytes.equalsIgnoringCase(bytes, "keep-alive") {
                        connectionKeepAlive = true
                    } else if HTTPBytes.equalsIgnoringCase(bytes, "upgrade") {
                        connectionUpgrade = true
                    } else if bytes.allSatisfy(HTTPBytes.isToken) {
                        let base = field.valueRange.lowerBound
                        head.connectionOptions.append((base + token.lowerBound)..<(base + token.upperBound))
                    } else {
                        failed = true
                    }
                }
                if failed { return .init(400, "invalid Connection") }
            case .upgrade:
                upgradeField = true
            case .expect:
                if HTTPBytes.equalsIgnoringCase(value, "100-continue") { head.expectsContinue = true }
            default:
                break
            }
        }
        if chunked {
            head.framing = .chunked
        } else if let contentLength, contentLength > 0 {
            head.framing = .length(contentLength)
        } else {
            head.framing = .none
        }
        head.keepAlive = !connectionClose && (!head.isHTTP10 || connectionKeepAlive)
        head.wantsUpgrade = (connectionUpgrade && upgradeField) || head.method == .connect
        return nil
    }
}

extension HeadParser {
    /// A response's framing (RFC 9112 §6.3) but for what depends on the request (HEAD, 1xx,
    /// 204, 304: `ResponseFraming.body(for:)`). Errors are the upstream's: 502.
    static func decideResponse(_ bytes: UnsafeBufferPointer<UInt8>, _ head: inout MessageHead) -> HTTPParseError? {
        var contentLength: UInt64?
        var transferEncoding: Range<Int>?
        var connectionClose = false
        var connectionKeepAlive = false
        for field in head.fields {
            let value = UnsafeBufferPointer(rebasing: bytes[field.valueRange])
            switch field.name {
            case .contentLength:
                // Two that agree are one length (RFC 9112 §6.3 item 5); two that differ: no length.
                guard let length = HTTPBytes.decimal(value), contentLength == nil || contentLength == length else {
                    return .init(502, "invalid Content-Length from the upstream")
                }
                contentLength = length
            case .transferEncoding:
                guard transferEncoding == nil else {
                    return .init(502, "Transfer-Encoding repeated by the upstream")
                }
                transferEncoding = field.valueRange
            case .connection:
                HTTPBytes.forEachToken(value) { token in
                    let bytes = UnsafeBufferPointer(rebasing: value[token])
                    if HTTPBytes.equalsIgnoringCase(bytes, "close") {
                        connectionClose = true
                    } else if HTTPBytes.equalsIgnoringCase(bytes, "keep-alive") {
                        connectionKeepAlive = true
                    } else {
                        let base = field.valueRange.lowerBound
                        head.connectionOptions.append((base + token.lowerBound)..<(base + token.upperBound))
                    }
                }
            case .upgrade:
                head.wantsUpgrade = true
            default:
                break
            }
        }
        if let transferEncoding {
            // §6.3 item 4: chunked last, or the body ends with the connection. Content-Length is
            // ignored then (and not forwarded).
            let value = UnsafeBufferPointer(rebasing: bytes[transferEncoding])
            head.framing = HTTPBytes.endsWithChunkedCoding(value) ? .chunked : .untilClose
            head.hasConflictingLength = contentLength != nil
        } else if let contentLength {
            head.framing = .length(contentLength)
        } else {
            head.framing = .untilClose
        }
        head.keepAlive = !connectionClose && (!head.isHTTP10 || connectionKeepAlive) && head.framing != .untilClose
        return nil
    }
}

/// What follows a response head, once the request it answers is known.
public enum ResponseFraming {
    /// RFC 9112 §6.3 items 1-2: a response to HEAD, a 1xx, 204 or 304 has no body whatever its
    /// fields say (a 101 is followed by the new protocol, not a body).
    public static func body(status: UInt16, framing: BodyFraming, requestMethod: Method) -> BodyFraming {
        if requestMethod == .head || status < 200 || status == 204 || status == 304 {
            return .none
        }
        if case .length(0) = framing { return .none }
        return framing
    }
}

extension HTTPParseError {
    /// Refusals of input llhttp accepts: the differential test allows these, and only these.
    public var isStricterThanLLHTTP: Bool {
        switch self.reason.description {
        case "more than one Content-Length", "invalid Transfer-Encoding", "transfer coding not supported",
            "invalid byte in the request target", "invalid Connection", "too many header fields",
            "invalid Content-Length", "invalid or unsupported HTTP version", "more than one space in the request line",
            "request headers too large", "Transfer-Encoding in an HTTP/1.0 request", "an HTTP/2 connection preface":
            return true
        default:
            return false
        }
    }
}

@usableFromInline let CR: UInt8 = 13
@usableFromInline let LF: UInt8 = 10
@usableFromInline let SP: UInt8 = 32
@usableFromInline let HTAB: UInt8 = 9
@usableFromInline let COLON: UInt8 = 58
@usableFromInline let DIGIT0: UInt8 = 48
@usableFromInline let DIGIT1: UInt8 = 49

/// The request target (RFC 9112 §3.2), turned into the one canonical path that routing and the
/// upstream both see.
///
/// Why canonical, and why refuse: a gateway that routes on one reading of a path and forwards
/// bytes the upstream reads another way has an authorization bypass. `//admin`, `/x/../admin`,
/// `/%61dmin` and `http://h/x/../admin` all reach `/admin` on nginx (`merge_slashes`), Tomcat,
/// Spring and most frameworks; a route guarding `/admin` must see them as `/admin`. So the path
/// is canonicalised before routing, and the canonical bytes are what go upstream:
///
/// - percent-escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2), the hex digits
///   of every other escape are upper-cased (§6.2.2.1);
/// - `.` and `..` segments are removed (§5.2.4); a `..` above the root is refused (as nginx);
/// - runs of `/` are merged (nginx's `merge_slashes`, on by default; `PathRules.mergeSlashes`).
///
/// Refused, because servers disagree on what they mean and no canonical form is safe: an
/// encoded `/` (`%2F`: Tomcat and IIS decode it into a separator, nginx and Envoy do not), an
/// encoded or raw `\` (IIS, ASP.NET and Windows hosts read it as `/`), NUL and control bytes,
/// raw or encoded (they end strings in C upstreams and split header lines in log pipelines),
/// `%C0`/`%C1` (overlong UTF-8, decoded to `/` or `.` by lenient decoders), a fragment (never
/// sent by a client; RFC 9112's request-target has none), userinfo in an absolute-form target
/// (RFC 9110 §4.2.4), and by default `;` in the path (Tomcat, Jetty and Spring strip `;params`
/// from each segment, so `/admin/users;x` and `/admin;/users` are `/admin/users` there while a
/// byte-wise router sees another path; `/..;/` is a dot segment to Tomcat and not to nginx).
/// Envoy and HAProxy refuse encoded slashes and backslashes the same way by default.
///
/// The query is passed on as sent: routing never reads it.
public enum RequestTarget {
    public enum Form: Sendable, Equatable {
        /// `/path?query`
        case origin
        /// `http://authority/path?query`: the authority replaces the Host header (RFC 9112 §3.2.2).
        case absolute
        /// `*`, for `OPTIONS *`.
        case asterisk
    }

    /// Where the parts of a target are, as offsets into the bytes parsed, and the canonical path
    /// when it differs from the one sent.
    public struct Parsed: Sendable, Equatable {
        public var form: Form
        /// The authority of an absolute-form target (userinfo never allowed).
        public var authority: Range<Int>?
        /// The path as sent: empty for an absolute-form target without one (`http://h?q`).
        public var path: Range<Int>
        /// `nil`: the path as sent is canonical. Otherwise the canonical path.
        public var rewrittenPath: [UInt8]?
        /// After the `?`, when there is one.
        public var query: Range<Int>?

        public init(
            form: Form, authority: Range<Int>?, path: Range<Int>, rewrittenPath: [UInt8]?, query: Range<Int>?
        ) {
            self.form = form
            self.authority = authority
            self.path = path
            self.rewrittenPath = rewrittenPath
            self.query = query
        }
    }

    /// Parses and canonicalises `target`. Allocates only when the path must be rewritten.
    public static func parse(
        _ target: UnsafeBufferPointer<UInt8>, rules: PathRules = PathRules()
    ) throws(RequestTargetError) -> Parsed {
        guard let first = target.first else { throw .empty }
        if target.contains(UInt8(ascii: "#")) { throw .fragment }
        if first == UInt8(ascii: "*") {
            guard target.count == 1 else { throw .notAPath }
            return Parsed(form: .asterisk, authority: nil, path: 0..<1, rewrittenPath: nil, query: nil)
        }
        var form = Form.origin
        var authority: Range<Int>?
        var pathStart = 0
        if first != UInt8(ascii: "/") {
            let (authorityRange, afterAuthority) = try Self.absoluteFormAuthority(target)
            form = .absolute
            authority = authorityRange
            pathStart = afterAuthority
        }
        var pathEnd = pathStart
        while pathEnd < target.count, target[pathEnd] != UInt8(ascii: "?") {
            pathEnd += 1
        }
        let query: Range<Int>? = pathEnd < target.count ? (pathEnd + 1)..<target.count : nil
        let pathBytes = UnsafeBufferPointer(rebasing: target[pathStart..<pathEnd])
        var rewritten: [UInt8]?
        if pathBytes.isEmpty {
            // `http://host` and `http://host?q`: the path is "/" (RFC 9110 §4.2.3).
            rewritten = [UInt8(ascii: "/")]
        } else {
            rewritten = try PathCanonicalizer.canonicalize(pathBytes, rules: rules)
        }
        return Parsed(
            form: form, authority: authority, path: pathStart..<pathEnd, rewrittenPath: rewritten, query: query)
    }

    /// `scheme://authority` at the start of `target`: returns the authority and where the path
    /// starts. Only `http` and `https` (any case) are targets a reverse proxy serves.
    private static func absoluteFormAuthority(
        _ target: UnsafeBufferPointer<UInt8>
    ) throws(RequestTargetError) -> (Range<Int>, Int) {
        var index = 0
        while index < target.count, ASCII.isSchemeByte(target[index]) {
            index += 1
        }
        guard index > 0, index + 2 < target.count, target[index] == UInt8(ascii: ":"),
            target[index + 1] == UInt8(ascii: "/"), target[index + 2] == UInt8(ascii: "/")
        else { throw .notAPath }
        let scheme = UnsafeBufferPointer(rebasing: target[0..<index])
        guard ASCII.equalsIgnoringCase(scheme, "http") || ASCII.equalsIgnoringCase(scheme, "https") else {
            throw .unsupportedScheme
        }
        let start = index + 3
        var end = start
        while end < target.count, target[end] != UInt8(ascii: "/"), target[end] != UInt8(ascii: "?") {
            end += 1
        }
        let authority = UnsafeBufferPointer(rebasing: target[start..<end])
        if authority.contains(UInt8(ascii: "@")) { throw .userinfo }
        guard Authority.isValid(authority) else { throw .invalidAuthority }
        return (start..<end, end)
    }
}

/// How request paths are canonicalised: the config's `paths` block.
public struct PathRules: Sendable, Equatable {
    public enum Semicolons: String, Sendable, Equatable, CaseIterable {
        /// `;` anywhere in the path gets 400.
        case reject
        /// `;` is an ordinary byte; only a dot segment with parameters (`..;x`) is refused.
        case allow
    }

    /// Runs of `/` become one (nginx's `merge_slashes on`, its default).
    public var mergeSlashes: Bool
    public var semicolons: Semicolons

    public init(mergeSlashes: Bool = true, semicolons: Semicolons = .reject) {
        self.mergeSlashes = mergeSlashes
        self.semicolons = semicolons
    }
}

/// Why a request target was refused (400). `reason` is what the client is told.
public enum RequestTargetError: Error, Sendable, Equatable, CustomStringConvertible {
    case empty
    /// Neither origin-form (`/…`), absolute-form (`http://…`) nor `*`.
    case notAPath
    case unsupportedScheme
    case invalidAuthority
    case userinfo
    case fragment
    case brokenEscape
    case encodedSlash
    case backslash
    case controlCharacter
    case overlongUTF8
    case aboveRoot
    case semicolon
    case dotSegmentWithParameters

    public var description: String {
        switch self {
        case .empty: return "empty request target"
        case .notAPath: return "the request target must be a path or an http(s) URI"
        case .unsupportedScheme: return "only http and https URIs can be request targets"
        case .invalidAuthority: return "invalid authority in the request target"
        case .userinfo: return "userinfo (user@) in the request target"
        case .fragment: return "a fragment (#) in the request target"
        case .brokenEscape: return "a broken percent-escape in the path"
        case .encodedSlash: return "an encoded '/' (%2F) in the path"
        case .backslash: return "a '\\' (raw or %5C) in the path"
        case .controlCharacter: return "a control character (raw or encoded) in the path"
        case .overlongUTF8: return "an overlong UTF-8 escape (%C0 or %C1) in the path"
        case .aboveRoot: return "the path climbs above the root"
        case .semicolon: return "a ';' in the path (path parameters are refused: paths.semicolons)"
        case .dotSegmentWithParameters: return "a dot segment with parameters ('..;') in the path"
        }
    }
}

/// The path rules of `RequestTarget`, on a path that starts with `/` (query excluded).
public enum PathCanonicalizer {
    /// `nil` when `path` is canonical already (the common case, checked in one pass with no
    /// allocation); else the canonical path.
    public static func canonicalize(
        _ path: UnsafeBufferPointer<UInt8>, rules: PathRules
    ) throws(RequestTargetError) -> [UInt8]? {
        guard path.first == UInt8(ascii: "/") else { throw .notAPath }
        guard needsWork(path, rules: rules) else { return nil }
        let decoded = try decode(path, rules: rules)
        return try removeDotSegments(decoded, rules: rules)
    }

    /// Whether any byte calls for the slow path: an escape, a byte to refuse, a dot right after a
    /// slash, or (when merging) two slashes in a row.
    @inline(__always)
    private static func needsWork(_ path: UnsafeBufferPointer<UInt8>, rules: PathRules) -> Bool {
        var previous: UInt8 = 0
        for byte in path {
            switch byte {
            case UInt8(ascii: "%"), UInt8(ascii: "\\"), 0..<0x20, 0x7F:
                return true
            case UInt8(ascii: ";"):
                return true
            case UInt8(ascii: "."):
                if previous == UInt8(ascii: "/") { return true }
            case UInt8(ascii: "/"):
                if rules.mergeSlashes, previous == UInt8(ascii: "/") { return true }
            default:
                break
            }
            previous = byte
        }
        return false
    }

    /// Decodes unreserved escapes, upper-cases the others, refuses what must be refused.
    private static func decode(
        _ path: UnsafeBufferPointer<UInt8>, rules: PathRules
    ) throws(RequestTargetError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(path.count)
        var index = 0
        while index < path.count {
            let byte = path[index]
            switch byte {
            case UInt8(ascii: "%"):
                guard index + 2 < path.count, let high = ASCII.hexValue(path[index + 1]),
                    let low = ASCII.hexValue(path[index + 2])
                else { throw .brokenEscape }
                let value = high << 4 | low
                switch value {
                case UInt8(ascii: "/"): throw .encodedSlash
                case UInt8(ascii: "\\"): throw .backslash
                case 0..<0x20, 0x7F: throw .controlCharacter
                case 0xC0, 0xC1: throw .overlongUTF8
                case UInt8(ascii: ";") where rules.semicolons == .reject: throw .semicolon
                default:
                    if ASCII.isUnreserved(value) {
                        out.append(value)
                    } else {
                        out.append(UInt8(ascii: "%"))
                        out.append(ASCII.upperHexDigit(high))
                        out.append(ASCII.upperHexDigit(low))
                    }
                }
                index += 3
                continue
            case UInt8(ascii: "\\"):
                throw .backslash
            case 0..<0x20, 0x7F:
                throw .controlCharacter
            case UInt8(ascii: ";") where rules.semicolons == .reject:
                throw .semicolon
            default:
                out.append(byte)
            }
            index += 1
        }
        return out
    }

    /// RFC 3986 §5.2.4 on segments, merging empty ones when asked; `path` starts with `/`.
    private static func removeDotSegments(_ path: [UInt8], rules: PathRules) throws(RequestTargetError) -> [UInt8] {
        var segments: [ArraySlice<UInt8>] = []
        var trailingSlash = false
        var start = 1
        while start <= path.count {
            var end = start
            while end < path.count, path[end] != UInt8(ascii: "/") {
                end += 1
            }
            let segment = path[start..<end]
            let isLast = end == path.count
            trailingSlash = false
            if segment.isEmpty {
                if isLast {
                    trailingSlash = true
                } else if !rules.mergeSlashes {
                    segments.append(segment)
                }
            } else if isDot(segment) {
                trailingSlash = isLast
            } else if isDotDot(segment) {
                guard !segments.isEmpty else { throw .aboveRoot }
                segments.removeLast()
                trailingSlash = isLast
            } else {
                if rules.semicolons == .allow, isDotSegmentWithParameters(segment) {
                    throw .dotSegmentWithParameters
                }
                segments.append(segment)
            }
            start = end + 1
        }
        var out: [UInt8] = []
        out.reserveCapacity(path.count)
        for segment in segments {
            out.append(UInt8(ascii: "/"))
            out.append(contentsOf: segment)
        }
        if out.isEmpty || trailingSlash {
            out.append(UInt8(ascii: "/"))
        }
        return out
    }

    private static func isDot(_ segment: ArraySlice<UInt8>) -> Bool {
        segment.count == 1 && segment.first == UInt8(ascii: ".")
    }

    private static func isDotDot(_ segment: ArraySlice<UInt8>) -> Bool {
        segment.count == 2 && segment.allSatisfy { $0 == UInt8(ascii: ".") }
    }

    /// `.;x` and `..;x`: what Tomcat reads as `.` and `..`.
    private static func isDotSegmentWithParameters(_ segment: ArraySlice<UInt8>) -> Bool {
        guard let semicolon = segment.firstIndex(of: UInt8(ascii: ";")) else { return false }
        let name = segment[segment.startIndex..<semicolon]
        return isDot(name) || isDotDot(name)
    }
}

extension RequestTarget {
    /// For callers holding a `String` (the target as NIOHTTP1 gives it): the canonical path and
    /// the query, and the authority of an absolute-form target.
    public static func parse(
        _ target: String, rules: PathRules = PathRules()
    ) throws(RequestTargetError) -> (form: Form, path: String, query: Substring?, authority: Substring?) {
        var copy = target
        let result = copy.withUTF8 { bytes in
            Result { () throws(RequestTargetError) -> Parsed in try parse(bytes, rules: rules) }
        }
        let parsed = try result.get()
        let utf8 = target.utf8
        func substring(_ range: Range<Int>) -> Substring {
            let lower = utf8.index(utf8.startIndex, offsetBy: range.lowerBound)
            let upper = utf8.index(utf8.startIndex, offsetBy: range.upperBound)
            return target[lower..<upper]
        }
        let path = parsed.rewrittenPath.map { String(decoding: $0, as: UTF8.self) } ?? String(substring(parsed.path))
        return (parsed.form, path, parsed.query.map(substring), parsed.authority.map(substring))
    }
}

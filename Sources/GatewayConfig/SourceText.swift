/// The configuration text as Unicode scalars, with the line and column arithmetic libyaml uses,
/// so positions we compute ourselves agree with the marks Yams reports.
struct SourceText {
    /// Without a leading byte order mark: with the encoding forced to UTF-8, libyaml would read
    /// a BOM as an extra column on line 1 and misparse a root block mapping.
    var scalars: [Unicode.Scalar]
    /// `lineStarts[n]` is the index in `scalars` of the first scalar of line n + 1.
    private(set) var lineStarts: [Int]

    /// Validates what libyaml would reject in its reader (invalid UTF-8, control characters)
    /// so those errors get an exact line and column instead of libyaml's character offset.
    init(validating bytes: [UInt8], file: String) throws(ConfigError) {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(bytes.count)
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        var offset = 0
        var position = LinePosition()
        decoding: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                if offset == 0 && scalar == "\u{FEFF}" {
                    offset += 3
                    continue decoding
                }
                if !SourceText.isAllowed(scalar) {
                    throw ConfigError(
                        ConfigDiagnostic(
                            file: file, line: position.line, column: position.column,
                            message: "control character \(SourceText.codePoint(scalar)) is not allowed "
                                + "(write it as an escape inside a double-quoted string)"))
                }
                scalars.append(scalar)
                position.advance(past: scalar)
                offset += UTF8.width(scalar)
            case .emptyInput:
                break decoding
            case .error:
                let byte = offset < bytes.count ? bytes[offset] : 0
                throw ConfigError(
                    ConfigDiagnostic(
                        file: file, line: position.line, column: position.column,
                        message: "invalid UTF-8 (byte 0x\(String(byte, radix: 16, uppercase: true))); "
                            + "the configuration must be UTF-8 text"))
            }
        }
        self.scalars = scalars
        self.lineStarts = SourceText.lineStarts(of: scalars)
    }

    /// The scalar index a Yams mark points at, or nil when it is outside the text.
    func index(of position: SourcePosition) -> Int? {
        guard position.line >= 1, position.line <= lineStarts.count, position.column >= 1 else { return nil }
        let index = lineStarts[position.line - 1] + position.column - 1
        let lineEnd = position.line < lineStarts.count ? lineStarts[position.line] : scalars.count
        return index < lineEnd ? index : nil
    }

    /// `position`, or the end of the last line when it lies past it: libyaml puts the end of a
    /// text without a final line break on a line of its own, one past the file's last.
    func clamped(_ position: SourcePosition) -> SourcePosition {
        guard position.line > lineStarts.count, let last = lineStarts.last else { return position }
        return SourcePosition(line: lineStarts.count, column: scalars.count - last + 1)
    }

    /// libyaml's line breaks: LF, CR, CRLF (one break), and YAML 1.1's NEL, LS and PS.
    static func isBreak(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x0A, 0x0D, 0x85, 0x2028, 0x2029: return true
        default: return false
        }
    }

    /// libyaml's reader rule (yaml_parser_update_buffer): printable characters, tab, CR, LF.
    static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A, 0x0D, 0x20...0x7E, 0x85, 0xA0...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF:
            return true
        default:
            return false
        }
    }

    static func codePoint(_ scalar: Unicode.Scalar) -> String {
        let hex = String(scalar.value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    private static func lineStarts(of scalars: [Unicode.Scalar]) -> [Int] {
        var starts = [0]
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            index += 1
            if isBreak(scalar) {
                if scalar == "\r", index < scalars.count, scalars[index] == "\n" {
                    index += 1
                }
                starts.append(index)
            }
        }
        return starts
    }
}

/// A 1-based line and column, as in Yams' `Mark` and in diagnostics.
struct SourcePosition: Hashable, Comparable, Sendable {
    var line: Int
    var column: Int

    static let start = SourcePosition(line: 1, column: 1)

    static func < (a: SourcePosition, b: SourcePosition) -> Bool {
        (a.line, a.column) < (b.line, b.column)
    }
}

/// Tracks line and column while walking scalars one at a time.
private struct LinePosition {
    var line = 1
    var column = 1
    private var afterCR = false

    mutating func advance(past scalar: Unicode.Scalar) {
        if scalar == "\n" && afterCR {
            afterCR = false
            return
        }
        afterCR = scalar == "\r"
        if SourceText.isBreak(scalar) {
            line += 1
            column = 1
        } else {
            column += 1
        }
    }
}

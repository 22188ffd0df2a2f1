import Yams

/// How a scalar reads, decided without Yams' regex-based tag resolution (which costs a regex
/// match per scalar) and stricter where gatewayd wants it: an integer is plain decimal digits.
enum ScalarKind: Equatable {
    case null, bool, int, float, string
}

extension Node {
    var position: SourcePosition? {
        mark.map { SourcePosition(line: Swift.max(1, $0.line), column: Swift.max(1, $0.column)) }
    }

    var isNull: Bool {
        if case .scalar(let scalar) = self { return scalar.kind == .null }
        return false
    }

    /// For "expected X, got Y" messages.
    var kindDescription: String {
        switch self {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let scalar):
            switch scalar.kind {
            case .null: return "null"
            case .bool: return "a boolean \(scalar.string)"
            case .int: return "an integer \(scalar.string)"
            case .float: return "a number \(scalar.string)"
            case .string: return "a string \(quoted(scalar.string))"
            }
        }
    }

    /// Counts nodes as a walk would see them, aliases expanded, stopping once past `limit`:
    /// a few lines of anchors can stand for billions of nodes.
    func expandedCount(limit: Int) -> Int {
        var count = 0
        countNodes(into: &count, limit: limit)
        return count
    }

    private func countNodes(into count: inout Int, limit: Int) {
        count += 1
        guard count <= limit else { return }
        switch self {
        case .scalar, .alias:
            return
        case .sequence(let sequence):
            for item in sequence {
                item.countNodes(into: &count, limit: limit)
                if count > limit { return }
            }
        case .mapping(let mapping):
            for (key, value) in mapping {
                key.countNodes(into: &count, limit: limit)
                value.countNodes(into: &count, limit: limit)
                if count > limit { return }
            }
        }
    }
}

extension Node.Scalar {
    private static let strTag = "tag:yaml.org,2002:str"
    private static let intTag = "tag:yaml.org,2002:int"
    private static let nullWords: Set<String> = ["", "~", "null", "Null", "NULL"]
    private static let boolWords: Set<String> = [
        "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
        "on", "On", "ON", "off", "Off", "OFF",
    ]

    var kind: ScalarKind {
        let tag = self.tag.description
        if tag == Self.strTag || tag == "!" || style != .plain && style != .any {
            return .string
        }
        if tag == Self.intTag {
            return .int
        }
        if Self.nullWords.contains(string) { return .null }
        if Self.boolWords.contains(string) { return .bool }
        if Self.looksLikeInteger(string) { return .int }
        if Self.looksLikeFloat(string) { return .float }
        return .string
    }

    /// The value of a plain decimal integer (`[-+]?(0|[1-9][0-9]*)`); nil for anything else,
    /// including hex, octal, `1_000` and overflow. Leading zeros are refused because YAML 1.1
    /// reads `010` as octal 8.
    var decimalInteger: Int? {
        guard kind == .int else { return nil }
        var digits = Substring(string)
        if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            digits == "0" || digits.first != "0"
        else { return nil }
        return Int(string)
    }

    /// Yams' int rule: decimal, 0b, 0o/0, 0x, and sexagesimal forms.
    private static func looksLikeInteger(_ text: String) -> Bool {
        var rest = Substring(text)
        if rest.first == "-" || rest.first == "+" { rest = rest.dropFirst() }
        func all(_ chars: Substring, _ allowed: (Character) -> Bool) -> Bool {
            !chars.isEmpty && chars.allSatisfy { $0.isASCII && allowed($0) }
        }
        if rest.hasPrefix("0b") { return all(rest.dropFirst(2)) { $0 == "0" || $0 == "1" || $0 == "_" } }
        if rest.hasPrefix("0x") { return all(rest.dropFirst(2)) { $0.isHexDigit || $0 == "_" } }
        if rest.hasPrefix("0o") { return all(rest.dropFirst(2)) { ("0"..."7").contains($0) || $0 == "_" } }
        guard let first = rest.first, first.isASCII, first.isNumber else { return false }
        return all(rest) { $0.isNumber || $0 == "_" || $0 == ":" }
    }

    /// Yams' float rule, closely enough to word a message: `1.5`, `1e3`, `.5`, `.inf`, `.nan`.
    private static func looksLikeFloat(_ text: String) -> Bool {
        if [".inf", ".Inf", ".INF", "-.inf", "+.inf", "-.Inf", "+.Inf", "-.INF", "+.INF", ".nan", ".NaN", ".NAN"]
            .contains(text)
        {
            return true
        }
        var rest = Substring(text)
        if rest.first == "-" || rest.first == "+" { rest = rest.dropFirst() }
        let mantissaEnd = rest.firstIndex { $0 == "e" || $0 == "E" } ?? rest.endIndex
        let mantissa = rest[..<mantissaEnd]
        let parts = mantissa.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let digitsOK = parts.allSatisfy { $0.allSatisfy { $0.isASCII && ($0.isNumber || $0 == "_") } }
        guard digitsOK, mantissa.contains(where: \.isNumber) else { return false }
        if mantissaEnd == rest.endIndex { return true }
        var exponent = rest[rest.index(after: mantissaEnd)...]
        if exponent.first == "-" || exponent.first == "+" { exponent = exponent.dropFirst() }
        return !exponent.isEmpty && exponent.allSatisfy { $0.isASCII && $0.isNumber }
    }
}

/// `"text"` with quotes, backslashes and control characters escaped, cut short when long, so a
/// value can be shown inside a one-line message.
func quoted(_ text: String, quote: Unicode.Scalar = "\"", limit: Int = 60) -> String {
    var result = String(quote)
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit {
            result += "..."
            break
        }
        count += 1
        switch scalar {
        case quote: result += "\\" + String(quote)
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + String(quote)
}

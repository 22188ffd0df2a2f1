/// Text from another process made safe for one line of the master's log.
///
/// A worker's `failed` reason, and whatever it put in a frame that the master quotes in an
/// error, reach the master's log; a worker may be compromised. A newline there would forge a
/// line of the master's own (`… info gatewayd[1]: generation 9 serving`), a terminal escape
/// would rewrite what an operator's terminal shows. So control characters, line and paragraph
/// separators and bidirectional overrides are written as escapes (`\n`, `\r`, `\t`, `\\`,
/// `\u{1b}`), and the text is cut at `maximumLength` characters.
public enum LogText {
    /// A worker's failure is one error (a call, a path, a reason: a few hundred characters);
    /// past 4096, what follows is noise or an attack on the log.
    public static let maximumLength = 4096

    public static func escaped(_ text: some StringProtocol, maximumLength: Int = LogText.maximumLength) -> String {
        var result = ""
        var characters = 0
        for scalar in text.unicodeScalars {
            if characters >= maximumLength {
                let rest = text.unicodeScalars.count - characters
                result += "… (\(rest) more characters)"
                break
            }
            characters += 1
            switch scalar {
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where needsEscape(scalar):
                result += "\\u{\(String(scalar.value, radix: 16))}"
            default:
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator:
            return true
        default:
            // Bidirectional embeddings, overrides and isolates reorder what follows them on
            // screen ("Trojan Source", CVE-2021-42574).
            return (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
        }
    }
}

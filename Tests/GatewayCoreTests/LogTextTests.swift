import GatewayCore
import Testing

@Suite("Log text from workers", .timeLimit(.minutes(1)))
struct LogTextTests {
    @Test("newlines, terminal escapes and bidirectional overrides become escapes; the text stays one line")
    func escapes() {
        #expect(LogText.escaped("plain text, é, 日本") == "plain text, é, 日本")
        #expect(LogText.escaped("a\nb\r\tc\\") == #"a\nb\r\tc\\"#)
        #expect(LogText.escaped("\u{1b}[2J\u{7f}\u{0}") == #"\u{1b}[2J\u{7f}\u{0}"#)
        #expect(LogText.escaped("x\u{2028}y\u{202e}z\u{85}") == #"x\u{2028}y\u{202e}z\u{85}"#)
        let forged = LogText.escaped("boom\n2030-01-01T00:00:00.000Z info gatewayd[1]: generation 99 serving")
        #expect(!forged.contains("\n"))
    }

    @Test("text past the limit is cut, saying how much was left out")
    func cut() {
        let text = String(repeating: "x", count: 5000)
        #expect(LogText.escaped(text) == String(repeating: "x", count: 4096) + "… (904 more characters)")
        #expect(LogText.escaped(text, maximumLength: 4) == "xxxx… (4996 more characters)")
        #expect(LogText.escaped("xxxx", maximumLength: 4) == "xxxx")
    }
}

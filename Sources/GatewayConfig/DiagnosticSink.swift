/// Collects diagnostics for one file.
struct DiagnosticSink {
    let file: String
    private(set) var diagnostics: [ConfigDiagnostic] = []
    private var dropped = 0

    /// Past this many, more messages are noise (and a hostile file could make millions).
    static let limit = 200

    init(file: String) {
        self.file = file
    }

    var isEmpty: Bool { diagnostics.isEmpty }

    mutating func error(_ message: String, at position: SourcePosition?) {
        guard diagnostics.count < DiagnosticSink.limit else {
            dropped += 1
            return
        }
        let position = position ?? .start
        diagnostics.append(ConfigDiagnostic(file: file, line: position.line, column: position.column, message: message))
    }

    /// In file order. Meant for after something was reported; if nothing was, says so rather
    /// than trapping, since a parse must never crash.
    func error() -> ConfigError {
        guard !diagnostics.isEmpty else {
            return ConfigError(
                ConfigDiagnostic(
                    file: file, line: 1, column: 1, message: "the configuration was rejected (internal error)"))
        }
        var sorted = diagnostics.enumerated().sorted { a, b in
            (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
        }.map(\.element)
        if dropped > 0, let last = sorted.last {
            sorted.append(
                ConfigDiagnostic(
                    file: file, line: last.line, column: last.column,
                    message: "\(dropped) more error\(dropped == 1 ? "" : "s") not shown"))
        }
        return ConfigError(diagnostics: sorted)
    }
}

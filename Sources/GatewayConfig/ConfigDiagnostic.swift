/// One problem in a configuration file, pointing at the offending key or value.
///
/// `description` reads `gateway.yaml:7:5: unknown key 'adress' in listeners[0]`, the format
/// compilers use, so editors and CI annotators can jump to it.
public struct ConfigDiagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// 1-based.
    public var line: Int
    /// 1-based, counted in Unicode scalars (a tab counts as one), as libyaml counts them.
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        "\(file):\(line):\(column): \(message)"
    }
}

/// Everything wrong with a configuration, so an operator fixes a file in one pass
/// instead of one error per reload attempt.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// In file order (line, then column). Never empty.
    public var diagnostics: [ConfigDiagnostic]

    public init(diagnostics: [ConfigDiagnostic]) {
        precondition(!diagnostics.isEmpty, "a ConfigError needs at least one diagnostic")
        self.diagnostics = diagnostics
    }

    init(_ diagnostic: ConfigDiagnostic) {
        self.diagnostics = [diagnostic]
    }

    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}

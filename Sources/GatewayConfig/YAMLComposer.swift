import Yams

/// Turns configuration text into a Yams node tree, working around what would otherwise make
/// Yams stop early, hang, or report an error in the wrong place.
///
/// - Duplicate keys: Yams rejects the whole document at the first occurrence of a repeated key,
///   so no other error could be reported and the path to the key is unknown. We rename that
///   first occurrence in our copy of the text (one scalar for another, so every column stays
///   put), compose again, and let `ConfigValidator` report the repeat where it is, with its
///   path, mapping the renamed key back through `renamedKeys`.
/// - Aliases in keys: Yams hashes every key to find duplicates, and hashing an alias of an
///   alias of ... a list visits every expanded node, exponential in the file size. Before the
///   real parse, a probe parse of the text with each `*` made a plain letter (no aliases, so
///   linear) finds keys that are or contain aliases; those are refused.
struct YAMLComposer {
    struct Document {
        var root: Node?
        /// Keys renamed to get past Yams' duplicate check, by position: their real names.
        var renamedKeys: [SourcePosition: String]
    }

    /// Each round gets past one repeated key (each parse costs up to a few tens of ms); past
    /// that, the next repeat is reported at its first occurrence, without the other errors.
    static let maximumDuplicateRounds = 16

    private var source: SourceText
    private var renamedKeys: [SourcePosition: String] = [:]
    /// The text as written, for telling which nodes were aliases.
    private let original: [Unicode.Scalar]

    private init(source: SourceText) {
        self.source = source
        self.original = source.scalars
    }

    static func compose(_ source: SourceText, into sink: inout DiagnosticSink) -> Document? {
        var composer = YAMLComposer(source: source)
        return composer.compose(into: &sink)
    }

    private mutating func compose(into sink: inout DiagnosticSink) -> Document? {
        let mayHaveAliases = original.contains("*")
        for round in 0..<YAMLComposer.maximumDuplicateRounds {
            if mayHaveAliases {
                var probe = source.scalars
                for index in probe.indices where probe[index] == "*" {
                    probe[index] = "x"
                }
                switch YAMLComposer.composeOnce(probe) {
                case .document(let root):
                    if let root, reportAliasKeys(in: root, into: &sink) {
                        return nil
                    }
                case .duplicateKey(let name, let position):
                    if rename(name, at: position, round: round, into: &sink) { continue }
                    return nil
                case .failure(let message, let position):
                    // Turning aliases into plain words never makes valid YAML invalid, so
                    // this is an error in the text too (though an alias error before it, such
                    // as an unquoted `*.example.com`, only shows once this one is fixed).
                    sink.error(message, at: source.clamped(position))
                    return nil
                }
            }
            switch YAMLComposer.composeOnce(source.scalars) {
            case .document(let root):
                return Document(root: root, renamedKeys: renamedKeys)
            case .duplicateKey(let name, let position):
                if rename(name, at: position, round: round, into: &sink) { continue }
                return nil
            case .failure(let message, let position):
                sink.error(message, at: source.clamped(position))
                return nil
            }
        }
        // Unreachable: the last round reports instead of renaming.
        sink.error("too many repeated keys", at: nil)
        return nil
    }

    private enum Outcome {
        case document(Node?)
        case duplicateKey(name: String, at: SourcePosition)
        case failure(String, at: SourcePosition)
    }

    private static func composeOnce(_ scalars: [Unicode.Scalar]) -> Outcome {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        do {
            // The encoding is explicit: `.default` consults (and prints) an environment variable.
            return .document(try Yams.compose(yaml: String(view), .default, .default, .utf8))
        } catch let error as YamlError {
            return outcome(of: error)
        } catch {
            return .failure("invalid YAML: \(error)", at: .start)
        }
    }

    private static func outcome(of error: YamlError) -> Outcome {
        func position(_ mark: Mark) -> SourcePosition {
            SourcePosition(line: max(1, mark.line), column: max(1, mark.column))
        }
        switch error {
        case .scanner(let context, let problem, let mark, _),
            .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            if problem == "but found another document" {
                return .failure("invalid YAML: only one document is allowed, found a second one", at: position(mark))
            }
            if problem.hasPrefix("Maximum nesting level reached") {
                return .failure("invalid YAML: nested too deeply (libyaml allows 1000 levels)", at: position(mark))
            }
            var message = "invalid YAML: \(problem)"
            if let context {
                message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
                if context.text == "while scanning an alias" {
                    message += "; a value that starts with '*' must be quoted, as in \"*.example.com\""
                }
            }
            return .failure(message, at: position(mark))
        case .duplicatedKeysInMapping(let duplicates, let context):
            return .duplicateKey(name: duplicates.first ?? "", at: position(context.mark))
        case .reader(let problem, _, _, _):
            return .failure("invalid YAML: \(problem)", at: .start)
        case .memory:
            return .failure("out of memory while reading the YAML", at: .start)
        default:
            return .failure("invalid YAML: \(error)", at: .start)
        }
    }

    /// Renames the first occurrence of a repeated key so the next parse gets past it.
    /// Returns false, having reported the repeat at that first occurrence, when it cannot.
    private mutating func rename(
        _ name: String, at position: SourcePosition, round: Int,
        into sink: inout DiagnosticSink
    ) -> Bool {
        guard round < YAMLComposer.maximumDuplicateRounds - 1 else {
            sink.error(
                "duplicate key \(displayName(name)) (repeated later in the same mapping; "
                    + "the file has too many repeated keys to report each where it repeats)", at: position)
            return false
        }
        guard var index = source.index(of: position) else {
            sink.error("duplicate key \(displayName(name)) (repeated later in the same mapping)", at: position)
            return false
        }
        if original[index] == "*" {
            sink.error("an alias cannot be used as a mapping key", at: position)
            return false
        }
        var quote: Unicode.Scalar?
        if source.scalars[index] == "\"" || source.scalars[index] == "'" {
            quote = source.scalars[index]
            index += 1
        }
        // Only a key whose text starts with its first character can be renamed in place: not
        // one starting with an escape, a tag or a block scalar indicator.
        guard index < source.scalars.count, let first = name.unicodeScalars.first,
            source.scalars[index] == first, first != quote, quote == nil || first != "\\",
            let replacement = Unicode.Scalar(0xE000 + UInt32(round))
        else {
            sink.error("duplicate key \(displayName(name)) (repeated later in the same mapping)", at: position)
            return false
        }
        source.scalars[index] = replacement
        renamedKeys[position] = name
        return true
    }

    /// Reports keys that are aliases or contain one; true if there were any.
    private func reportAliasKeys(in root: Node, into sink: inout DiagnosticSink) -> Bool {
        var found = false
        func wasAlias(_ node: Node) -> Bool {
            guard case .scalar = node, let position = node.position, let index = source.index(of: position) else {
                return false
            }
            return original[index] == "*"
        }
        func containsAlias(_ node: Node) -> Bool {
            switch node {
            case .scalar: return wasAlias(node)
            case .alias: return true
            case .sequence(let sequence): return sequence.contains(where: containsAlias)
            case .mapping(let mapping): return mapping.contains { containsAlias($0.key) || containsAlias($0.value) }
            }
        }
        func walk(_ node: Node) {
            switch node {
            case .scalar, .alias:
                return
            case .sequence(let sequence):
                sequence.forEach(walk)
            case .mapping(let mapping):
                for (key, value) in mapping {
                    // A key without aliases has none inside it either: no need to walk it.
                    if containsAlias(key) {
                        sink.error("an alias cannot be used as a mapping key", at: key.position)
                        found = true
                    }
                    walk(value)
                }
            }
        }
        walk(root)
        return found
    }
}

/// A key name for a message: `'name'`, escaped and cut short if it needs to be.
func displayName(_ name: String) -> String {
    quoted(name, quote: "'", limit: 40)
}

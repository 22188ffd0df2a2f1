import Yams

/// The entries of one YAML mapping after its keys were checked: every key a string, none
/// repeated, none unknown. Keeps file order for mappings whose keys are data (headers).
struct MappingFields {
    struct Entry {
        var name: String
        var key: Node
        var value: Node
        var keyPosition: SourcePosition
    }

    /// The key path of the mapping itself: "" for the top level, `listeners[0]`, `routes[1].match`.
    let path: String
    let position: SourcePosition
    private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]

    init(path: String, position: SourcePosition) {
        self.path = path
        self.position = position
    }

    mutating func append(_ entry: Entry) {
        index[entry.name] = entries.count
        entries.append(entry)
    }

    func entry(_ name: String) -> Entry? {
        index[name].map { entries[$0] }
    }

    /// The value, or nil if the key is absent. An explicit null counts as present.
    func value(_ name: String) -> Node? {
        entry(name)?.value
    }

    /// The value, or nil if it is absent or null: for an optional key, `key:` alone or `key: ~`
    /// means the default.
    func optionalValue(_ name: String) -> Node? {
        guard let value = value(name), !value.isNull else { return nil }
        return value
    }

    /// `listeners[0].address`, or `workers` at the top level.
    func path(of name: String) -> String {
        path.isEmpty ? name : "\(path).\(name)"
    }

    /// For messages: `in listeners[0]`, or `at the top level`.
    var location: String {
        path.isEmpty ? "at the top level" : "in \(path)"
    }
}

/// The closest of `candidates` to a misspelt `word`, if one is close enough to be a likely typo.
func suggestion(for word: String, among candidates: [String]) -> String? {
    func normalized(_ text: String) -> String {
        String(text.lowercased().filter { $0 != "_" && $0 != "-" })
    }
    guard word.count <= 64 else { return nil }
    if let same = candidates.first(where: { normalized($0) == normalized(word) }) {
        return same
    }
    let scored = candidates.map { ($0, editDistance(word.lowercased(), $0)) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    let allowed = best.0.count <= 4 ? 1 : 2
    return best.1 <= allowed ? best.0 : nil
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so
/// `wrokers` is one edit from `workers`.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars)
    let b = Array(b.unicodeScalars)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous2 = [Int](repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], previous2[j - 2] + 1)
            }
        }
        (previous2, previous, current) = (previous, current, previous2)
    }
    return previous[b.count]
}

import GatewayConfig
import GatewayHTTP

/// A route's `request_headers` or `response_headers`, checked once at start: removals first,
/// then `set` (replace or add).
struct CompiledHeaderRules: Sendable {
    var set: [(String, String)]
    /// Lower-cased.
    var remove: [String]
    /// Every name the rules remove or set, lower-cased: a field of one of these names is not
    /// forwarded as it came.
    private let touched: [[UInt8]]

    static let none = CompiledHeaderRules(set: [], remove: [])

    init(set: [(String, String)], remove: [String]) {
        self.set = set
        self.remove = remove.map { $0.lowercased() }
        self.touched = (self.remove + set.map { $0.0.lowercased() }).map { Array($0.utf8) }
    }

    init(_ rules: HeaderRules, route: String) throws(GatewayServerError) {
        var set: [(String, String)] = []
        for field in rules.set {
            guard HTTPToken.isValid(field.name) else {
                throw .invalidRoute(route: route, reason: "invalid header name \"\(field.name)\"")
            }
            guard RoutingTable.isFieldValue(field.value) else {
                throw .invalidRoute(
                    route: route, reason: "invalid value for header \"\(field.name)\" (control characters)")
            }
            set.append((field.name, field.value))
        }
        for name in rules.remove {
            guard HTTPToken.isValid(name) else {
                throw .invalidRoute(route: route, reason: "invalid header name \"\(name)\"")
            }
        }
        self.init(set: set, remove: rules.remove)
    }

    var isEmpty: Bool { self.touched.isEmpty }

    /// Whether the rules remove or set a field of this name.
    func touches(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        for candidate in self.touched where candidate.count == name.count {
            let matches = candidate.withUnsafeBufferPointer { HTTPBytes.equalsIgnoringCase(name, $0) }
            if matches { return true }
        }
        return false
    }

    /// `lowercase` must be lower-case.
    func touches(_ lowercase: String) -> Bool {
        self.touched.contains { $0.elementsEqual(lowercase.utf8) }
    }

    /// Applies the rules to fields gatewayd writes itself (an error's, an admin endpoint's).
    func apply(to fields: inout [(String, String)]) {
        guard !self.isEmpty else { return }
        fields.removeAll { field in
            let name = field.0.lowercased()
            return self.remove.contains(name) || self.set.contains { $0.0.lowercased() == name }
        }
        fields.append(contentsOf: self.set)
    }
}

import GatewayConfig
import NIOHTTP1

/// A route's `auth`, ready for lookups.
struct CompiledAuth: Sendable {
    enum Outcome {
        case allowed(key: String)
        case missing
        case invalid
    }

    let scheme: AuthConfig.Scheme
    private let keys: Set<String>

    init(_ config: AuthConfig) {
        self.scheme = config.scheme
        self.keys = config.keys
    }

    func check(_ headers: HTTPHeaders) -> Outcome {
        let presented: String?
        switch self.scheme {
        case .apiKey(let header):
            presented = headers.first(name: header)
        case .bearer:
            presented = headers.first(name: "authorization").flatMap(Self.bearerToken)
        }
        guard let presented, !presented.isEmpty else { return .missing }
        return self.keys.contains(presented) ? .allowed(key: presented) : .invalid
    }

    /// `Bearer TOKEN` (scheme case-insensitive, RFC 9110 §11.1).
    private static func bearerToken(_ value: String) -> String? {
        let utf8 = value.utf8
        guard utf8.count > 7 else { return nil }
        let scheme = value.prefix(7)
        guard scheme.lowercased() == "bearer " else { return nil }
        return String(value.dropFirst(7).drop { $0 == " " })
    }
}

import GatewayConfig
import GatewayHTTP

/// A route's `auth`, ready for lookups on the request's bytes.
struct CompiledAuth: Sendable {
    enum Outcome {
        case allowed(key: String)
        case missing
        case invalid
    }

    let scheme: AuthConfig.Scheme
    private let keys: Set<String>
    /// The API-key field's name, lower-cased (`.apiKey` only).
    private let headerName: [UInt8]

    init(_ config: AuthConfig) {
        self.scheme = config.scheme
        self.keys = config.keys
        if case .apiKey(let header) = config.scheme {
            self.headerName = Array(header.lowercased().utf8)
        } else {
            self.headerName = []
        }
    }

    var isBearer: Bool {
        if case .bearer = self.scheme { return true }
        return false
    }

    /// The credential the request presents (its first such field: a second one was refused
    /// before this runs) against the route's keys.
    func check(_ head: MessageHead, _ bytes: UnsafeBufferPointer<UInt8>) -> Outcome {
        var presented: UnsafeBufferPointer<UInt8>?
        switch self.scheme {
        case .apiKey:
            for field in head.fields where field.nameRange.count == self.headerName.count {
                let name = UnsafeBufferPointer(rebasing: bytes[field.nameRange])
                let matches = self.headerName.withUnsafeBufferPointer { HTTPBytes.equalsIgnoringCase(name, $0) }
                if matches {
                    presented = UnsafeBufferPointer(rebasing: bytes[field.valueRange])
                    break
                }
            }
        case .bearer:
            if let field = head.first(.authorization) {
                presented = Self.bearerToken(UnsafeBufferPointer(rebasing: bytes[field.valueRange]))
            }
        }
        guard let presented, !presented.isEmpty else { return .missing }
        let key = String(decoding: presented, as: UTF8.self)
        return self.keys.contains(key) ? .allowed(key: key) : .invalid
    }

    /// `Bearer TOKEN` (scheme case-insensitive, RFC 9110 §11.1).
    private static func bearerToken(_ value: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
        guard value.count > 7, HTTPBytes.equalsIgnoringCase(UnsafeBufferPointer(rebasing: value[0..<7]), "bearer ")
        else { return nil }
        var start = 7
        while start < value.count, value[start] == UInt8(ascii: " ") { start += 1 }
        return UnsafeBufferPointer(rebasing: value[start...])
    }
}

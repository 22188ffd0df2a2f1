/// The TLS session ticket keys of a master and all its workers (RFC 5077 tickets, and TLS 1.3's
/// stateless ones): whichever worker a client reaches, of whichever generation, its ticket
/// decrypts and the handshake resumes. The master makes them (random, `getrandom(2)`), keeps
/// them across reloads, hands them to every worker in its `hello`, and rotates them on a
/// schedule, sending the new list to every live worker in a `ticket_keys` frame: no reload,
/// and no key derived from another (a key erased is gone, which is what rotation is for).
///
/// Why rotate: whoever holds a ticket key can decrypt every session resumed under it (its
/// traffic keys follow from the ticket), so a key that never changes undoes TLS 1.3's forward
/// secrecy. Twitter's and Cloudflare's practice, and Caddy's default, is a new key every few
/// hours at most, the old ones kept just long enough for the tickets they issued. Here: a new
/// encrypting key every hour, the two before it still decrypting, so a ticket resumes for at
/// least 2 hours (`sessionLifetime`, what clients are told) and no key lives longer than 3.
public struct SessionTicketKeys: Sendable, Equatable {
    /// A 16-byte name (the key's id on the wire), a 32-byte HMAC-SHA256 key and a 32-byte
    /// AES-256 key: nginx's 80-byte `ssl_session_ticket_key` layout, and the shim's.
    public static let keyLength = 80
    /// One hour: the period nginx's users and Caddy (12 h) rotate in, at the short end, since a
    /// rotation costs nothing here but one small frame per worker.
    public static let rotationPeriod: Duration = .seconds(3600)
    /// The encrypting key and the two before it: a ticket issued just before a rotation still
    /// decrypts for `sessionLifetime` after it.
    public static let keptKeys = 3
    /// Two rotation periods: the least time any ticket stays decryptable, so the lifetime hint
    /// clients get is never a promise the keys cannot keep.
    public static let sessionLifetime: Duration = rotationPeriod * (keptKeys - 1)

    /// Newest (encrypting) first.
    public private(set) var keys: [[UInt8]]

    /// One fresh key.
    public init() {
        self.keys = [Self.newKey()]
    }

    /// Keys as a frame carried them; nil unless there are 1 to `keptKeys`, each of
    /// `keyLength` bytes (none would leave the workers issuing no tickets until a rotation).
    public init?(keys: [[UInt8]]) {
        guard (1...Self.keptKeys).contains(keys.count), keys.allSatisfy({ $0.count == Self.keyLength }) else {
            return nil
        }
        self.keys = keys
    }

    /// A new encrypting key; the oldest beyond `keptKeys` is dropped.
    public mutating func rotate() {
        self.keys = Array(([Self.newKey()] + self.keys).prefix(Self.keptKeys))
    }

    private static func newKey() -> [UInt8] {
        var random = SystemRandomNumberGenerator()  // getrandom(2)
        return (0..<Self.keyLength).map { _ in random.next() }
    }
}

/// As `HandoffMessage.Hello` is Codable; the handoff's frames use their own wire form (base64).
extension SessionTicketKeys: Codable {
    public init(from decoder: any Decoder) throws {
        let keys = try decoder.singleValueContainer().decode([[UInt8]].self)
        guard let valid = SessionTicketKeys(keys: keys) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath, debugDescription: "ticket keys of \(Self.keyLength) bytes expected")
            )
        }
        self = valid
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(keys)
    }
}

/// Never the keys themselves: a key in a log or an error message would undo what rotation is for.
extension SessionTicketKeys: CustomStringConvertible {
    public var description: String { "\(keys.count) ticket key\(keys.count == 1 ? "" : "s") (not shown)" }
}

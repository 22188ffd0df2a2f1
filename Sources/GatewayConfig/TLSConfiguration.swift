/// `tls:` on a listener: the listener terminates TLS (HTTP/1.1 inside), with certificates the
/// master read and checked. Workers get the bytes with the generation's configuration (the
/// handoff's `file` frames) and never read the disk, so a reload with new files rotates the
/// certificates: the new generation serves them, connections already open keep theirs.
public struct TLSConfig: Sendable, Equatable {
    /// In file order: the first is the default, served when the client's SNI names no
    /// certificate (or it sent none), as nginx's default server does.
    public var certificates: [TLSCertificate]
    /// ALPN protocols in the server's order of preference; a client that offers none of them
    /// gets a `no_application_protocol` alert. A client that offers no ALPN at all is served.
    public var alpn: [String]
    public var minVersion: TLSVersion
    /// Whether clients get session tickets to resume with (keys the master shares with every
    /// worker and rotates hourly). Off: every connection is a full handshake, as nginx's
    /// `ssl_session_tickets off` and HAProxy's `no-tls-tickets` (for operators who will not
    /// have a ticket key, even an hourly one, decrypt past sessions).
    public var sessionTickets: Bool

    /// The protocols a listener speaks inside TLS today.
    public static let supportedProtocols = ["h2", "http/1.1"]
    /// What a listener offers when `alpn` is not set: HTTP/1.1 only, as nginx does until
    /// `http2 on` (HTTP/2 is opted into per listener, with `alpn: [h2, http/1.1]`).
    public static let defaultProtocols = ["http/1.1"]

    public init(
        certificates: [TLSCertificate], alpn: [String] = ["http/1.1"], minVersion: TLSVersion = .tls12,
        sessionTickets: Bool = true
    ) {
        self.certificates = certificates
        self.alpn = alpn
        self.minVersion = minVersion
        self.sessionTickets = sessionTickets
    }

    /// The ALPN list in its wire format: each protocol prefixed with its length (RFC 7301 §3.1).
    public var alpnWireFormat: [UInt8] {
        self.alpn.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
    }
}

/// One certificate (with the chain behind it in the same file) and its key, as read at load.
public struct TLSCertificate: Sendable, Equatable {
    /// Absolute paths, for messages and logs.
    public var certificatePath: String
    public var keyPath: String
    /// The files' bytes, PEM. The key is a secret: it appears in no message or log.
    public var certificatePEM: [UInt8]
    public var keyPEM: [UInt8]
    /// The names SNI is matched against: subjectAltName's DNS names (else the subject's CN).
    public var names: [String]
    /// Seconds since the epoch.
    public var notAfter: Int64

    public init(
        certificatePath: String, keyPath: String, certificatePEM: [UInt8], keyPEM: [UInt8], names: [String],
        notAfter: Int64
    ) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
        self.names = names
        self.notAfter = notAfter
    }
}

/// The oldest TLS version a listener accepts. TLS 1.0 and 1.1 are not offered (RFC 8996).
public enum TLSVersion: String, Sendable, Equatable, CaseIterable {
    case tls12 = "tls1.2"
    case tls13 = "tls1.3"

    /// The protocol version's number on the wire (and OpenSSL's constant).
    public var wireValue: Int32 {
        switch self {
        case .tls12: return 0x0303
        case .tls13: return 0x0304
        }
    }
}

/// `tls:` on an upstream: its endpoints speak TLS, on connections pooled as plaintext ones are.
/// The master reads `ca`; workers get its bytes with the configuration, as certificates.
public struct UpstreamTLSConfig: Sendable, Equatable {
    /// Sent in SNI and checked against the certificate; nil: each endpoint's host as written
    /// (an IP literal is checked against the certificate's IP addresses, and sends no SNI).
    public var serverName: String?
    /// The PEM file of the certificates to trust, and its bytes; nil: the system's store.
    public var caPath: String?
    public var caPEM: [UInt8]?
    /// Check the chain (against `ca` or the system's store) and the name. Off only for an
    /// upstream whose certificate cannot be checked (self-signed, no name): the traffic is then
    /// encrypted against a passive eavesdropper, not against anyone in the middle.
    public var verify: Bool

    public init(serverName: String? = nil, caPath: String? = nil, caPEM: [UInt8]? = nil, verify: Bool = true) {
        self.serverName = serverName
        self.caPath = caPath
        self.caPEM = caPEM
        self.verify = verify
    }

    /// The name checked (and sent in SNI) for an endpoint written as `endpoint` (`HOST:PORT`).
    public func name(for endpoint: UpstreamEndpoint) -> String {
        if let serverName { return serverName }
        var host = Substring(endpoint.text)
        if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return String(host)
    }
}

import CGatewayTLS
import GatewayConfig
import GatewayCore

/// A TLS listener's certificates as OpenSSL contexts (one per certificate, chosen by SNI, the
/// first the default), built once per worker from the bytes its master handed over. Immutable
/// once built: OpenSSL's contexts may then create connections from any thread, hence
/// `@unchecked Sendable`. Owns the contexts; connections hold their own references.
final class TLSServerContext: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ configuration: TLSConfig, listener: String) throws(GatewayServerError) {
        var reason = [CChar](repeating: 0, count: 256)
        let capacity = reason.count
        let alpn = configuration.alpnWireFormat
        guard
            let pointer = alpn.withUnsafeBufferPointer({
                gw_tls_server_new(
                    configuration.minVersion.wireValue, configuration.sessionTickets ? Self.sessionLifetime : 0,
                    $0.baseAddress, $0.count, &reason, capacity)
            })
        else {
            throw .listenerFailed(listener: listener, fd: -1, reason: "TLS: \(Self.text(reason))")
        }
        self.pointer = pointer
        for certificate in configuration.certificates {
            let added = certificate.certificatePEM.withUnsafeBytes { cert in
                certificate.keyPEM.withUnsafeBytes { key in
                    gw_tls_server_add_certificate(
                        pointer, cert.baseAddress, cert.count, key.baseAddress, key.count, &reason, capacity)
                }
            }
            guard added == 0 else {
                throw .listenerFailed(
                    listener: listener, fd: -1,
                    reason: "certificate \(certificate.certificatePath): \(Self.text(reason))")
            }
        }
    }

    /// What clients are told a ticket is good for: what the master's rotation guarantees.
    static let sessionLifetime = Int(SessionTicketKeys.sessionLifetime.components.seconds)

    deinit {
        gw_tls_server_free(self.pointer)
    }

    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

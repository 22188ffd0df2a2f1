import CGatewayTLS
import GatewayCore

/// The worker's side of `SessionTicketKeys`: the one list OpenSSL's ticket callback reads for
/// every TLS listener of the process. Set from the handoff's `hello`, then replaced by each
/// `ticket_keys` frame from the channel's reader thread while the loops handshake; the shim
/// holds it behind a mutex and wipes the keys it replaces.
enum TLSTicketKeys {
    static func install(_ keys: SessionTicketKeys) {
        let flat = keys.keys.flatMap { $0 }
        flat.withUnsafeBufferPointer { gw_tls_set_ticket_keys($0.baseAddress, keys.keys.count) }
    }
}

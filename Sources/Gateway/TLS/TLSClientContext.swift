import CGatewayTLS
import GatewayConfig

/// An upstream's TLS (`tls:` on an upstream) as an OpenSSL client context: what it trusts
/// (`ca` as the master read it, or the system's store) and whether it checks. Built once per
/// worker at start; immutable, so every loop's pool makes connections from it, hence
/// `@unchecked Sendable`. Owns the context; connections hold their own references.
final class TLSClientContext: @unchecked Sendable {
    let pointer: OpaquePointer
    let configuration: UpstreamTLSConfig

    init(_ configuration: UpstreamTLSConfig, upstream: String) throws(GatewayServerError) {
        var reason = [CChar](repeating: 0, count: 256)
        let capacity = reason.count
        let made: OpaquePointer?
        if let ca = configuration.caPEM {
            made = ca.withUnsafeBytes {
                gw_tls_client_new($0.baseAddress, $0.count, configuration.verify ? 1 : 0, &reason, capacity)
            }
        } else {
            made = gw_tls_client_new(nil, 0, configuration.verify ? 1 : 0, &reason, capacity)
        }
        guard let made else {
            let file = configuration.caPath.map { "ca \($0): " } ?? ""
            throw .upstreamFailed(upstream: upstream, reason: "TLS: \(file)\(TLSServerContext.text(reason))")
        }
        self.pointer = made
        self.configuration = configuration
    }

    deinit {
        gw_tls_client_free(self.pointer)
    }

    /// Every upstream with `tls`, by name.
    static func contexts(for upstreams: [UpstreamConfig]) -> Result<[String: TLSClientContext], GatewayServerError> {
        var contexts: [String: TLSClientContext] = [:]
        for upstream in upstreams {
            guard let tls = upstream.tls else { continue }
            do throws(GatewayServerError) {
                contexts[upstream.name] = try TLSClientContext(tls, upstream: upstream.name)
            } catch {
                return .failure(error)
            }
        }
        return .success(contexts)
    }
}

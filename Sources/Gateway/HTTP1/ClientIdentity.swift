import GatewayCore
import GatewayHTTP

#if canImport(Glibc)
    import Glibc
#endif

/// Who a connection's peer is: the socket's address, or the one a PROXY protocol header gave.
/// One per client connection, on its loop only.
final class ConnectionPeer {
    private(set) var address: IPAddress?
    private var cachedText: String?

    init(_ storage: sockaddr_storage) {
        var storage = storage
        switch CInt(storage.ss_family) {
        case AF_INET:
            self.address = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    IPAddress(inAddr: $0.pointee.sin_addr.s_addr)
                }
            }
        case AF_INET6:
            self.address = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { IPAddress(in6Addr: $0.pointee.sin6_addr) }
            }
        default:
            self.address = nil
        }
    }

    /// `address` as text, or "-" when there is none. Made on first use: a request answered
    /// locally without an access log never needs it.
    var text: String {
        if let cachedText { return cachedText }
        let text = self.address?.description ?? "-"
        self.cachedText = text
        return text
    }

    /// From a PROXY protocol header: the balancer's client.
    func replace(with address: IPAddress) {
        self.address = address
        self.cachedText = nil
    }
}

/// `trusted_proxies` of one listener, and what they make of a request's forwarding headers.
struct TrustedProxies: Sendable {
    let ranges: [AddressRange]

    static let none = TrustedProxies(ranges: [])

    func contains(_ address: IPAddress?) -> Bool {
        guard let address, !self.ranges.isEmpty else { return false }
        return self.ranges.contains { $0.contains(address) }
    }

    /// The client a request is from. From an untrusted peer, the peer. From a trusted one, the
    /// rightmost `X-Forwarded-For` address that is not trusted itself (nginx's
    /// `real_ip_recursive on`): every hop up to it is ours, and what lies left of it was
    /// written by the client and could be anything. Every address trusted: the leftmost. A
    /// token that is not an address ends the walk at the last address read, for a hop that
    /// writes garbage cannot vouch for what came before it.
    func client(peer: ConnectionPeer, forwardedFor head: MessageHead, _ bytes: UnsafeBufferPointer<UInt8>)
        -> (address: IPAddress?, text: String)
    {
        guard let peerAddress = peer.address, self.contains(peerAddress) else { return (peer.address, peer.text) }
        var candidate = peerAddress
        for field in head.fields.reversed() where field.name == .xForwardedFor {
            let value = UnsafeBufferPointer(rebasing: bytes[field.valueRange])
            var tokens: [Range<Int>] = []
            HTTPBytes.forEachToken(value) { tokens.append($0) }
            for token in tokens.reversed() {
                guard let address = IPAddress(literal: UnsafeBufferPointer(rebasing: value[token])) else {
                    return (candidate, candidate.description)
                }
                candidate = address
                if !self.contains(address) {
                    return (address, address.description)
                }
            }
        }
        return (candidate, candidate == peerAddress ? peer.text : candidate.description)
    }
}

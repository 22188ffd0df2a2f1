import GatewayCore
import NIOCore

/// Who a connection's peer is: the socket's address, or the one a PROXY protocol header gave.
/// One per client connection, set up before its first request (`ProxyProtocolDecoder` may
/// replace it); read on the connection's event loop only.
final class ConnectionPeer {
    private(set) var address: IPAddress?
    /// `address` as text, or "-" when there is none (a UNIX socket).
    private(set) var text: String

    init(_ socketAddress: SocketAddress?) {
        self.address = socketAddress.flatMap(Self.ipAddress)
        self.text = self.address?.description ?? socketAddress?.ipAddress ?? "-"
    }

    /// From a PROXY protocol header: the balancer's client.
    func replace(with address: IPAddress) {
        self.address = address
        self.text = address.description
    }

    static func ipAddress(_ socketAddress: SocketAddress) -> IPAddress? {
        switch socketAddress {
        case .v4(let v4): return IPAddress(inAddr: v4.address.sin_addr.s_addr)
        case .v6(let v6):
            let address = IPAddress(in6Addr: v6.address.sin6_addr)
            return address
        case .unixDomainSocket: return nil
        }
    }
}

/// `trusted_proxies` of one listener, and what they make of a request's forwarding headers.
struct TrustedProxies: Sendable {
    let ranges: [AddressRange]

    static let none = TrustedProxies(ranges: [])

    func contains(_ address: IPAddress?) -> Bool {
        guard let address else { return false }
        return self.ranges.contains { $0.contains(address) }
    }

    /// The client a request is from. From an untrusted peer, the peer. From a trusted one, the
    /// rightmost `X-Forwarded-For` address that is not trusted itself (nginx's
    /// `real_ip_recursive on`): every hop up to it is ours, and what lies left of it was
    /// written by the client and could be anything. Every address trusted: the leftmost. A
    /// token that is not an address ends the walk at the last address read, for a hop that
    /// writes garbage cannot vouch for what came before it.
    func client(peer: ConnectionPeer, forwardedFor values: [String]) -> (address: IPAddress?, text: String) {
        guard let peerAddress = peer.address, self.contains(peerAddress), !values.isEmpty else {
            return (peer.address, peer.text)
        }
        var candidate = peerAddress
        for value in values.reversed() {
            for token in value.split(separator: ",").reversed() {
                let trimmed = token.trimmingASCIISpaces
                var text = String(trimmed)
                guard let address = text.withUTF8({ IPAddress(literal: $0) }) else {
                    return (candidate, candidate.description)
                }
                candidate = address
                if !self.contains(address) {
                    return (address, address.description)
                }
            }
        }
        return (candidate, candidate.description)
    }
}

extension Substring {
    /// Without the optional whitespace (SP, HTAB) of RFC 9110 lists.
    var trimmingASCIISpaces: Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return result
    }
}

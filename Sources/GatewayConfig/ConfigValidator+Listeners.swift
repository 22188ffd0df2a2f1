import GatewayCore
import Yams

extension ConfigValidator {
    static let listenerKeys = ["name", "address", "backlog", "trusted_proxies", "proxy_protocol", "tls", "h2c"]

    /// The valid listeners, and every listener name declared (valid or not), so a route naming
    /// a listener that has some other error is not reported a second time.
    mutating func listeners(_ root: MappingFields) -> ([ListenerConfig], Set<String>) {
        guard let node = required(root, "listeners") else { return ([], []) }
        if node.isNull {
            error("listeners: at least one listener is required", at: node.position)
            return ([], [])
        }
        guard let items = list(node, path: "listeners") else { return ([], []) }
        if items.isEmpty {
            error("listeners: at least one listener is required", at: node.position)
            return ([], [])
        }

        var listeners: [ListenerConfig] = []
        var names: Set<String> = []
        var firstByName: [String: SourcePosition] = [:]
        var firstByAddress: [ListenerAddress: (name: String, line: Int)] = [:]
        for (index, item) in items.enumerated() {
            let path = "listeners[\(index)]"
            guard let fields = fields(of: item, path: path, allowed: ConfigValidator.listenerKeys) else { continue }

            var name = self.name(fields)
            if let (text, position) = name {
                names.insert(text)
                if let first = firstByName[text] {
                    error(
                        "\(fields.path(of: "name")): duplicate listener name '\(text)' (first defined at line \(first.line))",
                        at: position)
                    name = nil
                } else {
                    firstByName[text] = position
                }
            }

            var address: ListenerAddress?
            if let node = required(fields, "address"), let text = string(node, path: fields.path(of: "address")) {
                do {
                    address = try ListenerAddress(parsing: text)
                } catch {
                    self.error("\(fields.path(of: "address")): \(error.description)", at: node.position)
                }
                // Port 0 asks the kernel for a free port, so two of those never collide.
                if let parsed = address, parsed.port != 0 {
                    if let first = firstByAddress[parsed] {
                        self.error(
                            "\(fields.path(of: "address")): \(parsed) is already used by listener '\(first.name)' "
                                + "(line \(first.line))", at: node.position)
                        address = nil
                    } else {
                        firstByAddress[parsed] = (name?.name ?? path, node.position?.line ?? 0)
                    }
                }
            }

            var backlog: Int32? = ListenerConfig.defaultBacklog
            if let node = fields.optionalValue("backlog") {
                backlog = integer(node, path: fields.path(of: "backlog"), in: 1...65535).map { Int32($0) }
            }

            var ok = true
            var trustedProxies: [AddressRange]?
            if let node = fields.optionalValue("trusted_proxies") {
                trustedProxies = addressRanges(node, path: fields.path(of: "trusted_proxies"))
                ok = trustedProxies != nil
            }
            var proxyProtocol = false
            if let node = fields.optionalValue("proxy_protocol") {
                if let value = boolean(node, path: fields.path(of: "proxy_protocol")) {
                    proxyProtocol = value
                } else {
                    ok = false
                }
            }

            var tls: TLSConfig?
            if let node = fields.optionalValue("tls") {
                tls = self.tls(node, path: fields.path(of: "tls"))
                if tls == nil { ok = false }
            }

            var h2c = false
            if let node = fields.optionalValue("h2c") {
                if let value = boolean(node, path: fields.path(of: "h2c")) {
                    h2c = value
                    if value, tls != nil {
                        error(
                            "\(fields.path(of: "h2c")): h2c is HTTP/2 without TLS; on a TLS listener, offer h2 "
                                + "in tls.alpn instead", at: fields.entry("h2c")?.keyPosition)
                        ok = false
                    }
                } else {
                    ok = false
                }
            }

            if let name, let address, let backlog, ok {
                listeners.append(
                    ListenerConfig(
                        name: name.name, address: address, backlog: backlog, trustedProxies: trustedProxies,
                        proxyProtocol: proxyProtocol, tls: tls, h2c: h2c))
            }
        }
        return (listeners, names)
    }
}

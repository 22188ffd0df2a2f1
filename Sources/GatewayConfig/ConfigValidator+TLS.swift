import CGatewayTLS
import GatewayCore
import Yams

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `tls:` on a listener. Certificate and key files are read through the environment (the disk
/// in the master, the master's bytes in a worker) and checked by the very OpenSSL the workers
/// serve them with: each parses, the key is the certificate's, the certificate names a host,
/// and (in the master, which has a clock that matters) it is valid now. Each problem is
/// reported at the `cert` or `key` key, with the file's path; a key's contents never are.
extension ConfigValidator {
    static let tlsKeys = ["certificates", "alpn", "min_version", "session_tickets"]
    static let tlsCertificateKeys = ["cert", "key"]
    /// A certificate with a long chain is a few KiB; a file larger than this is the wrong file.
    static let maximumTLSFileSize = 1 << 20

    mutating func tls(_ node: Node, path: String) -> TLSConfig? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.tlsKeys) else { return nil }
        var ok = true
        var certificates: [TLSCertificate] = []
        if let node = required(fields, "certificates"), let items = list(node, path: fields.path(of: "certificates")) {
            if items.isEmpty {
                error("\(fields.path(of: "certificates")): at least one certificate is required", at: node.position)
                ok = false
            }
            for (index, item) in items.enumerated() {
                if let certificate = tlsCertificate(item, path: "\(fields.path(of: "certificates"))[\(index)]") {
                    certificates.append(certificate)
                } else {
                    ok = false
                }
            }
        } else {
            ok = false
        }
        var alpn = TLSConfig.defaultProtocols
        if let node = fields.optionalValue("alpn") {
            if let parsed = alpnList(node, path: fields.path(of: "alpn")) { alpn = parsed } else { ok = false }
        }
        var minVersion = TLSVersion.tls12
        if let node = fields.optionalValue("min_version") {
            let options = TLSVersion.allCases.map { ($0.rawValue, $0) }
            if let version = choice(node, path: fields.path(of: "min_version"), options) {
                minVersion = version
            } else {
                ok = false
            }
        }
        var sessionTickets = true
        if let node = fields.optionalValue("session_tickets") {
            if let value = boolean(node, path: fields.path(of: "session_tickets")) {
                sessionTickets = value
            } else {
                ok = false
            }
        }
        guard ok else { return nil }
        return TLSConfig(certificates: certificates, alpn: alpn, minVersion: minVersion, sessionTickets: sessionTickets)
    }

    private mutating func alpnList(_ node: Node, path: String) -> [String]? {
        guard let items = list(node, path: path) else { return nil }
        if items.isEmpty {
            error("\(path): at least one protocol is required (http/1.1)", at: node.position)
            return nil
        }
        var protocols: [String] = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let name = string(item, path: itemPath) else { return nil }
            guard TLSConfig.supportedProtocols.contains(name) else {
                let why =
                    "the protocols gatewayd speaks inside TLS are \(TLSConfig.supportedProtocols.joined(separator: ", "))"
                error("\(itemPath): \(quoted(name)) is not supported (\(why))", at: item.position)
                return nil
            }
            if !protocols.contains(name) { protocols.append(name) }
        }
        return protocols
    }

    private mutating func tlsCertificate(_ node: Node, path: String) -> TLSCertificate? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.tlsCertificateKeys) else {
            return nil
        }
        let certificate = tlsFile(fields, "cert")
        let key = tlsFile(fields, "key")
        guard let certificate, let key else { return nil }
        let certificateAt = fields.entry("cert")?.keyPosition
        let keyAt = fields.entry("key")?.keyPosition
        let certificateName = "certificate \(displayPath(certificate.path))"
        let keyName = "key \(displayPath(key.path))"

        var info = gw_tls_certificate_info()
        var reason = [CChar](repeating: 0, count: 256)
        let capacity = reason.count
        let code = certificate.bytes.withUnsafeBytes { cert in
            key.bytes.withUnsafeBytes { keyBytes in
                gw_tls_inspect(
                    cert.baseAddress, cert.count, keyBytes.baseAddress, keyBytes.count, &info, &reason, capacity)
            }
        }
        let why = String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The codes are an anonymous C enum, which Swift imports as Int.
        switch Int(code) {
        case GW_TLS_OK:
            break
        case GW_TLS_BAD_CERTIFICATE:
            error("\(fields.path(of: "cert")): \(certificateName): does not parse: \(why)", at: certificateAt)
            return nil
        case GW_TLS_BAD_KEY:
            error("\(fields.path(of: "key")): \(keyName): does not parse: \(why)", at: keyAt)
            return nil
        default:
            error("\(fields.path(of: "key")): \(keyName): does not match \(certificateName)", at: keyAt)
            return nil
        }
        let names = Self.names(in: info)
        if names.isEmpty {
            error(
                "\(fields.path(of: "cert")): \(certificateName): names no host (no DNS name in subjectAltName, no CN)",
                at: certificateAt)
            return nil
        }
        // The clock is the master's concern: a worker given these bytes serves what its master
        // checked, even if a restart comes a second after the certificate expired.
        if environment.checksSystem {
            let now = environment.system.now()
            if info.not_after < now {
                error(
                    "\(fields.path(of: "cert")): \(certificateName): expired on \(Self.utc(info.not_after))",
                    at: certificateAt)
                return nil
            }
            if info.not_before > now {
                error(
                    "\(fields.path(of: "cert")): \(certificateName): not valid before \(Self.utc(info.not_before))",
                    at: certificateAt)
                return nil
            }
        }
        return TLSCertificate(
            certificatePath: certificate.path, keyPath: key.path, certificatePEM: certificate.bytes,
            keyPEM: key.bytes, names: names, notAfter: info.not_after)
    }

    // MARK: Upstreams

    static let upstreamTLSKeys = ["sni", "ca", "verify"]

    /// `tls:` on an upstream. `ca` is read here (the master's disk, a worker's handed-over
    /// bytes) and must hold at least one PEM certificate that OpenSSL parses.
    mutating func upstreamTLS(_ node: Node, path: String) -> UpstreamTLSConfig? {
        guard let fields = fields(of: node, path: path, allowed: ConfigValidator.upstreamTLSKeys) else { return nil }
        var config = UpstreamTLSConfig()
        var ok = true
        if let node = fields.optionalValue("sni") {
            if let name = string(node, path: fields.path(of: "sni")) {
                if Self.isServerName(name) {
                    config.serverName = name
                } else {
                    error(
                        "\(fields.path(of: "sni")): invalid server name \(quoted(name)): "
                            + "expected a host name (letters, digits, '-', '.') or an IP address",
                        at: node.position)
                    ok = false
                }
            } else {
                ok = false
            }
        }
        if let node = fields.optionalValue("verify") {
            if let verify = boolean(node, path: fields.path(of: "verify")) {
                config.verify = verify
            } else {
                ok = false
            }
        }
        if fields.optionalValue("ca") != nil {
            if let file = tlsFile(fields, "ca") {
                var reason = [CChar](repeating: 0, count: 256)
                let capacity = reason.count
                let count = file.bytes.withUnsafeBytes {
                    gw_tls_count_certificates($0.baseAddress, $0.count, &reason, capacity)
                }
                if count > 0 {
                    config.caPath = file.path
                    config.caPEM = file.bytes
                } else {
                    let why = String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    error(
                        "\(fields.path(of: "ca")): certificate \(displayPath(file.path)): does not parse: \(why)",
                        at: fields.entry("ca")?.keyPosition)
                    ok = false
                }
            } else {
                ok = false
            }
        }
        return ok ? config : nil
    }

    /// A DNS name (RFC 1123 labels) or an IP literal: what SNI and the certificate check take.
    static func isServerName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        if IPAddress(name) != nil { return true }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0 == "-" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
        }
    }

    /// `cert` or `key`: an absolute path and the file's bytes.
    private mutating func tlsFile(_ fields: MappingFields, _ name: String) -> (path: String, bytes: [UInt8])? {
        let path = fields.path(of: name)
        guard let node = required(fields, name), let text = string(node, path: path),
            let file = filePath(node, text, path: path)
        else { return nil }
        switch environment.contents(of: file, limit: ConfigValidator.maximumTLSFileSize) {
        case .success(let bytes):
            return (file, bytes)
        case .failure(let failure):
            error("\(path): \(failure.reason)", at: fields.entry(name)?.keyPosition)
            return nil
        }
    }

    private static func names(in info: gw_tls_certificate_info) -> [String] {
        var info = info
        return withUnsafeBytes(of: &info.names) { raw in
            let all = raw.bindMemory(to: UInt8.self)
            var names: [String] = []
            var start = 0
            for _ in 0..<Int(info.name_count) {
                guard let end = all[start...].firstIndex(of: 0) else { break }
                names.append(String(decoding: all[start..<end], as: UTF8.self))
                start = end + 1
            }
            return names
        }
    }

    /// `2026-12-07 16:32 UTC`.
    static func utc(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)) UTC"
    }
}

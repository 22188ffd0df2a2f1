import Yams

/// `tracing:` (TracingConfig).
extension ConfigValidator {
    static let tracingKeys = ["otlp_endpoint", "sample_ratio", "service_name"]

    mutating func tracing(_ node: Node) -> TracingConfig? {
        guard let fields = fields(of: node, path: "tracing", allowed: ConfigValidator.tracingKeys),
            let endpointNode = required(fields, "otlp_endpoint")
        else { return nil }
        let endpoint = otlpEndpoint(endpointNode, path: fields.path(of: "otlp_endpoint"))
        var ratio: Double? = TracingConfig.defaultSampleRatio
        if let node = fields.optionalValue("sample_ratio") {
            ratio = sampleRatio(node, path: fields.path(of: "sample_ratio"))
        }
        var serviceName: String? = TracingConfig.defaultServiceName
        if let node = fields.optionalValue("service_name") {
            serviceName = string(node, path: fields.path(of: "service_name"))
            if serviceName?.isEmpty == true {
                error("tracing.service_name: must not be empty (leave it out for gatewayd)", at: node.position)
                serviceName = nil
            }
        }
        guard let endpoint, let ratio, let serviceName else { return nil }
        if !TracingConfig.exporterIsBuiltIn {
            // Refused rather than ignored: a config that asks for traces and gets none would
            // only be noticed when someone looks for a trace that is not there.
            error(
                "tracing.otlp_endpoint: this gatewayd was built without the OTLP exporter; build it with "
                    + "`make release TRACING=1` (swift build --traits OTLPTracing), or remove `tracing:`",
                at: endpointNode.position)
            return nil
        }
        return TracingConfig(otlpEndpoint: endpoint, sampleRatio: ratio, serviceName: serviceName)
    }

    /// An http or https URL with a host; without a path (or with `/` alone) it gets the OTLP
    /// traces path, `/v1/traces`.
    private mutating func otlpEndpoint(_ node: Node, path: String) -> String? {
        guard let text = string(node, path: path) else { return nil }
        let lowered = text.lowercased()
        guard let scheme = ["http://", "https://"].first(where: { lowered.hasPrefix($0) }) else {
            error("\(path): expected an http:// or https:// URL (OTLP/HTTP), got \(quoted(text))", at: node.position)
            return nil
        }
        let rest = text.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty, !authority.hasPrefix(":"), !authority.contains("@"),
            text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else {
            error(
                "\(path): expected a URL such as http://127.0.0.1:4318/v1/traces, got \(quoted(text))",
                at: node.position)
            return nil
        }
        let urlPath = rest.dropFirst(authority.count)
        if urlPath.isEmpty || urlPath == "/" {
            return String(scheme) + authority + "/v1/traces"
        }
        return text
    }

    /// A number from 0 to 1 (`0.01`, `1`, `0`).
    private mutating func sampleRatio(_ node: Node, path: String) -> Double? {
        guard case .scalar(let scalar) = node, scalar.kind == .float || scalar.kind == .int,
            let value = Double(scalar.string), value.isFinite
        else {
            error("\(path): expected a number from 0 to 1, got \(node.kindDescription)", at: node.position)
            return nil
        }
        guard (0.0...1.0).contains(value) else {
            error("\(path): must be from 0 to 1, got \(scalar.string)", at: node.position)
            return nil
        }
        return value
    }
}

import GatewayConfig
import Testing

/// The diagnostics `ConfigLoader.parse` reports for `yaml`, as `FILE:LINE:COL: message` lines;
/// empty if it parsed.
func problems(_ yaml: String, file: String = "gateway.yaml") -> [String] {
    problems(bytes: Array(yaml.utf8), file: file)
}

func problems(bytes: [UInt8], file: String = "gateway.yaml") -> [String] {
    do {
        _ = try ConfigLoader.parse(bytes, path: file)
        return []
    } catch {
        return error.diagnostics.map(\.description)
    }
}

func parse(_ yaml: String, sourceLocation: SourceLocation = #_sourceLocation) -> GatewayConfiguration? {
    do {
        return try ConfigLoader.parse(Array(yaml.utf8), path: "gateway.yaml")
    } catch {
        Issue.record("expected \(quotedForTest(yaml)) to parse, got:\n\(error)", sourceLocation: sourceLocation)
        return nil
    }
}

private func quotedForTest(_ text: String) -> String {
    text.count > 200 ? String(text.prefix(200)) + "..." : text
}

/// Just enough to be valid, so a test can add the one thing it is about.
let minimalListeners = """
    listeners:
      - name: web
        address: 127.0.0.1:8080

    """

import GatewayCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A configuration together with the exact bytes it came from, so the master can hand workers
/// the same text it validated even if the file changes in between.
public struct LoadedConfiguration: Sendable {
    public var path: String
    /// Exactly the bytes that were validated.
    public var bytes: [UInt8]
    public var configuration: GatewayConfiguration

    public init(path: String, bytes: [UInt8], configuration: GatewayConfiguration) {
        self.path = path
        self.bytes = bytes
        self.configuration = configuration
    }
}

/// Reads and validates gatewayd configuration files (see docs/configuration.md).
public enum ConfigLoader {
    /// Real configurations are a few KiB; anything near this is a mistake (the wrong file).
    public static let maximumSize = 1 << 20

    /// Reads `path` (at most `maximumSize` bytes are accepted) and parses it.
    public static func load(path: String) throws(ConfigError) -> LoadedConfiguration {
        let bytes = try readFile(path)
        let configuration = try parse(bytes, path: path)
        return LoadedConfiguration(path: path, bytes: bytes, configuration: configuration)
    }

    /// Parses and validates configuration text. `path` is only used in diagnostics. Throws with
    /// every problem found, in file order. Safe on any input: never traps, never hangs.
    public static func parse(_ bytes: [UInt8], path: String) throws(ConfigError) -> GatewayConfiguration {
        guard bytes.count <= maximumSize else {
            throw ConfigError(
                ConfigDiagnostic(
                    file: path, line: 1, column: 1,
                    message: "the file is larger than \(maximumSize) bytes (1 MiB), the limit for a configuration"))
        }
        let source = try SourceText(validating: bytes, file: path)
        // The node tree is built, walked and freed on the large stack (see LargeStack).
        let result: Result<GatewayConfiguration, ConfigError> = LargeStack.run {
            var sink = DiagnosticSink(file: path)
            guard let document = YAMLComposer.compose(source, into: &sink) else {
                return .failure(sink.error())
            }
            var validator = ConfigValidator(sink: sink, renamedKeys: document.renamedKeys)
            let configuration = validator.configuration(from: document.root)
            guard let configuration, validator.sink.isEmpty else {
                return .failure(validator.sink.error())
            }
            return .success(configuration)
        }
        return try result.get()
    }

    /// At most `maximumSize + 1` bytes, so a huge file (or /dev/zero) costs no more than that
    /// and still reads as too large.
    private static func readFile(_ path: String) throws(ConfigError) -> [UInt8] {
        do {
            let fd = try syscall("open", on: path) { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
            defer { closeDescriptor(fd) }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            while bytes.count <= maximumSize {
                let count = try syscall("read", on: path) {
                    chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                }
                if count == 0 { break }
                bytes.append(contentsOf: chunk[..<count])
            }
            return bytes
        } catch {
            throw ConfigError(
                ConfigDiagnostic(file: path, line: 1, column: 1, message: "cannot read: \(error.errno.description)"))
        }
    }
}

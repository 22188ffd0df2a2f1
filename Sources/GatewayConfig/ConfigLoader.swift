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
    /// Every other file the configuration read (the routes' `keys_file`s), by absolute path,
    /// with exactly the bytes that were validated. Handed to workers with `bytes`, so that
    /// `ConfigLoader.parse(bytes, path: path, files: files)` builds this very configuration
    /// without reading the disk.
    public var files: [String: [UInt8]]

    public init(path: String, bytes: [UInt8], configuration: GatewayConfiguration, files: [String: [UInt8]] = [:]) {
        self.path = path
        self.bytes = bytes
        self.configuration = configuration
        self.files = files
    }
}

/// Reads and validates gatewayd configuration files (see docs/configuration.md).
public enum ConfigLoader {
    /// Real configurations are a few KiB; anything near this is a mistake (the wrong file).
    public static let maximumSize = 1 << 20

    /// Reads `path` (at most `maximumSize` bytes are accepted) and parses it, reading every file
    /// it refers to from the disk and recording it in `files`.
    public static func load(path: String) throws(ConfigError) -> LoadedConfiguration {
        try load(path: path, system: .live)
    }

    static func load(path: String, system: ConfigSystem) throws(ConfigError) -> LoadedConfiguration {
        let bytes = try readFile(path)
        let (configuration, files) = try parse(bytes, path: path, files: nil, system: system)
        return LoadedConfiguration(path: path, bytes: bytes, configuration: configuration, files: files)
    }

    /// Parses and validates configuration text. `path` names the file in diagnostics, and
    /// relative paths in it (`keys_file`, `access_log`) are resolved against its directory.
    /// Throws with every problem found, in file order. Safe on any input: never traps, never hangs.
    ///
    /// `files` nil (the master): files the configuration refers to are read from the disk, and
    /// the system is checked (directories, users and groups exist). `files` given (a worker,
    /// with `LoadedConfiguration.files` from its master): those files come from the map and
    /// nothing is read from the disk; a path not in the map is an error, and the checks of the
    /// system, which the master made, are not repeated. Host names of upstream endpoints are
    /// resolved either way.
    public static func parse(
        _ bytes: [UInt8], path: String, files: [String: [UInt8]]? = nil
    ) throws(ConfigError) -> GatewayConfiguration {
        try parse(bytes, path: path, files: files, system: .live).configuration
    }

    static func parse(
        _ bytes: [UInt8], path: String, files handedOver: [String: [UInt8]]?, system: ConfigSystem
    ) throws(ConfigError) -> (configuration: GatewayConfiguration, files: [String: [UInt8]]) {
        guard bytes.count <= maximumSize else {
            throw ConfigError(
                ConfigDiagnostic(
                    file: path, line: 1, column: 1,
                    message: "the file is larger than \(maximumSize) bytes (1 MiB), the limit for a configuration"))
        }
        let source = try SourceText(validating: bytes, file: path)
        // The node tree is built, walked and freed on the large stack (see LargeStack).
        let result: Result<(GatewayConfiguration, [String: [UInt8]]), ConfigError> = LargeStack.run {
            var sink = DiagnosticSink(file: path)
            guard let document = YAMLComposer.compose(source, into: &sink) else {
                return .failure(sink.error())
            }
            var validator = ConfigValidator(
                sink: sink, renamedKeys: document.renamedKeys,
                environment: ConfigEnvironment(configPath: path, handedOver: handedOver, system: system))
            let configuration = validator.configuration(from: document.root)
            guard let configuration, validator.sink.isEmpty else {
                return .failure(validator.sink.error())
            }
            return .success((configuration, validator.environment.filesRead))
        }
        return try result.get()
    }

    /// At most `maximumSize + 1` bytes, so a huge file (or /dev/zero) costs no more than that
    /// and still reads as too large.
    private static func readFile(_ path: String) throws(ConfigError) -> [UInt8] {
        do {
            return try readAtMost(maximumSize + 1, bytesOf: path)
        } catch {
            throw ConfigError(
                ConfigDiagnostic(file: path, line: 1, column: 1, message: "cannot read: \(error.errno.description)"))
        }
    }
}

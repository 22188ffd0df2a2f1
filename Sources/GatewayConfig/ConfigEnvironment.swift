import GatewayCore

/// The world outside the configuration text as one parse sees it: the directory relative paths
/// start from, the files read so far (recorded for the workers), and the system to check.
struct ConfigEnvironment {
    let system: ConfigSystem
    /// The configuration file's directory, absolute; nil if it is relative and the current
    /// directory cannot be read.
    let baseDirectory: String?
    /// From the master: the only files a worker's parse may read.
    let handedOver: [String: [UInt8]]?
    /// By absolute path, each read once however many routes name it.
    private(set) var filesRead: [String: [UInt8]] = [:]
    /// Each host name resolved once per parse, so two endpoints naming it agree.
    private var resolved: [String: Result<ListenerAddress, ConfigSystem.Failure>] = [:]

    init(configPath: String, handedOver: [String: [UInt8]]?, system: ConfigSystem) {
        self.system = system
        self.handedOver = handedOver
        let directory = configPath.lastIndex(of: "/").map { String(configPath[...$0]) } ?? ""
        self.baseDirectory =
            directory.hasPrefix("/")
            ? ConfigEnvironment.normalized(directory)
            : system.currentDirectory().map { ConfigEnvironment.normalized($0 + "/" + directory) }
    }

    /// Checks of the system (a directory exists, a user exists) are the master's: a worker
    /// given the master's files does not repeat them, so it touches nothing on the disk.
    var checksSystem: Bool { handedOver == nil }

    /// `text` if absolute, else against the configuration's directory; `.` components and
    /// repeated slashes removed. `..` is kept: only the kernel knows what it means past a symlink.
    func absolutePath(_ text: String) -> String? {
        if text.hasPrefix("/") { return ConfigEnvironment.normalized(text) }
        return baseDirectory.map { ConfigEnvironment.normalized($0 + "/" + text) }
    }

    private static func normalized(_ path: String) -> String {
        let components = path.split(separator: "/").filter { $0 != "." }
        return "/" + components.joined(separator: "/")
    }

    /// The bytes of `path` (absolute), at most `limit`; or why not, as a message without the
    /// contents: "cannot read '/etc/gw/keys.txt': No such file or directory".
    mutating func contents(of path: String, limit: Int) -> Result<[UInt8], ConfigSystem.Failure> {
        if let bytes = filesRead[path] { return .success(bytes) }
        let bytes: [UInt8]
        if let handedOver {
            guard let given = handedOver[path] else {
                return .failure(.init(reason: "\(displayPath(path)) was not handed over by the master"))
            }
            bytes = given
        } else {
            switch system.readFile(path, limit) {
            case .success(let read): bytes = read
            case .failure(let failure):
                return .failure(.init(reason: "cannot read \(displayPath(path)): \(failure.reason)"))
            }
        }
        guard bytes.count <= limit else {
            return .failure(.init(reason: "\(displayPath(path)) is larger than \(ByteSizeText.format(Int64(limit)))"))
        }
        filesRead[path] = bytes
        return .success(bytes)
    }
}

extension ConfigEnvironment {
    /// The first address of `host`, port 0.
    mutating func resolve(_ host: String) -> Result<ListenerAddress, ConfigSystem.Failure> {
        if let known = resolved[host] { return known }
        let result = system.resolveHost(host)
        resolved[host] = result
        return result
    }
}

/// A path inside a one-line message: `'/etc/gw/keys.txt'`.
func displayPath(_ path: String) -> String {
    quoted(path, quote: "'", limit: 200)
}

import GatewayCore
import Synchronization
import Testing

@testable import GatewayConfig

#if canImport(Glibc)
    import Glibc
#endif

/// A machine with only what a test puts on it: files, directories, users, groups and host
/// names; and a log of every file read, to show when a parse reads nothing.
struct FakeSystem {
    var files: [String: String] = ["/etc/gw/keys.txt": "# API keys\nkey-one\n\n  key-two  \n"]
    var directories: Set<String> = ["/", "/etc", "/etc/gw", "/var", "/var/log", "/var/log/gatewayd"]
    var users: Set<String> = ["root", "0", "www-data", "33"]
    var groups: Set<String> = ["root", "0", "www-data", "33"]
    var hosts: [String: ListenerAddress] = [
        "localhost": ListenerAddress(family: .ipv4, host: "127.0.0.1", port: 0),
        "backend.internal": ListenerAddress(family: .ipv6, host: "fd00::7", port: 0),
    ]
    var currentDirectory = "/etc/gw"
    /// Seconds since the epoch; nil: the real clock.
    var clock: Int64?

    final class Log: Sendable {
        let reads = Mutex<[String]>([])
        let lookups = Mutex<[String]>([])
    }

    let log = Log()

    var system: ConfigSystem {
        let files = self.files.mapValues { Array($0.utf8) }
        let (directories, users, groups, hosts, cwd, log, clock) = (
            self.directories, self.users, self.groups, self.hosts, self.currentDirectory, self.log, self.clock
        )
        return ConfigSystem(
            readFile: { path, limit in
                log.reads.withLock { $0.append(path) }
                if directories.contains(path) { return .failure(.init(reason: "Is a directory")) }
                guard let bytes = files[path] else { return .failure(.init(reason: "No such file or directory")) }
                return .success(Array(bytes.prefix(limit + 1)))
            },
            fileKind: { path in
                log.lookups.withLock { $0.append("stat \(path)") }
                if directories.contains(path) { return .success(.directory) }
                return .success(files[path] == nil ? nil : .other)
            },
            userExists: { name in
                log.lookups.withLock { $0.append("user \(name)") }
                return .success(users.contains(name))
            },
            groupExists: { name in
                log.lookups.withLock { $0.append("group \(name)") }
                return .success(groups.contains(name))
            },
            resolveHost: { host in
                log.lookups.withLock { $0.append("resolve \(host)") }
                guard let address = hosts[host] else { return .failure(.init(reason: "Name or service not known")) }
                return .success(address)
            },
            currentDirectory: { cwd },
            now: { clock ?? Int64(time(nil)) })
    }

    /// The diagnostics for `yaml`, as `FILE:LINE:COL: message`; empty if it parsed.
    func problems(_ yaml: String, file: String = "gateway.yaml", files: [String: [UInt8]]? = nil) -> [String] {
        do {
            _ = try ConfigLoader.parse(Array(yaml.utf8), path: file, files: files, system: system)
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    func parse(
        _ yaml: String, file: String = "gateway.yaml", files: [String: [UInt8]]? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> (configuration: GatewayConfiguration, files: [String: [UInt8]])? {
        do {
            return try ConfigLoader.parse(Array(yaml.utf8), path: file, files: files, system: system)
        } catch {
            Issue.record("expected the configuration to parse, got:\n\(error)", sourceLocation: sourceLocation)
            return nil
        }
    }
}

/// Two listeners, `web` and `admin`, for tests about the rest.
let twoListeners = """
    listeners:
      - { name: web, address: "127.0.0.1:8080" }
      - { name: admin, address: "127.0.0.1:9090" }

    """

import Testing

@testable import GatewayConfig

#if canImport(Glibc)
    import Glibc
#endif

/// Files a configuration reads besides itself (keys files) are recorded at load, so a worker
/// parses the master's exact bytes without reading the disk.
@Suite struct ConfigFilesTests {
    static let routes = """
        upstreams:
          api: { endpoints: [127.0.0.1:9001] }
        routes:
          - { name: a, upstream: api, auth: { api_keys: { keys_file: keys.txt } } }
          - { name: b, upstream: api, auth: { bearer: { keys_file: ./keys.txt } } }
          - { name: c, upstream: api, auth: { bearer: { keys_file: sub/../tokens.txt } } }

        """

    @Test func loadRecordsFilesAndTheMapReproducesTheConfiguration() throws {
        let directory = try temporaryDirectory()
        defer { removeTree(directory) }
        let configPath = directory + "/gateway.yaml"
        try writeFile(configPath, minimalListeners + Self.routes)
        try writeFile(directory + "/keys.txt", "k1\nk2\n")
        try writeFile(directory + "/tokens.txt", "t1\n")
        try #require(mkdir(directory + "/sub", 0o700) == 0)

        let loaded = try ConfigLoader.load(path: configPath)
        #expect(
            loaded.files == [
                directory + "/keys.txt": Array("k1\nk2\n".utf8),
                directory + "/sub/../tokens.txt": Array("t1\n".utf8),
            ])
        #expect(
            loaded.configuration.routes.map { $0.auth?.keysFile } == [
                directory + "/keys.txt", directory + "/keys.txt", directory + "/sub/../tokens.txt",
            ])

        // Everything on the disk changes or goes: the map alone gives the same configuration.
        try writeFile(directory + "/keys.txt", "other\n")
        unlink(directory + "/tokens.txt")
        let again = try ConfigLoader.parse(loaded.bytes, path: configPath, files: loaded.files)
        #expect(again == loaded.configuration)
        #expect(again.routes[0].auth?.keys == ["k1", "k2"])
        // Whereas from the disk it now differs, and fails.
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(loaded.bytes, path: configPath) }
    }

    @Test func aParseGivenTheMapTouchesNothing() throws {
        var system = FakeSystem()
        system.files["/etc/gw/sub/../tokens.txt"] = "t1\n"
        let yaml =
            "user: www-data\ngroup: www-data\naccess_log: { path: /var/log/gatewayd/a.log }\n" + minimalListeners
            + Self.routes
        let (configuration, files) = try #require(system.parse(yaml))
        #expect(files.keys.sorted() == ["/etc/gw/keys.txt", "/etc/gw/sub/../tokens.txt"])
        #expect(system.log.reads.withLock { $0 }.sorted() == files.keys.sorted())

        let worker = FakeSystem()
        let (again, workerFiles) = try #require(worker.parse(yaml, files: files))
        #expect(again == configuration)
        #expect(workerFiles == files)
        #expect(worker.log.reads.withLock { $0 }.isEmpty)
        // No check of directories or users either: the master made those. Host names are
        // resolved (none here).
        #expect(worker.log.lookups.withLock { $0 }.isEmpty)
    }

    @Test func aFileTheMasterDidNotHandOverIsAnError() {
        #expect(
            FakeSystem().problems(minimalListeners + Self.routes, files: ["/etc/gw/keys.txt": Array("k\n".utf8)]) == [
                "gateway.yaml:9:60: routes[2].auth.bearer.keys_file: '/etc/gw/sub/../tokens.txt' was not handed over by the master"
            ])
        // The map's contents are checked like the disk's.
        #expect(
            FakeSystem().problems(
                minimalListeners + Self.routes,
                files: ["/etc/gw/keys.txt": Array("# none\n".utf8), "/etc/gw/sub/../tokens.txt": Array("t\n".utf8)])
                == [
                    "gateway.yaml:7:62: routes[0].auth.api_keys.keys_file: '/etc/gw/keys.txt' has no keys (only blank lines and '#' comments)",
                    "gateway.yaml:8:60: routes[1].auth.bearer.keys_file: '/etc/gw/keys.txt' has no keys (only blank lines and '#' comments)",
                ])
    }

    @Test func relativePathsFollowTheConfigurationFile() throws {
        var system = FakeSystem()
        system.currentDirectory = "/home/op"
        system.files["/home/op/conf/keys.txt"] = "k\n"
        system.files["/srv/gw/keys.txt"] = "k\n"
        let yaml =
            minimalListeners + "upstreams: { a: { endpoints: [127.0.0.1:1] } }\nroutes:\n"
            + "  - { name: a, upstream: a, auth: { bearer: { keys_file: keys.txt } } }\n"
        #expect(system.parse(yaml, file: "conf/gateway.yaml")?.files.keys.first == "/home/op/conf/keys.txt")
        #expect(system.parse(yaml, file: "./conf//gateway.yaml")?.files.keys.first == "/home/op/conf/keys.txt")
        #expect(system.parse(yaml, file: "/srv/gw/gateway.yaml")?.files.keys.first == "/srv/gw/keys.txt")
    }
}

func temporaryDirectory() throws -> String {
    var template = Array("/tmp/gatewayconfig-test-XXXXXX".utf8CString)
    try #require(mkdtemp(&template) != nil)
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func writeFile(_ path: String, _ contents: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    try #require(fd >= 0)
    defer { close(fd) }
    let bytes = Array(contents.utf8)
    try #require(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
}

/// Only what these tests create: regular files and one level of directories.
func removeTree(_ path: String) {
    guard let directory = opendir(path) else { return }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name == "." || name == ".." { continue }
        let child = path + "/" + name
        if unlink(child) != 0 { removeTree(child) }
    }
    closedir(directory)
    rmdir(path)
}

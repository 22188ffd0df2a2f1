import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Faults and hostile peers, with real processes: who workers run as, what happens when the
/// master dies, and which fds a worker holds. docs/reliability.md lists them.
@Suite("Faults", .serialized, .timeLimit(.minutes(2)))
struct FaultTests {
    // MARK: - Disk errors and crossed commands

    @Test("the config file deleted or unreadable at reload: reload exits 1 naming the file; serving goes on")
    func configGoneAtReload() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        try FileManager.default.removeItem(atPath: gatewayd.configPath)
        var result = try gatewayd.reload()
        #expect(result.status == 1)
        #expect(result.stderr.contains(gatewayd.configPath), "\(result.stderr)")
        #expect(result.stderr.contains("No such file or directory"), "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v1")

        // A directory where the file was: read(2) fails with EISDIR.
        try FileManager.default.createDirectory(atPath: gatewayd.configPath, withIntermediateDirectories: false)
        result = try gatewayd.reload()
        #expect(result.status == 1)
        #expect(result.stderr.contains("Is a directory"), "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v1")
        #expect(try gatewayd.status().generations.count == 1)
    }

    @Test("a reload during a stop is refused clearly; a stop during a reload ends cleanly")
    func crossedCommands() throws {
        // Reload during stop: a half-sent request keeps the stop's drain going.
        let first = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "30s"))
        let connection = try TestConnection(port: try first.port())
        try connection.send("GET / HTTP/1.1\r\n")
        try waitUntil("the connection to be counted") {
            try first.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } > 0
        }
        #expect(try first.gatewayctl(["stop", "--no-wait"]).status == 0)
        try waitUntil("the stop to begin") { (try? first.status().state) == .stopping }
        let refused = try first.reload()
        #expect(refused.status != 0)
        #expect(refused.stderr.lowercased().contains("stop"), "\(refused.stderr)")
        first.signal(SIGTERM)  // the second one: stop now
        #expect(try first.waitForExit(timeout: .seconds(10)) == 0)

        // Stop during reload: both commands answer, the master exits 0, nothing is left.
        let second = try GatewaydProcess(config: Configs.hello(body: "v1"))
        try second.writeConfig(Configs.hello(body: "v2"))
        let workers = try second.status().generations.flatMap(\.workers).map(\.pid)
        let reload = Mutex2<CommandResult?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            reload.set(try? second.reload())
            done.signal()
        }
        let stop = try second.gatewayctl(["stop"])
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(stop.status == 0, "\(stop.stderr)")
        let reloadResult = try #require(reload.get())
        // Either the reload won the race (0) or it was cut by the stop, with a reason.
        #expect(reloadResult.status == 0 || !reloadResult.stderr.isEmpty, "\(reloadResult)")
        #expect(try second.waitForExit(timeout: .seconds(20)) == 0)
        #expect(workers.allSatisfy { !isProcessRunning($0) })
    }

    // MARK: - Privilege drop

    @Test("with user: nobody, workers run as nobody and the master stays root")
    func workersRunAsConfiguredUser() throws {
        try #require(geteuid() == 0, "needs root, as in CI")
        let nobody = try #require(getpwnam("nobody")?.pointee)
        // The access log lives in a root-only (0700) directory: workers open it before they
        // drop root, so it works, as nginx's root-owned log directories do.
        let logDirectory = try TemporaryDirectory()
        let accessLog = logDirectory.file("access.log")
        let gatewayd = try GatewaydProcess(
            config: "user: nobody\naccess_log: { path: \(accessLog), format: json }\n" + Configs.hello())
        let port = try gatewayd.port()
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        #expect(workers.count == 2)
        for pid in workers {
            // Credentials are per thread: every thread, the main one included.
            let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            #expect(threads.count > 1)
            for thread in threads {
                let status = processStatus(path: "/proc/\(pid)/task/\(thread)/status")
                let name = "worker \(pid) thread \(thread) \(status["Name"] ?? [])"
                #expect(status["Uid"] == Array(repeating: "\(nobody.pw_uid)", count: 4), "\(name)")
                #expect(status["Gid"] == Array(repeating: "\(nobody.pw_gid)", count: 4), "\(name)")
                // Supplementary groups are nobody's, none of root's.
                #expect(status["Groups"] == ["\(nobody.pw_gid)"], "\(name)")
            }
        }
        #expect(processStatus(path: "/proc/\(gatewayd.pid)/status")["Uid"] == ["0", "0", "0", "0"])
        #expect(try httpGet(port: port).body == "v1")
        try waitUntil("the access log line") { readWholeFile(accessLog).contains("\"status\":200") }
    }

    @Test("a reload whose workers cannot become the user fails with the call named; the old generation serves")
    func reloadWithUnusableUserFails() throws {
        try #require(geteuid() == 0, "needs root, as in CI")
        // Root without CAP_SETUID: setgroups and setgid work, setuid is refused.
        let gatewayd = try GatewaydProcess(
            config: Configs.hello(body: "v1"), launcher: ["/usr/bin/setpriv", "--bounding-set", "-setuid", "--"])
        let port = try gatewayd.port()
        let before = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        try gatewayd.writeConfig("user: nobody\n" + Configs.hello(body: "v2"))
        let result = try gatewayd.reload()
        #expect(result.status != 0)
        let output = result.stdout + result.stderr
        #expect(output.contains("setuid 65534 (nobody): Operation not permitted"), "\(output)")
        try gatewayd.waitUntilSingleGeneration()
        #expect(try gatewayd.status().generations.flatMap(\.workers).map(\.pid) == before)
        #expect(try httpGet(port: port).body == "v1")
    }

    // MARK: - Master death

    @Test("SIGKILL of the master: workers drain and exit within drain_timeout; a new gatewayd serves the port")
    func masterKilled() throws {
        let drainTimeout: Duration = .seconds(3)
        let first = try GatewaydProcess(config: Configs.hello(body: "v1", drainTimeout: "3s"))
        let port = try first.port()
        let connection = try TestConnection(port: port)
        #expect(try connection.request().body == "v1")
        // Workers and spares alike.
        let children = childPids(of: first.pid)
        #expect(children.count >= 2)
        first.signal(SIGKILL)
        let killedAt = ContinuousClock.now
        _ = try first.waitForExit()
        try waitUntil("every worker to exit", timeout: drainTimeout + .seconds(1)) {
            children.allSatisfy { !isProcessRunning($0) }
        }
        // The idle keep-alive connection was closed politely by the draining worker.
        connection.setTimeout(.seconds(5))
        #expect(connection.waitForClose() == .eof)
        #expect(ContinuousClock.now - killedAt < drainTimeout + .seconds(1))
        let second = try GatewaydProcess(
            config: Configs.hello(body: "v2").replacingOccurrences(of: "127.0.0.1:0", with: "127.0.0.1:\(port)"))
        #expect(try second.port() == port)
        #expect(try httpGet(port: port).body == "v2")
    }

    /// The parent-death signal alone, without the channel's end of file: a stand-in master
    /// (python) spawns a worker with a channel whose other end a grandchild keeps open, and
    /// exits. Only PR_SET_PDEATHSIG can tell the worker.
    @Test("a worker whose master dies while its channel stays open exits on the parent-death signal")
    func parentDeathSignal() throws {
        let directory = try TemporaryDirectory()
        let script = """
            import os, socket, subprocess, sys
            master, worker = socket.socketpair()
            pid = os.posix_spawn(sys.argv[1], ["gatewayd", "worker", "--master-pid", str(os.getpid())], dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_DUP2, worker.fileno(), 3)])
            holder = subprocess.Popen(["sleep", "60"], pass_fds=[master.fileno()])
            print(pid, holder.pid, flush=True)
            os._exit(0)
            """
        try script.write(toFile: directory.file("master.py"), atomically: false, encoding: .utf8)
        let output = directory.file("out")
        let standIn = try ChildProcess(
            ["/usr/bin/python3", directory.file("master.py"), Binaries.gatewayd],
            environment: ProcessInfo.processInfo.environment, output: output)
        try waitUntil("the stand-in master to exit") { !standIn.isRunning }
        let pids = readWholeFile(output).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        try #require(pids.count == 2, "\(readWholeFile(output))")
        defer {
            kill(pids[1], SIGKILL)
            kill(pids[0], SIGKILL)
        }
        try waitUntil("the worker to exit", timeout: .seconds(5)) { !isProcessRunning(pids[0]) }
        #expect(isProcessRunning(pids[1]), "the channel's other end was still open")
    }

    // MARK: - fd hygiene

    @Test("a worker holds its listeners, its channel and NIO's own fds, all CLOEXEC, and nothing else of the master's")
    func workerDescriptors() throws {
        let gatewayd = try GatewaydProcess(config: Configs.hello(workers: 2, listeners: ["web", "admin"]))
        let ports = [try gatewayd.port(of: "web"), try gatewayd.port(of: "admin")]
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        #expect(workers.count == 2)
        let listening = listeningSocketInodes(ports: ports)
        #expect(listening.count == 2)
        let controlSocket = try #require(unixSocketInode(path: gatewayd.socketPath))
        let masterSockets = Set(descriptors(of: gatewayd.pid).values.compactMap(socketInode))
        let tables = Dictionary(uniqueKeysWithValues: workers.map { ($0, descriptors(of: $0)) })
        for pid in workers {
            let table = tables[pid]!
            let channel = try #require(table[3].flatMap(socketInode), "worker \(pid) fd 3: \(table[3] ?? "none")")
            let otherChannels = Set(workers.filter { $0 != pid }.compactMap { tables[$0]![3].flatMap(socketInode) })
            for (fd, target) in table.sorted(by: { $0.key < $1.key }) {
                if let inode = socketInode(target) {
                    #expect(inode != controlSocket, "worker \(pid) fd \(fd) is the control socket")
                    #expect(!otherChannels.contains(inode), "worker \(pid) fd \(fd) is another worker's channel")
                    #expect(
                        inode == channel || listening.contains(inode),
                        "worker \(pid) fd \(fd): \(target) is neither its channel nor a listener")
                    if inode != channel { #expect(masterSockets.contains(inode)) }
                } else if fd > 2 {
                    // NIO's epoll, eventfd, timerfd; never the shared segment's memfd (closed
                    // once mapped) nor a file of the master's.
                    #expect(
                        target.hasPrefix("anon_inode:") || target.hasPrefix("pipe:"),
                        "worker \(pid) fd \(fd): \(target)")
                }
                if fd > 2 {
                    #expect(isCloseOnExec(pid: pid, fd: fd), "worker \(pid) fd \(fd) (\(target)) is not CLOEXEC")
                }
            }
            #expect(Set(table.values.compactMap(socketInode)).isSuperset(of: listening), "worker \(pid)")
        }
    }
}

// MARK: - /proc helpers

/// /proc/PID/status (or a thread's, /proc/PID/task/TID/status) as key → whitespace-separated fields (`Uid` → real, effective, saved, fs).
private func processStatus(path: String) -> [String: [String]] {
    var fields: [String: [String]] = [:]
    for line in readWholeFile(path).split(separator: "\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        fields[String(line[..<colon])] = line[line.index(after: colon)...].split(whereSeparator: \.isWhitespace).map(
            String.init)
    }
    return fields
}

/// fd → readlink target.
private func descriptors(of pid: Int32) -> [Int: String] {
    let directory = "/proc/\(pid)/fd"
    var table: [Int: String] = [:]
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
        guard let fd = Int(entry),
            let target = try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + entry)
        else { continue }
        table[fd] = target
    }
    return table
}

/// `socket:[1234]` → `1234`.
private func socketInode(_ target: String) -> String? {
    target.hasPrefix("socket:[") ? String(target.dropFirst(8).dropLast()) : nil
}

/// Inodes of the sockets listening on 127.0.0.1 on these ports (state 0A in /proc/net/tcp).
private func listeningSocketInodes(ports: [UInt16]) -> Set<String> {
    let locals = Set(ports.map { String(format: "0100007F:%04X", $0) })
    var inodes: Set<String> = []
    for line in readWholeFile("/proc/net/tcp").split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        if fields.count > 9, locals.contains(String(fields[1])), fields[3] == "0A" { inodes.insert(String(fields[9])) }
    }
    return inodes
}

/// The inode of the Unix socket bound to `path` (/proc/net/unix: the inode is field 7, the path 8).
private func unixSocketInode(path: String) -> String? {
    for line in readWholeFile("/proc/net/unix").split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        if fields.count > 7, fields[7] == path { return String(fields[6]) }
    }
    return nil
}

/// O_CLOEXEC (02000000 octal) in the `flags:` line of /proc/PID/fdinfo/FD.
private func isCloseOnExec(pid: Int32, fd: Int) -> Bool {
    let info = readWholeFile("/proc/\(pid)/fdinfo/\(fd)")
    guard let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags:") }),
        let flags = Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8)
    else { return false }
    return flags & 0o2000000 != 0
}

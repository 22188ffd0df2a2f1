import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Disk and resource limits, with real processes: an access log that cannot be opened or
/// written, and the fd limit (RLIMIT_NOFILE) nearly exhausted in a worker and in the master.
/// docs/reliability.md lists them under "Disk and resource limits".
@Suite("Resources", .serialized, .timeLimit(.minutes(2)))
struct ResourceTests {
    // MARK: - Access log

    /// root without CAP_DAC_OVERRIDE is held to a directory's mode like anyone: the way, as
    /// root, to have a directory that passes the config check but cannot be written.
    static let withoutDACOverride = ["/usr/bin/setpriv", "--bounding-set", "-dac_override", "--"]

    /// Paths for an access log that cannot be created: the config check refuses the first two
    /// (it checks the directory); the master's open(2) fails on the third.
    struct UnusablePaths {
        let directory: TemporaryDirectory
        let cases: [(path: String, reason: String)]
        init() throws {
            directory = try TemporaryDirectory()
            let regularFile = directory.file("a-file")
            try "".write(toFile: regularFile, atomically: false, encoding: .utf8)
            let readOnly = directory.file("read-only")
            guard mkdir(readOnly, 0o555) == 0 else { throw HarnessError("mkdir \(readOnly) failed") }
            cases = [
                (regularFile + "/access.log", "'\(regularFile)' is not a directory"),
                (directory.file("missing/access.log"), "directory '\(directory.file("missing"))' does not exist"),
                (readOnly + "/access.log", "access log: open \(readOnly)/access.log: Permission denied"),
            ]
        }
    }

    @Test("an access log that cannot be created fails the reload naming path and reason; serving goes on")
    func accessLogUnusableAtReload() throws {
        try #require(geteuid() == 0, "needs root, as in CI")
        let paths = try UnusablePaths()
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"), launcher: Self.withoutDACOverride)
        let port = try gatewayd.port()
        let workers = Set(try gatewayd.status().generations.flatMap(\.workers).map(\.pid))
        for (path, reason) in paths.cases {
            // Pre-started spares are what a new generation is made of. They are started with
            // the generation's switch to serving (and after a failed reload), before any
            // status answer: one per worker, and no other process.
            let spares = Set(try gatewayd.status().spareWorkers)
            #expect(spares.count == workers.count)
            let before = Set(workerProcesses(ofMaster: gatewayd.pid))
            #expect(before == workers.union(spares))
            try gatewayd.writeConfig("access_log: { path: \(path) }\n" + Configs.hello(body: "v2"))
            let result = try gatewayd.reload()
            #expect(result.status == 1, "\(result)")
            #expect(result.stderr.contains(reason), "\(result.stderr)")
            print("gatewayctl reload: \(result.stderr)")
            #expect(try httpGet(port: port).body == "v1")
            // Nothing started, nothing left behind: the config check and the master's open of
            // the log come before any worker (before, each worker opened the log and failed).
            var now: Set<Int32> = []
            do {
                try waitUntil("the same workers and spares") {
                    now = Set(workerProcesses(ofMaster: gatewayd.pid))
                    return now == before
                }
            } catch {
                let status = try? gatewayd.status()
                throw HarnessError(
                    "\(error)\nworkers \(workers.sorted()), spares \(spares.sorted()), before \(before.sorted()), now \(now.sorted()); status: \(String(describing: status))\n--- gatewayd log ---\n\(gatewayd.log)"
                )
            }
            let status = try gatewayd.status()
            #expect(status.generations.count == 1)
            #expect(Set(status.generations.flatMap(\.workers).map(\.pid)) == workers)
            #expect(!FileManager.default.fileExists(atPath: path))
        }
        #expect(!FileManager.default.fileExists(atPath: paths.directory.file("missing")))

        // A writable path: the reload works and the log is written.
        let good = paths.directory.file("access.log")
        try gatewayd.writeConfig("access_log: { path: \(good) }\n" + Configs.hello(body: "v2"))
        let result = try gatewayd.reload()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v2")
        try waitUntil("the access log line") { readWholeFile(good).contains("\"status\":200") }
    }

    @Test(
        "an access log on a FIFO: with no reader the reload fails at once naming it; with one, lines arrive; a restarted reader gets them again"
    )
    func accessLogOnFIFO() throws {
        let directory = try TemporaryDirectory()
        let fifo = directory.file("access.fifo")
        guard mkfifo(fifo, 0o600) == 0 else { throw HarnessError("mkfifo \(fifo) failed") }
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1", readyTimeout: "10s"))
        let port = try gatewayd.port()
        try gatewayd.writeConfig("access_log: { path: \(fifo) }\n" + Configs.hello(body: "v2", readyTimeout: "10s"))
        // Before: the workers' open(2) blocked until ready_timeout (10 s here).
        let began = ContinuousClock.now
        let failed = try gatewayd.reload()
        let took = ContinuousClock.now - began
        #expect(failed.status == 1)
        #expect(
            failed.stderr.contains("open \(fifo) (a FIFO with no reader): No such device or address"),
            "\(failed.stderr)")
        #expect(took < .seconds(5), "the failed reload took \(took)")
        #expect(try httpGet(port: port).body == "v1")

        // A reader (a log shipper): the reload works and the lines come through the FIFO. It
        // opens without blocking and says so; end of file only means no writer yet.
        let script = """
            import os, sys, time
            fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
            print("reading", flush=True)
            os.set_blocking(fd, True)
            while True:
                data = os.read(fd, 65536)
                if data:
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
                else:
                    time.sleep(0.02)
            """
        func startReader(output: String) throws -> ChildProcess {
            let reader = try ChildProcess(["/usr/bin/python3", "-c", script, fifo], environment: [:], output: output)
            try waitUntil("the reader to open the FIFO") { readWholeFile(output).contains("reading") }
            return reader
        }
        let shipped = directory.file("shipped")
        let reader = try startReader(output: shipped)
        defer { if reader.isRunning { kill(reader.pid, SIGKILL) } }
        let result = try gatewayd.reload()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v2")
        try waitUntil("the access log line through the FIFO") {
            readWholeFile(shipped).contains("\"status\":200")
        }

        // The shipper dies: writes fail (EPIPE), serving goes on, the loss is logged.
        kill(reader.pid, SIGKILL)
        try waitUntil("the failed write to be logged") {
            let body = try httpGet(port: port).body
            #expect(body == "v2")
            return gatewayd.log.contains("access log \(fifo): write: Broken pipe")
        }
        // It comes back: the same fd writes again, and the master's log says so.
        let shippedAgain = directory.file("shipped-again")
        let second = try startReader(output: shippedAgain)
        defer { if second.isRunning { kill(second.pid, SIGKILL) } }
        try waitUntil("lines through the FIFO again") {
            let body = try httpGet(port: port).body
            #expect(body == "v2")
            return readWholeFile(shippedAgain).contains("\"status\":200")
        }
        try waitUntil("'writing again' in the log") { gatewayd.log.contains("access log \(fifo): writing again; ") }
        print(gatewayd.log.split(separator: "\n").first { $0.contains("writing again") } ?? "")
    }

    @Test(
        "an access log that is a symbolic link (planted where the workers' account may write): the reload and the start fail naming it; the target is untouched"
    )
    func accessLogSymbolicLink() throws {
        // CVE-2016-1247 (nginx): a log directory the worker account can write, a link in it,
        // and the next reload wrote as root wherever the link pointed.
        let directory = try TemporaryDirectory()
        let target = directory.file("shadow")
        try "root:secret\n".write(toFile: target, atomically: false, encoding: .utf8)
        let link = directory.file("access.log")
        let dangling = directory.file("created-through-the-link")
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"))
        let port = try gatewayd.port()
        for pointee in [target, dangling] {
            unlink(link)
            guard symlink(pointee, link) == 0 else { throw HarnessError("symlink \(link) failed") }
            try gatewayd.writeConfig("access_log: { path: \(link) }\n" + Configs.hello(body: "v2"))
            let result = try gatewayd.reload()
            #expect(result.status == 1, "\(result)")
            #expect(result.stderr.contains("\(link) (a symbolic link: refused)"), "\(result.stderr)")
            print("gatewayctl reload: \(result.stderr)")
            #expect(try httpGet(port: port).body == "v1")
        }
        #expect(readWholeFile(target) == "root:secret\n")
        #expect(!FileManager.default.fileExists(atPath: dangling))

        let refused = try GatewaydProcess(
            config: "access_log: { path: \(link) }\n" + Configs.hello(), waitForReady: false)
        #expect(try refused.waitForExit() == 1, "\(refused.log)")
        #expect(refused.log.contains("\(link) (a symbolic link: refused)"), "\(refused.log)")
        #expect(!FileManager.default.fileExists(atPath: dangling))
    }

    @Test("an access log that cannot be created at start: gatewayd exits 1 naming path and reason")
    func accessLogUnusableAtStart() throws {
        try #require(geteuid() == 0, "needs root, as in CI")
        let paths = try UnusablePaths()
        for (path, reason) in paths.cases {
            let gatewayd = try GatewaydProcess(
                config: "access_log: { path: \(path) }\n" + Configs.hello(), waitForReady: false,
                launcher: Self.withoutDACOverride)
            let master = gatewayd.pid
            #expect(try gatewayd.waitForExit() == 1, "\(gatewayd.log)")
            #expect(gatewayd.log.contains(reason), "\(gatewayd.log)")
            // Workers and spares leave with their master (they see their channel end).
            try waitUntil("every worker to exit") { workerProcesses(ofMaster: master).isEmpty }
            #expect(!FileManager.default.fileExists(atPath: gatewayd.socketPath))
        }
    }

    @Test("access log writes failing (ENOSPC on /dev/full): serving goes on, lines counted as dropped, one log line")
    func accessLogWriteErrors() throws {
        let gatewayd = try GatewaydProcess(
            config: "access_log: { path: /dev/full }\nadmin: { listener: admin }\n"
                + Configs.hello(body: "v1", workers: 1, listeners: ["web", "admin"]))
        let port = try gatewayd.port()
        let admin = try gatewayd.port(of: "admin")
        // Long enough for the flusher (every 100 ms) to fail about ten times.
        let duration: Duration = .seconds(1)
        let connection = try TestConnection(port: port)
        var latencies: [Duration] = []
        let began = ContinuousClock.now
        while ContinuousClock.now - began < duration || latencies.count < 300 {
            let sent = ContinuousClock.now
            #expect(try connection.request().body == "v1")
            latencies.append(ContinuousClock.now - sent)
        }
        latencies.sort()
        let median = latencies[latencies.count / 2]
        let slowest = latencies.last!
        print("\(latencies.count) requests with the access log on /dev/full: median \(median), slowest \(slowest)")
        // The event loop never writes the log: a request costs what it costs with a working
        // log (tens of microseconds here). 20 ms is far above that and far below a flush
        // stalling the loop.
        #expect(median < .milliseconds(20))
        var dropped = 0
        try waitUntil("the dropped lines to be counted") {
            dropped = droppedLines(try httpGet(port: admin, path: "/metrics").body) ?? 0
            return dropped >= latencies.count
        }
        print("gatewayd_access_log_dropped_lines_total \(dropped)")
        // Every failed flush in that second, reported once (the next report would come 10 s later).
        print(gatewayd.log.split(separator: "\n").first { $0.contains("access log /dev/full: write") } ?? "")
        let reports = gatewayd.log.components(separatedBy: "access log /dev/full: write: No space left on device")
        #expect(reports.count - 1 == 1, "\(gatewayd.log)")
        let status = try gatewayd.status()
        #expect(status.generations.flatMap(\.workers).allSatisfy { $0.restarts == 0 })
    }

    // MARK: - fd limit

    @Test("a worker out of fds: no crash, no spin, logged once; queued requests served as fds free up")
    func workerFileDescriptorLimit() throws {
        let headerTimeout = 2
        let gatewayd = try GatewaydProcess(
            config: "limits: { header_timeout: \(headerTimeout)s }\n" + Configs.hello(body: "v1", workers: 1))
        let port = try gatewayd.port()
        let worker = try #require(try gatewayd.status().generations.first?.workers.first?.pid)
        let room = 8
        let limit = descriptorLimit(pid: worker, leaving: room)
        try setDescriptorLimit(pid: worker, to: limit)

        // Silent connections take every free fd; header_timeout cuts them after 2 s (without a
        // 408: they sent nothing).
        let opened = ContinuousClock.now
        let idle = try (0..<room).map { _ in try TestConnection(port: port, timeout: .seconds(20)) }
        try waitUntil("the worker to accept the idle connections") {
            let owners = serverSideOwners(port: port, among: [worker])
            return idle.allSatisfy { owners[$0.localPort] == worker }
        }
        // Their header timers started between `opened` and now.
        let accepted = ContinuousClock.now
        // Requests behind them wait in the listen queue until fds come free.
        let queued = try (0..<room).map { _ in try TestConnection(port: port, timeout: .seconds(20)) }
        for connection in queued {
            try connection.send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        }
        try expectAcceptPaused(gatewayd, pid: worker, message: "accept on listener web failed: Too many open files")
        for connection in queued {
            #expect(try connection.readResponse().body == "v1")
        }
        let answered = ContinuousClock.now
        print(
            "\(room) requests queued behind \(room) idle connections answered \(answered - opened) after the idle "
                + "ones connected, \(answered - accepted) after they were all accepted")
        // They waited for header_timeout to cut the idle ones and for the polite close to give
        // up on these silent peers (ConnectionHandler.lingerTimeout, 2 s), then at most a pause
        // of accepting (100 ms) and the scheduling of a loaded machine.
        let freed = Duration.seconds(headerTimeout) + .seconds(2)
        #expect(answered - opened > freed - .milliseconds(100))
        #expect(answered - accepted < freed + .milliseconds(1500))
        for connection in idle {
            #expect(connection.waitForClose() == .eof)
        }
        #expect(try httpGet(port: port).body == "v1")
        let reports = gatewayd.log.components(separatedBy: "accept on listener web failed").count - 1
        #expect(reports == 1, "\(gatewayd.log)")
        let status = try gatewayd.status()
        #expect(status.generations.flatMap(\.workers).map(\.pid) == [worker])
        #expect(status.generations.flatMap(\.workers).allSatisfy { $0.restarts == 0 })
    }

    @Test("a reload that fails to hand a spare its sockets (no fd for the copy) leaves no fd behind in the master")
    func failedSpareHandoffLeaksNothing() throws {
        // One worker on two listeners: its handoff needs two copies, made one after the other
        // with nothing in between (with two workers, the first one's handoff may be sent and
        // its copy closed before the second copy is made).
        func config(_ body: String) -> String { Configs.hello(body: body, workers: 1, listeners: ["web", "admin"]) }
        let gatewayd = try GatewaydProcess(config: config("v1"))
        let port = try gatewayd.port()
        let master = gatewayd.pid
        try gatewayd.writeConfig(config("v2"))
        try waitForControlConnectionsClosed(gatewayd)
        let before = try gatewayd.steadyResources()
        let original = try descriptorLimit(pid: master)
        // Two fds free: the reload's control connection takes one, the copy of `web` the
        // other (the config file's fd is closed by then); the copy of `admin` fails, and the
        // spare, taken but never made a worker, is killed.
        try setDescriptorLimit(pid: master, to: descriptorLimit(pid: master, leaving: 2))
        let failed = try gatewayd.reload()
        try setDescriptorLimit(pid: master, to: original)
        #expect(failed.status == 1)
        #expect(
            failed.stderr.contains("F_DUPFD_CLOEXEC listener admin: Too many open files"),
            "\(failed.stderr)\n--- gatewayd log ---\n\(gatewayd.log)")
        #expect(try httpGet(port: port).body == "v1")
        // A spare again (the failed reload used it), and generation 3 serving.
        #expect(try gatewayd.reload().status == 0)
        try gatewayd.waitUntilSingleGeneration()
        #expect(try httpGet(port: port).body == "v2")
        try waitForControlConnectionsClosed(gatewayd)
        let after = try gatewayd.steadyResources()
        #expect(after == before, "master fds and children \(before) before, \(after) after")
    }

    @Test(
        "a master out of fds: the reload fails naming socketpair; status answers on the reserved fd; accept does not spin; raised again, a reload works"
    )
    func masterFileDescriptorLimit() throws {
        // Without spares, a reload needs a socketpair per new worker, and the master's fds are
        // still while it waits.
        let gatewayd = try GatewaydProcess(config: Configs.hello(body: "v1"), extraArguments: ["--no-prestart-workers"])
        let port = try gatewayd.port()
        let master = gatewayd.pid
        try gatewayd.writeConfig(Configs.hello(body: "v2"))

        let original = try descriptorLimit(pid: master)
        // Room for the control connection and the config file, not for a socketpair.
        try waitForControlConnectionsClosed(gatewayd)
        try setDescriptorLimit(pid: master, to: descriptorLimit(pid: master, leaving: 2))
        let failed = try gatewayd.reload()
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("socketpair: Too many open files"), "\(failed.stderr)")
        #expect(try httpGet(port: port).body == "v1")
        #expect(try gatewayd.status().generations.count == 1)

        // No fd free at all: the fd the master keeps in reserve lets one client in at a time.
        try waitForControlConnectionsClosed(gatewayd)
        let limit = descriptorLimit(pid: master, leaving: 0)
        try setDescriptorLimit(pid: master, to: limit)
        let answered = try gatewayd.gatewayctl(["status"], timeout: .seconds(10))
        #expect(answered.status == 0, "\(answered.stderr)")
        #expect(answered.stdout.contains("running"), "\(answered.stdout)")
        let message = "control socket: accept failed: Too many open files; fd limit \(limit); "
        #expect(
            gatewayd.log.contains(message + "one connection is let in on the fd kept in reserve"), "\(gatewayd.log)")
        // A reload gets in the same way, and fails naming what had no fd.
        try waitForControlConnectionsClosed(gatewayd)
        let refused = try gatewayd.reload()
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("Too many open files"), "\(refused.stderr)")
        print("reload with no fd free: \(refused.stderr)")

        // A silent client holds the reserve's fd: the next one waits in the socket's queue.
        try waitForControlConnectionsClosed(gatewayd)
        var holder: RawControlSocket? = try RawControlSocket(path: gatewayd.socketPath)
        try waitUntil("the silent client to be accepted") { controlSocketCount(gatewayd) == 2 }
        let output = try TemporaryDirectory()
        let waiting = try ChildProcess(
            [Binaries.gatewayctl, "status", "--socket", gatewayd.socketPath, "--timeout", "30"],
            environment: ProcessInfo.processInfo.environment, output: output.file("out"))
        defer { if waiting.isRunning { kill(waiting.pid, SIGKILL) } }
        try waitUntil("gatewayctl's connection to wait in the queue") {
            let sockets = controlSockets(gatewayd)
            return sockets.named.count > sockets.held.count
        }
        try expectAcceptPaused(gatewayd, pid: master, message: message)
        #expect(waiting.isRunning)
        #expect(try httpGet(port: port).body == "v1")
        // The silent client gone, its fd is the reserve again, and the waiting one gets in on it
        // with the limit unchanged.
        holder = nil
        try waitUntil("the waiting gatewayctl status to be answered", timeout: .seconds(5)) { !waiting.isRunning }
        #expect(waiting.terminationStatus == 0, "\(readWholeFile(output.file("out")))")
        _ = holder

        try setDescriptorLimit(pid: master, to: original)
        let result = try gatewayd.reload()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try httpGet(port: port).body == "v2")
    }
}

// MARK: - Helpers

/// Waits for the message that a process (worker or master) is out of fds, then checks it does
/// not spin retrying accept(2).
private func expectAcceptPaused(_ gatewayd: GatewaydProcess, pid: Int32, message: String) throws {
    try waitUntil("pid \(pid) to log '\(message)'") { gatewayd.log.contains(message) }
    print(gatewayd.log.split(separator: "\n").first { $0.contains(message) } ?? "")
    let cpu = cpuSeconds(during: .seconds(1), pid: pid)
    print("pid \(pid) out of fds: \(cpu) s of CPU in 1 s")
    // Retrying accept(2) without a pause spends a core (measured before the fix: 0.89 s in 1 s
    // for a worker, 1.0 s for the master); ten retries a second cost a few milliseconds.
    #expect(cpu < 0.2)
}

/// Worker processes (spares included) of one master, from their `--master-pid` argument: they
/// are found even after their master has gone.
private func workerProcesses(ofMaster master: Int32) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    let marker = "\0--master-pid\0\(master)\0"
    return entries.compactMap { entry in
        guard let pid = Int32(entry), readWholeFile("/proc/\(pid)/cmdline").contains(marker) else { return nil }
        return pid
    }
}

/// Waits until the master holds no control connection but its listening socket: a client stops
/// reading at the answer's newline and the master closes its end a moment later, which would
/// leave one more free fd than a limit was computed for.
///
/// Then waits for the master's fd count to settle: a closed connection's fd may have been the
/// reserve's, which the master opens again just after the close.
private func waitForControlConnectionsClosed(_ gatewayd: GatewaydProcess) throws {
    try waitUntil("the master to close its control connections") { controlSocketCount(gatewayd) == 1 }
    _ = try gatewayd.steadyResources()
}

/// The control sockets the master holds: its listening socket and each accepted connection.
private func controlSocketCount(_ gatewayd: GatewaydProcess) -> Int {
    controlSockets(gatewayd).held.count
}

/// The sockets bound to the control socket's path (the listener, accepted connections and
/// connections still in its queue), and those of them the master holds an fd for.
private func controlSockets(_ gatewayd: GatewaydProcess) -> (named: Set<String>, held: Set<String>) {
    // /proc/net/unix: inode is field 7, the path 8; connections carry the listener's path
    // from the moment they are queued.
    let named = Set(
        readWholeFile("/proc/net/unix").split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            return fields.count > 7 && fields[7] == gatewayd.socketPath ? String(fields[6]) : nil
        })
    let directory = "/proc/\(gatewayd.pid)/fd"
    let held = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).compactMap {
        try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + $0)
    }
    // An fd's link to a socket reads `socket:[INODE]`.
    let inodes = Set(held.filter { $0.hasPrefix("socket:[") }.map { String($0.dropFirst(8).dropLast()) })
    return (named, named.intersection(inodes))
}

/// The RLIMIT_NOFILE that leaves exactly `free` fd numbers unused in the process now.
private func descriptorLimit(pid: Int32, leaving free: Int) -> Int {
    let used = Set(
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap { Int($0) })
    var limit = 0
    var unused = 0
    while unused < free || used.contains(limit) {
        if !used.contains(limit) { unused += 1 }
        limit += 1
    }
    return limit
}

/// Sets a running process's soft RLIMIT_NOFILE with prlimit(1); the hard limit stays, so the
/// soft one can be raised back.
private func setDescriptorLimit(pid: Int32, to limit: Int) throws {
    let result = try runCommand("/usr/bin/prlimit", ["--pid", "\(pid)", "--nofile=\(limit):"])
    guard result.status == 0 else { throw HarnessError("prlimit --pid \(pid) --nofile=\(limit): \(result.stderr)") }
}

/// A process's soft RLIMIT_NOFILE (the `Max open files` line of /proc/PID/limits).
private func descriptorLimit(pid: Int32) throws -> Int {
    let line = readWholeFile("/proc/\(pid)/limits").split(separator: "\n").first { $0.hasPrefix("Max open files") }
    guard let soft = line?.split(separator: " ").dropFirst(3).first.flatMap({ Int($0) }) else {
        throw HarnessError("no soft fd limit in /proc/\(pid)/limits")
    }
    return soft
}

/// CPU time (user + system) a process spends during `interval`, in seconds.
private func cpuSeconds(during interval: Duration, pid: Int32) -> Double {
    func ticks() -> Int {
        let stat = readWholeFile("/proc/\(pid)/stat")
        guard let close = stat.lastIndex(of: ")") else { return 0 }
        // After the command: state is field 3, utime 14 and stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }
    let before = ticks()
    let (seconds, attoseconds) = interval.components
    usleep(UInt32(seconds) * 1_000_000 + UInt32(attoseconds / 1_000_000_000_000))
    return Double(ticks() - before) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// `gatewayd_access_log_dropped_lines_total` from a /metrics page.
private func droppedLines(_ metrics: String) -> Int? {
    for line in metrics.split(separator: "\n") where line.hasPrefix("gatewayd_access_log_dropped_lines_total ") {
        return line.split(separator: " ").last.flatMap { Int($0) }
    }
    return nil
}

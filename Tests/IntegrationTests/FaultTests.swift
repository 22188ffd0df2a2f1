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

}



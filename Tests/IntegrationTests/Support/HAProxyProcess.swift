import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real HAProxy in TCP mode in front of gatewayd, as the PROXY protocol's sender
/// (`send-proxy`, `send-proxy-v2`). Each frontend listens on a free port of 127.0.0.1, sets the
/// client's source to a documentation address (so a test can tell the address came from the
/// header, not from the socket), and sends to one gatewayd port. Killed at deinit.
final class HAProxyProcess {
    struct Frontend {
        /// What HAProxy says the client is.
        var source: String
        /// `send-proxy` (v1) or `send-proxy-v2`.
        var sendProxy: String
        var target: UInt16
    }

    let ports: [UInt16]
    private let process: ChildProcess
    private let directory: TemporaryDirectory

    /// Nil (with an issue recorded) when haproxy is not installed.
    init?(_ frontends: [Frontend]) throws {
        guard
            let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            Issue.record("haproxy is not installed (make test installs it: apt-get install haproxy)")
            return nil
        }
        directory = try TemporaryDirectory()
        ports = try frontends.map { _ in try freePort() }
        var config = """
            global
                maxconn 100
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s

            """
        for (index, frontend) in frontends.enumerated() {
            config += """
                frontend f\(index)
                    bind 127.0.0.1:\(ports[index])
                    tcp-request connection set-src ipv4(\(frontend.source))
                    default_backend b\(index)
                backend b\(index)
                    server gw 127.0.0.1:\(frontend.target) \(frontend.sendProxy)

                """
        }
        try config.write(toFile: directory.file("haproxy.cfg"), atomically: false, encoding: .utf8)
        let log = directory.file("haproxy.log")
        let process = try ChildProcess(
            [binary, "-db", "-f", directory.file("haproxy.cfg")], environment: [:], output: log)
        self.process = process
        let ports = self.ports
        do {
            try waitUntil("haproxy to listen") {
                guard process.isRunning else { throw HarnessError("haproxy exited: \(readWholeFile(log))") }
                return ports.allSatisfy { (try? TestConnection(port: $0)) != nil }
            }
        } catch {
            self.kill()
            throw error
        }
    }

    deinit { self.kill() }

    private func kill() {
        Glibc.kill(process.pid, SIGKILL)
        while process.isRunning { usleep(1_000) }
    }
}

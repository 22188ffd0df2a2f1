import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Idle keep-alive connections, as browsers and connection pools hold them: one request when
/// opened, then silence. When the server closes one (a drain ending it politely, or a
/// generation stopped early), it is opened again with a new request, which must succeed.
/// Connection i opens i × `stagger` after its previous one closed, so that the connections
/// spread over several generations instead of moving from one to the next together.
final class KeepAliveHolders: @unchecked Sendable {
    struct Outcome {
        /// Connections the server closed while they were idle.
        var closedByServer = 0
        /// Requests that did not get a 200, with what happened.
        var failures: [String] = []
    }

    private let running = Mutex2(true)
    private let outcome = Mutex2(Outcome())
    private let done = DispatchSemaphore(value: 0)

    init(port: UInt16, count: Int, stagger: Duration = .milliseconds(100)) {
        let thread = Thread { [self] in
            var connections: [TestConnection?] = Array(repeating: nil, count: count)
            let start = ContinuousClock.now
            var openAt = (0..<count).map { start + stagger * $0 }
            while running.get() {
                for index in connections.indices {
                    if let connection = connections[index] {
                        // Readable while idle means the server closed it (or sent what it
                        // should not): either way this connection is done.
                        var poller = pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
                        guard poll(&poller, 1, 0) > 0 else { continue }
                        connections[index] = nil
                        openAt[index] = .now + stagger * index
                        outcome.update { $0.closedByServer += 1 }
                    }
                    guard ContinuousClock.now >= openAt[index] else { continue }
                    do {
                        let connection = try TestConnection(port: port, timeout: .seconds(5))
                        let response = try connection.request()
                        if response.status != 200 {
                            outcome.update { $0.failures.append("status \(response.status)") }
                        }
                        connections[index] = connection
                    } catch {
                        outcome.update { $0.failures.append("\(error)") }
                    }
                }
                usleep(10_000)
            }
            done.signal()
        }
        thread.start()
    }

    /// Stops the thread and closes the connections; what happened to them.
    func stop() -> Outcome {
        running.set(false)
        done.wait()
        return outcome.get()
    }
}

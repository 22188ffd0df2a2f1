import GatewayConfig
import GatewayCore
import NIOCore
import NIOPosix

/// One upstream (a named group of endpoints) as one event loop sees it: the choice of endpoint,
/// passive health, and the idle keep-alive connections. Every exchange on that loop shares it;
/// it is touched only on its loop, so it needs no lock.
///
/// Health is judged per worker and loop, as nginx's `max_fails` is per worker: an endpoint that
/// fails `health.maxFailures` times in a row is not chosen for `health.ejectFor`.
final class UpstreamPool {
    final class Endpoint {
        let endpoint: UpstreamEndpoint
        let address: SocketAddress
        /// Most recently used last: reusing the warmest connection lets the others time out.
        var idle: [UpstreamConnection] = []
        var inFlight = 0
        var consecutiveFailures = 0
        var ejectedUntil: NIODeadline?

        init(endpoint: UpstreamEndpoint, address: SocketAddress) {
            self.endpoint = endpoint
            self.address = address
        }
    }

    let configuration: UpstreamConfig
    let eventLoop: any EventLoop
    let endpoints: [Endpoint]
    private var nextIndex = 0
    private var closed = false
    /// Endpoints with `ejectedUntil` set (some may be due back).
    private var ejectedCount = 0

    init(configuration: UpstreamConfig, eventLoop: any EventLoop) throws(GatewayServerError) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        var endpoints: [Endpoint] = []
        for endpoint in configuration.endpoints {
            do {
                let address = try SocketAddress(ipAddress: endpoint.address.host, port: Int(endpoint.address.port))
                endpoints.append(Endpoint(endpoint: endpoint, address: address))
            } catch {
                throw .invalidRoute(
                    route: "upstream \(configuration.name)", reason: "endpoint \(endpoint.text): \(error)")
            }
        }
        self.endpoints = endpoints
        // Workers start their round robin at different places, so that N workers do not all
        // send their first request to the first endpoint.
        self.nextIndex = Int.random(in: 0..<max(1, endpoints.count))
    }

    // MARK: Choosing an endpoint

    /// The endpoint for the next attempt, skipping ejected ones and `excluded` (endpoints this
    /// request already failed on). `nil`: every endpoint is ejected (503).
    func chooseEndpoint(excluding excluded: [Int]) -> Int? {
        // The usual case, without allocating: round robin, nothing ejected, nothing excluded.
        if self.configuration.balance == .roundRobin, excluded.isEmpty, self.ejectedCount == 0 {
            let index = self.nextIndex % self.endpoints.count
            self.nextIndex = (index + 1) % self.endpoints.count
            return index
        }
        let now = NIODeadline.now()
        var candidates: [Int] = []
        candidates.reserveCapacity(self.endpoints.count)
        for (index, endpoint) in self.endpoints.enumerated() where !excluded.contains(index) {
            if let until = endpoint.ejectedUntil {
                if until > now { continue }
                // Back after its ejection: one more failure ejects it again at once.
                endpoint.ejectedUntil = nil
                self.ejectedCount -= 1
                endpoint.consecutiveFailures = max(0, self.configuration.health.maxFailures - 1)
            }
            candidates.append(index)
        }
        guard !candidates.isEmpty else { return nil }
        switch self.configuration.balance {
        case .roundRobin:
            return self.nextRoundRobin(among: candidates, advancing: excluded.isEmpty)
        case .leastRequest:
            let fewest = candidates.map { self.endpoints[$0].inFlight }.min()!
            return self.nextRoundRobin(
                among: candidates.filter { self.endpoints[$0].inFlight == fewest }, advancing: excluded.isEmpty)
        }
    }

    /// `advancing`: false for a retry, which must not move the rotation (else every request
    /// after a retry would start again at the endpoint that just failed).
    private func nextRoundRobin(among candidates: [Int], advancing: Bool) -> Int {
        let count = self.endpoints.count
        for step in 0..<count {
            let index = (self.nextIndex + step) % count
            if candidates.contains(index) {
                if advancing {
                    self.nextIndex = (index + 1) % count
                }
                return index
            }
        }
        return candidates[0]
    }

    // MARK: Health

    func recordSuccess(_ index: Int) {
        self.endpoints[index].consecutiveFailures = 0
    }

    /// Returns whether this failure ejected the endpoint.
    @discardableResult
    func recordFailure(_ index: Int) -> Bool {
        let endpoint = self.endpoints[index]
        endpoint.consecutiveFailures += 1
        guard endpoint.consecutiveFailures >= self.configuration.health.maxFailures, endpoint.ejectedUntil == nil
        else { return false }
        endpoint.ejectedUntil = .now() + TimeAmount(self.configuration.health.ejectFor)
        self.ejectedCount += 1
        // Its idle connections would only fail too.
        for connection in endpoint.idle {
            self.closeIdle(connection)
        }
        endpoint.idle.removeAll()
        return true
    }

    // MARK: Connections

    /// An idle connection to `index`, or a new one; `completion` runs on the loop, with the
    /// connect error if there is one. `reused` says whether the connection served before.
    func connection(
        to index: Int,
        fresh: Bool = false,
        _ completion: @escaping (Result<(connection: UpstreamConnection, reused: Bool), any Error>) -> Void
    ) {
        let endpoint = self.endpoints[index]
        while !fresh, let connection = endpoint.idle.popLast() {
            connection.isIdle = false
            connection.clearDeadline()
            if connection.isActive {
                completion(.success((connection, true)))
                return
            }
        }
        let timeout = TimeAmount(self.configuration.connectTimeout)
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(timeout)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .connect(to: endpoint.address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    do {
                        let connection = try UpstreamConnection.configure(channel: channel, endpointIndex: index)
                        connection.pool = self
                        // An idle connection the upstream closed leaves the pool at once, so
                        // it neither takes a place under `max_idle_per_endpoint` nor gets picked.
                        channel.closeFuture.assumeIsolated().whenComplete { [weak self] _ in
                            self?.removeIdle(connection)
                        }
                        completion(.success((connection, false)))
                    } catch {
                        channel.close(promise: nil)
                        completion(.failure(error))
                    }
                case .failure(let error):
                    completion(.failure(error))
                }
            }
    }

    /// Gives a connection back after a complete exchange. It stays for reuse if the pool
    /// wants it, else it is closed.
    func release(_ connection: UpstreamConnection, reusable: Bool) {
        connection.delegate = nil
        connection.clearDeadline()
        connection.setReadsPaused(false)
        let endpoint = self.endpoints[connection.endpointIndex]
        guard reusable, !self.closed, connection.isActive, endpoint.ejectedUntil == nil,
            endpoint.idle.count < self.configuration.keepalive.maxIdlePerEndpoint
        else {
            connection.channel.close(promise: nil)
            return
        }
        // The connection's own deadline, not a timer per release: see `armDeadline`.
        connection.isIdle = true
        connection.armDeadline(.now() + TimeAmount(self.configuration.keepalive.idleTimeout))
        endpoint.idle.append(connection)
    }

    /// An idle connection leaves the pool and is closed: its `idle_timeout` passed, or the
    /// upstream closed it. Nothing for a connection that is lent or gone already.
    func removeIdle(_ connection: UpstreamConnection) {
        guard connection.isIdle else { return }
        self.endpoints[connection.endpointIndex].idle.removeAll { $0 === connection }
        self.closeIdle(connection)
    }

    private func closeIdle(_ connection: UpstreamConnection) {
        connection.isIdle = false
        connection.clearDeadline()
        connection.channel.close(promise: nil)
    }

    /// Closes every idle connection and keeps none from now on (the worker is draining).
    func close() {
        self.closed = true
        for endpoint in self.endpoints {
            for connection in endpoint.idle {
                self.closeIdle(connection)
            }
            endpoint.idle.removeAll()
        }
    }
}

import GatewayConfig
import GatewayCore
import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// One upstream (a named group of endpoints) as one event loop sees it: the choice of endpoint,
/// passive health, and the idle keep-alive connections. Every exchange on that loop shares it;
/// it is touched only on its loop, so it needs no lock.
///
/// Health is judged per worker and loop, as nginx's `max_fails` is per worker: an endpoint that
/// fails `health.maxFailures` times in a row is not chosen for `health.ejectFor`.
final class UpstreamPool {
    final class Endpoint {
        let endpoint: UpstreamEndpoint
        let family: CInt
        private var address: sockaddr_storage
        private let length: socklen_t
        /// Most recently used last: reusing the warmest connection lets the others time out.
        var idle: [UpstreamConnection] = []
        var inFlight = 0
        var consecutiveFailures = 0
        /// Monotonic ns; 0: not ejected.
        var ejectedUntil: UInt64 = 0
        /// With `tls`: the name sent in SNI and checked against the certificate.
        let tlsName: String?

        init?(endpoint: UpstreamEndpoint, tls: UpstreamTLSConfig?) {
            self.endpoint = endpoint
            self.tlsName = tls?.name(for: endpoint)
            guard let (storage, length) = ListeningSocket.socketAddress(endpoint.address) else { return nil }
            self.family = endpoint.address.family == .ipv4 ? AF_INET : AF_INET6
            self.address = storage
            self.length = length
        }

        func withAddress<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
            withUnsafePointer(to: &self.address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, self.length) }
            }
        }
    }

    let configuration: UpstreamConfig
    /// With `tls`: every connection handshakes after its connect, within `connect_timeout`.
    let tls: TLSClientContext?
    /// TLS handshakes that fail (a certificate that does not verify) fail every request the
    /// same way: one error line per `LogThrottle` interval, with the count of the others.
    var tlsFailureLog = LogThrottle()
    let loop: EventLoop
    let metrics: GatewayMetrics
    let endpoints: [Endpoint]
    private var nextIndex = 0
    private var closed = false
    /// Endpoints with `ejectedUntil` set (some may be due back).
    private var ejectedCount = 0
    let connectTimeout: UInt64
    let responseTimeout: UInt64
    let readTimeout: UInt64
    let idleTimeout: UInt64

    init?(configuration: UpstreamConfig, tls: TLSClientContext?, loop: EventLoop, metrics: GatewayMetrics) {
        guard (configuration.tls == nil) == (tls == nil) else { return nil }
        self.configuration = configuration
        self.tls = tls
        self.loop = loop
        self.metrics = metrics
        var endpoints: [Endpoint] = []
        for endpoint in configuration.endpoints {
            guard let resolved = Endpoint(endpoint: endpoint, tls: configuration.tls) else { return nil }
            endpoints.append(resolved)
        }
        guard !endpoints.isEmpty else { return nil }
        self.endpoints = endpoints
        self.connectTimeout = configuration.connectTimeout.nanosecondsValue
        self.responseTimeout = configuration.responseTimeout.nanosecondsValue
        self.readTimeout = configuration.readTimeout.nanosecondsValue
        self.idleTimeout = configuration.keepalive.idleTimeout.nanosecondsValue
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
        let now = self.loop.now
        var candidates: [Int] = []
        candidates.reserveCapacity(self.endpoints.count)
        for (index, endpoint) in self.endpoints.enumerated() where !excluded.contains(index) {
            if endpoint.ejectedUntil != 0 {
                if endpoint.ejectedUntil > now { continue }
                // Back after its ejection: one more failure ejects it again at once.
                endpoint.ejectedUntil = 0
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
        guard endpoint.consecutiveFailures >= self.configuration.health.maxFailures, endpoint.ejectedUntil == 0
        else { return false }
        endpoint.ejectedUntil = self.loop.now + self.configuration.health.ejectFor.nanosecondsValue
        self.ejectedCount += 1
        // Its idle connections would only fail too.
        for connection in endpoint.idle { connection.close() }
        endpoint.idle.removeAll()
        return true
    }

    // MARK: Connections

    /// An idle connection to endpoint `index` that is still usable, if the pool holds one
    /// (newest first: the least likely to have been closed by the upstream meanwhile).
    func idleConnection(to index: Int) -> UpstreamConnection? {
        let endpoint = self.endpoints[index]
        while let connection = endpoint.idle.popLast() {
            if connection.isUsable { return connection }
            connection.close()
        }
        return nil
    }

    /// A new connection to endpoint `index`, within `connect_timeout`.
    func newConnection(
        to index: Int, _ completion: @escaping (Result<UpstreamConnection, UpstreamConnectError>) -> Void
    ) {
        UpstreamConnection.connect(
            to: self.endpoints[index], index: index, pool: self, timeout: self.connectTimeout, completion: completion)
    }

    /// Gives a connection back after a complete exchange. It stays for reuse if the pool
    /// wants it, else it is closed.
    func release(_ connection: UpstreamConnection, reusable: Bool) {
        let endpoint = self.endpoints[connection.endpointIndex]
        guard reusable, !self.closed, connection.isReusable, endpoint.ejectedUntil == 0,
            endpoint.idle.count < self.configuration.keepalive.maxIdlePerEndpoint
        else {
            connection.close()
            return
        }
        connection.served += 1
        connection.makeIdle(timeout: self.idleTimeout)
        endpoint.idle.append(connection)
    }

    /// An idle connection leaves the pool and is closed: its `idle_timeout` passed, or the
    /// upstream closed it.
    func removeIdle(_ connection: UpstreamConnection) {
        self.endpoints[connection.endpointIndex].idle.removeAll { $0 === connection }
        connection.close()
    }

    /// Closes every idle connection and keeps none from now on (the worker is draining).
    func close() {
        self.closed = true
        for endpoint in self.endpoints {
            for connection in endpoint.idle { connection.close() }
            endpoint.idle.removeAll()
        }
    }
}

/// The upstream pools of one event loop, made on first use.
final class LoopUpstreams {
    let loop: EventLoop
    private let metrics: GatewayMetrics
    private let configurations: [String: UpstreamConfig]
    private let tls: [String: TLSClientContext]
    private var pools: [String: UpstreamPool] = [:]
    /// The worker is draining: pools made from now on keep no idle connection either.
    private var closed = false

    init(
        configurations: [String: UpstreamConfig], tls: [String: TLSClientContext], loop: EventLoop,
        metrics: GatewayMetrics
    ) {
        self.configurations = configurations
        self.tls = tls
        self.loop = loop
        self.metrics = metrics
    }

    func pool(named name: String) -> UpstreamPool? {
        if let pool = self.pools[name] { return pool }
        guard let configuration = self.configurations[name],
            let pool = UpstreamPool(
                configuration: configuration, tls: self.tls[name], loop: self.loop, metrics: self.metrics)
        else { return nil }
        if self.closed { pool.close() }
        self.pools[name] = pool
        return pool
    }

    func closeAll() {
        self.closed = true
        for pool in self.pools.values { pool.close() }
    }
}

extension Duration {
    /// Whole nanoseconds, saturating (a config's durations are at most a day).
    var nanosecondsValue: UInt64 {
        let (seconds, attoseconds) = self.components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }
}

import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The reverse proxy end to end: real gatewayd processes from YAML, the demo upstream
/// (`examples/demo-upstream.py`) behind them, and real clients (clients.py, raw sockets).
/// Serialized: they share two cores, and several of them measure time or memory.
@Suite("Proxy, real processes", .serialized, .timeLimit(.minutes(3)))
struct ProxyIntegrationTests {
    static let mebibyte = 1 << 20

    @Test("100 MiB streamed up and down, sha256 checked at both ends; the worker's RSS does not grow with the body")
    func largeBodiesStream() throws {
        let upstream = try DemoUpstream()
        let directory = try TemporaryDirectory()
        let logPath = directory.file("access.log")
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.text(
                upstream: upstream,
                settings: "limits: { max_body_bytes: 0 }\naccess_log: { path: \(logPath), format: json }\n",
                routes: ProxyConfig.route()))
        let port = try gatewayd.port()
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        #expect(workers.count == 2)
        let before = Dictionary(uniqueKeysWithValues: workers.map { ($0, residentBytes($0) ?? 0) })
        let size = 100 * Self.mebibyte
        let sampler = ResidentSampler(pids: workers)

        let upload = try runClient(["upload", "--port", "\(port)", "--bytes", "\(size)"], timeout: 120)
        #expect(upload.exit == 0, "\(upload)")
        #expect(upload["match"] as? Bool == true, "\(upload)")
        let uploadPeaks = sampler.stop()
        let downloadSampler = ResidentSampler(pids: workers)
        let download = try runClient(["download", "--port", "\(port)", "--path", "/bytes?n=\(size)"], timeout: 120)
        #expect(download.exit == 0, "\(download)")
        #expect(download["match"] as? Bool == true, "\(download)")
        #expect(download["length"] as? Int == size)
        let downloadPeaks = downloadSampler.stop()
        // The access log counts the body bytes sent: all of them for the streamed download.
        let logged = try waitForLines(logPath, count: 2).compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
        // (Two lines, perhaps from two workers: their order in the file is not the requests'.)
        #expect(Set(logged.compactMap { $0["method"] as? String }) == ["POST", "GET"], "\(logged)")
        #expect(logged.allSatisfy { $0["status"] as? Int == 200 }, "\(logged)")
        #expect(logged.first { $0["method"] as? String == "GET" }?["bytes"] as? Int == size, "\(logged)")

        var growth = 0
        for pid in workers {
            let after = residentBytes(pid) ?? 0
            let up = (uploadPeaks[pid] ?? 0) - before[pid]!
            let down = (downloadPeaks[pid] ?? 0) - before[pid]!
            growth = max(growth, up, down)
            print(
                "worker \(pid) RSS: before \(mib(before[pid]!)), peak during upload \(mib(uploadPeaks[pid] ?? 0)), "
                    + "during download \(mib(downloadPeaks[pid] ?? 0)), after \(mib(after))")
        }
        print(
            "100 MiB upload: \(upload["send_ms"] ?? "?") ms to send; download: \(download["ms"] ?? "?") ms "
                + "(\(download["mib_per_s"] ?? "?") MiB/s); largest worker RSS growth \(mib(growth))")
        // Streaming holds a bounded window per direction (the channels' high-water marks),
        // not the body: the growth measured is about 1 MiB. 16 MiB leaves room for allocator
        // slack and is still far below the 100 MiB a buffered body would cost.
        #expect(growth < 16 * Self.mebibyte, "worker RSS grew by \(mib(growth)) for a \(mib(size)) body")
    }

    @Test("a slow request in flight during a reload gets its 200 from the old generation; the next one is the new")
    func slowRequestSurvivesReload() throws {
        let upstream = try DemoUpstream()
        func config(_ value: String) -> String {
            ProxyConfig.text(
                upstream: upstream,
                routes: ProxyConfig.route(extra: "    response_headers: { set: { x-config: \(value) } }\n"))
        }
        let gatewayd = try GatewaydProcess(config: config("one"))
        let port = try gatewayd.port()
        #expect(try httpGet(port: port, path: "/echo").header("x-config") == "one")

        let seen = try upstream.requestCount()
        let slow = try PythonClient(["download", "--port", "\(port)", "--path", "/slow?ms=1500"], timeout: 20)
        try waitUntil("the slow request to reach the upstream") { try upstream.requestCount() > seen }
        try gatewayd.writeConfig(config("two"))
        let began = ContinuousClock.now
        let reload = try gatewayd.reload()
        let reloadTook = ContinuousClock.now - began
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(reload.stdout.contains("generation 2 serving"), "\(reload.stdout)")
        #expect(slow.isRunning, "the slow request ended before the reload did, so it was not in flight")
        let next = try httpGet(port: port, path: "/echo")
        #expect(next.status == 200)
        #expect(next.header("x-config") == "two")

        let result = try slow.wait()
        let took = ContinuousClock.now - slow.started
        #expect(result.exit == 0, "\(result)")
        #expect(result["status"] as? Int == 200, "\(result)")
        #expect(header("x-config", in: result) == "one", "\(result)")
        #expect((result["ms"] as? Double ?? 0) >= 1500, "\(result)")
        print("reload returned after \(reloadTook) with /slow?ms=1500 in flight; the slow request took \(took)")
        try gatewayd.waitUntilSingleGeneration()
    }

    @Test("JSON access log: one line per request with every field, the request id of the response header")
    func jsonAccessLog() throws {
        let upstream = try DemoUpstream()
        let directory = try TemporaryDirectory()
        let logPath = directory.file("access.log")
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.text(
                upstream: upstream, settings: "access_log: { path: \(logPath), format: json }\n",
                routes: ProxyConfig.route()))
        let port = try gatewayd.port()
        let workers = Set(try gatewayd.status().generations.flatMap(\.workers).map(\.pid))

        var requestIDs: [String: String] = [:]
        var bodyBytes: [String: Int] = [:]
        for i in 0..<10 {
            let response = try httpGet(port: port, path: "/echo?i=\(i)")
            #expect(response.status == 200)
            bodyBytes["/echo?i=\(i)"] = response.body.utf8.count
            let id = response.header("x-request-id")
            #expect(id != nil)
            requestIDs["/echo?i=\(i)"] = id ?? "-"
        }
        // A sane id sent by the client is kept, and logged.
        let connection = try TestConnection(port: port)
        let own = try connection.request(
            "/echo?i=own", headers: ["X-Request-Id": "itest-0123456789", "Connection": "close"])
        #expect(own.header("x-request-id") == "itest-0123456789")
        bodyBytes["/echo?i=own"] = own.body.utf8.count
        requestIDs["/echo?i=own"] = "itest-0123456789"
        #expect(Set(requestIDs.values).count == 11, "request ids are not unique: \(requestIDs)")

        let lines = try waitForLines(logPath, count: 11)
        #expect(lines.count == 11, "\(lines)")
        let fields = [
            "time", "generation", "pid", "client", "method", "path", "query", "protocol", "host", "status", "bytes",
            "upstream", "upstream_status", "user_agent", "referer", "duration_ms", "request_id",
        ]
        for line in lines {
            let entry = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            #expect(fields.allSatisfy { entry[$0] != nil }, "missing fields in \(line)")
            // The path and the query are apart; together they are the target as sent.
            let path = try #require(entry["path"] as? String) + "?" + (entry["query"] as? String ?? "")
            #expect(entry["path"] as? String == "/echo")
            #expect(entry["request_id"] as? String == requestIDs[path], "\(line)")
            #expect(entry["upstream_status"] as? Int == 200 && entry["protocol"] as? String == "HTTP/1.1", "\(line)")
            #expect(entry["generation"] as? Int == 1)
            #expect(workers.contains(Int32(entry["pid"] as? Int ?? -1)), "\(line)")
            #expect(entry["client"] as? String == "127.0.0.1")
            #expect(entry["method"] as? String == "GET")
            #expect(entry["status"] as? Int == 200)
            #expect(entry["bytes"] as? Int == bodyBytes[path], "bytes is the body sent: \(line)")
            #expect(entry["upstream"] as? String == upstream.endpoint, "\(line)")
            #expect((entry["duration_ms"] as? Double).map { $0 >= 0 && $0 < 5000 } == true, "\(line)")
            let time = entry["time"] as? String ?? ""
            #expect(time.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression) != nil)
        }
        #expect(Set(lines.compactMap { requestID(inJSON: $0) }) == Set(requestIDs.values))
        print("access log line: \(lines[0])")
    }

    @Test("combined access log; a rotated file (renamed) is left behind at a reload for a new one at the path")
    func combinedAccessLogReopenedOnReload() throws {
        let upstream = try DemoUpstream()
        let directory = try TemporaryDirectory()
        let logPath = directory.file("access.log")
        let config = ProxyConfig.text(
            upstream: upstream, settings: "access_log: { path: \(logPath), format: combined }\n",
            routes: ProxyConfig.route())
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()

        var requestIDs: [String] = []
        for i in 0..<5 {
            requestIDs.append(try #require(try httpGet(port: port, path: "/echo?i=\(i)").header("x-request-id")))
        }
        let first = try waitForLines(logPath, count: 5)
        #expect(first.count == 5, "\(first)")
        let pattern =
            #"^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /echo\?i=\d HTTP/1\.1" 200 \d+ "-" "-" "#
            + #"request_id=(\S+) duration_ms=[0-9.]+ upstream=127\.0\.0\.1:\#(upstream.port) upstream_status=200 "#
            + #"host="localhost" route=all generation=(\d+) pid=\d+$"#
        let regex = try NSRegularExpression(pattern: pattern)
        func parsed(_ line: String) -> (requestID: String, generation: String)? {
            guard let match = regex.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)) else {
                return nil
            }
            let text = line as NSString
            return (text.substring(with: match.range(at: 1)), text.substring(with: match.range(at: 2)))
        }
        for line in first {
            #expect(parsed(line) != nil, "not the combined format: \(line)")
        }
        // Each worker writes its own lines: the file is in order per worker, not overall.
        #expect(Set(first.compactMap { parsed($0)?.requestID }) == Set(requestIDs))
        #expect(first.allSatisfy { parsed($0)?.generation == "1" })
        print("combined line: \(first[0])")

        // logrotate without copytruncate: rename, then reload.
        let rotated = directory.file("access.log.1")
        #expect(rename(logPath, rotated) == 0)
        #expect(try gatewayd.reload().status == 0)
        var newIDs: [String] = []
        for i in 0..<3 {
            newIDs.append(try #require(try httpGet(port: port, path: "/echo?i=\(i)").header("x-request-id")))
        }
        let second = try waitForLines(logPath, count: 3)
        #expect(Set(second.compactMap { parsed($0)?.requestID }) == Set(newIDs), "\(second)")
        #expect(second.allSatisfy { parsed($0)?.generation == "2" }, "\(second)")
        let old = try readLines(rotated)
        #expect(old == first, "the rotated file changed after the reload: \(old)")
    }

    @Test("four keys files of 1 MB each (96,000 keys) reach every worker, at start and at a reload")
    func largeKeysFiles() throws {
        let directory = try TemporaryDirectory()
        var routes = ""
        var lastKeys: [String] = []
        for file in 0..<4 {
            // 24,000 keys of 41 bytes: the validator's 1 MiB cap per file, nearly. In one hello
            // frame (protocol version 3) four such files made more than 5.3 MB, over the 4 MiB
            // frame limit, and no worker started.
            lastKeys = (0..<24_000).map { String(format: "itest-%d-%033d", file, $0) }
            try (lastKeys.joined(separator: "\n") + "\n").write(
                toFile: directory.file("keys\(file).txt"), atomically: false, encoding: .utf8)
            routes += """
                  - name: r\(file)
                    match: { path_prefix: /r\(file)/ }
                    direct_response: { status: 200, body: "r\(file)" }
                    auth: { api_keys: { header: x-api-key, keys_file: \(directory.file("keys\(file).txt")) } }

                """
        }
        let config = "workers: 2\nlisteners:\n  - { name: web, address: \"127.0.0.1:0\" }\nroutes:\n" + routes
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()
        func status(_ path: String, key: String) throws -> Int {
            let connection = try TestConnection(port: port)
            return try connection.request(path, headers: ["Connection": "close", "x-api-key": key]).status
        }
        // Both workers said ready, which needs every file; then a key of the last file, the
        // first file's keys not valid on another route, over several new connections.
        for _ in 0..<6 {
            #expect(try status("/r3/", key: lastKeys.last!) == 200)
            #expect(try status("/r3/", key: lastKeys[0]) == 200)
            #expect(try status("/r0/", key: lastKeys.last!) == 401)
        }
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(try status("/r3/", key: lastKeys[12_345]) == 200)
    }

    @Test("a keys file is read again at a reload: an added key works, a removed one gets 401; keys are never shown")
    func keysFileReloaded() throws {
        let upstream = try DemoUpstream()
        let directory = try TemporaryDirectory()
        let keysPath = directory.file("keys.txt")
        let alpha = "itest-key-alpha-7f3a9c"
        let beta = "itest-key-beta-52e1d0"
        try "# test keys\n\(alpha)\n".write(toFile: keysPath, atomically: false, encoding: .utf8)
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.text(
                upstream: upstream,
                routes: ProxyConfig.route(extra: "    auth: { api_keys: { keys_file: \(keysPath) } }\n")))
        let port = try gatewayd.port()
        func status(key: String?) throws -> Int {
            let connection = try TestConnection(port: port)
            var headers = ["Connection": "close"]
            if let key { headers["x-api-key"] = key }
            return try connection.request("/echo", headers: headers).status
        }
        #expect(try status(key: alpha) == 200)
        #expect(try status(key: beta) == 401)
        #expect(try status(key: nil) == 401)

        try "\(beta)\n".write(toFile: keysPath, atomically: false, encoding: .utf8)
        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(try status(key: beta) == 200)
        #expect(try status(key: alpha) == 401)

        let statusJSON = try gatewayd.gatewayctl(["status", "--json"])
        let statusText = try gatewayd.gatewayctl(["status"])
        #expect(statusJSON.status == 0 && statusText.status == 0)
        for key in [alpha, beta] {
            for (what, text) in [
                ("gatewayd's log", gatewayd.log), ("reload output", reload.stdout + reload.stderr),
                ("status --json", statusJSON.stdout + statusJSON.stderr),
                ("status", statusText.stdout + statusText.stderr),
            ] {
                #expect(!text.contains(key), "a key appears in \(what):\n\(text)")
            }
        }
        // The reload did see the keys change (the route is listed as changed), by name only.
        #expect(gatewayd.log.contains("changed (all)"), "\(gatewayd.log)")
    }

    @Test("a gateway-wide rate limit over 2 workers; /metrics sums both workers and carries on across a reload")
    func rateLimitAndMetricsAcrossWorkersAndReload() throws {
        let config = ProxyConfig.text(
            upstream: nil, admin: true,
            routes: """
                  - name: limited
                    match: { path_prefix: /limited }
                    direct_response: { status: 200, body: "limited\\n" }
                    rate_limit: { per: client_ip, rate: 5/s, burst: 5 }
                  - name: plain
                    match: { path_prefix: / }
                    direct_response: { status: 200, body: "plain\\n" }

                """)
        let gatewayd = try GatewaydProcess(config: config)
        let port = try gatewayd.port()
        let admin = try gatewayd.port(of: "admin")
        #expect(try httpGet(port: admin, path: "/healthz").status == 200)
        #expect(try httpGet(port: admin, path: "/readyz").status == 200)

        // 10 new connections on each worker: opened until both workers have accepted 10
        // (which one accepts is the kernel's race between them), told apart through /proc.
        // Then one request on each, sent back to back. A limiter per worker would let up to
        // 10 through; the gateway-wide one, 5.
        let workers = try gatewayd.status().generations.flatMap(\.workers).map(\.pid)
        #expect(workers.count == 2)
        var opened: [TestConnection] = []
        var byWorker: [Int32: [TestConnection]] = [:]
        while workers.contains(where: { (byWorker[$0]?.count ?? 0) < 10 }), opened.count < 400 {
            let batch = try (0..<10).map { _ in try TestConnection(port: port) }
            opened += batch
            var owners: [UInt16: Int32] = [:]
            try waitUntil("the workers to accept \(batch.count) connections") {
                owners = serverSideOwners(port: port, among: workers)
                return batch.allSatisfy { owners[$0.localPort] != nil }
            }
            for connection in batch { byWorker[owners[connection.localPort]!, default: []].append(connection) }
        }
        let chosen = workers.map { Array((byWorker[$0] ?? []).prefix(10)) }
        try #require(chosen.allSatisfy { $0.count == 10 }, "opened \(opened.count) connections, not 10 on each worker")
        let began = ContinuousClock.now
        for connection in chosen.joined() {
            try connection.send("GET /limited HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        }
        let sent = ContinuousClock.now - began
        let responses = try chosen.map { try $0.map { try $0.readResponse() } }
        let allowedPerWorker = responses.map { $0.filter { $0.status == 200 }.count }
        let allowed = allowedPerWorker.reduce(0, +)
        let limited = responses.joined().filter { $0.status == 429 }
        print(
            "20 requests (10 per worker, \(opened.count) connections opened to get them) sent in \(sent): "
                + "\(allowed) x 200 (per worker: \(allowedPerWorker)), \(limited.count) x 429")
        // Exactly the burst, plus what refills at 5/s while the requests go out: nothing when
        // they are sent within 200 ms, as they are unless the machine stalls.
        let refill = Int(Double(sent.components.seconds) * 5 + Double(sent.components.attoseconds) / 2e17)
        #expect(allowed >= 5 && allowed <= 5 + refill, "\(allowed) allowed in \(sent)")
        #expect(allowed + limited.count == 20)
        for response in limited {
            #expect(Int(response.header("retry-after") ?? "").map { $0 >= 1 } == true, "\(response.headers)")
        }

        for _ in 0..<3 { #expect(try httpGet(port: port, path: "/").status == 200) }
        var metrics = try httpGet(port: admin, path: "/metrics").body
        #expect(counter(in: metrics, route: "limited", status: "200") == allowed, "\(metrics)")
        #expect(counter(in: metrics, route: "limited", status: "429") == limited.count, "\(metrics)")
        #expect(counter(in: metrics, route: "plain", status: "200") == 3, "\(metrics)")

        let reload = try gatewayd.reload()
        #expect(reload.status == 0, "\(reload.stderr)")
        for _ in 0..<4 { #expect(try httpGet(port: port, path: "/").status == 200) }
        metrics = try httpGet(port: admin, path: "/metrics").body
        #expect(counter(in: metrics, route: "plain", status: "200") == 7, "\(metrics)")
        #expect(counter(in: metrics, route: "limited", status: "200") == allowed, "\(metrics)")
        #expect(counter(in: metrics, route: "limited", status: "429") == limited.count, "\(metrics)")
        #expect(try httpGet(port: admin, path: "/readyz").status == 200)
        #expect(try httpGet(port: admin, path: "/healthz").status == 200)
    }

    @Test("/metrics counts every failed attempt (a connect failure a retry hid too) and upstream latency")
    func upstreamErrorMetrics() throws {
        let upstream = try DemoUpstream(name: "live")
        defer { upstream.stop() }
        // Nothing listens on a port that was free a moment ago: connect is refused.
        let dead = try freePort()
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.api(["127.0.0.1:\(dead)", "\(upstream.endpoint)"], "health: { max_failures: 100 }"))
        let port = try gatewayd.port()
        let admin = try gatewayd.port(of: "admin")
        for _ in 0..<6 {
            #expect(try httpGet(port: port, path: "/").status == 200)
        }
        let metrics = try httpGet(port: admin, path: "/metrics").body
        // Round robin: every other request tried the dead endpoint first (3 of 6).
        #expect(metrics.contains("gatewayd_upstream_errors_total{kind=\"connect\",upstream=\"api\"} 3"), "\(metrics)")
        #expect(counter(in: metrics, route: "all", status: "200") == 6, "\(metrics)")
        #expect(metrics.contains("gatewayd_upstream_latency_seconds_count{upstream=\"api\"} 6"), "\(metrics)")
    }

    @Test("a GET an endpoint dropped after reading it is retried on the other; the failed attempts are counted")
    func retriedAfterSendingIsCounted() throws {
        let a = try DemoUpstream(name: "a")
        let b = try DemoUpstream(name: "b")
        defer {
            a.stop()
            b.stop()
        }
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.api(["\(a.endpoint)", "\(b.endpoint)"], "health: { max_failures: 100 }"))
        let port = try gatewayd.port()
        let admin = try gatewayd.port(of: "admin")
        for _ in 0..<4 {
            #expect(try httpGet(port: port, path: "/drop?on=a").status == 200)
        }
        let metrics = try httpGet(port: admin, path: "/metrics").body
        // Round robin: 2 of the 4 went to `a` first, which closed the connection.
        #expect(metrics.contains("gatewayd_upstream_errors_total{kind=\"reset\",upstream=\"api\"} 2"), "\(metrics)")
        #expect(counter(in: metrics, route: "all", status: "200") == 4, "\(metrics)")
    }

    @Test("read_timeout: an upstream stalled in the body closes the client connection and counts kind=read_timeout")
    func readTimeoutMetric() throws {
        let upstream = try DemoUpstream(name: "live")
        defer { upstream.stop() }
        let gatewayd = try GatewaydProcess(config: ProxyConfig.api(["\(upstream.endpoint)"], "read_timeout: 500ms"))
        let port = try gatewayd.port()
        let admin = try gatewayd.port(of: "admin")
        let connection = try TestConnection(port: port)
        try connection.send("GET /stall?after=100 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let head = try connection.readHead()
        #expect(head.status == 200)
        let start = ContinuousClock.now
        #expect(connection.waitForClose() != .timedOut)
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(400) && elapsed < .seconds(2), "closed after \(elapsed)")
        let metrics = try httpGet(port: admin, path: "/metrics").body
        #expect(
            metrics.contains("gatewayd_upstream_errors_total{kind=\"read_timeout\",upstream=\"api\"} 1"), "\(metrics)")
        #expect(try httpGet(port: port, path: "/").status == 200)
    }

    @Test("header_timeout cuts 20 slowloris connections at about 1 s while another client is served")
    func headerTimeoutCutsSlowloris() throws {
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.text(
                upstream: nil, settings: "limits: { header_timeout: 1s }\n",
                routes: """
                      - name: hello
                        match: { path_prefix: / }
                        direct_response: { status: 200, body: "hello\\n" }

                    """))
        let port = try gatewayd.port()
        let slowloris = try PythonClient(
            ["slowloris", "--port", "\(port)", "--connections", "20", "--interval", "0.3", "--duration", "5"],
            timeout: 8)
        try waitUntil("the workers to count the 20 slow connections") {
            try gatewayd.status().generations.flatMap(\.workers).reduce(0) { $0 + $1.connections } >= 20
        }
        var latencies: [Duration] = []
        for _ in 0..<5 {
            let began = ContinuousClock.now
            let response = try httpGet(port: port, path: "/")
            latencies.append(ContinuousClock.now - began)
            #expect(response.status == 200)
            #expect(response.body == "hello\n")
        }
        #expect(slowloris.isRunning, "the slowloris client ended before the normal requests were served")
        let result = try slowloris.wait()
        let connections = result["results"] as? [[String: Any]] ?? []
        #expect(connections.count == 20, "\(result)")
        #expect(result.exit == 0, "not every slow connection was ended by the server: \(result)")
        for connection in connections {
            #expect(slowlorisConnectionWasCut(connection), "\(connection)")
            let after = connection["after_s"] as? Double ?? -1
            #expect(after >= 0.9 && after < 2.0, "cut after \(after) s: \(connection)")
        }
        print(
            "slowloris: \(result["summary"] ?? "?"), first cut \(result["first_end_s"] ?? "?") s, last "
                + "\(result["last_end_s"] ?? "?") s; normal requests meanwhile: \(latencies)")
    }

    @Test("a WebSocket tunnel keeps echoing through a reload until drain_timeout, then is closed")
    func webSocketDuringDrain() throws {
        let upstream = try DemoUpstream()
        let gatewayd = try GatewaydProcess(
            config: ProxyConfig.text(upstream: upstream, drainTimeout: "3s", routes: ProxyConfig.route()))
        let port = try gatewayd.port()
        let socket = try WebSocketClient(port: port)
        #expect(socket.handshake.header("x-upstream") == upstream.name)
        #expect(try socket.echo("before the reload") == .text("before the reload"))

        let began = ContinuousClock.now
        let reload = try gatewayd.reload()
        let reloadTook = ContinuousClock.now - began
        #expect(reload.status == 0, "\(reload.stderr)")
        // Well under drain_timeout (3 s): the reload does not wait for the tunnel to end.
        #expect(reloadTook < .milliseconds(2500), "gatewayctl reload waited \(reloadTook)")
        #expect(try socket.echo("after the reload") == .text("after the reload"))
        #expect(try httpGet(port: port, path: "/echo").status == 200)

        // Keep talking until the old generation cuts the tunnel.
        var echoed = 1
        var ending = ""
        socket.connection.setTimeout(.seconds(2))
        while ContinuousClock.now - began < .seconds(10) {
            do {
                let frame = try socket.echo("message \(echoed)")
                if case .text = frame {
                    echoed += 1
                } else {
                    ending = "\(frame)"
                    break
                }
            } catch {
                ending = "\(error)"
                break
            }
            usleep(100_000)  // a message every 100 ms: pacing, not synchronisation
        }
        let closedAfter = ContinuousClock.now - began
        print(
            "reload returned after \(reloadTook); the tunnel echoed \(echoed) messages after it and ended "
                + "\(closedAfter) after the reload (\(ending))")
        #expect(!ending.isEmpty, "the tunnel was still open 10 s after the reload")
        #expect(closedAfter >= .milliseconds(2800) && closedAfter < .seconds(6), "closed after \(closedAfter)")
        #expect(echoed >= 15, "only \(echoed) messages echoed during the drain")
        try gatewayd.waitUntilSingleGeneration(timeout: .seconds(10))
    }
}

// MARK: - Helpers

/// Configurations for these tests: a `web` listener (and `admin`), the upstream `origin`.
private enum ProxyConfig {
    /// One worker, an admin listener, the upstream `api` (`retries: 1` and `setting`) and a
    /// route `all` to it.
    static func api(_ endpoints: [String], _ setting: String) -> String {
        let list = endpoints.map { "\"\($0)\"" }.joined(separator: ", ")
        return self.text(
            upstream: nil, workers: 1, admin: true,
            settings: "upstreams:\n  api:\n    endpoints: [\(list)]\n    retries: 1\n    \(setting)\n",
            routes: "  - name: all\n    match: { path_prefix: / }\n    upstream: api\n")
    }

    static func text(
        upstream: DemoUpstream?, workers: Int = 2, drainTimeout: String = "10s", admin: Bool = false,
        settings: String = "", routes: String
    ) -> String {
        var text = """
            workers: \(workers)
            drain_timeout: \(drainTimeout)
            listeners:
              - { name: web, address: "127.0.0.1:0", backlog: 1024 }

            """
        if admin {
            text += "  - { name: admin, address: \"127.0.0.1:0\" }\nadmin: { listener: admin }\n"
        }
        text += settings
        if let upstream {
            text += "upstreams:\n  origin:\n    endpoints: [\"\(upstream.endpoint)\"]\n"
        }
        return text + "routes:\n" + routes
    }

    /// Everything to `origin`; `extra` adds keys to the route (indented four spaces).
    static func route(extra: String = "") -> String {
        "  - name: all\n    match: { path_prefix: / }\n    upstream: origin\n" + extra
    }
}

private func mib(_ bytes: Int) -> String {
    String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
}

/// The value of a response header in a clients.py result.
private func header(_ name: String, in result: PythonClient.Result) -> String? {
    (result["response_headers"] as? [[String]])?.first { $0.first?.lowercased() == name }?.last
}

private func readLines(_ path: String) throws -> [String] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
}

/// Waits until the file has at least `count` lines (the access log is flushed every 100 ms).
private func waitForLines(_ path: String, count: Int) throws -> [String] {
    var lines: [String] = []
    try waitUntil("\(count) lines in \(path)", timeout: .seconds(10)) {
        lines = (try? readLines(path)) ?? []
        return lines.count >= count
    }
    return lines
}

private func requestID(inJSON line: String) -> String? {
    ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])?["request_id"] as? String
}

/// `gatewayd_requests_total{route="ROUTE",status="STATUS"}` in Prometheus text, nil if absent.
private func counter(in metrics: String, route: String, status: String) -> Int? {
    for line in metrics.split(separator: "\n") where line.hasPrefix("gatewayd_requests_total{") {
        guard line.contains("route=\"\(route)\""), line.contains("status=\"\(status)\"") else { continue }
        return line.split(separator: " ").last.flatMap { Int($0) }
    }
    return nil
}

import CGatewayShim
import CoreMetrics
import GatewayCore
import Testing

@testable import Gateway

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Shared metrics: swift-metrics backend and Prometheus text", .timeLimit(.minutes(1)))
struct SharedMetricsTests {
    @Test("golden: every metric type, label order and escaping, help escaping, stable order")
    func golden() throws {
        let memory = try SharedMemory.create()
        let factory = SharedMetricsFactory(
            memory: memory, buckets: ["body_bytes": [1000, 100]],
            help: ["gatewayd_requests_total": "Requests by route and status.\nA \\ backslash and \"quotes\"."])
        let ok = Counter(
            label: "gatewayd_requests_total", dimensions: [("status", "200"), ("route", "api")], factory: factory)
        ok.increment()
        ok.increment(by: 2)
        Counter(
            label: "gatewayd_requests_total", dimensions: [("route", "a\"b\\c\nd"), ("status", "404")],
            factory: factory
        ).increment()
        Counter(label: "gatewayd.dotted-name", factory: factory).increment(by: 5)
        let open = Meter(label: "gatewayd_open_connections", factory: factory)
        open.increment()
        open.increment()
        open.decrement()
        Gauge(label: "gatewayd_temperature", dimensions: [("zone", "a")], factory: factory).record(21.5)
        let timer = CoreMetrics.Timer(
            label: "gatewayd_request_duration_seconds", dimensions: [("route", "api")], factory: factory)
        timer.recordNanoseconds(3_906_250)  // 2^-8 s
        timer.recordNanoseconds(125_000_000)
        timer.recordNanoseconds(16_000_000_000)
        let bodies = Recorder(label: "body_bytes", factory: factory)
        bodies.record(50)
        bodies.record(5000)

        let expected = #"""
            # TYPE body_bytes histogram
            body_bytes_bucket{le="100"} 1
            body_bytes_bucket{le="1000"} 1
            body_bytes_bucket{le="+Inf"} 2
            body_bytes_sum 5050
            body_bytes_count 2
            # TYPE gatewayd_dotted_name counter
            gatewayd_dotted_name 5
            # HELP gatewayd_open_connections Client connections open now, summed over the live worker processes.
            # TYPE gatewayd_open_connections gauge
            gatewayd_open_connections 1
            # HELP gatewayd_rate_limit_evictions_total Rate-limit buckets evicted while live because every probed slot of the shared table was live.
            # TYPE gatewayd_rate_limit_evictions_total counter
            gatewayd_rate_limit_evictions_total 0
            # HELP gatewayd_request_duration_seconds Time from a request's parsed head to the last byte of its response handed to the socket, in seconds, by route.
            # TYPE gatewayd_request_duration_seconds histogram
            gatewayd_request_duration_seconds_bucket{route="api",le="0.005"} 1
            gatewayd_request_duration_seconds_bucket{route="api",le="0.01"} 1
            gatewayd_request_duration_seconds_bucket{route="api",le="0.025"} 1
            gatewayd_request_duration_seconds_bucket{route="api",le="0.05"} 1
            gatewayd_request_duration_seconds_bucket{route="api",le="0.1"} 1
            gatewayd_request_duration_seconds_bucket{route="api",le="0.25"} 2
            gatewayd_request_duration_seconds_bucket{route="api",le="0.5"} 2
            gatewayd_request_duration_seconds_bucket{route="api",le="1"} 2
            gatewayd_request_duration_seconds_bucket{route="api",le="2.5"} 2
            gatewayd_request_duration_seconds_bucket{route="api",le="5"} 2
            gatewayd_request_duration_seconds_bucket{route="api",le="10"} 2
            gatewayd_request_duration_seconds_bucket{route="api",le="+Inf"} 3
            gatewayd_request_duration_seconds_sum{route="api"} 16.12890625
            gatewayd_request_duration_seconds_count{route="api"} 3
            # HELP gatewayd_requests_total Requests by route and status.\nA \\ backslash and "quotes".
            # TYPE gatewayd_requests_total counter
            gatewayd_requests_total{route="a\"b\\c\nd",status="404"} 1
            gatewayd_requests_total{route="api",status="200"} 3
            # HELP gatewayd_shared_metrics_overflow_total Metric series dropped because the shared metric table was full or their name and labels too long.
            # TYPE gatewayd_shared_metrics_overflow_total counter
            gatewayd_shared_metrics_overflow_total 0
            # TYPE gatewayd_temperature gauge
            gatewayd_temperature{zone="a"} 21.5

            """#
        let rendered = factory.render()
        #expect(rendered == expected)
        if rendered != expected {
            print(rendered)
        }
    }

    @Test("a cached counter is one handler; two processes' factories add to one series")
    func sharedAcrossProcesses() throws {
        let master = try SharedMemory.create()
        let worker1 = SharedMetricsFactory(
            memory: try SharedMemory.map(descriptor: master.descriptor!, handoff: master.handoff))
        let worker2 = SharedMetricsFactory(
            memory: try SharedMemory.map(descriptor: master.descriptor!, handoff: master.handoff))
        let a = worker1.makeCounter(label: "hits_total", dimensions: [("b", "2"), ("a", "1")])
        let b = worker1.makeCounter(label: "hits_total", dimensions: [("a", "1"), ("b", "2")])
        #expect(a === b)
        a.increment(by: 2)
        worker2.makeCounter(label: "hits_total", dimensions: [("a", "1"), ("b", "2")]).increment(by: 3)
        #expect(worker2.render().contains("hits_total{a=\"1\",b=\"2\"} 5\n"))
        #expect(worker1.render() == worker2.render())
    }

    @Test("gauges add up over live processes; a dead process's share is dropped and its slot freed")
    func gaugesOfDeadProcesses() throws {
        let memory = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        try #require(gw_spawn_with_output(&pid, "/bin/true", argv, environ, "/dev/null") == 0)
        _ = try waitForExit(pid: pid)
        let dead = SharedMetricsFactory(memory: memory, owner: ProcessIdentity(pid: pid, startTime: 1))
        let alive = SharedMetricsFactory(memory: memory)
        let other = SharedMetricsFactory(memory: memory, owner: ProcessIdentity.running(pid: getppid())!)
        Gauge(label: "open_connections", factory: dead).record(100)
        Gauge(label: "open_connections", factory: alive).record(3)
        Meter(label: "open_connections", factory: other).set(4)
        Counter(label: "a", factory: alive).increment()
        Counter(label: "x", factory: alive).increment()
        #expect(memory.metricOverflows == 1)  // full: 3 gauges and "a"
        #expect(alive.render().contains("open_connections 7\n"))
        // That render freed the dead process's slot: "b" fits.
        Counter(label: "b", factory: alive).increment()
        #expect(memory.metricOverflows == 1)
        #expect(alive.render().contains("b 1\n"))
    }

    @Test("a full table drops new series, counts them, and keeps working")
    func fullTable() throws {
        let memory = try SharedMemory.create(layout: .init(rateSlots: 8, metricSlots: 4))
        let factory = SharedMetricsFactory(memory: memory)
        for i in 0..<6 {
            Counter(label: "c\(i)", factory: factory).increment()
        }
        // A histogram needs 13 slots: none of them fit.
        CoreMetrics.Timer(label: "t_seconds", factory: factory).recordSeconds(1)
        let text = factory.render()
        #expect(text.contains("gatewayd_shared_metrics_overflow_total 15\n"), "\(text)")
        #expect(text.contains("c3 1\n"))
        #expect(!text.contains("c4"))
    }

    @Test("names and label names become valid Prometheus names")
    func sanitizing() {
        #expect(PrometheusText.sanitize("a.b-c:d", allowColon: true) == "a_b_c:d")
        #expect(PrometheusText.sanitize("a:b", allowColon: false) == "a_b")
        #expect(PrometheusText.sanitize("9lives", allowColon: true) == "_9lives")
        #expect(PrometheusText.sanitize("", allowColon: true) == "_")
        #expect(PrometheusText.format(1e20) == "1e+20")
        #expect(PrometheusText.format(-.infinity) == "-Inf")
        #expect(PrometheusText.format(.nan) == "NaN")
    }
}

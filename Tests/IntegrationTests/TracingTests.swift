import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// OpenTelemetry spans, exported by OTLP/HTTP to a real receiver (Support/otlp-receiver.py,
/// protobuf decoded by PyPI's opentelemetry-proto): a server span per request, a client span per
/// upstream attempt, W3C trace context continued from the client and sent upstream, and a
/// reload's span with its phases. Only a build with the `OTLPTracing` trait exports spans:
/// `make test-tracing` builds one and runs these; `make test` (the lean build) skips them.
@Suite(
    "Tracing", .serialized, .timeLimit(.minutes(3)),
    .enabled(
        if: otlpExporterBuiltIn,
        "this build has no OTLP exporter (the OTLPTracing trait is off): `make test-tracing` runs these"))
struct TracingTests {
    static func config(receiver: UInt16, origin: UInt16, dead: UInt16, body: String = "v1") -> String {
        """
        workers: 1
        drain_timeout: 5s
        listeners:
          - { name: web, address: "127.0.0.1:0" }
        tracing: { otlp_endpoint: "http://127.0.0.1:\(receiver)", sample_ratio: 1, service_name: gatewayd-test }
        upstreams:
          origin: { endpoints: ["127.0.0.1:\(origin)"] }
          flaky: { endpoints: ["127.0.0.1:\(dead)", "127.0.0.1:\(origin)"], retries: 1 }
        routes:
          - { name: echo, match: { path_prefix: /echo }, upstream: origin }
          - { name: retry, match: { path_prefix: /retry }, upstream: flaky }
          - { name: hello, match: { path_prefix: / }, direct_response: { status: 200, body: "\(body)" } }

        """
    }

    @Test(
        "server and client spans with the client's trace continued and sent upstream, a retried attempt, a reload's phases and drain"
    )
    func spansReachAnOTLPReceiver() throws {
        let receiver = try OTLPReceiver()
        let origin = try DemoUpstream(name: "origin")
        let dead = try freePort()
        // Spans are exported every 100 ms instead of OpenTelemetry's 5 s (swift-otel reads the
        // standard variable): the test waits on their arrival, not on a sleep.
        let gatewayd = try GatewaydProcess(
            config: Self.config(receiver: receiver.port, origin: origin.port, dead: dead),
            environment: ["OTEL_BSP_SCHEDULE_DELAY": "100"])
        defer { gatewayd.stop() }
        let port = try gatewayd.port()

        // 1. A client's sampled trace: continued, and the upstream gets the client span's id.
        let clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
        let clientParent = "00f067aa0ba902b7"
        let continued = try TestConnection(port: port).request(
            "/echo/continued?x=1",
            headers: ["traceparent": "00-\(clientTrace)-\(clientParent)-01", "tracestate": "vendor=abc"])
        #expect(continued.status == 200)
        let continuedUpstream = try Self.receivedFields(continued)
        // 2. No trace from the client: a new one (sample_ratio 1).
        let fresh = try TestConnection(port: port).request("/echo/fresh")
        let freshUpstream = try Self.receivedFields(fresh)
        // 3. A client's unsampled trace: nothing exported, but the trace still goes upstream.
        let unsampledTrace = "0af7651916cd43dd8448eb211c80319c"
        let unsampled = try TestConnection(port: port).request(
            "/echo/unsampled", headers: ["traceparent": "00-\(unsampledTrace)-b7ad6b7169203331-00"])
        let unsampledUpstream = try Self.receivedFields(unsampled)
        // 4. A retry: the first endpoint refuses, the second answers (round robin starts at the
        // first; two requests are enough for one of them to meet the refusal).
        for index in 0..<2 { #expect(try httpGet(port: port, path: "/retry/\(index)").status == 200) }
        // 5. A reload, and the old generation's drain.
        try gatewayd.writeConfig(
            Self.config(receiver: receiver.port, origin: origin.port, dead: dead, body: "v2"))
        #expect(try gatewayd.reload().status == 0)
        try gatewayd.waitUntilSingleGeneration()

        var spans: [ReceivedSpan] = []
        try waitUntil("the spans to reach the receiver", timeout: .seconds(20)) {
            spans = try receiver.spans()
            let retried = spans.filter {
                $0.attributes["gatewayd.upstream"] as? String == "flaky" && $0.kind == "CLIENT"
            }
            return spans.contains { $0.attributes["url.path"] as? String == "/echo/fresh" }
                && retried.count >= 3 && spans.contains { $0.name == "drain" }
        }
        #expect(spans.allSatisfy { $0.service == "gatewayd-test" })

        // 1.
        let server = try #require(spans.first { $0.attributes["url.path"] as? String == "/echo/continued" })
        #expect(server.kind == "SERVER" && server.name == "GET echo")
        #expect(server.traceID == clientTrace && server.parentSpanID == clientParent)
        #expect(server.attributes["http.request.method"] as? String == "GET")
        #expect(server.attributes["url.query"] as? String == "x=1")
        #expect(server.attributes["http.response.status_code"] as? Int == 200)
        #expect(server.attributes["gatewayd.route"] as? String == "echo")
        #expect(server.attributes["network.peer.address"] as? String == "127.0.0.1")
        #expect(server.attributes["server.address"] as? String == "localhost")
        #expect(server.attributes["gatewayd.upstream"] as? String == "origin")
        let client = try #require(spans.first { $0.parentSpanID == server.spanID })
        #expect(client.kind == "CLIENT" && client.name == "GET origin" && client.traceID == clientTrace)
        #expect(client.attributes["server.port"] as? Int == Int(origin.port))
        #expect(client.attributes["gatewayd.upstream.attempt"] as? Int == 1)
        #expect(client.attributes["http.response.status_code"] as? Int == 200)
        #expect(client.start >= server.start && client.end <= server.end)
        #expect(continuedUpstream["traceparent"] == "00-\(clientTrace)-\(client.spanID)-01")
        #expect(continuedUpstream["tracestate"] == "vendor=abc")

        // 2.
        let freshServer = try #require(spans.first { $0.attributes["url.path"] as? String == "/echo/fresh" })
        #expect(freshServer.parentSpanID == "" && freshServer.traceID != clientTrace)
        let freshClient = try #require(spans.first { $0.parentSpanID == freshServer.spanID })
        #expect(freshUpstream["traceparent"] == "00-\(freshServer.traceID)-\(freshClient.spanID)-01")

        // 3.
        #expect(!spans.contains { $0.traceID == unsampledTrace })
        let unsampledParent = try #require(unsampledUpstream["traceparent"])
        #expect(unsampledParent.hasPrefix("00-\(unsampledTrace)-") && unsampledParent.hasSuffix("-00"))
        #expect(!unsampledParent.contains("b7ad6b7169203331"), "the upstream gets gatewayd's span, not the client's")

        // 4.
        let attempts = spans.filter { $0.kind == "CLIENT" && $0.attributes["gatewayd.upstream"] as? String == "flaky" }
        let refused = try #require(attempts.first { $0.attributes["error.type"] as? String == "connect" })
        #expect(refused.status == "ERROR" && refused.attributes["server.port"] as? Int == Int(dead))
        #expect(refused.attributes["gatewayd.upstream.attempt"] as? Int == 1)
        let retry = try #require(
            attempts.first { $0.parentSpanID == refused.parentSpanID && $0.spanID != refused.spanID })
        #expect(retry.attributes["gatewayd.upstream.attempt"] as? Int == 2)
        #expect(retry.attributes["http.request.resend_count"] as? Int == 1)
        #expect(retry.attributes["http.response.status_code"] as? Int == 200 && retry.status == "")
        #expect(retry.start >= refused.end)
        let retried = try #require(spans.first { $0.spanID == refused.parentSpanID })
        #expect(retried.kind == "SERVER" && retried.attributes["http.response.status_code"] as? Int == 200)

        // 5.
        let reload = try #require(spans.first { $0.name == "gatewayd.reload" })
        #expect(reload.parentSpanID == "" && reload.attributes["gatewayd.reload.outcome"] as? String == "ok")
        #expect(reload.attributes["gatewayd.generation"] as? Int == 2)
        let phases = spans.filter { $0.parentSpanID == reload.spanID && $0.name != "drain" }.sorted {
            $0.start < $1.start
        }
        #expect(phases.map(\.name) == ["validate", "bind", "spawn", "ready", "switch"])
        #expect(phases.allSatisfy { $0.traceID == reload.traceID && $0.start >= reload.start && $0.end <= reload.end })
        let drain = try #require(spans.first { $0.name == "drain" })
        #expect(drain.parentSpanID == reload.spanID && drain.attributes["gatewayd.generation"] as? Int == 1)
    }

    /// What the demo upstream's /echo says it received, by lower-cased field name.
    static func receivedFields(_ response: HTTPResponse) throws -> [String: String] {
        let json = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
        let headers = try #require(json?["headers"] as? [[String]], "\(response.body)")
        var fields: [String: String] = [:]
        for pair in headers where pair.count == 2 { fields[pair[0].lowercased()] = pair[1] }
        return fields
    }
}

/// The tests are built with the same traits as the gatewayd they start.
#if OTLPTracing
    let otlpExporterBuiltIn = true
#else
    let otlpExporterBuiltIn = false
#endif

struct ReceivedSpan {
    var service: String
    var name: String
    var kind: String
    var traceID: String
    var spanID: String
    var parentSpanID: String
    var start: UInt64
    var end: UInt64
    var status: String
    var attributes: [String: Any]

    init(_ json: [String: Any]) {
        service = json["service"] as? String ?? ""
        name = json["name"] as? String ?? ""
        kind = json["kind"] as? String ?? ""
        traceID = json["trace_id"] as? String ?? ""
        spanID = json["span_id"] as? String ?? ""
        parentSpanID = json["parent_span_id"] as? String ?? ""
        start = (json["start_ns"] as? NSNumber)?.uint64Value ?? 0
        end = (json["end_ns"] as? NSNumber)?.uint64Value ?? 0
        status = json["status"] as? String ?? ""
        attributes = json["attributes"] as? [String: Any] ?? [:]
    }
}

/// Support/otlp-receiver.py on a free port of 127.0.0.1, ready once it prints `READY <port>`;
/// its stdin is a FIFO only this object holds open, so it exits with the test however the
/// test ends (as `DemoUpstream`).
final class OTLPReceiver: @unchecked Sendable {
    let port: UInt16
    private let process: ChildProcess
    private let directory: TemporaryDirectory
    private let spansPath: String
    private let stdinHolder: CInt

    /// Where `make test-tracing` installs opentelemetry-proto (the Makefile's OTLP_PYTHON).
    static var pythonPath: String {
        ProcessInfo.processInfo.environment["OTLP_PYTHONPATH"]
            ?? repositoryRoot.appendingPathComponent(".build-tools/python-otlp-1.45.2").path
    }

    init(timeout: Duration = .seconds(20)) throws {
        directory = try TemporaryDirectory()
        spansPath = directory.file("spans.jsonl")
        let script = repositoryRoot.appendingPathComponent("Tests/IntegrationTests/Support/otlp-receiver.py").path
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONPATH"] = Self.pythonPath
        let started = try ReadyPortProcess(
            [script, "--port", "0", "--output", spansPath, "--exit-on-stdin-eof"], environment: environment,
            in: directory, what: "otlp-receiver.py", timeout: timeout)
        process = started.process
        stdinHolder = started.stdinHolder
        port = started.port
    }

    deinit {
        close(stdinHolder)
        ReadyPortProcess.terminate(process)
    }

    /// Every span received so far.
    func spans() throws -> [ReceivedSpan] {
        let text = (try? String(contentsOfFile: spansPath, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { line in
            guard let json = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw HarnessError("not a span: \(line)")
            }
            return ReceivedSpan(json)
        }
    }
}

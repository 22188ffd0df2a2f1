import Foundation
import GatewayConfig
import GatewayCore
import InMemoryTracing
import Testing
import Tracing

@testable import Gateway

/// A worker's spans, with swift-distributed-tracing's in-memory tracer in place of swift-otel's
/// (the default build has no exporter; `make test-tracing` checks the OTLP side end to end):
/// their names, parents and attributes, a retried attempt, and the propagation of the
/// attempt's context upstream in place of the client's.
@Suite("Request spans") struct RequestTraceTests {
    @Test("a server span per request, a client span per upstream attempt, the attempt's context sent upstream")
    func spans() async throws {
        let upstream = try DemoUpstream(name: "live")
        defer { upstream.stop() }
        let dead = try deadEndpoint()
        let listener = try TestListener()
        defer { listener.close() }
        let tracer = InMemoryTracer()
        let configuration = GatewayConfiguration(
            listeners: [try listener.config],
            routes: [
                proxyRoute("api", RouteMatch(pathPrefix: "/echo"), upstream: "api"),
                directRoute("hello", RouteMatch(pathPrefix: "/"), body: "hi"),
            ],
            upstreams: [
                UpstreamConfig(
                    name: "api", endpoints: [dead, upstream.endpoint], health: PassiveHealth(maxFailures: 100),
                    retries: 1)
            ])
        let server = try GatewayServer(
            configuration: configuration, generation: 1, logger: testLogger(), tracer: tracer,
            connectionCountDidChange: { _ in })
        try await server.start(listeners: [listener.handOff()])
        var echoes: [[String: Any]] = []
        do {
            // Round robin from the dead endpoint: the first request is retried, the second not.
            for index in 0..<2 {
                let response = try fetch(
                    port: listener.port, "/echo/\(index)?q=1",
                    headers: [
                        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                        "User-Agent: probe",
                    ])
                #expect(response.status == 200)
                echoes.append(
                    try #require(JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]))
            }
            #expect(try fetch(port: listener.port, "/").status == 200)
            await server.shutdownNow()
        } catch {
            await server.shutdownNow()
            throw error
        }

        let spans = tracer.finishedSpans
        let servers = spans.filter { $0.kind == .server }
        #expect(servers.map(\.operationName) == ["GET api", "GET api", "GET hello"])
        let first = servers[0]
        #expect(first.attributes["http.request.method"]?.toSpanAttribute() == "GET")
        #expect(first.attributes["url.path"]?.toSpanAttribute() == "/echo/0")
        #expect(first.attributes["url.query"]?.toSpanAttribute() == "q=1")
        #expect(first.attributes["server.address"]?.toSpanAttribute() == "localhost")
        #expect(first.attributes["network.peer.address"]?.toSpanAttribute() == "127.0.0.1")
        #expect(first.attributes["user_agent.original"]?.toSpanAttribute() == "probe")
        #expect(first.attributes["gatewayd.route"]?.toSpanAttribute() == "api")
        #expect(first.attributes["gatewayd.upstream"]?.toSpanAttribute() == "api")
        #expect(first.attributes["http.response.status_code"]?.toSpanAttribute() == 200)
        #expect(servers[2].attributes["gatewayd.upstream"] == nil)

        // Round robin over [dead, live]: one of the two requests met the dead endpoint first.
        let attemptsOf = { (server: FinishedInMemorySpan) in
            spans.filter { $0.kind == .client && $0.parentSpanID == server.spanID }
        }
        #expect(attemptsOf(servers[2]).isEmpty)
        let retried = try #require(servers.first { attemptsOf($0).count == 2 })
        let attempts = attemptsOf(retried)
        #expect(attempts.map(\.operationName) == ["GET api", "GET api"])
        #expect(attempts.map { $0.attributes["gatewayd.upstream.attempt"]?.toSpanAttribute() } == [1, 2])
        #expect(attempts[0].attributes["error.type"]?.toSpanAttribute() == "connect")
        #expect(attempts[0].status?.code == .error)
        #expect(attempts[0].attributes["server.port"]?.toSpanAttribute() == .int64(Int64(dead.address.port)))
        #expect(attempts[1].attributes["http.request.resend_count"]?.toSpanAttribute() == 1)
        #expect(attempts[1].attributes["http.response.status_code"]?.toSpanAttribute() == 200)
        #expect(attempts[1].attributes["server.port"]?.toSpanAttribute() == .int64(Int64(upstream.port)))
        #expect(servers.filter { attemptsOf($0).count == 1 }.count == 1)

        // Each upstream request carried its answering attempt's context (the in-memory tracer's
        // fields), and not the client's traceparent: it is replaced, not passed on.
        for (echo, server) in zip(echoes, servers) {
            let received = (echo["headers"] as? [[String]] ?? []).map { ($0[0].lowercased(), $0[1]) }
            let answering = try #require(attemptsOf(server).last)
            #expect(received.filter { $0.0 == InMemoryTracer.spanIDKey }.map(\.1) == [answering.spanID])
            #expect(received.filter { $0.0 == InMemoryTracer.traceIDKey }.map(\.1) == [server.traceID])
            #expect(!received.contains { $0.0 == "traceparent" })
        }
    }

    @Test(
        "only a well-formed traceparent reaches the propagator (swift-otel logs a warning for each other one)",
        arguments: [
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future", true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false),
            ("", false),
        ])
    func traceparentShape(value: String, wellFormed: Bool) {
        #expect(Array(value.utf8).withUnsafeBufferPointer { RequestTrace.isWellFormed(traceparent: $0) } == wellFormed)
    }

    @Test("sample_ratio: requests without a traceparent are traced at that rate; with one, always (its flag decides)")
    func sampling() async throws {
        for (ratio, expected) in [(0.0, 0...0), (0.01, 850...1150), (0.5, 49_000...51_000), (1.0, 100_000...100_000)] {
            let tracing = RequestTracing(tracer: InMemoryTracer(), sampleRatio: ratio)
            let sampled = (0..<100_000).count { _ in tracing.samplesNewTrace() }
            #expect(expected.contains(sampled), "ratio \(ratio): \(sampled) of 100,000")
        }
        let listener = try TestListener()
        defer { listener.close() }
        let tracer = InMemoryTracer()
        let server = try GatewayServer(
            configuration: GatewayConfiguration(
                listeners: [try listener.config],
                routes: [directRoute("hello", RouteMatch(pathPrefix: "/"), body: "hi")]),
            generation: 1, logger: testLogger(), tracer: tracer, sampleRatio: 0, connectionCountDidChange: { _ in })
        try await server.start(listeners: [listener.handOff()])
        do {
            #expect(try fetch(port: listener.port, "/untraced").status == 200)
            #expect(
                try fetch(
                    port: listener.port, "/traced",
                    headers: ["traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"]
                ).status == 200)
            await server.shutdownNow()
        } catch {
            await server.shutdownNow()
            throw error
        }
        #expect(tracer.finishedSpans.map { $0.attributes["url.path"]?.toSpanAttribute() } == ["/traced"])
    }
}

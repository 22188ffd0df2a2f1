import GatewayConfig
import Testing

/// `tracing:`: accepted with its defaults in a build with the OTLP exporter (`OTLPTracing`
/// trait, `make test-tracing`); refused where it points in the default build, with how to get
/// one that has it. Mistakes in its values are reported in both.
@Suite struct TracingConfigTests {
    @Test func offByDefault() throws {
        #expect(try #require(parse(minimalListeners)).tracing == nil)
    }

    @Test func aBuildWithoutTheExporterSaysHowToGetOne() {
        let yaml = minimalListeners + "tracing: { otlp_endpoint: \"http://127.0.0.1:4318\", sample_ratio: 0.01 }\n"
        if TracingConfig.exporterIsBuiltIn {
            let config = parse(yaml)
            #expect(
                config?.tracing
                    == TracingConfig(
                        otlpEndpoint: "http://127.0.0.1:4318/v1/traces", sampleRatio: 0.01, serviceName: "gatewayd"))
        } else {
            #expect(
                problems(yaml) == [
                    "gateway.yaml:4:27: tracing.otlp_endpoint: this gatewayd was built without the OTLP exporter; build it with `make release TRACING=1` (swift build --traits OTLPTracing), or remove `tracing:`"
                ])
        }
    }

    @Test func everyKeyWithTheExporter() throws {
        guard TracingConfig.exporterIsBuiltIn else { return }
        let config = try #require(
            parse(
                minimalListeners + """
                    tracing:
                      otlp_endpoint: https://collector.example:4318/custom/path
                      sample_ratio: 1
                      service_name: edge

                    """))
        #expect(
            config.tracing
                == TracingConfig(
                    otlpEndpoint: "https://collector.example:4318/custom/path", sampleRatio: 1, serviceName: "edge"))
    }

    @Test func mistakesAreNamedWhereTheyAre() {
        #expect(
            problems(
                minimalListeners + """
                    tracing: { otlp_endpoint: "grpc://127.0.0.1:4317", sample_ratio: 1.5, service_name: "", exporter: otlp }

                    """) == [
                    "gateway.yaml:4:27: tracing.otlp_endpoint: expected an http:// or https:// URL (OTLP/HTTP), got \"grpc://127.0.0.1:4317\"",
                    "gateway.yaml:4:66: tracing.sample_ratio: must be from 0 to 1, got 1.5",
                    "gateway.yaml:4:85: tracing.service_name: must not be empty (leave it out for gatewayd)",
                    "gateway.yaml:4:89: unknown key 'exporter' in tracing",
                ])
        #expect(
            problems(minimalListeners + "tracing: { sample_ratio: half }\n") == [
                "gateway.yaml:4:10: tracing: missing required key 'otlp_endpoint'"
            ])
        #expect(
            problems(minimalListeners + "tracing: { otlp_endpoint: \"http://:4318\", sample_ratio: half }\n") == [
                "gateway.yaml:4:27: tracing.otlp_endpoint: expected a URL such as http://127.0.0.1:4318/v1/traces, got \"http://:4318\"",
                "gateway.yaml:4:57: tracing.sample_ratio: expected a number from 0 to 1, got a string \"half\"",
            ])
    }
}

#if OTLPTracing
    import GatewayConfig
    import Logging
    import OTel
    import ServiceLifecycle
    import Tracing

    /// The OTLP/HTTP exporter, through swift-otel (built only with the `OTLPTracing` trait).
    extension TracingBackend {
        static func startOTLP(_ configuration: TracingConfig, logger: Logger) throws(TracingBackendError)
            -> TracingBackend
        {
            var otel = OTel.Configuration.default
            otel.serviceName = configuration.serviceName
            otel.diagnosticLogger = .custom(logger)
            // W3C Trace Context only: `traceparent` and `tracestate` in, and out to upstreams.
            otel.propagators = [.traceContext]
            otel.metrics.enabled = false
            otel.logs.enabled = false
            otel.traces.enabled = true
            // A client's sampled flag decides for its trace; a new trace is sampled when it is
            // started: the worker starts one for `sample_ratio` of the requests without a
            // traceparent (Gateway's RequestTracing, where an unsampled request costs nothing),
            // the master for every reload.
            otel.traces.sampler = .parentBasedAlwaysOn
            otel.traces.exporter = .otlp
            otel.traces.otlpExporter.endpoint = configuration.otlpEndpoint
            otel.traces.otlpExporter.protocol = .httpProtobuf
            let tracer: any Tracer
            let service: any Service
            do {
                (tracer, service) = try OTel.makeTracingBackend(configuration: otel)
            } catch {
                throw TracingBackendError(reason: "\(error)")
            }
            // No signals: the process handles its own (a worker's SIGTERM, the master's).
            let group = ServiceGroup(services: [service], logger: logger)
            let running = Task { try? await group.run() }
            return TracingBackend(tracer: tracer, configuration: configuration) {
                await group.triggerGracefulShutdown()
                _ = await running.result
            }
        }
    }
#endif

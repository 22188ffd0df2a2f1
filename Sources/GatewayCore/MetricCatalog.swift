/// Every metric family gatewayd exposes, with its `# HELP`: the workers write theirs through
/// swift-metrics, the master writes its own into the same shared table (`MasterMetrics`), and
/// whichever worker renders `/metrics` finds the help of every family here. A family missing
/// from this table renders without `# HELP`, which `promtool check metrics` reports (a test
/// runs it). docs/observability.md lists them with their labels.
public enum MetricCatalog {
    // Written by the workers.
    public static let requestsTotal = "gatewayd_requests_total"
    public static let requestDuration = "gatewayd_request_duration_seconds"
    public static let upstreamLatency = "gatewayd_upstream_latency_seconds"
    public static let upstreamErrors = "gatewayd_upstream_errors_total"
    public static let openConnections = "gatewayd_open_connections"
    public static let accessLogDroppedLines = "gatewayd_access_log_dropped_lines_total"
    public static let workerHandoffs = "gatewayd_worker_handoffs_total"
    public static let sharedMetricsOverflow = "gatewayd_shared_metrics_overflow_total"
    public static let rateLimitEvictions = "gatewayd_rate_limit_evictions_total"
    public static let tlsHandshakeFailures = "gatewayd_tls_handshake_failures_total"
    public static let tlsHandshakes = "gatewayd_tls_handshakes_total"
    public static let http2StreamResets = "gatewayd_http2_stream_resets_total"
    public static let http2ConnectionErrors = "gatewayd_http2_connection_errors_total"
    // Written by the master.
    public static let reloadsTotal = "gatewayd_reloads_total"
    public static let reloadPhaseDuration = "gatewayd_reload_phase_duration_seconds"
    public static let generations = "gatewayd_generations"
    public static let workerRestarts = "gatewayd_worker_restarts_total"
    public static let drainingConnections = "gatewayd_draining_connections"
    public static let buildInfo = "gatewayd_build_info"

    public static let help: [String: String] = [
        requestsTotal: "Requests answered, by route name and status code.",
        requestDuration:
            "Time from a request's parsed head to the last byte of its response handed to the socket, in seconds, by route.",
        upstreamLatency:
            "Time from writing a request head upstream to reading the response head, in seconds, by upstream.",
        upstreamErrors: "Failed attempts to reach an upstream, by upstream and kind of failure.",
        openConnections: "Client connections open now, summed over the live worker processes.",
        accessLogDroppedLines:
            "Access log lines dropped because the log's reader fell behind, or lost because a write failed.",
        workerHandoffs:
            "Worker processes that received a handoff and mapped the shared segment since the master started.",
        sharedMetricsOverflow:
            "Metric series dropped because the shared metric table was full or their name and labels too long.",
        rateLimitEvictions:
            "Rate-limit buckets evicted while live because every probed slot of the shared table was live.",
        tlsHandshakeFailures:
            "TLS handshakes that failed: plaintext or garbage on a TLS listener, nothing in common, or a client that left.",
        tlsHandshakes:
            "TLS handshakes that finished on the listeners, by resumed (true: from a session ticket; false: a full handshake).",
        http2StreamResets: "HTTP/2 streams reset by the client (RST_STREAM) before their response ended.",
        http2ConnectionErrors:
            "HTTP/2 connections closed with a GOAWAY error: protocol violations, and rapid reset (kind=rapid_reset).",
        reloadsTotal: "Reloads since the master started, by outcome (ok or failed).",
        reloadPhaseDuration:
            "Time each phase of a reload took, in seconds, by phase (validate, bind, spawn, ready, switch).",
        generations: "Generations of workers the master holds now, by state (starting, serving, draining, failed).",
        workerRestarts:
            "Workers of a serving generation restarted after they died or were killed by the worker watchdog.",
        drainingConnections: "Client connections still open in draining generations.",
        buildInfo: "Always 1: the master's version, and the Swift compiler that built it, as labels.",
    ]

    /// A reload's phases last from microseconds (bind, nothing new) to ready_timeout (10 s by
    /// default): 100 µs to 10 s, a step of about 2.5 each.
    public static let reloadPhaseBuckets: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]
}

import GatewayHTTP
import GatewayIO
import Synchronization
import Tracing

/// The worker's tracer, and which requests it traces: every one whose client sent a
/// well-formed `traceparent` (the tracer's parent-based sampler follows its sampled flag, and
/// the trace goes on upstream either way), and `sampleRatio` of the others, decided here
/// before any tracing work. The tracer samples every trace it is asked to start (swift-otel's
/// `parentbased_always_on`): doing the ratio there would make every unsampled request pay for
/// a span, a context and ids from `SystemRandomNumberGenerator` (a getrandom(2) each) only to
/// drop them; measured at 1 %, that cost 14 % of the proxy's keep-alive throughput
/// (docs/benchmarks.md, "Tracing"). The price: an unsampled request without a `traceparent`
/// goes upstream as with tracing off, with no `traceparent` of ours.
final class RequestTracing: Sendable {
    let tracer: any Tracer
    /// `sampleRatio` of 2^64: a request is sampled when its random draw is below.
    private let threshold: UInt64
    private let alwaysSamples: Bool
    /// splitmix64's state (Vigna): a well-mixed 64-bit draw per request for one atomic add, not
    /// a system call; predictable by nobody who cannot read the worker's memory, and sampling
    /// needs no more.
    private let state = Atomic<UInt64>(UInt64.random(in: .min ... .max))

    init(tracer: any Tracer, sampleRatio: Double) {
        self.tracer = tracer
        self.alwaysSamples = sampleRatio >= 1
        self.threshold = sampleRatio <= 0 ? 0 : UInt64(min(sampleRatio, 1) * 0x1p63) << 1
    }

    /// Whether the request gets spans.
    func traces(_ head: MessageHead, _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        if self.alwaysSamples { return true }
        if let traceparent = RequestHeadExtractor().field(
            "traceparent", in: RequestHeadFields(head: head, bytes: bytes)),
            RequestTrace.isWellFormed(traceparent: UnsafeBufferPointer(rebasing: bytes[traceparent]))
        {
            return true
        }
        return self.samplesNewTrace()
    }

    /// `sampleRatio`'s chance.
    func samplesNewTrace() -> Bool {
        self.alwaysSamples || self.draw() < self.threshold
    }

    private func draw() -> UInt64 {
        var z = self.state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A traced request: its server span, and the client span of the upstream attempt in progress
/// (docs/observability.md, "Tracing"). Made only when `tracing:` is on
/// (`GatewayServices.tracer`); with it off the data path's whole cost is that one nil check
/// per request and a nil `ClientRequest.trace` at each hop.
///
/// Spans go through swift-distributed-tracing's `Tracer`; which tracer is the process's
/// (`TracingBackend`, swift-otel's in an `OTLPTracing` build). Which requests get one:
/// `RequestTracing`. A client's `traceparent` with the sampled flag off gives a span that
/// records nothing but still has a context, so the upstream still gets a `traceparent` (flag
/// 00) that continues the client's trace id.
///
/// Lives on its connection's loop; ending a span hands it to the exporter's tasks, no I/O here.
final class RequestTrace {
    private let tracer: any Tracer
    private let server: any Span
    private var attempt: (any Span)?
    private var attempts = 0
    private let method: String

    init(
        tracer: any Tracer, request: ClientRequest, head: MessageHead, bytes: UnsafeBufferPointer<UInt8>,
        target: RequestTarget.Parsed, peer: ConnectionPeer, secure: Bool
    ) {
        self.tracer = tracer
        self.method = request.methodText
        var context = ServiceContext.topLevel
        let fields = RequestHeadFields(head: head, bytes: bytes)
        // Only a well-formed `traceparent` goes to the propagator: swift-otel logs a warning for
        // each one it cannot read, which any client could use to flood the log.
        if let traceparent = RequestHeadExtractor().field("traceparent", in: fields),
            Self.isWellFormed(traceparent: UnsafeBufferPointer(rebasing: bytes[traceparent]))
        {
            tracer.extract(fields, into: &context, using: RequestHeadExtractor())
        }
        // OpenTelemetry's HTTP server span name is `{method} {route}`; the route's name is what
        // gatewayd routes by.
        let span = tracer.startSpan("\(request.methodText) \(request.route.name)", context: context, ofKind: .server)
        self.server = span
        // An unsampled span keeps nothing: its attributes would be thrown away.
        guard span.isRecording else { return }
        let targetBytes = UnsafeBufferPointer(rebasing: bytes[head.target])
        var attributes = SpanAttributes()
        attributes["http.request.method"] = request.methodText
        attributes["url.scheme"] = secure ? "https" : "http"
        if let rewritten = target.rewrittenPath {
            attributes["url.path"] = String(decoding: rewritten, as: UTF8.self)
        } else {
            attributes["url.path"] = String(decoding: targetBytes[target.path], as: UTF8.self)
        }
        if let query = target.query {
            attributes["url.query"] = String(decoding: targetBytes[query], as: UTF8.self)
        }
        let host =
            target.authority.map { String(decoding: targetBytes[$0], as: UTF8.self) }
            ?? head.host.map { String(decoding: bytes[$0], as: UTF8.self) }
        if let host {
            let (name, port) = Self.split(host)
            attributes["server.address"] = name
            if let port { attributes["server.port"] = port }
        }
        attributes["network.protocol.name"] = "http"
        attributes["network.protocol.version"] = head.isHTTP10 ? "1.0" : "1.1"
        attributes["network.peer.address"] = peer.text
        attributes["client.address"] = request.clientAddress
        if let field = head.first(.userAgent) {
            attributes["user_agent.original"] = String(decoding: bytes[field.valueRange], as: UTF8.self)
        }
        attributes["gatewayd.route"] = request.route.name
        attributes["gatewayd.request_id"] = request.requestID.string
        span.attributes = attributes
    }

    // MARK: Upstream attempts

    /// An attempt begins (a connection is being taken or made): a client span, child of the
    /// server span. The one before, if it never ended, ends now as failed.
    func startAttempt(upstream: String, endpoint: String, address: String, port: UInt16) {
        self.endAttempt(status: nil, error: "retried")
        self.attempts += 1
        let span = self.tracer.startSpan(
            "\(self.method) \(upstream)", context: self.server.context, ofKind: .client)
        self.attempt = span
        guard span.isRecording else { return }
        var attributes = SpanAttributes()
        attributes["http.request.method"] = self.method
        attributes["server.address"] = address
        attributes["server.port"] = Int(port)
        attributes["gatewayd.upstream"] = upstream
        attributes["gatewayd.upstream.endpoint"] = endpoint
        attributes["gatewayd.upstream.attempt"] = self.attempts
        if self.attempts > 1 {
            // OpenTelemetry's name for the resends of one request.
            attributes["http.request.resend_count"] = self.attempts - 1
        }
        span.attributes = attributes
    }

    /// The attempt's span context as the tracer's propagator writes it (W3C: `traceparent`, and
    /// `tracestate` when the trace has one), as field lines of the head going upstream.
    func writeTraceContext(into output: IOBuffer) {
        guard let span = self.attempt else { return }
        var fields = InjectedFields()
        self.tracer.inject(span.context, into: &fields, using: InjectedFieldsInjector())
        fields.write(into: output)
    }

    /// The attempt ended: a response head (`status`), or a failure (`error`, the kind the
    /// `gatewayd_upstream_errors_total` metric counts). Nothing when none is in progress.
    func endAttempt(status: Int?, error: String?) {
        guard let span = self.attempt else { return }
        self.attempt = nil
        if span.isRecording {
            if let status {
                span.attributes["http.response.status_code"] = status
                if status >= 500 { span.setStatus(SpanStatus(code: .error)) }
            }
            if let error {
                span.attributes["error.type"] = error
                span.setStatus(SpanStatus(code: .error))
            }
        }
        span.end()
    }

    // MARK: The request's end

    /// The response is whole, or cut (`aborted`): the server span ends.
    func end(_ request: ClientRequest) {
        self.endAttempt(status: request.upstreamStatus, error: request.upstreamStatus == nil ? "cancelled" : nil)
        let span = self.server
        if span.isRecording {
            span.attributes["http.response.status_code"] = request.status
            if let upstream = request.upstreamName { span.attributes["gatewayd.upstream"] = upstream }
            if request.aborted { span.attributes["gatewayd.aborted"] = true }
            // OpenTelemetry: a server span is an error for 5xx, not for 4xx (the client's).
            if request.status >= 500 {
                span.attributes["error.type"] = String(request.status)
                span.setStatus(SpanStatus(code: .error))
            }
        }
        span.end()
    }

    /// W3C Trace Context's `version-traceid-parentid-flags`: lower-case hex, ids not all zero,
    /// version `ff` invalid; version 00 is exactly 55 bytes, a later one may add `-...` after.
    static func isWellFormed(traceparent value: UnsafeBufferPointer<UInt8>) -> Bool {
        guard value.count == 55 || (value.count > 55 && value[55] == UInt8(ascii: "-")) else { return false }
        func isHex(_ range: Range<Int>) -> Bool {
            value[range].allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
        }
        func isZero(_ range: Range<Int>) -> Bool { value[range].allSatisfy { $0 == 0x30 } }
        let dash = UInt8(ascii: "-")
        guard value[2] == dash, value[35] == dash, value[52] == dash, isHex(0..<2), isHex(3..<35), isHex(36..<52),
            isHex(53..<55), !isZero(3..<35), !isZero(36..<52)
        else { return false }
        let version = (value[0], value[1])
        if version == (0x66, 0x66) { return false }
        return value.count == 55 || version != (0x30, 0x30)
    }

    /// `host[:port]` or `[v6]:port` into the name and the port.
    private static func split(_ host: String) -> (String, Int?) {
        if host.hasPrefix("["), let close = host.lastIndex(of: "]") {
            let name = String(host[host.index(after: host.startIndex)..<close])
            let rest = host[host.index(after: close)...]
            return (name, rest.hasPrefix(":") ? Int(rest.dropFirst()) : nil)
        }
        if let colon = host.lastIndex(of: ":") {
            return (String(host[..<colon]), Int(host[host.index(after: colon)...]))
        }
        return (host, nil)
    }
}

/// A request head, read by field name for the tracer's propagator (swift-otel's asks for
/// `traceparent` and `tracestate`). Sendable because the propagator's protocol wants it; it is
/// only read during `extract`, synchronously on the connection's loop, while the bytes it
/// points into are the input buffer's.
struct RequestHeadFields: @unchecked Sendable, CustomStringConvertible {
    let head: MessageHead
    let bytes: UnsafeBufferPointer<UInt8>

    /// What a propagator's log line shows: never the client's bytes.
    var description: String { "request head" }
}

/// A field's value by name (RFC 9110 names are case-insensitive). Only fields the parser did
/// not recognise (`FieldName.other`) can be trace context.
struct RequestHeadExtractor: Extractor {
    func extract(key: String, from carrier: RequestHeadFields) -> String? {
        self.field(key, in: carrier).map { String(decoding: carrier.bytes[$0], as: UTF8.self) }
    }

    /// Where the first field named `key` has its value.
    func field(_ key: String, in carrier: RequestHeadFields) -> Range<Int>? {
        var key = key
        return key.withUTF8 { wanted in
            for field in carrier.head.fields where field.name == .other {
                if HTTPBytes.equalsIgnoringCase(UnsafeBufferPointer(rebasing: carrier.bytes[field.nameRange]), wanted) {
                    return field.valueRange
                }
            }
            return nil
        }
    }
}

/// What the propagator injects, kept in order and then written as field lines.
struct InjectedFields: Sendable {
    var fields: [(name: String, value: String)] = []

    func write(into output: IOBuffer) {
        for (name, value) in self.fields {
            output.append(name)
            output.append(": ")
            output.append(value)
            output.append("\r\n")
        }
    }
}

struct InjectedFieldsInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout InjectedFields) {
        carrier.fields.append((key, value))
    }
}

extension UpstreamHeadWriter {
    /// The client's `traceparent` or `tracestate`, which a traced request replaces with its
    /// attempt's own (`RequestTrace.writeTraceContext`).
    static func isTraceContext(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        HTTPBytes.equalsIgnoringCase(name, "traceparent") || HTTPBytes.equalsIgnoringCase(name, "tracestate")
    }
}

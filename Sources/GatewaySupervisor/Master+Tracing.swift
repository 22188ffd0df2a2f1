import Foundation
import GatewayConfig
import GatewayCore
import GatewayTracing
import Logging
import Tracing

/// The master's spans (docs/observability.md, "Tracing"): one `gatewayd.reload` per reload with
/// a child per phase (`validate`, `bind`, `spawn`, `ready`, `switch`), and the replaced
/// generation's `drain` as one more child once that drain ends. They are built from the events
/// the master records anyway (`record`), with explicit instants from the event's time and its
/// phases' durations: nothing of tracing runs during a reload.
///
/// The master samples every reload whatever `sample_ratio` says: a reload is rare, and the one
/// that went wrong is the one someone looks for.
final class MasterTracing {
    let backend: TracingBackend
    /// The context of recent successful reloads' spans, by the generation each started: the
    /// drain of generation N belongs to the first reload after it. A few are enough: drains
    /// beyond `max_draining_generations` are cut.
    private var reloads: [(generation: Int, context: ServiceContext)] = []
    static let reloadsKept = 16

    init(backend: TracingBackend) {
        self.backend = backend
    }

    /// `event`'s spans, if it is a reload or a drain.
    func trace(_ event: GatewayEvent) {
        switch event.type {
        case .reload: self.traceReload(event)
        case .drain: self.traceDrain(event)
        default: break
        }
    }

    private func traceReload(_ event: GatewayEvent) {
        let tracer = self.backend.tracer
        let start = WallClockInstant(seconds: event.time)
        let end = WallClockInstant(seconds: event.time + (event.durationMs ?? 0) / 1000)
        let span = tracer.startSpan("gatewayd.reload", context: .topLevel, ofKind: .internal, at: start)
        var attributes = SpanAttributes()
        attributes["gatewayd.reload.trigger"] = event.trigger ?? ""
        attributes["gatewayd.reload.outcome"] = event.outcome?.rawValue ?? "ok"
        attributes["process.pid"] = Int(event.masterPid)
        if let generation = event.generation { attributes["gatewayd.generation"] = generation }
        if let reason = event.reason {
            attributes["gatewayd.reload.reason"] = reason
            span.setStatus(SpanStatus(code: .error, message: reason))
        }
        span.attributes = attributes
        // The phases follow each other without gaps (`ReloadProgress` books the time from one
        // phase's entry to the next), in ReloadPhase's order; a failed reload has those it reached.
        var offset = 0.0
        for phase in ReloadPhase.allCases {
            guard let name = phase.eventName, let ms = event.phases?[name] else { continue }
            let child = tracer.startSpan(
                name, context: span.context, ofKind: .internal,
                at: WallClockInstant(seconds: event.time + offset / 1000))
            child.attributes["gatewayd.reload.phase"] = phase.rawValue
            offset += ms
            child.end(at: WallClockInstant(seconds: event.time + offset / 1000))
        }
        span.end(at: end)
        if event.outcome != .failed, let generation = event.generation {
            self.reloads.append((generation, span.context))
            if self.reloads.count > Self.reloadsKept { self.reloads.removeFirst() }
        }
    }

    private func traceDrain(_ event: GatewayEvent) {
        guard let generation = event.generation,
            let reload = self.reloads.first(where: { $0.generation > generation })
        else { return }
        let span = self.backend.tracer.startSpan(
            "drain", context: reload.context, ofKind: .internal, at: WallClockInstant(seconds: event.time))
        var attributes = SpanAttributes()
        attributes["gatewayd.generation"] = generation
        if let connections = event.connections { attributes["gatewayd.drain.connections"] = connections }
        if let cut = event.cut {
            attributes["gatewayd.drain.cut"] = cut
            span.setStatus(SpanStatus(code: .error, message: event.reason ?? "connections cut"))
        }
        span.attributes = attributes
        span.end(at: WallClockInstant(seconds: event.time + (event.durationMs ?? 0) / 1000))
    }
}

extension Master {
    /// Exports a master's event as spans, starting or replacing the exporter first when the
    /// configuration's `tracing:` changed (a reload that turns tracing on is traced itself).
    func traceEvent(_ event: GatewayEvent) {
        // An event taken over from an older master (an upgrade) was that master's to trace.
        guard event.masterPid == getpid() else { return }
        let wanted = loaded.configuration.tracing.map {
            TracingConfig(otlpEndpoint: $0.otlpEndpoint, sampleRatio: 1, serviceName: $0.serviceName)
        }
        if wanted != tracing?.backend.configuration {
            if let old = tracing?.backend {
                tracing = nil
                Task { await old.shutdown(within: Self.tracingFlushTimeout) }
            }
            if let wanted {
                do {
                    tracing = MasterTracing(backend: try TracingBackend.start(wanted, logger: logger))
                } catch {
                    logger.error("\(error)")
                }
            }
        }
        tracing?.trace(event)
    }

    /// The spans still buffered go out before the master exits.
    func shutdownTracing() async {
        guard let backend = tracing?.backend else { return }
        self.tracing = nil
        await backend.shutdown(within: Self.tracingFlushTimeout)
    }

    /// One export of what is buffered to a collector that answers takes milliseconds; one that
    /// does not must not hold a stopping master much longer than its kill grace (2 s).
    static let tracingFlushTimeout: Duration = .seconds(1)
}

/// A wall-clock time for a span's explicit start or end.
struct WallClockInstant: TracerInstant {
    var nanosecondsSinceEpoch: UInt64

    init(seconds: Double) {
        self.nanosecondsSinceEpoch = UInt64(max(0, seconds) * 1_000_000_000)
    }

    static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch }
}

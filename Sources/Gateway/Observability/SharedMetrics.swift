import CoreMetrics
import GatewayCore
import Synchronization

/// A swift-metrics backend whose values live in the gateway's shared segment: every worker
/// adds to the same counters, and they carry on across reloads. Any worker can render the
/// whole gateway's metrics in the Prometheus text format (`render()`).
///
/// Bootstrap it in the worker, once, after the handoff (`WorkerProcess` does):
///
///     MetricsSystem.bootstrap(sharedState.metrics)
///
/// and never in the master, which writes no metrics (and has no request path to time). Then
/// create metrics once and keep them: `Counter(label: "gatewayd_requests_total", dimensions:
/// [("route", r), ("status", "200")])` costs a hash and a table walk when created (cached per
/// process: creating the same metric again is a dictionary lookup under a lock), and one atomic
/// add per `increment()`.
///
/// What each swift-metrics type becomes:
/// - `Counter`: a Prometheus counter, one shared slot. `reset()` does nothing: the counter
///   belongs to every worker, and one must not zero the others' counts.
/// - `Timer`, and `Recorder` with `aggregate: true`: a histogram with fixed buckets
///   (`defaultBuckets` unless `buckets` names others for that metric). Timers observe seconds,
///   the Prometheus base unit: name them `…_seconds`.
/// - `Gauge` (a `Recorder` without aggregation) and `Meter`: a gauge, kept per worker process
///   and summed over the processes that still run when rendered, so a gauge such as open
///   connections is gateway-wide and a dead worker's share disappears with it.
/// - `FloatingPointCounter`: swift-metrics' default, which rounds into a `Counter`.
///
/// Names and label names are made valid Prometheus names (anything but `[a-zA-Z0-9_:]`
/// becomes `_`); label sets are sorted by name, so the order of `dimensions` does not matter.
/// A series that finds no slot (table full) is dropped and counted in
/// `gatewayd_shared_metrics_overflow_total`.
public final class SharedMetricsFactory: MetricsFactory {
    /// The Prometheus client libraries' default histogram buckets (client_golang's
    /// `prometheus.DefBuckets`; client_python has the same plus 0.075, 0.75 and 7.5): meant for
    /// a network service's latency in seconds, 5 ms to 10 s. Then +Inf.
    public static let defaultBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    public let memory: SharedMemory
    private let buckets: [String: [Double]]
    private let help: [String: String]
    private let owner: ProcessIdentity
    private let handlers = Mutex<[HandlerKey: AnyObject]>([:])

    private struct HandlerKey: Hashable {
        var kind: SharedMetricTable.Kind
        var name: String
        var labels: [SharedMetricTable.Label]
    }

    /// - Parameters:
    ///   - buckets: histogram bucket upper bounds by metric name, for histograms that do not
    ///     measure latency in seconds (at most 254 each; sorted here).
    ///   - help: the `# HELP` text by metric name. Every worker runs the same code, so each
    ///     knows the help of every metric it may render.
    ///   - owner: the process that gauges belong to (tests pass another).
    public init(
        memory: SharedMemory, buckets: [String: [Double]] = [:], help: [String: String] = [:],
        owner: ProcessIdentity = .current
    ) {
        self.memory = memory
        self.buckets = buckets.mapValues { Array(Set($0.filter(\.isFinite)).sorted().prefix(254)) }
        self.help = help.merging(Self.builtInHelp) { mine, _ in mine }
        self.owner = owner
    }

    // MARK: - MetricsFactory

    public func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler {
        handler(.counter, label, dimensions) { name, labels in
            SharedCounter(slot: memory.metricTable.slot(for: .init(kind: .counter, name: name, labels: labels)))
        }
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        aggregate ? makeHistogram(label, dimensions) : makeGauge(label, dimensions)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> MeterHandler {
        makeGauge(label, dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler {
        makeHistogram(label, dimensions)
    }

    // Slots are never freed by a destroy: another worker may use the same series.
    public func destroyCounter(_ handler: CounterHandler) {}
    public func destroyMeter(_ handler: MeterHandler) {}
    public func destroyRecorder(_ handler: RecorderHandler) {}
    public func destroyTimer(_ handler: TimerHandler) {}

    private func makeGauge(_ label: String, _ dimensions: [(String, String)]) -> SharedGauge {
        handler(.gauge, label, dimensions) { name, labels in
            SharedGauge(
                slot: memory.metricTable.slot(for: .init(kind: .gauge, name: name, labels: labels, owner: owner)))
        }
    }

    private func makeHistogram(_ label: String, _ dimensions: [(String, String)]) -> SharedHistogram {
        handler(.histogramBucket, label, dimensions) { name, labels in
            // `le` is the histogram's own label.
            let labels = labels.map { $0.name == "le" ? SharedMetricTable.Label("le_", $0.value) : $0 }
            let bounds = buckets[name] ?? buckets[label] ?? Self.defaultBuckets
            let table = memory.metricTable
            var slots: [SharedMetricSlot?] = []
            for (index, bound) in (bounds + [.infinity]).enumerated() {
                let le = SharedMetricTable.Label("le", PrometheusText.format(bound))
                slots.append(
                    table.slot(for: .init(kind: .histogramBucket, name: name, labels: labels + [le], bucket: index)))
            }
            let sum = table.slot(for: .init(kind: .histogramSum, name: name, labels: labels))
            return SharedHistogram(bounds: bounds, buckets: slots, sum: sum)
        }
    }

    /// The process's one handler for a series, made on first use.
    private func handler<H: AnyObject>(
        _ kind: SharedMetricTable.Kind, _ label: String, _ dimensions: [(String, String)],
        make: (String, [SharedMetricTable.Label]) -> H
    ) -> H {
        let name = PrometheusText.sanitize(label, allowColon: true)
        let labels = dimensions.map { SharedMetricTable.Label(PrometheusText.sanitize($0.0, allowColon: false), $0.1) }
            .sorted { ($0.name, $0.value) < ($1.name, $1.value) }
        let key = HandlerKey(kind: kind, name: name, labels: labels)
        return handlers.withLock { handlers in
            if let existing = handlers[key] as? H { return existing }
            let made = make(name, labels)
            handlers[key] = made
            return made
        }
    }

    // MARK: - Rendering

    /// Every family's help, the master's included (it writes into the same table).
    static let builtInHelp = MetricCatalog.help

    /// The whole gateway's metrics in the Prometheus text exposition format (version 0.0.4,
    /// `Content-Type: text/plain; version=0.0.4`): families sorted by name, each with `# HELP`
    /// (when known) and `# TYPE`, series sorted by their labels, histogram buckets by bound.
    /// Reads every slot of the segment, and frees the gauge slots of processes that are gone.
    public func render() -> String {
        var families: [String: PrometheusText.Family] = [:]
        for entry in memory.metricTable.entries(reclaimingDeadOwners: true) {
            families[entry.series.name, default: PrometheusText.Family(name: entry.series.name)].add(entry)
        }
        for (name, value) in [
            (MetricCatalog.sharedMetricsOverflow, memory.metricOverflows),
            (MetricCatalog.rateLimitEvictions, memory.rateEvictions),
        ] {
            families[name, default: PrometheusText.Family(name: name)].add(
                .init(series: .init(kind: .counter, name: name), value: value))
        }
        var text = ""
        for name in families.keys.sorted() {
            families[name]!.render(help: help[name], into: &text)
        }
        return text
    }
}

// MARK: - Handlers

/// `@unchecked Sendable`: immutable, and the slot is updated with atomics only.
final class SharedCounter: CounterHandler, @unchecked Sendable {
    let slot: SharedMetricSlot?

    init(slot: SharedMetricSlot?) {
        self.slot = slot
    }

    func increment(by amount: Int64) {
        guard amount > 0 else { return }
        slot?.add(UInt64(amount))
    }

    /// A no-op: see `SharedMetricsFactory`.
    func reset() {}
}

/// This process's share of a gauge.
final class SharedGauge: RecorderHandler, MeterHandler, @unchecked Sendable {
    let slot: SharedMetricSlot?

    init(slot: SharedMetricSlot?) {
        self.slot = slot
    }

    func record(_ value: Int64) { slot?.storeDouble(Double(value)) }
    func record(_ value: Double) { slot?.storeDouble(value) }
    func set(_ value: Int64) { slot?.storeDouble(Double(value)) }
    func set(_ value: Double) { slot?.storeDouble(value) }
    func increment(by amount: Double) { slot?.addDouble(amount) }
    func decrement(by amount: Double) { slot?.addDouble(-amount) }
}

/// A histogram: one count per bucket (not cumulative; the renderer adds them up) and a sum.
/// An observation costs one atomic add and one CAS loop.
final class SharedHistogram: RecorderHandler, TimerHandler, @unchecked Sendable {
    let bounds: [Double]
    /// `bounds.count + 1` slots, the last for +Inf.
    let buckets: [SharedMetricSlot?]
    let sum: SharedMetricSlot?

    init(bounds: [Double], buckets: [SharedMetricSlot?], sum: SharedMetricSlot?) {
        self.bounds = bounds
        self.buckets = buckets
        self.sum = sum
    }

    func record(_ value: Int64) { record(Double(value)) }

    func record(_ value: Double) {
        guard !value.isNaN else { return }
        var index = 0
        while index < bounds.count && value > bounds[index] { index += 1 }
        buckets[index]?.add(1)
        sum?.addDouble(value)
    }

    /// In seconds, the Prometheus base unit.
    func recordNanoseconds(_ duration: Int64) {
        record(Double(duration) / 1e9)
    }
}

// MARK: - Prometheus text format

enum PrometheusText {
    /// One metric family as read from the table: its series merged by labels (a series may
    /// have several slots, and gauges have one per live process: they add up).
    struct Family {
        var name: String
        var kind: SharedMetricTable.Kind?
        var counts: [[SharedMetricTable.Label]: UInt64] = [:]
        var values: [[SharedMetricTable.Label]: Double] = [:]
        /// Histograms by their labels without `le`: bucket index → (le, count), and the sum.
        var histograms: [[SharedMetricTable.Label]: (buckets: [Int: (le: String, count: UInt64)], sum: Double)] =
            [:]

        init(name: String) {
            self.name = name
        }

        mutating func add(_ entry: SharedMetricTable.Entry) {
            let series = entry.series
            let familyKind: SharedMetricTable.Kind = series.kind == .histogramSum ? .histogramBucket : series.kind
            // A name used with two types: the first type read wins, the other is left out.
            if kind == nil { kind = familyKind }
            guard kind == familyKind else { return }
            switch series.kind {
            case .counter:
                counts[series.labels, default: 0] &+= entry.value
            case .gauge:
                values[series.labels, default: 0] += entry.doubleValue
            case .histogramBucket:
                guard let le = series.labels.last, le.name == "le" else { return }
                let key = Array(series.labels.dropLast())
                var histogram = histograms[key] ?? ([:], 0)
                let previous = histogram.buckets[series.bucket]?.count ?? 0
                histogram.buckets[series.bucket] = (le.value, previous &+ entry.value)
                histograms[key] = histogram
            case .histogramSum:
                histograms[series.labels, default: ([:], 0)].sum += entry.doubleValue
            }
        }

        func render(help: String?, into text: inout String) {
            guard let kind else { return }
            if let help { text += "# HELP \(name) \(escapeHelp(help))\n" }
            switch kind {
            case .counter:
                text += "# TYPE \(name) counter\n"
                for (labels, value) in counts.sorted(by: { labelText($0.key) < labelText($1.key) }) {
                    text += "\(name)\(labelText(labels)) \(value)\n"
                }
            case .gauge:
                text += "# TYPE \(name) gauge\n"
                for (labels, value) in values.sorted(by: { labelText($0.key) < labelText($1.key) }) {
                    text += "\(name)\(labelText(labels)) \(format(value))\n"
                }
            case .histogramBucket, .histogramSum:
                text += "# TYPE \(name) histogram\n"
                for (labels, histogram) in histograms.sorted(by: { labelText($0.key) < labelText($1.key) }) {
                    var cumulative: UInt64 = 0
                    for index in histogram.buckets.keys.sorted() {
                        let bucket = histogram.buckets[index]!
                        cumulative &+= bucket.count
                        let withLe = labels + [SharedMetricTable.Label("le", bucket.le)]
                        text += "\(name)_bucket\(labelText(withLe)) \(cumulative)\n"
                    }
                    text += "\(name)_sum\(labelText(labels)) \(format(histogram.sum))\n"
                    text += "\(name)_count\(labelText(labels)) \(cumulative)\n"
                }
            }
        }
    }

    /// `{a="1",b="2"}`, or nothing without labels. Values escaped as the format says:
    /// backslash, double quote and line feed.
    static func labelText(_ labels: [SharedMetricTable.Label]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.map { "\($0.name)=\"\(escapeLabelValue($0.value))\"" }.joined(separator: ",") + "}"
    }

    static func escapeLabelValue(_ value: String) -> String {
        var escaped = ""
        for character in value.unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }

    /// HELP text escapes backslash and line feed (not quotes).
    static func escapeHelp(_ help: String) -> String {
        help.replacing("\\", with: "\\\\").replacing("\n", with: "\\n")
    }

    /// A sample value or bucket bound: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label name (no colon): every other
    /// character becomes `_`, and a leading digit gets a `_` before it.
    static func sanitize(_ name: String, allowColon: Bool) -> String {
        var result = ""
        for scalar in name.unicodeScalars {
            let valid =
                (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
                || scalar == "_" || (allowColon && scalar == ":")
            result.unicodeScalars.append(valid ? scalar : "_")
        }
        if let first = result.unicodeScalars.first, first >= "0" && first <= "9" { result = "_" + result }
        return result.isEmpty ? "_" : result
    }
}

import GatewayCore

/// The master's metric series, written into the shared segment's metric table beside the
/// workers' (`MetricCatalog`): reloads by outcome and their phases' durations, worker
/// restarts, generations by state, connections still draining, and the build. Whichever worker
/// renders `/metrics` reads them with the rest. The master only writes: it reads nothing a
/// worker wrote except the slot headers it walks to find its own slots (bounded probing; a
/// worker that fills the table makes the master's series drop, counted as overflows, as anyone
/// else's). Counters are shared slots, so they carry on across an upgrade, whose new master
/// finds the same ones; gauges belong to this process (its pid and start time) and vanish
/// from the rendering when it exits.
///
/// Used on the master's actor only.
final class MasterMetrics {
    private let table: SharedMetricTable
    private let owner = ProcessIdentity.current
    private var reloads: [GatewayEvent.Outcome: SharedMetricSlot] = [:]
    private var phases: [String: (buckets: [SharedMetricSlot?], sum: SharedMetricSlot?)] = [:]
    private var generations: [GenerationState: SharedMetricSlot] = [:]
    private let restarts: SharedMetricSlot?
    private let draining: SharedMetricSlot?

    init(memory: SharedMemory) {
        table = memory.metricTable
        restarts = table.slot(for: .init(kind: .counter, name: MetricCatalog.workerRestarts))
        draining = table.slot(for: .init(kind: .gauge, name: MetricCatalog.drainingConnections, owner: owner))
        for outcome in GatewayEvent.Outcome.allCases {
            reloads[outcome] = table.slot(
                for: .init(
                    kind: .counter, name: MetricCatalog.reloadsTotal, labels: [.init("outcome", outcome.rawValue)]))
        }
        for state in GenerationState.allCases {
            generations[state] = table.slot(
                for: .init(
                    kind: .gauge, name: MetricCatalog.generations, labels: [.init("state", state.rawValue)],
                    owner: owner))
        }
        let build = table.slot(
            for: .init(
                kind: .gauge, name: MetricCatalog.buildInfo,
                labels: [.init("swift_version", Self.swiftVersion), .init("version", GatewayVersion.current)],
                owner: owner))
        build?.storeDouble(1)
    }

    /// An event the metrics count: a reload (by outcome, and its phases), a worker restart.
    func count(_ event: GatewayEvent) {
        switch event.type {
        case .reload:
            reloads[event.outcome ?? .failed]?.add(1)
            for (phase, milliseconds) in event.phases ?? [:] { observe(phase: phase, seconds: milliseconds / 1000) }
        case .workerRestart:
            restarts?.add(1)
        default:
            break
        }
    }

    /// The gauges, from the generations as they are now.
    func sample(_ generations: some Collection<Generation>) {
        for (state, slot) in self.generations {
            slot.storeDouble(Double(generations.filter { $0.state == state }.count))
        }
        let draining = generations.filter { $0.state == .draining }.map(\.connectionCount).saturatingSum()
        self.draining?.storeDouble(Double(draining))
    }

    /// A histogram as the workers' `SharedHistogram` writes one: a count per bucket (the
    /// renderer makes them cumulative), `le` last among the labels, and a sum.
    private func observe(phase: String, seconds: Double) {
        let bounds = MetricCatalog.reloadPhaseBuckets
        if phases[phase] == nil {
            let name = MetricCatalog.reloadPhaseDuration
            let labels = [SharedMetricTable.Label("phase", phase)]
            let buckets = (bounds + [.infinity]).enumerated().map { index, bound in
                table.slot(
                    for: .init(
                        kind: .histogramBucket, name: name, labels: labels + [.init("le", Self.format(bound))],
                        bucket: index))
            }
            phases[phase] = (buckets, table.slot(for: .init(kind: .histogramSum, name: name, labels: labels)))
        }
        guard let histogram = phases[phase], !seconds.isNaN else { return }
        let index = bounds.firstIndex { seconds <= $0 } ?? bounds.count
        histogram.buckets[index]?.add(1)
        histogram.sum?.addDouble(seconds)
    }

    /// A bucket bound as Prometheus writes it: `1`, `2.5`, `+Inf`.
    private static func format(_ bound: Double) -> String {
        if bound.isInfinite { return "+Inf" }
        return bound == bound.rounded() ? String(Int64(bound)) : "\(bound)"
    }

    static let swiftVersion: String = {
        #if swift(>=6.3)
            return "6.3"
        #elseif swift(>=6.2)
            return "6.2"
        #elseif swift(>=6.1)
            return "6.1"
        #else
            return "6.0"
        #endif
    }()
}

import Foundation
import GatewayCore

/// `/status` on the admin listener is served by the workers, but only the master knows what
/// it shows: it sends them a `StatusSnapshot` (the handoff protocol's `status_page` frame)
/// whenever it changed, from the worker watchdog's tick (every 0.5 s) and after each event.
/// Only workers of a generation with an admin listener get it, each once per change.
extension Master {
    func publishStatusPage() {
        let serving = generations.values.filter { $0.loaded.configuration.admin != nil }
        guard !serving.isEmpty else { return }
        var snapshot = StatusSnapshot(
            status: statusReport(), events: Array(history.events.suffix(StatusSnapshot.eventCount)),
            logLevels: LiveLogLevels.all, time: 0)
        if snapshot != lastStatusSnapshot {
            lastStatusSnapshot = snapshot
            statusSnapshotVersion += 1
        }
        snapshot.time = Date().timeIntervalSince1970
        for generation in serving {
            for worker in generation.liveWorkers
            where worker.reportedReady && worker.statusSnapshotVersion != statusSnapshotVersion {
                worker.statusSnapshotVersion = statusSnapshotVersion
                worker.send(.statusPage(snapshot), logger: logger)
            }
        }
    }
}

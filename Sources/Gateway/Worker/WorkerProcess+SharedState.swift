import CoreMetrics
import GatewayCore

extension WorkerProcess {
    /// Maps the shared segment the master handed over, as the master described it (and closes
    /// the fd: the mapping stays), and makes it this process's metrics backend. Throws a
    /// `SharedMemoryError` that names what is wrong; the worker then reports `failed`.
    static func attachSharedState(descriptor: CInt, handoff: SharedMemory.Handoff) throws -> SharedState {
        defer { closeDescriptor(descriptor) }
        let state = SharedState(memory: try SharedMemory.map(descriptor: descriptor, handoff: handoff))
        // Once per process, and only in workers: the master writes no metrics.
        MetricsSystem.bootstrap(state.metrics)
        Counter(label: "gatewayd_worker_handoffs_total").increment()
        return state
    }
}

/// The master's vocabulary: where the master, its generations, its workers, a reload and an
/// upgrade stand. One enum each, read alike by `status` (their raw values are what the control
/// protocol sends), by the logs and by the tests, instead of strings written in each place.
///
/// Adding a case changes what `status` may say: clients must take an unknown value as a
/// reason to update, and docs/control-protocol.md lists the values.

/// The master process's lifecycle.
public enum MasterState: String, Codable, Sendable, CaseIterable {
    /// Binding, starting generation 1 (or taking over from an old master: `run(takingOver:)`).
    case starting
    case running
    /// Draining every generation; the master exits when the last worker is gone.
    case stopping
    /// SIGTERM sent to every worker; the master exits when they are gone or killed. The raw
    /// value is what `status` has always said.
    case stoppingNow
    /// Upgraded: a new master owns the sockets, the control socket and systemd's main pid.
    /// This one drains its generations and exits, and touches nothing it handed over.
    case handedOver = "handed_over"
    case stopped
}

/// One generation of workers (`Generation`).
public enum GenerationState: String, Codable, Sendable, CaseIterable {
    /// Workers spawned, waiting for all of them to be ready.
    case starting
    case serving
    case draining
    /// Failed to start; its workers are being stopped.
    case failed
}

/// One worker process, as its master sees it (`Worker`).
public enum WorkerState: String, Codable, Sendable, CaseIterable {
    /// Spawned, handoff sent, not ready yet.
    case starting
    case ready
    /// Told to drain; whether it has confirmed that it stopped accepting is tracked apart.
    case draining
    /// SIGTERM sent (drain timeout, or stopped early).
    case terminating
    case exited
}

/// Where a reload stands (docs/reload.md, "The phases"). The log's timings and
/// `gatewayctl reload`'s are per phase, named after these.
public enum ReloadPhase: String, Codable, Sendable, CaseIterable {
    case idle
    /// Reading and validating the config file.
    case validating
    /// Binding listeners the new config adds.
    case binding
    /// Starting the new generation's workers and handing them their config and fds.
    case spawning
    /// Waiting for every new worker to report ready (at most ready_timeout).
    case waitingForReady = "waiting_for_ready"
    /// Telling the old generation to stop accepting, and waiting until it has.
    case switching
}

/// Where an upgrade of the master itself stands, seen from the old master (docs/reload.md,
/// "Upgrading gatewayd itself"). Each phase but the last ends with a frame of the upgrade
/// protocol (`UpgradeProtocol.swift`).
public enum UpgradePhase: String, Codable, Sendable, CaseIterable {
    case idle
    /// The new binary was started; waiting for its `hello`.
    case starting
    /// Sending it the sockets, the shared segment, the control socket and the state.
    case handingOver = "handing_over"
    /// It validates the config and starts its first generation; waiting for `ready`.
    case waitingForNewMaster = "waiting_for_new_master"
    /// Handing over the control socket and systemd's main pid; the old generations stop
    /// accepting.
    case switching
}

import GatewayCore
import Logging

/// The live log level (`gatewayctl log-level`): the master's own, and every worker's of every
/// live generation, over their channels, with no reload and no new process. Workers started
/// later (restarts, new generations, spares at their handoff) get the levels of the moment in
/// their `hello`. The config has no log level, so a reload never changes it; an upgrade's new
/// master starts at its command line's `--log-level`.
extension Master {
    /// Sets `level` for `target`, or for every target when nil, here and in every live worker,
    /// and records the change. Returns every target's level after it.
    func setLogLevel(
        _ level: Logger.Level, for target: LogTarget?, trigger: String, peerUID: UInt32?
    ) -> [String: String] {
        for each in target.map({ [$0] }) ?? LogTarget.allCases { LiveLogLevels.set(level, for: each) }
        let levels = LiveLogLevels.all
        var reached = 0
        for generation in generations.values {
            for worker in generation.liveWorkers {
                worker.send(.logLevels(levels), logger: logger)
                reached += 1
            }
        }
        logger.notice(
            "log level \(level.rawValue) for \(target?.rawValue ?? "every target")",
            metadata: ["trigger": "\(trigger)", "workers": "\(reached)"])
        var event = newEvent(.logLevel)
        event.level = level.rawValue
        event.target = target?.rawValue ?? "all"
        event.trigger = trigger
        event.peerUID = peerUID
        event.outcome = .ok
        record(event)
        return levels
    }
}

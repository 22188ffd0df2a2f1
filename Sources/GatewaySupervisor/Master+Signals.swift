import Logging
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

extension Master {
    /// SIGHUP reloads; SIGUSR2 upgrades the master itself (nginx's signal for it) to the
    /// binary it was started from; SIGTERM or SIGINT stops gracefully, and a second one stops
    /// at once, as does one that arrives while a graceful stop (`gatewayctl stop`) is already
    /// draining. Runs until the master has stopped.
    public func handleSignals() async {
        // A worker that died leaves a broken channel; writes to it must fail, not kill us.
        signal(SIGPIPE, SIG_IGN)
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigterm, .sigint, .sigusr2)
        for await received in signals {
            switch received {
            case .sighup:
                Task {
                    switch await self.reload(trigger: "SIGHUP") {
                    case .succeeded: break
                    case .failed: break  // already logged by the reload
                    }
                }
            case .sigusr2:
                // Its outcome, or why it was refused, is in the log.
                Task { _ = await self.upgrade(trigger: "SIGUSR2") }
            case .sigterm, .sigint:
                // Counted here, synchronously: two signals in a row escalate even if the
                // first stop has not begun yet.
                stopSignals += 1
                let escalate = stopSignals > 1 || state == .stopping
                logger.info("received \(received)\(escalate ? " again: stopping now" : "")")
                Task { await self.stop(now: escalate, trigger: "\(received)") }
            default:
                break
            }
            if state == .stopped { return }
        }
    }
}

#if GATEWAYD_FAULT_INJECTION
    import Foundation

    #if canImport(Glibc)
        import Glibc
    #endif

    // Test builds only. `make test` compiles with `-DGATEWAYD_FAULT_INJECTION`; `make release`,
    // `make run` and every package build do not, so nothing here is reachable from a
    // production config, however it is written.
    //
    // A fault is chosen by a comment line in the config bytes the worker was handed:
    //
    //     # gatewayd-fault: exit-before-ready            every worker of this generation
    //     # gatewayd-fault: exit-before-ready worker=1   only worker 1
    //     # gatewayd-fault: hang-before-ready            never says ready (ready_timeout)
    //     # gatewayd-fault: exit-after-ready=300ms       serves, then dies 300 ms later
    //     # gatewayd-fault: hostile=fd-flood worker=1    a compromised worker after its
    //                                                    handoff (WorkerProcess+HostileWorker.swift)
    //
    // Keyed to the config, not to the environment, so that it follows one generation: a
    // reload to a config without the line is a reload to a good config, which is how a
    // crash-looping generation is healed in production too.
    extension WorkerProcess {
        enum InjectedFault: Equatable {
            case exitBeforeReady
            case hangBeforeReady
            case exitAfterReady(milliseconds: Int)
            case hostile(HostileBehavior)
        }

        /// Exit status of an injected crash: not 0 or 1, so a test can tell it from a worker's
        /// own clean exit or reported failure.
        static let injectedExitStatus: Int32 = 3

        static func injectedFault(config: [UInt8], worker: Int) -> InjectedFault? {
            let marker = "# gatewayd-fault:"
            for line in String(decoding: config, as: UTF8.self).split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard trimmed.hasPrefix(marker) else { continue }
                let words = trimmed.dropFirst(marker.count).split(separator: " ")
                guard let name = words.first else { continue }
                if let target = words.dropFirst().first(where: { $0.hasPrefix("worker=") }),
                    Int(target.dropFirst("worker=".count)) != worker
                {
                    continue
                }
                switch name {
                case "exit-before-ready": return .exitBeforeReady
                case "hang-before-ready": return .hangBeforeReady
                case let name where name.hasPrefix("hostile="):
                    if let behavior = HostileBehavior(rawValue: String(name.dropFirst("hostile=".count))) {
                        return .hostile(behavior)
                    }
                case let name where name.hasPrefix("exit-after-ready="):
                    let value = name.dropFirst("exit-after-ready=".count).replacingOccurrences(of: "ms", with: "")
                    if let milliseconds = Int(value) { return .exitAfterReady(milliseconds: milliseconds) }
                default: break
                }
            }
            return nil
        }

        /// Called after the handoff and before the worker serves.
        static func injectFaultBeforeReady(_ fault: InjectedFault?) {
            switch fault {
            case .exitBeforeReady:
                _exit(injectedExitStatus)
            case .hangBeforeReady:
                // Like a deadlock: SIGTERM is watched but nothing acts on it, so only the
                // master's SIGKILL ends this worker.
                while true { pause() }
            case .exitAfterReady, .hostile, nil:
                return
            }
        }

        /// Called right after the worker reported ready.
        static func injectFaultAfterReady(_ fault: InjectedFault?) {
            guard case .exitAfterReady(let milliseconds) = fault else { return }
            Thread.detachNewThread {
                usleep(useconds_t(milliseconds) * 1000)
                _exit(injectedExitStatus)
            }
        }
    }
#endif

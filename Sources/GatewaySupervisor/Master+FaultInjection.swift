#if GATEWAYD_FAULT_INJECTION
    import GatewayConfig

    // Test builds only (`make test` compiles with -DGATEWAYD_FAULT_INJECTION), as the worker's
    // faults (Sources/Gateway/WorkerProcess+FaultInjection.swift), and chosen the same way: a
    // comment line in the config the new master validated:
    //
    //     # gatewayd-fault: takeover-delay=800ms   the new master of an upgrade waits this long
    //                                              between its generation's ready and telling
    //                                              the old master, which holds the upgrade open
    //                                              for requests that must arrive during it
    extension Master {
        static func injectedTakeoverDelay(_ loaded: LoadedConfiguration) -> Duration? {
            let marker = "# gatewayd-fault: takeover-delay="
            for line in String(decoding: loaded.bytes, as: UTF8.self).split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard trimmed.hasPrefix(marker) else { continue }
                return DurationText.parse(String(trimmed.dropFirst(marker.count)))
            }
            return nil
        }
    }
#endif

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
    //     # gatewayd-fault: ticket-key-rotation=2s   rotates the TLS session ticket keys this
    //                                              often instead of hourly, so that a test sees
    //                                              a ticket outlive its key in seconds
    extension Master {
        static func injectedTakeoverDelay(_ loaded: LoadedConfiguration) -> Duration? {
            injectedDuration(loaded, "takeover-delay")
        }

        static func injectedTicketKeyRotation(_ loaded: LoadedConfiguration) -> Duration? {
            injectedDuration(loaded, "ticket-key-rotation")
        }

        private static func injectedDuration(_ loaded: LoadedConfiguration, _ name: String) -> Duration? {
            let marker = "# gatewayd-fault: \(name)="
            for line in String(decoding: loaded.bytes, as: UTF8.self).split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard trimmed.hasPrefix(marker) else { continue }
                return DurationText.parse(String(trimmed.dropFirst(marker.count)))
            }
            return nil
        }
    }
#endif

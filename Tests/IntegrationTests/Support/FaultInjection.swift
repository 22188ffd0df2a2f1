import Testing

/// Whether this test build has the worker's fault injection (`make test` compiles it in with
/// `-Xswiftc -DGATEWAYD_FAULT_INJECTION`; Sources/Gateway/WorkerProcess+FaultInjection.swift).
enum FaultInjection {
    #if GATEWAYD_FAULT_INJECTION
        static let compiledIn = true
    #else
        static let compiledIn = false
    #endif

    /// Fails (never skips) when the build lacks fault injection: a test that silently passes
    /// without testing anything is worse than one that says how to run it.
    static func require(sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(
            compiledIn, "this build has no fault injection: run `make test` (-Xswiftc -DGATEWAYD_FAULT_INJECTION)",
            sourceLocation: sourceLocation)
    }
}

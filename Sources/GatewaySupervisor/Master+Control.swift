import GatewayCore

extension Master {
    /// Answers one control request (`ControlProtocol`).
    func handle(_ request: ControlRequest) async -> ControlResponse {
        switch request.command {
        case .status:
            return ControlResponse(ok: true, status: statusReport())
        case .reload:
            if request.wait == false {
                guard state == .running || state == .handedOver else {
                    return .failure("gatewayd is \(state == .starting ? "still starting" : "stopping")")
                }
                Task { _ = await self.reload(trigger: "control socket (no wait)") }
                return ControlResponse(ok: true, accepted: true)
            }
            switch await reload(trigger: "control socket") {
            case .succeeded(let generation, let timings):
                return ControlResponse(ok: true, generation: generation, timings: timings)
            case .failed(let reason, let details):
                return .failure(reason, details: details.isEmpty ? nil : details)
            }
        case .stop:
            // Accepted here just before the upgrade handed over: the caller means the gateway,
            // which the new master is now.
            if state == .handedOver { return await forwardToSuccessor(request) }
            let now = request.now ?? false
            Task { await self.stop(now: now) }
            return ControlResponse(ok: true, accepted: true)
        case .upgrade:
            switch await upgrade(binary: request.binary, trigger: "control socket") {
            case .succeeded(let pid, let version, let generation):
                return ControlResponse(ok: true, generation: generation, masterPid: pid, masterVersion: version)
            case .failed(let reason, let details):
                return .failure(reason, details: details.isEmpty ? nil : details)
            }
        }
    }
}

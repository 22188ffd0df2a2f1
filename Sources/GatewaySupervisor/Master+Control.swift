import GatewayCore

extension Master {
    /// Answers one control request (`ControlProtocol`).
    func handle(_ request: ControlRequest) async -> ControlResponse {
        switch request.command {
        case .status:
            return ControlResponse(ok: true, status: statusReport())
        case .reload:
            if request.wait == false {
                guard state == .running else {
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
            let now = request.now ?? false
            Task { await self.stop(now: now) }
            return ControlResponse(ok: true, accepted: true)
        }
    }
}

import GatewayCore
import Logging

extension Master {
    /// Answers one control request (`ControlProtocol`) from `peer`. Stream lines go to `emit`
    /// as they come (a reload's phases before the response; events after it, for a
    /// follower). nil: no response line, the connection just closes (a follower whose client
    /// left, or whose master ends).
    func handle(
        _ request: ControlRequest, from peer: ControlPeer?, emit: @escaping @Sendable (ControlLine) -> Void
    ) async -> ControlResponse? {
        let trigger = peer?.trigger ?? "control socket"
        switch request.command {
        case .status:
            return ControlResponse(ok: true, status: statusReport())
        case .reload:
            if request.wait == false {
                guard state == .running || state == .handedOver else {
                    return .failure("gatewayd is \(state == .starting ? "still starting" : "stopping")")
                }
                Task { _ = await self.reload(trigger: "\(trigger), no wait", peerUID: peer?.uid) }
                return ControlResponse(ok: true, accepted: true)
            }
            var progress: (@Sendable (ControlStreamLine.Phase) -> Void)?
            if request.progress == true {
                progress = { phase in emit(.stream(ControlStreamLine(phase: phase))) }
            }
            switch await reload(trigger: trigger, peerUID: peer?.uid, progress: progress) {
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
            Task { await self.stop(now: now, trigger: trigger, peerUID: peer?.uid) }
            return ControlResponse(ok: true, accepted: true)
        case .upgrade:
            switch await upgrade(binary: request.binary, trigger: trigger) {
            case .succeeded(let pid, let version, let generation):
                return ControlResponse(ok: true, generation: generation, masterPid: pid, masterVersion: version)
            case .failed(let reason, let details):
                return .failure(reason, details: details.isEmpty ? nil : details)
            }
        case .events:
            guard request.follow == true else {
                return ControlResponse(ok: true, events: events(since: request.since))
            }
            let (backlog, stream) = follow(since: request.since)
            emit(.response(ControlResponse(ok: true, events: backlog)))
            for await line in stream { emit(.stream(line)) }
            return nil
        case .logLevel:
            guard let name = request.level else { return ControlResponse(ok: true, logLevels: LiveLogLevels.all) }
            guard let level = Logger.Level(rawValue: name) else {
                let known = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                return .failure("unknown log level '\(name)' (known levels: \(known))")
            }
            var target: LogTarget?
            if let targetName = request.target {
                guard let known = LogTarget(rawValue: targetName) else {
                    let names = LogTarget.allCases.map(\.rawValue).joined(separator: ", ")
                    return .failure("unknown log target '\(targetName)' (known targets: \(names))")
                }
                target = known
            }
            if state == .handedOver { return await forwardToSuccessor(request) }
            let levels = setLogLevel(level, for: target, trigger: trigger, peerUID: peer?.uid)
            return ControlResponse(ok: true, logLevels: levels)
        }
    }
}

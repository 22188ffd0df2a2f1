import GatewayCore
import Logging

/// The `proxy` log target: a worker's connections and requests step by step (accepted,
/// routed, the upstream chosen, answered), at `debug` only, so that `gatewayctl log-level
/// debug --target proxy` shows at once what a worker is doing. Above debug it costs the data
/// path one relaxed atomic load per step (`enabled`), and builds no message.
enum ProxyLog {
    static let logger = Logger(label: LogTarget.proxy.label)

    static var enabled: Bool { LiveLogLevels.level(of: .proxy) <= .debug }

    /// Logs one step when the proxy target is at debug; `metadata` is only built then.
    static func step(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> Logger.Metadata) {
        guard enabled else { return }
        logger.debug("\(message())", metadata: metadata())
    }
}

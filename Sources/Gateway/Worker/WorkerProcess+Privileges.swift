import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

extension WorkerProcess {
    /// Runs the worker as `user:`/`group:` when it starts as root: called after the handoff
    /// (the sockets were bound by the master, so ports below 1024 work) and after the access
    /// log is open, before the first request. Returns the reason to report as `failed` (the
    /// call and the account, e.g. `setuid 65534 (nobody): Operation not permitted`), or nil.
    ///
    /// Not root: the master warned once at start (as nginx does); the worker runs as it is.
    static func dropPrivileges(_ configuration: GatewayConfiguration, logger: Logger) -> String? {
        guard let user = configuration.user, geteuid() == 0 else { return nil }
        do {
            let account = try WorkerAccount.resolve(user: user, group: configuration.group)
            try account.apply()
            logger.debug("running as \(account)", metadata: ["gid": "\(account.gid)"])
            return nil
        } catch {
            return error.description
        }
    }
}

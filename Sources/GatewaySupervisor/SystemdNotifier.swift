import CSystemd

#if canImport(Glibc)
    import Glibc
#endif

/// sd_notify(3) through libsystemd. With NOTIFY_SOCKET unset, libsystemd does nothing, so
/// this is silently off outside systemd.
struct SystemdNotifier: Sendable {
    /// Says nothing while set: a master that is not (or no longer) the service's main process
    /// would only have its messages refused under NotifyAccess=main, and logged by systemd.
    var muted = false

    func ready(status: String) {
        send("READY=1\nMAINPID=\(getpid())\nSTATUS=\(status)")
    }

    /// systemd's notify-reload protocol wants the time the reload started, so it can tell
    /// this reload's READY=1 from an earlier one.
    func reloading(status: String) {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let usec = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
        send("RELOADING=1\nMONOTONIC_USEC=\(usec)\nSTATUS=\(status)")
    }

    /// An upgrade: the main process names its successor, which systemd then takes as the main
    /// process (for `systemctl status`, `reload`, `stop`, and the notifications it accepts
    /// under NotifyAccess=main). systemd accepts it from the main process for a pid of the
    /// service's own cgroup, which a master started by the old one is.
    func mainPID(_ pid: pid_t, status: String) {
        send("MAINPID=\(pid)\nSTATUS=\(status)")
    }

    func stopping(status: String) {
        send("STOPPING=1\nSTATUS=\(status)")
    }

    func status(_ status: String) {
        send("STATUS=\(status)")
    }

    /// A stop's drain may outlast TimeoutStopSec=: ask systemd for this much more time from now,
    /// so it does not SIGKILL a drain that is still within drain_timeout.
    func extendTimeout(by duration: Duration) {
        send("EXTEND_TIMEOUT_USEC=\(Self.microseconds(duration))")
    }

    func watchdog() {
        send("WATCHDOG=1")
    }

    /// Puts a listening socket in systemd's fd store, under the listener's name. False when
    /// the message could not be sent (no NOTIFY_SOCKET, or an error).
    func store(fd: CInt, name: String) -> Bool {
        guard !muted else { return false }
        var fds = [fd]
        return sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=\(name)", &fds, 1) > 0
    }

    func removeFromStore(name: String) {
        send("FDSTOREREMOVE=1\nFDNAME=\(name)")
    }

    /// The watchdog interval systemd asked for (WatchdogSec=), if any. Unsets WATCHDOG_USEC
    /// and WATCHDOG_PID so that no child takes them for its own.
    static func watchdogInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(1, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec))
    }

    static func microseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000 + UInt64(max(0, attoseconds)) / 1_000_000_000_000
    }

    private func send(_ message: String) {
        guard !muted else { return }
        _ = sd_notify(0, message)
    }
}

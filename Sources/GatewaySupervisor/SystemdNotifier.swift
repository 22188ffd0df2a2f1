import CSystemd

#if canImport(Glibc)
    import Glibc
#endif

/// sd_notify(3) through libsystemd. With NOTIFY_SOCKET unset, libsystemd does nothing, so
/// this is silently off outside systemd.
struct SystemdNotifier: Sendable {
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

    func stopping(status: String) {
        send("STOPPING=1\nSTATUS=\(status)")
    }

    func status(_ status: String) {
        send("STATUS=\(status)")
    }

    private func send(_ message: String) {
        _ = sd_notify(0, message)
    }
}

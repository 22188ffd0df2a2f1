import CGatewayShim
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Makes the kernel tell a worker that its master died: `PR_SET_PDEATHSIG` with SIGUSR2.
///
/// The channel's end of file already says so when the master's process dies; this covers a
/// worker that does not read its channel at that moment (a spare waiting on a stuck read, a
/// wedged reader thread) and is what systemd-less setups expect of a supervisor's children.
///
/// Why SIGUSR2 and not SIGTERM: SIGTERM comes from the master at drain_timeout and means
/// "close everything now". A master that dies must instead lead to the same drain as a
/// channel end of file, within drain_timeout. SIGUSR2 is sent by nobody else, and a stray one
/// changes nothing: the handler only acts when the parent is no longer `masterPID`.
///
/// Why it is set here and not in the spawn: the master starts workers with `posix_spawn`
/// (CLONE_VFORK, no hook between fork and exec), so the child cannot call prctl before exec.
/// It does so first thing after, and then checks that its parent is still the master, which
/// closes the window where the master died before the prctl. The kernel sends the signal when
/// the *thread* that spawned the worker ends, so the master spawns from one thread that lives
/// as long as it does (`ProcessSpawner`).
struct MasterDeathWatch {
    static let signalNumber = SIGUSR2
    let masterPID: pid_t?
    private let source: any DispatchSourceSignal

    init(masterPID: pid_t?, lifecycle: WorkerLifecycle) {
        self.masterPID = masterPID
        // Ignored, then watched: a dispatch source sees the signal only when its default
        // action (exit) is off.
        signal(Self.signalNumber, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: Self.signalNumber, queue: .global())
        source.setEventHandler { [masterPID] in
            guard let masterPID, getppid() != masterPID else { return }
            Self.masterIsGone(lifecycle: lifecycle)
        }
        source.resume()
    }

    /// Sets the parent-death signal (again: any change of uid or gid clears it) and checks
    /// that the master has not died already. Without `--master-pid` (a worker started by
    /// hand), nothing is armed.
    func arm() {
        guard let masterPID else { return }
        _ = gw_set_parent_death_signal(Self.signalNumber)
        if getppid() != masterPID {
            // Died before the prctl: no signal will come.
            Self.masterIsGone(lifecycle: nil)
        }
    }

    /// Before the handoff there is nothing to drain; afterwards, the same drain as a channel
    /// end of file. Before `serving`, `arm` passes no lifecycle: nothing is served yet.
    private static func masterIsGone(lifecycle: WorkerLifecycle?) {
        guard let lifecycle, WorkerProcess.handedOff.load(ordering: .acquiring) else { _exit(0) }
        lifecycle.signal(.masterGone)
    }
}

import Foundation
import GatewayConfig
import GatewayCore
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// How an upgrade ended, for whoever asked for it.
public enum UpgradeOutcome: Sendable, Equatable {
    /// The new master serves `generation` and is in charge; this one drains and exits.
    case succeeded(masterPid: Int32, version: String, generation: Int)
    /// This master is still in charge and serves as before.
    case failed(reason: String, details: [String])
}

/// An upgrade asked for, waiting for the reload before it to end.
struct PendingUpgrade {
    let binary: String
    let trigger: String
    let continuation: CheckedContinuation<UpgradeOutcome, Never>
}

/// The master an upgrade handed over to.
struct Successor: Sendable {
    let pid: Int32
    let version: String
}

/// What the old master hears of the new one, in order: its frames (`NewMasterReader`), the
/// end of the handover's sending, and the deadlines armed for it.
enum NewMasterEvent: Sendable {
    case message(UpgradeMessage)
    /// The handover's frames are sent, or could not be.
    case sent(UpgradeProtocolError?)
    /// The channel broke: a protocol violation, or an I/O error.
    case broken(String)
    /// End of file: the new master closed the channel (it exits, or it refused).
    case closed
    /// The process has exited (its parent, this master's, reaps it).
    case exited
    /// The deadline numbered `deadline` passed; `what` the new master failed to do by then.
    case timedOut(deadline: Int, what: String)
}

/// The old master's view of the new master during an upgrade (tableflip's child.go): its
/// process, the channel to it, and what it did that the upgrade has not yet looked at.
final class UpgradeAttempt {
    let binary: String
    let trigger: String
    let startedAt = ContinuousClock.now
    let wallClockStart = Date().timeIntervalSince1970
    /// The new master, this master's sibling (`SiblingProcess`).
    var process: SiblingProcess?
    var pid: pid_t? { process?.pid }
    var exited = false
    /// The old master's end, for the frames the actor sends; the reader thread and the
    /// handover's sender have copies of their own, which they close.
    var channel: UpgradeChannel?
    var hello: UpgradeMessage.Hello?
    /// Events not yet awaited, and the upgrade waiting for the next one.
    private var events: [NewMasterEvent] = []
    private var waiter: CheckedContinuation<NewMasterEvent, Never>?
    /// The number of the deadline armed last; a deadline that fires after another was armed
    /// is stale and ignored.
    var deadline = 0

    init(binary: String, trigger: String) {
        self.binary = binary
        self.trigger = trigger
    }

    func deliver(_ event: NewMasterEvent) {
        if let waiter {
            self.waiter = nil
            waiter.resume(returning: event)
        } else {
            events.append(event)
        }
    }

    func next(in master: isolated Master) async -> NewMasterEvent {
        if !events.isEmpty { return events.removeFirst() }
        return await withCheckedContinuation { waiter = $0 }
    }

    var name: String { "the new master\(pid.map { " (pid \($0), \(binary))" } ?? " (\(binary))")" }
}

extension Master {
    /// The new master's hello, at most this long after it was started. A master's exec, the
    /// Swift runtime's start-up and its argument parsing took 10-50 ms here (the logs' "started
    /// the new master" to "said hello", idle and under wrk load); 10 s
    /// covers a loaded machine and a cold page cache, and bounds the wait on a binary that
    /// does not speak the upgrade protocol (one from before it, or not gatewayd).
    static let upgradeHelloTimeout: Duration = .seconds(10)
    /// From the end of the handover to the new master's `starting`: it reads and validates the
    /// config, which takes milliseconds (ConfigLoader caps the file at 1 MiB); 30 s allows a
    /// slow disk, and bounds a read that never returns (a hung NFS mount, a FIFO).
    static let upgradeValidationTimeout: Duration = .seconds(30)
    /// Beyond the new config's ready_timeout, after `starting`: the new master starts its
    /// workers (no spares: ~20-30 ms each here) and enforces ready_timeout itself, then says
    /// `failed`; the margin covers that, and bounds a new master that hangs.
    static let upgradeReadyMargin: Duration = .seconds(5)
    /// From `commit` to `committed`: the new master only starts accepting on the control
    /// socket (milliseconds); 10 s bounds one that hangs, after which this master takes the
    /// control socket back.
    static let upgradeCommitTimeout: Duration = .seconds(10)

    /// Asks for an upgrade of the master itself to `binary` (by default the path this master
    /// was started from, resolved anew: a package upgrade that replaced the file is picked
    /// up). Waits for a reload under way; refuses while another upgrade is asked for or runs.
    public func upgrade(binary: String? = nil, trigger: String) async -> UpgradeOutcome {
        if let refusal = upgradeRefusal() {
            logger.warning("upgrade refused: \(refusal)", metadata: ["trigger": "\(trigger)"])
            return .failed(reason: refusal, details: [])
        }
        let path = binary ?? options.upgradeBinary
        logger.info("upgrade requested", metadata: ["trigger": "\(trigger)", "binary": "\(path)"])
        return await withCheckedContinuation { continuation in
            pendingUpgrade = PendingUpgrade(binary: path, trigger: trigger, continuation: continuation)
            startLifecycleOperations()
        }
    }

    /// Why an upgrade cannot begin now, or nil: only a running master upgrades, one upgrade
    /// at a time.
    private func upgradeRefusal() -> String? {
        switch state {
        case .running:
            break
        case .starting:
            return "gatewayd is still starting"
        case .running where getpid() == 1:
            // The new master would be this one's child, and this one's exit ends the
            // container, new master and all.
            return
                "gatewayd is PID 1 (a container's init), whose exit would end the container: replace the container instead"
        case .handedOver:
            let pid = successor.map { "master pid \($0.pid)" } ?? "a new master"
            return "this master has handed over to \(pid); the control socket reaches it now: ask again"
        case .stopping, .stoppingNow, .stopped:
            return "gatewayd is stopping"
        }
        if let running = upgrade {
            let since = Int((ContinuousClock.now - running.startedAt).milliseconds)
            return
                "an upgrade is already in progress (to \(running.binary), asked for by \(running.trigger) \(since) ms ago, now \(upgradePhase.rawValue))"
        }
        if let pending = pendingUpgrade {
            return
                "an upgrade is already in progress (to \(pending.binary), asked for by \(pending.trigger), waiting for the reload under way)"
        }
        return nil
    }

    /// Runs one upgrade from start to end (in `runLifecycleOperations`, so never beside a
    /// reload), records it, and says how it ended.
    func performUpgrade(_ requested: PendingUpgrade) async -> UpgradeOutcome {
        guard state == .running else {
            return .failed(reason: "gatewayd is \(state == .handedOver ? "already upgraded" : "stopping")", details: [])
        }
        let attempt = UpgradeAttempt(binary: requested.binary, trigger: requested.trigger)
        upgrade = attempt
        let outcome = await runUpgrade(attempt)
        upgrade = nil
        upgradePhase = .idle
        let took = (ContinuousClock.now - attempt.startedAt).milliseconds
        switch outcome {
        case .succeeded(let pid, let version, let generation):
            logger.info(
                "upgrade complete: master pid \(pid) (\(version)) serves generation \(generation) and is in charge; this master drains and exits",
                metadata: ["total_ms": "\(Self.format(took))"])
        case .failed(let reason, let details):
            var event = newEvent(.upgrade, at: attempt.wallClockStart)
            event.trigger = attempt.trigger
            event.durationMs = took
            event.outcome = .failed
            event.reason = reason
            event.details = details.isEmpty ? nil : details
            record(event)
            logger.error(
                "upgrade to \(attempt.binary) failed: \(reason)\(details.isEmpty ? "" : "\n" + details.joined(separator: "\n"))"
            )
            if state == .running { notifier.status("upgrade failed: \(reason); \(statusLine())") }
            dispose(attempt)
        }
        return outcome
    }

    /// The steps, each with its deadline; any failure leaves this master in charge (the
    /// caller disposes of the new master).
    private func runUpgrade(_ attempt: UpgradeAttempt) async -> UpgradeOutcome {
        func failed(_ reason: String, _ details: [String] = []) -> UpgradeOutcome {
            .failed(reason: reason, details: details)
        }
        // 1. The new binary, started with the upgrade channel as its fd 3.
        upgradePhase = .starting
        guard access(attempt.binary, X_OK) == 0 else {
            return failed("the new binary \(attempt.binary): \(String(cString: strerror(errno)))")
        }
        do {
            try startNewMaster(attempt)
        } catch {
            return failed("cannot start the new binary \(attempt.binary): \(error)")
        }
        arm(Self.upgradeHelloTimeout, for: attempt, "say hello")
        let hello: UpgradeMessage.Hello
        switch await nextFrame(of: attempt, while: "before it said hello (is it a gatewayd that can take over?)") {
        case .success(.hello(let received)):
            hello = received
        case .success(let other):
            return failed("\(attempt.name) sent \(other.type) instead of hello")
        case .failure(let failure):
            return failed(failure.reason, failure.details)
        }
        attempt.hello = hello
        guard state == .running else { return failed("gatewayd began stopping during the upgrade") }
        logger.info(
            "the new master said hello",
            metadata: [
                "pid": "\(hello.pid)", "version": "\(hello.binaryVersion)",
                "upgrade_protocol": "\(hello.version)",
            ])

        // 2. The handover: sockets, shared segment, control socket, state, history.
        upgradePhase = .handingOver
        do {
            try sendInheritance(to: attempt)
        } catch {
            return failed("cannot hand over to \(attempt.name): \(error)")
        }
        arm(Self.upgradeValidationTimeout, for: attempt, "validate its config")

        // 3. The new master validates its config and starts its generation.
        upgradePhase = .waitingForNewMaster
        var generation: Int?
        while generation == nil {
            switch await nextFrame(of: attempt, while: "before its first generation was ready") {
            case .success(.starting(let id, let readyTimeout)):
                logger.info("the new master starts generation \(id)")
                arm(.milliseconds(readyTimeout) + Self.upgradeReadyMargin, for: attempt, "have generation \(id) ready")
            case .success(.ready(let id)):
                generation = id
            case .success(let other):
                return failed("\(attempt.name) sent \(other.type) before it was ready")
            case .failure(let failure):
                return failed(failure.reason, failure.details)
            }
            guard state == .running else { return failed("gatewayd began stopping during the upgrade") }
        }

        // 4. The switch: the control socket, then systemd's main pid, change hands.
        upgradePhase = .switching
        guard let controlServer, let channel = attempt.channel, let pid = attempt.pid, let generation else {
            return failed("no control socket to hand over")
        }
        let backup: CInt
        do {
            backup = try Self.copy(controlServer.descriptor, of: "the control socket")
        } catch {
            return failed("\(error)")
        }
        await controlServer.stopAccepting()
        let committed: Result<Void, UpgradeFailure>
        if state != .running {
            committed = .failure(UpgradeFailure("gatewayd began stopping during the upgrade"))
        } else {
            do {
                try channel.send(.commit)
                arm(Self.upgradeCommitTimeout, for: attempt, "confirm it took over")
                switch await nextFrame(of: attempt, while: "before it confirmed it took over") {
                case .success(.committed): committed = .success(())
                case .success(let other):
                    committed = .failure(UpgradeFailure("\(attempt.name) sent \(other.type) instead of committed"))
                case .failure(let failure): committed = .failure(failure)
                }
            } catch {
                committed = .failure(UpgradeFailure("cannot send commit to \(attempt.name): \(error)"))
            }
        }
        if case .failure(let failure) = committed {
            // Still in charge: accept on the control socket again.
            await resumeControlSocket(on: backup, closing: controlServer)
            return failed(failure.reason, failure.details)
        }
        closeDescriptor(backup)

        // The new master is in charge from here on.
        notifier.mainPID(pid, status: "upgraded: master pid \(pid) is in charge")
        notifier.muted = true
        try? channel.send(.released)
        // The reader has a copy of its own, and waits on the new master's pidfd until it exits.
        channel.close()
        successor = Successor(pid: pid, version: hello.binaryVersion)
        state = .handedOver
        stopSpares()
        for old in generations.values.sorted(by: { $0.id < $1.id }) where old.state == .serving {
            await old.drain(reason: "upgraded: master pid \(pid) serves generation \(generation)", in: self)
        }
        checkStopComplete()
        return .succeeded(masterPid: pid, version: hello.binaryVersion, generation: generation)
    }

    /// The new binary, started as this master was (same arguments) and as its sibling (see
    /// `SiblingProcess`: under systemd it must be systemd's child to become the service's main
    /// process), with the upgrade channel as its fd 3; and the reader of that channel.
    private func startNewMaster(_ attempt: UpgradeAttempt) throws {
        let (channel, newEnd) = try UpgradeChannel.makePair()
        defer { closeDescriptor(newEnd) }
        let readEnd: UpgradeChannel
        do {
            readEnd = UpgradeChannel(
                descriptor: try Self.copy(channel.descriptor, of: "the upgrade channel"), intake: .fromNewMaster)
        } catch {
            channel.close()
            throw error
        }
        let process: SiblingProcess
        do {
            process = try SiblingProcess.spawn(
                executable: attempt.binary, arguments: [attempt.binary] + options.arguments.dropFirst(),
                environment: Self.newMasterEnvironment(), descriptor: newEnd)
        } catch {
            channel.close()
            readEnd.close()
            throw error
        }
        attempt.process = process
        attempt.channel = channel
        let pid = process.pid
        logger.info("started the new master", metadata: ["pid": "\(pid)", "binary": "\(attempt.binary)"])
        let events = NewMasterReader.start(readEnd, process: process)
        Task { [weak self] in
            for await event in events {
                await self?.newMasterEvent(event, pid: pid)
            }
        }
    }

    /// What a new master's reader reported, for the upgrade that started it if it still runs.
    private func newMasterEvent(_ event: NewMasterEvent, pid: pid_t) {
        if case .exited = event, successor?.pid == pid {
            logger.error("the new master (pid \(pid)) has exited")
        }
        guard let upgrade, upgrade.pid == pid else { return }
        if case .exited = event { upgrade.exited = true }
        upgrade.deliver(event)
    }

    /// The handover's frames, sent from a thread with copies of the fds (the listener table
    /// may close its own meanwhile, and a new master that does not read must not block the
    /// actor); its end is one more event.
    private func sendInheritance(to attempt: UpgradeAttempt) throws(SystemCallError) {
        guard let segment = sharedMemory, let segmentFD = segment.descriptor, let controlServer,
            let channel = attempt.channel
        else {
            preconditionFailure("an upgrade before the master has started")
        }
        var copies: [CInt] = []
        var listeners: [HandedOverListener] = []
        let sender: UpgradeChannel
        let inheritance: UpgradeInheritance
        do throws(SystemCallError) {
            for listener in listenerTable.all {
                let copy = try Self.copy(listener.fd, of: "listener \(listener.name)")
                copies.append(copy)
                listeners.append(
                    HandedOverListener(
                        name: listener.name, origin: listener.origin, configuredAddress: listener.configuredAddress,
                        backlog: listener.backlog, stored: storedListeners[listener.name] == listener.fd, fd: copy))
            }
            let segmentCopy = try Self.copy(segmentFD, of: "the shared memory segment")
            copies.append(segmentCopy)
            let controlCopy = try Self.copy(controlServer.descriptor, of: "the control socket")
            copies.append(controlCopy)
            sender = UpgradeChannel(
                descriptor: try Self.copy(channel.descriptor, of: "the upgrade channel"), intake: .fromNewMaster)
            inheritance = UpgradeInheritance(
                state: UpgradeMessage.State(
                    masterPid: getpid(), configPath: options.configPath, nextGeneration: nextGenerationID,
                    reloads: reloadCount, failedReloads: failedReloadCount,
                    watchdogMicroseconds: watchdogInterval.map { SystemdNotifier.microseconds($0) },
                    trigger: attempt.trigger, startedAt: attempt.wallClockStart, ticketKeys: ticketKeysForUpgrade),
                listeners: listeners, sharedMemory: (segmentCopy, segment.handoff),
                controlSocket: (settings.controlSocket, controlCopy), history: history.events)
        } catch {
            for copy in copies { closeDescriptor(copy) }
            throw error
        }
        let sent = copies
        Thread.detachNewThread { [weak self] in
            var failure: UpgradeProtocolError?
            do throws(UpgradeProtocolError) {
                try sender.sendInheritance(inheritance)
            } catch {
                failure = error
            }
            sender.close()
            for copy in sent { closeDescriptor(copy) }
            Task { await self?.deliverToUpgrade(.sent(failure)) }
        }
    }

    private func deliverToUpgrade(_ event: NewMasterEvent) {
        upgrade?.deliver(event)
    }

    /// Arms the step's deadline: the wait for the next frame ends with `.timedOut` if it is
    /// not there by then. A new deadline makes the one before stale.
    private func arm(_ timeout: Duration, for attempt: UpgradeAttempt, _ what: String) {
        attempt.deadline += 1
        let deadline = attempt.deadline
        after(timeout) { master in
            master.upgrade?.deliver(
                .timedOut(deadline: deadline, what: "\(what) within \(DurationText.format(timeout))"))
        }
    }

    /// The next frame from the new master, or why none will come: it failed (its own reason),
    /// the channel closed or broke, the process exited (with its status, when it follows
    /// soon), the deadline passed, the handover could not be sent.
    private func nextFrame(
        of attempt: UpgradeAttempt, while doing: String
    ) async -> Result<UpgradeMessage, UpgradeFailure> {
        while true {
            switch await attempt.next(in: self) {
            case .message(.failed(let reason, let details)):
                return .failure(UpgradeFailure("\(attempt.name) failed: \(LogText.escaped(reason))", details))
            case .message(let message):
                return .success(message)
            case .sent(nil):
                continue
            case .sent(let error?):
                return .failure(UpgradeFailure("cannot hand over to \(attempt.name): \(error)"))
            case .timedOut(let deadline, let what):
                guard deadline == attempt.deadline else { continue }
                return .failure(UpgradeFailure("\(attempt.name) did not \(what)"))
            case .broken(let reason):
                return .failure(UpgradeFailure("\(attempt.name): \(LogText.escaped(reason))"))
            case .closed, .exited:
                // The exit follows the end of the channel at once: wait a moment for it, so
                // the reason can say the process ended. (How, only its parent learns: this
                // master's parent, systemd's journal.)
                if !attempt.exited {
                    arm(Self.killGrace, for: attempt, "exit after closing the channel")
                    while !attempt.exited {
                        if case .timedOut(let deadline, _) = await attempt.next(in: self), deadline == attempt.deadline
                        {
                            break
                        }
                    }
                }
                let ended = attempt.exited ? "exited" : "closed the channel"
                return .failure(UpgradeFailure("\(attempt.name) \(ended) \(doing)"))
            }
        }
    }

    /// After a failed upgrade: the channel's end tells the new master to give up (it drains
    /// what its generation may have accepted, and exits). One that never said hello may not
    /// be gatewayd at all, and is killed after the kill grace; one that did is given this
    /// master's drain_timeout to finish on its own.
    private func dispose(_ attempt: UpgradeAttempt) {
        attempt.channel?.shutdown()
        attempt.channel?.close()
        guard let process = attempt.process, !attempt.exited else { return }
        let grace = attempt.hello == nil ? Self.killGrace : settings.drainTimeout + Self.killGrace
        after(grace) { master in
            guard !process.hasExited else { return }
            master.logger.warning("the failed new master (pid \(process.pid)) is still running; sending SIGKILL")
            process.signal(SIGKILL)
        }
    }

    /// A failed switch gives the control socket back to this master.
    private func resumeControlSocket(on descriptor: CInt, closing stopped: ControlServer) async {
        stopped.close(removingFile: false)
        do {
            controlServer = try await ControlServer.start(
                listeningOn: descriptor, path: settings.controlSocket, master: self, logger: logger)
        } catch {
            controlServer = nil
            logger.critical("cannot accept on the control socket again after a failed upgrade: \(error)")
        }
    }

    /// Ends the upgrades under way or asked for, when a stop begins: the new master sees the
    /// end of its channel and gives up, the caller gets `reason`.
    func abandonUpgrades(reason: String) {
        if let pending = pendingUpgrade {
            pendingUpgrade = nil
            pending.continuation.resume(returning: .failed(reason: reason, details: []))
        }
        upgrade?.channel?.shutdown()
        takeoverChannel?.shutdown()
    }

    /// The environment of the new master: this one's, without what systemd meant for this
    /// process alone (the sockets passed at start, the watchdog: both travel in the
    /// handover), plus the channel's fd. NOTIFY_SOCKET stays: the new master becomes the
    /// service's main process.
    static func newMasterEnvironment() -> [String] {
        let stale: Set<String> = [
            "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
            UpgradeProtocol.channelEnvironmentVariable, UpgradeProtocol.testVersionEnvironmentVariable,
        ]
        return ProcessInfo.processInfo.environment.compactMap { key, value in
            stale.contains(key) ? nil : "\(key)=\(value)"
        } + ["\(UpgradeProtocol.channelEnvironmentVariable)=\(UpgradeProtocol.newMasterDescriptor)"]
    }

    // MARK: - After the handover

    /// A request this master accepted just before it handed over: the new master answers it.
    func forwardToSuccessor(_ request: ControlRequest) async -> ControlResponse {
        let client = ControlClient(socketPath: settings.controlSocket)
        let pid = successor.map { "master pid \($0.pid)" } ?? "the new master"
        forwardsInFlight += 1
        defer {
            forwardsInFlight -= 1
            checkStopComplete()
        }
        switch await Self.onThread({ try client.send(request) }) {
        case .success(let response):
            return response
        case .failure(let error):
            return .failure("gatewayd was upgraded, and \(pid) did not answer: \(error)")
        }
    }

    func forwardReloadToSuccessor() async -> ReloadOutcome {
        let response = await forwardToSuccessor(ControlRequest(command: .reload, wait: true))
        guard response.ok, let generation = response.generation else {
            return .failed(reason: response.error ?? "no generation in the answer", details: response.details ?? [])
        }
        return .succeeded(generation: generation, timings: response.timings ?? ReloadTimings())
    }

    /// Runs blocking work (a read that may never return, a blocking client) on a thread of
    /// its own, never on the actor or the concurrency pool.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error> {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: Result { try body() })
            }
        }
    }
}

/// Why an upgrade step failed, with the new master's details (a config's `file:line:col`).
struct UpgradeFailure: Error {
    var reason: String
    var details: [String]
    init(_ reason: String, _ details: [String] = []) {
        self.reason = reason
        self.details = details
    }
}

/// The old master's reader of the upgrade channel: a thread of its own (reads block) that
/// turns frames into events, in order, and reports the process's exit last.
enum NewMasterReader {
    static func start(_ channel: UpgradeChannel, process: SiblingProcess) -> AsyncStream<NewMasterEvent> {
        let (stream, continuation) = AsyncStream<NewMasterEvent>.makeStream()
        Thread.detachNewThread {
            do {
                while let (message, fds) = try channel.receive() {
                    // The old master's end takes none; never keep one if it did.
                    for fd in fds { closeDescriptor(fd) }
                    continuation.yield(.message(message))
                }
                continuation.yield(.closed)
            } catch {
                continuation.yield(.broken("\(error)"))
            }
            channel.close()
            process.waitForExit()
            continuation.yield(.exited)
            continuation.finish()
        }
        return stream
    }
}

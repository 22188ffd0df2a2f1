import CGatewayShim
import Dispatch
import Foundation
import GatewayConfig
import GatewayCore
import GatewayIO
import GatewayTracing
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A worker process from birth to exit: receive the handoff on fd 3, serve, drain, exit.
///
/// The worker never reads the config file and never binds: it serves the config bytes and the
/// sockets its master validated and handed over.
public enum WorkerProcess {
    /// Connection counts go to the master at most this often: `status` is for people and for
    /// the drain's progress, and a frame per connection would cost more than it tells.
    static let connectionReportInterval: Duration = .milliseconds(200)
    /// An unchanged count is still sent this often: it is the heartbeat the master's worker
    /// watchdog waits for. With the 200 ms report tick, beats are at most 0.6 s apart, a
    /// third of the smallest worker_watchdog_timeout (2 s): one late beat never kills.
    static let heartbeatInterval: Duration = .milliseconds(500)
    /// The event loop marks itself this often; a mark older than `loopStallLimit` means the
    /// loop is stuck, and the heartbeat stops so that the master's watchdog ends this worker.
    static let loopMarkInterval: UInt64 = 250_000_000
    static let loopStallLimit: UInt64 = 2_000_000_000
    /// The spans still buffered are exported before exit: milliseconds to a collector that
    /// answers; one that does not must not keep a drained worker (and its generation) alive,
    /// and the master's kill grace after a SIGTERM is 2 s.
    static let tracingFlushTimeout: Duration = .seconds(1)

    /// Set once the handoff is complete. Before that, SIGTERM ends the process at once: a
    /// spare (started ahead of a reload) has nothing to drain.
    static let handedOff = Atomic<Bool>(false)

    public static func run(logger baseLogger: Logger, masterPID: pid_t? = nil) async -> Never {
        var logger = baseLogger
        // The master owns these: a terminal's Ctrl-C or a HUP to the process group must not
        // reach the workers behind the master's back.
        signal(SIGPIPE, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        signal(SIGHUP, SIG_IGN)

        let lifecycle = WorkerLifecycle()
        // SIGTERM: the master's drain timeout passed (or it is stopping now). Close everything.
        // Ignored first, then watched: the dispatch source only sees the signal when its
        // default action (exit) is off. Before this point, SIGTERM simply ends the process.
        signal(SIGTERM, SIG_IGN)
        let termSource = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        termSource.setEventHandler {
            if !handedOff.load(ordering: .acquiring) { _exit(0) }
            lifecycle.signal(.terminate)
        }
        termSource.resume()
        // The master's death, if its channel cannot tell (WorkerProcess+MasterDeath.swift).
        let deathWatch = MasterDeathWatch(masterPID: masterPID, lifecycle: lifecycle)
        deathWatch.arm()

        warmUp()
        // fd 3 lost CLOEXEC in the spawn's dup2, which is how it crossed exec. A worker execs
        // nothing, but no fd of its own should cross one if it ever does.
        _ = gw_set_cloexec_from(UInt32(HandoffProtocol.workerDescriptor))
        let channel = HandoffChannel(descriptor: HandoffProtocol.workerDescriptor)
        let handoff: Handoff
        do {
            // Blocking reads: on a thread of their own, not the concurrency pool.
            guard let received = try await onThread({ try receiveHandoff(channel) }) else {
                logger.debug("the master ended before a handoff (a spare worker); exiting")
                exit(0)
            }
            handoff = received
        } catch {
            logger.error("handoff failed: \(error)")
            try? channel.send(.failed(reason: "handoff failed: \(error)"))
            exit(1)
        }
        // The master's levels of the moment: a spare may have waited through a change.
        LiveLogLevels.apply(handoff.hello.logLevels)
        TLSTicketKeys.install(handoff.hello.ticketKeys)
        let generation = handoff.hello.generation
        logger[metadataKey: "generation"] = "\(generation)"
        logger[metadataKey: "worker"] = "\(handoff.hello.worker)"
        handedOff.store(true, ordering: .releasing)
        let configuration: GatewayConfiguration
        do {
            configuration = try ConfigLoader.parse(
                handoff.hello.config, path: handoff.hello.configPath, files: handoff.files)
        } catch {
            // The master validated these bytes; failing here means master and worker disagree.
            try? channel.send(.failed(reason: "config rejected by the worker: \(error)"))
            exit(1)
        }
        #if GATEWAYD_FAULT_INJECTION
            let fault = injectedFault(config: handoff.hello.config, worker: handoff.hello.worker)
            if case .hostile(let behavior) = fault {
                behaveHostile(behavior, channel: channel, handoff: handoff, logger: logger)
            }
            injectFaultBeforeReady(fault)
        #endif

        // The gateway-wide shared segment (rate limits, metrics): WorkerProcess+SharedState.swift.
        let sharedState: SharedState
        do {
            sharedState = try attachSharedState(
                descriptor: handoff.sharedMemory.fd, handoff: handoff.sharedMemory.handoff)
        } catch {
            logger.error("cannot use the shared memory segment: \(error)")
            try? channel.send(.failed(reason: "shared memory: \(error)"))
            exit(1)
        }

        // A file is opened by the master, once per generation (after logrotate moved it, the
        // next reload writes to a new one), and comes in the handoff: the worker never opens
        // the path, as root or otherwise (AccessLogFile).
        let logFile = configuration.accessLog.map(\.path).flatMap { AccessLogFile.isFile($0) ? $0 : nil }
        guard handoff.accessLog?.path == logFile else {
            let sent = handoff.accessLog.map { "the file \($0.path)" } ?? "no file"
            try? channel.send(
                .failed(reason: "access log: the master sent \(sent), the config names \(logFile ?? "none")"))
            exit(1)
        }
        let accessLog = configuration.accessLog.map {
            AccessLog(configuration: $0, file: handoff.accessLog?.fd, generation: generation, logger: logger)
        }
        // Before serving anything: WorkerProcess+Privileges.swift.
        if let reason = dropPrivileges(configuration, logger: logger) {
            logger.error("\(reason)")
            try? channel.send(.failed(reason: reason))
            exit(1)
        }
        // A change of uid or gid clears the parent-death signal: set it again.
        deathWatch.arm()
        // After the privileges drop: the exporter's threads and sockets are the worker user's.
        var tracing: TracingBackend?
        if let tracingConfiguration = configuration.tracing {
            do {
                tracing = try TracingBackend.start(tracingConfiguration, logger: logger)
            } catch {
                logger.error("\(error)")
                try? channel.send(.failed(reason: "\(error)"))
                exit(1)
            }
        }
        let server: GatewayServer
        do {
            server = try GatewayServer(
                configuration: configuration, generation: generation, logger: logger, sharedState: sharedState,
                accessLog: accessLog, tracer: tracing?.tracer,
                sampleRatio: configuration.tracing?.sampleRatio ?? 1, connectionCountDidChange: { _ in })
            try await server.start(
                listeners: handoff.listeners.map { HandedOffListener(name: $0.name, fd: $0.fd, backlog: $0.backlog) })
        } catch {
            logger.error("cannot serve: \(error)")
            try? channel.send(.failed(reason: "\(error)"))
            exit(1)
        }
        // Every fd of the master's is CLOEXEC, and the worker's own are too; not every
        // library's need be. A worker execs nothing; if it ever does, nothing of it leaks.
        _ = gw_set_cloexec_from(3)
        do {
            try channel.send(.ready(pid: getpid()))
        } catch {
            logger.error("cannot report ready, the master is gone: \(error)")
        }
        #if GATEWAYD_FAULT_INJECTION
            injectFaultAfterReady(fault)
        #endif
        logger.debug("ready", metadata: ["listeners": "\(handoff.listeners.count)"])

        Thread.detachNewThread {
            // The master speaks rarely after the handoff: `log_levels`, `ticket_keys`, `drain`, or end of file
            // when it is gone.
            while true {
                do {
                    guard let (message, fds) = try channel.receive() else {
                        lifecycle.signal(.masterGone)
                        return
                    }
                    // Only the handoff may carry fds; never keep one sent later.
                    for fd in fds { closeDescriptor(fd) }
                    switch message {
                    case .drain: lifecycle.signal(.drain)
                    case .logLevels(let levels): LiveLogLevels.apply(levels)
                    case .ticketKeys(let keys): TLSTicketKeys.install(keys)
                    case .statusPage(let snapshot): StatusBoard.shared.update(snapshot)
                    default: break
                    }
                } catch {
                    lifecycle.signal(.masterGone)
                    return
                }
            }
        }
        let loopMark = LoopMark()
        loopMark.markRepeatedly(on: server.mainLoop, every: loopMarkInterval)
        Thread.detachNewThread {
            var reported = -1
            var lastSent = ContinuousClock.now
            while !lifecycle.isFinished {
                let count = server.connectionCount
                let now = ContinuousClock.now
                if loopMark.age < loopStallLimit, count != reported || now - lastSent >= heartbeatInterval {
                    reported = count
                    lastSent = now
                    try? channel.send(.connections(count: count))
                }
                Thread.sleep(forTimeInterval: Double(connectionReportInterval.nanosecondsValue) / 1e9)
            }
        }

        let first = await lifecycle.next()
        switch first {
        case .drain, .masterGone:
            if first == .masterGone { logger.warning("master is gone; draining") }
            let drainTask = Task {
                await server.drain(stoppedAccepting: {
                    try? channel.send(.draining)
                })
            }
            // The master ends a drain with SIGTERM at drain_timeout; it may be gone (or die
            // during the drain), so the worker keeps the same deadline itself. When the master
            // lives, its SIGTERM comes first: its timer started before it sent `drain`.
            let timeout = Duration.milliseconds(handoff.hello.drainTimeoutMilliseconds)
            Task {
                try? await Task.sleep(for: timeout)
                lifecycle.signal(.terminate)
            }
            // A SIGTERM during the drain cuts it short.
            let outcome = await lifecycle.nextOrCompletion(of: drainTask)
            if outcome == .terminate {
                await server.shutdownNow()
            }
        case .terminate, .drained:
            await server.shutdownNow()
        }
        lifecycle.finish()
        accessLog?.close()
        await tracing?.shutdown(within: tracingFlushTimeout)
        try? channel.send(.connections(count: 0))
        exit(0)
    }

    /// A spare waits for its handoff with the code it will run cold in a binary of ~95 MB: the
    /// first YAML parse and the first route table then fault their pages in on the reload's
    /// critical path. One throwaway parse and route table before waiting moves that cost here.
    static func warmUp() {
        let sample = Array(
            """
            listeners: [{ name: warm, address: "127.0.0.1:0" }]
            routes: [{ name: warm, match: { path_prefix: /, host: "*.example.com", methods: [GET] }, direct_response: { status: 200, headers: { x: y }, body: "" } }]
            """.utf8)
        guard let configuration = try? ConfigLoader.parse(sample, path: "warm-up") else { return }
        _ = try? RoutingTable(configuration: configuration)
    }

    /// Runs blocking work on a new thread and awaits its result.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try body() })
            }
        }
    }

    typealias Handoff = HandoffChannel.ReceivedHandoff

    /// The handoff, received by GatewayCore's side of the protocol (`HandoffChannel`); nil when
    /// the master closed the channel before sending anything: a spare whose master stopped or
    /// died, which has nothing to do but exit.
    static func receiveHandoff(_ channel: HandoffChannel) throws -> Handoff? {
        try channel.receiveHandoff()
    }
}

/// What ends a worker's serving life, in the order it happens.
final class WorkerLifecycle: Sendable {
    enum Event: Sendable, Equatable {
        case drain
        case masterGone
        case terminate
        case drained
    }

    private struct State {
        var pending: [Event] = []
        var waiter: CheckedContinuation<Event, Never>?
        var finished = false
    }
    private let state = Mutex(State())

    func signal(_ event: Event) {
        let waiter: CheckedContinuation<Event, Never>? = state.withLock { state in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending.append(event)
            return nil
        }
        waiter?.resume(returning: event)
    }

    func next() async -> Event {
        await withCheckedContinuation { continuation in
            let ready: Event? = state.withLock { state in
                if !state.pending.isEmpty { return state.pending.removeFirst() }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Waits for the task to finish (→ `.drained`) or a `.terminate`, whichever comes first;
    /// other events (a second drain, the master going away) change nothing.
    func nextOrCompletion(of task: Task<Void, Never>) async -> Event {
        Task {
            await task.value
            self.signal(.drained)
        }
        while true {
            let event = await next()
            if event == .terminate || event == .drained { return event }
        }
    }

    var isFinished: Bool { state.withLock { $0.finished } }
    func finish() { state.withLock { $0.finished = true } }
}

/// When the worker's event loop last ran a task of its own (for the heartbeat).
final class LoopMark: Sendable {
    private let nanoseconds = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)

    func mark() { nanoseconds.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }

    /// Nanoseconds since the last mark.
    var age: UInt64 { DispatchTime.now().uptimeNanoseconds &- nanoseconds.load(ordering: .relaxed) }

    /// Marks from `loop` every `interval` ns, for as long as the loop runs.
    func markRepeatedly(on loop: EventLoop, every interval: UInt64) {
        loop.execute { [self] in
            self.markAndReschedule(on: loop, every: interval)
        }
    }

    private func markAndReschedule(on loop: EventLoop, every interval: UInt64) {
        self.mark()
        loop.schedule(at: loop.now + interval) { [self] in
            self.markAndReschedule(on: loop, every: interval)
        }
    }
}

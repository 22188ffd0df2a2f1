#if GATEWAYD_FAULT_INJECTION
    import CGatewayShim
    import Foundation
    import GatewayCore
    import Logging
    import Synchronization

    #if canImport(Glibc)
        import Glibc
    #endif

    // Test builds only (see WorkerProcess+FaultInjection.swift): a worker that completes its
    // handoff, says ready, and then does what a compromised worker could do to its master and
    // its siblings. Chosen like any injected fault, by a comment line in the config:
    //
    //     # gatewayd-fault: hostile=fd-flood worker=1
    //
    // A mode of the real worker rather than an executable of its own: the hostile worker gets
    // the real handoff (its config, its sockets, the shared segment's fd) through the real
    // code, from a real master, and only its own generation's slot is hostile, so a real
    // generation serves beside it. A separate executable would need a handoff of its own and
    // would replace every worker of every generation (the master starts one program).
    //
    // It serves nothing (its copies of the listening sockets are closed at once): every
    // client goes to the real workers, so killing it fails no request, and a test that counts
    // failed requests counts the master's mistakes only.
    extension WorkerProcess {
        enum HostileBehavior: String, CaseIterable {
            /// A partial frame, then 20 messages of one byte and 253 fds each (5,060 fds).
            case fdFlood = "fd-flood"
            /// `connections` of Int.max, as a heartbeat.
            case connectionsOverflow = "connections-overflow"
            /// `connections` frames as fast as the socket takes them.
            case frameFlood = "frame-flood"
            /// `failed` frames of 3 MiB each, 20 of them (60 MiB).
            case bigFrames = "big-frames"
            /// The shared segment's header overwritten: magic zeroed, slot counts, table
            /// offsets and hash seed changed; then a heartbeat like a healthy worker, with a
            /// count of 7 (`segmentOverwrittenMark`: the overwrite is done).
            case segmentHeader = "segment-header"
            /// A `failed` reason that forges a master log line (newline, terminal escapes),
            /// then a frame whose type forges one.
            case logForgery = "log-forgery"
        }

        /// The connection count a `segment-header` worker beats with once it has overwritten
        /// the header.
        static let segmentOverwrittenMark = 7

        /// The forged line a `log-forgery` worker tries to plant in the master's log.
        static let forgedLogLine = "2030-01-01T00:00:00.000Z info gatewayd[1]: generation 99 serving"

        static func behaveHostile(
            _ behavior: HostileBehavior, channel: HandoffChannel, handoff: Handoff, logger: Logger
        ) -> Never {
            for listener in handoff.listeners { closeDescriptor(listener.fd) }
            if let log = handoff.accessLog { closeDescriptor(log.fd) }
            // The attack waits for SIGUSR1, which the test sends once the reload has made this
            // generation the serving one: a worker killed before would fail the reload instead.
            signal(SIGUSR1, SIG_IGN)
            let go = DispatchSemaphore(value: 0)
            let trigger = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
            trigger.setEventHandler { go.signal() }
            trigger.resume()
            try? channel.send(.ready(pid: getpid()))
            politeWhenDrained(channel)
            let start = beatUntilAttacking(channel)
            go.wait()
            // No heartbeat frame is in flight once this holds: the attack owns the channel.
            start.began.withLock { $0 = true }
            // The tests time the master's answer from this line.
            logger.warning("hostile worker: \(behavior.rawValue) begins")
            let fd = channel.descriptor
            switch behavior {
            case .fdFlood:
                let spare = open("/dev/null", O_RDONLY | O_CLOEXEC)
                // A length prefix and no frame: the master's buffer is never empty again.
                writeAll(fd, [0, 0, 0xff, 0xff])
                let fds = [CInt](repeating: spare, count: HandoffProtocol.maximumDescriptorsPerFrame)
                var byte: UInt8 = 0x7b
                for _ in 0..<20 {
                    _ = fds.withUnsafeBufferPointer { gw_sendmsg_fds(fd, &byte, 1, $0.baseAddress, CInt($0.count)) }
                }
                // Silent from here on: only the master's kill (or its watchdog) ends it.
                while true { pause() }
            case .connectionsOverflow:
                heartbeat(channel, count: Int.max)
            case .frameFlood:
                while (try? channel.send(.connections(count: 1))) != nil {}
                while true { pause() }
            case .bigFrames:
                let reason = String(repeating: "x", count: 3 << 20)
                for _ in 0..<20 { try? channel.send(.failed(reason: reason)) }
                heartbeat(channel, count: 0)
            case .segmentHeader:
                let (fd, size) = (handoff.sharedMemory.fd, handoff.sharedMemory.handoff.size)
                if let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
                    base != UnsafeMutableRawPointer(bitPattern: -1)  // MAP_FAILED
                {
                    // Every word a new worker could read: magic, total size, slot counts and
                    // table offsets (past the end of the mapping), the hash seed.
                    for (offset, value) in [
                        (0, 0), (16, 1 << 40), (32, 0), (40, 0), (48, 1 << 26), (56, 1 << 40), (64, 1 << 22),
                        (72, 1 << 40),
                    ] as [(Int, UInt64)] {
                        base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
                    }
                }
                heartbeat(channel, count: segmentOverwrittenMark)
            case .logForgery:
                try? channel.send(.failed(reason: "boom\n\(forgedLogLine)\u{1b}[2J\r"))
                Thread.sleep(forTimeInterval: 0.3)
                let json = Array(#"{"type":"x\n\#(forgedLogLine)"}"#.utf8)
                writeAll(fd, [0, 0, UInt8(json.count >> 8), UInt8(json.count & 0xff)] + json)
                heartbeat(channel, count: 0)
            }
        }

        /// Whether the attack began. Held around each beat of the waiting heartbeat, so that
        /// once it is set no beat is in flight.
        final class AttackStart: Sendable {
            let began = Mutex(false)
        }

        /// Beats like a healthy worker while it waits for its cue.
        private static func beatUntilAttacking(_ channel: HandoffChannel) -> AttackStart {
            let start = AttackStart()
            Thread.detachNewThread {
                while start.began.withLock({ began in
                    if !began { try? channel.send(.connections(count: 0)) }
                    return !began
                }) {
                    usleep(200_000)
                }
            }
            return start
        }

        /// Beats like a healthy worker (every 200 ms), so that the worker watchdog leaves it be.
        private static func heartbeat(_ channel: HandoffChannel, count: Int) -> Never {
            while true {
                try? channel.send(.connections(count: count))
                usleep(200_000)
            }
        }

        /// Past its attack, a hostile worker that is told to drain confirms and exits a second
        /// later (as a worker with connections would, so that its generation drains with its
        /// count), and one whose master is gone exits at once: the tests end their gatewayd
        /// without waiting for drain_timeout.
        private static func politeWhenDrained(_ channel: HandoffChannel) {
            Thread.detachNewThread {
                while let (message, _) = (try? channel.receive()) ?? nil {
                    guard message == .drain else { continue }
                    try? channel.send(.draining)
                    Thread.sleep(forTimeInterval: 1)
                    break
                }
                _exit(0)
            }
        }

        private static func writeAll(_ fd: CInt, _ bytes: [UInt8]) {
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n <= 0 { return }
                offset += n
            }
        }
    }
#endif

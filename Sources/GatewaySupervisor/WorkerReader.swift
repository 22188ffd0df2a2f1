import Foundation
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// The master's reader of one worker's channel: a thread of its own (reads block) that turns
/// frames into `WorkerEvent`s, in order, and reports the exit.
///
/// A worker runs the exposed code and may be compromised, so whatever it can make the master
/// hold is bounded here: no fd (the channel's intake refuses them), frames of at most
/// `HandoffProtocol.maximumWorkerFrameLength`, at most `maximumFramesPerSecond` of them, and
/// at most `backlog` events waiting for the actor. A worker past any bound is killed; the
/// master logs why, naming it, and replaces it like any crashed worker.
enum WorkerReader {
    /// A worker sends about five frames a second: its connection count at most every 200 ms
    /// (`WorkerProcess.connectionReportInterval`), and ready, failed and draining once each.
    /// Fifty within one second is ten times that: a flood.
    static let maximumFramesPerSecond = 50
    /// Events read but not yet handled by the actor, which handles one in microseconds: 64
    /// waiting means the actor cannot keep up with this worker, a flood as well. Bounds what
    /// one worker makes the master hold to 64 frames of 64 KiB.
    static let backlog = 64

    /// Starts the thread; the thread ends once the worker has exited (not reaped: the actor
    /// reaps).
    static func start(_ process: SpawnedProcess, spawner: any ProcessSpawning) -> AsyncStream<WorkerEvent> {
        // Two places more than the backlog: room for the error and the exit that end a flood.
        let (stream, continuation) = AsyncStream<WorkerEvent>.makeStream(bufferingPolicy: .bufferingOldest(backlog + 2))
        Thread.detachNewThread {
            if let reason = readFrames(process.channel, into: continuation) {
                continuation.yield(.channelError(reason))
                // A worker we cannot talk to, or that floods, is of no use; make sure it goes away.
                spawner.signal(SIGKILL, to: process.pid)
            }
            spawner.waitForExit(pid: process.pid)
            continuation.yield(.exited)
            continuation.finish()
        }
        return stream
    }

    /// Reads until end of file (nil) or until the worker must go (why).
    private static func readFrames(
        _ channel: HandoffChannel, into continuation: AsyncStream<WorkerEvent>.Continuation
    ) -> String? {
        var windowStart = ContinuousClock.now
        var framesInWindow = 0
        do {
            while let (message, fds) = try channel.receive() {
                // The intake installs none; never keep one if it did.
                for fd in fds { closeDescriptor(fd) }
                let now = ContinuousClock.now
                if now - windowStart >= .seconds(1) {
                    windowStart = now
                    framesInWindow = 0
                }
                framesInWindow += 1
                guard framesInWindow <= maximumFramesPerSecond else {
                    return
                        "flooding: more than \(maximumFramesPerSecond) frames within 1 s (a worker sends about 5 a second)"
                }
                guard case .enqueued(let room) = continuation.yield(.message(message)), room >= 2 else {
                    return "flooding: \(backlog) of its frames wait for the master"
                }
            }
            return nil
        } catch {
            return "\(error)"
        }
    }
}

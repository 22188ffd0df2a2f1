import GatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// A byte tunnel after `101 Switching Protocols` (WebSocket and other upgrades): what one side
/// reads, the other writes, with backpressure both ways (a side is not read while the other
/// has `outputHighWater` bytes waiting). Both sockets are on the same loop.
///
/// A half-close travels through (one side's end of file becomes a FIN on the other, after
/// what it sent); the tunnel ends when both directions have ended, when either side fails,
/// or when no byte went either way for `limits.tunnel_idle_timeout`. A drain leaves it open
/// (it is a request in flight) until the drain timeout closes the worker's connections.
final class Tunnel {
    /// Strong: the pumps touch the client after a write that may close it (and drop every
    /// other reference to it). The cycle with `ClientConnection.tunnel` ends in `close`.
    private let client: ClientConnection
    private let upstream: UpstreamConnection
    private let idleTimeout: UInt64
    private var clientEnded = false
    private var upstreamEnded = false
    /// A side ended while bytes for the other were still waiting: its FIN goes after them.
    private var upstreamShutdownPending = false
    private var clientShutdownPending = false
    private var closed = false

    init(client: ClientConnection, upstream: UpstreamConnection, idleTimeout: UInt64) {
        self.client = client
        self.upstream = upstream
        self.idleTimeout = idleTimeout
    }

    func start() {
        self.upstream.startTunnel(self)
        // What each side sent behind the upgrade, before the tunnel existed.
        self.client.flushOutput()
        if !self.upstream.input.isEmpty {
            self.client.send(self.upstream.input.readable)
            self.upstream.input.clear()
        }
        if !self.client.input.isEmpty {
            self.upstream.send(self.client.input.readable)
            self.client.input.clear()
        }
        self.touch()
        self.pumpUp()
        self.pumpDown()
    }

    // MARK: Events

    func clientReadable() { self.pumpUp() }

    func clientWritable() {
        if self.client.flushOutput(), self.clientShutdownPending {
            self.clientShutdownPending = false
            self.client.shutDownWrite()
            self.endIfBothEnded()
        }
        self.pumpDown()
    }

    func upstreamReadable() { self.pumpDown() }

    func upstreamWritable() {
        if self.upstream.flush(), self.upstreamShutdownPending {
            self.upstreamShutdownPending = false
            self.upstream.shutDownWrite()
            self.endIfBothEnded()
        }
        if self.upstream.writeFailed {
            self.close()
            return
        }
        self.pumpUp()
    }

    func idleTimedOut() {
        self.close()
    }

    /// Nothing went either way for the idle timeout: the client's registration carries the
    /// deadline, moved at each transfer (a number, not a timer).
    private func touch() {
        guard let registration = self.client.registration else { return }
        self.client.eventLoop.setDeadline(registration, at: self.client.eventLoop.now + self.idleTimeout)
        self.client.wait = nil
    }

    // MARK: Pumping

    /// Client to upstream.
    private func pumpUp() {
        while !self.closed, !self.clientEnded, self.client.readable, self.upstream.canTakeMore {
            self.client.input.clear()
            switch self.client.receive(minimum: 16 * 1024) {
            case .bytes:
                self.upstream.send(self.client.input.readable)
                self.client.input.clear()
                self.touch()
            case .wouldBlock, .full:
                self.client.readable = false
            case .endOfFile:
                self.client.readable = false
                self.clientEnded = true
                if self.upstream.flush() {
                    self.upstream.shutDownWrite()
                } else {
                    self.upstreamShutdownPending = true
                }
                self.endIfBothEnded()
            case .failed:
                self.close()
            }
        }
        if self.upstream.writeFailed { self.close() }
    }

    /// Upstream to client.
    private func pumpDown() {
        while !self.closed, !self.upstreamEnded, self.upstream.readable, self.client.canTakeMoreOutput {
            self.upstream.input.clear()
            switch self.upstream.read() {
            case .bytes:
                self.client.send(self.upstream.input.readable)
                self.upstream.input.clear()
                self.touch()
            case .wouldBlock, .full:
                break
            case .endOfFile:
                self.upstreamEnded = true
                if self.client.flushOutput() {
                    self.client.shutDownWrite()
                } else {
                    self.clientShutdownPending = true
                }
                self.endIfBothEnded()
            case .failed:
                self.close()
            }
        }
        if self.client.phase == .closed { self.close() }
    }

    /// Both directions ended and what each carried went out.
    private func endIfBothEnded() {
        if self.clientEnded, self.upstreamEnded, !self.upstreamShutdownPending, !self.clientShutdownPending {
            self.close()
        }
    }

    /// Both sides closed. Idempotent.
    func close() {
        guard !self.closed else { return }
        self.closed = true
        self.upstream.close()
        self.client.tunnel = nil
        self.client.closeNow()
    }
}

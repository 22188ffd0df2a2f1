import Dispatch
import Foundation
import GatewayConfig
import GatewayCore
import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One line per answered request, to stdout, stderr or a file.
///
/// Lines are formatted on the event loop into a buffer and written by a flusher thread every
/// `flushInterval` (or woken early when the buffer passes `flushThreshold`). The event loop
/// never writes to the fd: a slow log reader (a full pipe) stalls the flusher only, and once
/// the buffer is full lines are dropped and counted rather than blocking requests. Lines a
/// write fails to write (a full disk, a closed pipe) are counted the same way.
///
/// The master opens the file anew for each generation (O_APPEND, O_NOFOLLOW, at its start;
/// `AccessLogFile`) and hands it over: after logrotate renames the file, a reload makes the new
/// generation write to a new file, so `copytruncate` is not needed.
public final class AccessLog: Sendable {
    /// Short enough that `tail -f` looks live; long enough to batch thousands of lines per write.
    static let flushInterval: Duration = .milliseconds(100)
    static let flushThreshold = 64 * 1024
    /// 8 MiB of lines not yet written (a stalled reader): past it, lines are dropped.
    static let bufferLimit = 8 * 1024 * 1024

    private struct State {
        var buffer: [UInt8] = []
        var closed = false
    }

    private let fd: CInt
    private let ownsDescriptor: Bool
    private let format: AccessLogConfig.Format
    private let generation: Int
    private let pid: Int32
    private let state = Mutex(State())
    /// The writer's side: serialises writes to the fd (the flusher thread and `close`).
    private let writer = Mutex(Writer())
    /// Wakes the flusher before its interval when the buffer fills up.
    private let wakeUp = DispatchSemaphore(value: 0)
    private let logger: Logger
    public let path: String

    /// `file`: for a path other than `stdout` and `stderr`, the fd the master opened it as
    /// (the handoff's `access_log`), which the log then owns.
    public init(configuration: AccessLogConfig, file: CInt?, generation: Int, logger: Logger) {
        self.path = configuration.path
        self.logger = logger
        self.format = configuration.format
        self.generation = generation
        self.pid = getpid()
        switch (configuration.path, file) {
        case ("stdout", _):
            self.fd = STDOUT_FILENO
            self.ownsDescriptor = false
        case ("stderr", _):
            self.fd = STDERR_FILENO
            self.ownsDescriptor = false
        case (_, let file?):
            self.fd = file
            self.ownsDescriptor = true
        case (let path, nil):
            preconditionFailure("access log \(path): a file path without the master's fd")
        }
        let interval = Int(Self.flushInterval.nanosecondsValue / 1_000_000)
        let wakeUp = self.wakeUp
        Thread.detachNewThread { [weak self] in
            while let log = self, log.flushOnce() {
                _ = wakeUp.wait(timeout: .now() + .milliseconds(interval))
            }
        }
    }

    /// Lines dropped because the reader could not keep up or a write failed: a gateway-wide
    /// counter (`gatewayd_access_log_dropped_lines_total`), so a stalled or full log shows in
    /// `/metrics`.
    private let droppedLines = Counter(label: "gatewayd_access_log_dropped_lines_total")

    func log(_ record: RequestRecord) {
        var line = self.format == .json ? self.jsonLine(record) : self.combinedLine(record)
        line.append("\n")
        enum Outcome { case buffered, flushNow, dropped }
        let outcome = self.state.withLock { state -> Outcome in
            guard !state.closed else { return .buffered }
            if state.buffer.count + line.utf8.count > Self.bufferLimit {
                return .dropped
            }
            state.buffer.append(contentsOf: line.utf8)
            return state.buffer.count >= Self.flushThreshold ? .flushNow : .buffered
        }
        switch outcome {
        case .flushNow: self.wakeUp.signal()
        case .dropped: self.droppedLines.increment()
        case .buffered: break
        }
    }

    private struct Writer {
        /// The buffer the request path fills next: swapped with the full one under the state
        /// lock, so taking the lines costs no copy and no allocation while requests wait.
        var spare: [UInt8] = []
        /// A failing write fails again at the next flush, 100 ms later: said at most every 10 s.
        var errors = LogThrottle()
        /// Lines lost since writes began to fail; nil while they succeed.
        var lostSinceFailing: Int?
    }

    /// Writes what is buffered. Returns false once the log is closed.
    @discardableResult
    func flushOnce() -> Bool {
        self.writer.withLock { writer in
            var bytes = writer.spare
            writer.spare = []
            let open = self.state.withLock { state -> Bool in
                swap(&state.buffer, &bytes)
                return !state.closed
            }
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes { raw in
                    write(self.fd, raw.baseAddress! + offset, raw.count - offset)
                }
                if written < 0 {
                    if errno == EINTR { continue }
                    // ENOSPC, EPIPE, EIO…: these lines are lost; serving goes on.
                    self.writeFailed(errno: errno, unwritten: bytes[offset...], writer: &writer)
                    break
                }
                offset += written
            }
            if offset == bytes.count, !bytes.isEmpty, let lost = writer.lostSinceFailing {
                // The disk has room again, or a log shipper reading a FIFO came back.
                writer.lostSinceFailing = nil
                self.logger.notice("access log \(self.path): writing again; \(lost) lines were lost meanwhile")
            }
            bytes.removeAll(keepingCapacity: true)
            writer.spare = bytes
            return open
        }
    }

    private func writeFailed(errno code: CInt, unwritten: ArraySlice<UInt8>, writer: inout Writer) {
        // A line cut by a partial write is lost too: its newline is in what is left.
        let lines = unwritten.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
        self.droppedLines.increment(by: lines)
        writer.lostSinceFailing = (writer.lostSinceFailing ?? 0) + lines
        guard let quiet = writer.errors.shouldReport() else { return }
        let since = quiet > 0 ? " (and \(quiet) failed writes since the last message)" : ""
        self.logger.error(
            "access log \(self.path): write: \(String(cString: strerror(code))); \(lines) lines lost\(since), counted in gatewayd_access_log_dropped_lines_total"
        )
    }

    /// Flushes and closes the file. Later lines are dropped.
    public func close() {
        self.flushOnce()
        self.state.withLock { $0.closed = true }
        self.writer.withLock { _ in
            if self.ownsDescriptor {
                closeDescriptor(self.fd)
            }
        }
    }

    // MARK: Formats

    private func jsonLine(_ record: RequestRecord) -> String {
        let duration = Double(record.durationNanoseconds) / 1e6
        var line = "{\"time\":\"\(Self.timestamp())\""
        line += ",\"generation\":\(self.generation),\"pid\":\(self.pid)"
        line += ",\"client\":\"\(jsonEscaped(record.client))\""
        line += ",\"method\":\"\(jsonEscaped(record.method))\""
        // The path and the query apart: a query is often what tells two requests apart, and a
        // collector should not have to split it out of the path.
        let query = record.uri.firstIndex(of: "?")
        line += ",\"path\":\"\(jsonEscaped(String(record.uri[..<(query ?? record.uri.endIndex)])))\""
        line += ",\"query\":" + jsonString(query.map { String(record.uri[record.uri.index(after: $0)...]) })
        line += ",\"protocol\":\"\(record.protocolName)\""
        line += ",\"host\":" + jsonString(record.host)
        line += ",\"status\":\(record.status),\"bytes\":\(record.bytesSent)"
        line += ",\"route\":\"\(jsonEscaped(record.route))\""
        line += ",\"upstream\":" + jsonString(record.upstream)
        line += ",\"upstream_status\":" + (record.upstreamStatus.map(String.init) ?? "null")
        line += ",\"user_agent\":" + jsonString(record.userAgent)
        line += ",\"referer\":" + jsonString(record.referer)
        line += ",\"duration_ms\":\(Self.milliseconds(duration))"
        line += ",\"request_id\":\"\(jsonEscaped(record.requestID))\""
        if record.aborted {
            line += ",\"aborted\":true"
        }
        line += "}"
        return line
    }

    /// Apache's combined format, then the fields it lacks as `key=value`.
    private func combinedLine(_ record: RequestRecord) -> String {
        let duration = Double(record.durationNanoseconds) / 1e6
        let version = record.protocolName
        let request = Self.quoted("\(record.method) \(record.uri) \(version)")
        var line = "\(record.client) - - [\(Self.commonLogTime())] \(request) \(record.status) \(record.bytesSent)"
        line += " \(Self.quoted(record.referer ?? "-")) \(Self.quoted(record.userAgent ?? "-"))"
        line += " request_id=\(record.requestID) duration_ms=\(Self.milliseconds(duration))"
        line += " upstream=\(record.upstream ?? "-") upstream_status=\(record.upstreamStatus.map(String.init) ?? "-")"
        line += " host=\(Self.quoted(record.host ?? "-")) route=\(record.route)"
        line += " generation=\(self.generation) pid=\(self.pid)"
        if record.aborted {
            line += " aborted=1"
        }
        return line
    }

    /// A JSON string, or `null`.
    private func jsonString(_ text: String?) -> String {
        text.map { "\"\(jsonEscaped($0))\"" } ?? "null"
    }

    private static func quoted(_ text: String) -> String {
        "\""
            + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .filter { $0.asciiValue.map { $0 >= 0x20 } ?? true } + "\""
    }

    private static func milliseconds(_ value: Double) -> String {
        String(Double(Int(value * 1000)) / 1000)
    }

    private static func currentTime() -> (tm, Int) {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return (parts, Int(spec.tv_nsec / 1_000_000))
    }

    /// RFC 3339, UTC, milliseconds: `2026-11-27T13:53:52.123Z`.
    static func timestamp() -> String {
        let (t, millis) = currentTime()
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T"
            + "\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `27/Nov/2026:13:53:52 +0000`.
    static func commonLogTime() -> String {
        let (t, _) = currentTime()
        func pad(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(pad(t.tm_mday))/\(months[Int(t.tm_mon)])/\(t.tm_year + 1900):"
            + "\(pad(t.tm_hour)):\(pad(t.tm_min)):\(pad(t.tm_sec)) +0000"
    }
}

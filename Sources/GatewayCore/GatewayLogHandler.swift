import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Logs to stderr, one line per event, as text for people or JSON for collectors.
/// Master and workers share it, so every line carries the pid and the role. The level is the
/// process's live level for the logger's target (`LiveLogLevels`, chosen by the label): setting
/// it on one logger sets it for every logger of that target in the process.
public struct GatewayLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        case text, json
    }

    public var logLevel: Logger.Level {
        get { LiveLogLevels.level(of: target) }
        set { LiveLogLevels.set(newValue, for: target) }
    }
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    /// A label that names no target logs as the worker's (tests' loggers, libraries').
    private let target: LogTarget
    private let format: Format
    private let pid = getpid()

    /// One lock for the process: lines from several threads never interleave.
    private static let output = Mutex(())

    public init(label: String, format: Format) {
        self.label = label
        self.target = LogTarget(label: label) ?? .worker
        self.format = format
    }

    /// Installs the handler for the whole process, every target at `level` to begin with.
    public static func bootstrap(format: Format, level: Logger.Level) {
        for target in LogTarget.allCases { LiveLogLevels.set(level, for: target) }
        LoggingSystem.bootstrap { label in GatewayLogHandler(label: label, format: format) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let timestamp = Self.timestamp()
        let line: String
        switch format {
        case .text:
            var text = "\(timestamp) \(event.level) \(label)[\(pid)]: \(event.message)"
            for key in merged.keys.sorted() {
                text += " \(key)=\(Self.quoteIfNeeded("\(merged[key]!)"))"
            }
            line = text
        case .json:
            var object: [String: String] = [
                "time": timestamp, "level": "\(event.level)", "logger": label, "pid": "\(pid)",
                "message": "\(event.message)",
            ]
            for (key, value) in merged { object[key] = "\(value)" }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            line = (try? String(decoding: encoder.encode(object), as: UTF8.self)) ?? "{}"
        }
        let bytes = Array((line + "\n").utf8)
        Self.output.withLock { _ in
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return }
                    offset += n
                }
            }
        }
    }

    private static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var tm = tm()
        var seconds = ts.tv_sec
        gmtime_r(&seconds, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1_000_000)
    }

    private static func quoteIfNeeded(_ value: String) -> String {
        value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) || value.isEmpty
            ? "\"" + value.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : value
    }
}

import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Paths of the binaries under test. `make test` sets GATEWAYD_BIN and GATEWAYCTL_BIN;
/// otherwise `make test`'s release build next to this package is used (a debug SwiftNIO asserts on the
/// accept race between processes sharing a listening socket; see the Makefile).
enum Binaries {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static var gatewayd: String {
        ProcessInfo.processInfo.environment["GATEWAYD_BIN"]
            ?? packageRoot.appendingPathComponent(".build-test/release/gatewayd").path
    }
    static var gatewayctl: String {
        ProcessInfo.processInfo.environment["GATEWAYCTL_BIN"]
            ?? packageRoot.appendingPathComponent(".build-test/release/gatewayctl").path
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A temporary directory removed at the end of the test.
final class TemporaryDirectory {
    let path: String
    init() throws {
        var template = Array("/tmp/gatewayd-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp failed") }
        path = String(cString: made)
    }
    func file(_ name: String) -> String { path + "/" + name }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The result of running a command to completion.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    /// Killed by a signal (`status` is then the signal's number).
    var signaled = false
}

/// Runs a command with a deadline; kills it if it overruns.
@discardableResult
func runCommand(
    _ executable: String, _ arguments: [String], timeout: Duration = .seconds(60), environment: [String: String]? = nil
) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let outData = Mutex2<Data>(Data())
    let errData = Mutex2<Data>(Data())
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        outData.set(out.fileHandleForReading.readDataToEndOfFile())
        group.leave()
    }
    group.enter()
    DispatchQueue.global().async {
        errData.set(err.fileHandleForReading.readDataToEndOfFile())
        group.leave()
    }
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        if ContinuousClock.now > deadline {
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw HarnessError("\(executable) \(arguments.joined(separator: " ")) overran \(timeout)")
        }
        usleep(2_000)
    }
    process.waitUntilExit()
    group.wait()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: outData.get(), as: UTF8.self),
        stderr: String(decoding: errData.get(), as: UTF8.self), signaled: process.terminationReason == .uncaughtSignal)
}

final class Mutex2<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ value: T) { self.value = value }
    func get() -> T { lock.withLock { value } }
    func set(_ new: T) { lock.withLock { value = new } }
    func update<R>(_ body: (inout T) -> R) -> R { lock.withLock { body(&value) } }
}

func openFileDescriptorCount(_ pid: Int32) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}

/// The seed of a randomised test: GATEWAYD_FUZZ_SEED replays a run, else the clock's
/// milliseconds. Printed with the test's name, so that a failure names its replay.
func fuzzSeed(for test: String) -> UInt64 {
    let seed =
        ProcessInfo.processInfo.environment["GATEWAYD_FUZZ_SEED"].flatMap { UInt64($0) }
        ?? UInt64(Date().timeIntervalSince1970 * 1000)
    print("\(test): seed \(seed) (replay with GATEWAYD_FUZZ_SEED=\(seed))")
    return seed
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
/// For conditions that have no event to wait on (a process disappearing, a state reported by
/// status): the poll interval is small, and the timeout only bounds a failing test.
func waitUntil(
    _ what: String, timeout: Duration = .seconds(20), _ condition: () throws -> Bool
) throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try condition() { return }
        if ContinuousClock.now > deadline { throw HarnessError("timed out after \(timeout) waiting for \(what)") }
        usleep(5_000)
    }
}

/// Direct children of a process, from /proc (field 4 of /proc/PID/stat is the parent).
func childPids(of parent: Int32) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry -> Int32? in
        guard let pid = Int32(entry),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, Int32(fields[1]) == parent else { return nil }
        return pid
    }
}

extension Duration {
    /// Whole milliseconds, for the numbers tests print.
    var wholeMilliseconds: Int {
        Int(components.seconds) * 1000 + Int(components.attoseconds / 1_000_000_000_000_000)
    }
}

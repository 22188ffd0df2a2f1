import Foundation

#if canImport(Glibc)
    import Glibc
#endif

// What tests read about processes from /proc: memory, and who holds which connection.

/// Resident set size of a process in bytes (VmRSS of /proc/PID/status), nil once it is gone.
func residentBytes(_ pid: Int32) -> Int? {
    let text = readWholeFile("/proc/\(pid)/status")
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { return nil }
    return kib * 1024
}

/// Samples the RSS of some processes every 10 ms on a thread of its own, keeping the peak of each.
final class ResidentSampler: @unchecked Sendable {
    private let peaks = Mutex2<[Int32: Int]>([:])
    private let running = Mutex2(true)
    private let finished = DispatchSemaphore(value: 0)

    init(pids: [Int32]) {
        Thread.detachNewThread { [peaks, running, finished] in
            while running.get() {
                for pid in pids {
                    if let rss = residentBytes(pid) {
                        peaks.update { $0[pid] = max($0[pid] ?? 0, rss) }
                    }
                }
                usleep(10_000)
            }
            finished.signal()
        }
    }

    deinit { running.set(false) }

    /// Stops sampling; the peak RSS of each process seen.
    func stop() -> [Int32: Int] {
        if running.get() {
            running.set(false)
            finished.wait()
        }
        return peaks.get()
    }
}

/// Which of `pids` holds the server side of each client connection to 127.0.0.1:`port`, keyed
/// by the client's local port; connections not accepted yet are missing. From /proc: the
/// socket in /proc/net/tcp whose local port is `port` and remote port the client's, and the
/// process whose fd table holds that socket's inode.
func serverSideOwners(port: UInt16, among pids: [Int32]) -> [UInt16: Int32] {
    var ownerOfInode: [String: Int32] = [:]
    for pid in pids {
        let directory = "/proc/\(pid)/fd"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + entry)) ?? ""
            if target.hasPrefix("socket:[") {
                ownerOfInode[String(target.dropFirst(8).dropLast())] = pid
            }
        }
    }
    let table = readWholeFile("/proc/net/tcp")
    let serverSide = String(format: "0100007F:%04X", port)
    var owners: [UInt16: Int32] = [:]
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 9, fields[1] == serverSide, let owner = ownerOfInode[String(fields[9])],
            let remotePort = fields[2].split(separator: ":").last.flatMap({ UInt16($0, radix: 16) })
        else { continue }
        owners[remotePort] = owner
    }
    return owners
}

/// A file read to its end with read(2). Foundation's `String(contentsOfFile:)` stops after the
/// first page of a /proc file that reports size 0 (it returned 27 of 120 lines of /proc/net/tcp).
func readWholeFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            bytes += chunk.prefix(n)
        } else if n < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

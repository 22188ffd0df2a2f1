// floor-epoll PORT [THREADS]: no framework. One listening socket shared by THREADS threads,
// each with its own epoll set (the listener added with EPOLLEXCLUSIVE, as nginx does), level
// triggered; every connection is nonblocking and owned by the thread that accepted it. Each
// "\r\n\r\n" read gets one fixed response; the answers of one read go out in one write.
// What a hand-written Swift event loop costs per request, with nothing else on the path.
import CFloorEpoll

#if canImport(Glibc)
    import Glibc
#endif

let port = UInt16(CommandLine.arguments.dropFirst().first ?? "18083") ?? 18083
let threads = Int(CommandLine.arguments.dropFirst(2).first ?? "2") ?? 2
let listener = makeListener(port: port)
signal(SIGPIPE, SIG_IGN)
for _ in 1..<max(1, threads) {
    startLoopThread(listener: listener)
}
print("READY \(port)")
floor_flush_stdout()
runLoop(listener: listener)

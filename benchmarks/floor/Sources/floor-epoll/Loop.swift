import CFloorEpoll

#if canImport(Glibc)
    import Glibc
#endif

let response = Array(
    "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello world!\n".utf8)
let closeResponse = Array(
    "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello world!\n"
        .utf8)
let needle = Array("onnection: close".utf8)

func fail(_ call: String) -> Never {
    perror(call)
    exit(1)
}

func makeListener(port: UInt16) -> CInt {
    let listener = socket(
        AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var one: CInt = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard bound == 0 else { fail("bind") }
    guard listen(listener, 1024) == 0 else { fail("listen") }
    return listener
}

/// One thread's loop. Per-connection state is indexed by fd: how much of "\r\n\r\n" the last
/// read ended with, and whether the client asked to close.
final class Loop {
    let listener: CInt
    let epfd: CInt
    var matched = [UInt8](repeating: 0, count: 65536)
    var closing = [Bool](repeating: false, count: 65536)
    let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    var output = [UInt8]()

    init(listener: CInt) {
        self.listener = listener
        self.epfd = epoll_create1(CInt(EPOLL_CLOEXEC))
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue
        event.data.fd = listener
        guard epoll_ctl(self.epfd, CInt(EPOLL_CTL_ADD), listener, &event) == 0 else { fail("epoll_ctl") }
        self.output.reserveCapacity(65536)
    }

    func run() -> Never {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while true {
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(self.epfd, $0.baseAddress, 256, -1) }
            if n < 0 {
                if errno == EINTR { continue }
                fail("epoll_wait")
            }
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                if fd == self.listener { self.acceptAll() } else { self.serve(fd) }
            }
        }
    }

    func acceptAll() {
        while true {
            let fd = floor_accept4(self.listener)
            if fd < 0 { return }
            guard fd < 65536 else {
                close(fd)
                continue
            }
            var on: CInt = 1
            setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<CInt>.size))
            self.matched[Int(fd)] = 0
            self.closing[Int(fd)] = false
            var event = epoll_event()
            event.events = EPOLLIN.rawValue
            event.data.fd = fd
            epoll_ctl(self.epfd, CInt(EPOLL_CTL_ADD), fd, &event)
        }
    }

    func serve(_ fd: CInt) {
        let count = read(fd, self.input.baseAddress, self.input.count)
        if count <= 0 {
            if count < 0 && errno == EAGAIN { return }
            close(fd)
            return
        }
        let bytes = UnsafeRawBufferPointer(rebasing: self.input[..<count])
        var closeAfter = self.closing[Int(fd)]
        if !closeAfter, Self.contains(bytes) { closeAfter = true }
        var matched = self.matched[Int(fd)]
        self.output.removeAll(keepingCapacity: true)
        for byte in bytes {
            if byte == 13 {
                matched = (matched == 0 || matched == 2) ? matched + 1 : 1
            } else if byte == 10, matched == 1 || matched == 3 {
                matched += 1
                if matched == 4 {
                    matched = 0
                    self.output.append(contentsOf: closeAfter ? closeResponse : response)
                }
            } else {
                matched = 0
            }
        }
        self.matched[Int(fd)] = matched
        self.closing[Int(fd)] = closeAfter
        if !self.output.isEmpty {
            // Small answers: they fit in an empty socket buffer (wrk reads each one).
            _ = self.output.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if closeAfter { close(fd) }
        }
    }

    static func contains(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= needle.count else { return false }
        var i = 0
        while i <= bytes.count - needle.count {
            var j = 0
            while j < needle.count, bytes[i + j] == needle[j] { j += 1 }
            if j == needle.count { return true }
            i += 1
        }
        return false
    }
}

/// Outside main.swift, so that the thread's entry point is not main-actor isolated.
func startLoopThread(listener: CInt) {
    var thread = pthread_t()
    let box = UnsafeMutablePointer<CInt>.allocate(capacity: 1)
    box.pointee = listener
    pthread_create(&thread, nil, { arg in Loop(listener: arg!.assumingMemoryBound(to: CInt.self).pointee).run() }, box)
}

func runLoop(listener: CInt) -> Never {
    Loop(listener: listener).run()
}

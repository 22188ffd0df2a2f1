import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Listener table", .timeLimit(.minutes(1)))
struct ListenerTableTests {
    func spec(_ name: String, _ address: String, backlog: Int32 = 128) throws -> ListenerTable.Spec {
        ListenerTable.Spec(name: name, address: try ListenerAddress(parsing: address), backlog: backlog)
    }

    @Test("a kept listener keeps its socket; a removed one closes when its last generation goes")
    func keepAndRelease() throws {
        let table = ListenerTable()
        defer { table.closeAll() }
        let first = try table.acquire([try spec("web", "127.0.0.1:0"), try spec("admin", "127.0.0.1:0")], for: 1)
        let web = first.first { $0.name == "web" }!
        let admin = first.first { $0.name == "admin" }!
        let second = try table.acquire([try spec("web", "127.0.0.1:0")], for: 2)
        #expect(second.map(\.fd) == [web.fd])
        #expect(table.release(generation: 1).map(\.fd) == [admin.fd])
        #expect(fcntl(admin.fd, F_GETFD) == -1, "admin's fd is closed")
        #expect(fcntl(web.fd, F_GETFD) != -1, "web's fd is still open")
        #expect(table.release(generation: 2).map(\.fd) == [web.fd])
        #expect(table.all.isEmpty)
    }

    @Test("renaming a listener on the same address keeps the same socket")
    func renameKeepsSocket() throws {
        let table = ListenerTable()
        defer { table.closeAll() }
        let fd = try table.acquire([try spec("web", "127.0.0.1:0")], for: 1)[0].fd
        let port = try ListeningSocket.localAddress(fd: fd).port
        let renamed = try table.acquire([try spec("www", "127.0.0.1:\(port)")], for: 2)
        #expect(renamed[0].fd == fd)
        #expect(renamed[0].name == "www")
    }

    @Test("a failed bind closes what the same call bound and changes nothing")
    func bindFailureRollsBack() throws {
        let table = ListenerTable()
        defer { table.closeAll() }
        try table.acquire([try spec("web", "127.0.0.1:0")], for: 1)
        let before = table.all
        let blocker = try ListeningSocket.bind(try ListenerAddress(parsing: "127.0.0.1:0"), backlog: 1)
        defer { closeDescriptor(blocker) }
        let taken = try ListeningSocket.localAddress(fd: blocker).port
        #expect(throws: SystemCallError.self) {
            try table.acquire(
                [
                    try spec("web", "127.0.0.1:0"), try spec("new", "127.0.0.1:0"),
                    try spec("bad", "127.0.0.1:\(taken)"),
                ], for: 2)
        }
        #expect(table.all == before)
        do {
            try table.acquire([try spec("bad", "127.0.0.1:\(taken)")], for: 3)
        } catch {
            #expect("\(error)" == "bind 127.0.0.1:\(taken): Address already in use")
        }
    }
}

@Suite("Listener addresses")
struct ListenerAddressTests {
    @Test(arguments: ["127.0.0.1:8080", "0.0.0.0:80", "[::1]:8080", "[::]:443"])
    func valid(_ text: String) throws {
        #expect(try ListenerAddress(parsing: text).description == text)
    }

    @Test(
        "IPv6 spellings are canonical",
        arguments: [("[::0]:80", "[::]:80"), ("[0:0::1]:80", "[::1]:80"), ("[FE80::A]:1", "[fe80::a]:1")])
    func canonical(_ text: String, _ expected: String) throws {
        #expect(try ListenerAddress(parsing: text).description == expected)
    }

    @Test(arguments: [
        ("localhost:80", "not an IP address"), ("127.0.0.1", "expected HOST:PORT"), ("::1:80", "need brackets"),
        ("127.0.0.1:99999", "port must be"), ("[::1:80", "missing ']'"), ("1.2.3.4:", "port must be"),
    ])
    func invalid(_ text: String, _ reason: String) {
        do {
            _ = try ListenerAddress(parsing: text)
            Issue.record("\(text) parsed")
        } catch {
            #expect(error.description.contains(reason), "\(error)")
        }
    }
}

import Foundation
import GatewayCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `/status` on the admin listener, loaded by a real browser (Debian's chromium, headless).
@Suite("Status page", .serialized, .timeLimit(.minutes(3)))
struct StatusPageTests {
    /// Chromium headless: its DOM after loading `url` (no JavaScript runs on the page: it has
    /// none). `--no-sandbox`: the tests run as root, where chromium's sandbox refuses to start.
    static func chromium(_ arguments: [String], in directory: TemporaryDirectory) throws -> CommandResult {
        try runCommand(
            "/usr/bin/chromium",
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(directory.file("chromium"))",
            ] + arguments, timeout: .seconds(90))
    }

    @Test("a browser shows the serving generation, its workers and the last reload's phases and changes")
    func browserRendersStatus() throws {
        let gatewayd = try GatewaydProcess(config: ObservabilityTests.config(body: "v1"))
        let admin = try gatewayd.port(of: "admin")
        try gatewayd.writeConfig(ObservabilityTests.config(body: "v2"))
        #expect(try gatewayd.reload().status == 0)
        try gatewayd.waitUntilSingleGeneration()
        let workers = try #require(try gatewayd.status().generations.first?.workers.map(\.pid))
        // The master sends the page's snapshot when it changes, within 0.5 s.
        try waitUntil("the page to show generation 1 gone") {
            let body = try httpGet(port: admin, path: "/status").body
            return body.contains("id=\"generation-2\"") && !body.contains("id=\"generation-1\"")
        }

        let dom = try Self.chromium(
            ["--dump-dom", "http://127.0.0.1:\(admin)/status"], in: gatewayd.directory)
        #expect(dom.status == 0, "\(dom.stderr)")
        let page = dom.stdout
        #expect(page.contains("<title>gatewayd status</title>"), "\(page)")
        let row = try #require(
            page.split(separator: "\n").first { $0.contains("id=\"generation-2\"") }, "no generation 2 in \(page)")
        #expect(row.contains("serving"))
        for pid in workers { #expect(row.contains(" \(pid) ready"), "worker \(pid) in \(row)") }
        let reload = try #require(page.split(separator: "\n").first { $0.contains("class=\"event reload\"") })
        for phase in ["validate", "bind", "spawn", "ready", "switch"] {
            #expect(reload.contains("class=\"phase \(phase)\""), "\(phase) in \(reload)")
        }
        #expect(reload.contains("routes changed: hello"), "\(reload)")
        #expect(page.contains("http-equiv=\"refresh\""))
        #expect(!page.contains("<script"))
    }
}

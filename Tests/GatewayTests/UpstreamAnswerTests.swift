import Foundation
import GatewayConfig
import GatewayCore
import Testing

@testable import Gateway

/// One route to a scripted upstream; the upstream is stopped when `body` returns.
private func withScriptedProxy<T>(
    _ script: @escaping @Sendable (RawClient, Int) throws -> Void,
    _ body: (UInt16, ScriptedUpstream) async throws -> T
) async throws -> T {
    let upstream = try ScriptedUpstream(script)
    defer { upstream.stop() }
    return try await withProxy(
        upstreams: [UpstreamConfig(name: "api", endpoints: [upstream.endpoint])],
        routes: [proxyRoute("all", upstream: "api")]
    ) { port in
        try await body(port, upstream)
    }
}

/// Answers a server can legally give (or gives anyway) that a well-behaved demo upstream never
/// does: each pins one rule of how the gateway frames, reuses or refuses an upstream's answer.
@Suite("Reverse proxy: unusual upstream answers", .serialized, .timeLimit(.minutes(2)))
struct UpstreamAnswerTests {
    @Test("Connection: content-length from the upstream does not strip the response's framing")
    func connectionOptionNamesFraming() async throws {
        try await withScriptedProxy({ connection, _ in
            while true {
                _ = try connection.readRequestHead()
                try connection.send(
                    "HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nx-hop: 1\r\nContent-Length: 5\r\n\r\nhello"
                )
            }
        }) { port, _ in
            try await onThreadThrowing {
                let client = try RawClient(port: port)
                defer { client.close() }
                for _ in 0..<2 {
                    try client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                    let response = try client.readResponse()
                    #expect(response.status == 200)
                    #expect(response.body == "hello")
                    #expect(response.header("content-length") == "5")
                    #expect(response.header("x-hop") == nil)
                }
            }
        }
    }

    @Test("a 204 without Content-Length leaves the upstream connection reusable")
    func noContentReusesConnection() async throws {
        try await withScriptedProxy({ connection, _ in
            while true {
                _ = try connection.readRequestHead()
                try connection.send("HTTP/1.1 204 No Content\r\n\r\n")
            }
        }) { port, upstream in
            try await onThreadThrowing {
                for _ in 0..<3 {
                    let response = try fetch(port: port, "/a")
                    #expect(response.status == 204)
                }
            }
            #expect(upstream.accepted.withLock { $0 } == 1)
        }
    }

    @Test("an upstream that answers and closes without saying so: the next request gets a new connection")
    func answerThenFIN() async throws {
        try await withScriptedProxy({ connection, _ in
            let head = try connection.readRequestHead()
            if let length = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") })
                .flatMap({ Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) })
            {
                _ = try connection.read(count: length)
            }
            try connection.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            connection.shutdownOutput()
            // Stays open for reading, as a server lingering on close does.
            _ = try? connection.readUntilEOF()
        }) { port, upstream in
            let first = try await onThreadThrowing { try fetch(port: port, "/a") }
            #expect(first.status == 200)
            // The gateway closes the connection it saw end (the script's read then ends): it
            // was not pooled. (Waiting for that keeps the test free of the race every pool has,
            // a request sent on a connection whose FIN is still on its way, which a POST cannot
            // survive.)
            #expect(try await eventually { upstream.finished.withLock { $0 } == 1 })
            for round in 1...3 {
                let response = try await onThreadThrowing { try fetch(port: port, "POST", "/b", body: "data") }
                #expect(response.status == 200)
                #expect(response.body == "ok")
                #expect(try await eventually { upstream.finished.withLock { $0 } == round + 1 })
            }
            #expect(upstream.accepted.withLock { $0 } == 4)
        }
    }

    @Test("an early 413 and close while the client still sends its body reaches the client")
    func earlyAnswerDuringUpload() async throws {
        try await withScriptedProxy({ connection, _ in
            _ = try connection.readRequestHead()
            try connection.send(
                "HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
        }) { port, _ in
            try await onThreadThrowing {
                let client = try RawClient(port: port)
                defer { client.close() }
                try client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
                try client.send(String(repeating: "x", count: 65536))
                let response = try client.readResponse()
                #expect(response.status == 413)
                #expect(response.body == "too big\n")
            }
        }
    }

    @Test("a transfer coding other than chunked from the upstream is a 502, not a guess at the framing")
    func unknownTransferCoding() async throws {
        try await withScriptedProxy({ connection, _ in
            _ = try connection.readRequestHead()
            try connection.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc")
            connection.shutdownOutput()
            _ = try? connection.readUntilEOF()
        }) { port, _ in
            try await onThreadThrowing {
                let response = try fetch(port: port, "/a")
                #expect(response.status == 502)
            }
        }
    }
}

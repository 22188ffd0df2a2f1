import GatewayHTTP
import Testing

@Suite("HTTP/1 head parser and chunked decoder")
struct HeadParserTests {
    static func parse(
        _ text: String, _ kind: HeadParser.Kind = .request, maxHeadBytes: Int = 64 * 1024
    ) -> (HeadParser.Outcome, MessageHead) {
        var parser = HeadParser(kind, maxHeadBytes: maxHeadBytes)
        var head = MessageHead()
        let bytes = Array(text.utf8)
        let outcome = bytes.withUnsafeBufferPointer { parser.parse($0, into: &head) }
        return (outcome, head)
    }

    static func text(_ source: String, _ range: Range<Int>) -> String {
        String(decoding: Array(source.utf8)[range], as: UTF8.self)
    }

    @Test func requestOffsetsAndFields() {
        let request =
            "\r\nPOST /api/v1?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\n"
            + "Content-Length: 5\r\nConnection: keep-alive, X-Private\r\nx-custom:  padded  \r\n\r\nhello"
        let (outcome, head) = Self.parse(request)
        #expect(outcome == .complete)
        #expect(head.method == .post)
        #expect(Self.text(request, head.target) == "/api/v1?x=1")
        #expect(!head.isHTTP10)
        #expect(head.length == request.utf8.count - 5)
        #expect(head.fields.map(\.name) == [.host, .xForwardedFor, .contentLength, .connection, .other])
        #expect(
            head.fields.map { Self.text(request, $0.valueRange) } == [
                "a.example", "10.0.0.1", "5", "keep-alive, X-Private", "padded",
            ])
        #expect(Self.text(request, head.fields[4].lineRange) == "x-custom:  padded  \r\n")
        #expect(head.framing == .length(5))
        #expect(head.keepAlive)
        #expect(head.hostCount == 1)
        #expect(head.connectionOptions.map { Self.text(request, $0) } == ["X-Private"])
    }

    @Test("a head fed a byte at a time parses as the whole head does")
    func resumable() {
        let request =
            "GET /x HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nUpgrade: websocket\r\n\r\n"
        let bytes = Array(request.utf8)
        var parser = HeadParser(.request)
        var head = MessageHead()
        var outcome = HeadParser.Outcome.incomplete
        for count in 1...bytes.count {
            outcome = bytes.withUnsafeBufferPointer {
                parser.parse(UnsafeBufferPointer(rebasing: $0[0..<count]), into: &head)
            }
            if count < bytes.count { #expect(outcome == .incomplete, "\(count)") }
        }
        #expect(outcome == .complete)
        let (_, whole) = Self.parse(request)
        #expect(head.fields == whole.fields)
        #expect(head.isHTTP10 && head.keepAlive && head.expectsContinue && !head.wantsUpgrade)
    }

    @Test func refusals() {
        let cases: [(String, UInt16)] = [
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: h\n\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("get / HTTP/1.1\r\n\r\n", 400),
            ("GET /\u{1}x HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX : a\r\n\r\n", 400),
        ]
        for (request, status) in cases {
            guard case .failed(let error) = Self.parse(request).0 else {
                Issue.record("accepted \(request.debugDescription)")
                continue
            }
            #expect(error.status == status, "\(request.debugDescription): \(error)")
        }
        // Past max_header_bytes: 431, even before the head ends.
        let long = "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 2000)
        guard case .failed(let error) = Self.parse(long, maxHeadBytes: 1024).0 else {
            Issue.record("a 2 KB head passed a 1 KB limit")
            return
        }
        #expect(error.status == 431)
    }

    @Test func responses() {
        let response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        let (outcome, head) = Self.parse(response, .response)
        #expect(outcome == .complete)
        #expect(head.status == 200)
        #expect(Self.text(response, head.reason) == "OK")
        #expect(head.framing == .length(2))
        #expect(!head.keepAlive)
        let chunked = Self.parse("HTTP/1.1 404 \r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", .response)
            .1
        #expect(chunked.status == 404 && chunked.framing == .chunked && chunked.hasConflictingLength)
        #expect(Self.parse("HTTP/1.0 204\r\n\r\n", .response).1.framing == .untilClose)
        #expect(
            ResponseFraming.body(status: 204, framing: .untilClose, requestMethod: .get) == BodyFraming.none)
        #expect(ResponseFraming.body(status: 200, framing: .length(9), requestMethod: .head) == BodyFraming.none)
        for bad in [
            "HTTP/1.1 20 OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            guard case .failed(let error) = Self.parse(bad, .response).0 else {
                Issue.record("accepted \(bad.debugDescription)")
                continue
            }
            #expect(error.status == 502)
        }
    }

    @Test("a chunked body split anywhere decodes to the same data and end")
    func chunkedSplits() {
        let body = Array("5;a=1\r\nhello\r\n6;b=\"x y\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT".utf8)
        for split in 0...body.count {
            var decoder = ChunkedDecoder()
            var data: [UInt8] = []
            var consumed = 0
            var finished = false
            for part in [0..<split, split..<body.count] where !finished {
                let slice = Array(body[part])
                let outcome = slice.withUnsafeBufferPointer { bytes in
                    decoder.decode(bytes) { data.append(contentsOf: bytes[$0]) }
                }
                guard case .consumed(let count, let ended) = outcome else {
                    Issue.record("split \(split): \(outcome)")
                    return
                }
                consumed += count
                finished = ended
            }
            #expect(String(decoding: data, as: UTF8.self) == "hello world", "split \(split)")
            #expect(finished && consumed == body.count - 4, "split \(split)")
        }
    }

    @Test("a chunk size with leading zeros is taken however long, as llhttp takes it; one past 64 bits is not")
    func chunkSizeLeadingZeros() {
        let zeros = String(repeating: "0", count: 49)
        let body = Array("\(zeros)5\r\nhello\r\n\(zeros)\r\n\r\n".utf8)
        var decoder = ChunkedDecoder()
        var data: [UInt8] = []
        let outcome = body.withUnsafeBufferPointer { bytes in
            decoder.decode(bytes) { data.append(contentsOf: bytes[$0]) }
        }
        #expect(outcome == .consumed(body.count, finished: true))
        #expect(String(decoding: data, as: UTF8.self) == "hello")
        var overflowing = ChunkedDecoder()
        let tooLarge = Array("\(zeros)10000000000000000\r\n".utf8).withUnsafeBufferPointer { overflowing.decode($0) }
        guard case .failed = tooLarge else {
            Issue.record("accepted a chunk size of 2^64: \(tooLarge)")
            return
        }
    }

    @Test func chunkedRefusals() {
        for bad in [
            "zz\r\n", "5 \r\nhello\r\n", "5\r\nhelloXX", "5\nhello", "11111111111111111\r\n",
            "0\r\nContent-Length: 1\r\n\r\n",
            "0\r\nx: a\r\n b\r\n\r\n", "1; a\r\n",
        ] {
            var decoder = ChunkedDecoder()
            let outcome = Array(bad.utf8).withUnsafeBufferPointer { decoder.decode($0) }
            guard case .failed = outcome else {
                Issue.record("accepted \(bad.debugDescription): \(outcome)")
                continue
            }
        }
    }
}

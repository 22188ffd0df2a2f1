import Foundation
import GatewayHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// gatewayd's request parser against llhttp (NIOHTTP1's decoder, which it replaces on the data
/// path), on the whole fuzz corpus of `clients.py` (the named malformed and smuggling cases,
/// seeded random blobs and mutations of valid requests) plus the valid requests: each input
/// must get the same verdict from both. Accepted: the same method, target, version, fields
/// (names and values, in order), keep-alive and body (the same bytes, to the same end).
/// Refused: llhttp must refuse too, unless the refusal is one gatewayd makes on purpose
/// (`HTTPParseError.isStricterThanLLHTTP`: a repeated Content-Length, a transfer coding other
/// than one `chunked`, …), and those are counted and printed.
@Suite("HTTP/1 parser: differential test against llhttp")
struct HeadParserDifferentialTests {
    /// As gatewayd's worker configures its limits (`limits.max_header_bytes` default).
    static let maxHeadBytes = 64 * 1024

    @Test("every corpus input gets the same verdict from gatewayd's parser and llhttp")
    func corpus() throws {
        let seed =
            ProcessInfo.processInfo.environment["GATEWAYD_FUZZ_SEED"].flatMap { UInt64($0) }
            ?? UInt64(Date().timeIntervalSince1970 * 1000)
        print("HeadParserDifferentialTests.corpus: seed \(seed) (replay with GATEWAYD_FUZZ_SEED=\(seed))")
        let cases = try Self.loadCorpus(seed: seed, random: 2000, mutations: 3000)
        #expect(cases.count > 5000)
        var stricter: [String: Int] = [:]
        var verdicts: [String: Int] = [:]
        var failures: [String] = []
        for (name, bytes) in cases {
            let ours = Self.ours(bytes)
            let theirs = Self.llhttp(bytes, oursHeadLength: ours.headLength)
            switch Self.compare(ours: ours, theirs: theirs) {
            case .same(let verdict):
                verdicts[verdict, default: 0] += 1
            case .stricter(let reason):
                stricter[reason, default: 0] += 1
            case .different(let why):
                failures.append("\(name): \(why)\n    input: \(Self.show(bytes))")
            }
        }
        print(
            "verdicts: \(verdicts.sorted { $0.key < $1.key }); stricter than llhttp: \(stricter.sorted { $0.key < $1.key })"
        )
        #expect(
            failures.isEmpty, "\(failures.count) of \(cases.count):\n\(failures.prefix(30).joined(separator: "\n"))")
    }

    // MARK: The two parsers

    struct Parsed: Equatable, CustomStringConvertible {
        var method: String
        var target: String
        var isHTTP10: Bool
        var fields: [String]
        var keepAlive: Bool
        /// The body's bytes, and whether its end was found; `nil`: the body was refused.
        var body: [UInt8]?
        var bodyEnded: Bool

        var description: String {
            let text =
                "\(method) \(target) \(isHTTP10 ? "1.0" : "1.1") keepAlive=\(keepAlive) fields=\(fields) body=\(body.map { "\($0.count) bytes" } ?? "refused") ended=\(bodyEnded)"
            return text.count > 400 ? text.prefix(400) + "…" : text
        }
    }

    enum Verdict {
        case accepted(Parsed)
        case refused(String)
        case incomplete
    }

    struct Ours {
        var verdict: Verdict
        var headLength: Int?
        var stricter = false
    }

    static func ours(_ input: [UInt8]) -> Ours {
        input.withUnsafeBufferPointer { bytes in
            var parser = HeadParser(.request, maxHeadBytes: maxHeadBytes, maxFields: Int(UInt16.max))
            var head = MessageHead()
            switch parser.parse(bytes, into: &head) {
            case .incomplete:
                return Ours(verdict: .incomplete)
            case .failed(let error):
                return Ours(verdict: .refused("\(error.status) \(error)"), stricter: error.isStricterThanLLHTTP)
            case .complete:
                func text(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }
                let rest = UnsafeBufferPointer(rebasing: bytes[head.length...])
                var body: [UInt8]? = []
                var ended = false
                switch head.framing {
                case .none:
                    ended = true
                case .length(let length):
                    let take = Int(min(UInt64(rest.count), length))
                    body = Array(rest.prefix(take))
                    ended = UInt64(take) == length
                case .chunked:
                    var decoder = ChunkedDecoder()
                    var data: [UInt8] = []
                    switch decoder.decode(rest, data: { data.append(contentsOf: rest[$0]) }) {
                    case .consumed(_, let finished):
                        body = data
                        ended = finished
                    case .failed:
                        body = nil
                    }
                case .untilClose:
                    body = nil
                }
                return Ours(
                    verdict: .accepted(
                        Parsed(
                            method: text(head.methodRange), target: text(head.target), isHTTP10: head.isHTTP10,
                            fields: head.fields.map { text($0.nameRange) + ": " + text($0.valueRange) },
                            keepAlive: head.keepAlive, body: body, bodyEnded: ended)),
                    headLength: head.length)
            }
        }
    }

    /// llhttp through NIOHTTP1's decoder in an EmbeddedChannel. When gatewayd's parser found a
    /// whole head, llhttp first gets exactly those bytes (its verdict on the head alone), then
    /// the rest (the body).
    static func llhttp(_ input: [UInt8], oursHeadLength: Int?) -> Verdict {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = maxHeadBytes
        limits.maxHeaderFieldSize = maxHeadBytes
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(
                HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits)))
        defer { _ = try? channel.finish() }
        var parts: [HTTPServerRequestPart] = []
        func feed(_ bytes: ArraySlice<UInt8>) -> String? {
            do {
                try channel.writeInbound(ByteBuffer(bytes: bytes))
            } catch {
                while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
                return "\(error)"
            }
            while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
            return nil
        }
        let split = oursHeadLength ?? input.count
        var error = feed(input[..<split])
        guard case .head(let head) = parts.first else {
            return error.map(Verdict.refused) ?? .incomplete
        }
        if error != nil, parts.count == 1 {
            // llhttp refused what it had just handed over: the head's framing (CL with TE…).
            return .refused(error!)
        }
        if error == nil, split < input.count {
            error = feed(input[split...])
        }
        var body: [UInt8]? = []
        var ended = false
        for part in parts.dropFirst() {
            switch part {
            case .head:
                break
            case .body(let buffer):
                if !ended { body?.append(contentsOf: buffer.readableBytesView) }
            case .end:
                ended = true
            }
            if case .head = part { break }
        }
        if !ended, error != nil { body = nil }
        return .accepted(
            Parsed(
                method: head.method.rawValue, target: head.uri, isHTTP10: head.version == .http1_0,
                fields: head.headers.map { "\($0.name): \($0.value)" }, keepAlive: head.isKeepAlive, body: body,
                bodyEnded: ended))
    }

    enum Comparison {
        case same(String)
        case stricter(String)
        case different(String)
    }

    static func compare(ours: Ours, theirs: Verdict) -> Comparison {
        switch (ours.verdict, theirs) {
        case (.accepted(let a), .accepted(let b)):
            if a == b { return .same("accepted") }
            // RFC 9110 §5.5: a field value has no trailing whitespace; llhttp keeps a trailing
            // HTAB (and then misses `Connection: keep-alive<TAB>`). Ours is the RFC's reading.
            var trimmed = b
            trimmed.fields = b.fields.map { String($0.reversed().drop { $0 == "\t" || $0 == " " }.reversed()) }
            // HTTP/1.0 with both `keep-alive` and `close`: llhttp keeps the connection, we close
            // it (closing is always allowed).
            if a.isHTTP10, !a.keepAlive, b.keepAlive,
                a.fields.contains(where: { $0.lowercased() == "connection: close" })
            {
                var same = b
                same.keepAlive = false
                if same == a { return .stricter("Connection: close wins over keep-alive") }
            }
            if trimmed.fields == a.fields, trimmed.fields != b.fields {
                trimmed.keepAlive = a.keepAlive
                if trimmed == a { return .stricter("a field value's trailing HTAB is not part of it (RFC 9110 §5.5)") }
            }
            // A refused body is refused by both; one that has not ended yet may differ in
            // how much of it the two have handed over, not in the bytes.
            return .different("accepted differently:\n    ours:   \(a)\n    llhttp: \(b)")
        case (.refused, .refused):
            return .same("refused")
        case (.incomplete, .incomplete):
            return .same("incomplete")
        case (.refused(let why), .accepted(let parsed)):
            if ours.stricter { return .stricter(why) }
            return .different("refused by us (\(why)), accepted by llhttp: \(parsed)")
        case (.refused(let why), .incomplete):
            if ours.stricter { return .stricter(why) }
            return .different("refused by us (\(why)) before llhttp saw a problem")
        case (.accepted(let parsed), .refused(let why)):
            return .different("accepted by us (\(parsed)), refused by llhttp: \(why)")
        case (.incomplete, .refused(let why)):
            return .different("still waiting for more, llhttp refused: \(why)")
        case (.accepted(let parsed), .incomplete):
            return .different("accepted by us (\(parsed)), llhttp waits for more")
        case (.incomplete, .accepted(let parsed)):
            return .different("still waiting for more, llhttp accepted \(parsed)")
        }
    }

    // MARK: Corpus

    static func loadCorpus(seed: UInt64, random: Int, mutations: Int) throws -> [(String, [UInt8])] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("IntegrationTests/Support/clients.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", script, "corpus", "--seed", "\(seed)", "--random", "\(random)", "--mutations", "\(mutations)",
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let cases = json?["cases"] as? [[String: String]] ?? []
        return cases.compactMap { entry in
            guard let name = entry["name"], let encoded = entry["data"], let bytes = Data(base64Encoded: encoded)
            else { return nil }
            return (name, Array(bytes))
        }
    }

    static func show(_ bytes: [UInt8]) -> String {
        String(String(decoding: bytes.prefix(200), as: UTF8.self).debugDescription.prefix(240))
    }
}

import NIOCore
import NIOHPACK
import Testing

@testable import Gateway

/// How the worker encodes HTTP/2 response fields: the HPACK dynamic table holds only fields
/// whose values repeat, a field with a new value each time is a literal without indexing, and
/// a cookie is never indexed (`HTTP2Connection.appendResponseFields`).
@Suite("HTTP/2 response fields")
struct HTTP2ResponseFieldsTests {
    @Test("repeating fields indexed, changing ones literal without indexing, set-cookie never indexed")
    func indexing() throws {
        let allocator = ByteBufferAllocator()
        var encoder = HPACKEncoder(allocator: allocator)
        var decoder = HPACKDecoder(allocator: allocator)
        var sizes: [Int] = []
        for request in 1...50 {
            let fields = [
                (":status", "200"), ("server", "nginx/1.22.1"), ("date", "Tue, 08 Dec 2026 00:00:\(request % 60)"),
                ("content-type", "text/plain"), ("content-length", "\(request)"),
                ("x-request-id", "e57693341d059cf2000000000000\(1000 + request)"), ("set-cookie", "s=\(request)"),
            ]
            try encoder.beginEncoding(allocator: allocator)
            try HTTP2Connection.appendResponseFields(fields, to: &encoder)
            var block = try encoder.endEncoding()
            sizes.append(block.readableBytes)
            let decoded = try decoder.decodeHeaders(from: &block)
            #expect(decoded.map { [$0.name, $0.value] } == fields.map { [$0.0, $0.1] })
            let indexing = Dictionary(uniqueKeysWithValues: decoded.map { ($0.name, $0.indexable) })
            #expect(indexing[":status"] == .indexable && indexing["server"] == .indexable)
            #expect(indexing["content-type"] == .indexable)
            #expect(indexing["date"] == .nonIndexable && indexing["x-request-id"] == .nonIndexable)
            #expect(indexing["content-length"] == .nonIndexable && indexing["set-cookie"] == .neverIndexed)
        }
        // server and content-type went into the table once, and are one byte each from then on.
        #expect(sizes[1] < sizes[0] && Set(sizes.dropFirst(10)).count <= 3, "\(sizes)")
    }
}

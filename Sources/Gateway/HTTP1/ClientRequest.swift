import GatewayHTTP

/// The request a connection is serving: everything about it in one value, from its head to
/// its access-log line. One object per connection, reset for each request (no allocation per
/// request); `ClientConnection.request` is nil between requests.
final class ClientRequest {
    enum Answer {
        /// Not decided yet.
        case none
        /// Answered from memory when the request ends; its body is discarded meanwhile.
        case local(LocalResponse)
        /// Forwarded: the exchange answers.
        case proxy
        /// The response went out before the request ended (413, 408, an early upstream
        /// answer, a refusal of a request with a body): the rest of the request is discarded
        /// and the connection closes.
        case answered
    }

    var method: Method = .get
    /// The method as text, for the access log and the upstream (`Method.other`'s bytes).
    var methodText = "GET"
    var isHTTP10 = false
    /// Came on an HTTP/2 stream (the access log's protocol).
    var isHTTP2 = false
    var isHEAD = false
    var keepAlive = true
    /// As llhttp decides it: after such a request nothing more is parsed, so unless it becomes
    /// a tunnel the connection closes after the response.
    var wantsUpgrade = false
    var route: RouteHandling = .notFound
    /// For a request that reached no route because it could not be read ("<bad request>").
    var routeName: String?
    var answer: Answer = .none
    var exchange: ProxyExchange?

    // The body, as the client frames it.
    var framing: BodyFraming = .none
    var bodyRemaining: UInt64 = 0
    var chunked = ChunkedDecoder()
    var bodyEnded = true
    /// Answered before its body arrived: `bodyEnded` is set so nothing more is parsed, but
    /// the rest of the body may still come (the close lingers for it).
    var bodyAbandoned = false
    /// Body bytes read so far, for `max_body_bytes`.
    var bodyBytes: Int64 = 0

    /// Nothing after this response: the client asked, the server is draining, or the request
    /// cannot be followed (its body was not read, it asked for an upgrade).
    var closeAfterResponse = false
    var responseStarted = false

    // For the access log and the metrics.
    var start: UInt64 = 0
    var status = 0
    var bytesSent = 0
    var requestID = RequestIDBytes()
    var clientAddress = "-"
    /// As sent (the access log shows what the client asked for).
    var target = ""
    var userAgent: String?
    var referer: String?
    /// The Host field (or an absolute-form target's authority), as sent.
    var host: String?
    /// What the upstream answered, when a response head came back.
    var upstreamStatus: Int?
    var upstreamName: String?
    var upstreamEndpoint: String?
    /// From the request head going upstream to the response head coming back.
    var upstreamLatency: UInt64?
    var aborted = false
    /// Its spans, when tracing is on (nil otherwise, and between requests): ended by
    /// `GatewayServices.completed`.
    var trace: RequestTrace?

    func reset() {
        self.method = .get
        self.methodText = "GET"
        self.isHTTP10 = false
        self.isHTTP2 = false
        self.isHEAD = false
        self.keepAlive = true
        self.wantsUpgrade = false
        self.route = .notFound
        self.routeName = nil
        self.answer = .none
        self.exchange = nil
        self.framing = .none
        self.bodyRemaining = 0
        self.chunked.reset()
        self.bodyEnded = true
        self.bodyAbandoned = false
        self.bodyBytes = 0
        self.closeAfterResponse = false
        self.responseStarted = false
        self.start = 0
        self.status = 0
        self.bytesSent = 0
        self.requestID.count = 0
        self.target = ""
        self.userAgent = nil
        self.referer = nil
        self.host = nil
        self.upstreamStatus = nil
        self.upstreamName = nil
        self.upstreamEndpoint = nil
        self.upstreamLatency = nil
        self.aborted = false
        self.trace = nil
    }
}

/// A request id, as bytes kept inline: the client's `X-Request-Id` when it is sane (1 to 128
/// bytes of visible ASCII without `"` or `\`), else this process's random 64-bit prefix and a
/// counter (unique across workers and restarts without a getrandom(2) per request).
struct RequestIDBytes {
    static let capacity = 128
    private var storage:
        (
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
            UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64
        ) = (
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        )
    var count = 0

    /// A 32-hex-digit id: prefix and counter.
    mutating func generate(prefix: UInt64, counter: UInt64) {
        withUnsafeMutableBytes(of: &self.storage) { raw in
            for (offset, value) in [(0, prefix), (16, counter)] {
                for index in 0..<16 {
                    let digit = UInt8((value >> UInt64(60 - 4 * index)) & 0xF)
                    raw[offset + index] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10
                }
            }
        }
        self.count = 32
    }

    /// The client's id, if acceptable. Returns whether it was.
    mutating func adopt(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !bytes.isEmpty, bytes.count <= Self.capacity,
            bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C })
        else { return false }
        withUnsafeMutableBytes(of: &self.storage) { raw in
            raw.copyMemory(from: UnsafeRawBufferPointer(bytes))
        }
        self.count = bytes.count
        return true
    }

    func withBytes<T>(_ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        withUnsafeBytes(of: self.storage) { raw in
            body(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[0..<self.count]))
        }
    }

    var string: String {
        self.withBytes { String(decoding: $0, as: UTF8.self) }
    }
}

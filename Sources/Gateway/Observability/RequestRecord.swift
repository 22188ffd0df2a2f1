/// What the access log learns about one request once it is answered.
struct RequestRecord {
    var durationNanoseconds: UInt64
    var method: String
    /// The target as the client sent it.
    var uri: String
    var isHTTP10: Bool
    var isHTTP2 = false
    var route: String
    var requestID: String
    var client: String
    var userAgent: String?
    var referer: String?
    /// The Host field (or an absolute-form target's authority), as sent.
    var host: String?
    var status: Int
    /// Response body bytes written to the client.
    var bytesSent: Int
    /// `host:port` of the endpoint of the last attempt, for proxied requests.
    var upstream: String?
    /// What the upstream answered (nil: no response head came back, or not proxied).
    var upstreamStatus: Int?
    /// The response was cut (the upstream failed mid-response, or the client left).
    var aborted: Bool
}

extension RequestRecord {
    var protocolName: String { self.isHTTP2 ? "HTTP/2.0" : self.isHTTP10 ? "HTTP/1.0" : "HTTP/1.1" }
}

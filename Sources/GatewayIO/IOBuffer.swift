import CGatewayIO

#if canImport(Glibc)
    import Glibc
#endif

/// A byte buffer for one direction of one socket: read into at the end, consumed from the
/// front, compacted when the front is consumed. Allocated once per connection and grown only
/// as far as `limit` (a request head, a read burst): no allocation per request.
///
/// A class, not a struct: it is shared by reference between the connection that reads into it
/// and the exchange that forwards from it, and it must never be copied.
public final class IOBuffer {
    public private(set) var storage: UnsafeMutablePointer<UInt8>
    public private(set) var capacity: Int
    public private(set) var readerIndex = 0
    public private(set) var writerIndex = 0
    /// The most it may grow to.
    public let limit: Int
    /// What it is made with, and what it takes again after `park`.
    private let initialCapacity: Int
    /// The storage of a parked buffer: no bytes, never written (capacity 0).
    nonisolated(unsafe) private static let parkedStorage = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)

    public init(capacity: Int, limit: Int) {
        self.capacity = capacity
        self.initialCapacity = capacity
        self.limit = max(limit, capacity)
        self.storage = Self.allocate(capacity)
    }

    deinit {
        if self.capacity > 0 { gw_io_storage_give(self.storage, self.capacity) }
    }

    /// Gives the storage back while the buffer is empty and not in use; the next write or read
    /// takes `initialCapacity` again (from the per-thread cache: no malloc). An idle keep-alive
    /// connection then holds no buffer memory, as nginx frees a keep-alive connection's request
    /// buffers (`ngx_http_set_keepalive`): 10k idle connections cost 10 KiB each before.
    public func park() {
        guard self.isEmpty, self.capacity > 0 else { return }
        gw_io_storage_give(self.storage, self.capacity)
        self.storage = Self.parkedStorage
        self.capacity = 0
        self.readerIndex = 0
        self.writerIndex = 0
    }

    public var isParked: Bool { self.capacity == 0 }

    private static func allocate(_ capacity: Int) -> UnsafeMutablePointer<UInt8> {
        gw_io_storage_take(capacity).assumingMemoryBound(to: UInt8.self)
    }

    @inline(__always) public var readableCount: Int { self.writerIndex - self.readerIndex }
    @inline(__always) public var isEmpty: Bool { self.writerIndex == self.readerIndex }
    /// Room to read into without growing.
    @inline(__always) public var writableCount: Int { self.capacity - self.writerIndex }

    @inline(__always) public var readable: UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: self.storage + self.readerIndex, count: self.readableCount)
    }

    @inline(__always) public func consume(_ count: Int) {
        assert(count <= self.readableCount, "consumed \(count) of \(self.readableCount) bytes")
        // Clamped: a caller holding a count from before a `clear` must not make the readable
        // count negative (every later view would trap).
        self.readerIndex = min(self.readerIndex + count, self.writerIndex)
        if self.readerIndex == self.writerIndex {
            self.readerIndex = 0
            self.writerIndex = 0
        }
    }

    /// Another reader (a TLS session) put `count` bytes into the free space.
    @inline(__always) public func didWrite(_ count: Int) {
        assert(count <= self.writableCount, "wrote \(count) into \(self.writableCount) bytes of room")
        self.writerIndex += count
    }

    public func clear() {
        self.readerIndex = 0
        self.writerIndex = 0
    }

    /// Makes room for at least `count` more bytes at the end: moves the unconsumed bytes to the
    /// front, then grows (doubling) up to `limit`. False if even that is not enough.
    @discardableResult
    public func reserve(_ count: Int) -> Bool {
        if self.writableCount >= count { return true }
        if self.readerIndex > 0 {
            let readable = self.readableCount
            if readable > 0 {
                (self.storage).update(from: self.storage + self.readerIndex, count: readable)
            }
            self.readerIndex = 0
            self.writerIndex = readable
            if self.writableCount >= count { return true }
        }
        let needed = self.writerIndex + count
        guard needed <= self.limit else { return false }
        self.grow(toFit: needed, atMost: self.limit)
        return true
    }

    /// Moves the unconsumed bytes into new storage, doubling the capacity until `needed` fits.
    private func grow(toFit needed: Int, atMost ceiling: Int) {
        var newCapacity = max(self.capacity, self.initialCapacity, 1)
        while newCapacity < needed { newCapacity *= 2 }
        newCapacity = min(newCapacity, ceiling)
        let grown = Self.allocate(newCapacity)
        grown.update(from: self.storage + self.readerIndex, count: self.readableCount)
        if self.capacity > 0 { gw_io_storage_give(self.storage, self.capacity) }
        self.writerIndex -= self.readerIndex
        self.readerIndex = 0
        self.storage = grown
        self.capacity = newCapacity
    }

    /// Gives back memory a large burst needed: back to `capacity` when empty.
    public func shrink(to capacity: Int) {
        guard self.isEmpty, self.capacity > capacity, capacity > 0 else { return }
        gw_io_storage_give(self.storage, self.capacity)
        self.storage = Self.allocate(capacity)
        self.capacity = capacity
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        _ = self.reserveGrowingPastLimit(bytes.count)
        (UnsafeMutableRawPointer(self.storage) + self.writerIndex).copyMemory(
            from: bytes.baseAddress!, byteCount: bytes.count)
        self.writerIndex += bytes.count
    }

    public func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.append(UnsafeRawBufferPointer(bytes))
    }

    public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { self.append($0) }
    }

    public func append(_ byte: UInt8) {
        _ = self.reserveGrowingPastLimit(1)
        self.storage[self.writerIndex] = byte
        self.writerIndex += 1
    }

    public func append(_ text: StaticString) {
        self.append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    public func append(_ text: String) {
        var text = text
        text.withUTF8 { self.append(UnsafeRawBufferPointer($0)) }
    }

    /// Decimal digits of `value`, without a String.
    public func appendDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { raw in
            var index = 24
            var rest = value
            repeat {
                index -= 1
                raw[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            self.append(UnsafeRawBufferPointer(rebasing: raw[index..<24]))
        }
    }

    /// Lower-case hex digits of `value` (a chunk size), without a String.
    public func appendHex(_ value: UInt64) {
        var digits: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &digits) { raw in
            var index = 16
            var rest = value
            repeat {
                index -= 1
                let digit = UInt8(rest & 0xF)
                raw[index] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10
                rest >>= 4
            } while rest > 0
            self.append(UnsafeRawBufferPointer(rebasing: raw[index..<16]))
        }
    }

    /// Output buffers are not bounded by `limit` (what goes in was already accepted); they
    /// are bounded by backpressure upstream of them.
    private func reserveGrowingPastLimit(_ count: Int) -> Bool {
        if self.reserve(count) { return true }
        self.grow(toFit: self.readableCount + count, atMost: .max)
        return true
    }

    // MARK: Socket I/O

    /// One read(2) into the free space (made with `reserve(minimum)` first).
    public func read(from fd: CInt, minimum: Int = 4096) -> IOResult {
        guard self.reserve(minimum) || self.writableCount > 0 else { return .full }
        while true {
            let count = Glibc.read(fd, self.storage + self.writerIndex, self.writableCount)
            if count > 0 {
                self.writerIndex += count
                return .bytes(count)
            }
            if count == 0 { return .endOfFile }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }

    /// One write(2) of what is readable; consumes what went out.
    public func write(to fd: CInt) -> IOResult {
        guard !self.isEmpty else { return .bytes(0) }
        let result = Socket.write(fd, UnsafeRawBufferPointer(self.readable))
        if case .bytes(let count) = result { self.consume(count) }
        return result
    }
}

/// What one read or write did.
public enum IOResult: Equatable, Sendable {
    case bytes(Int)
    case wouldBlock
    case endOfFile
    /// The buffer is at its limit: nothing was read.
    case full
    case failed(CInt)
}

/// Nonblocking socket calls that report would-block instead of throwing: they run for every
/// request. EINTR is retried.
public enum Socket {
    public static func write(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> IOResult {
        guard bytes.count > 0 else { return .bytes(0) }
        while true {
            let count = Glibc.send(fd, bytes.baseAddress, bytes.count, CInt(MSG_NOSIGNAL))
            if count >= 0 { return .bytes(count) }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }

    /// writev(2) of up to 8 pieces (a rewritten head's parts and the body bytes behind it).
    public static func writev(_ fd: CInt, _ vectors: UnsafeMutablePointer<iovec>, count: Int) -> IOResult {
        while true {
            var header = msghdr()
            header.msg_iov = vectors
            header.msg_iovlen = count
            let written = Glibc.sendmsg(fd, &header, CInt(MSG_NOSIGNAL))
            if written >= 0 { return .bytes(written) }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }
}

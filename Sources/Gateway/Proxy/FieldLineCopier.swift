import GatewayHTTP
import GatewayIO

/// Copies a parsed head's field lines that stay into an output buffer, consecutive ones in
/// one copy: a forwarded head is mostly the client's (or the upstream's) own bytes, and
/// copying runs instead of lines keeps it to a few `memcpy`s.
struct FieldLineCopier {
    private let bytes: UnsafeBufferPointer<UInt8>
    private let output: IOBuffer
    private var runStart = -1
    private var runEnd = -1

    init(from bytes: UnsafeBufferPointer<UInt8>, into output: IOBuffer) {
        self.bytes = bytes
        self.output = output
    }

    /// Keeps `field`'s line (name through its CRLF).
    mutating func keep(_ field: Field) {
        if self.runStart >= 0, self.runEnd == Int(field.nameStart) {
            self.runEnd = Int(field.lineEnd)
        } else {
            self.flush()
            self.runStart = Int(field.nameStart)
            self.runEnd = Int(field.lineEnd)
        }
    }

    /// Copies the run kept so far; call before writing anything else into the output.
    mutating func flush() {
        if self.runStart >= 0 {
            self.output.append(UnsafeBufferPointer(rebasing: self.bytes[self.runStart..<self.runEnd]))
            self.runStart = -1
        }
    }
}

/// Sizes as written in the configuration: a number of bytes (`16384`), or a whole number with a
/// binary unit: `32KiB`, `10MiB`, `1GiB`. As in nginx, `K`, `M` and `G` (and `k`, `m`, `g`) are
/// the same binary units: `32k` and `32KiB` are both 32768 bytes. No fractions, signs or spaces,
/// and no `KB`/`MB`: whether those mean 1000 or 1024 depends on who wrote them.
public enum ByteSizeText {
    private static let units: [(suffixes: [String], bytes: Int64)] = [
        (["GiB", "G", "g"], 1 << 30), (["MiB", "M", "m"], 1 << 20), (["KiB", "K", "k"], 1 << 10), ([""], 1),
    ]

    /// Nil for anything not in the grammar, and for sizes past `Int64.max` bytes.
    public static func parse(_ text: String) -> Int64? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 19, let value = Int64(digits) else { return nil }
        let suffix = text.dropFirst(digits.count)
        guard let unit = units.first(where: { $0.suffixes.contains(String(suffix)) }) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: unit.bytes)
        return overflow ? nil : bytes
    }

    /// The shortest text `parse` reads back as `bytes` with an IEC unit: `32KiB`, `10MiB`,
    /// `1536` (not a whole KiB). Negative sizes (never produced by `parse`) are written in bytes.
    public static func format(_ bytes: Int64) -> String {
        guard bytes > 0 else { return String(bytes) }
        for unit in units where unit.bytes > 1 && bytes % unit.bytes == 0 {
            return "\(bytes / unit.bytes)\(unit.suffixes[0])"
        }
        return String(bytes)
    }
}

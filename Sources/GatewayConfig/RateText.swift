/// Request rates as written in the configuration: a positive decimal number, `/`, and a unit,
/// `s`, `m` (minute) or `h`: `100/s`, `6000/m`, `1/h`, `0.5/s`. Read as requests per second.
public enum RateText {
    /// A billion requests a second is far past what one gateway serves; the cap keeps a typo
    /// (`1000000000000/s`) from turning into a limit that cannot be represented exactly.
    public static let maximumPerSecond: Double = 1_000_000_000

    static let units: [(suffix: String, seconds: Double)] = [("s", 1), ("m", 60), ("h", 3600)]

    /// Nil for anything not in the grammar (`100`, `100 /s`, `1e3/s`, `.5/s`, `-1/s`, `100/min`),
    /// for zero, and for more than `maximumPerSecond`.
    public static func parse(_ text: String) -> Double? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let unit = units.first(where: { $0.suffix == parts[1] }) else { return nil }
        let number = parts[0]
        guard number.count <= 32 else { return nil }
        let pieces = number.split(separator: ".", omittingEmptySubsequences: false)
        guard pieces.count <= 2,
            pieces.allSatisfy({ piece in !piece.isEmpty && piece.allSatisfy { $0.isASCII && $0.isNumber } }),
            let value = Double(number)
        else { return nil }
        let perSecond = value / unit.seconds
        guard perSecond > 0, perSecond <= maximumPerSecond else { return nil }
        return perSecond
    }
}

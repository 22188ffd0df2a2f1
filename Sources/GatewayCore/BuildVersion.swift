/// This build's version string: what `gatewayctl upgrade` reports of the new master, and what
/// an upgrade's `hello` carries.
///
/// The one place to wire the real version in: issue 14 (branch wt-ops) adds
/// `GatewayVersion.current`, set at build time; once it is on main, this returns it.
public enum BuildVersion {
    public static let current = "unknown (no version in this build)"
}

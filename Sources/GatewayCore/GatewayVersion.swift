import CGatewayShim

/// gatewayd's version, one string for both binaries, set at build time (CGatewayShim's
/// `gw_version`): `--version`, `gatewayctl status` and the master's start-up log line show it.
public enum GatewayVersion {
    public static let current = String(cString: gw_version())
}

import GatewayCore

/// The recent reloads and upgrades, oldest first: every one is recorded here as it ends, the
/// one place where their outcomes are kept. An upgrade hands it to the new master
/// (`UpgradeMessage.history`), so the gateway's history outlives the process that wrote it.
struct ReloadHistory {
    /// Enough to see a reload storm or a series of failed upgrades, small enough (about 300
    /// bytes a record) that the upgrade's `history` frame stays far below its 4 MiB limit.
    static let capacity = 100

    private(set) var records: [ReloadRecord] = []

    mutating func record(_ record: ReloadRecord) {
        records.append(record)
        if records.count > Self.capacity { records.removeFirst(records.count - Self.capacity) }
    }

    /// What an old master handed over; the newest `capacity` are kept.
    mutating func adopt(_ inherited: [ReloadRecord]) {
        records = Array(inherited.suffix(Self.capacity))
    }
}

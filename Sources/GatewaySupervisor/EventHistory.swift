import GatewayCore

/// The recent events, oldest first: reloads, upgrades, worker exits and restarts, watchdog
/// kills, drains, stops, log-level changes. Every one is recorded here as it ends, the one
/// place where they are kept; `gatewayctl events` reads them, `events --follow` gets each as it
/// is recorded, and an upgrade hands them to the new master (`UpgradeMessage.history`), so the
/// gateway's history outlives the process that wrote it.
struct EventHistory {
    /// Enough to see a reload storm or a series of failed upgrades, small enough (about 400
    /// bytes an event) that the upgrade's `history` frame stays far below its 4 MiB limit.
    static let capacity = 100

    private(set) var events: [GatewayEvent] = []
    /// The id of the last event recorded (ids go on across upgrades).
    private(set) var lastID = 0

    /// Gives the event its id and keeps it; returns it as kept.
    @discardableResult
    mutating func record(_ event: GatewayEvent) -> GatewayEvent {
        var event = event
        lastID += 1
        event.id = lastID
        events.append(event)
        if events.count > Self.capacity { events.removeFirst(events.count - Self.capacity) }
        return event
    }

    /// What an old master handed over; the newest `capacity` are kept, and ids go on from its.
    mutating func adopt(_ inherited: [GatewayEvent]) {
        events = Array(inherited.suffix(Self.capacity))
        lastID = max(lastID, events.map(\.id).max() ?? 0)
    }
}

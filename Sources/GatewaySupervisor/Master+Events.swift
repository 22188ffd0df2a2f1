import Foundation
import GatewayConfig
import GatewayCore

#if canImport(Glibc)
    import Glibc
#endif

/// The master's events (`GatewayEvent`): recorded in `history` as they end, answered to
/// `gatewayctl events`, and streamed to every follower (`events --follow`) with the drains'
/// progress in between.
extension Master {
    /// A follower that reads slower than events come loses the oldest lines it has not read
    /// rather than making the master hold them all: events come a few a second at most (a
    /// reload storm, a crash loop), so 1,000 lines is minutes of backlog.
    static let followerBacklog = 1000

    /// Keeps the event (it gets its id) and sends it to every follower.
    @discardableResult
    func record(_ event: GatewayEvent) -> GatewayEvent {
        let kept = history.record(event)
        metrics?.count(kept)
        metrics?.sample(generations.values)
        publish(ControlStreamLine(event: kept))
        publishStatusPage()
        traceEvent(kept)
        return kept
    }

    /// A new event of this master's, timed now; the caller fills in the rest.
    func newEvent(_ type: GatewayEvent.Kind, at time: Double = Date().timeIntervalSince1970) -> GatewayEvent {
        GatewayEvent(type: type, time: time, masterPid: getpid())
    }

    /// Sends a line to every follower, without keeping it (a drain's countdown).
    func publish(_ line: ControlStreamLine) {
        for follower in eventFollowers.values { follower.yield(line) }
    }

    /// The events after `since` (all by default), and from now on every new one as it is
    /// recorded, until the stream is dropped or the master ends.
    func follow(since: Int?) -> (backlog: [GatewayEvent], stream: AsyncStream<ControlStreamLine>) {
        let (stream, continuation) = AsyncStream.makeStream(
            of: ControlStreamLine.self, bufferingPolicy: .bufferingNewest(Self.followerBacklog))
        let id = nextFollowerID
        nextFollowerID += 1
        eventFollowers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unfollow(id) }
        }
        return (events(since: since), stream)
    }

    func events(since: Int?) -> [GatewayEvent] {
        guard let since else { return history.events }
        return history.events.filter { $0.id > since }
    }

    private func unfollow(_ id: Int) {
        eventFollowers[id] = nil
    }

    /// At the master's end: every follower's stream ends, and its connection closes.
    func endFollowers() {
        for follower in eventFollowers.values { follower.finish() }
        eventFollowers.removeAll()
    }
}

extension GatewayEvent.Diff {
    /// A reload's changes, each named.
    init(_ diff: ConfigDiff) {
        self.init(
            listenersAdded: diff.addedListeners.map(\.name), listenersRemoved: diff.removedListeners.map(\.name),
            listenersChanged: diff.rebindListeners.map(\.name) + diff.backlogChangedListeners,
            routesAdded: diff.routes.added, routesRemoved: diff.routes.removed,
            routesChanged: diff.routes.changed + (diff.routes.orderChanged ? ["(order)"] : []),
            upstreamsChanged: diff.upstreams.added + diff.upstreams.removed + diff.upstreams.changed,
            settings: diff.otherSettings)
    }
}

import GatewayCore
import Synchronization

/// The master's last status snapshot (`status_page` frames), kept for `/status`: written by the
/// thread that reads the master's channel, read by the event loop that answers the page.
final class StatusBoard: Sendable {
    static let shared = StatusBoard()

    private let snapshot = Mutex<StatusSnapshot?>(nil)

    var latest: StatusSnapshot? { snapshot.withLock { $0 } }

    func update(_ new: StatusSnapshot) {
        snapshot.withLock { $0 = new }
    }
}

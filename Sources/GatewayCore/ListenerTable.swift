#if canImport(Glibc)
    import Glibc
#endif

/// The one owner of every listening fd in the master.
///
/// A socket lives as long as some live generation uses it (or it is pinned, e.g. because
/// systemd passed it). A reload asks for the listeners of the new config by name; an existing
/// socket is reused when its configured address is the same, so renaming a listener or
/// changing only its backlog keeps the very same socket, and its accept queue, across the switch.
/// Not thread-safe: the master's actor owns the table.
public final class ListenerTable {
    public struct Spec: Sendable, Equatable {
        public var name: String
        public var address: ListenerAddress
        public var backlog: Int32
        public init(name: String, address: ListenerAddress, backlog: Int32) {
            self.name = name
            self.address = address
            self.backlog = backlog
        }
    }

    /// Where a socket came from; `status` reports it.
    public enum Origin: String, Codable, Sendable, Equatable, CaseIterable {
        /// Bound by the master.
        case bound
        /// Passed in at start by systemd (socket activation, or the fd store); never closed by
        /// a reload. systemd passes both alike (LISTEN_FDS), so they cannot be told apart.
        case inherited
    }

    public struct Listener: Sendable, Equatable {
        public var name: String
        /// As written in the config (port 0 stays 0).
        public var configuredAddress: ListenerAddress
        /// As bound (getsockname).
        public var boundAddress: ListenerAddress
        public var backlog: Int32
        public var fd: CInt
        public var origin: Origin
    }

    private struct Entry {
        var listener: Listener
        var users: Set<Int> = []
    }

    private var entries: [CInt: Entry] = [:]
    /// The fds each generation holds, by listener name.
    private var generations: [Int: [String: CInt]] = [:]
    private let bindSocket: (ListenerAddress, Int32) throws(SystemCallError) -> CInt

    public init(
        bindSocket: @escaping (ListenerAddress, Int32) throws(SystemCallError) -> CInt = {
            (address, backlog) throws(SystemCallError) in
            try ListeningSocket.bind(address, backlog: backlog)
        }
    ) {
        self.bindSocket = bindSocket
    }

    /// Adopts an already listening fd: one systemd passed (socket activation, the fd store),
    /// reused like any other and never closed before `closeAll()`; or, in an upgrade, one the
    /// old master held, with the origin and configured address it had there (a `bound` one is
    /// closed like any this table bound, once no generation uses it).
    public func adopt(
        name: String, fd: CInt, backlog: Int32, origin: Origin = .inherited, configuredAddress: ListenerAddress? = nil
    ) throws(SystemCallError) {
        let bound = try ListeningSocket.localAddress(fd: fd)
        entries[fd] = Entry(
            listener: Listener(
                name: name, configuredAddress: configuredAddress ?? bound, boundAddress: bound, backlog: backlog,
                fd: fd, origin: origin))
    }

    /// Closes the bound sockets that no generation uses, and returns them: after an upgrade,
    /// those the old master held for listeners the new config no longer has (tableflip closes
    /// unused inherited fds at Ready the same way). Inherited ones stay open, as always.
    @discardableResult
    public func closeUnused() -> [Listener] {
        let unused = entries.values.filter { $0.users.isEmpty && $0.listener.origin == .bound }.map(\.listener)
        for listener in unused {
            entries[listener.fd] = nil
            closeDescriptor(listener.fd)
        }
        return unused.sorted { ($0.name, $0.fd) < ($1.name, $1.fd) }
    }

    /// Gives `generation` a socket for every spec: an existing one with the same configured
    /// address (and, for port 0, the same name), else a new one bound now. All or nothing: if
    /// one bind fails, what this call bound is closed and nothing changes.
    @discardableResult
    public func acquire(_ specs: [Spec], for generation: Int) throws(SystemCallError) -> [Listener] {
        precondition(generations[generation] == nil, "generation \(generation) acquired listeners twice")
        var assigned: [String: CInt] = [:]
        var fresh: [CInt] = []
        var result: [Listener] = []
        do throws(SystemCallError) {
            for spec in specs {
                let fd: CInt
                if let existing = reusable(for: spec, excluding: Set(assigned.values)) {
                    fd = existing
                } else {
                    fd = try bindSocket(spec.address, spec.backlog)
                    fresh.append(fd)
                    let bound = (try? ListeningSocket.localAddress(fd: fd)) ?? spec.address
                    entries[fd] = Entry(
                        listener: Listener(
                            name: spec.name, configuredAddress: spec.address, boundAddress: bound,
                            backlog: spec.backlog, fd: fd, origin: .bound))
                }
                assigned[spec.name] = fd
                entries[fd]!.listener.name = spec.name
                entries[fd]!.listener.backlog = spec.backlog
                result.append(entries[fd]!.listener)
            }
        } catch {
            for fd in fresh {
                entries[fd] = nil
                closeDescriptor(fd)
            }
            throw error
        }
        for fd in assigned.values {
            entries[fd]!.users.insert(generation)
        }
        generations[generation] = assigned
        return result
    }

    /// The generation is gone: its sockets that no other generation uses are closed, except
    /// inherited ones. Returns the names of the sockets closed.
    @discardableResult
    public func release(generation: Int) -> [Listener] {
        guard let assigned = generations.removeValue(forKey: generation) else { return [] }
        var closed: [Listener] = []
        for fd in assigned.values {
            entries[fd]!.users.remove(generation)
            if entries[fd]!.users.isEmpty && entries[fd]!.listener.origin == .bound {
                closed.append(entries.removeValue(forKey: fd)!.listener)
                closeDescriptor(fd)
            }
        }
        return closed
    }

    /// Every open socket, sorted by name then fd.
    public var all: [Listener] {
        entries.values.map(\.listener).sorted { ($0.name, $0.fd) < ($1.name, $1.fd) }
    }

    /// At exit.
    public func closeAll() {
        for fd in entries.keys { closeDescriptor(fd) }
        entries.removeAll()
        generations.removeAll()
    }

    private func reusable(for spec: Spec, excluding taken: Set<CInt>) -> CInt? {
        // A socket systemd passed under this listener's name is the one to use, whatever its
        // address: systemd's unit, not the config, decides where it listens.
        if let inherited = entries.values.first(where: {
            $0.listener.origin == .inherited && $0.listener.name == spec.name && !taken.contains($0.listener.fd)
        }) {
            return inherited.listener.fd
        }
        let candidates = entries.values.filter { entry in
            !taken.contains(entry.listener.fd)
                && (entry.listener.configuredAddress == spec.address || entry.listener.boundAddress == spec.address)
        }
        if spec.address.port == 0 {
            // Several listeners may ask for "any port": only the same name means the same socket.
            return candidates.first { $0.listener.name == spec.name && $0.listener.configuredAddress == spec.address }?
                .listener.fd
        }
        return (candidates.first { $0.listener.name == spec.name } ?? candidates.first)?.listener.fd
    }
}

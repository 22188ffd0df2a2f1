import CGatewayIO
import GatewayCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Something the loop tells about its fd's readiness. Called on the loop's thread only.
public protocol IOHandler: AnyObject {
    /// `events`: the epoll bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLRDHUP`, `EPOLLERR`, `EPOLLHUP`).
    func handleEvents(_ events: UInt32)
    /// The deadline set with `EventLoop.setDeadline` passed (or was moved: the handler checks).
    func deadlinePassed()
}

extension IOHandler {
    public func deadlinePassed() {}
}

/// The worker's event loop: one thread, one epoll set, nginx's model. It owns nothing but the
/// epoll fd, its wake-up eventfd and the registrations: each handler owns its fd.
///
/// Why not SwiftNIO on the data path: measured here (`benchmarks/floor.sh`, docs/benchmarks.md),
/// SwiftNIO with no HTTP codec at all costs about 1.6× nginx's CPU per connection with
/// `Connection: close` (a Channel, a pipeline, promises and two registrations per connection)
/// and leaves no headroom for HTTP with keep-alive, while a plain epoll loop in Swift costs
/// what nginx does. SwiftNIO stays where it serves (the master's control socket).
///
/// Registrations are slots in an array, found from epoll's `data` by index and checked by a
/// generation count, so an event for a handler that closed during the same `epoll_wait` batch
/// never reaches the handler that reused its slot. Deadlines are one per registration, moved
/// lazily: a heap entry fires at its time and the handler decides whether its deadline really
/// passed (a keep-alive connection answering thousands of requests a second moves a number, it
/// does not push and pop a heap entry per request).
public final class EventLoop: @unchecked Sendable {
    public struct Registration: Hashable, Sendable {
        let slot: UInt32
        let generation: UInt32
    }

    private struct Slot {
        var handler: (any IOHandler)?
        var generation: UInt32 = 0
        /// When the handler's deadline is (0: none), and when its heap entry fires.
        var deadline: UInt64 = 0
        var scheduledAt: UInt64 = 0
    }

    private struct TimerEntry: Comparable {
        var fireAt: UInt64
        var slot: UInt32
        var generation: UInt32

        static func < (lhs: TimerEntry, rhs: TimerEntry) -> Bool { lhs.fireAt < rhs.fireAt }
    }

    private struct ScheduledTask {
        var fireAt: UInt64
        var sequence: UInt64
        var body: () -> Void
    }

    private let epoll: CInt
    private let wakeFD: CInt
    private var slots: [Slot] = []
    private var freeSlots: [UInt32] = []
    private var timers = BinaryHeap<TimerEntry>()
    private var tasks: [ScheduledTask] = []
    private var taskSequence: UInt64 = 0
    private let inbox = Mutex<[@Sendable () -> Void]>([])
    private let wakePending = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Monotonic nanoseconds, read once per loop iteration (nginx caches its time the same way):
    /// every deadline set while handling one batch of events counts from the batch's start.
    public private(set) var now: UInt64 = 0
    /// Run at the end of each iteration, after every event and timer: what wants to batch work
    /// over a whole iteration (flushing responses of pipelined requests, the access log).
    private var endOfIteration: [() -> Void] = []

    public init() throws(SystemCallError) {
        self.epoll = try syscall("epoll_create1") { epoll_create1(CInt(EPOLL_CLOEXEC)) }
        do {
            self.wakeFD = try syscall("eventfd") { eventfd(0, CInt(EFD_NONBLOCK | EFD_CLOEXEC)) }
        } catch {
            closeDescriptor(self.epoll)
            throw error
        }
        // Slot 0 is the wake-up eventfd's.
        self.slots.append(Slot(handler: nil, generation: 0))
        _ = gw_io_epoll_ctl(self.epoll, EPOLL_CTL_ADD, self.wakeFD, EPOLLIN.rawValue, 0)
        self.now = Self.monotonicNow()
    }

    deinit {
        closeDescriptor(self.wakeFD)
        closeDescriptor(self.epoll)
    }

    public static func monotonicNow() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    // MARK: Threads

    /// Starts the loop on a thread of its own. `onStop` runs on that thread after `stop()`.
    public func startThread(name: String) throws(SystemCallError) {
        final class Box {
            let loop: EventLoop
            let name: String
            init(_ loop: EventLoop, _ name: String) {
                self.loop = loop
                self.name = name
            }
        }
        let box = Unmanaged.passRetained(Box(self, name)).toOpaque()
        var thread = pthread_t()
        try syscallReturningErrno("pthread_create", on: name) {
            pthread_create(
                &thread, nil,
                { raw in
                    let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                    gw_io_name_thread(String(box.name.prefix(15)))
                    box.loop.run()
                    return nil
                }, box)
        }
        self.thread = thread
    }

    /// Waits for the loop's thread to end (after `stop()`).
    public func joinThread() {
        guard let thread = self.thread else { return }
        self.thread = nil
        pthread_join(thread, nil)
    }

    /// Ends `run()` after the current iteration. Any thread.
    public func stop() {
        self.stopping.store(true, ordering: .releasing)
        self.wake()
    }

    /// Runs `task` on the loop, soon. Any thread.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        self.inbox.withLock { $0.append(task) }
        self.wake()
    }

    private func wake() {
        guard !self.wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var one: UInt64 = 1
        _ = write(self.wakeFD, &one, 8)
    }

    // MARK: Registrations

    /// Adds `fd` to the epoll set with `events` (level-triggered unless EPOLLET is in them).
    public func register(_ handler: any IOHandler, fd: CInt, events: UInt32) throws(SystemCallError) -> Registration {
        let registration = self.registerTimer(handler)
        let slot = registration.slot
        do {
            try syscall("epoll_ctl", on: "fd \(fd)") {
                gw_io_epoll_ctl(self.epoll, EPOLL_CTL_ADD, fd, events, Self.data(registration))
            }
        } catch {
            self.release(slot)
            throw error
        }
        return registration
    }

    /// A registration with no fd: a deadline only, for what lives on the loop without a socket
    /// of its own (an HTTP/2 stream's request). Released with `forget`.
    public func registerTimer(_ handler: any IOHandler) -> Registration {
        let slot: UInt32
        if let free = self.freeSlots.popLast() {
            slot = free
        } else {
            slot = UInt32(self.slots.count)
            self.slots.append(Slot())
        }
        self.slots[Int(slot)].handler = handler
        self.slots[Int(slot)].generation &+= 1
        return Registration(slot: slot, generation: self.slots[Int(slot)].generation)
    }

    public func modify(_ registration: Registration, fd: CInt, events: UInt32) throws(SystemCallError) {
        try syscall("epoll_ctl", on: "fd \(fd)") {
            gw_io_epoll_ctl(self.epoll, EPOLL_CTL_MOD, fd, events, Self.data(registration))
        }
    }

    /// Removes the fd from the set and forgets the handler (its pending events and deadline are
    /// dropped). Call before closing the fd.
    public func deregister(_ registration: Registration, fd: CInt) {
        _ = gw_io_epoll_ctl(self.epoll, EPOLL_CTL_DEL, fd, 0, 0)
        guard self.isCurrent(registration) else { return }
        self.release(registration.slot)
    }

    /// Forgets the handler without touching epoll: for an fd that is being closed (close
    /// removes it from every epoll set).
    public func forget(_ registration: Registration) {
        guard self.isCurrent(registration) else { return }
        self.release(registration.slot)
    }

    private func release(_ slot: UInt32) {
        self.slots[Int(slot)].handler = nil
        self.slots[Int(slot)].deadline = 0
        self.slots[Int(slot)].scheduledAt = 0
        self.slots[Int(slot)].generation &+= 1
        self.freeSlots.append(slot)
    }

    private func isCurrent(_ registration: Registration) -> Bool {
        Int(registration.slot) < self.slots.count
            && self.slots[Int(registration.slot)].generation == registration.generation
    }

    private static func data(_ registration: Registration) -> UInt64 {
        UInt64(registration.generation) << 32 | UInt64(registration.slot)
    }

    // MARK: Deadlines

    /// The registration's one deadline (monotonic nanoseconds; 0 clears it). Moving it later
    /// costs nothing; the heap entry already scheduled fires and is moved then.
    public func setDeadline(_ registration: Registration, at deadline: UInt64) {
        guard self.isCurrent(registration) else { return }
        let index = Int(registration.slot)
        self.slots[index].deadline = deadline
        guard deadline != 0 else { return }
        let scheduled = self.slots[index].scheduledAt
        if scheduled != 0, scheduled <= deadline { return }
        self.slots[index].scheduledAt = deadline
        self.timers.push(TimerEntry(fireAt: deadline, slot: registration.slot, generation: registration.generation))
    }

    /// Runs `body` on the loop at `deadline` (monotonic ns). For rare, one-off waits (a paused
    /// accept); connections use `setDeadline`.
    public func schedule(at deadline: UInt64, _ body: @escaping () -> Void) {
        self.taskSequence += 1
        self.tasks.append(ScheduledTask(fireAt: deadline, sequence: self.taskSequence, body: body))
    }

    /// Runs `body` once at the end of the current iteration.
    public func atEndOfIteration(_ body: @escaping () -> Void) {
        self.endOfIteration.append(body)
    }

    // MARK: Running

    /// Runs until `stop()`. On the calling thread.
    public func run() {
        let capacity = 512
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while !self.stopping.load(ordering: .acquiring) {
            let timeout = self.waitMilliseconds()
            let count = epoll_wait(self.epoll, events, CInt(capacity), timeout)
            self.now = Self.monotonicNow()
            if count > 0 {
                for index in 0..<Int(count) {
                    let event = events + index
                    self.dispatch(gw_io_event_data(event), gw_io_event_events(event))
                }
            } else if count < 0, errno != EINTR {
                preconditionFailure("epoll_wait: \(String(cString: strerror(errno)))")
            }
            self.runTimers()
            self.runInbox()
            self.runEndOfIteration()
        }
        self.runInbox()
    }

    private func dispatch(_ data: UInt64, _ events: UInt32) {
        let slot = UInt32(truncatingIfNeeded: data)
        if slot == 0 {
            var value: UInt64 = 0
            _ = read(self.wakeFD, &value, 8)
            self.wakePending.store(false, ordering: .releasing)
            return
        }
        let generation = UInt32(truncatingIfNeeded: data >> 32)
        guard Int(slot) < self.slots.count, self.slots[Int(slot)].generation == generation,
            let handler = self.slots[Int(slot)].handler
        else { return }
        handler.handleEvents(events)
    }

    private func waitMilliseconds() -> CInt {
        if !self.endOfIteration.isEmpty { return 0 }
        var next = self.timers.peek?.fireAt ?? 0
        for task in self.tasks where next == 0 || task.fireAt < next {
            next = task.fireAt
        }
        guard next != 0 else { return -1 }
        let now = Self.monotonicNow()
        guard next > now else { return 0 }
        // Rounded up: a deadline never fires early, and a 0 ms wait is not a busy loop.
        return CInt(min((next - now + 999_999) / 1_000_000, 60_000))
    }

    private func runTimers() {
        while let top = self.timers.peek, top.fireAt <= self.now {
            _ = self.timers.pop()
            let index = Int(top.slot)
            guard index < self.slots.count, self.slots[index].generation == top.generation,
                self.slots[index].scheduledAt == top.fireAt
            else { continue }
            self.slots[index].scheduledAt = 0
            let deadline = self.slots[index].deadline
            guard deadline != 0 else { continue }
            if deadline > self.now {
                // Moved later since it was scheduled: schedule it again, once.
                self.slots[index].scheduledAt = deadline
                self.timers.push(TimerEntry(fireAt: deadline, slot: top.slot, generation: top.generation))
                continue
            }
            self.slots[index].deadline = 0
            self.slots[index].handler?.deadlinePassed()
        }
        if !self.tasks.isEmpty {
            let due = self.tasks.filter { $0.fireAt <= self.now }.sorted { $0.sequence < $1.sequence }
            if !due.isEmpty {
                self.tasks.removeAll { $0.fireAt <= self.now }
                for task in due { task.body() }
            }
        }
    }

    private func runInbox() {
        // Swapped out, not copied and cleared: clearing a buffer still shared with the copy
        // would allocate a new one on every iteration of the loop, work or no work.
        var work: [@Sendable () -> Void] = []
        self.inbox.withLock { swap(&work, &$0) }
        for task in work { task() }
    }

    private func runEndOfIteration() {
        while !self.endOfIteration.isEmpty {
            let work = self.endOfIteration
            self.endOfIteration.removeAll(keepingCapacity: true)
            for body in work { body() }
        }
    }
}

/// A min-heap on an array: the loop's timers.
struct BinaryHeap<Element: Comparable> {
    private var storage: [Element] = []

    var peek: Element? { self.storage.first }
    var count: Int { self.storage.count }

    mutating func push(_ element: Element) {
        self.storage.append(element)
        var child = self.storage.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.storage[child] < self.storage[parent] else { break }
            self.storage.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !self.storage.isEmpty else { return nil }
        self.storage.swapAt(0, self.storage.count - 1)
        let top = self.storage.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < self.storage.count, self.storage[left] < self.storage[smallest] { smallest = left }
            if right < self.storage.count, self.storage[right] < self.storage[smallest] { smallest = right }
            guard smallest != parent else { break }
            self.storage.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}

/// The epoll event bits, as plain numbers for handlers (`IOHandler.handleEvents`).
public enum IOEvent {
    public static let input: UInt32 = EPOLLIN.rawValue
    public static let output: UInt32 = EPOLLOUT.rawValue
    /// The peer shut down its writing side.
    public static let readHangUp: UInt32 = EPOLLRDHUP.rawValue
    public static let hangUp: UInt32 = EPOLLHUP.rawValue
    public static let error: UInt32 = EPOLLERR.rawValue
    /// What a connection is registered for, once: edge-triggered input, output and the peer's
    /// half-close, so that no epoll_ctl is made per request.
    public static let connection: UInt32 = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
    /// A listening socket shared by several loops and processes: level-triggered, one waiter
    /// woken per connection (EPOLLEXCLUSIVE, as nginx registers its listeners).
    public static let listener: UInt32 = EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Runs work on a fresh thread with a big stack.
///
/// Yams composes recursively, and libyaml allows 1000 levels of nesting: an optimized build
/// needs about 2.5 MiB of stack for that, more than a 512 KiB secondary thread has. Parsing
/// on a thread whose stack we choose keeps hostile or broken input from crashing whichever
/// thread happened to call `ConfigLoader.parse`.
enum LargeStack {
    static let size = 16 << 20

    static func run<T>(_ body: () -> T) -> T {
        var result: T?
        withoutActuallyEscaping({ result = body() }) { work in
            if !runOnThread(work) {
                // No thread (resource limits): the caller's stack is the best we have.
                work()
            }
        }
        // Set by `work`, which has returned on either path.
        return result!
    }

    private final class Job {
        let work: () -> Void
        init(_ work: @escaping () -> Void) { self.work = work }
    }

    /// Returns false if the thread could not be started; `work` has then not run.
    private static func runOnThread(_ work: @escaping () -> Void) -> Bool {
        #if canImport(Glibc) || canImport(Musl)
            var attributes = pthread_attr_t()
            guard pthread_attr_init(&attributes) == 0 else { return false }
            defer { pthread_attr_destroy(&attributes) }
            guard pthread_attr_setstacksize(&attributes, size) == 0 else { return false }

            let job = Unmanaged.passRetained(Job(work))
            var thread = pthread_t()
            let created = pthread_create(
                &thread, &attributes,
                { context in
                    let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
                    job.work()
                    return nil
                }, job.toOpaque())
            guard created == 0 else {
                job.release()
                return false
            }
            pthread_join(thread, nil)
            return true
        #else
            return false
        #endif
    }
}

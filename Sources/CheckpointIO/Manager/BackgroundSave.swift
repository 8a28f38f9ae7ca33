import BlobCodec
import Dispatch

/// At most one save running in the background, and the error it left.
///
/// ``start(_:)`` and ``wait()`` are called from the manager's callers; the
/// work runs on a serial queue of its own (never the Swift concurrency pool).
final class BackgroundSave: @unchecked Sendable {
    private let queue: DispatchQueue
    private let group = DispatchGroup()
    private let lock = PThreadLock()
    private var error: CheckpointError?

    init(label: String) { queue = DispatchQueue(label: label) }

    /// Runs `work` in the background. The caller has already waited (``wait()``).
    func start(_ work: @escaping @Sendable () throws(CheckpointError) -> Void) {
        group.enter()
        queue.async { [self] in
            defer { group.leave() }
            do throws(CheckpointError) { try work() } catch { lock.locked { self.error = error } }
        }
    }

    /// Waits for the save in flight, if any, leaving its error for ``wait()``.
    func waitForCompletion() {
        group.wait()
    }

    /// Waits for the save in flight, if any; throws its error once.
    func wait() throws(CheckpointError) {
        group.wait()
        if let error = lock.locked({ () -> CheckpointError? in
            defer { self.error = nil }
            return self.error
        }) {
            throw error
        }
    }
}

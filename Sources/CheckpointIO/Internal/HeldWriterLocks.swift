import BlobCodec

/// The writer locks this process holds, so that an interrupt can remove the
/// temporaries written under them (see ``InterruptCleanup``).
///
/// Every temporary `.BASE.tmp.PID.RANDOM` is created while its target's lock
/// is held (FORMAT.md §6.3), so the locks name every file an interrupted
/// write could leave behind.
final class HeldWriterLocks: @unchecked Sendable {
    static let shared = HeldWriterLocks()

    private let mutex = PThreadLock()
    private var targets: [String: String] = [:]  // lock path → target path
    private var scratch: Set<String> = []  // files that only live while a tool runs (the benchmark's)

    /// Files to remove too if the process is interrupted (a tool's own scratch files).
    func addScratch(_ paths: [String]) { mutex.locked { scratch.formUnion(paths) } }
    func removeScratch(_ paths: [String]) { mutex.locked { scratch.subtract(paths) } }

    /// Runs `body` (which creates and locks a lock file, or deletes one) so
    /// that an interrupt sees it either not started or finished: the
    /// interrupt's cleanup waits for the same mutex. `body` returns the lock
    /// path to record as held (nil: none), and must not block.
    func atomically<R>(_ body: (_ record: (_ lockPath: String, _ target: String?) -> Void) throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        try mutex.locked { () throws(CheckpointError) -> R in
            try body { lockPath, target in
                if let target { targets[lockPath] = target } else { targets.removeValue(forKey: lockPath) }
            }
        }
    }

    /// Runs `body` with the held locks (lock path, target) while no lock can be taken or released:
    /// for the last act of a process, which `body` ends without returning.
    func withHeldLocksFrozen(_ body: (_ locks: [(lockPath: String, target: String)], _ scratch: [String]) -> Never) -> Never {
        mutex.locked { () -> Never in body(targets.map { ($0.key, $0.value) }.sorted { $0.lockPath < $1.lockPath }, scratch.sorted()) }
    }
}

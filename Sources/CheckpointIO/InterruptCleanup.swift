import BlobCodec
import Dispatch

/// What a Ctrl-C (SIGINT) or a `kill` (SIGTERM) leaves behind: nothing.
///
/// Writers put a new file under a hidden temporary name and rename it into
/// place only when it is complete, so an interrupted write never damages the
/// file it replaces; but without this, the temporary (possibly gigabytes) and
/// the lock file stay. After ``install(announce:)`` the first SIGINT or
/// SIGTERM removes the temporaries of every write in flight in this process
/// (the files `.NAME.tmp.PID.RANDOM` of the targets whose writer lock it
/// holds, directories included), their lock files and the scratch files of
/// a running ``CheckpointBenchmark``, calls `announce` with
/// the signal and the targets whose writes were abandoned, and ends the
/// process with status 128 + signal (130, 143).
///
///     InterruptCleanup.install { signal, targets in
///         print("interrupted; removed the unfinished", targets)
///     }
///
/// A file completely written and renamed before the signal stays. Meant for
/// command-line tools and batch jobs; a process with its own signal handling
/// should not call it. Files left by a process killed outright (SIGKILL, a
/// power cut) are removed by the next write into their directory that looks
/// (see ``TensorConversion``).
public enum InterruptCleanup {
    private nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []
    private static let installLock = PThreadLock()

    /// Installs the handling of SIGINT and SIGTERM; calling it again does nothing.
    ///
    /// `announce` runs on a dispatch thread while every writer lock of the
    /// process is frozen (no write can start or finish); it must not write files.
    public static func install(announce: @escaping @Sendable (_ signal: Int32, _ abandonedTargets: [String]) -> Void) {
        installLock.locked {
            guard sources.isEmpty else { return }
            let queue = DispatchQueue(label: "CheckpointIO.InterruptCleanup")
            for signal in SystemCalls.interruptSignals {
                SystemCalls.ignoreSignal(signal)
                let source = DispatchSource.makeSignalSource(signal: signal, queue: queue)
                source.setEventHandler { cleanUpAndExit(signal: signal, announce: announce) }
                source.resume()
                sources.append(source)
            }
        }
    }

    /// Removes what writers killed outright (SIGKILL, a crash, a power cut)
    /// left in `directory`: temporaries `.NAME.tmp.PID.RANDOM` (files or
    /// directories) whose process is gone and whose `NAME.lock` nobody holds,
    /// with that lock file. Never touches a live writer's files or names of
    /// any other shape. ``TensorConversion`` and
    /// ``ContainerRecovery/recover(_:to:durability:)`` call it on their
    /// output's directory. Returns the removed names and their total size.
    @discardableResult
    public static func removeTemporariesOfDeadWriters(in directory: String) -> (names: [String], bytes: Int) {
        AtomicFile.removeTemporariesOfDeadWriters(in: directory, calls: .live)
    }

    private static func cleanUpAndExit(signal: Int32, announce: (Int32, [String]) -> Void) -> Never {
        HeldWriterLocks.shared.withHeldLocksFrozen { locks, scratch in
            let calls = SystemCalls.live
            for path in scratch { calls.unlinkRetrying(path) }
            var abandoned: [String] = []
            for (lockPath, target) in locks {
                let (directory, base) = ContainerWriter.splitPath(target)
                let ours = "." + base + ".tmp.\(SystemCalls.processID)."
                var removedAny = false
                for name in AtomicFile.listDirectory(directory) where name.hasPrefix(ours) {
                    AtomicFile.removeTree(CheckpointNaming.join(directory, name), calls: calls)
                    removedAny = true
                }
                calls.unlinkRetrying(lockPath)
                if removedAny { abandoned.append(target) }
            }
            announce(signal, abandoned)
            SystemCalls.exitImmediately(128 + signal)
        }
    }
}

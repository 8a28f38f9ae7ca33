@testable import CheckpointIO
import Foundation
import Testing

// Issue 19, "also check": the cleanups that decide whether a temporary or a
// lock file was abandoned (`removeAbandonedWrites`, run by every
// `initialize()`, and `removeCheckpoint`) take the target's writer lock
// `P.lock` for a moment. A save of the same target in that moment used to
// fail with `writerLocked`. Confirmed; a checkpoint write now waits for such
// a lock (up to 2 s). The moment is made deterministic through the syscall
// layer (hence `@testable`): the cleanup holds the lock until the saver has
// met it.

@Suite("Issue 19: cleanups and a concurrent save")
struct WriterLockRaceTests {
    /// Signals when a `flock` finds the lock taken (the saver met the cleanup's lock).
    static func contendedCalls(_ contention: DispatchSemaphore) -> SystemCalls {
        var calls = SystemCalls.live
        let live = SystemCalls.live
        calls.flock = { fd, operation in
            let result = live.flock(fd, operation)
            if result != 0 {
                let code = errno
                if code == EWOULDBLOCK { contention.signal() }
                errno = code
            }
            return result
        }
        return calls
    }

    /// Calls whose `unlink` of a path ending in `suffix` (done while holding its
    /// lock) signals `held`, then waits (at most 5 s) for `contention`.
    static func holdingCalls(unlinking suffix: String, held: DispatchSemaphore, contention: DispatchSemaphore) -> SystemCalls {
        var calls = SystemCalls.live
        let live = SystemCalls.live
        calls.unlink = { path in
            if path.hasSuffix(suffix) {
                held.signal()
                _ = contention.wait(timeout: .now() + 5)
            }
            return live.unlink(path)
        }
        return calls
    }

    /// A save racing a second manager's `initialize()` that removes an abandoned temporary of the same file.
    @Test func aSaveSucceedsWhileAnotherManagersInitializeChecksATemporary() throws {
        try withTemporaryDirectory { dir in
            let held = DispatchSemaphore(value: 0), contention = DispatchSemaphore(value: 0)
            let saver = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["w": Tensor(scalar: Int64(42))]),
                                              options: CheckpointOptions(storage: LocalCheckpointStorage(calls: Self.contendedCalls(contention))))
            try saver.initialize()
            try saver.acquireWriterLock()
            // A save of epoch 1 killed before its rename; an evaluator starts and cleans up.
            try writeBytes(dir + "/.n.1.tmp.999.deadbeef", [0])
            let evaluator = try CheckpointManager(dbPrefix: dir, nodeName: "n", options: CheckpointOptions(
                storage: LocalCheckpointStorage(calls: Self.holdingCalls(unlinking: ".n.1.tmp.999.deadbeef", held: held, contention: contention))))
            let done = DispatchSemaphore(value: 0)
            let cleanup = Thread {
                try? evaluator.initialize()
                done.signal()
            }
            cleanup.start()
            defer { _ = done.wait(timeout: .now() + 10) }
            #expect(held.wait(timeout: .now() + 10) == .success)
            var saveError: CheckpointError?
            do throws(CheckpointError) { try saver.save(epoch: 1) } catch { saveError = error }
            #expect(saveError == nil, "\(saveError.map { "\($0)" } ?? "")")
            #expect(!fileExists(dir + "/.n.1.tmp.999.deadbeef"))
            let restored = Workspace()
            try saver.loadBlobsFromCheckpoint(["w"], epoch: 1, into: restored)
            #expect(try restored.fetchBlob("w").scalars(as: Int64.self) == [42])
        }
    }

    /// A save racing retention's removal of the same file and its stale lock file.
    @Test func aSaveSucceedsWhileRemoveCheckpointChecksAStaleLockFile() throws {
        try withTemporaryDirectory { dir in
            let held = DispatchSemaphore(value: 0), contention = DispatchSemaphore(value: 0)
            let saver = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["w": Tensor(scalar: Int64(7))]),
                                              options: CheckpointOptions(storage: LocalCheckpointStorage(calls: Self.contendedCalls(contention))))
            try saver.initialize()
            try saver.save(epoch: 1)
            try writeBytes(dir + "/n.1.lock", [])  // left by a killed writer
            let remover = LocalCheckpointStorage(calls: Self.holdingCalls(unlinking: "/n.1.lock", held: held, contention: contention))
            let done = DispatchSemaphore(value: 0)
            let cleanup = Thread {
                try? remover.removeCheckpoint("n.1", in: dir)
                done.signal()
            }
            cleanup.start()
            defer { _ = done.wait(timeout: .now() + 10) }
            #expect(held.wait(timeout: .now() + 10) == .success)
            saver.workspace["w"] = Tensor(scalar: Int64(8))
            var saveError: CheckpointError?
            do throws(CheckpointError) { try saver.save(epoch: 1) } catch { saveError = error }
            #expect(saveError == nil, "\(saveError.map { "\($0)" } ?? "")")
            let restored = Workspace()
            try saver.loadBlobsFromCheckpoint(["w"], epoch: 1, into: restored)
            #expect(try restored.fetchBlob("w").scalars(as: Int64.self) == [8])
        }
    }
}

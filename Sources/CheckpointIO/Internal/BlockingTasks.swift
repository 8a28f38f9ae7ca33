import BlobCodec
import Dispatch
import Foundation

/// Blocking work items (network reads that wait on a reply) run on the global
/// queue, at most `limit` at a time.
package enum BlockingTasks {
    /// Calls `body(index)` for every index in `0..<count`, up to `limit` at once;
    /// returns when all have finished. After a failure no new index starts, and
    /// the first error recorded is thrown.
    package static func run(count: Int, limit: Int, _ body: @escaping @Sendable (Int) throws(CheckpointError) -> Void) throws(CheckpointError) {
        let slots = DispatchSemaphore(value: max(1, limit))
        let group = DispatchGroup()
        let lock = NSLock()
        nonisolated(unsafe) var failure: CheckpointError?
        for index in 0..<count {
            slots.wait()
            if lock.withLock({ failure != nil }) {
                slots.signal()
                break
            }
            group.enter()
            DispatchQueue.global().async {
                defer {
                    slots.signal()
                    group.leave()
                }
                do throws(CheckpointError) {
                    try body(index)
                } catch {
                    lock.withLock { if failure == nil { failure = error } }
                }
            }
        }
        group.wait()
        if let failure { throw failure }
    }
}

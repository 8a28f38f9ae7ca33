import CCheckpointKernels
import Dispatch
import Synchronization

/// Runs per-chunk work over a few threads, each with its own reusable worker
/// state (scratch buffers, codec contexts). Chunks are claimed from a shared
/// counter, so uneven chunks balance; results go to per-chunk slots, so the
/// output never depends on the thread count or the order of completion.
package enum ChunkScheduler {
    /// The CPUs this process may use (its affinity mask).
    static let availableCPUs = Int(ckk_available_cpus())

    /// The threads to use for `count` items when `requested` were asked for (0 = one per CPU).
    static func threadCount(requested: Int, count: Int) -> Int {
        max(1, min(requested > 0 ? requested : availableCPUs, count))
    }

    /// Calls `body(worker, index)` for every index in `0..<count`. After a
    /// failure, no new index is started; the error of the lowest failed index is thrown.
    package static func run<Worker>(
        count: Int, threads: Int,
        makeWorker: () -> Worker,
        _ body: (Worker, Int) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        guard count > 0 else { return }
        let threadCount = threadCount(requested: threads, count: count)
        if threadCount == 1 {
            let worker = makeWorker()
            for index in 0..<count { try body(worker, index) }
            return
        }
        let errors = UnsafeMutableBufferPointer<CheckpointError?>.allocate(capacity: count)
        errors.initialize(repeating: nil)
        defer { errors.deinitialize().deallocate() }
        let next = Atomic<Int>(0)
        let failed = Atomic<Bool>(false)
        try withoutActuallyEscaping(makeWorker) { makeWorker throws(CheckpointError) in
            try withoutActuallyEscaping(body) { body throws(CheckpointError) in
                // concurrentPerform returns only when every iteration has, and each index is
                // claimed by exactly one thread, so these are never used in a conflicting way.
                nonisolated(unsafe) let makeWorker = makeWorker
                nonisolated(unsafe) let body = body
                nonisolated(unsafe) let errors = errors
                DispatchQueue.concurrentPerform(iterations: threadCount) { _ in
                    let worker = makeWorker()
                    while !failed.load(ordering: .relaxed) {
                        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
                        guard index < count else { return }
                        do throws(CheckpointError) {
                            try body(worker, index)
                        } catch {
                            errors[index] = error
                            failed.store(true, ordering: .relaxed)
                        }
                    }
                }
            }
        }
        if let error = errors.lazy.compactMap({ $0 }).first { throw error }
    }
}


/// The machine as the codec sees it.
public enum Processors {
    /// The CPUs this process may run on (its affinity mask): what `threads: 0` means.
    public static var available: Int { ChunkScheduler.availableCPUs }
}

import Dispatch

/// `DispatchQueue.concurrentPerform` for bodies that capture non-Sendable
/// state the caller partitions by iteration (each iteration touches only its own slots).
enum DispatchQueueConcurrent {
    static func perform(iterations: Int, _ body: (Int) -> Void) {
        if iterations <= 1 {
            for i in 0..<iterations { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: iterations) { body($0) }
        }
    }
}

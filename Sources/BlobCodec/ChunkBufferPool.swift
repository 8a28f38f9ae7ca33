import Synchronization

#if canImport(Glibc)
import func Glibc.free
import func Glibc.malloc
#elseif canImport(Darwin)
import func Darwin.free
import func Darwin.malloc
#endif

/// Recycles chunk-sized output buffers across encodes.
///
/// Fresh memory is expensive on the first touch (a page fault per 4 KiB; on
/// the project's VMs ~0.5 GB/s once the host has reclaimed it), and a codec
/// that mallocs a new buffer for every compressed chunk spends as long in the
/// kernel as in the compressor. Buffers released by ``OwnedBytes`` come back
/// here and are handed out again; at most ``retainedByteLimit`` bytes are kept.
final class ChunkBufferPool: Sendable {
    static let shared = ChunkBufferPool(retainedByteLimit: 256 << 20)

    private struct State {
        var free: [Int: [UnsafeMutableRawPointer]] = [:]
        var retainedBytes = 0
    }

    private let state = Mutex(UncheckedState(State()))
    let retainedByteLimit: Int

    init(retainedByteLimit: Int) { self.retainedByteLimit = retainedByteLimit }

    /// A buffer of exactly `capacity` bytes (recycled when one is free), or nil when out of memory.
    func take(capacity: Int) -> UnsafeMutableRawPointer? {
        let recycled = state.withLock { box -> UnsafeMutableRawPointer? in
            guard let pointer = box.value.free[capacity]?.popLast() else { return nil }
            box.value.retainedBytes -= capacity
            return pointer
        }
        return recycled ?? malloc(capacity)
    }

    /// Gives a buffer obtained from ``take(capacity:)`` back.
    func give(_ pointer: UnsafeMutableRawPointer, capacity: Int) {
        let kept = state.withLock { box -> Bool in
            guard box.value.retainedBytes + capacity <= retainedByteLimit else { return false }
            box.value.free[capacity, default: []].append(pointer)
            box.value.retainedBytes += capacity
            return true
        }
        if !kept { free(pointer) }
    }
}

/// Raw pointers are not Sendable; the pool's lock is what makes sharing them safe.
private struct UncheckedState<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

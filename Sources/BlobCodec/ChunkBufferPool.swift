import Glibc

/// Recycles chunk-sized buffers (compressed output, shuffle scratch) across encodes and decodes.
///
/// Fresh memory is expensive on the first touch (a page fault per 4 KiB; on
/// the project's VMs ~0.5 GB/s once the host has reclaimed it), and a codec
/// that mallocs a new buffer for every compressed chunk spends as long in the
/// kernel as in the compressor. Buffers released by ``OwnedBytes`` come back
/// here and are handed out again; at most ``retainedByteLimit`` bytes are kept.
///
/// Guarded by a ``PThreadLock``.
final class ChunkBufferPool: @unchecked Sendable {
    static let shared = ChunkBufferPool(retainedByteLimit: 256 << 20)

    let retainedByteLimit: Int
    private let lock = PThreadLock()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var retainedBytes = 0

    init(retainedByteLimit: Int) { self.retainedByteLimit = retainedByteLimit }

    deinit {
        for pointers in free.values { pointers.forEach { Glibc.free($0) } }
    }

    /// Capacities are rounded up to a size class (a power of two from 64 KiB, or
    /// a multiple of 4 MiB beyond 4 MiB) so that blobs of different sizes share
    /// buffers: a fresh buffer costs a page fault per 4 KiB on its first touch.
    static func sizeClass(_ capacity: Int) -> Int {
        if capacity <= 64 << 10 { return 64 << 10 }
        if capacity >= 4 << 20 { return (capacity + (4 << 20) - 1) / (4 << 20) * (4 << 20) }
        return 1 << (Int.bitWidth - (capacity - 1).leadingZeroBitCount)
    }

    /// A buffer of at least `capacity` bytes (recycled when one is free), or nil when out of memory.
    func take(capacity requested: Int) -> UnsafeMutableRawPointer? {
        let capacity = ChunkBufferPool.sizeClass(requested)
        let recycled = lock.locked { () -> UnsafeMutableRawPointer? in
            guard let pointer = free[capacity]?.popLast() else { return nil }
            retainedBytes -= capacity
            return pointer
        }
        return recycled ?? malloc(capacity)
    }

    /// Gives a buffer obtained from ``take(capacity:)`` back (with the same requested capacity).
    func give(_ pointer: UnsafeMutableRawPointer, capacity requested: Int) {
        let capacity = ChunkBufferPool.sizeClass(requested)
        let kept = lock.locked { () -> Bool in
            guard retainedBytes + capacity <= retainedByteLimit else { return false }
            free[capacity, default: []].append(pointer)
            retainedBytes += capacity
            return true
        }
        if !kept { Glibc.free(pointer) }
    }

    /// A scratch buffer of `capacity` bytes from the pool; traps when out of memory.
    func takeBuffer(capacity: Int) -> UnsafeMutableRawBufferPointer {
        guard let pointer = take(capacity: max(capacity, 1)) else { preconditionFailure("out of memory for a \(capacity)-byte scratch buffer") }
        return UnsafeMutableRawBufferPointer(start: pointer, count: max(capacity, 1))
    }

    /// Gives a buffer obtained from ``takeBuffer(capacity:)`` back.
    func giveBuffer(_ buffer: UnsafeMutableRawBufferPointer) {
        give(buffer.baseAddress!, capacity: buffer.count)
    }
}

/// A pthread mutex. Used instead of `Synchronization.Mutex`, whose futex-based
/// implementation ThreadSanitizer cannot see (it reports false races).
/// Shared with CheckpointIO (package access).
package final class PThreadLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    package init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    package func locked<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

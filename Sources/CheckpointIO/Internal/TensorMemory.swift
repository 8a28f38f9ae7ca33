import Glibc

/// Heap memory for tensor payloads.
///
/// Small tensors get 64-byte-aligned blocks. Tensors of 2 MiB and more get
/// 2 MiB-aligned blocks marked for transparent huge pages, which cuts the
/// page faults of filling them (a load from the page cache is bound by page
/// faults, not by copying: see MACHINE-NOTES).
enum TensorMemory {
    static let hugePageSize = 2 << 20
    static let cacheLineSize = 64

    /// Allocates `byteCount` bytes (at least one), uninitialized
    /// (`posix_memalign`, `madvise(MADV_HUGEPAGE)`). Traps when memory is exhausted,
    /// as every Swift allocation does.
    static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        guard let pointer = allocateIfAvailable(byteCount: byteCount) else { fatalError("out of memory allocating a tensor of \(byteCount) bytes") }
        return pointer
    }

    /// Allocates like ``allocate(byteCount:)`` but returns nil when the memory
    /// is not available (for sizes read from files: a clean error, not a trap).
    static func allocateIfAvailable(byteCount: Int) -> UnsafeMutableRawPointer? {
        let size = max(byteCount, 1)
        let alignment = size >= hugePageSize ? hugePageSize : cacheLineSize
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, alignment, size) == 0, let pointer else { return nil }
        if alignment == hugePageSize {
            _ = Glibc.madvise(pointer, size & ~(hugePageSize - 1), MADV_HUGEPAGE)
        }
        return pointer
    }

    /// Frees memory from ``allocate(byteCount:)`` (`free`).
    static func deallocate(_ pointer: UnsafeMutableRawPointer) {
        Glibc.free(pointer)
    }
}

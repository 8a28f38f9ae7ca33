import CCheckpointKernels

/// The byte-shuffle filter of HDF5 and Blosc.
///
/// For `n = count / elementSize` whole elements, byte `k` of element `i` moves
/// to position `k·n + i`, so the exponent bytes of floating-point values end up
/// next to each other and compress. Trailing bytes that do not form a whole
/// element are copied unchanged. SIMD (SSE2) for element sizes 2, 4, 8 and 16.
public enum ByteShuffle {
    /// The element sizes supported.
    public static let elementSizes: ClosedRange<Int> = 1...16

    /// Shuffles `source` into `destination` (same count, no overlap).
    public static func shuffle(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, elementSize: Int) {
        precondition(elementSizes.contains(elementSize), "element size \(elementSize) outside 1...16")
        precondition(destination.count == source.count, "shuffle needs equal buffer sizes")
        guard let src = source.baseAddress, let dst = destination.baseAddress else { return }
        ckk_shuffle(dst, src, source.count, elementSize)
    }

    /// Inverts ``shuffle(_:into:elementSize:)``.
    public static func unshuffle(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, elementSize: Int) {
        precondition(elementSizes.contains(elementSize), "element size \(elementSize) outside 1...16")
        precondition(destination.count == source.count, "unshuffle needs equal buffer sizes")
        guard let src = source.baseAddress, let dst = destination.baseAddress else { return }
        ckk_unshuffle(dst, src, source.count, elementSize)
    }
}

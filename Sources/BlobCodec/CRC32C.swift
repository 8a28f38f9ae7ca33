import CCheckpointKernels

/// CRC32C (Castagnoli), the checksum of iSCSI (RFC 3720), ext4 and TF TensorBundle.
///
/// Reflected polynomial `0x82F63B78`, initial value and final XOR `0xFFFFFFFF`;
/// `CRC32C.checksum("123456789")` is `0xE3069283`. The fastest path the CPU
/// has is chosen at run time: carry-less multiply folding with AVX-512
/// VPCLMULQDQ for buffers of 1 KiB and more; 128-bit PCLMULQDQ folding for
/// buffers of 256 bytes and more on CPUs whose `crc32` instruction is slow
/// (AMD Zen 1 and 2: ~9.5 against ~5.5 GB/s; the first checksum measures both
/// and keeps the faster); interleaved SSE4.2 `crc32` instructions; or a
/// slicing-by-8 table path. All values are *finished* CRCs,
/// so streaming is `extend(extend(0, a), b) == checksum(a + b)`.
public enum CRC32C {
    /// The CRC32C of `bytes`. Touches every byte once (one core: ~28 GB/s
    /// streaming from memory, ~58 GB/s from cache, with the AVX-512 folding
    /// path; ~9.5 GB/s on a Zen 1 core with 128-bit folding).
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        extend(0, bytes)
    }

    /// The CRC32C of `bytes`.
    public static func checksum<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt32 {
        if let crc = bytes.withContiguousStorageIfAvailable({ checksum(UnsafeRawBufferPointer($0)) }) {
            return crc
        }
        return Array(bytes).withUnsafeBytes { checksum($0) }
    }

    /// Extends a finished CRC over more bytes: `extend(checksum(a), b) == checksum(a + b)`.
    @inlinable
    public static func extend(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        return ckk_crc32c_extend(crc, base, bytes.count)
    }

    /// The portable (table-driven) path, whatever the CPU; for tests and comparison.
    public static func extendPortable(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        return ckk_crc32c_extend_portable(crc, base, bytes.count)
    }

    /// `checksum(a + b)` from `checksum(a)`, `checksum(b)` and `b.count`, in O(log count) without the data.
    @inlinable
    public static func combine(_ crcA: UInt32, _ crcB: UInt32, lengthOfB: Int) -> UInt32 {
        ckk_crc32c_combine(crcA, crcB, UInt64(lengthOfB))
    }

    /// True when checksums run on the SSE4.2 instruction (and possibly the folding path).
    public static var isHardwareAccelerated: Bool { ckk_crc32c_hardware_available() != 0 }

    /// The implementation chosen for this CPU, for reports.
    public static var implementation: String {
        if ckk_crc32c_folding_available() != 0 { return "AVX-512 VPCLMULQDQ folding + SSE4.2" }
        if ckk_crc32c_clmul_chosen() != 0 { return "PCLMULQDQ folding + SSE4.2 (measured faster than crc32 on this CPU)" }
        return isHardwareAccelerated ? "SSE4.2" : "portable (slicing-by-8)"
    }
}

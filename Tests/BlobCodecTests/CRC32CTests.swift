import BlobCodec
import CCheckpointKernels
import Foundation
import Testing

@Suite("CRC32C")
struct CRC32CTests {
    /// RFC 3720 (iSCSI), appendix B.4, plus the standard check value.
    static let vectors: [(name: String, bytes: [UInt8], crc: UInt32)] = [
        ("check value '123456789'", Array("123456789".utf8), 0xE306_9283),
        ("32 bytes of zeros", [UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ("32 bytes of 0xFF", [UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ("32 incrementing bytes", (0..<32).map { UInt8($0) }, 0x46DD_794E),
        ("32 decrementing bytes", (0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
        ("iSCSI read command PDU", [
            0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
            0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ], 0xD996_3A56),
        ("empty", [], 0),
    ]

    @Test("RFC 3720 test vectors, on every path", arguments: vectors.indices)
    func rfc3720Vectors(index: Int) {
        let vector = Self.vectors[index]
        vector.bytes.withUnsafeBytes { bytes in
            #expect(CRC32C.checksum(bytes) == vector.crc, "\(vector.name)")
            #expect(CRC32C.extendPortable(0, bytes) == vector.crc, "\(vector.name) portable")
            #expect(ckk_crc32c_extend_hardware(0, bytes.baseAddress, bytes.count) == vector.crc, "\(vector.name) hardware")
            #expect(ckk_crc32c_extend_sse42(0, bytes.baseAddress, bytes.count) == vector.crc, "\(vector.name) SSE4.2")
            #expect(ckk_crc32c_extend_clmul(0, bytes.baseAddress, bytes.count) == vector.crc, "\(vector.name) PCLMULQDQ")
        }
    }

    @Test("the hardware path is in use on this machine when the CPU has SSE4.2")
    func hardwareDetected() throws {
        #if arch(x86_64)
        let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        if let cpuinfo, cpuinfo.contains(" sse4_2") {
            #expect(CRC32C.isHardwareAccelerated)
        }
        #endif
    }

    @Test("the 128-bit folding path is tested wherever the CPU has PCLMULQDQ, and chosen only with it")
    func clmulDetected() throws {
        #if arch(x86_64)
        let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        if let cpuinfo, cpuinfo.contains(" pclmulqdq"), cpuinfo.contains(" sse4_2") {
            #expect(ckk_crc32c_clmul_available() != 0)
        }
        #endif
        if ckk_crc32c_clmul_chosen() != 0 {
            #expect(ckk_crc32c_clmul_available() != 0)
            #expect(ckk_crc32c_folding_available() == 0, "AVX-512 folding wins wherever it exists")
            #expect(CRC32C.implementation.hasPrefix("PCLMULQDQ"))
        }
    }

    @Test("hardware and portable paths agree on every length 0...4096 at random alignments")
    func pathsAgree() {
        var rng = SyntheticData(seed: 42)
        let buffer = rng.randomBytes(count: 4096 + 64)
        buffer.withUnsafeBytes { all in
            for length in 0...4096 {
                let start = Int(rng.next() % 64)
                let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                let hardware = ckk_crc32c_extend_hardware(0x1234_5678, slice.baseAddress, slice.count)
                let sse42 = ckk_crc32c_extend_sse42(0x1234_5678, slice.baseAddress, slice.count)
                let clmul = ckk_crc32c_extend_clmul(0x1234_5678, slice.baseAddress, slice.count)
                let portable = CRC32C.extendPortable(0x1234_5678, slice)
                #expect(hardware == portable, "length \(length) at offset \(start)")
                #expect(sse42 == portable, "SSE4.2, length \(length) at offset \(start)")
                #expect(clmul == portable, "PCLMULQDQ, length \(length) at offset \(start)")
                if hardware != portable || sse42 != portable || clmul != portable { return }
            }
        }
    }

    @Test("every path agrees on large buffers (multi-stream and folding loops, their tails)")
    func largeBuffersAgree() {
        var rng = SyntheticData(seed: 7)
        let buffer = rng.randomBytes(count: (1 << 20) + 64)
        buffer.withUnsafeBytes { all in
            var lengths = [24_575, 24_576, 24_577, 49_152 + 767, 1 << 20]
            lengths += (0..<300).map { _ in 1024 + Int(rng.next() % 200_000) }  // folding: 256-byte blocks, 64-byte blocks, tails
            for length in lengths {
                let start = Int(rng.next() % 64)
                let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                let portable = CRC32C.extendPortable(0xFFFF_0000, slice)
                #expect(ckk_crc32c_extend_hardware(0xFFFF_0000, slice.baseAddress, length) == portable, "length \(length)")
                #expect(ckk_crc32c_extend_sse42(0xFFFF_0000, slice.baseAddress, length) == portable, "SSE4.2 length \(length)")
                #expect(ckk_crc32c_extend_clmul(0xFFFF_0000, slice.baseAddress, length) == portable, "PCLMULQDQ length \(length)")
            }
        }
    }

    @Test("streaming extend equals one-shot, and combine equals both")
    func streamingAndCombine() {
        var rng = SyntheticData(seed: 3)
        let buffer = rng.randomBytes(count: 100_000)
        buffer.withUnsafeBytes { all in
            let whole = CRC32C.checksum(all)
            for _ in 0..<200 {
                let cut = Int(rng.next() % UInt64(all.count + 1))
                let a = UnsafeRawBufferPointer(rebasing: all[..<cut])
                let b = UnsafeRawBufferPointer(rebasing: all[cut...])
                #expect(CRC32C.extend(CRC32C.checksum(a), b) == whole, "split at \(cut)")
                #expect(CRC32C.combine(CRC32C.checksum(a), CRC32C.checksum(b), lengthOfB: b.count) == whole, "combine at \(cut)")
            }
        }
    }

    @Test("combine is right for lengths of 512 MiB and more (powers past x^(2^32))")
    func combineLargeLengths() {
        // Real data: CRC of 1 GiB of zeros, streamed, against combine's closed form.
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        let prefix = CRC32C.checksum(Array("checkpoint".utf8))
        var streamed = prefix
        var zerosCRC: UInt32 = 0
        zeros.withUnsafeBytes { buffer in
            for _ in 0..<1024 {
                streamed = CRC32C.extend(streamed, buffer)
                zerosCRC = CRC32C.extend(zerosCRC, buffer)
            }
        }
        #expect(CRC32C.combine(prefix, zerosCRC, lengthOfB: 1 << 30) == streamed)
        // Algebra: combining is associative for any lengths, up to 2^60 bytes.
        var rng = SyntheticData(seed: 9)
        for _ in 0..<100 {
            let (a, b, c) = (UInt32(truncatingIfNeeded: rng.next()), UInt32(truncatingIfNeeded: rng.next()), UInt32(truncatingIfNeeded: rng.next()))
            let n1 = Int(rng.next() >> 4), n2 = Int(rng.next() >> 4)
            let left = CRC32C.combine(CRC32C.combine(a, b, lengthOfB: n1), c, lengthOfB: n2)
            let right = CRC32C.combine(a, CRC32C.combine(b, c, lengthOfB: n2), lengthOfB: n1 + n2)
            #expect(left == right, "lengths \(n1), \(n2)")
        }
    }
}

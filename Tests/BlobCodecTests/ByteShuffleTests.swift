import BlobCodec
import CCheckpointKernels
import Testing

@Suite("Byte shuffle")
struct ByteShuffleTests {
    /// An independent reference: byte k of element i goes to k·n + i; the tail is kept.
    static func referenceShuffle(_ input: [UInt8], elementSize: Int) -> [UInt8] {
        let n = input.count / elementSize
        var out = input
        for i in 0..<n {
            for k in 0..<elementSize { out[k * n + i] = input[i * elementSize + k] }
        }
        return out
    }

    @Test("shuffle matches the reference and unshuffle inverts it, every element size", arguments: 1...16)
    func roundTrip(elementSize: Int) {
        var rng = SyntheticData(seed: UInt64(elementSize))
        var lengths = Array(0...300)
        lengths += [elementSize * 16 * 37 + 5, elementSize * 1000, 65_537]
        for length in lengths {
            let input = rng.randomBytes(count: length)
            var shuffled = [UInt8](repeating: 0xAA, count: length)
            var restored = [UInt8](repeating: 0x55, count: length)
            input.withUnsafeBytes { src in
                shuffled.withUnsafeMutableBytes { ByteShuffle.shuffle(src, into: $0, elementSize: elementSize) }
            }
            shuffled.withUnsafeBytes { src in
                restored.withUnsafeMutableBytes { ByteShuffle.unshuffle(src, into: $0, elementSize: elementSize) }
            }
            #expect(shuffled == Self.referenceShuffle(input, elementSize: elementSize), "size \(elementSize) length \(length)")
            #expect(restored == input, "size \(elementSize) length \(length)")
            if restored != input { return }
        }
    }

    @Test("SIMD and scalar kernels agree")
    func simdMatchesScalar() {
        var rng = SyntheticData(seed: 99)
        for size in [2, 4, 8, 16] {
            for length in [16 * size - 1, 16 * size, 16 * size + 1, 1 << 16, (1 << 16) + 3] {
                let input = rng.randomBytes(count: length)
                var simd = [UInt8](repeating: 0, count: length)
                var scalar = [UInt8](repeating: 1, count: length)
                input.withUnsafeBytes { src in
                    simd.withUnsafeMutableBytes { ckk_shuffle($0.baseAddress, src.baseAddress, length, size) }
                    scalar.withUnsafeMutableBytes { ckk_shuffle_scalar($0.baseAddress, src.baseAddress, length, size) }
                }
                #expect(simd == scalar, "shuffle size \(size) length \(length)")
                var back = [UInt8](repeating: 2, count: length)
                simd.withUnsafeBytes { src in back.withUnsafeMutableBytes { ckk_unshuffle_scalar($0.baseAddress, src.baseAddress, length, size) } }
                #expect(back == input, "scalar unshuffle size \(size) length \(length)")
            }
        }
    }

    @Test("the fused shuffle+CRC and unshuffle+CRC kernels equal the separate passes")
    func fusedKernels() {
        var rng = SyntheticData(seed: 5)
        for size in 1...16 {
            for length in [0, 1, 15, 16 * size, 16 * size * 1024 + 7, 16 * size * 1500 + 3, 100_003] {
                let input = rng.randomBytes(count: length)
                var fused = [UInt8](repeating: 0, count: length)
                var plain = [UInt8](repeating: 1, count: length)
                let crc = input.withUnsafeBytes { src in
                    fused.withUnsafeMutableBytes { ckk_shuffle_crc32c($0.baseAddress, src.baseAddress, length, size, 0x0BAD_F00D) }
                }
                input.withUnsafeBytes { src in plain.withUnsafeMutableBytes { ByteShuffle.shuffle(src, into: $0, elementSize: size) } }
                #expect(fused == plain, "shuffle size \(size) length \(length)")
                #expect(crc == input.withUnsafeBytes { CRC32C.extend(0x0BAD_F00D, $0) }, "shuffle CRC size \(size) length \(length)")

                var restored = [UInt8](repeating: 2, count: length)
                let restoredCRC = plain.withUnsafeBytes { src in
                    restored.withUnsafeMutableBytes { ckk_unshuffle_crc32c($0.baseAddress, src.baseAddress, length, size, 7) }
                }
                #expect(restored == input, "unshuffle size \(size) length \(length)")
                #expect(restoredCRC == input.withUnsafeBytes { CRC32C.extend(7, $0) }, "unshuffle CRC size \(size) length \(length)")
            }
        }
    }
}

import CCheckpointKernels
import Testing

@Suite("Streaming copy")
struct CopyKernelTests {
    /// Every length around the streaming threshold and the 64-byte line, at every
    /// destination and source misalignment within a line: the copy equals memcpy's and
    /// writes no byte outside the destination.
    @Test func equalsMemcpyAndStaysInBounds() {
        let lengths = [0, 1, 63, 64, 65, 4031, 4095, 4096, 4097, 4096 + 63, 4096 + 64, 10_000, (1 << 20) + 13]
        let guardBytes = 128
        var failures: [String] = []
        for length in lengths {
            for dstOffset in [0, 1, 7, 31, 63] {
                for srcOffset in [0, 5, 64] {
                    let source = (0..<(length + srcOffset)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ length &+ 17) }
                    var destination = [UInt8](repeating: 0xA5, count: guardBytes + dstOffset + length + guardBytes)
                    source.withUnsafeBytes { src in
                        destination.withUnsafeMutableBytes { dst in
                            ckk_copy_streaming(dst.baseAddress! + guardBytes + dstOffset, src.baseAddress! + srcOffset, length)
                        }
                    }
                    let start = guardBytes + dstOffset
                    let copied = destination[start..<(start + length)].elementsEqual(source[srcOffset...])
                    let before = destination[..<start].allSatisfy { $0 == 0xA5 }
                    let after = destination[(start + length)...].allSatisfy { $0 == 0xA5 }
                    if !(copied && before && after) {
                        failures.append("length \(length), dst +\(dstOffset), src +\(srcOffset): copied \(copied), before \(before), after \(after)")
                    }
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
    }
}

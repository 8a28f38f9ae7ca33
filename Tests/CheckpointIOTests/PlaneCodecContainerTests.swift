@testable import CheckpointIO
import Foundation
import Testing

/// The plane codec inside container files: the recommended options
/// (`EncodeOptions.recommended()`, `--codec auto`) on a checkpoint-like mix.
@Suite("Plane codec in containers")
struct PlaneCodecContainerTests {
    @Test("recommended options: floats in the plane codec, the rest uncompressed and viewable; mmap and pread read it back")
    func recommendedMix() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/auto.ckpt"
            var rng = SyntheticData(seed: 12)
            let blobs = [
                TestBlob(name: "w.f32", dtype: .float32, shape: [300, 1000], bytes: rng.float32Weights(count: 300_000)),
                TestBlob(name: "w.bf16", dtype: .bfloat16, shape: [3_000_001], bytes: rng.bfloat16Weights(count: 3_000_001)),
                TestBlob(name: "zeros", dtype: .float32, shape: [1 << 20], bytes: [UInt8](repeating: 0, count: 4 << 20)),
                TestBlob(name: "noise", dtype: .float16, shape: [100_000], bytes: rng.randomBytes(count: 200_000)),
                TestBlob(name: "step", dtype: .int64, shape: [], bytes: [7, 0, 0, 0, 0, 0, 0, 0]),
                TestBlob(name: "ids", dtype: .int32, shape: [1000], bytes: rng.randomBytes(count: 4000)),
                TestBlob(name: "mask", dtype: .bool, shape: [64], bytes: [UInt8](repeating: 1, count: 64)),
            ]
            try writeContainer(path, blobs, options: WriterOptions(encode: .recommended(threads: 2)))
            for mode in [ReadMode.mmap, .pread] {
                let reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode))
                for blob in blobs {
                    let descriptor = try reader.descriptor(blob.name)
                    #expect(descriptor.compression == (blob.dtype.isFloatingPoint ? .planes : .none), "\(blob.name)")
                    #expect(try reader.read(blob.name) == blob.bytes, "\(blob.name) \(mode)")
                }
                #expect(try reader.descriptor("ids").isViewableInPlace || mode == .pread)
                #expect(try reader.descriptor("w.bf16").isViewableInPlace == false)
                #expect(reader.verify().allSatisfy { $0.error == nil })
            }
            let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
            let raw = blobs.reduce(0) { $0 + $1.bytes.count }
            #expect(Double(raw) / Double(size) > 1.4, "the float weights dominate and compress")
        }
    }
}

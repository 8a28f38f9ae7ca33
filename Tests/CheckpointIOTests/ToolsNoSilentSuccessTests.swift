import CheckpointIO
import Foundation
import Testing

/// Issue 18, library side, through the public API only: what the `ckpt` tests check from outside.
@Suite("Tools: no silent success")
struct ToolsNoSilentSuccessTests {
    func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    // Point 4
    @Test func checkpointDirectoryListsEpochsAndFallsBackPastADamagedOne() throws {
        try withTemporaryDirectory { dir in
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: DurableMetadataHandler(),
                                                workspace: Workspace(["e": Tensor(scalar: Int64(0))]))
            try manager.setParams()
            try manager.initialize()
            for epoch in 0...2 {
                try manager.save(epoch: epoch)
                try manager.writeCheckpointMetadata(epoch: epoch)
            }
            #expect(CheckpointDirectory.isCheckpointDirectory(dir))
            var run = try CheckpointDirectory.open(dir)
            #expect(run.epochs.map(\.epoch) == [0, 1, 2] && run.epochs.allSatisfy { $0.status == .complete })
            #expect(run.resumeEpoch == 2 && run.verify().allSatisfy { (try? $0.result.get().isIntact) == true })
            try writeFile(dir + "/n.2", Array(try readFile(dir + "/n.2").dropLast(1)))
            run = try CheckpointDirectory.open(dir + "/" + DurableMetadataHandler.fileName)
            #expect(run.resumeEpoch == 1 && run.epochs.last?.status == .damaged)
            #expect(run.verify().contains { (try? $0.result.get().isIntact) != true })
            // Not a directory of .npy files, and an empty directory is not one either.
            #expect(throws: CheckpointError.self) { try TensorFile.open(dir) }
            try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: false)
            #expect(throws: CheckpointError.self) { try TensorFile.open(dir + "/empty") }
        }
    }

    // Points 5 and 12
    @Test func conversionsAreDurableAtomicAndNamedByFormat() throws {
        #expect(ConversionOptions().durability == .full)
        #expect(TensorConversion.outputFormat(for: "model.pt") == nil && TensorConversion.outputFormat(for: "m.ckpt") == .container)
        try withTemporaryDirectory { dir in
            let a = bytes([Float](repeating: 1, count: 16)), b = bytes([UInt16](repeating: 0x3F80, count: 16))
            try a.withUnsafeBytes { a in
                try b.withUnsafeBytes { b in
                    let good = BlobSource(name: "a", dtype: .float32, shape: [16], bytes: a)
                    let bad = BlobSource(name: "b", dtype: .bfloat16, shape: [16], bytes: b)  // numpy has no bf16
                    #expect(throws: CheckpointError.self) { try TensorConversion.write([good], to: dir + "/model.pt") }
                    #expect(throws: CheckpointError.self) { try TensorConversion.write([good, bad], to: dir + "/arrays/") }
                    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
                    try TensorConversion.write([good], to: dir + "/model.pt", options: ConversionOptions(format: .safetensors))
                    #expect(try TensorFileFormat.detect(dir + "/model.pt") == .safetensors)
                    // A temporary of a dead writer is removed by the next write, and reported.
                    try writeFile(dir + "/.x.ckpt.tmp.2147483646.ab12", [1, 2, 3])
                    let summary = try TensorConversion.write([good], to: dir + "/arrays/")
                    #expect(summary.removedTemporaries == [".x.ckpt.tmp.2147483646.ab12"] && summary.removedTemporaryBytes == 3)
                    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["arrays", "model.pt"])
                }
            }
        }
    }

    // Point 9
    @Test func statisticsOfEveryFloatDType() throws {
        let values: [Double] = [1, -3, .nan, .infinity, 2]
        let encodings: [(DType, [UInt8])] = [
            (.float32, bytes(values.map { Float($0) })),
            (.float64, bytes(values)),
            (.bfloat16, bytes(values.map { UInt16(Float($0).bitPattern >> 16) })),
            (.float16, bytes([UInt16(0x3C00), 0xC200, 0x7E00, 0x7C00, 0x4000])),  // 1, -3, NaN, +inf, 2
        ]
        for (dtype, data) in encodings {
            let stats = try #require(data.withUnsafeBytes { TensorStatistics($0, dtype: dtype) }, "\(dtype)")
            #expect(stats.count == 5 && stats.finiteCount == 3 && stats.nanCount == 1 && stats.infinityCount == 1, "\(dtype)")
            #expect(stats.minimum == -3 && stats.maximum == 2 && stats.mean == 0, "\(dtype)")
            #expect(abs(stats.standardDeviation! - (14.0 / 3).squareRoot()) < 1e-12, "\(dtype)")
        }
        #expect(bytes([Int32(1)]).withUnsafeBytes { TensorStatistics($0, dtype: .int32) } == nil)
        let none = try #require(bytes([Float.nan]).withUnsafeBytes { TensorStatistics($0, dtype: .float32) })
        #expect(none.minimum == nil && none.nanCount == 1)
    }

    // Point 7
    @Test func zstdDefaultsToLevelOne() throws {
        #expect(try Compression(parsing: "zstd") == .zstd(level: 1))
        #expect(Compression.defaultLevel(forName: "zlib") == 6 && Compression.defaultLevel(forName: "zstdd") == nil)
    }
}

import CheckpointIO
import Foundation
import Testing

/// `ckpt` on incremental checkpoints (issue 13): inspect shows references,
/// verify follows them, convert/extract flatten them, diff compares.
@Suite("ckpt on incremental checkpoints")
struct IncrementalCLITests {
    /// Epochs 1 (full) and 2 (incremental: `b` changed) of node `n` in `directory`.
    static func makeRun(_ directory: String) throws {
        let workspace = Workspace(["a": try Tensor([Float](repeating: 1.5, count: 64)), "b": try Tensor([Float](repeating: 2, count: 64)),
                                   "c": try Tensor([Int32](repeating: 7, count: 8))])
        var options = CheckpointOptions(writer: WriterOptions(durability: .none))
        options.incremental = IncrementalOptions(fullEvery: 100)
        let manager = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: workspace, options: options)
        try manager.initialize()
        try manager.save(epoch: 1)
        try workspace.update("b") { tensor in
            tensor.withUnsafeMutableBytes { bytes in bytes.bindMemory(to: Float.self)[5] = 2.25 }
        }
        try manager.save(epoch: 2)
    }

    @Test func inspectVerifyConvertAndDiff() throws {
        try withTemporaryDirectory { dir in
            try Self.makeRun(dir)
            let inspect = try ckpt("inspect", "n.2", in: dir)
            #expect(inspect.status == 0)
            #expect(inspect.stdout.contains("a → n.1, record at offset 64"), "\(inspect.stdout)")
            #expect(inspect.stdout.contains("references: 2 of 3 blobs"))
            let json = try ckpt("inspect", "n.2", "--json", in: dir)
            #expect(json.stdout.contains("\"reference\":{\"file\":\"n.1\""))
            #expect(try ckpt("verify", "n.2", in: dir).status == 0)

            // Flattened: the converted file stands alone, with the same bytes.
            #expect(try ckpt("convert", "n.2", "flat.ckpt", in: dir).status == 0)
            #expect(try ckpt("extract", "n.2", "a", "-o", "a.safetensors", in: dir).status == 0)
            let flat = try ContainerReader.open(dir + "/flat.ckpt")
            #expect(try flat.descriptors().allSatisfy { !$0.isReference })
            #expect(flat.metadata[CheckpointManager.referencesKey] == nil)

            let diff = try ckpt("diff", "n.1", "n.2", in: dir)
            #expect(diff.status == 1)
            #expect(diff.stdout.contains("0 new, 0 removed, 2 identical, 1 changed"), "\(diff.stdout)")
            #expect(diff.stdout.contains("CHANGED    b: bytes differ, max |a-b| = 0.25"), "\(diff.stdout)")
            let same = try ckpt("diff", "n.2", "flat.ckpt", "--all", in: dir)
            #expect(same.status == 0 && same.stdout.contains("3 identical"), "\(same.stdout)")
            let other = try ckpt("diff", "n.2", "a.safetensors", "--json", in: dir)
            #expect(other.status == 1 && other.stdout.contains("\"removed\":2"), "\(other.stdout)")
            #expect(other.stdout.contains("\"name\":\"a\",\"status\":\"identical\",\"reason\":\"same bytes\""), "\(other.stdout)")

            // A damaged target: verify of the referencing file names both files.
            let target = try ContainerReader.open(dir + "/n.1").descriptor("a")
            var bytes = try fileBytes(dir + "/n.1")
            bytes[target.payloadOffset] ^= 1
            try writeBytes(dir + "/n.1", bytes)
            let damaged = try ckpt("verify", "n.2", in: dir)
            #expect(damaged.status == 65)
            #expect(damaged.stdout.contains("DAMAGED  n.2: blob 'a'") && damaged.stdout.contains("n.1"), "\(damaged.stdout)")
        }
    }
}

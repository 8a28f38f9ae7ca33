@testable import CheckpointIO
import BlobCodec
import Foundation
import Testing

/// Incremental saves (issue 13): only changed blobs are written, references for the rest.
@Suite struct IncrementalTests {
    static let blobCount = 100

    /// A workspace of `blobCount` F32 blobs of varied sizes, each with distinct values.
    static func makeWorkspace(seed: UInt64) throws -> Workspace {
        var random = SplitMix(seed: seed)
        let workspace = Workspace()
        for index in 0..<blobCount {
            let count = 16 + index * 7
            workspace.setBlob(String(format: "layer%03d.weight", index), try Tensor((0..<count).map { _ in Float(random.next() % 1000) / 7 }))
        }
        workspace.setBlob("step", Tensor(scalar: Int64(0)))
        return workspace
    }

    /// Mutates blobs `indices` in place (as an optimizer step would) and bumps `step`.
    static func train(_ workspace: Workspace, indices: [Int], epoch: Int) throws {
        for index in indices {
            try workspace.update(String(format: "layer%03d.weight", index)) { tensor in
                tensor.withUnsafeMutableBytes { bytes in
                    let floats = bytes.bindMemory(to: Float.self)
                    for i in floats.indices { floats[i] += Float(epoch) * 0.5 }
                }
            }
        }
        try workspace.update("step") { $0.withUnsafeMutableBytes { $0.storeBytes(of: Int64(epoch), as: Int64.self) } }
    }

    static func contents(_ workspace: Workspace) -> [String: [UInt8]] {
        Dictionary(uniqueKeysWithValues: workspace.blobNames.map { ($0, workspace.blob($0)!.bytes) })
    }

    static func incrementalOptions(fullEvery: Int = 1000) -> CheckpointOptions {
        var options = CheckpointOptions(writer: WriterOptions(durability: .none))
        options.incremental = IncrementalOptions(fullEvery: fullEvery)
        return options
    }

    /// The names stored as bytes (not references) in a file.
    static func storedNames(_ path: String) throws -> Set<String> {
        let reader = try ContainerReader.open(path)
        return Set(try reader.descriptors().filter { !$0.isReference }.map(\.name))
    }

    @Test func tenEpochsWithADifferentTwoPercentChangedEachLoadBitExactAndStoreOnlyChangedBlobs() throws {
        try withTemporaryDirectory { directory in
            let workspace = try Self.makeWorkspace(seed: 1)
            let manager = try CheckpointManager(dbPrefix: directory, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(),
                                                workspace: workspace, options: Self.incrementalOptions())
            try manager.initialize()
            var expected: [Int: [String: [UInt8]]] = [:]
            var changed: [Int: Set<String>] = [:]
            for epoch in 1...10 {
                // A different 2% each epoch: blobs 2(e-1) and 2(e-1)+1, plus the step counter.
                let indices = epoch == 1 ? [] : [2 * (epoch - 1), 2 * (epoch - 1) + 1]
                try Self.train(workspace, indices: indices, epoch: epoch)
                try manager.save(epoch: epoch)
                try manager.writeCheckpointMetadata(epoch: epoch)
                expected[epoch] = Self.contents(workspace)
                changed[epoch] = Set(indices.map { String(format: "layer%03d.weight", $0) } + ["step"])
            }
            #expect(try Self.storedNames(manager.dbName(epoch: 1)).count == Self.blobCount + 1)
            for epoch in 2...10 {
                let path = manager.dbName(epoch: epoch)
                #expect(try Self.storedNames(path) == changed[epoch]!, "epoch \(epoch)")
                let reader = try ContainerReader.open(path)
                // Every reference points at a stored blob (depth 1) of an earlier epoch's file.
                for name in reader.names where !changed[epoch]!.contains(name) {
                    let reference = try #require(try reader.reference(name))
                    #expect(!reference.target.isReference)
                    let target = try ContainerReader.open(CheckpointNaming.join(directory, reference.fileName))
                    #expect(try !target.descriptor(name).isReference)
                }
                // Only the changed bytes (plus headers and references) were written.
                let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
                #expect(size < 64 << 10, "epoch \(epoch): \(size) bytes")
            }
            // Every epoch loads bit-exact, in a fresh manager (a resumed run).
            for epoch in 1...10 {
                let fresh = Workspace()
                let loader = try CheckpointManager(dbPrefix: directory, nodeName: "trainer_0", workspace: fresh, options: Self.incrementalOptions())
                try loader.initialize(retrieveFromEpoch: epoch)
                try loader.load(epoch: epoch)
                #expect(Self.contents(fresh) == expected[epoch]!, "epoch \(epoch)")
            }
        }
    }

    @Test func fullEveryKSavesWritesEveryBlobAgain() throws {
        try withTemporaryDirectory { directory in
            let workspace = try Self.makeWorkspace(seed: 2)
            let manager = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: workspace, options: Self.incrementalOptions(fullEvery: 3))
            try manager.initialize()
            for epoch in 1...7 {
                try Self.train(workspace, indices: [epoch], epoch: epoch)
                try manager.save(epoch: epoch)
                let stored = try Self.storedNames(manager.dbName(epoch: epoch)).count
                let full = [1, 4, 7].contains(epoch)
                #expect(stored == (full ? Self.blobCount + 1 : 2), "epoch \(epoch)")
            }
        }
    }

    @Test func aBlobReplacedOrMutatedIsWrittenAndAnUntouchedCopyIsNot() throws {
        try withTemporaryDirectory { directory in
            let workspace = try Self.makeWorkspace(seed: 3)
            let manager = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: workspace, options: Self.incrementalOptions())
            try manager.initialize()
            try manager.save(epoch: 1)
            // Replaced by an equal tensor (new storage): written. Read and copied out: not written.
            workspace.setBlob("layer005.weight", try Tensor(dtype: .float32, shape: workspace.blob("layer005.weight")!.shape,
                                                            bytes: workspace.blob("layer005.weight")!.bytes))
            var copy = workspace.blob("layer006.weight")!
            _ = copy.bytes
            // A copy mutated elsewhere does not change the workspace's blob (copy-on-write).
            copy.withUnsafeMutableBytes { $0[0] ^= 0xFF }
            try manager.save(epoch: 2)
            #expect(try Self.storedNames(manager.dbName(epoch: 2)) == ["layer005.weight"])
            // Saving the same epoch again never refers into the file being replaced.
            try manager.save(epoch: 2)
            #expect(try Self.storedNames(manager.dbName(epoch: 2)) == ["layer005.weight"])
            #expect(try Self.referencedFiles(manager.dbName(epoch: 2)) == ["n.1"])
            let fresh = Workspace()
            let loader = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: fresh)
            try loader.initialize(retrieveFromEpoch: 2)
            try loader.load(epoch: 2)
            #expect(Self.contents(fresh) == Self.contents(workspace))
        }
    }

    @Test func retentionKeepLatestTwoOverTwentyEpochsNeverDanglesAndDeletesUnreferencedFiles() throws {
        try withTemporaryDirectory { directory in
            let workspace = try Self.makeWorkspace(seed: 4)
            let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2), durability: .none)
            let manager = try CheckpointManager(dbPrefix: directory, nodeName: "trainer_0", metadataHandler: handler,
                                                workspace: workspace, options: Self.incrementalOptions(fullEvery: 6))
            try manager.initialize()
            var expected: [Int: [String: [UInt8]]] = [:]
            for epoch in 1...20 {
                try Self.train(workspace, indices: [(epoch * 7) % Self.blobCount, (epoch * 13) % Self.blobCount], epoch: epoch)
                try manager.save(epoch: epoch)
                try manager.writeCheckpointMetadata(epoch: epoch)
                expected[epoch] = Self.contents(workspace)
                let kept = try handler.completeEpochs()
                #expect(kept.map(\.epoch) == Array(max(1, epoch - 1)...epoch))
                // Every kept epoch loads bit-exact (no dangling reference)…
                for record in kept {
                    let fresh = Workspace()
                    let loader = try CheckpointManager(dbPrefix: directory, nodeName: "trainer_0", workspace: fresh)
                    try loader.initialize(retrieveFromEpoch: record.epoch)
                    try loader.load(epoch: record.epoch)
                    #expect(Self.contents(fresh) == expected[record.epoch]!, "epoch \(record.epoch) after saving \(epoch)")
                    // The record keeps the files it refers to, and the files those refer to.
                    var closure = Set<String>(), pending = ["trainer_0.\(record.epoch)"]
                    while let file = pending.popLast() {
                        for target in try Self.referencedFiles(CheckpointNaming.join(directory, file)) where closure.insert(target).inserted { pending.append(target) }
                    }
                    #expect(Set(record.references) == closure)
                }
                // …and the only checkpoint files left are kept epochs' and the files they refer to.
                let needed = Set(kept.map { "trainer_0.\($0.epoch)" } + kept.flatMap(\.references))
                let files = Set(directoryListing(directory).filter { $0.hasPrefix("trainer_0.") })
                #expect(files == needed, "after epoch \(epoch)")
                // Every file left verifies whole, through its references.
                for file in files { #expect(try TensorVerification.verify(CheckpointNaming.join(directory, file)).isIntact, "\(file)") }
            }
            // The full saves (epochs 1, 7, 13, 19) freed the old frozen weights.
            #expect(!fileExists(CheckpointNaming.join(directory, "trainer_0.1")))
        }
    }

    /// The files a checkpoint file's references point at, read from its records.
    static func referencedFiles(_ path: String) throws -> [String] {
        let reader = try ContainerReader.open(path)
        return try Set(reader.names.compactMap { try reader.reference($0)?.fileName }).sorted()
    }

    @Test func aDamagedOrReplacedTargetFailsTheLoadNamingBothFiles() throws {
        try withTemporaryDirectory { directory in
            let workspace = try Self.makeWorkspace(seed: 5)
            let manager = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: workspace, options: Self.incrementalOptions())
            try manager.initialize()
            try manager.save(epoch: 1)
            try Self.train(workspace, indices: [0], epoch: 2)
            try manager.save(epoch: 2)
            let first = manager.dbName(epoch: 1), second = manager.dbName(epoch: 2)
            let original = try fileBytes(first)

            func loadError() throws -> CheckpointError {
                let loader = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: Workspace())
                try loader.initialize(retrieveFromEpoch: 2)
                return try #require(throws: CheckpointError.self) { try loader.load(epoch: 2) }
            }
            func expectNamesBoth(_ error: CheckpointError, _ what: String) {
                #expect(error.path == second, "\(what): \(error)")
                guard case let .referenceTargetInvalid(target, _) = error.code else {
                    Issue.record("\(what): \(error)")
                    return
                }
                #expect(target == first, "\(what)")
                #expect(error.isCheckpointDamage)
            }

            // Damaged: one payload byte of a referenced blob flipped.
            let reader = try ContainerReader.open(first)
            let victim = try reader.descriptor("layer050.weight")
            var damaged = original
            damaged[victim.payloadOffset + 3] ^= 0x10
            try writeBytes(first, damaged)
            expectNamesBoth(try loadError(), "damaged")
            let report = try TensorVerification.verify(second)
            #expect(report.damaged.map(\.blob) == ["layer050.weight"])
            #expect("\(report.damaged[0].error)".contains(first))

            // Replaced: another file of the same name (a different save).
            manager.releaseWriterLock()
            let other = try Self.makeWorkspace(seed: 99)
            let replacer = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: other)
            try replacer.initialize()
            try replacer.save(epoch: 1)
            expectNamesBoth(try loadError(), "replaced")
            #expect(!(try TensorVerification.verify(second)).isIntact)

            // Missing.
            try FileManager.default.removeItem(atPath: first)
            let missing = try loadError()
            expectNamesBoth(missing, "missing")
            #expect("\(missing)".contains("does not exist"))
        }
    }

    @Test func asyncAndMultiNodeSavesAreIncrementalToo() throws {
        try withTemporaryDirectory { directory in
            let manager = try MultiNodeCheckpointManager(dbPrefix: directory, metadataHandler: DurableMetadataHandler(durability: .none),
                                                         options: Self.incrementalOptions())
            for node in ["a", "b"] {
                let seeded = try Self.makeWorkspace(seed: node == "a" ? 6 : 7)
                for name in seeded.blobNames { manager.workspace(forNode: node).setBlob(name, seeded.blob(name)!) }
            }
            try manager.initialize(nodes: ["a", "b"])
            var expected: [String: [String: [UInt8]]] = [:]
            for epoch in 1...3 {
                for node in ["a", "b"] { try Self.train(manager.workspace(forNode: node), indices: [epoch], epoch: epoch) }
                try manager.saveAsync(epoch: epoch)
                try manager.waitUntilFinished()
            }
            for node in ["a", "b"] { expected[node] = Self.contents(manager.workspace(forNode: node)) }
            for node in ["a", "b"] {
                let path = try #require(manager.dbName(nodeName: node, epoch: 3))
                #expect(try Self.storedNames(path) == ["layer003.weight", "step"])
            }
            let loader = try MultiNodeCheckpointManager(dbPrefix: directory, options: Self.incrementalOptions())
            try loader.initialize(nodes: ["a", "b"], retrieveFromEpoch: 3)
            try loader.load(epoch: 3)
            for node in ["a", "b"] { #expect(Self.contents(loader.workspace(forNode: node)) == expected[node]!) }
        }
    }
}

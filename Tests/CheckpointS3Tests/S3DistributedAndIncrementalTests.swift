@testable import CheckpointIO
@testable import CheckpointS3
import Foundation
import Testing

/// The distributed commit (issue 11) and incremental saves (issue 13), which
/// reach storage only through `CheckpointStorage`, on a bucket (moto).
@Suite("Distributed and incremental checkpoints on S3", .serialized)
struct S3DistributedAndIncrementalTests {
    /// Rank `rank`'s blobs for `epoch`.
    static func fill(_ workspace: Workspace, rank: Int, epoch: Int) throws {
        workspace["epoch"] = Tensor(scalar: Int64(epoch))
        workspace["r\(rank).f32"] = try Tensor(dtype: .float32, shape: [rank + 3, 7], bytes: patternBytes((rank + 3) * 7 * 4, seed: UInt64(rank * 100 + epoch)))
        workspace["r\(rank).u8"] = try Tensor(dtype: .uint8, shape: [70_000 + rank], bytes: patternBytes(70_000 + rank, seed: UInt64(rank * 100 + epoch + 50)))
    }

    /// Four ranks (each its own manager, saving on its own thread) commit
    /// epochs 0...2 through the bucket: every epoch completes exactly once,
    /// every rank resumes from the same epoch, and one reader loads every
    /// rank's blobs bit-exact; retention (keep 2) removed epoch 0's objects.
    @Test func fourRanksCommitThroughTheBucket() throws {
        let bucket = try registerMotoStorage()
        let prefix = bucket.url("dist")
        let world = 4
        let ranks = try (0..<world).map { rank in
            try DistributedCheckpointManager(dbPrefix: prefix, rank: rank, worldSize: world, runID: "s3run",
                                             retention: RetentionPolicy(keepLatest: 2), completionWait: .upTo(.seconds(60)))
        }
        for (rank, manager) in ranks.enumerated() {
            try Self.fill(manager.workspace(forNode: manager.localNodes[0]), rank: rank, epoch: 0)
            try manager.initialize(nodes: manager.localNodes)
        }
        let failures = LockedResults()
        // One thread per rank, all at once (concurrentPerform would run only as many as there are cores,
        // and a rank waiting for its epoch to complete would then wait for ranks not yet started).
        let group = DispatchGroup()
        for rank in 0..<world {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let manager = ranks[rank]
                do {
                    for epoch in 0...2 {
                        try Self.fill(manager.workspace(forNode: manager.localNodes[0]), rank: rank, epoch: epoch)
                        try manager.save(epoch: epoch)
                        try manager.writeCheckpointMetadata(epoch: epoch)
                        guard try manager.isEpochComplete(epoch) else { throw CheckpointError(.invalidState(reason: "epoch \(epoch) not complete after the wait")) }
                    }
                } catch {
                    failures.append("rank \(rank): \(error)")
                }
            }
        }
        group.wait()
        #expect(failures.values.isEmpty, "\(failures.values)")
        for manager in ranks {
            #expect(try manager.getResumeFromEpochID(userEpoch: nil) == 2)
            manager.releaseWriterLock()
        }
        #expect(try ranks[0].completeEpochs() == [1, 2])
        let keys = try bucket.allKeys()
        #expect(!keys.contains { $0.hasSuffix("trainer_0.0") }, "retention removes epoch 0: \(keys)")
        #expect(keys.filter { $0.hasSuffix(".complete") }.sorted() == ["dist/distributed/1.complete", "dist/distributed/2.complete"])

        // One process (another world size) loads every rank's blobs of epoch 2.
        let reader = try DistributedCheckpointManager(dbPrefix: prefix, rank: 0, worldSize: 1, runID: "reader", nodeName: { "reader_\($0)" })
        let loaded = Workspace()
        let names = (0..<world).flatMap { ["r\($0).f32", "r\($0).u8"] }
        try reader.loadBlobsFromCheckpoint(names, epoch: 2, into: loaded)
        for rank in 0..<world {
            let expected = Workspace()
            try Self.fill(expected, rank: rank, epoch: 2)
            for name in ["r\(rank).f32", "r\(rank).u8"] {
                #expect(try loaded.fetchBlob(name).bytes == expected.fetchBlob(name).bytes, "\(name)")
            }
        }
        // An epoch retention removed is not found (the store's 404 becomes checkpointNotFound).
        let error = #expect(throws: CheckpointError.self) { try reader.loadBlobsFromCheckpoint(names, epoch: 0, into: Workspace()) }
        #expect(error?.code == .checkpointNotFound(epoch: 0))
    }

    /// Incremental saves on a bucket: unchanged blobs become references to
    /// earlier objects, which resolve through the bucket; every epoch loads
    /// bit-exact in a new manager; retention keeps the objects kept epochs refer to.
    @Test func incrementalSavesReferToEarlierObjects() throws {
        let bucket = try registerMotoStorage()
        let prefix = bucket.url("incr")
        var options = CheckpointOptions()
        options.incremental = IncrementalOptions(fullEvery: 10)
        let workspace = Workspace()
        for index in 0..<5 {
            workspace["w\(index)"] = try Tensor(dtype: .uint8, shape: [40_000], bytes: patternBytes(40_000, seed: UInt64(index)))
        }
        let manager = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2)),
                                            workspace: workspace, options: options)
        try manager.initialize()
        var expected: [Int: [String: [UInt8]]] = [:]
        for epoch in 0..<4 {
            if epoch > 0 {
                // One blob changes per epoch; the others keep their tensors.
                workspace["w\(epoch)"] = try Tensor(dtype: .uint8, shape: [40_000], bytes: patternBytes(40_000, seed: UInt64(1000 + epoch)))
            }
            try manager.save(epoch: epoch)
            try manager.writeCheckpointMetadata(epoch: epoch)
            expected[epoch] = Dictionary(uniqueKeysWithValues: try workspace.blobNames.map { ($0, try workspace.fetchBlob($0).bytes) })
        }
        manager.releaseWriterLock()
        // Epoch 3's object stores one blob's bytes; the rest are references.
        let reader = try #require(try bucket.storage.openCheckpoint(prefix + "/trainer_0.3", format: .container) as? ContainerReader)
        let stored = try reader.names.filter { try !reader.descriptor($0).isReference }
        #expect(stored.filter { $0.hasPrefix("w") } == ["w3"])
        // Epochs 2 and 3 are kept, and so is epoch 0's object they refer to.
        let keys = try bucket.allKeys()
        #expect(keys.contains("incr/trainer_0.0") && keys.contains("incr/trainer_0.3"), "\(keys)")
        for epoch in [2, 3] {
            let restored = Workspace()
            let loader = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", workspace: restored)
            try loader.initialize(retrieveFromEpoch: epoch)
            try loader.load(epoch: epoch)
            for (name, bytes) in expected[epoch]! {
                #expect(try restored.fetchBlob(name).bytes == bytes, "epoch \(epoch) \(name)")
            }
        }
    }
}

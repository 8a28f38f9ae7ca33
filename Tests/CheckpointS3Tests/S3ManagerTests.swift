@testable import CheckpointIO
@testable import CheckpointS3
import Foundation
import Testing

/// Registers a storage for moto as path type "s3" (the registry is global; every
/// storage registered by these tests talks to the same server, the same way).
func registerMotoStorage() throws -> TestBucket {
    let bucket = try TestBucket()
    CheckpointStorageRegistry.register(bucket.storage, for: "s3")
    return bucket
}

func sampleWorkspace(seed: UInt64) throws -> Workspace {
    var generator = SyntheticData(seed: seed)
    let workspace = Workspace()
    workspace["weights/fp32"] = try Tensor(dtype: .float32, shape: [64, 33], bytes: generator.float32Weights(count: 64 * 33))
    workspace["step"] = Tensor(scalar: Int64(1234))
    workspace["vocab"] = Tensor(strings: ["<pad>", "", "héllo", "日本"])
    workspace["empty"] = try Tensor(zeros: .float64, shape: [0, 4])
    workspace["big"] = try Tensor(dtype: .uint8, shape: [3 << 20], bytes: generator.randomBytes(count: 3 << 20))
    return workspace
}

func sameBlobs(_ a: Workspace, _ b: Workspace) throws -> Bool {
    guard a.blobNames == b.blobNames else { return false }
    for name in a.blobNames {
        let x = try a.fetchBlob(name), y = try b.fetchBlob(name)
        guard x.dtype == y.dtype, x.shape == y.shape,
              UnsafeRawBufferPointer(start: x.storage.base, count: x.byteCount).elementsEqual(UnsafeRawBufferPointer(start: y.storage.base, count: y.byteCount))
        else { return false }
    }
    return true
}

/// The managers, unchanged, with `dbPrefix` on S3 (moto).
@Suite("Managers on S3", .serialized)
struct S3ManagerTests {
    @Test func saveLoadResumeWithRetentionAndMetadata() throws {
        let bucket = try registerMotoStorage()
        let prefix = bucket.url("run1")
        let workspace = try sampleWorkspace(seed: 1)
        let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2))
        let manager = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: handler, workspace: workspace)
        try manager.initialize()
        #expect(manager.dbName(epoch: 3) == prefix + "/trainer_0.3")
        for epoch in 0...3 {
            workspace["step"] = Tensor(scalar: Int64(epoch))
            try manager.save(epoch: epoch)
            try manager.writeCheckpointMetadata(epoch: epoch, metric: Double(epoch))
        }
        #expect(manager.checkDBExists(epoch: 3))
        // Retention removed epochs 0 and 1 from the bucket.
        let files = bucket.storage.listFiles(in: prefix)
        #expect(files.filter { $0.hasPrefix("trainer_0.") }.sorted() == ["trainer_0.2", "trainer_0.3"])
        #expect(files.contains(DurableMetadataHandler.fileName))
        manager.releaseWriterLock()

        // A new process resumes from the metadata file on S3.
        let resumedHandler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2))
        let restored = Workspace()
        let resumed = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: resumedHandler, workspace: restored)
        try resumed.setParams()
        #expect(try resumed.getResumeFromEpochID() == 3)
        try resumed.initialize(retrieveFromEpoch: 3)
        try resumed.load(epoch: 3)
        #expect(try sameBlobs(restored, workspace))
        #expect(try resumedHandler.completeEpochs().map(\.epoch) == [2, 3])
    }

    @Test func saveAsyncAndMultiNode() throws {
        let bucket = try registerMotoStorage()
        let prefix = bucket.url("multi")
        let handler = DurableMetadataHandler()
        let multi = try MultiNodeCheckpointManager(dbPrefix: prefix, metadataHandler: handler)
        let nodes = ["trainer_0", "trainer_1", "trainer_2"]
        for (index, node) in nodes.enumerated() {
            let workspace = multi.workspace(forNode: node)
            for (name, tensor) in try sampleWorkspace(seed: UInt64(10 + index)).snapshot() { workspace[name] = tensor }
        }
        try multi.initialize(nodes: nodes)
        try multi.saveAsync(epoch: 5, metric: 0.5)
        try multi.waitUntilFinished()
        #expect(try handler.completeEpochs().map(\.epoch) == [5])
        #expect(bucket.storage.listFiles(in: prefix).filter { $0.hasSuffix(".5") }.sorted() == nodes.map { $0 + ".5" })
        multi.releaseWriterLock()

        let again = try MultiNodeCheckpointManager(dbPrefix: prefix, metadataHandler: DurableMetadataHandler())
        try again.initialize(nodes: nodes, retrieveFromEpoch: 5)
        try again.load(epoch: 5)
        for (index, node) in nodes.enumerated() {
            #expect(try sameBlobs(again.workspace(forNode: node), try sampleWorkspace(seed: UInt64(10 + index))))
        }
    }

    @Test func racingWritersOneHoldsTheLease() throws {
        let bucket = try registerMotoStorage()
        let prefix = bucket.url("race")
        let managers = try (0..<4).map { _ in try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", workspace: Workspace(["x": Tensor(scalar: 1.0)])) }
        let outcomes = LockedResults()
        DispatchQueue.concurrentPerform(iterations: managers.count) { index in
            do {
                try managers[index].acquireWriterLock()
                outcomes.append("ok")
            } catch {
                outcomes.append((error as? CheckpointError)?.code == .writerLocked ? "locked" : "other: \(error)")
            }
        }
        #expect(outcomes.values.sorted() == ["locked", "locked", "locked", "ok"])
        for manager in managers { manager.releaseWriterLock() }
        // Released: the next writer gets it.
        try managers[0].acquireWriterLock()
        managers[0].releaseWriterLock()
    }

    @Test func initializeAbortsAnAbandonedUpload() throws {
        let bucket = try registerMotoStorage()
        _ = try bucket.storage.client.send(S3Request(operation: "CreateMultipartUpload", method: .POST, bucket: bucket.name, key: "ab/trainer_0.7",
                                                     query: [("uploads", "")]))
        _ = try bucket.storage.client.send(S3Request(operation: "CreateMultipartUpload", method: .POST, bucket: bucket.name, key: "ab/trainer_1.7",
                                                     query: [("uploads", "")]))
        let manager = try CheckpointManager(dbPrefix: bucket.url("ab"), nodeName: "trainer_0", workspace: Workspace(["x": Tensor(scalar: 1.0)]))
        try manager.initialize()
        #expect(try bucket.openUploads() == ["ab/trainer_1.7"])
    }
}

final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ item: String) { lock.withLock { items.append(item) } }
    var values: [String] { lock.withLock { items } }
}

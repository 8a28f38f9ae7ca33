@testable import CheckpointIO
import Foundation
import Testing

/// A handler that records what the managers tell it, on top of the durable one.
final class RecordingHandler: CheckpointMetadataHandler, @unchecked Sendable {
    let inner = DurableMetadataHandler()
    let reports = LockedBox<[(String, [String: UInt64])]>([])
    func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError) {
        try inner.setParams(dbPrefix: dbPrefix, dbType: dbType, nodeNames: nodeNames, pathPrefix: pathPrefix, pathType: pathType)
    }
    func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int? { try inner.lastEpoch(userEpoch: userEpoch) }
    func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool { try inner.cpAccessible(epoch: epoch) }
    func write(epoch: Int, metric: Double?) throws(CheckpointError) { try inner.write(epoch: epoch, metric: metric) }
    func report(action: String, stats: [String: UInt64]) { reports.value.append((action, stats)) }
}

/// Every kind of blob a workspace can hold.
func variedWorkspace() throws -> Workspace {
    var generator = SyntheticData(seed: 7)
    let workspace = Workspace()
    workspace["weights/fp32"] = try Tensor(dtype: .float32, shape: [64, 33], bytes: generator.float32Weights(count: 64 * 33))
    workspace["weights/bf16"] = try Tensor(dtype: .bfloat16, shape: [3, 5, 7], bytes: generator.bfloat16Weights(count: 105))
    workspace["step"] = Tensor(scalar: Int64(1234))
    workspace["flags"] = try Tensor([true, false, true])
    workspace["half"] = try Tensor([Float16(1.5), Float16(-2)], shape: [2, 1])
    workspace["empty"] = try Tensor(zeros: .float64, shape: [0, 4])
    workspace["vocab"] = Tensor(strings: ["<pad>", "", "héllo", "日本"])
    workspace["opaque"] = Tensor(rawBytes: generator.randomBytes(count: 1000))
    workspace["big"] = try Tensor(dtype: .uint8, shape: [3 << 20], bytes: generator.randomBytes(count: 3 << 20))
    return workspace
}

@Suite("CheckpointManager")
struct CheckpointManagerTests {
    @Test func dbNamesFollowCaffe2() throws {
        let manager = try CheckpointManager(dbPrefix: "/ckpt/run", nodeName: "trainer_3")
        #expect(manager.dbName(epoch: 7) == "/ckpt/run/trainer_3.7")
        #expect(manager.dbName(epoch: 123) == "/ckpt/run/trainer_3.123")
        #expect(manager.dbName(epoch: 0, pathPrefix: "hdfs://x/run-") == "hdfs://x/run-trainer_3.0")
        #expect(try CheckpointManager(dbPrefix: "/ckpt/run/", nodeName: "n").dbName(epoch: 1) == "/ckpt/run/n.1")
        #expect(try CheckpointManager(dbPrefix: "", nodeName: "n").dbName(epoch: 1) == "n.1")
        #expect(CheckpointNaming.dbName(epoch: 5, nodeName: "trainer_1", dbPrefix: "/p") == "/p/trainer_1.5")
    }

    @Test func hostileNamesAreRejectedBeforeAnyFileIsTouched() throws {
        try withTemporaryDirectory { dir in
            let badPrefixes = [dir + "/../escape", dir + "/a\0b", "../x", dir + "/.."]
            for prefix in badPrefixes {
                #expect(throws: CheckpointError.self) { try CheckpointManager(dbPrefix: prefix, nodeName: "n") }
                #expect(throws: CheckpointError.self) { try MultiNodeCheckpointManager(dbPrefix: prefix) }
            }
            for node in ["", "a/b", "..", "x..y", "nul\0"] {
                #expect(throws: CheckpointError.self) { try CheckpointManager(dbPrefix: dir, nodeName: node) }
                let multi = try MultiNodeCheckpointManager(dbPrefix: dir)
                #expect(throws: CheckpointError.self) { try multi.setParams(nodes: [node]) }
                #expect(throws: CheckpointError.self) { try multi.initialize(nodes: [node]) }
            }
            #expect(throws: CheckpointError.self) { try CheckpointManager(dbPrefix: dir, nodeName: "n", dbType: "leveldb") }
            #expect(directoryListing(dir).isEmpty)
        }
    }

    @Test func initializeFixesTheBlobList() throws {
        try withTemporaryDirectory { dir in
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: try variedWorkspace())
            #expect(throws: CheckpointError.self) { try manager.blobList() }
            #expect(throws: CheckpointError.self) { try manager.initialize(nodes: ["a", "b"]) }
            try manager.initialize(nodes: ["a"])
            let names = manager.workspace.blobNames
            #expect(try manager.blobList() == names)
            #expect(names == names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
            manager.workspace["added later"] = Tensor(scalar: 1.0)
            try manager.save(epoch: 1)
            #expect(try ContainerReader.open(manager.dbName(epoch: 1)).names == names)

            // A new manager retrieves the list from the checkpoint; a missing epoch is a clear error.
            let resumed = try CheckpointManager(dbPrefix: dir, nodeName: "n")
            #expect { try resumed.initialize(retrieveFromEpoch: 2) } throws: { ($0 as? CheckpointError)?.code == .checkpointNotFound(epoch: 2) }
            try resumed.initialize(retrieveFromEpoch: 1)
            #expect(try resumed.blobList() == names)
        }
    }

    @Test func saveAndLoadEveryKindOfBlobBitExact() throws {
        for dbType in ["ckpt", "safetensors"] {
            try withTemporaryDirectory { dir in
                let original = try variedWorkspace()
                if dbType == "safetensors" {
                    original.removeBlob("vocab")  // safetensors has no string or raw dtypes
                    original.removeBlob("opaque")
                }
                let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", dbType: dbType, workspace: original)
                try manager.initialize()
                try manager.save(epoch: 3)
                #expect(manager.checkDBExists(epoch: 3))
                #expect(!manager.checkDBExists(epoch: 4))

                let restored = try CheckpointManager(dbPrefix: dir, nodeName: "n", dbType: dbType)
                try restored.initialize(retrieveFromEpoch: 3)
                try restored.load(epoch: 3)
                #expect(restored.workspace.blobNames == original.blobNames)
                for name in original.blobNames {
                    #expect(restored.workspace.blob(name) == original.blob(name), "\(dbType) \(name)")
                }
                if dbType == "safetensors" {
                    let file = try SafetensorsFile.open(manager.dbName(epoch: 3))
                    #expect(file.metadata?[CheckpointManager.blobListKey] != nil)
                }
            }
        }
    }

    @Test func aStringBlobCannotGoToSafetensors() throws {
        try withTemporaryDirectory { dir in
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", dbType: "safetensors", workspace: Workspace(["vocab": Tensor(strings: ["a"])]))
            try manager.initialize()
            #expect { try manager.save(epoch: 1) } throws: { ($0 as? CheckpointError)?.blobName == "vocab" }
            #expect(directoryListing(dir).filter { !$0.hasSuffix(".lock") }.isEmpty)
        }
    }

    @Test func aMissingBlobFailsTheSaveAndWritesNothing() throws {
        try withTemporaryDirectory { dir in
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["a": Tensor(scalar: 1), "b": Tensor(scalar: 2)]))
            try manager.initialize()
            manager.workspace.removeBlob("b")
            #expect { try manager.save(epoch: 1) } throws: { ($0 as? CheckpointError)?.code == .blobNotFound("b") }
            #expect(!fileExists(manager.dbName(epoch: 1)))
        }
    }

    @Test func loadIsAllOrNothing() throws {
        try withTemporaryDirectory { dir in
            let writer = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["a": Tensor(scalar: 1), "b": Tensor(scalar: 2)]))
            try writer.initialize()
            try writer.save(epoch: 1)
            let reader = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["a": Tensor(scalar: 10), "b": Tensor(scalar: 20), "c": Tensor(scalar: 30)]))
            try reader.initialize()  // the list has "c", which epoch 1 lacks
            #expect { try reader.load(epoch: 1) } throws: { ($0 as? CheckpointError)?.code == .blobNotFound("c") }
            #expect(try int64(reader.workspace, "a") == 10)
            #expect { try reader.load(epoch: 9) } throws: { ($0 as? CheckpointError)?.code == .checkpointNotFound(epoch: 9) }
            // Partial loads tolerate names the file lacks.
            try reader.loadBlobsFromCheckpoint(["a", "c", "zzz"], epoch: 1)
            #expect(try int64(reader.workspace, "a") == 1)
            #expect(try int64(reader.workspace, "b") == 20)
            #expect(try int64(reader.workspace, "c") == 30)
        }
    }

    @Test func aCorruptBlobIsAnErrorNamingIt() throws {
        try withTemporaryDirectory { dir in
            let workspace = Workspace(["good": try Tensor([Float](repeating: 1, count: 256)), "bad": try Tensor([Float](repeating: 2, count: 256))])
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: workspace)
            try manager.initialize()
            try manager.save(epoch: 1)
            let path = manager.dbName(epoch: 1)
            let offset = try ContainerReader.open(path).descriptor("bad").payloadOffset
            var bytes = try fileBytes(path)
            bytes[offset + 17] ^= 0x40
            try writeBytes(path, bytes)
            #expect(manager.checkDBExists(epoch: 1))  // the structure is intact; only a payload is damaged
            let other = Workspace()
            #expect { try manager.loadBlobsFromCheckpoint(["good", "bad"], epoch: 1, into: other) } throws: { error in
                guard let error = error as? CheckpointError else { return false }
                switch error.code {
                case .chunkChecksumMismatch, .rawChecksumMismatch: return error.blobName == "bad" && error.path == path
                default: return false
                }
            }
            #expect(other.count == 0)
            try manager.loadBlobsFromCheckpoint(["good"], epoch: 1, into: other)
            #expect(other.blob("good") == workspace.blob("good"))
        }
    }

    @Test func checkDBExistsOnlyForCompleteCommittedFiles() throws {
        try withTemporaryDirectory { dir in
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["a": try Tensor([Int32](0..<1000))]))
            try manager.initialize()
            try manager.save(epoch: 1)
            let good = try fileBytes(manager.dbName(epoch: 1))
            #expect(manager.checkDBExists(epoch: 1))
            // A temporary file of a save in progress does not make epoch 2 exist.
            try writeBytes(dir + "/.n.2.tmp.123.abc", Array(good.prefix(100)))
            #expect(!manager.checkDBExists(epoch: 2))
            // A truncated copy, an empty file and garbage are not complete checkpoints.
            for (epoch, bytes) in [(3, Array(good.dropLast(1))), (4, []), (5, [UInt8](repeating: 0x41, count: 4096)), (6, Array(good.prefix(good.count / 2)))] {
                try writeBytes(manager.dbName(epoch: epoch), bytes)
                #expect(!manager.checkDBExists(epoch: epoch), "epoch \(epoch)")
            }
        }
    }

    @Test func timingsAreReportedPerAction() throws {
        try withTemporaryDirectory { dir in
            let handler = RecordingHandler()
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: handler, workspace: Workspace(["a": Tensor(scalar: 1)]))
            try manager.setParams()
            try manager.initialize()
            try manager.save(epoch: 1)
            manager.reportCheckpointStats(action: "checkpoint_save")
            try manager.load(epoch: 1)
            manager.reportCheckpointStats(action: "checkpoint_load")
            try manager.loadBlobsFromCheckpoint(["a"], epoch: 1)
            manager.reportCheckpointStats(action: "checkpoint_partial_load")
            let reports = handler.reports.value
            #expect(reports.map(\.0) == ["checkpoint_save", "checkpoint_load", "checkpoint_partial_load"])
            for (_, stats) in reports {
                #expect(Array(stats.keys) == [manager.dbName(epoch: 1)])
                #expect(stats.values.allSatisfy { $0 > 0 })
            }
        }
    }

    @Test func withoutAHandlerResumeIsTheUsersEpoch() throws {
        let manager = try CheckpointManager(dbPrefix: "/nonexistent", nodeName: "n")
        #expect(try manager.getResumeFromEpochID(userEpoch: 7) == 7)
        #expect(try manager.getResumeFromEpochID(userEpoch: nil) == nil)
        #expect(try manager.cpAccessible(epoch: nil))
        try manager.writeCheckpointMetadata(epoch: 3)  // no handler: nothing to do
    }
}

@Suite("MultiNodeCheckpointManager")
struct MultiNodeCheckpointManagerTests {
    @Test func secondInitializeWithSameNodesIsANoOpAndWithOthersAnError() throws {
        try withTemporaryDirectory { dir in
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            manager.workspace(forNode: "a")["x"] = Tensor(scalar: 1)
            manager.workspace(forNode: "b")["y"] = Tensor(scalar: 2)
            try manager.initialize(nodes: ["a", "b"])
            manager.workspace(forNode: "a")["later"] = Tensor(scalar: 3)
            try manager.initialize(nodes: ["a", "b"])
            #expect(try manager.nodeManagers?.first?.manager.blobList() == ["x"])
            #expect(throws: CheckpointError.self) { try manager.initialize(nodes: ["a"]) }
            #expect(throws: CheckpointError.self) { try manager.initialize(nodes: ["b", "a"]) }
            #expect(throws: CheckpointError.self) { try MultiNodeCheckpointManager(dbPrefix: dir).initialize(nodes: ["a", "a"]) }
            try manager.save(epoch: 1)
            #expect(fileExists(dir + "/a.1") && fileExists(dir + "/b.1"))
            #expect(manager.checkpointPaths(epoch: 1).map(\.path) == [dir + "/a.1", dir + "/b.1"])
        }
    }

    /// Local storage whose checkpoint writes fail for chosen paths.
    struct FailingStorage: CheckpointStorageDecorator {
        let base: any CheckpointStorage = LocalCheckpointStorage()
        let failing: Set<String>
        func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String, format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
            if failing.contains(path) { throw CheckpointError(.system(call: "pwritev", errno: ENOSPC), path: path) }
            try base.writeCheckpoint(blobs, metadata: metadata, to: path, format: format, options: options)
        }
    }

    @Test func anEpochWithAFailedNodeIsNotRecorded() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            let storage = FailingStorage(failing: [dir + "/b.2"])
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir, metadataHandler: handler, options: CheckpointOptions(storage: storage))
            let job = Job()
            for node in ["a", "b"] {
                job.addInitStep(node: node) { ws in ws["v"] = Tensor(scalar: Int64(0)) }
                job.addEpochStep(node: node) { ws in ws["v"] = Tensor(scalar: try int64(ws, "v") + 1) }
            }
            epochLimiter(job, numEpochs: 3, node: "a")
            #expect(try JobRunner(job: job, checkpointManager: manager).train() == 3)
            // Node a committed epoch 2, node b failed: epoch 2 is not complete and not recorded.
            #expect(fileExists(dir + "/a.2") && !fileExists(dir + "/b.2"))
            #expect(try handler.completeEpochs().map(\.epoch) == [0, 1, 3])
            #expect(try handler.completeEpochs().allSatisfy { $0.nodes == ["a", "b"] })
            // A missing listed blob fails the whole save before any node writes.
            manager.workspace(forNode: "b").removeBlob("v")
            #expect { try manager.save(epoch: 4) } throws: { ($0 as? CheckpointError)?.code == .blobNotFound("v") }
            #expect(!fileExists(dir + "/a.4") && !fileExists(dir + "/b.4"))
        }
    }

    @Test func parallelSaveAndLoadOfManyNodes() throws {
        try withTemporaryDirectory { dir in
            let nodes = (0..<5).map { "node\($0)" }
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            var generator = SyntheticData(seed: 3)
            var expected: [String: Tensor] = [:]
            for node in nodes {
                let tensor = try Tensor(dtype: .float32, shape: [1 << 16], bytes: generator.float32Weights(count: 1 << 16))
                manager.workspace(forNode: node)["w"] = tensor
                expected[node] = tensor
            }
            try manager.initialize(nodes: nodes)
            try manager.save(epoch: 1)
            for node in nodes { manager.workspace(forNode: node)["w"] = Tensor(scalar: Float(0)) }
            try manager.load(epoch: 1)
            for node in nodes { #expect(manager.workspace(forNode: node).blob("w") == expected[node]) }
        }
    }
}

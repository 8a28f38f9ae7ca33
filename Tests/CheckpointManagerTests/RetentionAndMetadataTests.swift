@testable import CheckpointIO
import Foundation
import Testing

@Suite("RetentionPolicy")
struct RetentionPolicyTests {
    let epochs: [(epoch: Int, metric: Double?)] = (0...12).map { ($0, [5, 3, 9, 1, 7, 1, nil, 8, 2, .nan, 6, 4, 10][$0]) }

    @Test func keepAllKeepsEverything() {
        #expect(RetentionPolicy.keepAll.epochsToKeep(epochs, protected: []) == Set(0...12))
    }

    @Test func keepLatest() {
        #expect(RetentionPolicy(keepLatest: 3).epochsToKeep(epochs, protected: []) == [10, 11, 12])
        #expect(RetentionPolicy(keepLatest: 1).epochsToKeep(epochs, protected: [4]) == [4, 12])
        #expect(RetentionPolicy(keepLatest: 50).epochsToKeep(epochs, protected: []) == Set(0...12))
    }

    @Test func keepEvery() {
        #expect(RetentionPolicy(keepEvery: 5).epochsToKeep(epochs, protected: []) == [0, 5, 10])
        #expect(RetentionPolicy(keepEvery: 1).epochsToKeep(epochs, protected: []) == Set(0...12))
    }

    @Test func keepBestByMinimumAndMaximum() {
        // Metrics: 1 at epochs 3 and 5 (tie: the newer wins first), then 2 at epoch 8; nil and NaN never count.
        #expect(RetentionPolicy(keepBest: (2, .min)).epochsToKeep(epochs, protected: []) == [3, 5])
        #expect(RetentionPolicy(keepBest: (1, .min)).epochsToKeep(epochs, protected: []) == [5])
        #expect(RetentionPolicy(keepBest: (3, .min)).epochsToKeep(epochs, protected: []) == [3, 5, 8])
        #expect(RetentionPolicy(keepBest: (2, .max)).epochsToKeep(epochs, protected: []) == [12, 2])
        let unscored: [(epoch: Int, metric: Double?)] = [(1, nil), (2, .nan)]
        #expect(RetentionPolicy(keepBest: (2, .max)).epochsToKeep(unscored, protected: [2]) == [2])
    }

    @Test func rulesAreSeparateAndCombine() {
        let policy = RetentionPolicy(keepLatest: 2, keepEvery: 4, keepBest: (1, .min))
        #expect(policy.epochsToKeep(epochs, protected: [7]) == [11, 12, 0, 4, 8, 5, 7])
        #expect(policy.keepBest?.count == 1 && policy.keepBest?.order == .min)
        #expect(policy != RetentionPolicy(keepLatest: 2, keepEvery: 4, keepBest: (1, .max)))
    }
}

@Suite("DurableMetadataHandler")
struct DurableMetadataHandlerTests {
    func saveEpochs(_ epochs: [Int], dir: String, handler: DurableMetadataHandler, metric: (Int) -> Double? = { _ in nil }) throws -> CheckpointManager {
        let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: handler, workspace: Workspace(["e": Tensor(scalar: Int64(-1))]))
        try manager.setParams()
        try manager.initialize()
        for epoch in epochs {
            manager.workspace["e"] = Tensor(scalar: Int64(epoch))
            try manager.save(epoch: epoch)
            try manager.writeCheckpointMetadata(epoch: epoch, metric: metric(epoch))
        }
        return manager
    }

    @Test func lastEpochFallsBackPastDamagedOrMissingFiles() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            let manager = try saveEpochs([0, 1, 2, 3], dir: dir, handler: handler)
            #expect(try handler.lastEpoch(userEpoch: nil) == 3)
            #expect(try handler.lastEpoch(userEpoch: 1) == 1)
            // Truncate epoch 3 (its trailer is gone), delete epoch 2: the newest intact one is 1.
            let three = try fileBytes(manager.dbName(epoch: 3))
            try writeBytes(manager.dbName(epoch: 3), Array(three.dropLast(8)))
            try FileManager.default.removeItem(atPath: manager.dbName(epoch: 2))
            let fresh = DurableMetadataHandler()
            try fresh.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
            #expect(try fresh.lastEpoch(userEpoch: nil) == 1)
            #expect(try fresh.cpAccessible(epoch: 1))
            #expect(try !fresh.cpAccessible(epoch: 3))
            // An epoch recorded for other nodes only does not count for this node set.
            try fresh.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n", "m"], pathPrefix: nil, pathType: nil)
            #expect(try fresh.lastEpoch(userEpoch: nil) == nil)
        }
    }

    @Test func theMetadataFileIsJSONAndItsDamageIsAClearError() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            _ = try saveEpochs([0, 1], dir: dir, handler: handler, metric: { Double($0) / 2 })
            let path = try #require(handler.metadataPath)
            #expect(path == dir + "/checkpoint_metadata.json")
            let text = String(decoding: try fileBytes(path), as: UTF8.self)
            #expect(text == #"{"format":"checkpoint-metadata","version":1,"db_type":"ckpt","resumed_from":null,"epochs":[{"epoch":0,"nodes":["n"],"metric":0.0},{"epoch":1,"nodes":["n"],"metric":0.5}]}"# + "\n")
            #expect(try handler.completeEpochs() == [.init(epoch: 0, nodes: ["n"], metric: 0), .init(epoch: 1, nodes: ["n"], metric: 0.5)])
            try writeBytes(path, Array(text.utf8.dropLast(10)))
            #expect { try handler.lastEpoch(userEpoch: nil) } throws: { ($0 as? CheckpointError)?.path == path }
            let unset = DurableMetadataHandler()
            #expect { try unset.lastEpoch(userEpoch: nil) } throws: { error in
                if case .invalidState = (error as? CheckpointError)?.code { return true } else { return false }
            }
        }
    }

    @Test func goingBackNeverDeletesTheNewEpochAndForgetsTheAbandonedRun() throws {
        try withTemporaryDirectory { dir in
            let first = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1, keepEvery: 5))
            let manager = try saveEpochs([0, 5, 10, 12], dir: dir, handler: first)
            #expect(try first.completeEpochs().map(\.epoch) == [0, 5, 10, 12])
            manager.releaseWriterLock()
            // A new run goes back to epoch 5 and saves 6 and 7.
            let second = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1, keepEvery: 5))
            let rerun = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: second, workspace: Workspace(["e": Tensor(scalar: Int64(-1))]))
            try rerun.setParams()
            #expect(try rerun.getResumeFromEpochID(userEpoch: 5) == 5)
            try rerun.initialize()
            for epoch in [6, 7] {
                rerun.workspace["e"] = Tensor(scalar: Int64(epoch))
                try rerun.save(epoch: epoch)
                try rerun.writeCheckpointMetadata(epoch: epoch)
                #expect(fileExists(rerun.dbName(epoch: epoch)), "epoch \(epoch) must survive its own write")
            }
            // Epochs 10 and 12 of the abandoned run are forgotten; 6 made way for 7; 0 and 5 stay.
            #expect(try second.completeEpochs().map(\.epoch) == [0, 5, 7])
            let fresh = DurableMetadataHandler()
            try fresh.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
            #expect(try fresh.lastEpoch(userEpoch: nil) == 7)
        }
    }

    @Test func strayFileNamesNeverCauseARecordedCheckpointToBeDeleted() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2))
            let manager = try saveEpochs([7], dir: dir, handler: handler)
            let seven = try fileBytes(manager.dbName(epoch: 7))
            try writeBytes(dir + "/n.07", seven)
            try writeBytes(dir + "/n.+7", seven)
            try writeBytes(dir + "/n.3", seven)  // an older, unrecorded file: retention removes it
            manager.workspace["e"] = Tensor(scalar: Int64(8))
            try manager.save(epoch: 8)
            try manager.writeCheckpointMetadata(epoch: 8)
            #expect(try fileBytes(manager.dbName(epoch: 7)) == seven)
            #expect(fileExists(dir + "/n.07") && fileExists(dir + "/n.+7"))
            #expect(!fileExists(dir + "/n.3"))
        }
    }

    @Test func cpAccessibleNeedsAWritableDirectory() throws {
        let handler = DurableMetadataHandler()
        try handler.setParams(dbPrefix: "/nonexistent/dir", dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
        #expect(try !handler.cpAccessible(epoch: nil))
        try withTemporaryDirectory { dir in
            try handler.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
            #expect(try handler.cpAccessible(epoch: nil))
        }
    }

    @Test func retentionDeletesOnlyAfterRecordingAndSparesNewestAndResumed() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2, keepEvery: 5, keepBest: (1, .max)))
            let manager = try saveEpochs(Array(0...7), dir: dir, handler: handler, metric: { $0 == 3 ? 100 : Double($0) })
            let kept = try handler.completeEpochs().map(\.epoch)
            #expect(kept == [0, 3, 5, 6, 7])
            for epoch in 0...7 {
                #expect(fileExists(manager.dbName(epoch: epoch)) == kept.contains(epoch), "epoch \(epoch)")
            }
            #expect(handler.lastRemovalErrors.isEmpty)

            // A run that resumed from epoch 6: with keepLatest 1 it keeps 6 as well as the newest.
            let strict = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1))
            try strict.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
            #expect(try strict.lastEpoch(userEpoch: 6) == 6)
            try manager.save(epoch: 8)
            try strict.write(epoch: 8, metric: nil)
            try manager.save(epoch: 9)
            try strict.write(epoch: 9, metric: nil)
            #expect(try strict.completeEpochs().map(\.epoch) == [6, 9])
            #expect(directoryListing(dir).filter { !$0.hasSuffix(".lock") } == ["checkpoint_metadata.json", "n.6", "n.9"])
        }
    }
}

@Suite("Async save")
struct AsyncSaveTests {
    @Test func theSnapshotIsUnaffectedByMutationsRightAfterTheCall() throws {
        try withTemporaryDirectory { dir in
            var generator = SyntheticData(seed: 11)
            let original = try Tensor(dtype: .float32, shape: [1 << 20], bytes: generator.float32Weights(count: 1 << 20))
            let handler = DurableMetadataHandler()
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: handler,
                                                workspace: Workspace(["w": original, "step": Tensor(scalar: Int64(1))]))
            try manager.setParams()
            try manager.initialize()
            try manager.saveAsync(epoch: 1, metric: 0.25)
            // Mutate in place (copy-on-write) and replace, while the save may still be writing.
            try manager.workspace.update("w") { tensor in
                tensor.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0xFF) }
            }
            manager.workspace["step"] = Tensor(scalar: Int64(2))
            try manager.waitUntilFinished()
            #expect(try handler.completeEpochs() == [.init(epoch: 1, nodes: ["n"], metric: 0.25)])
            let restored = Workspace()
            try manager.loadBlobsFromCheckpoint(["w", "step"], epoch: 1, into: restored)
            #expect(restored.blob("w") == original)
            #expect(try int64(restored, "step") == 1)
            #expect(manager.workspace.blob("w") != original)
        }
    }

    @Test func anAsyncErrorSurfacesOnceAndLeavesNoMetadata() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            let storage = MultiNodeCheckpointManagerTests.FailingStorage(failing: [dir + "/n.1", dir + "/n.2"])
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: handler,
                                                workspace: Workspace(["a": Tensor(scalar: 1)]), options: CheckpointOptions(storage: storage))
            try manager.setParams()
            try manager.initialize()
            try manager.saveAsync(epoch: 1)
            #expect { try manager.waitUntilFinished() } throws: { ($0 as? CheckpointError)?.path == dir + "/n.1" }
            try manager.waitUntilFinished()  // reported once
            try manager.saveAsync(epoch: 2)
            // The next save call surfaces the failure instead of starting.
            #expect { try manager.save(epoch: 3) } throws: { ($0 as? CheckpointError)?.path == dir + "/n.2" }
            #expect(!fileExists(dir + "/n.3"))
            #expect(try handler.completeEpochs().isEmpty)
            try manager.save(epoch: 3)
            #expect(try handler.completeEpochs().isEmpty)  // save alone does not record
        }
        // A directory that cannot be created (a file is in the way) fails at once, naming it.
        try withTemporaryDirectory { dir in
            try writeBytes(dir + "/file", [1])
            let manager = try CheckpointManager(dbPrefix: dir + "/file/ckpt", nodeName: "n", workspace: Workspace(["a": Tensor(scalar: 1)]))
            #expect { try manager.initialize() } throws: { ($0 as? CheckpointError)?.path == dir + "/file" }
            #expect { try manager.saveAsync(epoch: 1) } throws: { ($0 as? CheckpointError)?.code == .invalidState(reason: "CheckpointManager for node 'n' is not initialized: call initialize() first") }
            #expect(directoryListing(dir) == ["file"])
        }
    }

    @Test func aSecondSaveWaitsForTheFirst() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir, metadataHandler: handler)
            for node in ["a", "b"] { manager.workspace(forNode: node)["x"] = try Tensor([UInt8](repeating: 1, count: 1 << 20)) }
            try manager.setParams(nodes: ["a", "b"])
            try manager.initialize(nodes: ["a", "b"])
            for epoch in 1...5 {
                try manager.saveAsync(epoch: epoch)
                for node in ["a", "b"] { manager.workspace(forNode: node)["x"] = try Tensor([UInt8](repeating: UInt8(epoch + 1), count: 1 << 20)) }
            }
            try manager.waitUntilFinished()
            #expect(try handler.completeEpochs().map(\.epoch) == [1, 2, 3, 4, 5])
            for epoch in 1...5 {
                let workspace = Workspace()
                #expect(try manager.loadBlobsLocally(nodes: ["a", "b"], blobNames: ["x"], epoch: epoch, into: workspace))
                #expect(try workspace.fetchBlob("x").bytes == [UInt8](repeating: UInt8(epoch), count: 1 << 20))
            }
        }
    }
}

@Suite("Tensor and Workspace")
struct TensorWorkspaceTests {
    @Test func copyOnWrite() throws {
        let a = try Tensor([Int32](1...4))
        var b = a
        let sharedBefore = !b.isUniquelyReferenced()
        #expect(sharedBefore)
        b.withUnsafeMutableBytes { $0.storeBytes(of: Int32(99), as: Int32.self) }
        #expect(try a.scalars(as: Int32.self) == [1, 2, 3, 4])
        #expect(try b.scalars(as: Int32.self) == [99, 2, 3, 4])
        let uniqueAfter = b.isUniquelyReferenced()
        #expect(uniqueAfter)
    }

    @Test func invalidTensorsAreClearErrors() throws {
        #expect(throws: CheckpointError.self) { try Tensor([Float](repeating: 0, count: 5), shape: [2, 2]) }
        #expect(throws: CheckpointError.self) { try Tensor(dtype: .int64, shape: [3], bytes: [UInt8](repeating: 0, count: 23)) }
        #expect(throws: CheckpointError.self) { try Tensor(zeros: .string, shape: [1]) }
        #expect(throws: CheckpointError.self) { try Tensor(dtype: .string, shape: [1], bytes: [5, 0, 0, 0, 0, 0, 0, 0, 0x41]) }
        #expect(throws: CheckpointError.self) { try Tensor(scalar: Int64(1)).scalars(as: Int32.self) }
        #expect(throws: CheckpointError.self) { try Tensor(scalar: Int64(1)).strings() }
        #expect(try Tensor(strings: ["a", "bc"], shape: [1, 2]).strings() == ["a", "bc"])
        #expect(try Tensor(zeros: .bfloat16, shape: [2, 3]).bytes == [UInt8](repeating: 0, count: 12))
    }

    @Test func workspaceNamesAreSortedByBytesAndAccessIsThreadSafe() throws {
        let workspace = Workspace()
        for name in ["b", "a", "B", "é", "a/b"] { workspace[name] = Tensor(scalar: 1) }
        #expect(workspace.blobNames == ["B", "a", "a/b", "b", "é"])
        #expect(throws: CheckpointError.self) { try workspace.fetchBlob("missing") }
        #expect(throws: CheckpointError.self) { try workspace.update("missing") { _ in } }
        workspace["counter"] = Tensor(scalar: Int64(0))
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            for _ in 0..<500 {
                try! workspace.update("counter") { tensor in
                    let value = try tensor.scalars(as: Int64.self)[0]
                    tensor.withUnsafeMutableBytes { $0.storeBytes(of: value + 1, as: Int64.self) }
                }
                workspace["t\(i)"] = Tensor(scalar: i)
                _ = workspace.blobNames
            }
        }
        #expect(try int64(workspace, "counter") == 4000)
    }
}

@testable import CheckpointIO
import Foundation
import Testing

// Caffe2's caffe2/python/checkpoint_test.py, ported. Each node's pipeline:
// init creates a dataset 0…9, a cursor and `total = 100`; every epoch reads
// up to 3 items and adds them to the total; the job stops once the data is
// exhausted (an epoch that read fewer than 3 items).

let expectedTotals: [Int64] = [103, 115, 136, 145]

func buildPipeline(_ job: Job, node: String) {
    job.addInitStep(node: node) { ws in
        ws["\(node)/data"] = try Tensor([Int64](0..<10))
        ws["\(node)/cursor"] = Tensor(scalar: Int64(0))
        ws["\(node)/total"] = Tensor(scalar: Int64(100))
    }
    job.addEpochStep(node: node) { ws in
        let data = try ws.fetchBlob("\(node)/data").scalars(as: Int64.self)
        var cursor = Int(try int64(ws, "\(node)/cursor"))
        var total = try int64(ws, "\(node)/total")
        var read = 0
        while read < 3 && cursor < data.count {
            total += data[cursor]
            cursor += 1
            read += 1
        }
        ws["\(node)/cursor"] = Tensor(scalar: Int64(cursor))
        ws["\(node)/total"] = Tensor(scalar: total)
        ws["\(node)/finished"] = Tensor(scalar: read < 3)
    }
    job.addStopCondition(node: node) { ws in try ws.fetchBlob("\(node)/finished").scalars(as: Bool.self)[0] }
}

func pipelineJob(nodes: [String]) -> Job {
    let job = Job()
    for node in nodes { buildPipeline(job, node: node) }
    return job
}

@Suite("Caffe2 checkpoint_test.py, ported")
struct Caffe2PortTests {
    /// `run_with`: a fresh run, a resume from every epoch with a fresh workspace, and loading each epoch.
    func runWith(_ builder: () throws -> any CheckpointManaging) throws {
        let job = pipelineJob(nodes: ["trainer_0"])
        var manager = try builder()
        let epochs = try JobRunner(job: job, checkpointManager: manager).train()
        #expect(epochs == expectedTotals.count)
        #expect(try int64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals.last!)

        for initialEpoch in 1...epochs {
            manager = try builder()
            #expect(manager.workspace(forNode: "trainer_0").count == 0)
            try JobRunner(job: job, checkpointManager: manager, resumeFromEpoch: initialEpoch).train()
            #expect(try int64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals.last!, "resumed from \(initialEpoch)")
        }
        for epoch in 1...epochs {
            try manager.load(epoch: epoch, pathPrefix: nil, pathType: nil)
            #expect(try int64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals[epoch - 1])
        }
    }

    @Test func singleNodeCheckpoint() throws {
        try withTemporaryDirectory { dir in
            try runWith { try CheckpointManager(dbPrefix: dir, nodeName: "temp_node") }
            #expect(fileExists(dir + "/temp_node.0") && fileExists(dir + "/temp_node.4"))
        }
    }

    @Test func multiNodeCheckpoint() throws {
        try withTemporaryDirectory { dir in
            try runWith { try MultiNodeCheckpointManager(dbPrefix: dir) }
            #expect(fileExists(dir + "/trainer_0.0") && fileExists(dir + "/trainer_0.4"))
        }
    }

    @Test func singleNodeWithDurableMetadataResumesByItself() throws {
        try withTemporaryDirectory { dir in
            let job = pipelineJob(nodes: ["trainer_0"])
            let first = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            #expect(try JobRunner(job: job, checkpointManager: first).train() == 4)
            // One writer per node and prefix: while `first` holds the lock (train() released it), another manager's job does not start.
            try first.acquireWriterLock()
            let blocked = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            #expect { try JobRunner(job: job, checkpointManager: blocked).train() } throws: { ($0 as? CheckpointError)?.code == .writerLocked }
            first.releaseWriterLock()
            // A new run asks the handler: it resumes from epoch 4 and runs epoch 5, which reads nothing.
            let second = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            let runner = JobRunner(job: job, checkpointManager: second)
            #expect(try runner.train() == 5)
            #expect(runner.resumeFromEpoch == 4)
            #expect(try int64(second.workspace, "trainer_0/total") == 145)
        }
    }

    @Test func checkpointNamesAndLoadingModelFromCheckpoints() throws {
        let nodes = (0..<3).map { "trainer_\($0)" }
        try withTemporaryDirectory { dir in
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            try manager.initialize(nodes: pipelineJob(nodes: nodes).nodesToCheckpoint)
            for node in nodes {
                #expect(manager.dbName(nodeName: node, epoch: 5) == dir + "/" + node + ".5")
            }
        }
        try withTemporaryDirectory { dir in
            for node in nodes {
                let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
                #expect(try JobRunner(job: pipelineJob(nodes: [node]), checkpointManager: manager).train() == expectedTotals.count)
                #expect(manager.workspace(forNode: node).blobNames == ["\(node)/cursor", "\(node)/data", "\(node)/finished", "\(node)/total"])
            }
            let workspace = Workspace()
            let modelBlobNames = ["trainer_1/total", "trainer_2/total"]
            let runner = JobRunner(job: pipelineJob(nodes: nodes), checkpointManager: try MultiNodeCheckpointManager(dbPrefix: dir))
            #expect(try runner.loadBlobsFromCheckpoints(modelBlobNames, epoch: 1, into: workspace))
            for epoch in 1...4 {
                #expect(try runner.loadBlobsFromCheckpoints(modelBlobNames, epoch: epoch, into: workspace))
                for name in modelBlobNames {
                    #expect(try int64(workspace, name) == expectedTotals[epoch - 1], "\(name) at epoch \(epoch)")
                }
            }
            #expect(try runner.loadBlobsFromCheckpoints(modelBlobNames, epoch: 5, into: workspace) == false)
            #expect(workspace.blobNames == modelBlobNames)
        }
    }

    @Test func loadBlobsLocallyTakesTheLastNodesValueAndStopsAtAMissingNode() throws {
        try withTemporaryDirectory { dir in
            for (i, node) in ["a", "b", "c"].enumerated() {
                let manager = try CheckpointManager(dbPrefix: dir, nodeName: node)
                manager.workspace["shared"] = Tensor(scalar: Int64(i))
                manager.workspace["only_\(node)"] = Tensor(scalar: Int64(10 + i))
                try manager.initialize()
                try manager.save(epoch: 1)
                if node != "b" { try manager.save(epoch: 2) }
            }
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            let workspace = Workspace()
            #expect(try manager.loadBlobsLocally(nodes: ["a", "b", "c"], blobNames: ["shared", "only_a", "only_c", "nowhere"], epoch: 1, into: workspace))
            #expect(try int64(workspace, "shared") == 2)
            #expect(try int64(workspace, "only_a") == 10)
            #expect(try int64(workspace, "only_c") == 12)
            #expect(!workspace.hasBlob("nowhere"))
            // Epoch 2 is missing on node b: node a is loaded, then the call stops before c.
            let partial = Workspace()
            #expect(try manager.loadBlobsLocally(nodes: ["a", "b", "c"], blobNames: ["shared"], epoch: 2, into: partial) == false)
            #expect(try int64(partial, "shared") == 0)
        }
    }

    @Test func uploadBuilderReceivesTheFinalEpoch() throws {
        struct UploadToLocalDirectory: UploadTaskGroupBuilder {
            let destination: String
            let received: LockedBox<[Int]>
            func build(epoch: Int, checkpointManager: (any CheckpointManaging)?) throws -> () throws -> Void {
                received.value.append(epoch)
                let paths = checkpointManager?.checkpointPaths(epoch: epoch) ?? []
                return {
                    for (node, path) in paths {
                        try FileManager.default.copyItem(atPath: path, toPath: destination + "/" + node)
                    }
                }
            }
        }
        try withTemporaryDirectory { dir in
            let upload = dir + "/upload"
            try FileManager.default.createDirectory(atPath: upload, withIntermediateDirectories: false)
            let received = LockedBox<[Int]>([])
            let nodes = (0..<3).map { "trainer_\($0)" }
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            let runner = JobRunner(job: pipelineJob(nodes: nodes), checkpointManager: manager,
                                   uploadTaskGroupBuilder: UploadToLocalDirectory(destination: upload, received: received))
            #expect(try runner.train() == expectedTotals.count)
            #expect(received.value == [4])
            for node in nodes {
                #expect(try fileBytes(upload + "/" + node) == fileBytes(dir + "/\(node).4"))
            }
        }
    }

    /// Caffe2 saves into a directory that does not exist; ours creates it, so
    /// every save fails in storage instead. With Caffe2's policy
    /// (`maxConsecutiveSaveFailures: nil`) the job still runs to its end.
    @Test func savesFailingDoNotStopTheJob() throws {
        try withTemporaryDirectory { dir in
            for node in (0..<3).map({ "trainer_\($0)" }) {
                let storage = MultiNodeCheckpointManagerTests.FailingStorage(failing: Set((0...4).map { dir + "/\(node).\($0)" }))
                let manager = try MultiNodeCheckpointManager(dbPrefix: dir, options: CheckpointOptions(storage: storage))
                let runner = JobRunner(job: pipelineJob(nodes: [node]), checkpointManager: manager, maxConsecutiveSaveFailures: nil)
                #expect(try runner.train() == expectedTotals.count)
                #expect(try int64(manager.workspace(forNode: node), "\(node)/total") == 145)
                #expect(manager.checkpointPaths(epoch: 1).allSatisfy { !fileExists($0.path) })
                #expect(runner.failedSaves.map(\.epoch) == [0, 1, 2, 3, 4] && runner.lastSavedEpoch == nil)
            }
        }
    }

    @Test func reusedMultiNodeManagerAcrossFiveRuns() throws {
        try withTemporaryDirectory { dir in
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            let job = pipelineJob(nodes: ["trainer_0"])
            let epochs = try JobRunner(job: job, checkpointManager: manager).train()
            #expect(epochs == 4)
            for initialEpoch in 1...epochs {
                try JobRunner(job: job, checkpointManager: manager, resumeFromEpoch: initialEpoch).train()
                #expect(try int64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals.last!)
            }
        }
    }

    @Test func downloadGroupRunsBetweenEpochsAndExit() throws {
        let job = Job()
        let node = "trainer:0"
        var order: [String] = []
        job.addInitStep(node: node) { ws in
            for name in ["input1", "input2", "output", "download_result"] {
                ws[name] = try Tensor([Float](repeating: 1, count: 8))
            }
        }
        job.addEpochStep(node: node) { ws in
            let a = try ws.fetchBlob("input1").scalars(as: Float.self), b = try ws.fetchBlob("input2").scalars(as: Float.self)
            ws["output"] = try Tensor(zip(a, b).map(+))
            order.append("epoch")
        }
        job.addDownloadStep(node: node) { ws in
            ws["download_result"] = ws["output"]
            order.append("download")
        }
        job.addExitStep(node: node) { _ in order.append("exit") }
        epochLimiter(job, numEpochs: 1, node: node)
        let runner = JobRunner(job: job)
        #expect(try runner.train() == 1)
        let expected = [Float](repeating: 2, count: 8)
        #expect(try runner.workspace(forNode: node).fetchBlob("output").scalars(as: Float.self) == expected)
        #expect(try runner.workspace(forNode: node).fetchBlob("download_result").scalars(as: Float.self) == expected)
        #expect(order == ["epoch", "download", "exit"])
    }

    @Test func epochLimiterStopsAfterExactlyNEpochsAcrossAResume() throws {
        try withTemporaryDirectory { dir in
            func makeJob() -> Job {
                let job = Job()
                job.addInitStep { ws in ws["steps"] = Tensor(scalar: Int64(0)) }
                job.addEpochStep { ws in ws["steps"] = Tensor(scalar: try int64(ws, "steps") + 1) }
                epochLimiter(job, numEpochs: 6)
                return job
            }
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n")
            #expect(try JobRunner(job: makeJob(), checkpointManager: manager).train() == 6)
            #expect(try manager.blobList().contains(epochLimiterCounterBlob))
            manager.releaseWriterLock()
            // Resuming from epoch 2 restores the counter: the job still ends at epoch 6.
            let resumed = try CheckpointManager(dbPrefix: dir, nodeName: "n")
            #expect(try JobRunner(job: makeJob(), checkpointManager: resumed, resumeFromEpoch: 2).train() == 6)
            #expect(try int64(resumed.workspace, "steps") == 6)
        }
    }
}

/// A value shared with closures, under a lock.
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); defer { lock.unlock() }; stored = newValue }
    }
}

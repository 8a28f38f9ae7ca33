import CheckpointIO
import Testing

// Caffe2's caffe2/python/checkpoint_test.py, ported, for any storage: the local
// test suite runs it in temporary directories, the S3 suite under bucket
// prefixes on a real S3 server (moto), with the same assertions.
//
// Each node's pipeline: init creates a dataset 0…9, a cursor and `total = 100`;
// every epoch reads up to 3 items and adds them to the total; the job stops
// once the data is exhausted (an epoch that read fewer than 3 items).

/// `total` after each epoch of the pipeline.
public let expectedTotals: [Int64] = [103, 115, 136, 145]

/// Adds one node's pipeline to `job`.
public func buildPipeline(_ job: Job, node: String) {
    job.addInitStep(node: node) { ws in
        ws["\(node)/data"] = try Tensor([Int64](0..<10))
        ws["\(node)/cursor"] = Tensor(scalar: Int64(0))
        ws["\(node)/total"] = Tensor(scalar: Int64(100))
    }
    job.addEpochStep(node: node) { ws in
        let data = try ws.fetchBlob("\(node)/data").scalars(as: Int64.self)
        var cursor = Int(try scalarInt64(ws, "\(node)/cursor"))
        var total = try scalarInt64(ws, "\(node)/total")
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

/// A job with one pipeline per node.
public func pipelineJob(nodes: [String]) -> Job {
    let job = Job()
    for node in nodes { buildPipeline(job, node: node) }
    return job
}

/// An Int64 scalar blob's value.
public func scalarInt64(_ workspace: Workspace, _ name: String) throws -> Int64 {
    try workspace.fetchBlob(name).scalars(as: Int64.self)[0]
}

/// The storage-independent tests of ``Caffe2Port``, for one parameterized test per suite:
/// `@Test(arguments: Caffe2PortCase.allCases) func port(_ test: Caffe2PortCase) throws { try test.run(on: port) }`.
public enum Caffe2PortCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case singleNodeCheckpoint, multiNodeCheckpoint, singleNodeWithDurableMetadataResumesByItself,
         checkpointNamesAndLoadingModelFromCheckpoints, loadBlobsLocallyTakesTheLastNodesValueAndStopsAtAMissingNode,
         reusedMultiNodeManagerAcrossFiveRuns, epochLimiterStopsAfterExactlyNEpochsAcrossAResume

    public var testDescription: String { rawValue }

    public func run(on port: Caffe2Port) throws {
        switch self {
        case .singleNodeCheckpoint: try port.singleNodeCheckpoint()
        case .multiNodeCheckpoint: try port.multiNodeCheckpoint()
        case .singleNodeWithDurableMetadataResumesByItself: try port.singleNodeWithDurableMetadataResumesByItself()
        case .checkpointNamesAndLoadingModelFromCheckpoints: try port.checkpointNamesAndLoadingModelFromCheckpoints()
        case .loadBlobsLocallyTakesTheLastNodesValueAndStopsAtAMissingNode: try port.loadBlobsLocallyTakesTheLastNodesValueAndStopsAtAMissingNode()
        case .reusedMultiNodeManagerAcrossFiveRuns: try port.reusedMultiNodeManagerAcrossFiveRuns()
        case .epochLimiterStopsAfterExactlyNEpochsAcrossAResume: try port.epochLimiterStopsAfterExactlyNEpochsAcrossAResume()
        }
    }
}

/// The storage-independent tests of Caffe2's checkpoint_test.py.
public struct Caffe2Port: Sendable {
    /// Runs its body with a new, empty `dbPrefix` (a directory, `s3://bucket/key`), removed afterwards.
    public let withPrefix: @Sendable ((String) throws -> Void) throws -> Void
    /// Whether the checkpoint file `path` (under a prefix) exists.
    public let exists: @Sendable (String) -> Bool

    public init(withPrefix: @escaping @Sendable ((String) throws -> Void) throws -> Void, exists: @escaping @Sendable (String) -> Bool) {
        self.withPrefix = withPrefix
        self.exists = exists
    }

    /// `run_with`: a fresh run, a resume from every epoch with a fresh workspace, and loading each epoch.
    public static func runWith(_ builder: () throws -> any CheckpointManaging) throws {
        let job = pipelineJob(nodes: ["trainer_0"])
        var manager = try builder()
        let epochs = try JobRunner(job: job, checkpointManager: manager).train()
        #expect(epochs == expectedTotals.count)
        #expect(try scalarInt64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals.last!)

        for initialEpoch in 1...epochs {
            manager = try builder()
            #expect(manager.workspace(forNode: "trainer_0").count == 0)
            try JobRunner(job: job, checkpointManager: manager, resumeFromEpoch: initialEpoch).train()
            #expect(try scalarInt64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals.last!, "resumed from \(initialEpoch)")
        }
        for epoch in 1...epochs {
            try manager.load(epoch: epoch, pathPrefix: nil, pathType: nil)
            #expect(try scalarInt64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals[epoch - 1])
        }
    }

    public func singleNodeCheckpoint() throws {
        try withPrefix { dir in
            try Caffe2Port.runWith { try CheckpointManager(dbPrefix: dir, nodeName: "temp_node") }
            #expect(exists(dir + "/temp_node.0") && exists(dir + "/temp_node.4"))
        }
    }

    public func multiNodeCheckpoint() throws {
        try withPrefix { dir in
            try Caffe2Port.runWith { try MultiNodeCheckpointManager(dbPrefix: dir) }
            #expect(exists(dir + "/trainer_0.0") && exists(dir + "/trainer_0.4"))
        }
    }

    public func singleNodeWithDurableMetadataResumesByItself() throws {
        try withPrefix { dir in
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
            #expect(try scalarInt64(second.workspace, "trainer_0/total") == 145)
        }
    }

    public func checkpointNamesAndLoadingModelFromCheckpoints() throws {
        let nodes = (0..<3).map { "trainer_\($0)" }
        try withPrefix { dir in
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            try manager.initialize(nodes: pipelineJob(nodes: nodes).nodesToCheckpoint)
            for node in nodes {
                #expect(manager.dbName(nodeName: node, epoch: 5) == dir + "/" + node + ".5")
            }
        }
        try withPrefix { dir in
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
                    #expect(try scalarInt64(workspace, name) == expectedTotals[epoch - 1], "\(name) at epoch \(epoch)")
                }
            }
            #expect(try runner.loadBlobsFromCheckpoints(modelBlobNames, epoch: 5, into: workspace) == false)
            #expect(workspace.blobNames == modelBlobNames)
        }
    }

    public func loadBlobsLocallyTakesTheLastNodesValueAndStopsAtAMissingNode() throws {
        try withPrefix { dir in
            for (i, node) in ["a", "b", "c"].enumerated() {
                let manager = try CheckpointManager(dbPrefix: dir, nodeName: node)
                manager.workspace["shared"] = Tensor(scalar: Int64(i))
                manager.workspace["only_\(node)"] = Tensor(scalar: Int64(10 + i))
                try manager.initialize()
                try manager.save(epoch: 1)
                if node != "b" { try manager.save(epoch: 2) }
                manager.releaseWriterLock()
            }
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            let workspace = Workspace()
            #expect(try manager.loadBlobsLocally(nodes: ["a", "b", "c"], blobNames: ["shared", "only_a", "only_c", "nowhere"], epoch: 1, into: workspace))
            #expect(try scalarInt64(workspace, "shared") == 2)
            #expect(try scalarInt64(workspace, "only_a") == 10)
            #expect(try scalarInt64(workspace, "only_c") == 12)
            #expect(!workspace.hasBlob("nowhere"))
            // Epoch 2 is missing on node b: node a is loaded, then the call stops before c.
            let partial = Workspace()
            #expect(try manager.loadBlobsLocally(nodes: ["a", "b", "c"], blobNames: ["shared"], epoch: 2, into: partial) == false)
            #expect(try scalarInt64(partial, "shared") == 0)
        }
    }

    public func reusedMultiNodeManagerAcrossFiveRuns() throws {
        try withPrefix { dir in
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            let job = pipelineJob(nodes: ["trainer_0"])
            let epochs = try JobRunner(job: job, checkpointManager: manager).train()
            #expect(epochs == 4)
            for initialEpoch in 1...epochs {
                try JobRunner(job: job, checkpointManager: manager, resumeFromEpoch: initialEpoch).train()
                #expect(try scalarInt64(manager.workspace(forNode: "trainer_0"), "trainer_0/total") == expectedTotals.last!)
            }
        }
    }

    public func epochLimiterStopsAfterExactlyNEpochsAcrossAResume() throws {
        try withPrefix { dir in
            func makeJob() -> Job {
                let job = Job()
                job.addInitStep { ws in ws["steps"] = Tensor(scalar: Int64(0)) }
                job.addEpochStep { ws in ws["steps"] = Tensor(scalar: try scalarInt64(ws, "steps") + 1) }
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
            #expect(try scalarInt64(resumed.workspace, "steps") == 6)
        }
    }
}

// Issue 15: the two behaviours that differed from Caffe2, and the API
// frictions found while porting Caffe2 code, each written as a Caffe2 user
// would write it. Deliberately a plain `import CheckpointIO` (no @testable,
// no `import Logging`): what compiles here is the public API a user sees.
import CheckpointIO
import Caffe2Port
import Foundation
import Testing

/// The documented minimal custom metadata handler (CheckpointMetadataHandler's
/// DocC comment has the same code): it remembers complete epochs in memory.
final class LastEpochHandler: CheckpointMetadataHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var epochs: [Int] = []  // guarded by `lock`

    var recorded: [Int] { lock.withLock { epochs } }

    func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError) {}
    func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int? { userEpoch ?? lock.withLock { epochs.last } }
    func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool { true }
    func write(epoch: Int, metric: Double?) throws(CheckpointError) { lock.withLock { epochs.append(epoch) } }
    func report(action: String, stats: [String: UInt64]) {}
}

/// A job counting its epochs in blob "epochs" on the job's default node.
private func countingJob(defaultNode: String = "trainer_0") -> Job {
    let job = Job(defaultNode: defaultNode)
    job.addInitStep { ws in ws["epochs"] = Tensor(scalar: Int64(0)) }
    job.addEpochStep { ws in ws["epochs"] = Tensor(scalar: try ws.fetchBlob("epochs").scalars(as: Int64.self)[0] + 1) }
    return job
}

private func epochs(_ workspace: Workspace) throws -> Int64 { try workspace.fetchBlob("epochs").scalars(as: Int64.self)[0] }

/// Runs `checkpoint-stress save PREFIX NODE`; stdin and stdout are pipes.
private func startSaveByHand(_ prefix: String, node: String) throws -> (process: Process, input: Pipe, output: Pipe) {
    let process = Process()
    process.executableURL = productsDirectory().appendingPathComponent("checkpoint-stress")
    process.arguments = ["save", prefix, node]
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    // A child that already exited must not kill this process with SIGPIPE when we write to its stdin.
    signal(SIGPIPE, SIG_IGN)
    try process.run()
    return (process, input, output)
}

/// Reads the child's stdout until `line` appears (or it closes); returns all read.
private func readUntil(_ line: String, from pipe: Pipe) -> String {
    var text = ""
    while !text.split(separator: "\n").contains(Substring(line)) {
        let data = pipe.fileHandleForReading.availableData
        if data.isEmpty { break }
        text += String(decoding: data, as: UTF8.self)
    }
    return text
}

@Suite("Issue 15: Caffe2 parity, round 2")
struct Caffe2ParityTests {
    // MARK: 1. epoch_limiter per call

    /// Caffe2: `epoch_limiter(job, 5); epoch_limiter(job, 3)` — each call its
    /// own counter, the job stops when the first says so: after 3 epochs.
    @Test(arguments: [false, true])
    func twoEpochLimitersStopAfterTheSmallerOne(checkpointed: Bool) throws {
        try withTemporaryDirectory { dir in
            let job = countingJob()
            epochLimiter(job, numEpochs: 5)
            epochLimiter(job, numEpochs: 3)
            let manager = checkpointed ? try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0") : nil
            let runner = JobRunner(job: job, checkpointManager: manager)
            #expect(try runner.train() == 3)
            #expect(try epochs(runner.workspace(forNode: "trainer_0")) == 3)
            if let manager {
                #expect(try manager.blobList().filter { $0.hasSuffix(":counter") } == ["epoch_limiter:counter", "epoch_limiter_1:counter"])
                // A resume from epoch 1 restores both counters: still 3 epochs.
                let resumedJob = countingJob()
                epochLimiter(resumedJob, numEpochs: 5)
                epochLimiter(resumedJob, numEpochs: 3)
                let resumed = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0")
                #expect(try JobRunner(job: resumedJob, checkpointManager: resumed, resumeFromEpoch: 1).train() == 3)
            }
        }
    }

    /// The order of the calls does not matter, and the larger limiter alone runs to its end.
    @Test func theSmallerLimiterWinsWhicheverComesFirst() throws {
        let job = countingJob()
        epochLimiter(job, numEpochs: 2)
        epochLimiter(job, numEpochs: 4)
        #expect(try JobRunner(job: job).train() == 2)
        let single = countingJob()
        epochLimiter(single, numEpochs: 4)
        #expect(try JobRunner(job: single).train() == 4)
    }

    // MARK: 2. A save by hand holds nothing afterwards

    /// Caffe2's sequence: save by hand with one manager, then train with
    /// another manager of the same node in the same process.
    @Test func aSaveByHandThenTrainingWithAnotherManagerOfTheSameNode() throws {
        try withTemporaryDirectory { dir in
            let first = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", workspace: Workspace(["epochs": Tensor(scalar: Int64(0))]))
            try first.initialize()
            try first.save(epoch: 0)
            try first.saveAsync(epoch: 1)
            try first.waitUntilFinished()
            let job = countingJob()
            epochLimiter(job, numEpochs: 2)
            let second = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0")
            #expect(try JobRunner(job: job, checkpointManager: second).train() == 2)
            // And the first manager can save again afterwards: train() released the lock.
            try first.save(epoch: 7)
            #expect(first.checkDBExists(epoch: 7))
        }
    }

    @Test func aMultiNodeSaveByHandThenTrainingWithAnotherManager() throws {
        try withTemporaryDirectory { dir in
            let first = try MultiNodeCheckpointManager(dbPrefix: dir)
            first.workspace(forNode: "trainer_0")["epochs"] = Tensor(scalar: Int64(0))
            try first.initialize(nodes: ["trainer_0"])
            try first.save(epoch: 0)
            let job = countingJob()
            epochLimiter(job, numEpochs: 2)
            #expect(try JobRunner(job: job, checkpointManager: try MultiNodeCheckpointManager(dbPrefix: dir)).train() == 2)
        }
    }

    /// An explicit scope still excludes: while one manager holds the lock, another's save fails.
    @Test func anExplicitlyHeldLockStillExcludesOtherManagers() throws {
        try withTemporaryDirectory { dir in
            let holder = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["w": Tensor(scalar: Int64(1))]))
            try holder.initialize()
            try holder.acquireWriterLock()
            let other = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["w": Tensor(scalar: Int64(2))]))
            try other.initialize()
            #expect { try other.save(epoch: 1) } throws: { ($0 as? CheckpointError)?.code == .writerLocked }
            try holder.save(epoch: 1)
            holder.releaseWriterLock()
            try other.save(epoch: 2)
        }
    }

    /// Two processes saving the same prefix at the same moment: the child
    /// pauses inside its save (holding the lock); the parent's save fails
    /// with writerLocked; once the child is done, the parent's succeeds.
    @Test func aSaveInAnotherProcessExcludesThisOneAtTheSameMoment() throws {
        try withTemporaryDirectory { dir in
            let child = try startSaveByHand(dir, node: "n")
            #expect(readUntil("saving", from: child.output).contains("saving"))
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["w": Tensor(scalar: Int64(7))]))
            try manager.initialize()
            #expect { try manager.save(epoch: 2) } throws: { ($0 as? CheckpointError)?.code == .writerLocked }
            try child.input.fileHandleForWriting.write(contentsOf: Data("go\n".utf8))
            try child.input.fileHandleForWriting.close()
            let rest = readUntil("saved", from: child.output)
            child.process.waitUntilExit()
            #expect(child.process.terminationStatus == 0 && rest.contains("saved"))
            try manager.save(epoch: 2)
            let restored = Workspace()
            try manager.loadBlobsFromCheckpoint(["w"], epoch: 1, into: restored)
            #expect(try restored.fetchBlob("w").scalars(as: Int64.self) == [41])
        }
    }

    /// The other way round: this process is inside a save, the child's save is refused.
    @Test func aSaveInThisProcessExcludesAnotherProcessAtTheSameMoment() throws {
        struct GatedStorage: CheckpointStorageDecorator {
            let base: any CheckpointStorage = LocalCheckpointStorage()
            let entered: DispatchSemaphore, proceed: DispatchSemaphore
            func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
                                 format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
                entered.signal()
                _ = proceed.wait(timeout: .now() + 30)
                try base.writeCheckpoint(blobs, metadata: metadata, to: path, format: format, options: options)
            }
        }
        try withTemporaryDirectory { dir in
            let entered = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", workspace: Workspace(["w": Tensor(scalar: Int64(5))]),
                                                options: CheckpointOptions(storage: GatedStorage(entered: entered, proceed: proceed)))
            try manager.initialize()
            let saveError = LockedBox<CheckpointError?>(nil)
            Thread {
                do throws(CheckpointError) { try manager.save(epoch: 1) } catch { saveError.value = error }
                done.signal()
            }.start()
            #expect(entered.wait(timeout: .now() + 10) == .success)
            let child = try startSaveByHand(dir, node: "n")
            // The child fails before it reads stdin; were it to get the lock, end of input lets it go on.
            try child.input.fileHandleForWriting.close()
            let output = readUntil("locked", from: child.output)
            child.process.waitUntilExit()
            #expect(child.process.terminationStatus == 3 && output.contains("locked"), "\(output)")
            proceed.signal()
            #expect(done.wait(timeout: .now() + 10) == .success)
            #expect(saveError.value == nil)
            #expect(manager.checkDBExists(epoch: 1))
        }
    }

    // MARK: 3. dbType "minidb"

    /// Caffe2's checkpoint_test.py, ported, on Caffe2's own format: a fresh
    /// run, a resume from every epoch, a load of every epoch; the blob list
    /// is kept where Caffe2 keeps it (the STRING blob "blob_names").
    @Test func caffe2sCheckpointTestOnMinidb() throws {
        try withTemporaryDirectory { dir in
            try Caffe2Port.runWith { try CheckpointManager(dbPrefix: dir + "/single", nodeName: "trainer_0", dbType: "minidb") }
            try Caffe2Port.runWith { try MultiNodeCheckpointManager(dbPrefix: dir + "/multi", dbType: "minidb") }
            let file = try MiniDBFile.open(dir + "/single/trainer_0.4")
            // "finished" is created by the first epoch, after initialize(): not on Caffe2's fixed list.
            #expect(file.storedBlobList == ["trainer_0/cursor", "trainer_0/data", "trainer_0/total"])
            #expect(file.names == ["blob_names", "trainer_0/cursor", "trainer_0/data", "trainer_0/total"])
            #expect(try file.entry("trainer_0/total").caffe2DataType == 10 && file.bytes(of: "trainer_0/total") == Array(withUnsafeBytes(of: Int64(145)) { Array($0) }))
        }
    }

    /// With the durable handler, a minidb job resumes by itself from the newest complete epoch.
    @Test func aMinidbJobWithTheDurableHandlerResumesByItself() throws {
        try withTemporaryDirectory { dir in
            let job = pipelineJob(nodes: ["trainer_0"])
            let first = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", dbType: "minidb", metadataHandler: DurableMetadataHandler())
            #expect(try JobRunner(job: job, checkpointManager: first).train() == 4)
            let second = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", dbType: "minidb", metadataHandler: DurableMetadataHandler())
            let runner = JobRunner(job: job, checkpointManager: second)
            #expect(try runner.train() == 5 && runner.resumeFromEpoch == 4)
            #expect(try second.workspace.fetchBlob("trainer_0/total").scalars(as: Int64.self) == [145])
            // A torn minidb is not a complete checkpoint.
            let bytes = try fileBytes(dir + "/trainer_0.5")
            try writeBytes(dir + "/trainer_0.5", Array(bytes.dropLast(3)))
            #expect(!second.checkDBExists(epoch: 5) && second.checkDBExists(epoch: 4))
        }
    }

    // MARK: 4. API frictions

    /// Code written against the protocol, with Caffe2's defaults, runs on both managers.
    @Test func theWholeCaffe2SurfaceIsOnTheProtocolWithDefaults() throws {
        func exercise(_ manager: any CheckpointManaging, node: String) throws {
            manager.workspace(forNode: node)["w"] = try Tensor([Float](repeating: 2, count: 4))
            try manager.setParams(nodes: [node])
            try manager.initialize(nodes: [node])
            #expect(try manager.blobList() == ["w"])
            #expect(try manager.cpAccessible())
            try manager.save(epoch: 1)
            try manager.writeCheckpointMetadata(epoch: 1)
            #expect(manager.checkDBExists(epoch: 1) && !manager.checkDBExists(epoch: 2))
            #expect(try manager.getResumeFromEpochID() == 1)
            manager.workspace(forNode: node)["w"] = try Tensor([Float](repeating: 0, count: 4))
            try manager.load(epoch: 1)
            #expect(try manager.workspace(forNode: node).fetchBlob("w").scalars(as: Float.self) == [2, 2, 2, 2])
            let elsewhere = Workspace()
            try manager.loadBlobsFromCheckpoint(["w", "absent"], epoch: 1, into: elsewhere)
            #expect(elsewhere.blobNames == ["w"])
            try manager.loadBlobsFromCheckpoint(["w"], epoch: 1)
            #expect(manager.dbName(nodeName: node, epoch: 1)?.hasSuffix("/\(node).1") == true)
            #expect(manager.dbName(nodeName: "nobody", epoch: 1) == nil)
            var stats: [String: UInt64] = [:]
            manager.collectCheckpointStats(into: &stats)
            #expect(stats.keys.contains { $0.hasSuffix("/\(node).1") })
        }
        try withTemporaryDirectory { dir in
            try exercise(try CheckpointManager(dbPrefix: dir + "/single", nodeName: "a", metadataHandler: DurableMetadataHandler()), node: "a")
            try exercise(try MultiNodeCheckpointManager(dbPrefix: dir + "/multi", metadataHandler: DurableMetadataHandler()), node: "b")
        }
    }

    /// Caffe2's `get_ckpt_db_name` returns None for a node it does not have; so do we, before and after initialize.
    @Test func dbNameOfAnUnknownNodeIsNil() throws {
        try withTemporaryDirectory { dir in
            let multi = try MultiNodeCheckpointManager(dbPrefix: dir)
            #expect(multi.dbName(nodeName: "trainer_0", epoch: 3) == nil)
            try multi.initialize(nodes: ["trainer_0"])
            #expect(multi.dbName(nodeName: "trainer_0", epoch: 3) == dir + "/trainer_0.3")
            #expect(multi.dbName(nodeName: "trainer_9", epoch: 3) == nil)
            let single = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0")
            #expect(single.dbName(nodeName: "trainer_0", epoch: 3) == dir + "/trainer_0.3")
            #expect(single.dbName(nodeName: "trainer_1", epoch: 3) == nil)
        }
    }

    /// `loadBlobsFromCheckpoints` is `@discardableResult`: called as Caffe2
    /// code calls it, result unused, it compiles without a warning.
    @Test func loadBlobsFromCheckpointsResultMayBeIgnored() throws {
        try withTemporaryDirectory { dir in
            let job = countingJob()
            epochLimiter(job, numEpochs: 1)
            let runner = JobRunner(job: job, checkpointManager: try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0"))
            try runner.train()
            let workspace = Workspace()
            try runner.loadBlobsFromCheckpoints(["epochs"], epoch: 1, into: workspace)
            #expect(try epochs(workspace) == 1)
        }
    }

    /// A job-level default node: a single-node job names its node once.
    @Test func aJobLevelDefaultNodeKeepsASingleNodeJobOnOneNode() throws {
        try withTemporaryDirectory { dir in
            let job = countingJob(defaultNode: "trainer_0")
            epochLimiter(job, numEpochs: 2)
            job.addStopCondition { _ in false }
            #expect(job.nodesToCheckpoint == ["trainer_0"] && job.nodes == ["trainer_0"])
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0")
            #expect(try JobRunner(job: job, checkpointManager: manager).train() == 2)
        }
    }

    /// The mistake (one step without `node:` on a job of another node) is
    /// reported by train() before any step runs, naming the nodes and the fix.
    @Test func forgettingNodeIsAClearErrorBeforeAnythingRuns() throws {
        try withTemporaryDirectory { dir in
            let ran = LockedBox(false)
            let job = Job()
            job.addInitStep(node: "trainer_0") { _ in ran.value = true }
            epochLimiter(job, numEpochs: 2)  // no node: the job's default node, "local"
            let runner = JobRunner(job: job, checkpointManager: try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0"))
            var message = ""
            #expect {
                try runner.train()
            } throws: { error in
                message = "\(error)"
                return (error as? CheckpointError).map { if case .invalidField = $0.code { true } else { false } } ?? false
            }
            #expect(message.contains("'trainer_0', 'local'") && message.contains("Job(defaultNode:") && message.contains("MultiNodeCheckpointManager"), "\(message)")
            #expect(!ran.value)
            #expect(directoryListing(dir).isEmpty)
        }
    }

    /// Caffe2's `Job(init_group=…, epoch_group=…, exit_group=…, stop_conditions=…)`.
    @Test func caffe2sJobConstructorShape() throws {
        let initGroup = TaskGroup(), epochGroup = TaskGroup(), exitGroup = TaskGroup()
        let log = LockedBox<[String]>([])
        initGroup.addStep(node: "trainer_0") { ws in ws["n"] = Tensor(scalar: Int64(0)); log.value.append("init") }
        epochGroup.addStep(node: "trainer_0") { ws in
            ws["n"] = Tensor(scalar: try ws.fetchBlob("n").scalars(as: Int64.self)[0] + 1)
            log.value.append("epoch")
        }
        exitGroup.addStep(node: "trainer_0") { _ in log.value.append("exit") }
        let job = Job(initGroup: initGroup, epochGroup: epochGroup, exitGroup: exitGroup,
                      stopConditions: [(node: "trainer_0", condition: { ws in try ws.fetchBlob("n").scalars(as: Int64.self)[0] >= 2 })])
        #expect(job.initGroup === initGroup && job.nodesToCheckpoint == ["trainer_0"])
        // Steps added later through the job land in its groups, as `with job.epoch_group:` does.
        job.epochGroup.addStep(node: "trainer_0") { _ in log.value.append("epoch'") }
        let runner = JobRunner(job: job)
        #expect(try runner.train() == 2)
        #expect(log.value == ["init", "epoch", "epoch'", "epoch", "epoch'", "exit"])
    }

    /// JobRunner's logger, silenced without depending on swift-log: `Logger`
    /// comes with `import CheckpointIO` (this file imports nothing else of it).
    @Test func jobRunnerTakesALoggerWithoutImportingLogging() throws {
        var quiet = Logger(label: "training")
        quiet.logLevel = .critical
        let job = countingJob()
        epochLimiter(job, numEpochs: 1)
        let runner = JobRunner(job: job, logger: quiet)
        #expect(runner.logger.logLevel == .critical)
        #expect(try runner.train() == 1)
        let options = CheckpointOptions(logger: quiet)
        #expect(options.logger.logLevel == .critical)
    }

    /// The documented minimal custom metadata handler works with JobRunner: a
    /// second run resumes from the last epoch it recorded.
    @Test func aMinimalCustomMetadataHandler() throws {
        try withTemporaryDirectory { dir in
            let handler = LastEpochHandler()
            let job = countingJob()
            epochLimiter(job, numEpochs: 3)
            let first = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: handler)
            #expect(try JobRunner(job: job, checkpointManager: first).train() == 3)
            #expect(handler.recorded == [0, 1, 2, 3])
            let second = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: handler)
            let runner = JobRunner(job: job, checkpointManager: second)
            #expect(try runner.train() == 4)  // resumed from 3; the limiter was already spent
            #expect(runner.resumeFromEpoch == 3)
        }
    }
}

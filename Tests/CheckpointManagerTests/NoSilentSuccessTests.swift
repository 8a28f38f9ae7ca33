import CheckpointIO
import Foundation
import Logging
import Testing

// Issue 18, "No silent success": a checkpoint directory that does not exist
// yet, saves that keep failing, the by-hand sequence, and blobs added after
// initialize(). Public API only.

/// Collects what a `Logger` logs.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [(level: Logger.Level, message: String)] = []

    var entries: [(level: Logger.Level, message: String)] { lock.lock(); defer { lock.unlock() }; return stored }
    func messages(_ level: Logger.Level) -> [String] { entries.filter { $0.level == level }.map(\.message) }

    var logger: Logger { Logger(label: "test") { _ in Handler(capture: self) } }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.lock.lock(); defer { capture.lock.unlock() }
            capture.stored.append((event.level, "\(event.message)"))
        }
    }
}

/// Local storage whose checkpoint writes fail (ENOSPC) for the epochs `failing` says.
struct EpochFailingStorage: CheckpointStorageDecorator {
    let base: any CheckpointStorage = LocalCheckpointStorage()
    let failing: @Sendable (Int) -> Bool
    func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String, format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
        if let epoch = metadata[CheckpointManager.epochKey].flatMap({ Int($0) }), failing(epoch) {
            throw CheckpointError(.system(call: "pwritev", errno: ENOSPC), path: path)
        }
        try base.writeCheckpoint(blobs, metadata: metadata, to: path, format: format, options: options)
    }
}

/// A job of one node "trainer_0" with a counter "steps" and `numEpochs` epochs.
func countingJob(numEpochs: Int, node: String = "trainer_0", step: @escaping (Workspace) throws -> Void = { _ in }) -> Job {
    let job = Job()
    job.addInitStep(node: node) { ws in ws["steps"] = Tensor(scalar: Int64(0)) }
    job.addEpochStep(node: node) { ws in
        ws["steps"] = Tensor(scalar: try ws.fetchBlob("steps").scalars(as: Int64.self)[0] + 1)
        try step(ws)
    }
    epochLimiter(job, numEpochs: numEpochs, node: node)
    return job
}

@Suite("Issue 18: no silent success")
struct NoSilentSuccessTests {
    // MARK: 1. The checkpoint directory

    /// The steps: a prefix that does not exist (two levels), a JobRunner
    /// job, then a rerun "after a crash". Before: every save failed, train()
    /// returned as if all went well, the rerun started from scratch.
    @Test func aJobRunnerSavesIntoAPrefixThatDidNotExist() throws {
        try withTemporaryDirectory { dir in
            let prefix = dir + "/ckpt/run1"
            let manager = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            let runner = JobRunner(job: countingJob(numEpochs: 5), checkpointManager: manager)
            #expect(try runner.train() == 5)
            #expect(runner.failedSaves.isEmpty && runner.lastSavedEpoch == 5)
            #expect(directoryListing(prefix).filter { $0.hasPrefix("trainer_0.") && !$0.hasSuffix(".lock") }.count == 6)
            manager.releaseWriterLock()

            let rerun = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            let second = JobRunner(job: countingJob(numEpochs: 7), checkpointManager: rerun)
            #expect(try second.train() == 6)  // resumed from 5: the limiter's counter says one more epoch
            #expect(second.resumeFromEpoch == 5)
            #expect(try rerun.workspace.fetchBlob("steps").scalars(as: Int64.self) == [6])
        }
    }

    @Test func initializeCreatesThePrefixAndAFileInTheWayIsAClearError() throws {
        try withTemporaryDirectory { dir in
            let manager = try CheckpointManager(dbPrefix: dir + "/a/b/c/", nodeName: "n", workspace: Workspace(["x": Tensor(scalar: 1)]))
            try manager.initialize()
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: dir + "/a/b/c", isDirectory: &isDirectory) && isDirectory.boolValue)
            try manager.save(epoch: 1)
            #expect(manager.checkDBExists(epoch: 1))
            try manager.initialize()  // exists now: nothing to do

            try writeBytes(dir + "/file", [7])
            let blocked = try CheckpointManager(dbPrefix: dir + "/file/sub", nodeName: "n")
            #expect { try blocked.initialize() } throws: { error in
                let error = error as? CheckpointError
                return error?.code == .system(call: "mkdir", errno: EEXIST) && error?.path == dir + "/file"
            }
            // JobRunner: the same error, before any epoch runs.
            let steps = LockedBox(0)
            let runner = JobRunner(job: countingJob(numEpochs: 3) { _ in steps.value += 1 }, checkpointManager: blocked)
            #expect { try runner.train() } throws: { ($0 as? CheckpointError)?.path == dir + "/file" }
            #expect(steps.value == 0)
            #expect(try fileBytes(dir + "/file") == [7])
        }
    }

    // MARK: 1. Saves that keep failing

    @Test func savesThatKeepFailingAreSaidOnceAndStopTrainAfterThree() throws {
        try withTemporaryDirectory { dir in
            let capture = LogCapture()
            let storage = EpochFailingStorage { _ in true }
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(),
                                                options: CheckpointOptions(storage: storage))
            let steps = LockedBox(0)
            let runner = JobRunner(job: countingJob(numEpochs: 90) { _ in steps.value += 1 }, checkpointManager: manager, logger: capture.logger)
            #expect { try runner.train() } throws: { ($0 as? CheckpointError)?.code == .system(call: "pwritev", errno: ENOSPC) }
            // Epochs 0, 1 and 2 failed: train() stopped after epoch 2.
            #expect(runner.failedSaves.map(\.epoch) == [0, 1, 2])
            #expect(runner.failedSaves.allSatisfy { $0.error.code == .system(call: "pwritev", errno: ENOSPC) })
            #expect(runner.lastSavedEpoch == nil && steps.value == 2)
            let warnings = capture.messages(.warning), errors = capture.messages(.error)
            #expect(warnings.count == 1 && warnings.first?.contains("ENOSPC") == true, "\(warnings)")
            #expect(errors.count == 1 && errors.first?.contains("keep failing") == true && errors.first?.contains("ENOSPC") == true, "\(errors)")
            #expect(capture.messages(.critical).count == 1)
        }
    }

    @Test func withCaffe2sPolicyTheJobEndsAndTheFailuresAreItsResult() throws {
        try withTemporaryDirectory { dir in
            let capture = LogCapture()
            let storage = EpochFailingStorage { $0 >= 2 && $0 != 7 }
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(),
                                                options: CheckpointOptions(storage: storage))
            let runner = JobRunner(job: countingJob(numEpochs: 12), checkpointManager: manager, logger: capture.logger,
                                   maxConsecutiveSaveFailures: nil)
            #expect(try runner.train() == 12)
            #expect(runner.failedSaves.map(\.epoch) == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12])
            #expect(runner.lastSavedEpoch == 7)
            // Two streaks: a warning and one error each, not a line per epoch.
            #expect(capture.messages(.warning).count == 2 && capture.messages(.error).count == 2)
            #expect(capture.messages(.notice).count == 1)  // saved again at epoch 7
            // A single failure does not stop the default policy either.
            let once = JobRunner(job: countingJob(numEpochs: 4), checkpointManager: try CheckpointManager(
                dbPrefix: dir + "/once", nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(),
                options: CheckpointOptions(storage: EpochFailingStorage { $0 == 2 })), logger: capture.logger)
            #expect(try once.train() == 4)
            #expect(once.failedSaves.map(\.epoch) == [2] && once.lastSavedEpoch == 4)
        }
    }

    // MARK: 2. The by-hand sequence

    @Test func theByHandSequenceNeedsNoSetParams() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            let manager = try CheckpointManager(dbPrefix: dir + "/run", nodeName: "trainer_0", metadataHandler: handler,
                                                workspace: Workspace(["w": Tensor(scalar: Int64(5))]))
            try manager.initialize()
            try manager.save(epoch: 1)
            try manager.writeCheckpointMetadata(epoch: 1)
            #expect(try handler.completeEpochs() == [.init(epoch: 1, nodes: ["trainer_0"], metric: nil)])
            #expect(try manager.getResumeFromEpochID() == 1)

            // Several nodes: initialize(nodes:) passes them to the handler.
            let multiHandler = DurableMetadataHandler()
            let multi = try MultiNodeCheckpointManager(dbPrefix: dir + "/multi", metadataHandler: multiHandler)
            for node in ["a", "b"] { multi.workspace(forNode: node)["w"] = Tensor(scalar: Int64(1)) }
            try multi.initialize(nodes: ["a", "b"])
            try multi.save(epoch: 3)
            try multi.writeCheckpointMetadata(epoch: 3)
            #expect(try multiHandler.completeEpochs() == [.init(epoch: 3, nodes: ["a", "b"], metric: nil)])
            #expect(try multi.getResumeFromEpochID() == 3)
        }
    }

    @Test func aHandlerWithoutParametersNamesTheCallToMake() throws {
        let handler = DurableMetadataHandler()
        #expect { try handler.write(epoch: 1) } throws: { error in
            guard case let .invalidState(reason)? = (error as? CheckpointError)?.code else { return false }
            return reason.contains("manager.setParams()")
        }
    }

    // MARK: 3. Blobs added after initialize()

    /// The case: optimizer state created lazily in the first epoch is
    /// not saved (Caffe2's fixed list), but the first save that sees it says so.
    @Test func blobsAddedAfterInitializeAreNamedOnceAndListed() throws {
        try withTemporaryDirectory { dir in
            let capture = LogCapture()
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(),
                                                options: CheckpointOptions(logger: capture.logger))
            let job = countingJob(numEpochs: 3) { ws in
                if !ws.hasBlob("adam.m") { ws["adam.m"] = Tensor(scalar: Float(0.5)) }
            }
            #expect(try JobRunner(job: job, checkpointManager: manager).train() == 3)
            let warnings = capture.messages(.warning)
            #expect(warnings.count == 1 && warnings.first?.contains("'adam.m'") == true, "\(warnings)")
            #expect(manager.unsavedBlobNames == ["adam.m"])
            // Another one later: only the new name is reported.
            manager.workspace["adam.v"] = Tensor(scalar: Float(0.25))
            try manager.save(epoch: 4)
            #expect(capture.messages(.warning).count == 2 && capture.messages(.warning).last?.contains("'adam.v'") == true)
            #expect(!capture.messages(.warning).last!.contains("adam.m"))
            #expect(manager.unsavedBlobNames == ["adam.m", "adam.v"])
            let restored = Workspace()
            try manager.loadBlobsFromCheckpoint(["adam.m", "adam.v", "steps"], epoch: 4, into: restored)
            #expect(restored.blobNames == ["steps"])
        }
    }

    @Test func relistingAtEverySaveSavesAndResumesLateBlobs() throws {
        try withTemporaryDirectory { dir in
            let capture = LogCapture()
            let options = CheckpointOptions(blobList: .relistedAtEverySave, logger: capture.logger)
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(), options: options)
            let job = countingJob(numEpochs: 3) { ws in
                let steps = try ws.fetchBlob("steps").scalars(as: Int64.self)[0]
                if steps >= 2 { ws["adam.m"] = Tensor(scalar: Float(steps)) }
            }
            #expect(try JobRunner(job: job, checkpointManager: manager).train() == 3)
            #expect(capture.messages(.warning).isEmpty && manager.unsavedBlobNames.isEmpty)
            manager.releaseWriterLock()
            // Epoch 1 was saved without the blob, epoch 3 with it; each loads its own list.
            try manager.load(epoch: 1)
            let resumed = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(), options: options)
            try resumed.initialize(retrieveFromEpoch: 3)
            try resumed.load(epoch: 3)
            #expect(try resumed.workspace.fetchBlob("adam.m").scalars(as: Float.self) == [3])
            #expect(try resumed.workspace.fetchBlob("steps").scalars(as: Int64.self) == [3])
        }
    }
}

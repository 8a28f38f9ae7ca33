import BlobCodec
import Logging

/// Builds the upload that runs after training (Caffe2's `UploadTaskGroupBuilder`).
public protocol UploadTaskGroupBuilder {
    /// Returns the upload for the checkpoints of the final `epoch`; ``JobRunner`` runs it.
    func build(epoch: Int, checkpointManager: (any CheckpointManaging)?) throws -> () throws -> Void
}

/// Runs a ``Job`` with checkpoints: Caffe2's `JobRunner`.
///
///     let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0",
///                                         metadataHandler: DurableMetadataHandler())
///     let epochs = try JobRunner(job: job, checkpointManager: manager).train()
///
/// ``train()`` follows Caffe2 step by step:
/// 1. `setParams` with the job's nodes, then the resume epoch from
///    ``CheckpointManaging/getResumeFromEpochID(userEpoch:)`` (the metadata
///    handler's choice, or `resumeFromEpoch`); then the writer lock of every
///    node (creating the checkpoint directory if needed; another job saving
///    to the same prefix: ``train()`` throws
///    `CheckpointError.Code.writerLocked` before running anything),
///    released when ``train()`` returns;
/// 2. from scratch only: the init steps;
/// 3. `initialize` the manager (from scratch: the blob list is the
///    workspace's blobs, and epoch 0 is saved at once; resuming: the list is
///    read from the resume epoch's checkpoint, which is then loaded). When
///    the handler chose the epoch and it fails to load because it is
///    damaged, the handler records the damage and names the epoch before it
///    (``CheckpointManaging/fallBack(fromDamagedEpoch:reason:)``), which is
///    loaded instead, with an error logged;
/// 4. epochs from 1 (or resume + 1): the epoch steps, the stop conditions,
///    a checkpoint (``saveCheckpoints(epoch:metric:)``, every epoch including the
///    last), and a stop when any condition held;
/// 5. the upload (given the final epoch), download and exit steps; returns the final epoch.
///
/// A failed save is logged (a warning with its cause; an error, once, when
/// the next one fails too), listed in ``failedSaves``, and training goes on;
/// after ``maxConsecutiveSaveFailures`` failed saves in a row ``train()``
/// throws the last one's error. The metadata is written only after a save
/// succeeded, so it never names an epoch that did not commit.
public final class JobRunner {
    /// A save that failed during ``train()``.
    public struct SaveFailure: Sendable, Equatable {
        /// The epoch that was not saved.
        public var epoch: Int
        /// Why.
        public var error: CheckpointError

        /// A failed save of `epoch`.
        public init(epoch: Int, error: CheckpointError) {
            self.epoch = epoch
            self.error = error
        }
    }

    /// The job run.
    public let job: Job
    /// Saves every epoch and chooses the resume point; nil: no checkpoints.
    public let checkpointManager: (any CheckpointManaging)?
    /// The epoch to resume from: the user's at init, then the one ``train()`` resumed from.
    public private(set) var resumeFromEpoch: Int?
    /// Builds the upload step run after the checkpoints of an epoch are saved; nil: none.
    public let uploadTaskGroupBuilder: (any UploadTaskGroupBuilder)?
    /// Where failed saves and fallbacks are logged.
    public var logger: Logger
    /// After this many failed saves in a row, ``train()`` stops and throws
    /// the last one's error (values below 1 count as 1); nil: never, as in
    /// Caffe2, where training goes on without checkpoints. Default 3.
    public var maxConsecutiveSaveFailures: Int?
    /// The saves that failed in the latest ``train()`` (or ``saveCheckpoints(epoch:metric:)`` calls), in order.
    public private(set) var failedSaves: [SaveFailure] = []
    /// The newest epoch saved and recorded by the latest ``train()`` (or
    /// ``saveCheckpoints(epoch:metric:)``), nil when none was.
    public private(set) var lastSavedEpoch: Int?
    private var consecutiveSaveFailures = 0
    private var ownWorkspaces: [String: Workspace] = [:]

    /// A runner for `job`, checkpointed by `checkpointManager`.
    ///
    /// - Parameters:
    ///   - job: the steps to run.
    ///   - checkpointManager: saves each epoch and finds the epoch to resume from (nil: no checkpoints).
    ///   - resumeFromEpoch: the epoch to resume from (nil: the manager's choice).
    ///   - uploadTaskGroupBuilder: builds the upload step run after each save.
    ///   - maxConsecutiveSaveFailures: failed saves in a row after which
    ///     ``train()`` throws (nil: never, Caffe2's behaviour).
    ///   - logger: where the runner logs (resume, failed saves); `Logger` is
    ///     re-exported by `import CheckpointIO`. To silence it:
    ///
    ///         var quiet = Logger(label: "training")
    ///         quiet.logLevel = .critical
    ///         let runner = JobRunner(job: job, checkpointManager: manager, logger: quiet)
    public init(job: Job, checkpointManager: (any CheckpointManaging)? = nil, resumeFromEpoch: Int? = nil,
                uploadTaskGroupBuilder: (any UploadTaskGroupBuilder)? = nil, logger: Logger = Logger(label: "checkpoint.JobRunner"),
                maxConsecutiveSaveFailures: Int? = 3) {
        self.job = job
        self.checkpointManager = checkpointManager
        self.resumeFromEpoch = resumeFromEpoch
        self.uploadTaskGroupBuilder = uploadTaskGroupBuilder
        self.logger = logger
        self.maxConsecutiveSaveFailures = maxConsecutiveSaveFailures
    }

    /// The workspace `node`'s steps run on: the manager's, or (without a manager) one of the runner's own.
    public func workspace(forNode node: String) -> Workspace {
        if let checkpointManager { return checkpointManager.workspace(forNode: node) }
        if let workspace = ownWorkspaces[node] { return workspace }
        let workspace = Workspace()
        ownWorkspaces[node] = workspace
        return workspace
    }

    /// Runs the job to its end and returns the final epoch. Whether its
    /// checkpoints were saved: ``failedSaves`` and ``lastSavedEpoch``.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` before
    ///   any step runs when a single-node ``CheckpointManager`` is given a job
    ///   whose ``Job/nodesToCheckpoint`` has several nodes (a step added
    ///   without `node:` runs on `Job.defaultNode`): the message names the
    ///   nodes and the fixes; what a step or stop condition throws; the manager's errors
    ///   while resuming (a resume epoch you chose, or one with no intact
    ///   epoch before it, whose checkpoint is missing or damaged; a checkpoint
    ///   directory that cannot be created); the last save's error after
    ///   ``maxConsecutiveSaveFailures`` failed saves in a row.
    @discardableResult
    public func train() throws -> Int {
        failedSaves = []
        lastSavedEpoch = nil
        consecutiveSaveFailures = 0
        let nodes = job.nodesToCheckpoint
        // The mistake is in the job (a step without `node:`): say so before anything runs.
        if checkpointManager is CheckpointManager, nodes.count > 1 {
            throw CheckpointError(.invalidField(field: "job", reason: CheckpointManager.singleNodeMessage(nodes)))
        }
        let userChoseEpoch = resumeFromEpoch != nil
        if let manager = checkpointManager {
            try manager.setParams(nodes: nodes, pathPrefix: nil, pathType: nil)
            resumeFromEpoch = try manager.getResumeFromEpochID(userEpoch: resumeFromEpoch)
            if let resumeFromEpoch { logger.info("Resuming from epoch \(resumeFromEpoch)") }
        }
        if let manager = checkpointManager {
            // Fail fast when another job saves to the same prefix; other failures (a missing
            // directory) surface, logged, at each save.
            do throws(CheckpointError) {
                try manager.acquireWriterLock(nodes: nodes)
            } catch {
                if error.code == .writerLocked { throw error }
                logger.warning("Cannot lock the checkpoint prefix: \(error)")
            }
        }
        // The prefix is free for another job once this one is over.
        defer { checkpointManager?.releaseWriterLock() }
        let fromScratch = resumeFromEpoch == nil
        if fromScratch { try run(job.initSteps) }
        if let manager = checkpointManager {
            if let epoch = resumeFromEpoch {
                resumeFromEpoch = try loadResumeEpoch(manager, epoch, nodes: nodes, canFallBack: !userChoseEpoch)
            } else {
                logger.debug("Preparing checkpoints")
                try manager.initialize(nodes: nodes, retrieveFromEpoch: nil, pathPrefix: nil, pathType: nil)
                try saveCheckpoints(epoch: 0, metric: nil)
                try stopIfSavesKeepFailing()
            }
        }
        var epoch = (resumeFromEpoch ?? 0) + 1
        while true {
            logger.debug("Starting epoch \(epoch)")
            try run(job.epochSteps)
            var stop = false
            for (node, condition) in job.stopConditions where try condition(workspace(forNode: node)) { stop = true }
            if checkpointManager != nil {
                let metric = try job.metric.map { try $0.compute(workspace(forNode: $0.node)) }
                try saveCheckpoints(epoch: epoch, metric: metric)
                try stopIfSavesKeepFailing()
            }
            if stop { break }
            epoch += 1
        }
        logger.debug("Finished training at epoch \(epoch)")
        if let uploadTaskGroupBuilder {
            try uploadTaskGroupBuilder.build(epoch: epoch, checkpointManager: checkpointManager)()
        }
        try run(job.downloadSteps)
        try run(job.exitSteps)
        return epoch
    }

    /// Initializes the manager from `epoch`'s checkpoint and loads it; when
    /// that fails because the checkpoint is damaged and the handler chose the
    /// epoch (`canFallBack`), asks the handler for the epoch before it (which
    /// records the damage) and tries that one. Returns the epoch loaded.
    private func loadResumeEpoch(_ manager: any CheckpointManaging, _ first: Int, nodes: [String], canFallBack: Bool) throws(CheckpointError) -> Int {
        var epoch = first
        while true {
            do throws(CheckpointError) {
                logger.debug("Preparing checkpoints")
                try manager.initialize(nodes: nodes, retrieveFromEpoch: epoch, pathPrefix: nil, pathType: nil)
                logger.info("Loading checkpoints for epoch \(epoch)")
                try manager.load(epoch: epoch, pathPrefix: nil, pathType: nil)
                manager.reportCheckpointStats(action: "checkpoint_load")
                return epoch
            } catch {
                guard canFallBack, error.isCheckpointDamage else { throw error }
                guard let older = try manager.fallBack(fromDamagedEpoch: epoch, reason: "\(error)"), older < epoch else {
                    logger.critical("Cannot resume: the checkpoint of epoch \(epoch) is damaged (\(error)) and no older complete epoch is recorded. Repair or remove it, or choose an epoch.")
                    throw error
                }
                logger.error("The checkpoint of epoch \(epoch) is damaged (\(error)): it is now recorded as damaged in the metadata and never resumed from again. Falling back to epoch \(older).")
                epoch = older
            }
        }
    }

    /// Throws the last save's error once ``maxConsecutiveSaveFailures`` saves in a row failed.
    private func stopIfSavesKeepFailing() throws(CheckpointError) {
        guard let limit = maxConsecutiveSaveFailures, consecutiveSaveFailures >= max(1, limit), let last = failedSaves.last else { return }
        logger.critical("Stopping: \(consecutiveSaveFailures) checkpoint saves failed in a row (epochs \(failedSaves.suffix(consecutiveSaveFailures).map(\.epoch))); the last: \(last.error)")
        throw last.error
    }

    /// Saves every node's checkpoint of `epoch`, then records it in the
    /// metadata and reports the timing (Caffe2's `save_checkpoints`).
    ///
    /// Returns false when the store is not accessible or the save failed;
    /// the metadata is then left alone, the failure is added to
    /// ``failedSaves`` and logged: the first of a run of failures as a
    /// warning with its cause, the second, once, as an error saying that
    /// saves keep failing and which epoch is the newest saved.
    ///
    /// - Throws: `CheckpointError.Code.invalidState` when the runner has no manager.
    @discardableResult
    public func saveCheckpoints(epoch: Int, metric: Double? = nil) throws(CheckpointError) -> Bool {
        guard let manager = checkpointManager else { throw CheckpointError(.invalidState(reason: "JobRunner has no checkpoint manager")) }
        do throws(CheckpointError) {
            guard try manager.cpAccessible(epoch: nil) else {
                throw CheckpointError(.invalidState(reason: "checkpoint files cannot be accessed (the metadata handler's cpAccessible is false: is the checkpoint directory writable?)"))
            }
            try manager.save(epoch: epoch)
            try manager.writeCheckpointMetadata(epoch: epoch, metric: metric)
            manager.reportCheckpointStats(action: "checkpoint_save")
            logger.debug("Checkpoints saved for epoch \(epoch)")
            if consecutiveSaveFailures > 0 {
                logger.notice("Checkpoints are saved again from epoch \(epoch), after \(consecutiveSaveFailures) failed saves")
            }
            consecutiveSaveFailures = 0
            lastSavedEpoch = epoch
            return true
        } catch {
            let previous = consecutiveSaveFailures > 0 ? failedSaves.last : nil
            failedSaves.append(SaveFailure(epoch: epoch, error: error))
            consecutiveSaveFailures += 1
            let newest = lastSavedEpoch.map { "epoch \($0)" } ?? "none in this run"
            switch consecutiveSaveFailures {
            case 1:
                logger.warning("Unable to write checkpoint for epoch \(epoch); it is not saved: \(error)")
            case 2:
                logger.error("Checkpoint saves keep failing: epochs \(previous?.epoch ?? epoch - 1) and \(epoch) are not saved (newest saved: \(newest)); training goes on unprotected. Cause: \(error)")
            default:
                // Said once already; a new cause is worth a line.
                if previous?.error.code != error.code {
                    logger.warning("Unable to write checkpoint for epoch \(epoch) either, now because: \(error)")
                } else {
                    logger.debug("Unable to write checkpoint for epoch \(epoch): \(error)")
                }
            }
            return false
        }
    }

    /// Loads `blobNames` from every node's checkpoint of `epoch` into
    /// `workspace` (Caffe2's `load_blobs_from_checkpoints`); false when a
    /// node's checkpoint is missing.
    ///
    /// - Throws: `CheckpointError.Code.invalidState` without a
    ///   manager; corruption of a present blob.
    @discardableResult
    public func loadBlobsFromCheckpoints(_ blobNames: [String], epoch: Int, into workspace: Workspace) throws(CheckpointError) -> Bool {
        guard let manager = checkpointManager else { throw CheckpointError(.invalidState(reason: "JobRunner has no checkpoint manager")) }
        logger.debug("Loading checkpoint for epoch \(epoch)")
        let loaded = try manager.loadBlobsLocally(nodes: job.nodesToCheckpoint, blobNames: blobNames, epoch: epoch, into: workspace)
        manager.reportCheckpointStats(action: "checkpoint_partial_load")
        return loaded
    }

    private func run(_ steps: [Job.NodeStep]) throws {
        for step in steps { try step.run(workspace(forNode: step.node)) }
    }
}

import BlobCodec
import Dispatch

/// What the distributed commit of this process did (see ``DistributedCheckpointManager/commitObserver``).
public enum DistributedCommitEvent: Sendable, Equatable {
    /// This process's nodes committed their files of `epoch` and published their records (phase 1).
    case published(epoch: Int)
    /// This process found `epoch` complete; `byThisProcess`: it created the completion record.
    case completed(epoch: Int, byThisProcess: Bool)
    /// Retention dropped the complete `epoch` (reported by the process that completed a later one).
    case dropped(epoch: Int)
    /// The files and records of `epoch`, which never completed, were removed.
    case abandoned(epoch: Int)
}

/// Checkpoints one job that runs as many processes, one (or a few) nodes
/// each, on many machines, coordinated only through the storage they share
/// (a shared directory, an object store): no server.
///
///     // In every process; the launcher gives each its rank and one run id per start of the job.
///     let manager = try DistributedCheckpointManager(dbPrefix: "/shared/ckpt/run1", rank: rank, worldSize: 4,
///                                                    runID: launcherAttemptID,
///                                                    retention: RetentionPolicy(keepLatest: 3))
///     let epochs = try JobRunner(job: job, checkpointManager: manager).train()
///
/// Each process saves and loads only its own nodes' files (`dbPrefix/NODE.EPOCH`,
/// exactly as ``CheckpointManager`` names them). An epoch is committed by a
/// two-phase commit through storage (FORMAT.md §6.4):
///
/// 1. ``save(epoch:)`` commits this process's node files atomically;
///    ``writeCheckpointMetadata(epoch:metric:)`` then publishes one small
///    record per node, `distributed/NODE.EPOCH.RUN.committed`, with
///    ``CheckpointStorage/createFileIfAbsent(_:at:durability:)``.
/// 2. Whichever process sees every node's record of the epoch in one run
///    (any process, not a fixed rank: a dead rank 0 blocks nobody) creates
///    `distributed/EPOCH.complete` with create-if-absent: exactly one
///    succeeds, and that one alone applies the ``RetentionPolicy`` and removes
///    the files and records of earlier epochs that never completed.
///
/// Readers never treat an epoch as complete without its completion record:
/// ``getResumeFromEpochID(userEpoch:)`` answers the newest epoch with one
/// whose node files all pass the structural check, the same epoch in every
/// process. A process returns from a save once its part is published
/// (``CompletionWait/none``, the default) or waits for the completion with
/// a timeout (``CompletionWait/upTo(_:)``, or ``waitForCompletion(epoch:timeout:)``);
/// a rank that died mid-save never blocks the others: its epoch is simply
/// never complete, and the next one completes when every rank saved it.
///
/// **The run id.** Records are namespaced by `runID`, which must be the same
/// string in every process of one start of the job and a new one at every
/// restart (torchrun's `TORCHELASTIC_RUN_ID` + `TORCHELASTIC_RESTART_COUNT`,
/// Slurm's job id + `SLURM_RESTART_COUNT`, a timestamp the launcher passes
/// to all). It is what keeps a record left by a killed earlier start from
/// completing an epoch together with records of this start. The previous
/// start's processes must all be gone before the job restarts (each node's
/// writer lock makes a second live writer of a node fail at once).
///
/// ``loadBlobsFromCheckpoint(_:epoch:into:)`` finds each blob in whichever
/// node's file holds it, so a job restarted with another node list (8
/// writers, 4 or 1 readers) can load. There is no damaged-epoch fallback:
/// a resume epoch that fails to load stops the run with the load error.
///
/// Thread safety: the methods may be called from any thread; one save runs at a time.
public final class DistributedCheckpointManager: CheckpointManaging, @unchecked Sendable {
    /// Whether a save waits for its epoch to complete on every node.
    public enum CompletionWait: Sendable, Equatable {
        /// Return once this process's part is published (the epoch completes when the last rank publishes).
        case none
        /// Wait up to this long for the completion record; then the save throws.
        case upTo(Duration)
    }

    public let dbPrefix: String
    public let dbType: String
    public let format: CheckpointFormat
    /// This process's nodes.
    public let localNodes: [String]
    /// Every node of the job, in order.
    public let allNodes: [String]
    /// This start of the job (see the type's documentation).
    public let runID: String
    /// What the process that completes an epoch keeps of the complete epochs.
    public let retention: RetentionPolicy
    public let completionWait: CompletionWait
    public let options: CheckpointOptions

    private let lock = PThreadLock()
    private let saveMutex = PThreadLock()
    private let background = BackgroundSave(label: "checkpoint.distributed.async-save")
    private let managers: [CheckpointManager]
    private var extraWorkspaces: [String: Workspace] = [:]
    private var pathType: String?
    private var resumedFrom: Int?
    private var observer: (@Sendable (DistributedCommitEvent) -> Void)?
    private var timings: CommitTimings?

    /// How long the last ``writeCheckpointMetadata(epoch:metric:)`` took, by phase.
    public struct CommitTimings: Sendable, Equatable {
        /// Publishing this process's node records (nanoseconds).
        public var publishNanoseconds: UInt64
        /// Listing the records and, when this process completed the epoch,
        /// the completion record, retention and cleanup (nanoseconds); no waiting.
        public var completeNanoseconds: UInt64
        /// Waiting for the completion (``CompletionWait/upTo(_:)``), nanoseconds.
        public var waitNanoseconds: UInt64
    }

    /// A manager for `nodes` of the job whose nodes are `allNodes`.
    ///
    /// - Parameters:
    ///   - dbPrefix: the directory (or object-store prefix) shared by every process.
    ///   - nodes: this process's nodes (at least one, each in `allNodes`).
    ///   - allNodes: every node of the job, the same list in every process.
    ///   - runID: this start of the job: the same in every process, new at every restart.
    ///   - retention: what to keep of complete epochs (default: everything).
    ///   - completionWait: whether a save waits for the epoch to complete (default: no).
    ///   - dbType: the file format of the node files (`"ckpt"`, `"safetensors"`, `"minidb"`).
    ///   - options: the node managers' options (storage, encoding, durability, incremental saves).
    /// - Throws: `CheckpointError.Code.invalidField` for a bad
    ///   prefix, node name, run id or `dbType`, a node twice, or a node outside `allNodes`.
    public init(dbPrefix: String, nodes: [String], allNodes: [String], runID: String, dbType: String = CheckpointFormat.container.rawValue,
                retention: RetentionPolicy = .keepAll, completionWait: CompletionWait = .none,
                options: CheckpointOptions = CheckpointOptions()) throws(CheckpointError) {
        try CheckpointNaming.validate(dbPrefix: dbPrefix)
        try DistributedCommitLog.validate(runID: runID)
        for node in allNodes { try CheckpointNaming.validate(nodeName: node) }
        guard !nodes.isEmpty, Set(nodes).count == nodes.count, Set(allNodes).count == allNodes.count, Set(nodes).isSubset(of: allNodes) else {
            throw CheckpointError(.invalidField(field: "nodes", reason: "this process's nodes \(nodes) must be distinct, at least one, and among the job's nodes \(allNodes) (themselves distinct)"))
        }
        self.format = try CheckpointFormat(dbType: dbType)
        self.dbPrefix = dbPrefix
        self.dbType = dbType
        self.localNodes = nodes
        self.allNodes = allNodes
        self.runID = runID
        self.retention = retention
        self.completionWait = completionWait
        self.options = options
        var managers: [CheckpointManager] = []
        for node in nodes {
            managers.append(try CheckpointManager(dbPrefix: dbPrefix, nodeName: node, dbType: dbType, metadataHandler: nil, options: options))
        }
        self.managers = managers
    }

    /// The manager of rank `rank` of `worldSize`: node `nodeName(rank)` of
    /// nodes `nodeName(0)`…`nodeName(worldSize - 1)` (default `trainer_R`).
    public convenience init(dbPrefix: String, rank: Int, worldSize: Int, runID: String, nodeName: (Int) -> String = { "trainer_\($0)" },
                            dbType: String = CheckpointFormat.container.rawValue, retention: RetentionPolicy = .keepAll,
                            completionWait: CompletionWait = .none, options: CheckpointOptions = CheckpointOptions()) throws(CheckpointError) {
        guard worldSize >= 1, (0..<worldSize).contains(rank) else {
            throw CheckpointError(.invalidField(field: "rank", reason: "rank \(rank) is not in 0..<\(worldSize)"))
        }
        try self.init(dbPrefix: dbPrefix, nodes: [nodeName(rank)], allNodes: (0..<worldSize).map(nodeName), runID: runID, dbType: dbType,
                      retention: retention, completionWait: completionWait, options: options)
    }

    /// Called (on the saving thread) for each ``DistributedCommitEvent``; for monitoring and tests.
    public var commitObserver: (@Sendable (DistributedCommitEvent) -> Void)? {
        get { lock.locked { observer } }
        set { lock.locked { observer = newValue } }
    }

    /// The phases of the last ``writeCheckpointMetadata(epoch:metric:)``; nil before one.
    public var lastCommitTimings: CommitTimings? { lock.locked { timings } }

    /// The per-node managers of this process, in node order.
    public var nodeManagers: [CheckpointManager] { managers }

    private var storage: any CheckpointStorage {
        get throws(CheckpointError) {
            let type = lock.locked { pathType }
            if type == nil, let storage = options.storage { return storage }
            return try CheckpointStorageRegistry.storage(for: type, path: dbPrefix)
        }
    }

    /// True when `error` is an object store's "no such key" (HTTP 404).
    static func isMissingObject(_ error: CheckpointError) -> Bool {
        if case let .objectStore(_, _, _, status, _, _) = error.code { return status == 404 }
        return false
    }

    private func commitLog() throws(CheckpointError) -> DistributedCommitLog {
        DistributedCommitLog(storage: try storage, dbPrefix: dbPrefix, durability: options.writer.durability)
    }

    private func emit(_ event: DistributedCommitEvent) {
        commitObserver?(event)
    }

    /// Checks that `nodes` (from ``JobRunner``: the job's nodes to checkpoint) are this process's nodes.
    private func checkNodes(_ nodes: [String]?) throws(CheckpointError) {
        guard let nodes, !nodes.isEmpty else { return }
        guard Set(nodes) == Set(localNodes) else {
            throw CheckpointError(.invalidField(field: "nodes", reason: "this process checkpoints nodes \(localNodes), not \(nodes): give each process a Job whose nodes are its own"))
        }
    }

    // MARK: CheckpointManaging

    /// The workspace of `node` (a local node's manager's; another node's, created empty on first use).
    public func workspace(forNode node: String) -> Workspace {
        if let manager = managers.first(where: { $0.nodeName == node }) { return manager.workspace }
        return lock.locked {
            if let workspace = extraWorkspaces[node] { return workspace }
            let workspace = Workspace()
            extraWorkspaces[node] = workspace
            return workspace
        }
    }

    public func checkpointPaths(epoch: Int) -> [(node: String, path: String)] {
        managers.map { ($0.nodeName, $0.dbName(epoch: epoch)) }
    }

    /// Checks `nodes` (empty, or this process's nodes) and remembers the path type.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for other nodes.
    public func setParams(nodes: [String], pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        try checkNodes(nodes)
        if let pathType { lock.locked { self.pathType = pathType } }
        for manager in managers { try manager.setParams(pathPrefix: pathPrefix, pathType: pathType) }
    }

    /// Creates `dbPrefix` and its `distributed/` directory, removes what
    /// killed writes of this process's nodes left, and initializes each
    /// node (see ``CheckpointManager/initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``).
    public func initialize(nodes: [String]? = nil, retrieveFromEpoch: Int? = nil, pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        try checkNodes(nodes)
        let log = try commitLog()
        try log.storage.createDirectory(log.directory, durability: options.writer.durability)
        for node in localNodes { _ = log.storage.removeAbandonedWrites(in: log.directory, targetPrefix: node + ".") }
        try parallelForEachIndex(managers.count) { (index) throws(CheckpointError) in
            let manager = managers[index]
            try manager.initialize(nodes: [manager.nodeName], retrieveFromEpoch: retrieveFromEpoch, pathPrefix: pathPrefix, pathType: pathType)
        }
    }

    /// Takes each local node's writer lock (see ``CheckpointManager/acquireWriterLock(nodes:)``).
    public func acquireWriterLock(nodes: [String]) throws(CheckpointError) {
        try checkNodes(nodes)
        for manager in managers { try manager.acquireWriterLock() }
    }

    /// Gives up the writer locks (after a save in flight finished).
    public func releaseWriterLock() {
        background.waitForCompletion()
        for manager in managers { manager.releaseWriterLock() }
    }

    /// The epoch to resume from, the same in every process of the job:
    /// `userEpoch` when given; else the newest epoch with a completion
    /// record whose node files (every node the record lists) are complete
    /// checkpoints; nil when there is none.
    ///
    /// An epoch whose node records of one run cover all its nodes but whose
    /// completion record is missing (the last rank was killed between its
    /// record and the completion) is completed first, so every process sees
    /// the same set. Remembers the answer: retention never drops it while this run lasts.
    public func getResumeFromEpochID(userEpoch: Int? = nil) throws(CheckpointError) -> Int? {
        if let userEpoch {
            lock.locked { resumedFrom = userEpoch }
            return userEpoch
        }
        let log = try commitLog()
        var listing = log.list()
        for epoch in listing.records.keys.sorted() where !listing.completed.contains(epoch) {
            if try completeFromRecords(epoch: epoch, run: nil, listing: listing, log: log, retain: false) { listing.completed.insert(epoch) }
        }
        for epoch in listing.completed.sorted(by: >) {
            guard let record = try? log.completion(epoch: epoch) else { continue }
            let intact = record.nodes.allSatisfy { node in
                log.storage.isCompleteCheckpoint(CheckpointNaming.dbName(epoch: epoch, nodeName: node, dbPrefix: dbPrefix), format: format)
            }
            if intact {
                lock.locked { resumedFrom = epoch }
                return epoch
            }
        }
        return nil
    }

    /// Loads every local node's blobs of `epoch` (all or nothing).
    ///
    /// - Throws: `CheckpointError.Code.checkpointNotFound` when
    ///   `epoch` has no completion record (naming it); the node managers' errors.
    public func load(epoch: Int, pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        if pathPrefix == nil { try requireComplete(epoch) }
        let staged = ParallelSlots<[(name: String, tensor: Tensor)]>(count: managers.count)
        try parallelForEachIndex(managers.count) { (index) throws(CheckpointError) in
            staged.set(index, try managers[index].readForLoad(epoch: epoch, pathPrefix: pathPrefix, pathType: pathType))
        }
        for (index, manager) in managers.enumerated() { manager.workspace.setBlobs(staged.get(index) ?? []) }
    }

    private func requireComplete(_ epoch: Int) throws(CheckpointError) {
        let log = try commitLog()
        guard try log.completion(epoch: epoch) != nil else {
            throw CheckpointError(.checkpointNotFound(epoch: epoch), path: log.path(DistributedCommitLog.completionName(epoch: epoch)))
        }
    }

    /// Commits every local node's file of `epoch` (phase 1's files; nodes in
    /// parallel). The records are published by ``writeCheckpointMetadata(epoch:metric:)``,
    /// which ``JobRunner`` calls next. Before writing, completion records of
    /// `epoch` and later epochs left by another run are removed: this run is
    /// rewriting them (it resumed from an older epoch), so they no longer hold.
    ///
    /// - Throws: the first node's error (in node order); the epoch is then not
    ///   complete and its records must not be published.
    public func save(epoch: Int) throws(CheckpointError) {
        try saveMutex.locked { () throws(CheckpointError) in
            try waitUntilFinished()
            let snapshots = try takeSnapshots()
            for manager in managers { try manager.acquireWriterLock() }
            try writeFiles(snapshots, epoch: epoch)
        }
    }

    /// As ``save(epoch:)`` then ``writeCheckpointMetadata(epoch:metric:)``, in
    /// the background once the snapshots are taken (see ``CheckpointManager/saveAsync(epoch:metric:)``).
    public func saveAsync(epoch: Int, metric: Double? = nil) throws(CheckpointError) {
        try saveMutex.locked { () throws(CheckpointError) in
            try waitUntilFinished()
            let snapshots = try takeSnapshots()
            for manager in managers { try manager.acquireWriterLock() }
            background.start { [self] () throws(CheckpointError) in
                try writeFiles(snapshots, epoch: epoch)
                try writeCheckpointMetadata(epoch: epoch, metric: metric)
            }
        }
    }

    /// Waits for a ``saveAsync(epoch:metric:)`` in flight; throws its error, if any (once).
    public func waitUntilFinished() throws(CheckpointError) {
        try background.wait()
    }

    private func takeSnapshots() throws(CheckpointError) -> [[(name: String, tensor: Tensor)]] {
        var snapshots: [[(name: String, tensor: Tensor)]] = []
        for manager in managers { snapshots.append(try manager.snapshotForSave()) }
        return snapshots
    }

    private func writeFiles(_ snapshots: [[(name: String, tensor: Tensor)]], epoch: Int) throws(CheckpointError) {
        let log = try commitLog()
        let listing = log.list()
        // This run rewrites `epoch` and later ones (it resumed from an older epoch, or these never
        // completed): another run's records of them no longer hold. Read before removing: this
        // run's own records may be newer than this process's view.
        for stale in listing.completed where stale >= epoch {
            if let record = try? log.completion(epoch: stale), record.runID != runID {
                try log.remove(DistributedCommitLog.completionName(epoch: stale))
            }
        }
        for (stale, runs) in listing.records where stale >= epoch {
            for (run, nodes) in runs where run != runID {
                for node in nodes { try log.remove(DistributedCommitLog.recordName(node: node, epoch: stale, runID: run)) }
            }
        }
        try parallelForEachIndex(managers.count) { (index) throws(CheckpointError) in
            try managers[index].write(snapshots[index], epoch: epoch)
        }
    }

    /// Phase 1 then phase 2 for `epoch`, whose files ``save(epoch:)`` committed:
    /// publishes each local node's record (with `metric`); then, if every
    /// node's record of this run exists, creates the completion record
    /// (create-if-absent) and, when this call created it, applies retention
    /// and removes earlier epochs that never completed. With
    /// ``CompletionWait/upTo(_:)``, then waits for the completion record.
    ///
    /// - Throws: storage errors; `CheckpointError.Code.invalidState`
    ///   when the wait times out (naming the nodes whose records are missing).
    public func writeCheckpointMetadata(epoch: Int, metric: Double? = nil) throws(CheckpointError) {
        let log = try commitLog()
        let resumed = lock.locked { resumedFrom }
        let start = ContinuousClock.now
        for node in localNodes {
            try log.publish(.init(epoch: epoch, runID: runID, node: node, nodes: allNodes, metric: metric, resumedFrom: resumed))
        }
        let published = ContinuousClock.now
        emit(.published(epoch: epoch))
        var complete = try tryComplete(epoch: epoch, log: log)
        let attempted = ContinuousClock.now
        if !complete, case let .upTo(timeout) = completionWait {
            complete = try waitForCompletion(epoch: epoch, timeout: timeout)
        }
        let end = ContinuousClock.now
        lock.locked {
            timings = CommitTimings(publishNanoseconds: Self.nanoseconds(published - start), completeNanoseconds: Self.nanoseconds(attempted - published),
                                    waitNanoseconds: Self.nanoseconds(end - attempted))
        }
        if !complete, case let .upTo(timeout) = completionWait {
            let present = log.list().records[epoch]?[runID] ?? []
            let missing = allNodes.filter { !present.contains($0) }
            throw CheckpointError(.invalidState(reason: "epoch \(epoch) did not complete within \(timeout): no record yet from node(s) \(missing) (run \(runID)); it is not a complete checkpoint"),
                                  path: log.directory)
        }
    }

    /// Whether `epoch` has its completion record, i.e. every node committed it.
    public func isEpochComplete(_ epoch: Int) throws(CheckpointError) -> Bool {
        try commitLog().completion(epoch: epoch) != nil
    }

    /// Waits up to `timeout` for `epoch`'s completion record (polling, a
    /// listing each time, from 1 ms up to every 10 ms), completing the epoch itself when every
    /// node's record of this run is there but nobody completed it (the last
    /// rank died just after its record). Returns whether it is complete.
    public func waitForCompletion(epoch: Int, timeout: Duration) throws(CheckpointError) -> Bool {
        let log = try commitLog()
        let deadline = ContinuousClock.now + timeout
        var pause: UInt64 = 1_000_000
        while true {
            if try tryComplete(epoch: epoch, log: log) { return true }
            if ContinuousClock.now >= deadline { return false }
            pauseThread(nanoseconds: pause)
            pause = min(pause * 2, 10_000_000)
        }
    }

    /// True when `epoch` is complete; creates its completion record when
    /// every node's record of this run exists (and then, if this call
    /// created it, retention and cleanup).
    private func tryComplete(epoch: Int, log: DistributedCommitLog) throws(CheckpointError) -> Bool {
        let listing = log.list()
        if listing.completed.contains(epoch) {
            emit(.completed(epoch: epoch, byThisProcess: false))
            return true
        }
        guard listing.records[epoch]?[runID].map({ Set(allNodes).isSubset(of: $0) }) == true else { return false }
        return try completeFromRecords(epoch: epoch, run: runID, listing: listing, log: log, retain: true)
    }

    /// Creates `epoch`'s completion record from the node records of a run
    /// (`run`, or any, smallest id first) that cover every node that run
    /// listed; false when no run's do. When this call created it and
    /// `retain`, applies retention and cleanup.
    private func completeFromRecords(epoch: Int, run wantedRun: String?, listing: DistributedCommitLog.Listing, log: DistributedCommitLog,
                                     retain: Bool) throws(CheckpointError) -> Bool {
        for (run, present) in (listing.records[epoch] ?? [:]).sorted(by: { $0.key < $1.key }) where wantedRun == nil || run == wantedRun {
            guard let node = present.sorted().first, let sample = log.nodeRecord(node: node, epoch: epoch, runID: run),
                  Set(sample.nodes).isSubset(of: present) else { continue }
            // Every node's record of that run: the metric is the first one given, in node order.
            var metric: Double?
            for other in sample.nodes where metric == nil { metric = log.nodeRecord(node: other, epoch: epoch, runID: run)?.metric }
            let created = try log.complete(.init(epoch: epoch, runID: run, nodes: sample.nodes, metric: metric,
                                                 resumedFrom: sample.resumedFrom, completedBy: localNodes[0]))
            emit(.completed(epoch: epoch, byThisProcess: created))
            if created && retain { cleanUp(after: epoch, log: log) }
            return true
        }
        return false
    }

    // MARK: Retention and cleanup (only the process that completed an epoch)

    /// After this process completed `epoch`: completes earlier epochs whose
    /// records are all there, removes earlier epochs that never completed,
    /// applies retention to the complete epochs, and removes the node
    /// records of complete epochs up to `epoch` (the completion record
    /// replaces them). Errors are not thrown: a failed removal leaves a
    /// stray file that a later completion removes.
    private func cleanUp(after epoch: Int, log: DistributedCommitLog) {
        var listing = log.list()
        let storage = log.storage
        // Earlier epochs: complete ones whose last rank died before completing them; the rest never will
        // (every node has published `epoch`, so every node is done with each earlier one).
        for earlier in Set(listing.records.keys).sorted() where earlier < epoch && !listing.completed.contains(earlier) {
            if (try? completeFromRecords(epoch: earlier, run: runID, listing: listing, log: log, retain: false)) == true { listing.completed.insert(earlier) }
        }
        let knownNodes = Set(allNodes)
        var nodeFiles: [Int: [String]] = [:]
        for name in storage.listFiles(in: dbPrefix) where !name.hasPrefix(".") {
            guard let dot = name.lastIndex(of: "."), let fileEpoch = DistributedCommitLog.parseEpoch(name[name.index(after: dot)...]) else { continue }
            if knownNodes.contains(String(name[..<dot])) { nodeFiles[fileEpoch, default: []].append(name) }
        }
        let abandoned = Set(listing.records.keys).union(nodeFiles.keys).filter { $0 < epoch && !listing.completed.contains($0) }
        for stale in abandoned.sorted() {
            for name in nodeFiles[stale] ?? [] { try? storage.removeCheckpoint(name, in: dbPrefix) }
            for name in listing.recordNames[stale] ?? [] { try? log.remove(name) }
            emit(.abandoned(epoch: stale))
        }
        // Records of complete epochs up to this one are no longer needed.
        for done in listing.completed where done <= epoch {
            for name in listing.recordNames[done] ?? [] { try? log.remove(name) }
        }
        guard !retention.keepsEverything else { return }
        var records: [DistributedCommitLog.CompletionRecord] = []
        for complete in listing.completed.sorted() {
            if let record = try? log.completion(epoch: complete) { records.append(record) }
        }
        guard let newest = records.last?.epoch else { return }
        var protected: Set<Int> = [epoch, newest]
        if let resumed = lock.locked({ resumedFrom }) { protected.insert(resumed) }
        for record in records where record.epoch == epoch { if let resumed = record.resumedFrom { protected.insert(resumed) } }
        let keep = retention.epochsToKeep(records.map { ($0.epoch, $0.metric) }, protected: protected)
        for record in records where !keep.contains(record.epoch) {
            // The completion record first: no reader ever finds it without its files.
            guard (try? log.remove(DistributedCommitLog.completionName(epoch: record.epoch))) != nil else { continue }
            for node in record.nodes { try? storage.removeCheckpoint(node + "." + String(record.epoch), in: dbPrefix) }
            for name in listing.recordNames[record.epoch] ?? [] { try? log.remove(name) }
            emit(.dropped(epoch: record.epoch))
        }
    }

    /// The complete epochs (those with a completion record), oldest first.
    public func completeEpochs() throws(CheckpointError) -> [Int] {
        try commitLog().list().completed.sorted()
    }

    // MARK: Loading with any node list

    /// Loads the blobs of `blobNames` that `epoch` has into `workspace`
    /// (default: the first local node's), each from whichever node's file
    /// holds it, whatever node list wrote the epoch: every node file the
    /// completion record lists is opened (its name index only) and payloads
    /// are read only for the requested blobs. A name in several files is
    /// read from the first node in the record's order; names no file has
    /// are skipped. All or nothing.
    ///
    /// - Throws: `CheckpointError.Code.checkpointNotFound` when
    ///   `epoch` has no completion record; the readers' errors (naming file and blob).
    public func loadBlobsFromCheckpoint(_ blobNames: [String], epoch: Int, into workspace: Workspace? = nil) throws(CheckpointError) {
        let log = try commitLog()
        guard let record = try log.completion(epoch: epoch) else {
            throw CheckpointError(.checkpointNotFound(epoch: epoch), path: log.path(DistributedCommitLog.completionName(epoch: epoch)))
        }
        var wanted = blobNames
        var loaded: [(name: String, tensor: Tensor)] = []
        for node in record.nodes where !wanted.isEmpty {
            let path = CheckpointNaming.dbName(epoch: epoch, nodeName: node, dbPrefix: dbPrefix)
            let reader: any CheckpointFileReading
            do throws(CheckpointError) { reader = try log.storage.openCheckpoint(path, format: format) } catch {
                if AtomicFile.isMissingFile(error) || Self.isMissingObject(error) { throw CheckpointError(.checkpointNotFound(epoch: epoch), path: path) }
                throw error
            }
            let here = wanted.filter { reader.hasBlob($0) }
            guard !here.isEmpty else { continue }
            loaded += try CheckpointManager.readTensors(here, from: reader, path: path, allowMissing: false)
            let found = Set(here.map { BlobName($0) })
            wanted.removeAll { found.contains(BlobName($0)) }
        }
        (workspace ?? managers[0].workspace).setBlobs(loaded)
    }

    /// False when `epoch` is not complete; else loads `blobNames` (see
    /// ``loadBlobsFromCheckpoint(_:epoch:into:)``) and returns true. `nodes` is ignored.
    public func loadBlobsLocally(nodes: [String], blobNames: [String], epoch: Int, into workspace: Workspace) throws(CheckpointError) -> Bool {
        guard try isEpochComplete(epoch) else { return false }
        try loadBlobsFromCheckpoint(blobNames, epoch: epoch, into: workspace)
        return true
    }

    /// The blob lists of this process's nodes, in node order (see ``CheckpointManager/blobList()``).
    public func blobList() throws(CheckpointError) -> [String] {
        var names: [String] = []
        for manager in managers { names += try manager.blobList() }
        return names
    }

    /// True only when `epoch` is complete for the whole job: it has a
    /// completion record and every node file it lists is a complete
    /// checkpoint (``cpAccessible(epoch:)``); false on any error.
    public func checkDBExists(epoch: Int) -> Bool {
        (try? cpAccessible(epoch: epoch)) ?? false
    }

    /// The checkpoint file of `nodeName` (any node of the job, not only this
    /// process's) for `epoch`; nil for a node the job does not have.
    public func dbName(nodeName: String, epoch: Int) -> String? {
        guard allNodes.contains(nodeName) else { return nil }
        if let manager = managers.first(where: { $0.nodeName == nodeName }) { return manager.dbName(epoch: epoch) }
        return CheckpointNaming.dbName(epoch: epoch, nodeName: nodeName, dbPrefix: dbPrefix)
    }

    /// This process's nodes' save and load statistics (see ``CheckpointManager/collectCheckpointStats(into:)``).
    public func collectCheckpointStats(into stats: inout [String: UInt64]) {
        for manager in managers { manager.collectCheckpointStats(into: &stats) }
    }

    // MARK: Metadata

    /// No handler: stats are not reported.
    public func reportCheckpointStats(action: String) {}

    /// With `epoch` nil: whether `dbPrefix` is writable. With an epoch:
    /// whether it has a completion record and every node file it lists is complete.
    public func cpAccessible(epoch: Int? = nil) throws(CheckpointError) -> Bool {
        let log = try commitLog()
        guard let epoch else { return log.storage.isAccessible(directory: dbPrefix) }
        guard let record = try log.completion(epoch: epoch) else { return false }
        return record.nodes.allSatisfy { node in
            log.storage.isCompleteCheckpoint(CheckpointNaming.dbName(epoch: epoch, nodeName: node, dbPrefix: dbPrefix), format: format)
        }
    }

    // MARK: Helpers

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

import BlobCodec
import Dispatch

/// Checkpoints a job that runs on several nodes: one ``CheckpointManager``
/// (and one ``Workspace``) per node, Caffe2's `MultiNodeCheckpointManager`.
///
///     let manager = try MultiNodeCheckpointManager(dbPrefix: "/ckpt/run1", metadataHandler: DurableMetadataHandler())
///     try manager.initialize(nodes: ["trainer_0", "trainer_1"])
///     try manager.save(epoch: 3)                      // both nodes' files, in parallel
///     try manager.writeCheckpointMetadata(epoch: 3)   // only after every node committed
///
/// An epoch is complete only when every node's file is committed: ``save(epoch:)``
/// throws if any node's save failed, and ``JobRunner`` writes the metadata
/// only after it returned.
public final class MultiNodeCheckpointManager: CheckpointManaging, @unchecked Sendable {
    /// The directory of the checkpoint files (Caffe2's `db_prefix`).
    public let dbPrefix: String
    /// The file format's name as given (`"ckpt"` or `"safetensors"`).
    public let dbType: String
    /// Records complete epochs and chooses where to resume; nil: no metadata is kept.
    public let metadataHandler: (any CheckpointMetadataHandler)?
    /// The options the manager was created with.
    public let options: CheckpointOptions

    private let lock = PThreadLock()
    private let saveMutex = PThreadLock()
    private var managers: [(node: String, manager: CheckpointManager)]?
    private var workspaces: [String: Workspace] = [:]
    private var pathPrefix: String?
    private var pathType: String?
    /// Whether ``setParams(nodes:pathPrefix:pathType:)`` was called (the handler has its parameters).
    private var paramsSet = false

    private let background = BackgroundSave(label: "checkpoint.multinode.async-save")

    /// A manager for the nodes given to ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``, one workspace each.
    ///
    /// - Throws: as ``CheckpointManager/init(dbPrefix:nodeName:dbType:metadataHandler:workspace:options:)``
    ///   for `dbPrefix` and `dbType`.
    public init(dbPrefix: String, dbType: String = CheckpointFormat.container.rawValue,
                metadataHandler: (any CheckpointMetadataHandler)? = nil, options: CheckpointOptions = CheckpointOptions()) throws(CheckpointError) {
        try CheckpointNaming.validate(dbPrefix: dbPrefix)
        _ = try CheckpointFormat(dbType: dbType)
        self.dbPrefix = dbPrefix
        self.dbType = dbType
        self.metadataHandler = metadataHandler
        self.options = options
    }

    /// The node managers, in node order; nil before ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``.
    public var nodeManagers: [(node: String, manager: CheckpointManager)]? { lock.locked { managers } }

    /// The workspace of `node`, created empty on first use.
    public func workspace(forNode node: String) -> Workspace {
        lock.locked {
            if let workspace = workspaces[node] { return workspace }
            let workspace = Workspace()
            workspaces[node] = workspace
            return workspace
        }
    }

    /// Caffe2's `get_ckpt_db_name`: the file of `nodeName`'s checkpoint of
    /// `epoch`, or nil when `nodeName` is not one of the nodes this manager
    /// was initialized with (or before ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``),
    /// as Caffe2 returns None.
    public func dbName(nodeName: String, epoch: Int) -> String? {
        guard let manager = nodeManagers?.first(where: { $0.node == nodeName })?.manager else { return nil }
        return manager.dbName(epoch: epoch)
    }

    /// Every node's blob list, in node order (see ``CheckpointManager/blobList()``).
    ///
    /// - Throws: `CheckpointError.Code.invalidState` before ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``.
    public func blobList() throws(CheckpointError) -> [String] {
        var names: [String] = []
        for (_, manager) in try requireManagers() { names += try manager.blobList() }
        return names
    }

    /// True only when every node's checkpoint of `epoch` is complete (false before
    /// ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``, when there are no nodes).
    public func checkDBExists(epoch: Int) -> Bool {
        guard let managers = nodeManagers, !managers.isEmpty else { return false }
        return managers.allSatisfy { $0.manager.checkDBExists(epoch: epoch) }
    }

    /// Loads the blobs of `blobNames` that each node's checkpoint of `epoch`
    /// has, node by node, into `workspace` (nil: each node's own workspace);
    /// names a node's file lacks are skipped (see ``CheckpointManager/loadBlobsFromCheckpoint(_:epoch:into:)``).
    ///
    /// - Throws: `CheckpointError.Code.invalidState` before
    ///   ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``; a node's
    ///   missing file or a damaged blob.
    public func loadBlobsFromCheckpoint(_ blobNames: [String], epoch: Int, into workspace: Workspace? = nil) throws(CheckpointError) {
        for (_, manager) in try requireManagers() {
            try manager.loadBlobsFromCheckpoint(blobNames, epoch: epoch, into: workspace)
        }
    }

    /// Adds every node's last timing (database path → nanoseconds) to `stats`.
    public func collectCheckpointStats(into stats: inout [String: UInt64]) {
        for (_, manager) in nodeManagers ?? [] { manager.collectCheckpointStats(into: &stats) }
    }

    /// The files of `epoch`: one per node, with its path.
    public func checkpointPaths(epoch: Int) -> [(node: String, path: String)] {
        (nodeManagers ?? []).map { ($0.node, $0.manager.dbName(epoch: epoch)) }
    }

    /// Creates the node managers if there are none yet, else checks that `nodes` are theirs.
    @discardableResult
    private func makeManagers(_ nodes: [String]) throws(CheckpointError) -> (created: Bool, managers: [(node: String, manager: CheckpointManager)]) {
        if let existing = nodeManagers {
            guard existing.map(\.node) == nodes else {
                throw CheckpointError(.invalidState(reason: "MultiNodeCheckpointManager was initialized for nodes \(existing.map(\.node)), not \(nodes)"))
            }
            return (false, existing)
        }
        guard Set(nodes).count == nodes.count else {
            throw CheckpointError(.invalidField(field: "nodes", reason: "duplicate node names in \(nodes)"))
        }
        var created: [(node: String, manager: CheckpointManager)] = []
        for node in nodes {
            created.append((node, try CheckpointManager(dbPrefix: dbPrefix, nodeName: node, dbType: dbType, metadataHandler: nil,
                                                        workspace: workspace(forNode: node), options: options)))
        }
        let (prefix, type) = lock.locked { (pathPrefix, pathType) }
        for (_, manager) in created { try manager.setParams(pathPrefix: prefix, pathType: type) }
        lock.locked { managers = created }
        return (true, created)
    }

    private func requireManagers() throws(CheckpointError) -> [(node: String, manager: CheckpointManager)] {
        guard let managers = nodeManagers else {
            throw CheckpointError(.invalidState(reason: "MultiNodeCheckpointManager is not initialized: call initialize(nodes:) first"))
        }
        return managers
    }

    // MARK: Caffe2's API

    /// Creates one manager per node and initializes each (see
    /// ``CheckpointManager/initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``:
    /// `dbPrefix` is created if missing). Calls ``setParams(nodes:pathPrefix:pathType:)``
    /// with `nodes` first if nobody did. A second call with the same nodes does nothing.
    ///
    /// - Throws: `CheckpointError.Code.invalidState` when called
    ///   again with different nodes; the node managers' errors.
    public func initialize(nodes: [String]?, retrieveFromEpoch: Int? = nil, pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        let nodes = nodes ?? []
        if metadataHandler != nil && !lock.locked({ paramsSet }) { try setParams(nodes: nodes) }
        let alreadyInitialized = nodeManagers.map { $0.allSatisfy { (try? $0.manager.blobList()) != nil } } ?? false
        let (created, managers) = try makeManagers(nodes)
        if !created && alreadyInitialized { return }
        try forEachNode(managers) { (manager) throws(CheckpointError) in
            try manager.initialize(nodes: [manager.nodeName], retrieveFromEpoch: retrieveFromEpoch, pathPrefix: pathPrefix, pathType: pathType)
        }
    }

    /// Takes every node's writer lock until ``releaseWriterLock()`` (see
    /// ``CheckpointManager/acquireWriterLock(nodes:)``), creating the node
    /// managers for `nodes` if there are none yet. Without it, a save takes
    /// the locks for that save only.
    public func acquireWriterLock(nodes: [String]) throws(CheckpointError) {
        let (_, managers) = try makeManagers(nodes)
        for (_, manager) in managers { try manager.acquireWriterLock() }
    }

    /// Gives up every node's writer lock.
    public func releaseWriterLock() {
        background.waitForCompletion()
        for (_, manager) in nodeManagers ?? [] { manager.releaseWriterLock() }
    }

    /// Loads every node's blobs of `epoch`, nodes in parallel. All or nothing:
    /// the workspaces change only when every node's blobs were read and verified.
    public func load(epoch: Int, pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        let managers = try requireManagers()
        let staged = ParallelSlots<[(name: String, tensor: Tensor)]>(count: managers.count)
        try parallelForEachIndex(managers.count) { (index) throws(CheckpointError) in
            staged.set(index, try managers[index].manager.readForLoad(epoch: epoch, pathPrefix: pathPrefix, pathType: pathType))
        }
        for (index, (_, manager)) in managers.enumerated() { manager.workspace.setBlobs(staged.get(index) ?? []) }
    }

    /// Saves every node's blobs for `epoch`, nodes in parallel. Throws the
    /// first node's error (in node order) if any node failed; the epoch is
    /// then not complete and its metadata must not be written.
    public func save(epoch: Int) throws(CheckpointError) {
        try saveMutex.locked { () throws(CheckpointError) in
            try waitUntilFinished()
            let managers = try requireManagers()
            let snapshots = try takeSnapshots(managers)
            let heldForThisSave = try writerLocksForSave(managers)
            try withExtendedLifetime(heldForThisSave) { () throws(CheckpointError) in try write(snapshots, managers: managers, epoch: epoch) }
        }
    }

    /// The writer locks of the nodes whose manager does not hold its own
    /// (see ``CheckpointManager/acquireWriterLock(nodes:)``), taken for one
    /// save: released when the caller drops them.
    private func writerLocksForSave(_ managers: [(node: String, manager: CheckpointManager)]) throws(CheckpointError) -> [AnyObject] {
        var tokens: [AnyObject] = []
        for (_, manager) in managers {
            if let token = try manager.writerLockForSave() { tokens.append(token) }
        }
        return tokens
    }

    private func takeSnapshots(_ managers: [(node: String, manager: CheckpointManager)]) throws(CheckpointError) -> [[(name: String, tensor: Tensor)]] {
        var snapshots: [[(name: String, tensor: Tensor)]] = []
        for (_, manager) in managers { snapshots.append(try manager.snapshotForSave()) }
        return snapshots
    }

    private func write(_ snapshots: [[(name: String, tensor: Tensor)]], managers: [(node: String, manager: CheckpointManager)], epoch: Int) throws(CheckpointError) {
        try parallelForEachIndex(managers.count) { (index) throws(CheckpointError) in
            try managers[index].manager.write(snapshots[index], epoch: epoch)
        }
    }

    /// As ``CheckpointManager/saveAsync(epoch:metric:)``, for every node: the
    /// snapshots are taken before returning; the files, then the metadata,
    /// are written in the background.
    public func saveAsync(epoch: Int, metric: Double? = nil) throws(CheckpointError) {
        try saveMutex.locked { () throws(CheckpointError) in
            try waitUntilFinished()
            let managers = try requireManagers()
            let snapshots = try takeSnapshots(managers)
            let heldForThisSave = WriterLockHold(try writerLocksForSave(managers))
            background.start { [self] () throws(CheckpointError) in
                defer { heldForThisSave.release() }
                try write(snapshots, managers: managers, epoch: epoch)
                try writeCheckpointMetadata(epoch: epoch, metric: metric)
                reportCheckpointStats(action: "checkpoint_save")
            }
        }
    }

    /// Waits for a ``saveAsync(epoch:metric:)`` in flight; throws its error, if any (once).
    public func waitUntilFinished() throws(CheckpointError) {
        try background.wait()
    }

    /// Loads `blobNames` from every node's checkpoint of `epoch` into
    /// `workspace`, node by node (Caffe2's `load_blobs_locally`): stops and
    /// returns false at the first node whose checkpoint is not complete; a
    /// name present in several nodes ends with the last node's value; names
    /// no node has are skipped.
    public func loadBlobsLocally(nodes: [String], blobNames: [String], epoch: Int, into workspace: Workspace) throws(CheckpointError) -> Bool {
        let (_, managers) = try makeManagers(nodes)
        for (_, manager) in managers {
            guard manager.checkDBExists(epoch: epoch) else { return false }
            try manager.loadBlobsFromCheckpoint(blobNames, epoch: epoch, into: workspace)
        }
        return true
    }

    /// Reports every node's last timing to the handler as one `action`.
    public func reportCheckpointStats(action: String) {
        var stats: [String: UInt64] = [:]
        collectCheckpointStats(into: &stats)
        metadataHandler?.report(action: action, stats: stats)
    }

    /// Records `epoch` as complete (every node's file committed) with the metadata handler; retention may then delete older epochs.
    public func writeCheckpointMetadata(epoch: Int, metric: Double? = nil) throws(CheckpointError) {
        try metadataHandler?.write(epoch: epoch, metric: metric)
    }

    /// The handler's fallback from a resume epoch damaged on some node (nil without a handler).
    public func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int? {
        try metadataHandler?.fallBack(fromDamagedEpoch: epoch, reason: reason)
    }

    /// The epoch to resume from: the metadata handler's choice, or `userEpoch` when there is no handler.
    public func getResumeFromEpochID(userEpoch: Int? = nil) throws(CheckpointError) -> Int? {
        guard let metadataHandler else { return userEpoch }
        return try metadataHandler.lastEpoch(userEpoch: userEpoch)
    }

    /// Remembers the path prefix and type and passes them, with all node names, to the handler.
    public func setParams(nodes: [String], pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        for node in nodes { try CheckpointNaming.validate(nodeName: node) }
        let (prefix, type) = lock.locked { () -> (String?, String?) in
            if let pathPrefix { self.pathPrefix = pathPrefix }
            if let pathType { self.pathType = pathType }
            return (self.pathPrefix, self.pathType)
        }
        for (_, manager) in nodeManagers ?? [] { try manager.setParams(pathPrefix: prefix, pathType: type) }
        try metadataHandler?.setParams(dbPrefix: dbPrefix, dbType: dbType, nodeNames: nodes, pathPrefix: prefix, pathType: type)
        lock.locked { paramsSet = true }
    }

    /// Whether every node's file of `epoch` (the resume epoch when nil) exists and is complete.
    public func cpAccessible(epoch: Int? = nil) throws(CheckpointError) -> Bool {
        guard let metadataHandler else { return true }
        return try metadataHandler.cpAccessible(epoch: epoch)
    }

    /// Runs `body` for every manager in parallel and throws the first error in node order.
    private func forEachNode(_ managers: [(node: String, manager: CheckpointManager)], _ body: (CheckpointManager) throws(CheckpointError) -> Void) throws(CheckpointError) {
        try parallelForEachIndex(managers.count) { (index) throws(CheckpointError) in try body(managers[index].manager) }
    }

}

/// Runs `body(0..<count)` in parallel (`body(0)` inline when `count` is 1) and
/// throws the error of the lowest index that failed.
func parallelForEachIndex(_ count: Int, _ body: (Int) throws(CheckpointError) -> Void) throws(CheckpointError) {
    if count == 1 {
        try body(0)
        return
    }
    let errors = ParallelSlots<CheckpointError>(count: count)
    withoutActuallyEscaping(body) { body in
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: count) { index in
            do throws(CheckpointError) { try body(index) } catch { errors.set(index, error) }
        }
    }
    if let error = errors.first { throw error }
}

/// One result slot per parallel task, written from any thread.
final class ParallelSlots<Value>: @unchecked Sendable {
    private let lock = PThreadLock()
    private var slots: [Value?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: Value) { lock.locked { slots[index] = value } }
    func get(_ index: Int) -> Value? { lock.locked { slots[index] } }
    /// The value of the lowest index that has one.
    var first: Value? { lock.locked { slots.lazy.compactMap { $0 }.first } }
}

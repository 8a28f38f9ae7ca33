import BlobCodec
import Logging

/// Caffe2's checkpoint-manager surface, which ``JobRunner`` drives:
/// ``CheckpointManager`` (one node) and ``MultiNodeCheckpointManager`` both
/// provide it, so code written against the protocol works with either.
///
/// The requirements spell out every parameter; the protocol extension adds
/// Caffe2's defaults, so a call through `any CheckpointManaging` reads as in
/// Caffe2:
///
///     func resume(_ manager: any CheckpointManaging, epoch: Int) throws {
///         try manager.initialize(retrieveFromEpoch: epoch)   // nodes: nil, no path prefix or type
///         try manager.load(epoch: epoch)
///         if manager.checkDBExists(epoch: epoch + 1) { … }
///     }
public protocol CheckpointManaging: AnyObject {
    /// The workspace the job's steps for `node` run on.
    func workspace(forNode node: String) -> Workspace
    /// Gives the metadata handler its parameters: the nodes whose files make an epoch, and the path prefix and type (Caffe2's `set_params`).
    func setParams(nodes: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError)
    /// The epoch to resume from: the metadata handler's choice, or `userEpoch` without a handler; nil to start from scratch (Caffe2's `get_resume_from_epoch_id`).
    func getResumeFromEpochID(userEpoch: Int?) throws(CheckpointError) -> Int?
    /// Creates the checkpoint directory and fixes the blob list: the workspace's blobs, or the list stored in `retrieveFromEpoch`'s checkpoint (Caffe2's `init`).
    func initialize(nodes: [String]?, retrieveFromEpoch: Int?, pathPrefix: String?, pathType: String?) throws(CheckpointError)
    /// Caffe2's `blob_list`: the blobs a save writes (every node's, in node order).
    func blobList() throws(CheckpointError) -> [String]
    /// Loads every blob of the list from `epoch`'s checkpoint, verified; all or nothing (Caffe2's `load`).
    func load(epoch: Int, pathPrefix: String?, pathType: String?) throws(CheckpointError)
    /// Caffe2's `load_blobs_from_checkpoint` (`allow_incomplete`): the blobs of
    /// `blobNames` that `epoch`'s checkpoint has, into `workspace` (nil: the manager's).
    func loadBlobsFromCheckpoint(_ blobNames: [String], epoch: Int, into workspace: Workspace?) throws(CheckpointError)
    /// Caffe2's `check_db_exists`: true only when `epoch`'s checkpoint is complete (on every node).
    func checkDBExists(epoch: Int) -> Bool
    /// Caffe2's `get_ckpt_db_name`: the file of `nodeName`'s checkpoint of
    /// `epoch`, or nil when this manager has no such node (as Caffe2 returns None).
    func dbName(nodeName: String, epoch: Int) -> String?
    /// Saves the blob list as `epoch`'s checkpoint, committed atomically (Caffe2's `save`).
    func save(epoch: Int) throws(CheckpointError)
    /// Takes the exclusive right to save `nodes`' checkpoints under the prefix
    /// (held until released or deinit; without it, each save holds it for that save).
    func acquireWriterLock(nodes: [String]) throws(CheckpointError)
    /// Gives the writer lock up (after a save in flight finished).
    func releaseWriterLock()
    /// Records `epoch` as complete with the metadata handler (after every node's file committed; Caffe2's `write_checkpoint_metadata`).
    func writeCheckpointMetadata(epoch: Int, metric: Double?) throws(CheckpointError)
    /// After `epoch`'s checkpoint failed to load because it is damaged: the
    /// older epoch to resume from instead, with the damage recorded (see
    /// ``CheckpointMetadataHandler/fallBack(fromDamagedEpoch:reason:)``); nil when there is none.
    func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int?
    /// Whether checkpoints can be accessed: the store (`epoch` nil) or one epoch's files (Caffe2's `cp_accessible`).
    func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool
    /// Loads `blobNames` from the nodes' checkpoints of `epoch` into `workspace`; false when a file is missing (Caffe2's `load_blobs_locally`).
    func loadBlobsLocally(nodes: [String], blobNames: [String], epoch: Int, into workspace: Workspace) throws(CheckpointError) -> Bool
    /// Caffe2's `collect_checkpoint_stats`: adds the last action's timings (database path → nanoseconds).
    func collectCheckpointStats(into stats: inout [String: UInt64])
    /// Passes the timings of the last `action` (`checkpoint_save`, `checkpoint_load`…) to the metadata handler (Caffe2's `report_checkpoint_stats`).
    func reportCheckpointStats(action: String)
    /// The file of each node's checkpoint of `epoch` (for uploads).
    func checkpointPaths(epoch: Int) -> [(node: String, path: String)]
}

extension CheckpointManaging {
    /// Managers that keep no record of complete epochs have no fallback.
    public func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int? { nil }

    // Caffe2's default arguments, for calls through the protocol.

    /// `set_params(nodes)`: no path prefix or type.
    public func setParams(nodes: [String]) throws(CheckpointError) { try setParams(nodes: nodes, pathPrefix: nil, pathType: nil) }
    /// `get_resume_from_epoch_id()`: the handler's choice.
    public func getResumeFromEpochID() throws(CheckpointError) -> Int? { try getResumeFromEpochID(userEpoch: nil) }
    /// `init(nodes=None, retrieve_from_epoch=None)`: no path prefix or type.
    public func initialize(nodes: [String]? = nil, retrieveFromEpoch: Int? = nil) throws(CheckpointError) {
        try initialize(nodes: nodes, retrieveFromEpoch: retrieveFromEpoch, pathPrefix: nil, pathType: nil)
    }
    /// `load(epoch)`: no path prefix or type.
    public func load(epoch: Int) throws(CheckpointError) { try load(epoch: epoch, pathPrefix: nil, pathType: nil) }
    /// `load_blobs_from_checkpoint(blob_names, epoch)`: into the manager's workspace(s).
    public func loadBlobsFromCheckpoint(_ blobNames: [String], epoch: Int) throws(CheckpointError) {
        try loadBlobsFromCheckpoint(blobNames, epoch: epoch, into: nil)
    }
    /// `write_checkpoint_metadata(epoch)`: no metric.
    public func writeCheckpointMetadata(epoch: Int) throws(CheckpointError) { try writeCheckpointMetadata(epoch: epoch, metric: nil) }
    /// `cp_accessible()`: the store as a whole.
    public func cpAccessible() throws(CheckpointError) -> Bool { try cpAccessible(epoch: nil) }
}

/// Options shared by the checkpoint managers.
public struct CheckpointOptions: Sendable {
    /// Which blobs a save writes.
    public enum BlobListMode: Sendable, Equatable {
        /// Caffe2's: the list fixed by `initialize()`. Blobs added to the
        /// workspace later are **not saved**; the first save that sees one
        /// logs a warning naming it (see ``CheckpointManager/unsavedBlobNames``).
        case fixedAtInitialize
        /// Every blob in the workspace at each save (the list is taken again
        /// at every save; a load reads the list stored in the epoch's file).
        case relistedAtEverySave
    }

    /// How files are written: codec, alignment, durability. The default is
    /// uncompressed with ``Durability/full`` (file and directory fsync), so a
    /// checkpoint reported complete survives a power cut.
    public var writer: WriterOptions
    /// The storage for `pathType` nil (default: the registry's `"local"`).
    public var storage: (any CheckpointStorage)?
    /// Which blobs a save writes (default: Caffe2's fixed list).
    public var blobList: BlobListMode
    /// Where the managers log warnings (blobs left out of a save).
    public var logger: Logger
    /// Incremental saves (only changed blobs written, references for the
    /// rest; container format only), or nil for full saves (the default).
    public var incremental: IncrementalOptions? = nil

    /// Options; the default writer syncs every checkpoint (``Durability/full``).
    public init(writer: WriterOptions = WriterOptions(durability: .full), storage: (any CheckpointStorage)? = nil,
                blobList: BlobListMode = .fixedAtInitialize, logger: Logger = Logger(label: "checkpoint.CheckpointManager")) {
        self.writer = writer
        self.storage = storage
        self.blobList = blobList
        self.logger = logger
    }
}

/// Saves and loads one node's workspace at epoch boundaries: Caffe2's
/// `CheckpointManager`, on the container format.
///
///     let manager = try CheckpointManager(dbPrefix: "/ckpt/run1", nodeName: "trainer_0",
///                                         metadataHandler: DurableMetadataHandler(), workspace: workspace)
///     try manager.initialize()           // creates /ckpt/run1; the blob list: every blob in the workspace now
///     try manager.save(epoch: 1)         // /ckpt/run1/trainer_0.1, committed atomically
///     try manager.writeCheckpointMetadata(epoch: 1)  // the handler records epoch 1 as complete
///     try manager.load(epoch: 1)         // every blob of the list, verified
///
/// Each checkpoint is one file, `dbName(epoch:)`, holding every blob of the
/// blob list and the list itself (file metadata key ``blobListKey``, a JSON
/// array). Files are written through a temporary name and renamed into place
/// after an fsync, so a checkpoint is either complete under its name or
/// absent; ``checkDBExists(epoch:)`` is true only for a complete one.
///
/// The directory `dbPrefix` is created (with its missing parents, each
/// made durable by an fsync of its parent) by ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``
/// and when the writer lock is taken. The metadata handler gets its
/// parameters from ``setParams(nodes:pathPrefix:pathType:)``; a manager
/// whose `setParams` was not called calls it itself (with no path prefix or
/// type) before it first uses the handler, so the sequence above is complete.
///
/// Thread safety: the methods may be called from any thread; one save runs
/// at a time.
public final class CheckpointManager: CheckpointManaging, @unchecked Sendable {
    /// The file metadata key holding the blob list (a JSON array of names).
    public static let blobListKey = "checkpoint.blob_list"
    /// The file metadata key holding the epoch.
    public static let epochKey = "checkpoint.epoch"
    /// The file metadata key holding the node name.
    public static let nodeKey = "checkpoint.node"
    /// The file metadata key of an incremental save: the files its blob
    /// references point at, a JSON array of file names (FORMAT.md §6.1).
    public static let referencesKey = "checkpoint.references"
    /// The file metadata key of an incremental save: how many saves since the last full one (0: this one is full).
    public static let savesSinceFullKey = "checkpoint.saves_since_full"

    /// The directory of the checkpoint files (Caffe2's `db_prefix`).
    public let dbPrefix: String
    /// The node whose workspace this manager saves; the first part of each file name.
    public let nodeName: String
    /// The file format's name as given (`"ckpt"` or `"safetensors"`).
    public let dbType: String
    /// The file format ``dbType`` names.
    public let format: CheckpointFormat
    /// Records complete epochs and chooses where to resume; nil: no metadata is kept.
    public let metadataHandler: (any CheckpointMetadataHandler)?
    /// The blobs this manager saves and loads.
    public let workspace: Workspace
    /// The options the manager was created with.
    public let options: CheckpointOptions

    private let lock = PThreadLock()
    /// Held from a save's wait for the previous one until its write is done
    /// (or queued): saves, synchronous or not, never overlap.
    private let saveMutex = PThreadLock()
    private var blobNames: [String]?
    private var pathPrefix: String?
    private var pathType: String?
    private var currentDBName: String?
    private var currentDuration: UInt64?
    private var writerToken: AnyObject?
    /// Whether ``setParams(nodes:pathPrefix:pathType:)`` was called (the handler has its parameters).
    private var paramsSet = false
    /// Blobs outside the fixed list that a save already warned about.
    private var warnedUnsaved = Set<BlobName>()

    private let background = BackgroundSave(label: "checkpoint.manager.async-save")
    /// What the last save or load left where (incremental saves).
    let incremental = IncrementalTracker()

    /// A manager for one node.
    ///
    /// - Parameters:
    ///   - dbPrefix: the directory of the checkpoint files.
    ///   - nodeName: the node, the first part of each file name.
    ///   - dbType: `"ckpt"` (the container, default), `"safetensors"` or
    ///     `"minidb"` (Caffe2's own format, ``MiniDBFile``; no checksums).
    ///   - metadataHandler: records complete epochs and chooses where to resume; nil: resume = the user's epoch.
    ///   - workspace: the blobs to save and load into.
    ///   - options: which blobs are saved, the writer's options and the storage (``CheckpointOptions``).
    /// - Throws: `CheckpointError.Code.invalidField` for an
    ///   unknown `dbType`, a `dbPrefix` with a NUL or a `..` component, or a
    ///   `nodeName` that is empty or has a NUL, a `/` or `..` (checked before
    ///   any file is touched).
    public init(dbPrefix: String, nodeName: String, dbType: String = CheckpointFormat.container.rawValue,
                metadataHandler: (any CheckpointMetadataHandler)? = nil, workspace: Workspace = Workspace(),
                options: CheckpointOptions = CheckpointOptions()) throws(CheckpointError) {
        try CheckpointNaming.validate(dbPrefix: dbPrefix)
        try CheckpointNaming.validate(nodeName: nodeName)
        self.format = try CheckpointFormat(dbType: dbType)
        self.dbPrefix = dbPrefix
        self.nodeName = nodeName
        self.dbType = dbType
        self.metadataHandler = metadataHandler
        self.workspace = workspace
        self.options = options
    }

    // MARK: Names

    /// The file of `epoch`'s checkpoint, exactly as Caffe2 names it: with a
    /// path prefix, `pathPrefix + nodeName + "." + epoch`; otherwise
    /// `dbPrefix/nodeName.epoch` (joined like `os.path.join`). No zero padding.
    public func dbName(epoch: Int, pathPrefix: String? = nil) -> String {
        CheckpointNaming.dbName(epoch: epoch, nodeName: nodeName, dbPrefix: dbPrefix, pathPrefix: pathPrefix)
    }

    /// The file of `nodeName`'s checkpoint of `epoch` when `nodeName` is this
    /// manager's node, else nil (Caffe2's `get_ckpt_db_name` returns None
    /// for a node it does not have; no path is made up).
    public func dbName(nodeName: String, epoch: Int) -> String? {
        nodeName == self.nodeName ? dbName(epoch: epoch) : nil
    }

    /// The workspace of `node`: this manager's one workspace, whatever the node.
    public func workspace(forNode node: String) -> Workspace { workspace }

    /// The one file of `epoch`: this node and its path.
    public func checkpointPaths(epoch: Int) -> [(node: String, path: String)] { [(nodeName, dbName(epoch: epoch))] }

    // MARK: Initializing

    /// Fixes the blob list (Caffe2's `init`), after creating `dbPrefix` if it
    /// is missing (`mkdir -p`, each new directory made durable) and removing
    /// the temporary files that saves of this node killed mid-way left there.
    /// Calls ``setParams(nodes:pathPrefix:pathType:)`` first if nobody did.
    ///
    /// Without `retrieveFromEpoch` the list is every blob in the workspace
    /// now, sorted; with it, the list stored in that epoch's checkpoint
    /// (`dbName(epoch:pathPrefix:)`). With ``CheckpointOptions/BlobListMode/fixedAtInitialize``
    /// (the default) blobs added to the workspace afterwards are not saved.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for more
    ///   than one node; a `mkdir` error naming the directory that cannot be
    ///   created; `CheckpointError.Code.checkpointNotFound` when
    ///   the epoch's file is missing; the reader's errors when it is damaged.
    public func initialize(nodes: [String]? = nil, retrieveFromEpoch: Int? = nil, pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        if let nodes, nodes.count > 1 {
            throw CheckpointError(.invalidField(field: "nodes", reason: CheckpointManager.singleNodeMessage(nodes)))
        }
        try ensureParams()
        try createPrefix()
        // Temporary files of saves killed before their rename are garbage now (never a live writer's).
        if let storage = try? storage(for: lock.locked({ self.pathType })) {
            _ = storage.removeAbandonedWrites(in: dbPrefix, targetPrefix: nodeName + ".")
        }
        let names: [String]
        if let epoch = retrieveFromEpoch {
            let path = dbName(epoch: epoch, pathPrefix: pathPrefix)
            let reader = try openCheckpoint(path, epoch: epoch, pathType: pathType)
            names = try CheckpointManager.storedBlobList(reader, path: path)
        } else {
            names = workspace.blobNames
        }
        lock.locked { blobNames = names }
    }

    /// Why a job of `nodes` cannot run on a single-node manager, and the three ways out.
    static func singleNodeMessage(_ nodes: [String]) -> String {
        let defaulted = nodes.contains(Job.defaultNode)
            ? " ('\(Job.defaultNode)' is the node of steps added without `node:`)" : ""
        return "CheckpointManager checkpoints a single node, but the job's nodes to checkpoint are "
            + "\(nodes.map { "'\($0)'" }.joined(separator: ", "))\(defaulted): pass the same `node:` to every step, "
            + "create the job as Job(defaultNode: \"NODE\") and omit `node:`, or use MultiNodeCheckpointManager"
    }

    /// The blob list fixed by ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``.
    ///
    /// - Throws: `CheckpointError.Code.invalidState` before it.
    public func blobList() throws(CheckpointError) -> [String] {
        guard let names = lock.locked({ blobNames }) else {
            throw CheckpointError(.invalidState(reason: "CheckpointManager for node '\(nodeName)' is not initialized: call initialize() first"))
        }
        return names
    }

    /// The workspace's blobs that a save leaves out: those outside the blob
    /// list fixed by `initialize()` (always empty with
    /// ``CheckpointOptions/BlobListMode/relistedAtEverySave``, or before `initialize()`).
    public var unsavedBlobNames: [String] {
        guard options.blobList == .fixedAtInitialize, let names = lock.locked({ blobNames }) else { return [] }
        // By UTF-8 bytes, as the workspace and the file compare names.
        let listed = Set(names.map { BlobName($0) })
        return workspace.blobNames.filter { !listed.contains(BlobName($0)) }
    }

    /// What a save writes: the fixed list's blobs (warning once about each
    /// workspace blob left out) or, relisting, every blob in the workspace now.
    func snapshotForSave() throws(CheckpointError) -> [(name: String, tensor: Tensor)] {
        let names = try blobList()
        switch options.blobList {
        case .relistedAtEverySave:
            let snapshot = workspace.snapshot()
            lock.locked { blobNames = snapshot.map(\.name) }
            return snapshot
        case .fixedAtInitialize:
            let left = unsavedBlobNames
            let new = lock.locked { () -> [String] in
                let new = left.filter { !warnedUnsaved.contains(BlobName($0)) }
                warnedUnsaved.formUnion(new.map { BlobName($0) })
                return new
            }
            if !new.isEmpty {
                options.logger.warning("Blobs added to node '\(nodeName)''s workspace after initialize() are NOT saved (the blob list is fixed): \(new.map { "'\($0)'" }.joined(separator: ", ")). A resume will not have them. Set CheckpointOptions(blobList: .relistedAtEverySave) to save every blob at each save.")
            }
            return try workspace.snapshot(names)
        }
    }

    static func storedBlobList(_ reader: any CheckpointFileReading, path: String) throws(CheckpointError) -> [String] {
        guard let text = reader.fileMetadata[blobListKey] else {
            throw CheckpointError(.invalidField(field: "metadata", reason: "no '\(blobListKey)' entry: not written by a CheckpointManager"), path: path)
        }
        return try storedBlobList(fromJSON: text, path: path)
    }

    /// The blob list of a ``blobListKey`` value (a JSON array of strings).
    static func storedBlobList(fromJSON text: String, path: String) throws(CheckpointError) -> [String] {
        guard case let .array(items) = try JSONValue.parse(Array(text.utf8), what: blobListKey) else {
            throw CheckpointError(.invalidField(field: blobListKey, reason: "not a JSON array"), path: path)
        }
        var names: [String] = []
        names.reserveCapacity(items.count)
        for item in items {
            guard let name = item.stringValue else { throw CheckpointError(.invalidField(field: blobListKey, reason: "an element is not a string"), path: path) }
            names.append(name)
        }
        return names
    }

    // MARK: Saving

    /// Writes every blob of the blob list, and the list, as `dbName(epoch:)`,
    /// committed atomically (Caffe2's `save`). Does not write the metadata:
    /// call ``writeCheckpointMetadata(epoch:metric:)`` after it succeeds.
    ///
    /// Waits for an ``saveAsync(epoch:metric:)`` in flight first, and throws
    /// its error if it failed (without saving this epoch). Holds the node's
    /// writer lock while it writes and releases it afterwards, unless this
    /// manager holds it already (``acquireWriterLock(nodes:)``, ``JobRunner/train()``).
    ///
    /// - Throws: `CheckpointError.Code.invalidState` before
    ///   `initialize()`; `CheckpointError.Code.blobNotFound` for a listed blob
    ///   missing from the workspace (all before any file is written);
    ///   `CheckpointError.Code.writerLocked` when another manager (in this or
    ///   another process) holds the node's writer lock; the writer's errors
    ///   (the previous file of that name, if any, is then intact).
    public func save(epoch: Int) throws(CheckpointError) {
        try saveMutex.locked { () throws(CheckpointError) in
            try waitUntilFinished()
            let snapshot = try snapshotForSave()
            let heldForThisSave = try writerLockForSave()
            try withExtendedLifetime(heldForThisSave) { () throws(CheckpointError) in try write(snapshot, epoch: epoch) }
        }
    }

    /// Writes a snapshot as `epoch`'s file and records its timing.
    func write(_ snapshot: [(name: String, tensor: Tensor)], epoch: Int) throws(CheckpointError) {
        let path = dbName(epoch: epoch)
        lock.locked {
            currentDBName = path
            currentDuration = nil
        }
        let storage = try storage(for: lock.locked { pathType })
        let start = ContinuousClock.now
        var metadata = [CheckpointManager.epochKey: String(epoch), CheckpointManager.nodeKey: nodeName]
        metadata[CheckpointManager.blobListKey] = JSONValue.array(snapshot.map { .string($0.name) }).text
        let plan = incrementalPlan(snapshot, path: path, metadata: &metadata)
        let sources = snapshot.enumerated().map { index, item in
            if let reference = plan?.references[index] { return BlobSource(reference: reference) }
            return BlobSource(name: item.name, dtype: item.tensor.dtype, shape: item.tensor.shape,
                              bytes: UnsafeRawBufferPointer(start: item.tensor.storage.base, count: item.tensor.byteCount))
        }
        // The sources point into the snapshot's storages, which it keeps alive.
        try withExtendedLifetime(snapshot) { () throws(CheckpointError) in
            do throws(CheckpointError) {
                try storage.writeCheckpoint(sources, metadata: metadata, to: path, format: format, options: options.writer)
            } catch {
                // The file may have been replaced or not: refer to nothing we are unsure of.
                incremental.reset()
                throw error
            }
            if let plan { recordIncremental(snapshot, path: path, storage: storage, savesSinceFull: plan.savesSinceFull) }
        }
        let nanoseconds = CheckpointManager.nanoseconds(since: start)
        lock.locked { currentDuration = nanoseconds }
    }

    /// Starts saving `epoch` in the background and returns once a snapshot
    /// of the blob list is taken (O(blobs), no payload copied: tensors are
    /// copy-on-write, so later changes to the workspace do not reach it).
    ///
    /// The background task writes and commits the file, then (only if that
    /// succeeded) calls ``writeCheckpointMetadata(epoch:metric:)`` and
    /// reports `checkpoint_save` stats. At most one save is in flight: a
    /// second `saveAsync` (or ``save(epoch:)``) first waits for the previous
    /// one. A background error is thrown by the next ``saveAsync(epoch:metric:)``,
    /// ``save(epoch:)`` or ``waitUntilFinished()``, once; the call that
    /// throws it does not start a new save.
    public func saveAsync(epoch: Int, metric: Double? = nil) throws(CheckpointError) {
        try saveMutex.locked { () throws(CheckpointError) in
            try waitUntilFinished()
            let snapshot = try snapshotForSave()
            let heldForThisSave = WriterLockHold(try writerLockForSave())
            background.start { [self] () throws(CheckpointError) in
                defer { heldForThisSave.release() }
                try write(snapshot, epoch: epoch)
                try writeCheckpointMetadata(epoch: epoch, metric: metric)
                reportCheckpointStats(action: "checkpoint_save")
            }
        }
    }

    /// Waits for a ``saveAsync(epoch:metric:)`` in flight; throws its error, if any (once).
    public func waitUntilFinished() throws(CheckpointError) {
        try background.wait()
    }

    /// Takes the exclusive right to save this node's checkpoints under
    /// `dbPrefix` (a lock file `.NODE.writer.lock` there), unless this manager
    /// holds it already, creating `dbPrefix` first if it is missing, and
    /// holds it until ``releaseWriterLock()`` or until the manager is
    /// deinitialized: an explicit scope in which no other manager (in this
    /// or another process) can save this node under the prefix.
    ///
    /// Without it, ``save(epoch:)`` and ``saveAsync(epoch:metric:)`` take the
    /// lock for the one save and release it when the file is written (as in
    /// Caffe2, a save by hand leaves nothing held: another manager of the
    /// same node may save or train next). ``JobRunner/train()`` takes it for
    /// the whole run, to fail fast, and releases it when it returns.
    ///
    /// - Throws: `CheckpointError.Code.writerLocked` when another manager
    ///   (in this or another process) holds it; a `mkdir` error when `dbPrefix`
    ///   cannot be created.
    public func acquireWriterLock(nodes: [String] = []) throws(CheckpointError) {
        try lock.locked { () throws(CheckpointError) in
            guard writerToken == nil else { return }
            let storage = try storage(for: pathType)
            try storage.createDirectory(dbPrefix, durability: options.writer.durability)
            writerToken = try storage.lockWriter(in: dbPrefix, name: nodeName)
        }
    }

    /// The writer lock for one save: nil when this manager holds it already
    /// (``acquireWriterLock(nodes:)``), else a token taken now (creating
    /// `dbPrefix` if missing) that releases the lock when the caller drops it.
    ///
    /// - Throws: `CheckpointError.Code.writerLocked` when another manager holds it.
    func writerLockForSave() throws(CheckpointError) -> AnyObject? {
        try lock.locked { () throws(CheckpointError) -> AnyObject? in
            guard writerToken == nil else { return nil }
            let storage = try storage(for: pathType)
            try storage.createDirectory(dbPrefix, durability: options.writer.durability)
            return try storage.lockWriter(in: dbPrefix, name: nodeName)
        }
    }

    /// Creates `dbPrefix` unless it exists (see ``CheckpointStorage/createDirectory(_:durability:)``).
    private func createPrefix() throws(CheckpointError) {
        try storage(for: lock.locked { pathType }).createDirectory(dbPrefix, durability: options.writer.durability)
    }

    /// Calls ``setParams(nodes:pathPrefix:pathType:)`` unless it was called: the handler needs its parameters.
    private func ensureParams() throws(CheckpointError) {
        guard metadataHandler != nil, !lock.locked({ paramsSet }) else { return }
        try setParams()
    }

    /// Gives up the right to save (after waiting for a save in flight, whose
    /// error, if any, the next save call or ``waitUntilFinished()`` still throws).
    public func releaseWriterLock() {
        background.waitForCompletion()
        lock.locked { writerToken = nil }
    }

    // MARK: Loading

    /// Loads every blob of the blob list from `epoch`'s checkpoint into the
    /// workspace (Caffe2's `load`; relisting, the list stored in that file).
    /// All or nothing: the workspace changes only when every blob was read and verified.
    ///
    /// - Throws: `CheckpointError.Code.checkpointNotFound` for a
    ///   missing file; `CheckpointError.Code.blobNotFound` for a listed
    ///   blob the file lacks; checksum errors naming the blob.
    public func load(epoch: Int, pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        workspace.setBlobs(try readForLoad(epoch: epoch, pathPrefix: pathPrefix, pathType: pathType))
    }

    /// Reads and verifies every blob of the blob list from `epoch`'s checkpoint, without touching the workspace.
    func readForLoad(epoch: Int, pathPrefix: String?, pathType: String?) throws(CheckpointError) -> [(name: String, tensor: Tensor)] {
        let names = try blobList()
        let path = dbName(epoch: epoch, pathPrefix: pathPrefix)
        var tensors: [(name: String, tensor: Tensor)] = []
        try timed(path) { () throws(CheckpointError) in
            let reader = try openCheckpoint(path, epoch: epoch, pathType: pathType)
            // Relisting, each file has its own list: load what that epoch saved.
            let list = options.blobList == .relistedAtEverySave ? try CheckpointManager.storedBlobList(reader, path: path) : names
            incremental.reset()
            tensors = try CheckpointManager.readTensors(list, from: reader, path: path, allowMissing: false)
            recordLoaded(tensors, reader: reader)
        }
        return tensors
    }

    /// Loads the blobs of `blobNames` that `epoch`'s checkpoint has into
    /// `workspace` (default: this manager's); names the file lacks are
    /// skipped (Caffe2's `allow_incomplete`), but a present blob that fails
    /// its checksum is an error. Needs no ``initialize(nodes:retrieveFromEpoch:pathPrefix:pathType:)``.
    public func loadBlobsFromCheckpoint(_ blobNames: [String], epoch: Int, into workspace: Workspace? = nil) throws(CheckpointError) {
        let path = dbName(epoch: epoch)
        try timed(path) { () throws(CheckpointError) in
            let reader = try openCheckpoint(path, epoch: epoch, pathType: nil)
            (workspace ?? self.workspace).setBlobs(try CheckpointManager.readTensors(blobNames, from: reader, path: path, allowMissing: true))
        }
    }

    /// Caffe2's `load_blobs_locally` for one node: false when `epoch`'s
    /// checkpoint is not complete, else loads the blobs it has and returns true.
    public func loadBlobsLocally(nodes: [String], blobNames: [String], epoch: Int, into workspace: Workspace) throws(CheckpointError) -> Bool {
        guard checkDBExists(epoch: epoch) else { return false }
        try loadBlobsFromCheckpoint(blobNames, epoch: epoch, into: workspace)
        return true
    }

    /// True only when `epoch`'s file is a complete, committed checkpoint (a
    /// missing, temporary, torn or structurally damaged file is not).
    public func checkDBExists(epoch: Int) -> Bool {
        guard let storage = try? storage(for: lock.locked({ pathType })) else { return false }
        return storage.isCompleteCheckpoint(dbName(epoch: epoch), format: format)
    }

    static func readTensors(_ names: [String], from reader: any CheckpointFileReading, path: String, allowMissing: Bool) throws(CheckpointError) -> [(name: String, tensor: Tensor)] {
        var present: [String] = []
        present.reserveCapacity(names.count)
        for name in names {
            guard reader.hasBlob(name) else {
                if allowMissing { continue }
                throw CheckpointError(.blobNotFound(name), blobName: name, path: path)
            }
            present.append(name)
        }
        // One batch read (CheckpointFileReading.readTensors), which decodes small blobs side by side on every core.
        do throws(CheckpointError) {
            return Array(zip(present, try reader.readTensors(present)))
        } catch {
            throw error.adding(path: path)
        }
    }

    private func openCheckpoint(_ path: String, epoch: Int, pathType: String?) throws(CheckpointError) -> any CheckpointFileReading {
        let storage = try storage(for: pathType ?? lock.locked({ self.pathType }))
        do throws(CheckpointError) {
            return try storage.openCheckpoint(path, format: format)
        } catch {
            if AtomicFile.isMissingFile(error) {
                throw CheckpointError(.checkpointNotFound(epoch: epoch), path: path)
            }
            throw error
        }
    }

    private func storage(for pathType: String?) throws(CheckpointError) -> any CheckpointStorage {
        if pathType == nil, let storage = options.storage { return storage }
        return try CheckpointStorageRegistry.storage(for: pathType, path: dbPrefix)
    }

    private func timed(_ path: String, _ body: () throws(CheckpointError) -> Void) throws(CheckpointError) {
        lock.locked {
            currentDBName = path
            currentDuration = nil
        }
        let start = ContinuousClock.now
        try body()
        let nanoseconds = CheckpointManager.nanoseconds(since: start)
        lock.locked { currentDuration = nanoseconds }
    }

    static func nanoseconds(since start: ContinuousClock.Instant) -> UInt64 {
        let elapsed = ContinuousClock.now - start
        let (seconds, attoseconds) = elapsed.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }

    // MARK: Metadata and stats

    /// Adds the last action's timing (database path → nanoseconds) to `stats`.
    public func collectCheckpointStats(into stats: inout [String: UInt64]) {
        let (name, duration) = lock.locked { (currentDBName, currentDuration) }
        if let name, let duration { stats[name] = duration }
    }

    /// Reports the last action's timing to the metadata handler as `action`.
    public func reportCheckpointStats(action: String) {
        var stats: [String: UInt64] = [:]
        collectCheckpointStats(into: &stats)
        metadataHandler?.report(action: action, stats: stats)
    }

    /// Records `epoch` as complete in the metadata handler (nothing without
    /// one), after ``setParams(nodes:pathPrefix:pathType:)`` if nobody called it.
    public func writeCheckpointMetadata(epoch: Int, metric: Double? = nil) throws(CheckpointError) {
        guard let metadataHandler else { return }
        try ensureParams()
        try metadataHandler.write(epoch: epoch, metric: metric)
    }

    /// The handler's fallback from a damaged resume epoch (nil without a handler).
    public func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int? {
        guard let metadataHandler else { return nil }
        try ensureParams()
        return try metadataHandler.fallBack(fromDamagedEpoch: epoch, reason: reason)
    }

    /// The epoch to resume from: the handler's answer, or `userEpoch` without a handler.
    public func getResumeFromEpochID(userEpoch: Int? = nil) throws(CheckpointError) -> Int? {
        guard let metadataHandler else { return userEpoch }
        try ensureParams()
        return try metadataHandler.lastEpoch(userEpoch: userEpoch)
    }

    /// Remembers the path prefix and type and passes them, with this node's
    /// name, to the handler. `nodes` is ignored, as in Caffe2.
    public func setParams(nodes: [String] = [], pathPrefix: String? = nil, pathType: String? = nil) throws(CheckpointError) {
        let (prefix, type) = lock.locked { () -> (String?, String?) in
            if let pathPrefix { self.pathPrefix = pathPrefix }
            if let pathType { self.pathType = pathType }
            return (self.pathPrefix, self.pathType)
        }
        try metadataHandler?.setParams(dbPrefix: dbPrefix, dbType: dbType, nodeNames: [nodeName], pathPrefix: prefix, pathType: type)
        lock.locked { paramsSet = true }
    }

    /// Whether checkpoints are accessible: the handler's answer, true without one.
    public func cpAccessible(epoch: Int? = nil) throws(CheckpointError) -> Bool {
        guard let metadataHandler else { return true }
        try ensureParams()
        return try metadataHandler.cpAccessible(epoch: epoch)
    }
}

/// Checkpoint file names and the checks on their parts.
public enum CheckpointNaming {
    /// Caffe2's `db_name`: `pathPrefix + nodeName + "." + epoch` with a path
    /// prefix, else `dbPrefix` joined with `nodeName.epoch` (a `/` added unless
    /// `dbPrefix` is empty or already ends with one).
    public static func dbName(epoch: Int, nodeName: String, dbPrefix: String, pathPrefix: String? = nil) -> String {
        let file = nodeName + "." + String(epoch)
        if let pathPrefix, !pathPrefix.isEmpty { return pathPrefix + file }
        return join(dbPrefix, file)
    }

    /// `os.path.join(directory, name)` for a relative `name`.
    public static func join(_ directory: String, _ name: String) -> String {
        if directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// Rejects a database prefix with a NUL or a `..` component.
    public static func validate(dbPrefix: String) throws(CheckpointError) {
        guard !dbPrefix.utf8.contains(0) else {
            throw CheckpointError(.invalidField(field: "dbPrefix", reason: "contains a NUL byte"))
        }
        guard !dbPrefix.split(separator: "/", omittingEmptySubsequences: false).contains("..") else {
            throw CheckpointError(.invalidField(field: "dbPrefix", reason: "'\(dbPrefix)' has a '..' component"))
        }
    }

    /// Rejects a name that is not one file name inside a directory: empty,
    /// `.` or `..`, or with a `/` or a NUL. What storage checks before it removes a file.
    public static func validate(fileName: String) throws(CheckpointError) {
        guard !fileName.isEmpty, fileName != ".", fileName != "..", !fileName.utf8.contains(0), !fileName.contains("/") else {
            throw CheckpointError(.invalidField(field: "file name", reason: "'\(fileName.prefix(80))' is not a file name inside the checkpoint directory"))
        }
    }

    /// Rejects a node name that is empty or has a NUL, a `/` or `..`.
    public static func validate(nodeName: String) throws(CheckpointError) {
        guard !nodeName.isEmpty, !nodeName.utf8.contains(0), !nodeName.contains("/"), !nodeName.contains("..") else {
            throw CheckpointError(.invalidField(field: "nodeName", reason: "'\(nodeName.prefix(80))' is empty or contains a NUL, '/' or '..'"))
        }
    }
}

/// Writer-lock tokens kept alive by a background save and dropped when it ends.
final class WriterLockHold: @unchecked Sendable {
    private let lock = PThreadLock()
    private var tokens: [AnyObject]
    init(_ token: AnyObject?) { tokens = token.map { [$0] } ?? [] }
    init(_ tokens: [AnyObject]) { self.tokens = tokens }
    /// Releases the locks (drops the tokens).
    func release() { lock.locked { tokens = [] } }
}

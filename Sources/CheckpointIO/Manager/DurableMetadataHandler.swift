import BlobCodec

/// The default ``CheckpointMetadataHandler``: records which epochs are
/// complete on which nodes in a small JSON file beside the checkpoints,
/// replaced atomically (temporary file, fsync, rename, directory fsync), and
/// applies a ``RetentionPolicy``.
///
///     let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 3, keepEvery: 10))
///     let manager = try CheckpointManager(dbPrefix: "/ckpt/run1", nodeName: "trainer_0", metadataHandler: handler)
///
/// The file is `dbPrefix/checkpoint_metadata.json`:
///
///     {"format":"checkpoint-metadata","version":1,"db_type":"ckpt","resumed_from":null,
///      "epochs":[{"epoch":0,"nodes":["trainer_0"],"metric":null}, …]}
///
/// ``write(epoch:metric:)`` adds the epoch, decides what the retention rules
/// drop, writes the new file **first**, and only then deletes the dropped
/// checkpoint files: a crash at any point leaves a file that names only
/// checkpoints that exist. Never dropped: the epoch being written, the
/// newest one, and the epochs runs resumed from (this run's and the one the
/// file records). When a run went back to an older epoch, the records of
/// later epochs it did not write itself are forgotten at its first write, so
/// a restart resumes from this run, not the abandoned one. One handler (one
/// job) writes a prefix's metadata; concurrent writers of the file wait for
/// each other's update (`checkpoint_metadata.json.lock`). With a retention rule set, it also deletes files
/// `NODE.EPOCH` of the current nodes that no record names and that are
/// older than the newest epoch (left by a run killed while deleting).
/// ``setParams(dbPrefix:dbType:nodeNames:pathPrefix:pathType:)`` removes
/// temporary files of metadata writes that were killed before their rename.
/// ``lastEpoch(userEpoch:)`` returns the newest
/// recorded epoch whose files, on every node, still pass a cheap integrity
/// check (container trailer and index CRC), falling back to older ones.
/// Damage that check cannot see (a flipped payload byte) shows when the
/// epoch is loaded: ``fallBack(fromDamagedEpoch:reason:)`` then moves the
/// epoch to the file's `damaged` list, so that ``lastEpoch(userEpoch:)``
/// never chooses it again, and answers the epoch before it (``JobRunner``
/// calls it and resumes from there).
///
/// Every node name and epoch read from the file is checked as the
/// constructors check them; a file that names a node such as `../x` is
/// rejected as a whole (nothing is deleted on its word).
public final class DurableMetadataHandler: CheckpointMetadataHandler, @unchecked Sendable {
    /// The metadata file's name inside `dbPrefix`.
    public static let fileName = "checkpoint_metadata.json"
    static let formatName = "checkpoint-metadata"
    static let maximumFileSize = 64 << 20

    /// One complete epoch.
    public struct EpochRecord: Sendable, Equatable {
        /// The epoch.
        public var epoch: Int
        /// The nodes whose files make up the epoch.
        public var nodes: [String]
        /// The metric given to ``write(epoch:metric:)``, if any.
        public var metric: Double?
        /// The checkpoint files (names in `dbPrefix`) that the epoch's files
        /// refer to with blob references (incremental saves); retention keeps
        /// them as long as the epoch is kept.
        public var references: [String]

        /// A record of a complete epoch, with the files its checkpoints refer to (incremental saves).
        public init(epoch: Int, nodes: [String], metric: Double? = nil, references: [String] = []) {
            self.epoch = epoch
            self.nodes = nodes
            self.metric = metric
            self.references = references
        }
    }

    /// An epoch whose checkpoint failed to load (see ``fallBack(fromDamagedEpoch:reason:)``).
    public struct DamagedEpoch: Sendable, Equatable {
        /// The epoch.
        public var epoch: Int
        /// The nodes whose files made up the epoch.
        public var nodes: [String]
        /// Why loading it failed (the error's description).
        public var reason: String

        /// A record of a damaged epoch.
        public init(epoch: Int, nodes: [String], reason: String) {
            self.epoch = epoch
            self.nodes = nodes
            self.reason = reason
        }
    }

    struct Params {
        var dbPrefix: String
        var dbType: String
        var format: CheckpointFormat
        var nodeNames: [String]
        var pathPrefix: String?
        var pathType: String?
    }

    /// Which complete epochs are kept when a new one is recorded.
    public let retention: RetentionPolicy
    /// How the metadata file is synced when it is rewritten.
    public let durability: Durability
    private let storageOverride: (any CheckpointStorage)?
    private let lock = PThreadLock()
    private var params: Params?
    private var resumedFrom: Int?
    private var reports: [String: [String: UInt64]] = [:]
    private var removalErrors: [CheckpointError] = []
    private var writtenThisRun = Set<Int>()

    /// A handler that keeps its records in the checkpoint directory's metadata file.
    ///
    /// - Parameters:
    ///   - retention: what to keep (default: everything).
    ///   - durability: how the metadata file is synced (default: file and directory fsync).
    ///   - storage: the storage to use (default: the registry's, by `pathType`).
    public init(retention: RetentionPolicy = .keepAll, durability: Durability = .full, storage: (any CheckpointStorage)? = nil) {
        self.retention = retention
        self.durability = durability
        self.storageOverride = storage
    }

    // MARK: CheckpointMetadataHandler

    /// Takes the manager's parameters: where the metadata file lives and which nodes an epoch needs.
    public func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError) {
        try CheckpointNaming.validate(dbPrefix: dbPrefix)
        for node in nodeNames { try CheckpointNaming.validate(nodeName: node) }
        let format = try CheckpointFormat(dbType: dbType)
        let params = Params(dbPrefix: dbPrefix, dbType: dbType, format: format, nodeNames: nodeNames, pathPrefix: pathPrefix, pathType: pathType)
        lock.locked { self.params = params }
        // A metadata write killed before its rename left a temporary file: remove it.
        if let storage = try? storage(params) {
            _ = storage.removeAbandonedWrites(in: dbPrefix, targetPrefix: DurableMetadataHandler.fileName)
        }
    }

    /// `userEpoch` when given; else the newest recorded epoch whose files on
    /// every current node pass the integrity check; nil when there is none.
    /// Remembers the answer: retention never deletes it during this run.
    public func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int? {
        let params = try requireParams()
        if let userEpoch {
            lock.locked { resumedFrom = userEpoch }
            return userEpoch
        }
        guard let epoch = try newestIntactEpoch(params, below: nil) else { return nil }
        lock.locked { resumedFrom = epoch }
        return epoch
    }

    /// The newest recorded epoch (below `limit`, if given) whose files on
    /// every current node pass the integrity check.
    private func newestIntactEpoch(_ params: Params, below limit: Int?) throws(CheckpointError) -> Int? {
        let storage = try storage(params)
        let records = try readRecords(params).records.sorted { $0.epoch > $1.epoch }
        for record in records where Set(params.nodeNames).isSubset(of: record.nodes) && record.epoch < (limit ?? Int.max) {
            let intact = params.nodeNames.allSatisfy { node in
                storage.isCompleteCheckpoint(CheckpointNaming.dbName(epoch: record.epoch, nodeName: node, dbPrefix: params.dbPrefix), format: params.format)
            } && record.references.allSatisfy { file in
                // The files its blob references point at must be there too.
                storage.isCompleteCheckpoint(CheckpointNaming.join(params.dbPrefix, file), format: params.format)
            }
            if intact { return record.epoch }
        }
        return nil
    }

    /// With `epoch` nil: whether `dbPrefix` is a directory checkpoints can be
    /// written in. With an epoch: whether its files on every node are complete.
    public func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool {
        let params = try requireParams()
        let storage = try storage(params)
        guard let epoch else { return storage.isAccessible(directory: params.dbPrefix) }
        return params.nodeNames.allSatisfy { node in
            storage.isCompleteCheckpoint(CheckpointNaming.dbName(epoch: epoch, nodeName: node, dbPrefix: params.dbPrefix), format: params.format)
        }
    }

    /// Records `epoch` as complete on the current nodes, then applies the
    /// retention rules: the new file is written before any checkpoint is deleted.
    ///
    /// - Throws: when the metadata file cannot be read or replaced (nothing is
    ///   deleted then). Failures to delete dropped checkpoints are not thrown:
    ///   they leave stray files the metadata no longer names (see ``lastRemovalErrors``).
    public func write(epoch: Int, metric: Double?) throws(CheckpointError) {
        let params = try requireParams()
        let storage = try storage(params)
        let path = metadataPath(params)
        let (resumed, written) = lock.locked { (resumedFrom, writtenThisRun) }
        // The files this epoch's files refer to, read before the record is written: they are
        // kept as long as the epoch is (an unreadable file records nothing and deletes nothing).
        let references = try referencedFiles(epoch: epoch, params: params, storage: storage)
        var dropped: [EpochRecord] = []
        var state = State()
        // Read, decide and replace under the file's writer lock (writers of the file wait for each other).
        _ = try storage.updateFile(path, limit: DurableMetadataHandler.maximumFileSize, durability: durability) { (old) throws(CheckpointError) -> [UInt8] in
            state = try old.map { (bytes) throws(CheckpointError) -> State in try DurableMetadataHandler.decode(bytes, path: path) } ?? State()
            // A damaged file of this epoch was just replaced by a complete one.
            state.damaged.removeAll { $0.epoch == epoch }
            // Epochs after this one that this run did not write belong to a run this one went back
            // from: forget them (their files are overwritten as this run reaches them), so that a
            // restart never resumes from the abandoned run.
            state.records.removeAll { $0.epoch > epoch && !written.contains($0.epoch) }
            let previous = state.records.first { $0.epoch == epoch }
            let previousNodes = previous?.nodes ?? []
            state.records.removeAll { $0.epoch == epoch }
            let nodes = previousNodes.filter { !params.nodeNames.contains($0) } + params.nodeNames
            let allReferences = Set(references).union(previous?.references ?? []).sorted()
            state.records.append(EpochRecord(epoch: epoch, nodes: nodes, metric: metric, references: allReferences))
            state.records.sort { $0.epoch < $1.epoch }
            let previousResume = state.resumedFrom
            state.resumedFrom = resumed ?? state.resumedFrom
            // Never dropped: the epoch just written, the newest, and the epochs runs resumed from.
            var protected: Set<Int> = [epoch, state.records.last!.epoch]
            for keep in [resumed, previousResume] { if let keep { protected.insert(keep) } }
            let keep = retention.epochsToKeep(state.records.map { ($0.epoch, $0.metric) }, protected: protected)
            dropped = state.records.filter { !keep.contains($0.epoch) }
            state.records.removeAll { !keep.contains($0.epoch) }
            return encode(state, params: params)
        }
        lock.locked { _ = writtenThisRun.insert(epoch) }
        var doomed = dropped.flatMap { record in record.nodes.map { (node: $0, epoch: record.epoch) } }
        if !retention.keepsEverything {
            // Files of older epochs that no record names at all: left by a run killed while
            // deleting, or saved but never recorded. Nothing resumes from them.
            let newest = state.records.last!.epoch
            // Damaged files stay for inspection until a save of their epoch replaces them.
            let spared = Set([resumed, state.resumedFrom].compactMap { $0 } + state.damaged.map(\.epoch))
            doomed += unrecordedEpochs(storage: storage, params: params, records: state.records).filter { $0.epoch < newest && !spared.contains($0.epoch) }
        }
        // A file that a kept epoch refers to stays until no kept epoch does (the file
        // naming them was written above, before anything is deleted).
        let referenced = Set(state.records.flatMap(\.references))
        doomed.removeAll { referenced.contains($0.node + "." + String($0.epoch)) }
        // Newest first: a file refers only to older ones, so a crash in the middle of this
        // loop never leaves a file whose target is gone (the older ones go at a later write).
        doomed.sort { $0.epoch > $1.epoch }
        var errors: [CheckpointError] = []
        for (node, epoch) in doomed {
            do throws(CheckpointError) {
                // The storage refuses any name that is not a file inside the prefix.
                try storage.removeCheckpoint(node + "." + String(epoch), in: params.dbPrefix)
            } catch {
                errors.append(error)
            }
        }
        lock.locked { removalErrors = errors }
    }

    /// After `epoch`'s checkpoint failed to load because it is damaged:
    /// finds the newest older recorded epoch whose files pass the integrity
    /// check and, if there is one, moves `epoch` from the complete epochs to
    /// the `damaged` list of the metadata file (read-modify-write under its
    /// lock, with `reason`), so that ``lastEpoch(userEpoch:)`` never chooses
    /// it again, and makes the older epoch this run's resume epoch (retention
    /// never deletes it). The damaged files are left alone until a save of
    /// the same epoch replaces them. With no older epoch, nothing is
    /// recorded and the answer is nil: every run stops at the same error
    /// until someone repairs or removes the checkpoint.
    ///
    /// - Throws: when the metadata file cannot be read or replaced.
    public func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int? {
        let params = try requireParams()
        guard let older = try newestIntactEpoch(params, below: epoch) else { return nil }
        try recordDamaged(epoch, reason: reason, params: params)
        lock.locked { resumedFrom = older }
        return older
    }

    /// Moves `epoch` to the metadata file's `damaged` list.
    private func recordDamaged(_ epoch: Int, reason: String, params: Params) throws(CheckpointError) {
        let storage = try storage(params)
        let path = metadataPath(params)
        _ = try storage.updateFile(path, limit: DurableMetadataHandler.maximumFileSize, durability: durability) { (old) throws(CheckpointError) -> [UInt8] in
            var state = try old.map { (bytes) throws(CheckpointError) -> State in try DurableMetadataHandler.decode(bytes, path: path) } ?? State()
            let nodes = state.records.first { $0.epoch == epoch }?.nodes ?? params.nodeNames
            state.records.removeAll { $0.epoch == epoch }
            state.damaged.removeAll { $0.epoch == epoch }
            state.damaged.append(DamagedEpoch(epoch: epoch, nodes: nodes, reason: String(reason.prefix(1000))))
            state.damaged.sort { $0.epoch < $1.epoch }
            return encode(state, params: params)
        }
    }

    /// The files that `epoch`'s files of the current nodes refer to (their
    /// ``CheckpointManager/referencesKey`` metadata), and the files those refer
    /// to, and so on: each a file name in `dbPrefix`. Keeping the closure keeps
    /// every file left in the directory whole (each verifies), not only the
    /// blobs the epoch needs; it reaches back at most to the last full save.
    ///
    /// - Throws: when a file exists but cannot be opened, or its list is malformed.
    private func referencedFiles(epoch: Int, params: Params, storage: any CheckpointStorage) throws(CheckpointError) -> [String] {
        guard params.format == .container else { return [] }
        var files = Set<String>()
        var pending = params.nodeNames.map { CheckpointNaming.dbName(epoch: epoch, nodeName: $0, dbPrefix: params.dbPrefix) }
        while let path = pending.popLast() {
            let reader: any CheckpointFileReading
            do throws(CheckpointError) { reader = try storage.openCheckpoint(path, format: params.format) } catch {
                // A file that is not there refers to nothing (a handler recording an epoch it did not see saved).
                if AtomicFile.isMissingFile(error) { continue }
                throw error
            }
            guard let text = reader.fileMetadata[CheckpointManager.referencesKey] else { continue }  // a full save
            guard case let .array(items) = try JSONValue.parse(Array(text.utf8), what: CheckpointManager.referencesKey) else {
                throw CheckpointError(.invalidField(field: CheckpointManager.referencesKey, reason: "not a JSON array"), path: path)
            }
            for item in items {
                guard let name = item.stringValue else {
                    throw CheckpointError(.invalidField(field: CheckpointManager.referencesKey, reason: "an element is not a string"), path: path)
                }
                do throws(CheckpointError) { try CheckpointNaming.validate(fileName: name) } catch { throw error.adding(path: path) }
                if files.insert(name).inserted { pending.append(CheckpointNaming.join(params.dbPrefix, name)) }
            }
        }
        return files.sorted()
    }

    /// The (node, epoch) of files `NODE.EPOCH` or `NODE.EPOCH.lock` in the
    /// prefix, for current nodes, that no record names.
    private func unrecordedEpochs(storage: any CheckpointStorage, params: Params, records: [EpochRecord]) -> [(node: String, epoch: Int)] {
        let recorded = Set(records.map(\.epoch))
        var found = Set<String>()
        var result: [(node: String, epoch: Int)] = []
        for name in storage.listFiles(in: params.dbPrefix) {
            let base = name.hasSuffix(".lock") ? String(name.dropLast(5)) : name
            guard !found.contains(base), let dot = base.lastIndex(of: ".") else { continue }
            let node = String(base[..<dot]), digits = String(base[base.index(after: dot)...])
            // Only names the manager writes: a current node, an epoch in canonical decimal ("7", not "07" or "+7").
            guard params.nodeNames.contains(node), let epoch = Int(digits), epoch >= 0, String(epoch) == digits, !recorded.contains(epoch) else { continue }
            found.insert(base)
            result.append((node, epoch))
        }
        return result
    }

    /// Keeps the stats of the latest report of each action (see ``lastReport(action:)``).
    public func report(action: String, stats: [String: UInt64]) {
        lock.locked { reports[action] = stats }
    }

    // MARK: Inspection

    /// The stats of the latest report of `action` (database path → nanoseconds).
    public func lastReport(action: String) -> [String: UInt64]? { lock.locked { reports[action] } }

    /// Errors from deleting checkpoints dropped by the latest ``write(epoch:metric:)``.
    public var lastRemovalErrors: [CheckpointError] { lock.locked { removalErrors } }

    /// The complete epochs recorded in the metadata file, oldest first.
    public func completeEpochs() throws(CheckpointError) -> [EpochRecord] {
        try readRecords(try requireParams()).records.sorted { $0.epoch < $1.epoch }
    }

    /// The epochs recorded as damaged in the metadata file, oldest first.
    public func damagedEpochs() throws(CheckpointError) -> [DamagedEpoch] {
        try readRecords(try requireParams()).damaged.sorted { $0.epoch < $1.epoch }
    }

    /// The metadata file's path (after ``setParams(dbPrefix:dbType:nodeNames:pathPrefix:pathType:)``).
    public var metadataPath: String? { lock.locked { params }.map(metadataPath) }

    // MARK: The file

    struct State {
        var records: [EpochRecord] = []
        var resumedFrom: Int?
        var damaged: [DamagedEpoch] = []
    }

    private func requireParams() throws(CheckpointError) -> Params {
        guard let params = lock.locked({ params }) else {
            throw CheckpointError(.invalidState(reason: "DurableMetadataHandler: setParams was not called: call manager.setParams() (or handler.setParams(dbPrefix:dbType:nodeNames:pathPrefix:pathType:)) first; CheckpointManager.initialize() and JobRunner.train() call it when nobody did"))
        }
        return params
    }

    private func storage(_ params: Params) throws(CheckpointError) -> any CheckpointStorage {
        if let storageOverride { return storageOverride }
        return try CheckpointStorageRegistry.storage(for: params.pathType, path: params.dbPrefix)
    }

    private func metadataPath(_ params: Params) -> String {
        CheckpointNaming.join(params.dbPrefix, DurableMetadataHandler.fileName)
    }

    func readRecords(_ params: Params) throws(CheckpointError) -> State {
        let path = metadataPath(params)
        guard let bytes = try storage(params).readFile(path, limit: DurableMetadataHandler.maximumFileSize) else { return State() }
        return try DurableMetadataHandler.decode(bytes, path: path)
    }

    /// ``decode(_:)``, with errors naming the file.
    static func decode(_ bytes: [UInt8], path: String) throws(CheckpointError) -> State {
        do throws(CheckpointError) { return try decode(bytes) } catch { throw error.adding(path: path) }
    }

    /// Parses the file. Checks every epoch (a non-negative integer, recorded
    /// once) and every node name (as ``CheckpointNaming/validate(nodeName:)``)
    /// before anything acts on them: retention deletes files named after them.
    static func decode(_ bytes: [UInt8]) throws(CheckpointError) -> State {
        func invalid(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "checkpoint metadata", reason: reason)) }
        func epochAndNodes(_ item: JSONValue, _ what: String) throws(CheckpointError) -> (epoch: Int, nodes: [String]) {
            guard let value = item["epoch"] else { throw invalid("\(what) lacks 'epoch'") }
            guard let epoch = value.nonNegativeIntValue else { throw invalid("\(what) has epoch \(String(decoding: value.serialized(), as: UTF8.self).prefix(40)), not a non-negative integer") }
            guard let nodes = item["nodes"]?.arrayValue else { throw invalid("\(what) of epoch \(epoch) lacks 'nodes'") }
            var names: [String] = []
            for node in nodes {
                guard let name = node.stringValue else { throw invalid("a node name of epoch \(epoch) is not a string") }
                do throws(CheckpointError) { try CheckpointNaming.validate(nodeName: name) } catch {
                    throw invalid("epoch \(epoch) names node '\(name.prefix(80))', which is empty or has a NUL, '/' or '..'")
                }
                names.append(name)
            }
            return (epoch, names)
        }
        let json = try JSONValue.parse(bytes, what: "checkpoint metadata")
        guard json["format"]?.stringValue == formatName else { throw invalid("not a checkpoint metadata file") }
        guard let version = json["version"]?.intValue else { throw invalid("no version") }
        guard version == 1 else { throw CheckpointError(.unsupportedVersion(what: "checkpoint metadata", version: UInt32(clamping: version))) }
        guard let epochs = json["epochs"]?.arrayValue else { throw invalid("no epochs array") }
        var state = State()
        switch json["resumed_from"] {
        case nil, .null?: state.resumedFrom = nil
        case let value?:
            guard let epoch = value.nonNegativeIntValue else { throw invalid("resumed_from is neither null nor a non-negative integer") }
            state.resumedFrom = epoch
        }
        var seen = Set<Int>()
        for item in epochs {
            let (epoch, names) = try epochAndNodes(item, "an epoch record")
            guard seen.insert(epoch).inserted else { throw invalid("epoch \(epoch) is recorded twice") }
            let metric: Double?
            switch item["metric"] {
            case nil, .null?: metric = nil
            case let value?:
                guard let number = value.doubleValue else { throw invalid("metric of epoch \(epoch) is not a number") }
                metric = number
            }
            var references: [String] = []
            if let list = item["references"] {
                guard let items = list.arrayValue else { throw invalid("references of epoch \(epoch) is not an array") }
                for file in items {
                    guard let name = file.stringValue, (try? CheckpointNaming.validate(fileName: name)) != nil else {
                        throw invalid("a reference of epoch \(epoch) is not a file name inside the checkpoint directory")
                    }
                    references.append(name)
                }
            }
            state.records.append(EpochRecord(epoch: epoch, nodes: names, metric: metric, references: references))
        }
        // Optional (absent in files without damage, and in files of older versions).
        if let damaged = json["damaged"] {
            guard let items = damaged.arrayValue else { throw invalid("damaged is not an array") }
            var seenDamaged = Set<Int>()
            for item in items {
                let (epoch, names) = try epochAndNodes(item, "a damaged record")
                guard !seen.contains(epoch) else { throw invalid("epoch \(epoch) is recorded both complete and damaged") }
                guard seenDamaged.insert(epoch).inserted else { throw invalid("epoch \(epoch) is recorded damaged twice") }
                let reason: String
                switch item["reason"] {
                case nil, .null?: reason = ""
                case let value?:
                    guard let text = value.stringValue else { throw invalid("reason of damaged epoch \(epoch) is not a string") }
                    reason = text
                }
                state.damaged.append(DamagedEpoch(epoch: epoch, nodes: names, reason: reason))
            }
        }
        return state
    }

    private func encode(_ state: State, params: Params) -> [UInt8] {
        let epochs: [JSONValue] = state.records.map { record in
            var members: [(String, JSONValue)] = [
                ("epoch", .integer(record.epoch)),
                ("nodes", .array(record.nodes.map { .string($0) })),
                ("metric", record.metric.map { JSONValue.double($0) } ?? .null),
            ]
            // Only for incremental saves: other files stay as readers before it knew the member.
            if !record.references.isEmpty { members.append(("references", .array(record.references.map { .string($0) }))) }
            return .object(members)
        }
        var members: [(String, JSONValue)] = [
            ("format", .string(DurableMetadataHandler.formatName)),
            ("version", .integer(1)),
            ("db_type", .string(params.dbType)),
            ("resumed_from", state.resumedFrom.map { JSONValue.integer($0) } ?? .null),
            ("epochs", .array(epochs)),
        ]
        // Written only when there is damage: other files stay as version-1 readers before it knew them.
        if !state.damaged.isEmpty {
            members.append(("damaged", .array(state.damaged.map { record in
                .object([
                    ("epoch", .integer(record.epoch)),
                    ("nodes", .array(record.nodes.map { .string($0) })),
                    ("reason", .string(record.reason)),
                ])
            })))
        }
        let document = JSONValue.object(members)
        return document.serialized() + [0x0A]
    }
}

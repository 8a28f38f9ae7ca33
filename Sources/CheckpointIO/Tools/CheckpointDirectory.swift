import BlobCodec

/// A checkpoint directory written by the managers (FORMAT.md §6), read-only:
/// which epochs its metadata records, which files are on disk, which epoch a
/// run would resume from.
///
///     let run = try CheckpointDirectory.open("/ckpt/run1")
///     for epoch in run.epochs { print(epoch.epoch, epoch.status, epoch.isResumePoint) }
///     let reports = run.verify()   // every file the metadata names, every checksum
///
/// Opening reads `checkpoint_metadata.json`, lists the directory and checks
/// each checkpoint file's structure (container trailer and index CRC), not
/// its payloads; ``verify()`` reads every payload.
public struct CheckpointDirectory: Sendable {
    /// One checkpoint file of an epoch.
    public struct File: Sendable, Equatable {
        /// The node that wrote the file.
        public var node: String
        /// The file's path.
        public var path: String
        /// The file exists and its structure is complete (no torn end).
        public var isComplete: Bool
        /// The file exists (complete or not).
        public var exists: Bool
    }

    /// What the metadata and the files on disk say about an epoch.
    public enum EpochStatus: String, Sendable {
        /// Recorded in the metadata, and every file of it is complete.
        case complete
        /// Recorded, but a file is missing or torn: a resume skips it.
        case damaged
        /// Files on disk that the metadata does not record: a save killed before
        /// its metadata update, or a file retention has yet to delete. Never resumed from.
        case unrecorded
    }

    /// One epoch.
    public struct Epoch: Sendable {
        /// The epoch number.
        public var epoch: Int
        /// What the metadata and the files say about it.
        public var status: EpochStatus
        /// The metric recorded with the epoch.
        public var metric: Double?
        /// One file per node (the metadata's nodes, or the files found on disk).
        public var files: [File]
        /// The epoch a run resumes from: the newest complete recorded one.
        public var isResumePoint: Bool
        /// The epoch the latest run resumed from: retention never deletes it.
        public var isResumedFrom: Bool
        /// An unrecorded epoch whose files a recorded epoch's blob references
        /// point into (incremental saves): retention keeps them until no kept epoch does.
        public var isReferenced: Bool = false
    }

    /// The directory (`dbPrefix`).
    public let path: String
    /// The checkpoint format of the run (`ckpt` or `safetensors`).
    public let dbType: String
    /// The epoch the latest run resumed from, as the metadata records it.
    public let resumedFrom: Int?
    /// Recorded and unrecorded epochs, oldest first.
    public let epochs: [Epoch]
    /// Hidden temporaries of writes in flight or killed (`.NAME.tmp.PID.RANDOM`).
    public let temporaries: [String]

    /// The epoch a run would resume from, if any.
    public var resumeEpoch: Int? { epochs.last { $0.isResumePoint }?.epoch }

    /// The metadata file's path.
    public var metadataPath: String { CheckpointNaming.join(path, DurableMetadataHandler.fileName) }

    /// True when `path` is a directory holding `checkpoint_metadata.json`.
    public static func isCheckpointDirectory(_ path: String) -> Bool {
        AtomicFile.isDirectory(path) && AtomicFile.exists(CheckpointNaming.join(path, DurableMetadataHandler.fileName))
    }

    /// True when `path` names a file called `checkpoint_metadata.json`.
    public static func isMetadataFile(_ path: String) -> Bool {
        ContainerWriter.splitPath(path).base == DurableMetadataHandler.fileName && !AtomicFile.isDirectory(path)
    }

    /// Reads the directory at `path` (or the directory of a `checkpoint_metadata.json` path).
    ///
    /// - Throws: the system error when the metadata cannot be read;
    ///   `CheckpointError.Code.invalidField` or
    ///   `CheckpointError.Code.unsupportedVersion` when it is not valid metadata.
    public static func open(_ path: String) throws(CheckpointError) -> CheckpointDirectory {
        let directory = isMetadataFile(path) ? ContainerWriter.splitPath(path).directory : path
        let metadataPath = CheckpointNaming.join(directory, DurableMetadataHandler.fileName)
        guard let bytes = try AtomicFile.read(metadataPath, limit: DurableMetadataHandler.maximumFileSize, calls: .live) else {
            throw CheckpointError(.system(call: "open", errno: 2), path: metadataPath)
        }
        let state = try DurableMetadataHandler.decode(bytes, path: metadataPath)
        let dbType = (try? JSONValue.parse(bytes, what: "checkpoint metadata"))?["db_type"]?.stringValue ?? "ckpt"
        let format: CheckpointFormat
        do throws(CheckpointError) { format = try CheckpointFormat(dbType: dbType) } catch { throw error.adding(path: metadataPath) }
        let storage = LocalCheckpointStorage()

        func file(_ node: String, _ epoch: Int) -> File {
            let filePath = CheckpointNaming.dbName(epoch: epoch, nodeName: node, dbPrefix: directory)
            return File(node: node, path: filePath, isComplete: storage.isCompleteCheckpoint(filePath, format: format), exists: AtomicFile.exists(filePath))
        }

        var epochs: [Epoch] = []
        for record in state.records.sorted(by: { $0.epoch < $1.epoch }) {
            let files = record.nodes.map { file($0, record.epoch) }
            let complete = !files.isEmpty && files.allSatisfy(\.isComplete)
            epochs.append(Epoch(epoch: record.epoch, status: complete ? .complete : .damaged, metric: record.metric, files: files,
                                isResumePoint: false, isResumedFrom: record.epoch == state.resumedFrom))
        }
        // Files NODE.EPOCH that no record names.
        let recorded = Set(state.records.map(\.epoch))
        var unrecorded: [Int: [File]] = [:]
        var temporaries: [String] = []
        for name in AtomicFile.listDirectory(directory).sorted() {
            if name.hasPrefix(".") {
                if AtomicFile.parseTemporaryName(name) != nil { temporaries.append(name) }
                continue
            }
            guard !name.hasSuffix(".lock"), let dot = name.lastIndex(of: ".") else { continue }
            let node = String(name[..<dot]), digits = String(name[name.index(after: dot)...])
            guard !node.isEmpty, let epoch = Int(digits), epoch >= 0, String(epoch) == digits, !recorded.contains(epoch) else { continue }
            unrecorded[epoch, default: []].append(file(node, epoch))
        }
        let referenced = Set(state.records.flatMap(\.references))
        for (epoch, files) in unrecorded {
            epochs.append(Epoch(epoch: epoch, status: .unrecorded, metric: nil, files: files, isResumePoint: false, isResumedFrom: false,
                                isReferenced: files.contains { referenced.contains(ContainerWriter.splitPath($0.path).base) }))
        }
        epochs.sort { $0.epoch < $1.epoch }
        if let newest = epochs.lastIndex(where: { $0.status == .complete }) { epochs[newest].isResumePoint = true }
        return CheckpointDirectory(path: directory, dbType: dbType, resumedFrom: state.resumedFrom, epochs: epochs, temporaries: temporaries)
    }

    /// Verifies every file the metadata names (``TensorVerification/verify(_:)``):
    /// one result per file, in epoch order; a missing or unreadable file is a failure.
    public func verify() -> [(epoch: Int, file: File, result: Result<VerificationReport, CheckpointError>)] {
        var results: [(epoch: Int, file: File, result: Result<VerificationReport, CheckpointError>)] = []
        for epoch in epochs where epoch.status != .unrecorded {
            for file in epoch.files {
                do throws(CheckpointError) {
                    results.append((epoch.epoch, file, .success(try TensorVerification.verify(file.path))))
                } catch {
                    results.append((epoch.epoch, file, .failure(error)))
                }
            }
        }
        return results
    }
}

import BlobCodec

/// The file format of a checkpoint: Caffe2's `db_type`.
public enum CheckpointFormat: String, Sendable, CaseIterable {
    /// This package's container (FORMAT.md): CRC32C on every blob, optional
    /// compression, atomic commit. The default.
    case container = "ckpt"
    /// Hugging Face safetensors, for interchange. **No checksums**: a damaged
    /// tensor is not detected on load.
    case safetensors = "safetensors"
    /// Caffe2's `minidb` (``MiniDBFile``), to read a Caffe2 user's checkpoints
    /// and write ones Caffe2 loads. **No checksums**: a damaged tensor is not
    /// detected on load; the blob list is kept as Caffe2 keeps it, in the
    /// STRING blob ``MiniDBFile/blobListBlobName``.
    case minidb = "minidb"

    /// The format a `dbType` string names: `"ckpt"` (or `"container"`), `"safetensors"` or `"minidb"`.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for any other string.
    public init(dbType: String) throws(CheckpointError) {
        switch dbType {
        case "ckpt", "container": self = .container
        case "safetensors": self = .safetensors
        case "minidb": self = .minidb
        default:
            throw CheckpointError(.invalidField(field: "dbType", reason: "'\(dbType)' is not a supported format (use \"ckpt\", \"safetensors\" or \"minidb\")"))
        }
    }
}

/// Reads one checkpoint file, whatever its format.
public protocol CheckpointFileReading: AnyObject {
    /// The blob names, sorted by their UTF-8 bytes.
    var blobNames: [String] { get }
    /// File-level metadata (the container's metadata, safetensors' `__metadata__`).
    var fileMetadata: [String: String] { get }
    /// True when the file has a blob of this name.
    func hasBlob(_ name: String) -> Bool
    /// The dtype, shape and decoded size of a blob.
    func blobInfo(_ name: String) throws(CheckpointError) -> (dtype: DType, shape: Shape, byteCount: Int)
    /// Reads (and, where the format has checksums, verifies) a blob into `destination`, exactly its size.
    func readBlob(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError)
    /// ``readBlob(_:into:)`` for several blobs, each into its own destination; a
    /// format may read them in parallel. Stops at the first failure. The
    /// default reads them one after the other.
    func readBlobs(_ requests: [(name: String, destination: UnsafeMutableRawBufferPointer)]) throws(CheckpointError)
}

extension CheckpointFileReading {
    /// Reads the blobs one after the other with ``readBlob(_:into:)``.
    public func readBlobs(_ requests: [(name: String, destination: UnsafeMutableRawBufferPointer)]) throws(CheckpointError) {
        for request in requests {
            do throws(CheckpointError) {
                try readBlob(request.name, into: request.destination)
            } catch {
                throw error.adding(blobName: request.name)
            }
        }
    }

    /// Reads blob `name` into a new ``Tensor``, in the memory the managers'
    /// loads use (2 MiB-aligned with transparent huge pages for 2 MiB and more,
    /// which cuts the page faults of filling it). The size comes from the file
    /// and is checked before anything is allocated; a `STRING` tensor's
    /// encoding is checked too.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound` for a name the file lacks;
    ///   `CheckpointError.Code.limitExceeded` for a declared size above 64 GiB or
    ///   memory that cannot be allocated; any error of ``readBlob(_:into:)``.
    public func readTensor(_ name: String) throws(CheckpointError) -> Tensor {
        try readTensors([name])[0]
    }

    /// ``readTensor(_:)`` for several blobs: every tensor's memory is allocated
    /// first (each size checked from the file), then one ``readBlobs(_:)`` fills
    /// them, so a format that reads in parallel decodes small blobs side by side.
    ///
    /// - Throws: the errors of ``readTensor(_:)``, naming the blob.
    public func readTensors(_ names: [String]) throws(CheckpointError) -> [Tensor] {
        var tensors: [Tensor] = []
        tensors.reserveCapacity(names.count)
        for name in names {
            do throws(CheckpointError) {
                let info = try blobInfo(name)
                tensors.append(Tensor(dtype: info.dtype, shape: info.shape, storage: try TensorStorage(checkedByteCount: info.byteCount)))
            } catch {
                throw error.adding(blobName: name)
            }
        }
        try readBlobs(zip(names, tensors).map { ($0, UnsafeMutableRawBufferPointer(start: $1.storage.base, count: $1.byteCount)) })
        for (name, tensor) in zip(names, tensors) where tensor.dtype == .string {
            do throws(CheckpointError) {
                _ = try tensor.strings()
            } catch {
                throw error.adding(blobName: name)
            }
        }
        return tensors
    }
}

extension ContainerReader: CheckpointFileReading {
    /// The live blob names (``ContainerReader/names``).
    public var blobNames: [String] { names }
    /// The file-level metadata (``ContainerReader/metadata``).
    public var fileMetadata: [String: String] { metadata }
    /// Whether a live blob has this name (``ContainerReader/contains(_:)``).
    public func hasBlob(_ name: String) -> Bool { contains(name) }
    /// The dtype, shape and decoded size of a blob, from the index; touches no payload.
    public func blobInfo(_ name: String) throws(CheckpointError) -> (dtype: DType, shape: Shape, byteCount: Int) {
        let entry = try descriptor(name)
        return (entry.dtype, entry.shape, entry.rawSizeInBytes)
    }
    /// Decodes a blob into `destination`, checking every CRC32C.
    public func readBlob(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        try read(name, into: destination, verify: true)
    }
    /// Decodes several blobs in parallel, checking every CRC32C (``ContainerReader/read(batch:verify:)``).
    public func readBlobs(_ requests: [(name: String, destination: UnsafeMutableRawBufferPointer)]) throws(CheckpointError) {
        try read(batch: requests, verify: true)
    }
}

extension MiniDBFile: CheckpointFileReading {
    public var blobNames: [String] { names }
    /// Only the blob list (``CheckpointManager/blobListKey``), from the
    /// ``MiniDBFile/blobListBlobName`` blob: minidb has no file metadata.
    public var fileMetadata: [String: String] {
        guard let storedBlobList else { return [:] }
        return [CheckpointManager.blobListKey: JSONValue.array(storedBlobList.map { .string($0) }).text]
    }
    public func hasBlob(_ name: String) -> Bool { contains(name) }
    public func blobInfo(_ name: String) throws(CheckpointError) -> (dtype: DType, shape: Shape, byteCount: Int) {
        let entry = try entry(name)
        return (entry.dtype, entry.shape, entry.byteCount)
    }
    public func readBlob(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        try read(name, into: destination)
    }
}

extension SafetensorsFile: CheckpointFileReading {
    /// The tensor names (``SafetensorsFile/names``).
    public var blobNames: [String] { names }
    /// The `__metadata__` map, empty when the header has none.
    public var fileMetadata: [String: String] { metadata ?? [:] }
    /// Whether a tensor has this name (``SafetensorsFile/contains(_:)``).
    public func hasBlob(_ name: String) -> Bool { contains(name) }
    /// The dtype, shape and size of a tensor, from the header.
    public func blobInfo(_ name: String) throws(CheckpointError) -> (dtype: DType, shape: Shape, byteCount: Int) {
        let entry = try entry(name)
        return (entry.dtype, entry.shape, entry.dataRange.count)
    }
    /// Copies a tensor's bytes into `destination` (safetensors has no checksums).
    public func readBlob(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        try read(name, into: destination)
    }
    /// Copies several tensors (``SafetensorsFile/read(batch:)``: grouped and in
    /// parallel on a remote source).
    public func readBlobs(_ requests: [(name: String, destination: UnsafeMutableRawBufferPointer)]) throws(CheckpointError) {
        try read(batch: requests)
    }
}

/// Where checkpoint files live: Caffe2's `path_type`.
///
/// The managers and ``DurableMetadataHandler`` touch storage only through
/// this protocol, so a backend for another kind of storage (an object store)
/// is a new conforming type registered with ``CheckpointStorageRegistry``,
/// with no change to the managers. ``LocalCheckpointStorage`` (`"local"`) is
/// POSIX files.
///
/// Contract: ``writeCheckpoint(_:metadata:to:format:options:)`` and
/// ``writeFile(_:to:durability:)`` are atomic (after an error the old content
/// or absence is intact; no partial object is ever visible under `path`).
public protocol CheckpointStorage: Sendable {
    /// Writes `blobs` as one complete checkpoint file at `path`, atomically.
    func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
                         format: CheckpointFormat, options: WriterOptions) throws(CheckpointError)
    /// Opens a checkpoint file for reading, validating its structure.
    func openCheckpoint(_ path: String, format: CheckpointFormat) throws(CheckpointError) -> any CheckpointFileReading
    /// True only when `path` holds a complete, committed checkpoint. Cheap:
    /// checks the structure (container trailer and index CRC; safetensors
    /// header and size), not every payload.
    func isCompleteCheckpoint(_ path: String, format: CheckpointFormat) -> Bool
    /// Removes the checkpoint file `name` directly inside `directory`; a
    /// missing file is not an error. Implementations must refuse (throw,
    /// remove nothing) a `name` that is not one file name inside `directory`
    /// (``CheckpointNaming/validate(fileName:)``): whatever a caller passes,
    /// nothing outside the directory is removed.
    func removeCheckpoint(_ name: String, in directory: String) throws(CheckpointError)
    /// Creates `directory` (and its missing parents) unless it exists,
    /// durably for ``Durability/full``. Storage without directories does nothing.
    func createDirectory(_ directory: String, durability: Durability) throws(CheckpointError)
    /// True when checkpoints can be written under `directory`.
    func isAccessible(directory: String) -> Bool
    /// Replaces a small file atomically (metadata).
    func writeFile(_ bytes: [UInt8], to path: String, durability: Durability) throws(CheckpointError)
    /// Reads a small file of at most `limit` bytes; nil when it does not exist.
    func readFile(_ path: String, limit: Int) throws(CheckpointError) -> [UInt8]?
    /// Removes what writes killed mid-way left behind in `directory` for
    /// targets whose names start with `targetPrefix` (never a live writer's
    /// files), and returns their names.
    func removeAbandonedWrites(in directory: String, targetPrefix: String) -> [String]
    /// The names of the files directly in `directory` (empty if it cannot be listed).
    func listFiles(in directory: String) -> [String]
    /// Replaces a small file with `transform(old content)` as one atomic
    /// read-modify-write that excludes other writers of `path` (nil content:
    /// the file does not exist). Returns the new content.
    func updateFile(_ path: String, limit: Int, durability: Durability,
                    _ transform: ([UInt8]?) throws(CheckpointError) -> [UInt8]) throws(CheckpointError) -> [UInt8]
    /// Creates the small file `path` holding `bytes` only if nothing exists
    /// at `path`, as one atomic step: of concurrent callers in any process or
    /// machine sharing the storage exactly one gets `true`; the others get
    /// `false` and change nothing. A reader never sees a partial file.
    /// (Local files: a hard link of a synced temporary; object stores: a
    /// conditional `PUT` with `If-None-Match: *`.)
    func createFileIfAbsent(_ bytes: [UInt8], at path: String, durability: Durability) throws(CheckpointError) -> Bool
    /// Takes the exclusive right to write checkpoints named `name` in
    /// `directory`, without waiting; it lasts until the returned token is released
    /// (deinitialized). Throws `CheckpointError.Code.writerLocked` when
    /// another process (or manager) holds it.
    func lockWriter(in directory: String, name: String) throws(CheckpointError) -> AnyObject
}

extension CheckpointStorage {
    /// Storage whose writes leave nothing behind has nothing to remove.
    public func removeAbandonedWrites(in directory: String, targetPrefix: String) -> [String] { [] }
    /// Storage without directories has none to create.
    public func createDirectory(_ directory: String, durability: Durability) throws(CheckpointError) {}
}

/// A storage that wraps another and forwards every call to it: conform,
/// give ``base``, and implement only the calls to change (to count, log,
/// throttle or fail them).
///
///     struct CountingStorage: CheckpointStorageDecorator {
///         let base: any CheckpointStorage = LocalCheckpointStorage()
///         func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
///                              format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
///             print("saving \(path)")
///             try base.writeCheckpoint(blobs, metadata: metadata, to: path, format: format, options: options)
///         }
///     }
public protocol CheckpointStorageDecorator: CheckpointStorage {
    /// The storage calls go to.
    var base: any CheckpointStorage { get }
}

extension CheckpointStorageDecorator {
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
                                format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
        try base.writeCheckpoint(blobs, metadata: metadata, to: path, format: format, options: options)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func openCheckpoint(_ path: String, format: CheckpointFormat) throws(CheckpointError) -> any CheckpointFileReading {
        try base.openCheckpoint(path, format: format)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func isCompleteCheckpoint(_ path: String, format: CheckpointFormat) -> Bool { base.isCompleteCheckpoint(path, format: format) }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func removeCheckpoint(_ name: String, in directory: String) throws(CheckpointError) { try base.removeCheckpoint(name, in: directory) }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func createDirectory(_ directory: String, durability: Durability) throws(CheckpointError) {
        try base.createDirectory(directory, durability: durability)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func isAccessible(directory: String) -> Bool { base.isAccessible(directory: directory) }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func writeFile(_ bytes: [UInt8], to path: String, durability: Durability) throws(CheckpointError) {
        try base.writeFile(bytes, to: path, durability: durability)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func readFile(_ path: String, limit: Int) throws(CheckpointError) -> [UInt8]? { try base.readFile(path, limit: limit) }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func removeAbandonedWrites(in directory: String, targetPrefix: String) -> [String] {
        base.removeAbandonedWrites(in: directory, targetPrefix: targetPrefix)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func listFiles(in directory: String) -> [String] { base.listFiles(in: directory) }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func updateFile(_ path: String, limit: Int, durability: Durability,
                           _ transform: ([UInt8]?) throws(CheckpointError) -> [UInt8]) throws(CheckpointError) -> [UInt8] {
        try base.updateFile(path, limit: limit, durability: durability, transform)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func createFileIfAbsent(_ bytes: [UInt8], at path: String, durability: Durability) throws(CheckpointError) -> Bool {
        try base.createFileIfAbsent(bytes, at: path, durability: durability)
    }
    /// Forwards to the wrapped storage (see ``CheckpointStorage``).
    public func lockWriter(in directory: String, name: String) throws(CheckpointError) -> AnyObject {
        try base.lockWriter(in: directory, name: name)
    }
}

/// Checkpoint files on a POSIX file system (`path_type` `"local"`).
public struct LocalCheckpointStorage: CheckpointStorage {
    let calls: SystemCalls

    /// The local file system, through the live system calls.
    public init() { self.calls = .live }
    init(calls: SystemCalls) { self.calls = calls }

    /// How long a checkpoint write waits for the file's writer lock `PATH.lock`
    /// while someone else holds it, in seconds. The cleanups that check a
    /// temporary or a stale lock file (``removeAbandonedWrites(in:targetPrefix:)``,
    /// ``removeCheckpoint(_:in:)``) hold it for a moment; a writer of the same
    /// checkpoint holding it longer is still an error (`CheckpointError.Code.writerLocked`).
    static let writerLockPatience = 2.0

    /// Writes the file through a temporary and a rename (see ``CheckpointStorage``);
    /// waits up to 2 s for the file's writer lock when another process holds it.
    public func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
                                format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
        switch format {
        case .container:
            var options = options
            options.systemCalls = calls
            // Nothing is written before the lock is taken, so trying again is safe.
            let writer = try AtomicFile.retryingWhileLocked(timeout: LocalCheckpointStorage.writerLockPatience) { () throws(CheckpointError) in
                try ContainerWriter.create(at: path, options: options)
            }
            try writer.writeAndCommit(blobs, metadata: metadata)
        case .safetensors:
            try AtomicFile.retryingWhileLocked(timeout: LocalCheckpointStorage.writerLockPatience) { () throws(CheckpointError) in
                try SafetensorsFile.write(blobs, metadata: metadata, to: path, durability: options.durability, calls: calls)
            }
        case .minidb:
            // minidb has no metadata: only the blob list is kept, as Caffe2 keeps it (a blob).
            let list = try metadata[CheckpointManager.blobListKey].map { (text) throws(CheckpointError) -> [String] in
                try CheckpointManager.storedBlobList(fromJSON: text, path: path)
            }
            try AtomicFile.retryingWhileLocked(timeout: LocalCheckpointStorage.writerLockPatience) { () throws(CheckpointError) in
                try MiniDBFile.write(blobs, blobList: list, to: path, durability: options.durability, calls: calls)
            }
        }
    }

    /// Opens a container or safetensors file, checking its trailer and index (or header); reads no payload.
    public func openCheckpoint(_ path: String, format: CheckpointFormat) throws(CheckpointError) -> any CheckpointFileReading {
        switch format {
        case .container:
            let reader = try ContainerReader.open(path, options: ReaderOptions(mode: .mmap, systemCalls: calls))
            guard reader.tornBytes == 0 else {
                throw CheckpointError(.tornFile(reason: "\(reader.tornBytes) bytes after the last commit"), path: path)
            }
            // Blob references (incremental checkpoints) resolve through this storage, relative to the file's directory.
            reader.referenceResolver = StorageReferenceResolver(storage: self, directory: ContainerWriter.splitPath(path).directory)
            return reader
        case .safetensors:
            return try SafetensorsFile.open(path, calls: calls)
        case .minidb:
            return try MiniDBFile.open(path, calls: calls)
        }
    }

    /// Whether the file exists and its structure is complete (no torn end); reads no payload.
    public func isCompleteCheckpoint(_ path: String, format: CheckpointFormat) -> Bool {
        switch format {
        case .container:
            guard let reader = try? ContainerReader.open(path, options: ReaderOptions(mode: .pread, systemCalls: calls)) else { return false }
            return reader.tornBytes == 0
        case .safetensors:
            return (try? SafetensorsFile.open(path, calls: calls)) != nil
        case .minidb:
            // No index or trailer: every record is parsed (O(file size)).
            return (try? MiniDBFile.open(path, calls: calls)) != nil
        }
    }

    /// Removes `directory/name`, then a lock file a killed writer may have
    /// left beside it (only if nobody holds it).
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for a
    ///   `name` that is empty, `.` or `..`, or has a `/` or a NUL (nothing is
    ///   removed); `unlink`'s errors other than ENOENT.
    public func removeCheckpoint(_ name: String, in directory: String) throws(CheckpointError) {
        try CheckpointNaming.validate(fileName: name)
        let path = CheckpointNaming.join(directory, name)
        try AtomicFile.remove(path, calls: calls)
        if AtomicFile.exists(path + ".lock"), let lock = try? WriterLock.acquire(for: path, directory: directory.isEmpty ? "." : directory, calls: calls) {
            lock.release()
        }
    }

    /// `mkdir -p`, then for ``Durability/full`` an fsync of the parent of each directory created.
    public func createDirectory(_ directory: String, durability: Durability) throws(CheckpointError) {
        try AtomicFile.makeDirectoryDurably(directory, durability: durability, calls: calls)
    }

    /// Whether `directory` exists and this process may read and write in it.
    public func isAccessible(directory: String) -> Bool {
        AtomicFile.isWritableDirectory(directory.isEmpty ? "." : directory)
    }

    /// Writes `bytes` to `path` atomically (temporary file, rename), synced as `durability` says.
    public func writeFile(_ bytes: [UInt8], to path: String, durability: Durability) throws(CheckpointError) {
        try typedThrows {
            try bytes.withUnsafeBytes { buffer in try AtomicFile.write([buffer], to: path, durability: durability, calls: calls) }
        }
    }

    /// The bytes of `path`, nil when it does not exist; throws when it holds more than `limit` bytes.
    public func readFile(_ path: String, limit: Int) throws(CheckpointError) -> [UInt8]? {
        try AtomicFile.read(path, limit: limit, calls: calls)
    }

    /// Removes temporary files (`.TARGET.tmp.PID.RANDOM`) whose writer was
    /// killed: those whose target's writer lock nobody holds.
    public func removeAbandonedWrites(in directory: String, targetPrefix: String) -> [String] {
        AtomicFile.removeAbandonedTemporaries(in: directory, targetPrefix: targetPrefix, calls: calls)
    }

    /// The names of the entries of `directory` (empty when it cannot be listed).
    public func listFiles(in directory: String) -> [String] { AtomicFile.listDirectory(directory) }

    /// Holds `PATH.lock` (as every writer of `path` does) across the read, the
    /// transform and the atomic replace; waits (up to 30 s) while another
    /// writer holds it.
    public func updateFile(_ path: String, limit: Int, durability: Durability,
                           _ transform: ([UInt8]?) throws(CheckpointError) -> [UInt8]) throws(CheckpointError) -> [UInt8] {
        try ContainerWriter.validatePath(path)
        let lock = try WriterLock.acquireWaiting(for: path, directory: ContainerWriter.splitPath(path).directory, calls: calls)
        defer { lock.release() }
        let updated = try transform(try AtomicFile.read(path, limit: limit, calls: calls))
        try typedThrows {
            try updated.withUnsafeBytes { buffer in try AtomicFile.write([buffer], to: path, durability: durability, calls: calls, lockHeld: true) }
        }
        return updated
    }

    /// Writes a synced temporary and hard-links it to `path` (`link` fails
    /// with EEXIST when `path` exists, atomically, NFS included).
    public func createFileIfAbsent(_ bytes: [UInt8], at path: String, durability: Durability) throws(CheckpointError) -> Bool {
        try ContainerWriter.validatePath(path)
        return try typedThrows {
            try bytes.withUnsafeBytes { buffer in
                try AtomicFile.createIfAbsent([buffer], at: path, durability: durability, calls: calls)
            }
        }
    }

    /// An exclusive `flock` on `DIRECTORY/.NAME.writer.lock`, released when the token is deinitialized.
    public func lockWriter(in directory: String, name: String) throws(CheckpointError) -> AnyObject {
        let target = CheckpointNaming.join(directory, ".\(name).writer")
        do throws(CheckpointError) {
            return WriterToken(try WriterLock.acquire(for: target, directory: directory.isEmpty ? "." : directory, calls: calls))
        } catch {
            if error.code == .writerLocked {
                throw CheckpointError(.writerLocked, path: CheckpointNaming.join(directory, name + ".*"))
            }
            throw error
        }
    }
}

/// A held ``WriterLock``, released on deinit.
final class WriterToken: @unchecked Sendable {
    private let lock: WriterLock
    init(_ lock: WriterLock) { self.lock = lock }
    deinit { lock.release() }
}

/// The storage backends by `path_type`. `"local"` is always registered.
public enum CheckpointStorageRegistry {
    private static let lock = PThreadLock()
    nonisolated(unsafe) private static var backends: [String: any CheckpointStorage] = ["local": LocalCheckpointStorage()]

    /// Registers (or replaces) the backend for `pathType`.
    public static func register(_ storage: any CheckpointStorage, for pathType: String) {
        lock.locked { backends[pathType] = storage }
    }

    /// The backend for `pathType`. Without one, a `path` that starts with
    /// `SCHEME://` (`s3://bucket/run1`) names the path type `SCHEME`; anything
    /// else is `"local"`.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for an unregistered path type.
    public static func storage(for pathType: String?, path: String? = nil) throws(CheckpointError) -> any CheckpointStorage {
        let key = pathType ?? path.flatMap(scheme(of:)) ?? "local"
        guard let storage = lock.locked({ backends[key] }) else {
            throw CheckpointError(.invalidField(field: "pathType", reason: "no storage backend registered for '\(key)'"))
        }
        return storage
    }

    /// `SCHEME` of a `SCHEME://…` path (lower-case letters, digits, `+-.`), or nil.
    public static func scheme(of path: String) -> String? {
        let scheme = path.prefix { $0 != ":" }
        guard path.dropFirst(scheme.count).hasPrefix("://"), let first = scheme.first, first.isLetter,
              scheme.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || "+-.".contains($0) }) else { return nil }
        return scheme.lowercased()
    }
}

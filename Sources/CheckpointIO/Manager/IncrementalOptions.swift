import BlobCodec
import Synchronization

/// Incremental checkpoints: a save writes only the blobs that changed since
/// the manager last saved (or loaded) them, and a blob reference (FORMAT.md
/// §4.3.1) for every other one.
///
///     var options = CheckpointOptions()
///     options.incremental = IncrementalOptions(fullEvery: 10)
///     let manager = try CheckpointManager(dbPrefix: "/ckpt/run1", nodeName: "trainer_0",
///                                         metadataHandler: DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2)),
///                                         workspace: workspace, options: options)
///
/// Change detection reads no payload byte: ``Tensor`` storage is
/// copy-on-write and counts its in-place mutations, so the manager knows
/// whether a blob's storage is the very one it saved last time, unmutated.
/// A blob replaced by a new tensor (a load, ``Workspace/setBlob(_:_:)``) or
/// mutated through ``Tensor/withUnsafeMutableBytes(_:)`` is written again.
///
/// Every `fullEvery` saves the manager writes a full checkpoint (every blob's
/// bytes), so that retention can eventually delete the files older ones
/// refer to. References always point at a stored blob (depth 1), never at
/// another reference, and never into the file being replaced.
///
/// Only the container format (`dbType` `"ckpt"`) has references; with
/// safetensors every save is full. Each file lists the files it refers to in
/// its metadata (``CheckpointManager/referencesKey``), and
/// ``DurableMetadataHandler`` keeps them in its epoch records so that
/// retention never deletes a file a kept epoch refers to.
public struct IncrementalOptions: Sendable, Equatable {
    /// A full checkpoint at least every `fullEvery` saves (≥ 1; 1 means every save is full).
    public var fullEvery: Int

    /// - Precondition: `fullEvery` ≥ 1.
    public init(fullEvery: Int = 10) {
        precondition(fullEvery >= 1, "fullEvery must be at least 1")
        self.fullEvery = fullEvery
    }
}

/// What one node's manager remembers of the blobs it saved or loaded: for
/// each name, the storage (weakly, so nothing is kept alive) with its
/// mutation count at that time, and where the bytes now lie as a reference.
final class IncrementalTracker: @unchecked Sendable {
    private struct Saved {
        weak var storage: TensorStorage?
        let mutations: UInt64
        let dtype: DType
        let shape: Shape
        let reference: BlobReference
    }

    private let lock = PThreadLock()
    private var saved: [BlobName: Saved] = [:]
    private var savesSinceFull: Int?  // nil: no full save yet (the next save is full)

    /// What a save of `snapshot` into the file `fileName` writes: per blob,
    /// nil (its bytes) or the reference that replaces them; and the distinct
    /// files referred to. A full save (the first, or every `fullEvery`-th)
    /// refers to nothing.
    func plan(_ snapshot: [(name: String, tensor: Tensor)], fileName: String, options: IncrementalOptions) -> (references: [BlobReference?], files: [String], savesSinceFull: Int) {
        lock.locked {
            let full = savesSinceFull.map { $0 + 1 >= options.fullEvery } ?? true
            guard !full else { return ([BlobReference?](repeating: nil, count: snapshot.count), [], 0) }
            var files = Set<String>()
            let references = snapshot.map { item -> BlobReference? in
                guard let entry = saved[BlobName(item.name)], let storage = entry.storage, storage === item.tensor.storage,
                      storage.mutationCount == entry.mutations, entry.dtype == item.tensor.dtype, entry.shape == item.tensor.shape,
                      // The file being replaced cannot hold what it refers to.
                      entry.reference.fileName != fileName
                else { return nil }
                files.insert(entry.reference.fileName)
                return entry.reference
            }
            return (references, files.sorted(), savesSinceFull! + 1)
        }
    }

    /// Records that `tensors` now lie in `reader`'s file (saved there, or
    /// loaded from it): each blob's reference is its own record there or, for
    /// a reference, the reference's target (depth 1), with the storage's
    /// mutation count now (the snapshot the caller holds keeps the storage
    /// shared, so it cannot have been mutated in place since the snapshot).
    /// `savesSinceFull` is the count after this file (0 for a full one).
    /// Forgets every other name.
    func record(_ tensors: [(name: String, tensor: Tensor)], in reader: ContainerReader, savesSinceFull count: Int) throws(CheckpointError) {
        let fileName = ContainerWriter.splitPath(reader.path).base
        var updated: [BlobName: Saved] = [:]
        for item in tensors {
            let reference = try reader.blobReference(to: item.name, fileName: fileName)
            updated[BlobName(item.name)] = Saved(storage: item.tensor.storage, mutations: item.tensor.storage.mutationCount, dtype: item.tensor.dtype,
                                                 shape: item.tensor.shape, reference: reference)
        }
        lock.locked {
            saved = updated
            savesSinceFull = count
        }
    }

    /// Forgets everything: the next save is full.
    func reset() {
        lock.locked {
            saved = [:]
            savesSinceFull = nil
        }
    }
}

extension ContainerReader {
    /// The reference a file in the same directory would store for blob `name`
    /// of this file (named `fileName` there): its own record, or, if `name` is
    /// a reference itself, that reference (depth 1). Reads the record's frame
    /// and header, no payload.
    func blobReference(to name: String, fileName: String) throws(CheckpointError) -> BlobReference {
        if let reference = try reference(name) { return reference }
        let entry = try descriptor(name)
        return BlobReference(fileName: fileName, target: entry, storedCRC32C: try storedCRC(of: entry))
    }
}

extension TensorStorage {
    /// How many times a tensor was given these bytes for writing (``Tensor/withUnsafeMutableBytes(_:)``).
    var mutationCount: UInt64 { mutations.load(ordering: .acquiring) }

    /// Counts one more write access (before it happens).
    func noteMutation() { mutations.add(1, ordering: .releasing) }
}

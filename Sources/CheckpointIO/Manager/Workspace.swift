import BlobCodec

/// A thread-safe store of named blobs: what a job trains and a
/// ``CheckpointManager`` saves and loads (Caffe2's workspace).
///
///     let workspace = Workspace()
///     workspace["total"] = Tensor(scalar: Int64(100))
///     try workspace.update("total") { total in
///         total.withUnsafeMutableBytes { $0.storeBytes(of: Int64(103), as: Int64.self) }
///     }
///
/// Names are compared by their UTF-8 bytes (`BlobName`), as in a file:
/// `"\u{E9}"` and `"e\u{301}"` are two blobs.
///
/// Every method takes one lock, so each call is atomic with respect to the
/// others. Blobs are ``Tensor``s, whose payloads are copy-on-write: reading a
/// blob out, or taking a ``snapshot(_:)``, copies no bytes.
public final class Workspace: @unchecked Sendable {
    private let lock = PThreadLock()
    private var blobs: [BlobName: Tensor]

    /// A workspace holding `blobs` (empty by default).
    public init(_ blobs: [String: Tensor] = [:]) {
        self.blobs = Dictionary(uniqueKeysWithValues: blobs.map { (BlobName($0.key), $0.value) })
    }

    /// The blob names, sorted by their UTF-8 bytes (the order of a container's index).
    public var blobNames: [String] {
        lock.locked { blobs.keys.sorted().map(\.string) }
    }

    /// The number of blobs.
    public var count: Int { lock.locked { blobs.count } }

    /// True when a blob of this name exists.
    public func hasBlob(_ name: String) -> Bool { lock.locked { blobs[BlobName(name)] != nil } }

    /// The blob of this name, or nil. Shares its bytes (no copy).
    public func blob(_ name: String) -> Tensor? { lock.locked { blobs[BlobName(name)] } }

    /// The blob of this name.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound`.
    public func fetchBlob(_ name: String) throws(CheckpointError) -> Tensor {
        guard let tensor = blob(name) else { throw CheckpointError(.blobNotFound(name), blobName: name) }
        return tensor
    }

    /// Sets (adds or replaces) a blob.
    public func setBlob(_ name: String, _ tensor: Tensor) { lock.locked { blobs[BlobName(name)] = tensor } }

    /// Gets, sets (a non-nil value) or removes (nil) a blob.
    public subscript(name: String) -> Tensor? {
        get { blob(name) }
        set { lock.locked { blobs[BlobName(name)] = newValue } }
    }

    /// Removes a blob; returns it, or nil when there was none.
    @discardableResult
    public func removeBlob(_ name: String) -> Tensor? { lock.locked { blobs.removeValue(forKey: BlobName(name)) } }

    /// Removes every blob (Caffe2's `ResetWorkspace`).
    public func reset() { lock.locked { blobs.removeAll() } }

    /// Mutates a blob in place, under the workspace's lock (keep `body` short).
    ///
    /// The tensor is mutated where it is stored, so its bytes are copied only
    /// if a snapshot or another copy still shares them.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound`, or what `body` throws.
    @discardableResult
    public func update<R>(_ name: String, _ body: (inout Tensor) throws -> R) throws -> R {
        try lock.locked { () throws -> R in
            let key = BlobName(name)
            guard blobs[key] != nil else { throw CheckpointError(.blobNotFound(name), blobName: name) }
            return try body(&blobs[key]!)
        }
    }

    /// The blobs of `names`, read under one lock (a consistent view). O(names), copies no bytes.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound` naming the first missing blob.
    public func snapshot(_ names: [String]) throws(CheckpointError) -> [(name: String, tensor: Tensor)] {
        try lock.locked { () throws(CheckpointError) -> [(name: String, tensor: Tensor)] in
            var result: [(name: String, tensor: Tensor)] = []
            result.reserveCapacity(names.count)
            for name in names {
                guard let tensor = blobs[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name) }
                result.append((name, tensor))
            }
            return result
        }
    }

    /// Every blob, sorted by name as ``blobNames``, read under one lock (a
    /// consistent view). O(blobs · log blobs), copies no bytes.
    public func snapshot() -> [(name: String, tensor: Tensor)] {
        lock.locked {
            blobs.sorted { $0.key < $1.key }.map { (name: $0.key.string, tensor: $0.value) }
        }
    }

    /// Sets many blobs under one lock.
    public func setBlobs(_ tensors: [(name: String, tensor: Tensor)]) {
        lock.locked { for (name, tensor) in tensors { blobs[BlobName(name)] = tensor } }
    }
}

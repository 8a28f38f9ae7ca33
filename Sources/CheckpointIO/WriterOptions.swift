import BlobCodec

/// How far a commit goes before it returns.
public enum Durability: String, Sendable, CaseIterable {
    /// Written to the page cache only: survives a process crash, not a power cut.
    case none
    /// `fdatasync` of the file before the commit completes.
    case fileData
    /// `fsync` of the file and, after the rename of a new file, of its directory.
    case full
}

/// Options of a ``ContainerWriter``.
public struct WriterOptions: Sendable {
    /// How blobs are encoded (default: uncompressed, so the file can be viewed zero-copy).
    public var encode: EncodeOptions
    /// Payload alignment: a power of two in 8...4096 (default 64; 4096 for O_DIRECT / GPU-direct readers).
    public var alignment: Int
    /// What ``ContainerWriter/commit()`` syncs (``Durability``).
    public var durability: Durability
    /// The system calls to make; tests replace them to inject faults.
    var systemCalls: SystemCalls = .live

    /// Options; the defaults store payloads uncompressed, 64-byte aligned, unsynced.
    public init(encode: EncodeOptions = EncodeOptions(), alignment: Int = 64, durability: Durability = .none) {
        self.encode = encode
        self.alignment = alignment
        self.durability = durability
    }
}

/// One blob to write: its name, type, shape and bytes in the caller's memory.
/// The bytes must stay valid and unchanged until the write call returns.
public struct BlobSource {
    /// The blob's name: UTF-8, at most 65,535 bytes, no NUL.
    public var name: String
    /// The element type.
    public var dtype: DType
    /// The dimensions, outermost first; their product times the element size must equal `bytes.count`.
    public var shape: Shape
    /// The raw bytes, little-endian; read during the write only.
    public var bytes: UnsafeRawBufferPointer
    /// User attributes stored with the blob's header.
    public var attributes: [String: String]
    /// Encoding for this blob; `nil` uses the writer's.
    public var encode: EncodeOptions?
    /// Where `bytes` also lie in an open file (a mapping of it): an
    /// uncompressed payload is then copied file to file in the kernel
    /// (`copy_file_range`) instead of from memory.
    var sourceFile: SourceFileRange?
    /// When set, the writer stores a blob reference (FORMAT.md §4.3.1) to this
    /// blob of another file instead of bytes; `bytes` is then empty. Only the
    /// container format has references.
    public var reference: BlobReference?

    /// A blob to write.
    public init(name: String, dtype: DType, shape: Shape, bytes: UnsafeRawBufferPointer,
                attributes: [String: String] = [:], encode: EncodeOptions? = nil) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
        self.attributes = attributes
        self.encode = encode
    }

    /// A blob written as a reference to `reference.target` in the file
    /// `reference.fileName`: its name, dtype and shape are the target's.
    public init(reference: BlobReference) {
        self.name = reference.target.name
        self.dtype = reference.target.dtype
        self.shape = reference.target.shape
        self.bytes = UnsafeRawBufferPointer(start: nil, count: 0)
        self.attributes = [:]
        self.encode = nil
        self.reference = reference
    }
}

/// The file and offset holding a copy of a blob's bytes.
struct SourceFileRange {
    var fd: Int32
    var offset: Int64
}

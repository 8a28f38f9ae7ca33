import BlobCodec

/// What the index of a container file says about one blob: enough to list,
/// describe and locate it without reading its record (no payload page is touched).
public struct BlobDescriptor: Sendable, Hashable {
    /// The blob's name.
    public var name: String
    /// The element type.
    public var dtype: DType
    /// The dimensions, outermost first.
    public var shape: Shape
    /// The codec of the blob's compressed chunks (`Compression.none`: stored as is, viewable in place).
    public var compression: Compression
    /// The filter applied before compression.
    public var filter: Filter
    /// Decoded size in bytes.
    public var rawSizeInBytes: Int
    /// Payload size in bytes (equal to the raw size when uncompressed).
    public var storedSizeInBytes: Int
    /// CRC32C of the decoded bytes.
    public var rawCRC32C: UInt32
    /// File offset of the blob's record frame.
    public var recordOffset: Int
    /// File offset of the payload (aligned to the file's alignment).
    public var payloadOffset: Int
    /// Length of the blob header inside the record (for a reference: of the
    /// reference record's kind header).
    public var blobHeaderLength: Int
    /// True when the file holds a blob reference (FORMAT.md §4.3.1) instead of
    /// the bytes: `recordOffset` is then the reference record in this file,
    /// `payloadOffset` the payload in the target file, and every other field
    /// the target blob's. Read it with ``ContainerReader/reference(_:)``.
    public var isReference: Bool = false

    /// True when the payload is the raw bytes, so it can be viewed in place.
    public var isViewableInPlace: Bool { compression == .none && storedSizeInBytes == rawSizeInBytes }
}

/// One entry of a blob's chunk table: how many bytes the chunk occupies in
/// the payload and the CRC32C of those stored bytes.
///
/// A chunk whose `storedSize` equals its raw length is stored raw (neither
/// filtered nor compressed); a smaller one is compressed. Never larger.
public struct ChunkEntry: Sendable, Hashable {
    /// Bytes the chunk occupies in the payload.
    public var storedSize: UInt32
    /// CRC32C (``CRC32C``) of the chunk's stored bytes.
    public var crc32c: UInt32

    /// A chunk table entry.
    public init(storedSize: UInt32, crc32c: UInt32) {
        self.storedSize = storedSize
        self.crc32c = crc32c
    }
}

/// The self-describing header of one encoded blob: everything needed to
/// validate and decode its payload. Its byte layout is specified in FORMAT.md
/// ("Blob header") and implemented in `BlobHeader+Encoding.swift`.
public struct BlobHeader: Sendable, Hashable {
    /// The blob's name: UTF-8, at most 65,535 bytes (possibly none), no NUL.
    public var name: String
    /// The element type.
    public var dtype: DType
    /// The dimensions, outermost first (C order).
    public var shape: Shape
    /// The codec every compressed chunk was compressed with.
    public var compression: Compression
    /// The filter applied to each chunk before compression (byte shuffle or none).
    public var filter: Filter
    /// Raw bytes per chunk (the last chunk may be shorter).
    public var chunkSizeInBytes: Int
    /// The blob's decoded size in bytes.
    public var rawSizeInBytes: Int
    /// CRC32C of the decoded bytes of the whole blob.
    public var rawCRC32C: UInt32
    /// One entry per chunk, in order; `ceil(rawSize / chunkSize)` of them.
    public var chunks: [ChunkEntry]
    /// User attributes (UTF-8 keys and values), stored sorted by key.
    public var attributes: [String: String]

    /// A header with every field given.
    public init(
        name: String, dtype: DType, shape: Shape, compression: Compression, filter: Filter,
        chunkSizeInBytes: Int, rawSizeInBytes: Int, rawCRC32C: UInt32, chunks: [ChunkEntry],
        attributes: [String: String] = [:]
    ) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.compression = compression
        self.filter = filter
        self.chunkSizeInBytes = chunkSizeInBytes
        self.rawSizeInBytes = rawSizeInBytes
        self.rawCRC32C = rawCRC32C
        self.chunks = chunks
        self.attributes = attributes
    }

    /// The payload size: the sum of the chunks' stored sizes.
    public var storedSizeInBytes: Int { chunks.reduce(0) { $0 + Int($1.storedSize) } }

    /// The number of chunks.
    public var chunkCount: Int { chunks.count }

    /// The raw (decoded) length of chunk `index`.
    public func rawLength(ofChunk index: Int) -> Int {
        precondition(index >= 0 && index < chunks.count, "chunk index out of range")
        return index == chunks.count - 1 ? rawSizeInBytes - index * chunkSizeInBytes : chunkSizeInBytes
    }

    /// True when every chunk is stored raw, so the payload *is* the blob's bytes
    /// and can be viewed in place (mmap) without decoding.
    public var isStoredRaw: Bool {
        chunks.indices.allSatisfy { Int(chunks[$0].storedSize) == rawLength(ofChunk: $0) }
    }

    /// The number of chunks for `rawSize` bytes in chunks of `chunkSize`.
    static func chunkCount(rawSize: Int, chunkSize: Int) -> Int {
        rawSize == 0 ? 0 : (rawSize - 1) / chunkSize + 1
    }
}

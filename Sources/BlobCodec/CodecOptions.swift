/// How ``BlobEncoder`` encodes a blob.
public struct EncodeOptions: Sendable, Hashable {
    /// The default chunk size, 4 MiB: large enough to compress well and to
    /// amortise per-chunk work, small enough that a chunk and its scratch stay
    /// near the core's cache and that two cores get work even from mid-sized blobs.
    public static let defaultChunkSize = 4 << 20
    /// The largest chunk size, 1 GiB: far below LZ4's input limit (~2 GiB), and
    /// every chunk's stored size fits the chunk table's 32-bit field.
    public static let maximumChunkSize = 1 << 30

    /// The codec for every chunk (``Compression/none`` by default: payloads are stored as they are).
    public var compression: Compression
    /// When set, the codec for floating-point dtypes (``compression`` then applies
    /// to every other dtype). ``recommended(threads:chunkSizeInBytes:)`` sets it to ``Compression/planes``.
    public var floatCompression: Compression?
    /// Whether chunks are byte-shuffled before compression (``ShuffleMode``).
    public var shuffle: ShuffleMode
    /// Bytes per chunk: a multiple of 16 in 16...``maximumChunkSize``.
    public var chunkSizeInBytes: Int
    /// Worker threads for the chunks; 0 means one per active core.
    public var threads: Int
    /// When the first chunk of a blob does not shrink, store every chunk raw
    /// without trying (incompressible data then costs one attempt, not one per chunk).
    public var skipIncompressible: Bool

    /// Options with every field given; the defaults store payloads uncompressed (in chunks of ``defaultChunkSize`` when a codec is set).
    public init(
        compression: Compression = .none,
        shuffle: ShuffleMode = .auto,
        chunkSizeInBytes: Int = EncodeOptions.defaultChunkSize,
        threads: Int = 0,
        skipIncompressible: Bool = true,
        floatCompression: Compression? = nil
    ) {
        self.compression = compression
        self.floatCompression = floatCompression
        self.shuffle = shuffle
        self.chunkSizeInBytes = chunkSizeInBytes
        self.threads = threads
        self.skipIncompressible = skipIncompressible
    }

    /// The recommended options for checkpoints (`--codec auto`): the plane codec
    /// for floating-point dtypes; integers, bools, strings and raw bytes stored
    /// uncompressed (viewable in place). Chunks that do not shrink are stored raw.
    ///
    /// Chunks are 1 MiB (not the default 4 MiB): a tensor of a few MiB is then
    /// still coded and decoded on every core, and the plane codec's codes are
    /// per 256 KiB piece anyway, so the ratio does not suffer.
    public static func recommended(threads: Int = 0, chunkSizeInBytes: Int = 1 << 20) -> EncodeOptions {
        EncodeOptions(compression: .none, shuffle: .auto, chunkSizeInBytes: chunkSizeInBytes, threads: threads, floatCompression: .planes)
    }

    /// The codec used for a blob of `dtype`.
    public func compression(for dtype: DType) -> Compression {
        if let floatCompression, dtype.isFloatingPoint { return floatCompression }
        return compression
    }
}

/// How ``BlobDecoder`` decodes a blob.
public struct DecodeOptions: Sendable, Hashable {
    /// Worker threads for the chunks; 0 means one per active core.
    public var threads: Int
    /// Check the CRC32C of the decoded bytes of the whole blob, not only each stored chunk's.
    public var verifyRawChecksum: Bool
    /// The largest raw size that the allocating ``BlobDecoder/decode(_:options:)`` will
    /// allocate (default 64 GiB); a header declaring more is refused before any allocation.
    public var maximumRawSize: Int

    /// Decoding options; `threads` 0 uses one thread per CPU.
    public init(threads: Int = 0, verifyRawChecksum: Bool = true, maximumRawSize: Int = 64 << 30) {
        self.threads = threads
        self.verifyRawChecksum = verifyRawChecksum
        self.maximumRawSize = maximumRawSize
    }
}

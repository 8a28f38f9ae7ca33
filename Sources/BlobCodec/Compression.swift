/// The compressor applied to each chunk of a blob.
///
/// The on-disk codec ids are stable (see FORMAT.md, "codec ids"). Levels are
/// recorded for information; a decoder never needs them.
public enum Compression: Sendable, Hashable, CustomStringConvertible {
    /// Stored as is; an uncompressed blob's payload is exactly its raw bytes (zero-copy views).
    case none
    /// LZ4 (fast mode, acceleration 1).
    case lz4
    /// LZ4 high compression, level 1...12.
    case lz4hc(level: Int)
    /// zlib (deflate with zlib framing), level 1...9.
    case zlib(level: Int)
    /// Zstandard, level 1...19.
    case zstd(level: Int)
    /// Byte planes, each stored raw, as one repeated byte, or canonical-Huffman
    /// coded (FORMAT.md §3.10). Made for floating-point weights behind the
    /// ``Filter/rotateShuffle(elementSize:)`` filter: the exponent plane is coded,
    /// the near-random mantissa planes are stored as they are.
    case planes

    /// The stable on-disk id.
    public var id: UInt8 {
        switch self {
        case .none: return 0
        case .lz4: return 1
        case .lz4hc: return 2
        case .zlib: return 3
        case .zstd: return 4
        case .planes: return 5
        }
    }

    /// The level (0 for ``none``, ``lz4`` and ``planes``).
    public var level: Int {
        switch self {
        case .none, .lz4, .planes: return 0
        case let .lz4hc(level), let .zlib(level), let .zstd(level): return level
        }
    }

    /// The lowercase codec name (`none`, `lz4`, `lz4hc`, `zlib`, `zstd`, `planes`).
    public var name: String {
        switch self {
        case .none: return "none"
        case .lz4: return "lz4"
        case .lz4hc: return "lz4hc"
        case .zlib: return "zlib"
        case .zstd: return "zstd"
        case .planes: return "planes"
        }
    }

    /// The codec's name as the command line writes it (`zstd-3`).
    public var description: String {
        switch self {
        case .none, .lz4, .planes: return name
        default: return "\(name)-\(level)"
        }
    }

    /// The levels each codec accepts.
    public static func levels(forID id: UInt8) -> ClosedRange<Int>? {
        switch id {
        case 0, 1, 5: return 0...0
        case 2: return 1...12
        case 3: return 1...9
        case 4: return 1...19
        default: return nil
        }
    }

    /// Rebuilds a codec from its on-disk id and level, validating both.
    public init(id: UInt8, level: Int) throws(CheckpointError) {
        guard let levels = Compression.levels(forID: id) else { throw CheckpointError(.unknownCodec(id)) }
        guard levels.contains(level) else {
            throw CheckpointError(.invalidField(field: "codec level", reason: "\(level) outside \(levels) for codec id \(id)"))
        }
        switch id {
        case 0: self = .none
        case 1: self = .lz4
        case 2: self = .lz4hc(level: level)
        case 3: self = .zlib(level: level)
        case 4: self = .zstd(level: level)
        default: self = .planes
        }
    }

    /// The codec names ``init(parsing:)`` accepts.
    public static let names = ["none", "lz4", "lz4hc", "zlib", "zstd", "planes"]

    /// The level a codec name without `-LEVEL` gets: lz4hc 9, zlib 6, zstd 1
    /// (zstd 1 measured smaller and about twice as fast as 3 on shuffled fp32
    /// and bf16 weights); nil for an unknown name, 0 for codecs without levels.
    public static func defaultLevel(forName name: String) -> Int? {
        ["none": 0, "lz4": 0, "lz4hc": 9, "zlib": 6, "zstd": 1, "planes": 0][name.lowercased()]
    }

    /// Parses `none`, `lz4`, `lz4hc`, `zlib`, `zstd`, `planes`, optionally with `-LEVEL` (`zstd-3`);
    /// a missing level takes the codec's default (``defaultLevel(forName:)``).
    public init(parsing text: String) throws(CheckpointError) {
        let parts = text.lowercased().split(separator: "-", maxSplits: 1).map(String.init)
        let ids: [String: UInt8] = ["none": 0, "lz4": 1, "lz4hc": 2, "zlib": 3, "zstd": 4, "planes": 5]
        guard let first = parts.first, let id = ids[first] else {
            throw CheckpointError(.invalidField(field: "codec", reason: "'\(text)' is not one of none, lz4, lz4hc, zlib, zstd, planes"))
        }
        var level = Compression.defaultLevel(forName: first)!
        if parts.count == 2 {
            guard let parsed = Int(parts[1]) else {
                throw CheckpointError(.invalidField(field: "codec level", reason: "'\(parts[1])' is not a number"))
            }
            level = parsed
        }
        try self.init(id: id, level: level)
    }

    /// The largest ratio raw / stored that this codec can produce for one chunk
    /// (its format's own limit). A header claiming more is hostile and is
    /// rejected before anything is allocated.
    var maximumExpansion: UInt64 {
        switch self {
        case .none: return 1
        case .lz4, .lz4hc: return 256  // a 255-byte match-length run costs one byte
        case .zlib: return 1040  // deflate's limit is 1032:1
        case .zstd: return 65_536  // an RLE block: 4 bytes for 128 KiB is 32768:1
        case .planes: return 262_144  // a repeat segment: 6 bytes for at most 1 MiB is 174763:1
        }
    }
}

/// The filter applied to a chunk's bytes before compression.
public enum Filter: Sendable, Hashable, CustomStringConvertible {
    /// No filter: chunks are compressed as they are.
    case none
    /// Byte shuffle by `elementSize` (2...16) bytes; see ``ByteShuffle``.
    case shuffle(elementSize: Int)
    /// Each element (2, 4 or 8 bytes, a little-endian integer) rotated left by one
    /// bit, then byte shuffle: a float's sign bit moves next to its mantissa, so
    /// the top plane holds the exponent alone (FORMAT.md §3.4.1).
    case rotateShuffle(elementSize: Int)

    /// The stable on-disk id (0 none, 1 shuffle, 2 rotate + shuffle).
    public var id: UInt8 {
        switch self {
        case .none: return 0
        case .shuffle: return 1
        case .rotateShuffle: return 2
        }
    }

    /// The element size field (0 for ``none``).
    public var elementSize: Int {
        switch self {
        case .none: return 0
        case let .shuffle(size), let .rotateShuffle(size): return size
        }
    }

    /// Rebuilds a filter from its on-disk id and element size, validating both.
    public init(id: UInt8, elementSize: Int) throws(CheckpointError) {
        switch id {
        case 0:
            guard elementSize == 0 else {
                throw CheckpointError(.invalidField(field: "filter element size", reason: "\(elementSize) with no filter"))
            }
            self = .none
        case 1:
            guard (2...16).contains(elementSize) else {
                throw CheckpointError(.invalidField(field: "filter element size", reason: "\(elementSize) outside 2...16"))
            }
            self = .shuffle(elementSize: elementSize)
        case 2:
            guard [2, 4, 8].contains(elementSize) else {
                throw CheckpointError(.invalidField(field: "filter element size", reason: "\(elementSize) is not 2, 4 or 8 for rotate + shuffle"))
            }
            self = .rotateShuffle(elementSize: elementSize)
        default:
            throw CheckpointError(.unknownFilter(id))
        }
    }

    /// The filter's name: `none`, or `shuffle` with its element size (`shuffle4`).
    public var description: String {
        switch self {
        case .none: return "none"
        case let .shuffle(size): return "shuffle\(size)"
        case let .rotateShuffle(size): return "rotshuffle\(size)"
        }
    }
}

/// Whether to byte-shuffle before compressing.
public enum ShuffleMode: String, Sendable, CaseIterable {
    /// Shuffle floating-point dtypes whose elements are wider than one byte, when compressing.
    case auto
    /// Shuffle whenever the dtype has elements wider than one byte and a compressor is used.
    case on
    /// Never shuffle.
    case off

    /// The filter this mode selects for `dtype` under `compression`.
    /// Uncompressed blobs are never filtered, so their payload stays viewable in place.
    /// With ``Compression/planes``, floating-point elements of 2, 4 or 8 bytes get
    /// ``Filter/rotateShuffle(elementSize:)`` (``on`` and ``auto``): the exponent alone in the top plane.
    public func filter(for dtype: DType, compression: Compression) -> Filter {
        guard compression != .none, let size = dtype.shuffleElementSize else { return .none }
        if compression == .planes, dtype.isFloatingPoint, [2, 4, 8].contains(size), self != .off {
            return .rotateShuffle(elementSize: size)
        }
        switch self {
        case .off: return .none
        case .on: return .shuffle(elementSize: size)
        case .auto: return dtype.isFloatingPoint ? .shuffle(elementSize: size) : .none
        }
    }
}

import CCheckpointKernels
import CLZ4
import CZlib
import CZstd

/// A pooled buffer holding one compressed chunk (its first `count` bytes),
/// given back to its pool when released.
final class OwnedBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let capacity: Int
    let count: Int
    private let pool: ChunkBufferPool

    init(pointer: UnsafeMutableRawPointer, capacity: Int, count: Int, pool: ChunkBufferPool) {
        self.pointer = pointer
        self.capacity = capacity
        self.count = count
        self.pool = pool
    }

    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }

    deinit { pool.give(pointer, capacity: capacity) }
}

/// One thread's compression state: a shuffle scratch buffer and the codec's
/// context, allocated once and reused for every chunk that thread encodes.
final class ChunkCompressor {
    let compression: Compression
    let filter: Filter
    private let shuffled: UnsafeMutableRawBufferPointer?
    /// The plane codec's Huffman pair table (`CKK_HUFFMAN_PAIR_ENTRIES` entries), pooled like the scratch.
    private let huffmanPairs: UnsafeMutableRawBufferPointer?
    private var lz4State: UnsafeMutableRawPointer?
    private var zstdContext: OpaquePointer?

    private let chunkCapacity: Int
    private let pool = ChunkBufferPool.shared

    /// The smallest chunk given a Huffman pair table: smaller ones code one symbol at a time.
    static let pairTableMinimumChunk = 32 << 10

    init(compression: Compression, filter: Filter, chunkCapacity: Int) {
        self.compression = compression
        self.filter = filter
        self.chunkCapacity = chunkCapacity
        // The plane codec filters inside its own kernel, but needs the same chunk-sized scratch.
        if filter != .none || compression == .planes {
            shuffled = pool.takeBuffer(capacity: chunkCapacity)
        } else {
            shuffled = nil
        }
        // Pairs pay only on segments of several KiB (ckk_huffman_encode decides per segment).
        huffmanPairs = compression == .planes && chunkCapacity >= ChunkCompressor.pairTableMinimumChunk
            ? pool.takeBuffer(capacity: Int(CKK_HUFFMAN_PAIR_ENTRIES) * MemoryLayout<UInt32>.size) : nil
        switch compression {
        case .lz4:
            lz4State = .allocate(byteCount: Int(LZ4_sizeofState()), alignment: 16)
        case .lz4hc:
            lz4State = .allocate(byteCount: Int(LZ4_sizeofStateHC()), alignment: 16)
        case .zstd:
            zstdContext = ZSTD_createCCtx()
            precondition(zstdContext != nil, "ZSTD_createCCtx failed (out of memory)")
        case .none, .zlib, .planes:
            break
        }
    }

    deinit {
        if let shuffled { pool.giveBuffer(shuffled) }
        if let huffmanPairs { pool.giveBuffer(huffmanPairs) }
        lz4State?.deallocate()
        if let zstdContext { ZSTD_freeCCtx(zstdContext) }
    }

    /// Filters and compresses one chunk into a pooled buffer.
    ///
    /// - Returns: the stored bytes, or `nil` when compression does not make the
    ///   chunk strictly smaller (the chunk is then stored raw); and the CRC32C
    ///   of the raw chunk, computed in the same pass over memory as the filter.
    func compress(_ raw: UnsafeRawBufferPointer, chunk: Int) throws(CheckpointError) -> (stored: OwnedBytes?, rawCRC: UInt32) {
        guard let rawBase = raw.baseAddress else { return (nil, 0) }
        if compression == .planes { return try compressPlanes(raw, chunk: chunk) }
        var source = rawBase
        let rawCRC: UInt32
        if filter != .none, let shuffled {
            rawCRC = FilterKernels.apply(filter, raw, into: shuffled.baseAddress!)
            source = UnsafeRawPointer(shuffled.baseAddress!)
        } else {
            rawCRC = CRC32C.checksum(raw)
        }
        guard raw.count > 1 else { return (nil, rawCRC) }
        // Only output strictly smaller than the input is useful, so that is all the room given:
        // each library then gives up (rather than expanding) on incompressible input.
        // Buffers are all of the worker's chunk capacity, so the pool can recycle them.
        let capacity = raw.count - 1
        guard let output = pool.take(capacity: chunkCapacity) else {
            throw CheckpointError(.compressionFailed(chunk: chunk, reason: "out of memory for \(chunkCapacity) bytes"))
        }
        var produced = 0
        switch compression {
        case .none, .planes:
            break
        case .lz4:
            produced = Int(LZ4_compress_fast_extState(lz4State, source, output, Int32(raw.count), Int32(capacity), 1))
        case let .lz4hc(level):
            produced = Int(LZ4_compress_HC_extStateHC(lz4State, source, output, Int32(raw.count), Int32(capacity), Int32(level)))
        case let .zlib(level):
            var length = uLongf(capacity)
            let status = compress2(output.assumingMemoryBound(to: Bytef.self), &length,
                                   source.assumingMemoryBound(to: Bytef.self), uLong(raw.count), Int32(level))
            if status == Z_OK { produced = Int(length) } else if status != Z_BUF_ERROR {
                pool.give(output, capacity: chunkCapacity)
                throw CheckpointError(.compressionFailed(chunk: chunk, reason: "zlib compress2 returned \(status)"))
            }
        case let .zstd(level):
            let result = ZSTD_compressCCtx(zstdContext, output, capacity, source, raw.count, Int32(level))
            if ZSTD_isError(result) == 0 {
                produced = result
            } else if ZSTD_getErrorCode(result) != ZSTD_error_dstSize_tooSmall {
                pool.give(output, capacity: chunkCapacity)
                throw CheckpointError(.compressionFailed(chunk: chunk, reason: String(cString: ZSTD_getErrorName(result))))
            }
        }
        guard produced > 0, produced < raw.count else {
            pool.give(output, capacity: chunkCapacity)
            return (nil, rawCRC)
        }
        return (OwnedBytes(pointer: output, capacity: chunkCapacity, count: produced, pool: pool), rawCRC)
    }

    /// The plane codec: filter, split and code in one kernel that reads `raw` once.
    private func compressPlanes(_ raw: UnsafeRawBufferPointer, chunk: Int) throws(CheckpointError) -> (stored: OwnedBytes?, rawCRC: UInt32) {
        // Room for the Huffman writer's 8-byte stores past the last byte that counts.
        let capacity = chunkCapacity + Int(CKK_PLANES_SLACK)
        guard let output = pool.take(capacity: capacity) else {
            throw CheckpointError(.compressionFailed(chunk: chunk, reason: "out of memory for \(capacity) bytes"))
        }
        var rawCRC: UInt32 = 0
        let (size, rotate) = FilterKernels.planeLayout(filter)
        let produced = ckk_planes_encode(output.assumingMemoryBound(to: UInt8.self), capacity, raw.baseAddress!, raw.count,
                                         size, rotate, shuffled!.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                         huffmanPairs?.baseAddress?.assumingMemoryBound(to: UInt32.self), &rawCRC)
        guard produced > 0, produced < raw.count else {
            pool.give(output, capacity: capacity)
            return (nil, rawCRC)
        }
        return (OwnedBytes(pointer: output, capacity: capacity, count: produced, pool: pool), rawCRC)
    }
}

/// The filters' kernels (FORMAT.md §3.4): byte shuffle, and rotate + shuffle.
enum FilterKernels {
    /// The plane codec's view of a filter: element size (1 = no filter) and whether elements are rotated.
    static func planeLayout(_ filter: Filter) -> (size: Int, rotate: Int32) {
        switch filter {
        case .none: return (1, 0)
        case let .shuffle(size): return (size, 0)
        case let .rotateShuffle(size): return (size, 1)
        }
    }

    /// Filters `source` into `destination` (same length); returns the CRC32C of `source`.
    static func apply(_ filter: Filter, _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer) -> UInt32 {
        guard let base = source.baseAddress else { return 0 }
        switch filter {
        case .none:
            destination.copyMemory(from: base, byteCount: source.count)
            return CRC32C.checksum(source)
        case let .shuffle(size):
            return ckk_shuffle_crc32c(destination, base, source.count, size, 0)
        case let .rotateShuffle(size):
            let count = source.count / size
            let out = destination.assumingMemoryBound(to: UInt8.self)
            let planes: [UnsafeMutablePointer<UInt8>?] = (0..<size).map { out + $0 * count }
            let crc = planes.withUnsafeBufferPointer { ckk_split_planes_crc32c($0.baseAddress!, base, count, size, 1, 0) }
            let tail = source.count - count * size
            (destination + count * size).copyMemory(from: base + count * size, byteCount: tail)
            return ckk_crc32c_extend(crc, base + count * size, tail)
        }
    }

    /// Inverts ``apply(_:_:into:)``: `source` (filtered) to `destination`; returns the
    /// CRC32C of `destination` when `checksum`, else 0.
    static func invert(_ filter: Filter, _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, checksum: Bool) -> UInt32 {
        guard let base = source.baseAddress, let out = destination.baseAddress else { return 0 }
        switch filter {
        case .none:
            destination.copyMemory(from: source)
            return checksum ? CRC32C.checksum(UnsafeRawBufferPointer(destination)) : 0
        case let .shuffle(size):
            if checksum { return ckk_unshuffle_crc32c(out, base, source.count, size, 0) }
            ByteShuffle.unshuffle(source, into: destination, elementSize: size)
            return 0
        case let .rotateShuffle(size):
            let count = source.count / size
            let input = base.assumingMemoryBound(to: UInt8.self)
            let planes: [UnsafePointer<UInt8>?] = (0..<size).map { input + $0 * count }
            let crc = planes.withUnsafeBufferPointer { ckk_join_planes_crc32c(out, $0.baseAddress!, count, size, 1, 0, checksum ? 1 : 0) }
            let tail = source.count - count * size
            (out + count * size).copyMemory(from: base + count * size, byteCount: tail)
            return checksum ? ckk_crc32c_extend(crc, out + count * size, tail) : 0
        }
    }
}

/// One thread's decompression state: an unshuffle scratch buffer, an output
/// scratch buffer (for verification without a destination), and a zstd context.
final class ChunkDecompressor {
    let compression: Compression
    let filter: Filter
    private let chunkCapacity: Int
    private var filterScratch: UnsafeMutableRawBufferPointer?
    private var outputScratch: UnsafeMutableRawBufferPointer?
    private var zstdContext: OpaquePointer?
    private let pool = ChunkBufferPool.shared

    init(compression: Compression, filter: Filter, chunkCapacity: Int) {
        self.compression = compression
        self.filter = filter
        self.chunkCapacity = chunkCapacity
        if case .zstd = compression {
            zstdContext = ZSTD_createDCtx()
            precondition(zstdContext != nil, "ZSTD_createDCtx failed (out of memory)")
        }
    }

    deinit {
        if let filterScratch { pool.giveBuffer(filterScratch) }
        if let outputScratch { pool.giveBuffer(outputScratch) }
        if let zstdContext { ZSTD_freeDCtx(zstdContext) }
    }

    /// A chunk-sized buffer to decode into when the caller has no destination.
    func scratchOutput(count: Int) -> UnsafeMutableRawBufferPointer {
        if outputScratch == nil { outputScratch = pool.takeBuffer(capacity: chunkCapacity) }
        return UnsafeMutableRawBufferPointer(rebasing: outputScratch![0..<count])
    }

    /// Decompresses (and unshuffles) one compressed chunk into exactly
    /// `destination.count` bytes. The decompressors are the bounded kind: they
    /// never write past `destination`, and any other output length is an error.
    ///
    /// - Returns: the CRC32C of the decoded bytes when `checksum` is true
    ///   (fused with the unshuffle pass), else 0.
    func decompress(_ stored: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, chunk: Int, checksum: Bool) throws(CheckpointError) -> UInt32 {
        let expected = destination.count
        if compression == .planes { return try decompressPlanes(stored, into: destination, chunk: chunk, checksum: checksum) }
        var target = destination
        if filter != .none {
            if filterScratch == nil { filterScratch = pool.takeBuffer(capacity: chunkCapacity) }
            target = UnsafeMutableRawBufferPointer(rebasing: filterScratch![0..<expected])
        }
        guard let src = stored.baseAddress, let dst = target.baseAddress else {
            throw CheckpointError(.corruptChunk(chunk: chunk, reason: "empty compressed chunk"))
        }
        switch compression {
        case .none, .planes:
            throw CheckpointError(.corruptChunk(chunk: chunk, reason: "compressed chunk in an uncompressed blob"))
        case .lz4, .lz4hc:
            let produced = LZ4_decompress_safe(src, dst, Int32(stored.count), Int32(expected))
            guard produced >= 0 else { throw CheckpointError(.corruptChunk(chunk: chunk, reason: "LZ4 stream is malformed")) }
            guard Int(produced) == expected else {
                throw CheckpointError(.chunkSizeMismatch(chunk: chunk, expected: UInt64(expected), actual: UInt64(produced)))
            }
        case .zlib:
            // FORMAT.md §3.5: chunks are self-contained; a stream asking for a preset dictionary (FDICT, RFC 1950) is refused.
            guard stored.count < 2 || stored[1] & 0x20 == 0 else {
                throw CheckpointError(.corruptChunk(chunk: chunk, reason: "zlib stream needs a preset dictionary (FDICT), which chunks may not use"))
            }
            var outLength = uLongf(expected)
            var inLength = uLong(stored.count)
            let status = uncompress2(dst.assumingMemoryBound(to: Bytef.self), &outLength, src.assumingMemoryBound(to: Bytef.self), &inLength)
            guard status == Z_OK else {
                if status == Z_BUF_ERROR && outLength == uLongf(expected) {
                    throw CheckpointError(.chunkSizeMismatch(chunk: chunk, expected: UInt64(expected), actual: UInt64(expected) + 1))
                }
                throw CheckpointError(.corruptChunk(chunk: chunk, reason: "zlib stream is malformed (status \(status))"))
            }
            guard Int(outLength) == expected else {
                throw CheckpointError(.chunkSizeMismatch(chunk: chunk, expected: UInt64(expected), actual: UInt64(outLength)))
            }
            guard Int(inLength) == stored.count else {
                throw CheckpointError(.corruptChunk(chunk: chunk, reason: "\(stored.count - Int(inLength)) bytes after the zlib stream"))
            }
        case .zstd:
            let frameSize = ZSTD_getFrameContentSize(src, stored.count)
            guard frameSize == UInt64(expected) else {
                if frameSize == ZSTD_CONTENTSIZE_ERROR || frameSize == ZSTD_CONTENTSIZE_UNKNOWN {
                    throw CheckpointError(.corruptChunk(chunk: chunk, reason: "zstd frame header is malformed or has no content size"))
                }
                throw CheckpointError(.chunkSizeMismatch(chunk: chunk, expected: UInt64(expected), actual: frameSize))
            }
            let compressedSize = ZSTD_findFrameCompressedSize(src, stored.count)
            guard ZSTD_isError(compressedSize) == 0, compressedSize == stored.count else {
                throw CheckpointError(.corruptChunk(chunk: chunk, reason: "zstd frame does not span the chunk exactly"))
            }
            let produced = ZSTD_decompressDCtx(zstdContext, dst, expected, src, stored.count)
            guard ZSTD_isError(produced) == 0 else {
                throw CheckpointError(.corruptChunk(chunk: chunk, reason: "zstd: " + String(cString: ZSTD_getErrorName(produced))))
            }
            guard produced == expected else {
                throw CheckpointError(.chunkSizeMismatch(chunk: chunk, expected: UInt64(expected), actual: UInt64(produced)))
            }
        }
        if filter != .none {
            return FilterKernels.invert(filter, UnsafeRawBufferPointer(target), into: destination, checksum: checksum)
        }
        return checksum ? CRC32C.checksum(UnsafeRawBufferPointer(destination)) : 0
    }

    /// The plane codec: decodes the segments and undoes the filter straight into
    /// `destination` (raw planes are read in place from `stored`), fused with the CRC32C.
    private func decompressPlanes(_ stored: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, chunk: Int, checksum: Bool) throws(CheckpointError) -> UInt32 {
        let expected = destination.count
        if filterScratch == nil, filter != .none { filterScratch = pool.takeBuffer(capacity: chunkCapacity) }
        guard let src = stored.baseAddress, let dst = destination.baseAddress else {
            throw CheckpointError(.corruptChunk(chunk: chunk, reason: "empty compressed chunk"))
        }
        let (size, rotate) = FilterKernels.planeLayout(filter)
        var crc: UInt32 = 0
        let status = ckk_planes_decode(dst, expected, src.assumingMemoryBound(to: UInt8.self), stored.count, size, rotate,
                                       filterScratch?.baseAddress?.assumingMemoryBound(to: UInt8.self), &crc, checksum ? 1 : 0)
        switch status {
        case 0: return crc
        case CKK_ERR_TRUNCATED: throw CheckpointError(.corruptChunk(chunk: chunk, reason: "plane codec: a segment or Huffman stream runs past the chunk's \(stored.count) stored bytes"))
        case CKK_ERR_BAD_SEGMENT: throw CheckpointError(.corruptChunk(chunk: chunk, reason: "plane codec: a segment of unknown kind, zero length or an over-long repeat"))
        case CKK_ERR_LENGTH: throw CheckpointError(.corruptChunk(chunk: chunk, reason: "plane codec: segments do not decode to exactly \(expected) bytes"))
        case CKK_ERR_BAD_TABLE: throw CheckpointError(.corruptChunk(chunk: chunk, reason: "plane codec: Huffman code lengths are not a complete prefix code of 1...11 bits"))
        default: throw CheckpointError(.corruptChunk(chunk: chunk, reason: "plane codec: a Huffman stream does not end exactly at its last code"))
        }
    }
}

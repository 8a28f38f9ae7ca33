import Synchronization

/// The stored bytes of one encoded blob, as a list of segments in payload
/// order (one per chunk). A raw-stored chunk's segment points into the
/// caller's source memory — nothing is copied — and a compressed chunk's
/// segment points at its compressed bytes. Valid only inside the closure
/// given to ``BlobEncoder/encode(_:name:dtype:shape:attributes:options:_:)``.
public struct EncodedPayload {
    /// The payload's pieces, in order; their concatenation is the payload.
    public let segments: [UnsafeRawBufferPointer]
    /// The payload's total size in bytes.
    public let count: Int

    /// Copies the whole payload to `destination`, which must hold ``count`` bytes.
    public func copyBytes(to destination: UnsafeMutableRawBufferPointer) {
        precondition(destination.count >= count, "destination too small for the payload")
        var offset = 0
        for segment in segments where segment.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: destination[offset..<(offset + segment.count)]).copyMemory(from: segment)
            offset += segment.count
        }
    }
}

/// An encoded blob whose compressed chunks live as long as it does; raw-stored
/// segments still point into the caller's source memory.
package final class RetainedEncoding: @unchecked Sendable {
    package let header: BlobHeader
    package let payload: EncodedPayload
    private let compressed: [OwnedBytes?]

    init(header: BlobHeader, payload: EncodedPayload, compressed: [OwnedBytes?]) {
        self.header = header
        self.payload = payload
        self.compressed = compressed
    }
}

/// Encodes blobs: splits a blob's bytes into chunks, filters and compresses
/// each chunk in parallel, and checksums stored and raw bytes (FORMAT.md,
/// "Blob header" and "Payload").
///
/// Output is byte-for-byte identical whatever the thread count.
public enum BlobEncoder {
    /// Encodes `raw` and hands the header and the payload to `body`.
    ///
    /// Uncompressed chunks are never copied: their payload segments point into
    /// `raw`. Compressed chunks live in exactly sized allocations freed when
    /// `body` returns. Memory: the compressed chunks plus, per worker thread,
    /// one chunk-sized shuffle buffer and the codec's context.
    ///
    /// - Throws: ``CheckpointError`` for an invalid name, options, or a byte
    ///   count that disagrees with `shape` and `dtype`; whatever `body` throws.
    public static func encode<R>(
        _ raw: UnsafeRawBufferPointer,
        name: String, dtype: DType, shape: Shape,
        attributes: [String: String] = [:],
        options: EncodeOptions = EncodeOptions(),
        _ body: (BlobHeader, EncodedPayload) throws -> R
    ) throws -> R {
        try validate(raw, name: name, dtype: dtype, shape: shape, attributes: attributes, options: options)
        let encoding = try encodeRetained(raw, name: name, dtype: dtype, shape: shape, attributes: attributes, options: options)
        return try withExtendedLifetime(encoding) { try body(encoding.header, encoding.payload) }
    }

    /// Encodes an already validated blob (see ``validate(_:name:dtype:shape:attributes:options:)``)
    /// and keeps its compressed chunks alive as long as the result: for writers
    /// that encode several blobs at once and write them afterwards.
    package static func encodeRetained(
        _ raw: UnsafeRawBufferPointer,
        name: String, dtype: DType, shape: Shape,
        attributes: [String: String], options: EncodeOptions
    ) throws(CheckpointError) -> RetainedEncoding {
        let chunkSize = options.chunkSizeInBytes
        let chunkCount = BlobHeader.chunkCount(rawSize: raw.count, chunkSize: chunkSize)
        let compression = options.compression(for: dtype)
        let filter = options.shuffle.filter(for: dtype, compression: compression)

        func chunkRange(_ index: Int) -> Range<Int> {
            index * chunkSize..<min(raw.count, (index + 1) * chunkSize)
        }
        func rawChunk(_ index: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: raw[chunkRange(index)])
        }

        // Per-chunk results, each slot written by exactly one worker.
        var entries = [ChunkEntry](repeating: ChunkEntry(storedSize: 0, crc32c: 0), count: chunkCount)
        var rawCRCs = [UInt32](repeating: 0, count: chunkCount)
        var compressed = [OwnedBytes?](repeating: nil, count: chunkCount)

        do {
            try entries.withUnsafeMutableBufferPointer { entries in
                try rawCRCs.withUnsafeMutableBufferPointer { rawCRCs in
                    try compressed.withUnsafeMutableBufferPointer { compressed in
                        // A raw-stored chunk's stored bytes are its raw bytes, so one CRC serves both.
                        func setRaw(_ index: Int, crc: UInt32) {
                            rawCRCs[index] = crc
                            entries[index] = ChunkEntry(storedSize: UInt32(chunkRange(index).count), crc32c: crc)
                        }
                        func storeRaw(_ index: Int) {
                            setRaw(index, crc: CRC32C.checksum(rawChunk(index)))
                        }
                        func encodeChunk(_ compressor: ChunkCompressor, _ index: Int) throws(CheckpointError) {
                            let (stored, rawCRC) = try compressor.compress(rawChunk(index), chunk: index)
                            if let stored {
                                rawCRCs[index] = rawCRC
                                entries[index] = ChunkEntry(storedSize: UInt32(stored.count), crc32c: CRC32C.checksum(stored.buffer))
                                compressed[index] = stored
                            } else {
                                setRaw(index, crc: rawCRC)
                            }
                        }
                        let capacity = min(chunkSize, raw.count)
                        let makeCompressor = { ChunkCompressor(compression: compression, filter: filter, chunkCapacity: capacity) }

                        if compression == .none {
                            try ChunkScheduler.run(count: chunkCount, threads: options.threads, makeWorker: {}) { _, index in
                                storeRaw(index)
                            }
                            return
                        }
                        // With skipIncompressible, chunk 0 decides for the blob: if it does not shrink,
                        // every chunk is stored raw. Chunks already compressed while chunk 0 was running
                        // (at most one per other thread) are discarded, so the output never depends on
                        // the thread count; later chunks see the decision and skip the attempt.
                        let firstDidNotShrink = Atomic<Bool>(false)
                        try ChunkScheduler.run(count: chunkCount, threads: options.threads, makeWorker: makeCompressor) { compressor, index throws(CheckpointError) in
                            if index > 0 && options.skipIncompressible && firstDidNotShrink.load(ordering: .acquiring) {
                                storeRaw(index)
                                return
                            }
                            try encodeChunk(compressor, index)
                            if index == 0 && compressed[0] == nil { firstDidNotShrink.store(true, ordering: .releasing) }
                        }
                        if options.skipIncompressible && chunkCount > 0 && compressed[0] == nil {
                            for index in 1..<chunkCount where compressed[index] != nil {
                                compressed[index] = nil
                                setRaw(index, crc: rawCRCs[index])
                            }
                        }
                    }
                }
            }

        } catch let error as CheckpointError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
        var rawCRC: UInt32 = 0
        for index in 0..<chunkCount {
            rawCRC = CRC32C.combine(rawCRC, rawCRCs[index], lengthOfB: chunkRange(index).count)
        }
        let header = BlobHeader(
            name: name, dtype: dtype, shape: shape, compression: compression, filter: filter,
            chunkSizeInBytes: chunkSize, rawSizeInBytes: raw.count, rawCRC32C: rawCRC, chunks: entries,
            attributes: attributes)
        try header.validateForEncoding()
        let segments = (0..<chunkCount).map { compressed[$0]?.buffer ?? rawChunk($0) }
        let payload = EncodedPayload(segments: segments, count: header.storedSizeInBytes)
        return RetainedEncoding(header: header, payload: payload, compressed: compressed)
    }

    /// Encodes `raw` into one contiguous byte array: the header's bytes followed
    /// directly by the payload (the plain encoded form, FORMAT.md "Blob header").
    public static func encode(
        _ raw: UnsafeRawBufferPointer,
        name: String, dtype: DType, shape: Shape,
        attributes: [String: String] = [:],
        options: EncodeOptions = EncodeOptions()
    ) throws(CheckpointError) -> [UInt8] {
        do {
            return try encode(raw, name: name, dtype: dtype, shape: shape, attributes: attributes, options: options) { header, payload in
                let headerBytes = try header.encoded()
                return [UInt8](unsafeUninitializedCapacity: headerBytes.count + payload.count) { buffer, initialized in
                    let out = UnsafeMutableRawBufferPointer(buffer)
                    out.copyBytes(from: headerBytes)
                    payload.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: out[headerBytes.count...]))
                    initialized = headerBytes.count + payload.count
                }
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }

    /// Checks the inputs of an encode before any work is done: the name, the
    /// attributes, the options (chunk size, threads, codec level) and that
    /// `raw` holds exactly the bytes `shape` and `dtype` declare (a string
    /// tensor's layout is validated in full).
    public static func validate(
        _ raw: UnsafeRawBufferPointer, name: String, dtype: DType, shape: Shape,
        attributes: [String: String], options: EncodeOptions
    ) throws(CheckpointError) {
        try BlobHeader.validateName(name)
        do throws(CheckpointError) {
            try BlobHeader.validateAttributes(attributes)
            // A level outside the codec's range would write a header no reader accepts.
            _ = try Compression(id: options.compression.id, level: options.compression.level)
            if let floats = options.floatCompression { _ = try Compression(id: floats.id, level: floats.level) }
        } catch {
            throw error.adding(blobName: name)
        }
        let chunkSize = options.chunkSizeInBytes
        guard chunkSize >= 16, chunkSize <= EncodeOptions.maximumChunkSize, chunkSize % 16 == 0 else {
            throw CheckpointError(.invalidField(field: "chunk size", reason: "\(chunkSize) is not a multiple of 16 in 16...\(EncodeOptions.maximumChunkSize)"), blobName: name)
        }
        guard options.threads >= 0 else {
            throw CheckpointError(.invalidField(field: "threads", reason: "\(options.threads) is negative"), blobName: name)
        }
        do throws(CheckpointError) {
            if let expected = try shape.byteCount(for: dtype) {
                guard expected == raw.count else {
                    throw CheckpointError(.sizeMismatch(what: "data of \(dtype) \(shape)", expected: UInt64(expected), actual: UInt64(raw.count)))
                }
            } else {
                _ = try StringTensor.decode(raw, count: shape.elementCount)
            }
        } catch {
            throw error.adding(blobName: name)
        }
    }
}

/// A decoded blob: its header and its raw bytes.
public struct DecodedBlob: Sendable, Hashable {
    /// The blob's header: name, dtype, shape, codec, filter, chunk table and attributes.
    public var header: BlobHeader
    /// The decoded (raw) bytes, after decompression and unfiltering.
    public var bytes: [UInt8]
}

/// Decodes and verifies encoded blobs.
///
/// Every stored chunk's CRC32C is checked before its bytes are used, each
/// chunk must decompress to exactly its declared length (bounded decompressors
/// only), and the decoded bytes of the whole blob are checked against the raw
/// CRC32C. Errors name the blob, the chunk and the offset within the payload.
public enum BlobDecoder {
    /// Decodes `payload` into `destination` (exactly `header.rawSizeInBytes` bytes).
    ///
    /// Chunks run in parallel; raw-stored chunks are checksummed and copied in
    /// cache-sized pieces (one pass over memory). Allocates per worker thread at
    /// most one chunk-sized scratch buffer (only for filtered chunks).
    ///
    /// - Throws: ``CheckpointError`` with `offset` relative to the payload start.
    public static func decode(
        payload: UnsafeRawBufferPointer, header: BlobHeader,
        into destination: UnsafeMutableRawBufferPointer,
        options: DecodeOptions = DecodeOptions()
    ) throws(CheckpointError) {
        guard destination.count == header.rawSizeInBytes else {
            throw CheckpointError(.sizeMismatch(what: "decode destination", expected: UInt64(header.rawSizeInBytes), actual: UInt64(destination.count)), blobName: header.name)
        }
        try run(payload: payload, header: header, destination: destination, options: options)
    }

    /// Checks every checksum of an encoded blob without keeping its bytes:
    /// each stored chunk's CRC32C and, decoding compressed chunks into a
    /// scratch buffer, the raw CRC32C of the whole blob.
    public static func verify(payload: UnsafeRawBufferPointer, header: BlobHeader, options: DecodeOptions = DecodeOptions()) throws(CheckpointError) {
        var options = options
        options.verifyRawChecksum = true
        try run(payload: payload, header: header, destination: nil, options: options)
    }

    /// Decodes the plain encoded form (header bytes followed by exactly the payload).
    ///
    /// Allocates the raw size only after the header has been validated and the
    /// size checked against `options.maximumRawSize`.
    public static func decode(_ encoded: UnsafeRawBufferPointer, options: DecodeOptions = DecodeOptions()) throws(CheckpointError) -> DecodedBlob {
        let (header, headerLength) = try BlobHeader.decode(from: encoded)
        let payload = UnsafeRawBufferPointer(rebasing: encoded[headerLength...])
        guard payload.count == header.storedSizeInBytes else {
            let code: CheckpointError.Code = payload.count < header.storedSizeInBytes
                ? .truncated(what: "blob payload", needed: UInt64(header.storedSizeInBytes), available: UInt64(payload.count))
                : .sizeMismatch(what: "blob payload", expected: UInt64(header.storedSizeInBytes), actual: UInt64(payload.count))
            throw CheckpointError(code, blobName: header.name, offset: UInt64(headerLength))
        }
        guard header.rawSizeInBytes <= options.maximumRawSize else {
            throw CheckpointError(.limitExceeded(what: "raw size", limit: UInt64(options.maximumRawSize), actual: UInt64(header.rawSizeInBytes)), blobName: header.name)
        }
        if header.rawSizeInBytes == 0 {
            // Still verify (an empty blob has no chunks, but its raw CRC must be that of no bytes).
            try decode(payload: payload, header: header, into: UnsafeMutableRawBufferPointer(start: nil, count: 0), options: options)
            return DecodedBlob(header: header, bytes: [])
        }
        var failure: CheckpointError?
        let bytes = [UInt8](unsafeUninitializedCapacity: header.rawSizeInBytes) { buffer, initialized in
            do throws(CheckpointError) {
                try decode(payload: payload, header: header, into: UnsafeMutableRawBufferPointer(buffer), options: options)
            } catch {
                failure = error
                buffer.initialize(repeating: 0)
            }
            initialized = buffer.count
        }
        if var failure {
            // Offsets from the payload decoder are payload-relative; here the payload follows the header.
            if let offset = failure.offset { failure.offset = offset + UInt64(headerLength) }
            throw failure
        }
        return DecodedBlob(header: header, bytes: bytes)
    }

    /// The shared driver of decode and verify.
    private static func run(
        payload: UnsafeRawBufferPointer, header: BlobHeader,
        destination: UnsafeMutableRawBufferPointer?, options: DecodeOptions
    ) throws(CheckpointError) {
        do {
            try runUnnamed(payload: payload, header: header, destination: destination, options: options)
        } catch {
            throw error.adding(blobName: header.name)
        }
    }

    private static func runUnnamed(
        payload: UnsafeRawBufferPointer, header: BlobHeader,
        destination: UnsafeMutableRawBufferPointer?, options: DecodeOptions
    ) throws(CheckpointError) {
        let layout = try PayloadLayout(header)
        guard payload.count == layout.storedSize else {
            throw CheckpointError(.sizeMismatch(what: "blob payload", expected: UInt64(layout.storedSize), actual: UInt64(payload.count)))
        }
        let chunkCount = header.chunks.count
        var rawCRCs = [UInt32](repeating: 0, count: chunkCount)
        let capacity = min(header.chunkSizeInBytes, header.rawSizeInBytes)
        try rawCRCs.withUnsafeMutableBufferPointer { rawCRCs throws(CheckpointError) in
            let makeWorker = { ChunkDecompressor(compression: header.compression, filter: header.filter, chunkCapacity: capacity) }
            try ChunkScheduler.run(count: chunkCount, threads: options.threads, makeWorker: makeWorker) { worker, index throws(CheckpointError) in
                let storedOffset = layout.storedOffsets[index]
                let entry = header.chunks[index]
                let stored = UnsafeRawBufferPointer(rebasing: payload[storedOffset..<(storedOffset + Int(entry.storedSize))])
                let rawLength = header.rawLength(ofChunk: index)
                let rawStart = index * header.chunkSizeInBytes
                let target = destination.map { UnsafeMutableRawBufferPointer(rebasing: $0[rawStart..<(rawStart + rawLength)]) }
                do throws(CheckpointError) {
                    if stored.count == rawLength {
                        let crc = checksumAndCopy(stored, to: target)
                        guard crc == entry.crc32c else {
                            throw CheckpointError(.chunkChecksumMismatch(chunk: index, expected: entry.crc32c, actual: crc))
                        }
                        rawCRCs[index] = crc
                    } else {
                        let crc = CRC32C.checksum(stored)
                        guard crc == entry.crc32c else {
                            throw CheckpointError(.chunkChecksumMismatch(chunk: index, expected: entry.crc32c, actual: crc))
                        }
                        let output = target ?? worker.scratchOutput(count: rawLength)
                        rawCRCs[index] = try worker.decompress(stored, into: output, chunk: index, checksum: options.verifyRawChecksum)
                    }
                } catch {
                    throw error.adding(offset: UInt64(storedOffset))
                }
            }
        }
        guard options.verifyRawChecksum else { return }
        var rawCRC: UInt32 = 0
        for index in 0..<chunkCount {
            rawCRC = CRC32C.combine(rawCRC, rawCRCs[index], lengthOfB: header.rawLength(ofChunk: index))
        }
        guard rawCRC == header.rawCRC32C else {
            throw CheckpointError(.rawChecksumMismatch(expected: header.rawCRC32C, actual: rawCRC))
        }
    }

    /// CRC32C of `source`, copying it to `destination` (when given) in pieces
    /// small enough to stay in cache between the two passes.
    private static func checksumAndCopy(_ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawBufferPointer?) -> UInt32 {
        guard let destination else { return CRC32C.checksum(source) }
        let piece = 128 << 10
        var crc: UInt32 = 0
        var offset = 0
        while offset < source.count {
            let end = min(source.count, offset + piece)
            let part = UnsafeRawBufferPointer(rebasing: source[offset..<end])
            crc = CRC32C.extend(crc, part)
            UnsafeMutableRawBufferPointer(rebasing: destination[offset..<end]).copyMemory(from: part)
            offset = end
        }
        return crc
    }
}

/// Where each chunk's stored bytes begin in the payload, computed with
/// overflow checks from a header that may have been built by hand.
struct PayloadLayout {
    let storedOffsets: [Int]
    let storedSize: Int

    init(_ header: BlobHeader) throws(CheckpointError) {
        guard header.rawSizeInBytes >= 0,
              (1...EncodeOptions.maximumChunkSize).contains(header.chunkSizeInBytes),
              header.chunks.count == BlobHeader.chunkCount(rawSize: header.rawSizeInBytes, chunkSize: header.chunkSizeInBytes)
        else {
            throw CheckpointError(.invalidField(field: "chunk table", reason: "\(header.chunks.count) chunks do not cover \(header.rawSizeInBytes) bytes in chunks of \(header.chunkSizeInBytes)"))
        }
        var offsets: [Int] = []
        offsets.reserveCapacity(header.chunks.count)
        var total = 0
        for (index, entry) in header.chunks.enumerated() {
            let stored = Int(entry.storedSize)
            let rawLength = header.rawLength(ofChunk: index)
            guard stored <= rawLength, stored > 0 || rawLength == 0 else {
                throw CheckpointError(.invalidField(field: "chunk \(index) stored size", reason: "\(stored) for a raw length of \(rawLength)"))
            }
            if stored < rawLength, header.compression == .none {
                throw CheckpointError(.invalidField(field: "chunk \(index) stored size", reason: "\(stored) < raw length \(rawLength) with no compression"))
            }
            offsets.append(total)
            total += stored  // cannot overflow: each term is at most 2^32
        }
        storedOffsets = offsets
        storedSize = total
    }
}

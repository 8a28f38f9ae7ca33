import BlobCodec
import Testing

/// Damaged and hostile encoded blobs must throw a precise ``CheckpointError`` —
/// never crash, never allocate from an unchecked size, never return wrong bytes.
@Suite("Hostile input")
struct HostileInputTests {
    /// A small three-chunk float32 blob in every codec (the shuffle filter on where it applies).
    static func sample(_ codec: Compression) throws -> (raw: [UInt8], encoded: [UInt8]) {
        // 150 quantised weights (a few distinct values, so every codec compresses them): 600 bytes in chunks of 256, 256, 88.
        let raw = (0..<150).map { Float(($0 * 7) % 5 - 2) * 0.01 }.withUnsafeBytes { Array($0) }
        let encoded = try raw.withUnsafeBytes {
            try BlobEncoder.encode($0, name: "layer.0.weight", dtype: .float32, shape: [10, 15], attributes: ["role": "test"],
                                   options: EncodeOptions(compression: codec, chunkSizeInBytes: 256, skipIncompressible: false))
        }
        return (raw, encoded)
    }

    static let codecs: [Compression] = [.none, .lz4, .lz4hc(level: 4), .zlib(level: 1), .zstd(level: 1)]

    @Test("flipping any single byte of the encoded form throws", arguments: codecs)
    func singleByteFlips(codec: Compression) throws {
        let (raw, encoded) = try Self.sample(codec)
        #expect(try encoded.withUnsafeBytes { try BlobDecoder.decode($0) }.bytes == raw)
        var detected = 0
        for position in encoded.indices {
            for mask: UInt8 in [0x01, 0x80, 0xFF] {
                var damaged = encoded
                damaged[position] ^= mask
                do {
                    let decoded = try damaged.withUnsafeBytes { try BlobDecoder.decode($0) }
                    Issue.record("byte \(position) ^ \(mask) went undetected (\(codec)); decoded equal to original: \(decoded.bytes == raw)")
                } catch {
                    detected += 1
                }
            }
        }
        #expect(detected == 3 * encoded.count)
        print("\(codec): \(detected) of \(3 * encoded.count) single-byte corruptions of a \(encoded.count)-byte blob detected")
    }

    @Test("truncating at every length throws, and so does a trailing byte", arguments: codecs)
    func truncations(codec: Compression) throws {
        let (_, encoded) = try Self.sample(codec)
        for length in 0..<encoded.count {
            #expect(throws: CheckpointError.self, "length \(length)") {
                try Array(encoded[..<length]).withUnsafeBytes { try BlobDecoder.decode($0) }
            }
        }
        #expect(throws: CheckpointError.self) { try (encoded + [0]).withUnsafeBytes { try BlobDecoder.decode($0) } }
    }

    @Test("a damaged payload names the blob, the chunk and the offset, expected vs actual")
    func preciseChunkError() throws {
        let (_, encoded) = try Self.sample(.none)
        let headerLength = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).length }
        var damaged = encoded
        damaged[headerLength + 256 + 10] ^= 0x40  // inside chunk 1
        let error = try #require(throws: CheckpointError.self) { try damaged.withUnsafeBytes { try BlobDecoder.decode($0) } }
        guard case let .chunkChecksumMismatch(chunk, expected, actual) = error.code else {
            Issue.record("unexpected \(error)")
            return
        }
        #expect(chunk == 1 && expected != actual)
        #expect(error.blobName == "layer.0.weight")
        #expect(error.offset == UInt64(headerLength + 256))
    }

    // MARK: - Crafted headers with a valid checksum

    /// Rewrites a header field and re-signs the header, as an attacker (or a buggy writer) would.
    static func forge(_ encoded: [UInt8], _ edit: (inout [UInt8], _ headerLength: Int) -> Void) throws -> [UInt8] {
        var bytes = encoded
        let length = try encoded.withUnsafeBytes { try BlobHeader.encodedLength(fromFixedPart: $0) }
        edit(&bytes, length)
        let newLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        guard newLength <= bytes.count, newLength >= 8 else { return bytes }
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<(newLength - 4)])) }
        store(crc, into: &bytes, at: newLength - 4)
        return bytes
    }

    static func store<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    static func decodeError(_ bytes: [UInt8], cap: Int = DecodeOptions().maximumRawSize) -> CheckpointError? {
        do {
            _ = try bytes.withUnsafeBytes { try BlobDecoder.decode($0, options: DecodeOptions(maximumRawSize: cap)) }
            return nil
        } catch let error as CheckpointError {
            return error
        } catch {
            Issue.record("not a CheckpointError: \(error)")
            return nil
        }
    }

    @Test("forged fields are rejected before anything is allocated or read")
    func forgedFields() throws {
        let (_, encoded) = try Self.sample(.lz4)
        let (_, plain) = try Self.sample(.none)

        // A declared raw size of 2^62 bytes (with a matching shape) does not allocate: the chunk count disagrees.
        let huge = try Self.forge(encoded) { b, _ in
            Self.store(UInt64(1) << 62, into: &b, at: 24)
            b[12] = DType.uint8.rawValue
            b[17] = 1  // rank 1 — the header is now too short for its fields, also rejected
        }
        #expect(Self.decodeError(huge) != nil)

        let rawSize = try Self.forge(encoded) { b, _ in Self.store(UInt64(1) << 62, into: &b, at: 24) }
        #expect(Self.decodeError(rawSize)?.code == .invalidField(field: "chunk count", reason: "3, but 4611686018427387904 bytes in chunks of 256 make 18014398509481984"))

        let chunkCount = try Self.forge(encoded) { b, _ in Self.store(UInt64(2), into: &b, at: 48) }
        if case .invalidField(field: "chunk count", _)? = Self.decodeError(chunkCount)?.code {} else { Issue.record("chunk count: \(String(describing: Self.decodeError(chunkCount)))") }

        // 2^61 one-byte chunks in a header with no room for them: rejected without overflowing 8 × count.
        let manyChunks = try Self.forge(encoded) { b, _ in
            Self.store(UInt64(1) << 61, into: &b, at: 24)
            Self.store(UInt64(1), into: &b, at: 40)
            Self.store(UInt64(1) << 61, into: &b, at: 48)
        }
        if case .invalidField(field: "blob header length", _)? = Self.decodeError(manyChunks)?.code {} else { Issue.record("2^61 chunks: \(String(describing: Self.decodeError(manyChunks)))") }

        let codec = try Self.forge(encoded) { b, _ in b[13] = 9 }
        #expect(Self.decodeError(codec)?.code == .unknownCodec(9))

        let dtype = try Self.forge(encoded) { b, _ in b[12] = 200 }
        #expect(Self.decodeError(dtype)?.code == .unknownDType("id 200"))

        let filter = try Self.forge(plain) { b, _ in b[15] = 1; b[16] = 4 }
        #expect(Self.decodeError(filter)?.code == .invalidField(field: "filter", reason: "shuffle without compression"))

        let level = try Self.forge(encoded) { b, _ in b[14] = 3 }
        #expect(Self.decodeError(level)?.code == .invalidField(field: "codec level", reason: "3 outside 0...0 for codec id 1"))

        let storedSum = try Self.forge(encoded) { b, _ in Self.store(UInt64(5), into: &b, at: 32) }
        if case .invalidField(field: "stored size", _)? = Self.decodeError(storedSum)?.code {} else { Issue.record("stored sum") }

        // A chunk claiming to expand 256x beyond LZ4's limit: 1 stored byte for 256 raw ones is fine, so use chunk size 1 GiB.
        let expansion = try Self.forge(plain) { b, length in
            b[13] = 1  // lz4
            Self.store(UInt32(2), into: &b, at: length - 4 - 24)  // chunk 0 stored size 2 for 256 raw bytes
        }
        #expect(Self.decodeError(expansion) != nil)

        let oversized = try Self.forge(encoded) { b, length in
            Self.store(UInt32(257), into: &b, at: length - 4 - 24)  // chunk 0 stored larger than its raw 256
        }
        if case .invalidField(field: "chunk 0 stored size", _)? = Self.decodeError(oversized)?.code {} else { Issue.record("oversized chunk") }

        let flags = try Self.forge(encoded) { b, _ in b[6] = 1 }
        if case .invalidField(field: "blob header flags", _)? = Self.decodeError(flags)?.code {} else { Issue.record("flags") }

        let version = try Self.forge(encoded) { b, _ in b[4] = 2 }
        #expect(Self.decodeError(version)?.code == .unsupportedVersion(what: "blob header", version: 2))

        let nameUTF8 = try Self.forge(encoded) { b, _ in b[64 + 16] = 0xC0 }  // first name byte after two dims
        #expect(Self.decodeError(nameUTF8)?.code == .invalidField(field: "blob name", reason: "not valid UTF-8"))

        let length = try Self.forge(encoded) { b, _ in Self.store(UInt32(0xFFFF_FFF0), into: &b, at: 8) }
        if case .truncated? = Self.decodeError(length)?.code {} else { Issue.record("length") }
    }

    @Test("a checksum-valid chunk that is not a valid stream, or decodes to the wrong size, is caught")
    func forgedChunks() throws {
        for codec in [Compression.lz4, .zlib(level: 1), .zstd(level: 1)] {
            let (_, encoded) = try Self.sample(codec)
            let headerLength = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).length }
            let header = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).header }
            try #require(Int(header.chunks[0].storedSize) < 256, "chunk 0 must be compressed for this test")
            // Garbage inside chunk 0, with its CRC re-signed.
            var garbage = encoded
            for i in 0..<Int(header.chunks[0].storedSize) { garbage[headerLength + i] = UInt8(truncatingIfNeeded: i &* 37) }
            let crc = garbage.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[headerLength..<(headerLength + Int(header.chunks[0].storedSize))])) }
            let forged = try Self.forge(garbage) { b, length in Self.store(crc, into: &b, at: length - 4 - 24 + 4) }
            let error = Self.decodeError(forged)
            switch error?.code {
            case .corruptChunk(chunk: 0, _)?, .chunkSizeMismatch(chunk: 0, _, _)?: break
            default: Issue.record("\(codec): \(String(describing: error))")
            }

            // A valid raw CRC field changed: every chunk verifies, the whole blob does not.
            let rawCRC = try Self.forge(encoded) { b, _ in b[56] ^= 1 }
            if case .rawChecksumMismatch? = Self.decodeError(rawCRC)?.code {} else { Issue.record("\(codec) raw crc") }
        }
    }

    @Test("the allocating decoder refuses a raw size above its cap before allocating")
    func allocationCap() throws {
        let (_, encoded) = try Self.sample(.lz4)
        let error = Self.decodeError(encoded, cap: 599)
        #expect(error?.code == .limitExceeded(what: "raw size", limit: 599, actual: 600))
    }

    @Test("decoding with a hand-built inconsistent header throws instead of reading out of bounds")
    func inconsistentHeaderStruct() throws {
        let (_, encoded) = try Self.sample(.none)
        let (header, length) = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0) }
        var bad = header
        bad.chunks.removeLast()
        var out = [UInt8](repeating: 0, count: header.rawSizeInBytes)
        #expect(throws: CheckpointError.self) {
            try encoded.withUnsafeBytes { all in
                try out.withUnsafeMutableBytes { try BlobDecoder.decode(payload: UnsafeRawBufferPointer(rebasing: all[length...]), header: bad, into: $0) }
            }
        }
        var tooBig = header
        tooBig.chunks[0].storedSize = 4096
        #expect(throws: CheckpointError.self) {
            try encoded.withUnsafeBytes { all in
                try out.withUnsafeMutableBytes { try BlobDecoder.decode(payload: UnsafeRawBufferPointer(rebasing: all[length...]), header: tooBig, into: $0) }
            }
        }
    }
}

import BlobCodec
import Testing

@Suite("Chunked codec round trips")
struct CodecRoundTripTests {
    static let chunk = 4096
    static let codecs: [Compression] = [.none, .lz4, .lz4hc(level: 9), .zlib(level: 6), .zstd(level: 3)]
    static let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 123]

    @Test("every dtype × codec × shuffle on/off × size round-trips, identically on 1 and 4 threads",
          arguments: DType.allCases)
    func roundTrip(dtype: DType) throws {
        var rng = SyntheticData(seed: UInt64(dtype.rawValue))
        for size in Self.sizes {
            let (shape, bytes) = try TestBlobs.make(dtype, targetBytes: size, rng: &rng)
            for codec in Self.codecs {
                for shuffle in [ShuffleMode.on, .off] {
                    let context = "\(dtype) \(shape) \(codec) shuffle \(shuffle)"
                    var options = EncodeOptions(compression: codec, shuffle: shuffle, chunkSizeInBytes: Self.chunk, threads: 1)
                    let single = try bytes.withUnsafeBytes {
                        try BlobEncoder.encode($0, name: "t", dtype: dtype, shape: shape, attributes: ["k": "v"], options: options)
                    }
                    options.threads = 4
                    let parallel = try bytes.withUnsafeBytes {
                        try BlobEncoder.encode($0, name: "t", dtype: dtype, shape: shape, attributes: ["k": "v"], options: options)
                    }
                    #expect(single == parallel, "output depends on thread count: \(context)")
                    let decoded = try single.withUnsafeBytes { try BlobDecoder.decode($0, options: DecodeOptions(threads: 3)) }
                    #expect(decoded.bytes == bytes, "round trip: \(context)")
                    #expect(decoded.header.shape == shape && decoded.header.dtype == dtype, "\(context)")
                    #expect(decoded.header.attributes == ["k": "v"], "\(context)")
                    #expect(decoded.header.rawCRC32C == CRC32C.checksum(bytes), "\(context)")
                    if codec == .none { #expect(decoded.header.isStoredRaw, "\(context)") }
                    if decoded.bytes != bytes || single != parallel { return }
                }
            }
        }
    }

    @Test("compressible float data actually compresses, with shuffle chosen automatically")
    func compressesFloats() throws {
        var rng = SyntheticData(seed: 1)
        let count = 1 << 20
        let bytes = rng.bfloat16Weights(count: count)
        let encoded = try bytes.withUnsafeBytes {
            try BlobEncoder.encode($0, name: "w", dtype: .bfloat16, shape: [count], options: EncodeOptions(compression: .zstd(level: 1), chunkSizeInBytes: 1 << 20))
        }
        let header = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).header }
        #expect(header.filter == .shuffle(elementSize: 2))
        // bf16 normal(0, 0.02) has ~10.6 bits of order-0 entropy per 16; zstd-1 after shuffle gets ~1.46x.
        #expect(Double(bytes.count) / Double(header.storedSizeInBytes) > 1.42)
        #expect(!header.isStoredRaw)
    }

    @Test("incompressible data is stored raw, and the first chunk decides for the rest")
    func incompressibleStoredRaw() throws {
        var rng = SyntheticData(seed: 2)
        let bytes = rng.randomBytes(count: 10 * 4096)
        for skip in [true, false] {
            let options = EncodeOptions(compression: .lz4, chunkSizeInBytes: 4096, skipIncompressible: skip)
            let encoded = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "r", dtype: .uint8, shape: [bytes.count], options: options) }
            let header = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).header }
            #expect(header.isStoredRaw)
            #expect(header.storedSizeInBytes == bytes.count)
        }
        // Compressible data after an incompressible first chunk: with skip, stored raw; without, compressed.
        let mixed = rng.randomBytes(count: 4096) + [UInt8](repeating: 0, count: 9 * 4096)
        let sizes = try [true, false].map { skip in
            let options = EncodeOptions(compression: .lz4, chunkSizeInBytes: 4096, skipIncompressible: skip)
            let encoded = try mixed.withUnsafeBytes { try BlobEncoder.encode($0, name: "m", dtype: .uint8, shape: [mixed.count], options: options) }
            return try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).header.storedSizeInBytes }
        }
        #expect(sizes[0] == mixed.count)
        #expect(sizes[1] < mixed.count / 2)
        // The skip decision is the same whatever the thread count (chunks compressed
        // speculatively while chunk 0 runs are discarded).
        let outputs = try [1, 2, 8].map { threads in
            let options = EncodeOptions(compression: .lz4, chunkSizeInBytes: 4096, threads: threads)
            return try mixed.withUnsafeBytes { try BlobEncoder.encode($0, name: "m", dtype: .uint8, shape: [mixed.count], options: options) }
        }
        #expect(outputs[0] == outputs[1] && outputs[1] == outputs[2])
    }

    @Test("uncompressed payload segments point into the caller's memory (no copy)")
    func zeroCopyPayload() throws {
        let bytes = [UInt8](repeating: 7, count: 3 * 4096 + 5)
        try bytes.withUnsafeBytes { raw in
            try BlobEncoder.encode(raw, name: "z", dtype: .uint8, shape: [bytes.count], options: EncodeOptions(chunkSizeInBytes: 4096)) { header, payload in
                #expect(payload.segments.count == 4)
                #expect(payload.segments.first?.baseAddress == raw.baseAddress)
                #expect(payload.segments.last?.baseAddress == raw.baseAddress! + 3 * 4096)
                #expect(payload.count == bytes.count && header.isStoredRaw)
            }
        }
    }

    @Test("encode rejects bad inputs with a precise error")
    func encodeRejects() throws {
        let bytes = [UInt8](repeating: 0, count: 12)
        func code(_ body: () throws -> Void) -> CheckpointError.Code? {
            do { try body(); return nil } catch let error as CheckpointError { return error.code } catch { return nil }
        }
        let wrongSize = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "a", dtype: .float32, shape: [4]) } }
        #expect(wrongSize == .sizeMismatch(what: "data of F32 [4]", expected: 16, actual: 12))
        // The empty name is a name (FORMAT.md §3.2), as in safetensors and numpy.
        let emptyName = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "", dtype: .float32, shape: [3]) } }
        #expect(emptyName == nil)
        let badChunk = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "a", dtype: .float32, shape: [3], options: EncodeOptions(chunkSizeInBytes: 100)) } }
        #expect(badChunk != nil)
        let nul = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "a\u{0}b", dtype: .float32, shape: [3]) } }
        #expect(nul == .invalidField(field: "blob name", reason: "contains NUL"))
        // Levels outside a codec's range would write headers no reader accepts (or not fit the level byte).
        for compression in [Compression.zstd(level: 25), .lz4hc(level: 300), .zlib(level: 0)] {
            let level = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "a", dtype: .float32, shape: [3], options: EncodeOptions(compression: compression)) } }
            #expect(level == .invalidField(field: "codec level", reason: "\(compression.level) outside \(Compression.levels(forID: compression.id)!) for codec id \(compression.id)"))
        }
        let emptyKey = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "a", dtype: .float32, shape: [3], attributes: ["": "v"]) } }
        #expect(emptyKey == .invalidField(field: "attribute key ''", reason: "empty or longer than 65535 bytes"))
        let nameTooLong = code { _ = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: String(repeating: "n", count: 1 << 20), dtype: .float32, shape: [3]) } }
        #expect(nameTooLong == .invalidField(field: "blob name", reason: "1048576 bytes exceeds 65535"))
    }

    @Test("codec names parse, levels are range-checked")
    func codecParsing() throws {
        #expect(try Compression(parsing: "zstd-19") == .zstd(level: 19))
        #expect(try Compression(parsing: "zlib") == .zlib(level: 6))
        #expect(try Compression(parsing: "LZ4") == .lz4)
        #expect(throws: CheckpointError.self) { try Compression(parsing: "zstd-20") }
        #expect(throws: CheckpointError.self) { try Compression(parsing: "brotli") }
    }
}

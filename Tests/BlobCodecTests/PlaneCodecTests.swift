import BlobCodec
import CCheckpointKernels
import Testing

/// The byte-plane codec (codec 5) and the rotate + shuffle filter (filter 2):
/// FORMAT.md §3.4.1 and §3.10.
@Suite("Plane codec")
struct PlaneCodecTests {
    // MARK: Contents that stress a float codec

    /// Element bytes of `dtype` for `count` elements, of one of several kinds.
    static func contents(_ kind: String, _ dtype: DType, count: Int, rng: inout SyntheticData) -> [UInt8] {
        let size = dtype.elementSizeInBytes ?? 1
        let byteCount = (try? dtype.byteCount(elementCount: count) ?? 0) ?? 0
        switch kind {
        case "weights":
            // normal(0, 0.02) in the dtype where we can compute it; elsewhere a stand-in with a
            // peaked top byte (the exponent-like part) and noisy low bytes.
            switch dtype {
            case .float32, .complex64: return rng.float32Weights(count: byteCount / 4)
            case .bfloat16: return rng.bfloat16Weights(count: byteCount / 2)
            default:
                var bytes = rng.randomBytes(count: byteCount)
                for index in stride(from: size - 1, to: byteCount, by: size) { bytes[index] = 0x3C + UInt8(rng.next() % 4) }
                return bytes
            }
        case "specials":
            // NaN with payloads (quiet and signalling, both signs), ±0, ±inf, subnormals, repeated.
            let patterns: [[UInt8]]
            switch size {
            case 2: patterns = [[0x01, 0x7C], [0xFF, 0xFF], [0x00, 0x00], [0x00, 0x80], [0x80, 0x7F], [0x80, 0xFF], [0x01, 0x00], [0x01, 0x80], [0x41, 0x7F]]
            case 4: patterns = [[0x01, 0x00, 0x80, 0x7F], [0xFF, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0, 0, 0, 0x80], [0, 0, 0x80, 0x7F],
                                [0, 0, 0x80, 0xFF], [1, 0, 0, 0], [0xFF, 0xFF, 0x7F, 0x80], [0x34, 0x12, 0xC0, 0x7F]]
            case 8: patterns = [[1, 0, 0, 0, 0, 0, 0xF0, 0x7F], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0, 0, 0, 0, 0],
                                [0, 0, 0, 0, 0, 0, 0, 0x80], [0, 0, 0, 0, 0, 0, 0xF0, 0x7F], [1, 0, 0, 0, 0, 0, 0, 0], [0x21, 0x43, 0x65, 0x87, 0, 0, 0xF8, 0xFF]]
            default: patterns = [[0x7F], [0xFF], [0x00], [0x80], [0x01], [0x81], [0x7E]]
            }
            let flat = patterns.flatMap { $0 }
            return (0..<byteCount).map { flat[($0 / flat.count * 7 + $0) % flat.count] }
        case "equal":
            return (0..<byteCount).map { UInt8(truncatingIfNeeded: 0x3C >> ($0 % size)) }
        case "outlier":
            var bytes = [UInt8](repeating: 0, count: byteCount)
            if byteCount > 0 { bytes[byteCount / 2] = 0x7F; bytes[byteCount - 1] = 0xC1 }
            return bytes
        default:
            return rng.randomBytes(count: byteCount)
        }
    }

    static let floatDTypes: [DType] = DType.allCases.filter(\.isFloatingPoint)
    static let kinds = ["weights", "specials", "equal", "outlier", "random"]

    @Test("round trips for every float dtype × contents × chunk sizes, bit for bit", arguments: floatDTypes)
    func roundTrips(dtype: DType) throws {
        var rng = SyntheticData(seed: UInt64(dtype.rawValue) * 977)
        let groups = dtype.bitsPerElement % 8 == 0 ? 1 : (dtype.bitsPerElement == 4 ? 2 : 4)
        for kind in Self.kinds {
            for count in [0, 1, 7, 16, 1000, 50_000].map({ $0 * groups }) {
                let raw = Self.contents(kind, dtype, count: count, rng: &rng)
                for chunk in [16, 48, 4096, 65_536, EncodeOptions.defaultChunkSize] {
                    if chunk < 4096 && raw.count > 16_000 { continue }  // tiny chunks: small inputs only (time)
                    let options = EncodeOptions(compression: .planes, chunkSizeInBytes: chunk, skipIncompressible: false)
                    let encoded = try raw.withUnsafeBytes {
                        try BlobEncoder.encode($0, name: "t", dtype: dtype, shape: [count], options: options)
                    }
                    let decoded = try encoded.withUnsafeBytes { try BlobDecoder.decode($0) }
                    #expect(decoded.bytes == raw, "\(dtype) \(kind) count \(count) chunk \(chunk)")
                    #expect(decoded.header.compression == .planes)
                    if let size = dtype.shuffleElementSize, [2, 4, 8].contains(size) {
                        #expect(decoded.header.filter == .rotateShuffle(elementSize: size))
                    } else {
                        #expect(decoded.header.filter == .none)
                    }
                    // Also through the in-place decoder with verification off (no CRC pass).
                    let header = decoded.header
                    let headerLength = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).length }
                    var out = [UInt8](repeating: 0xEE, count: raw.count)
                    try encoded.withUnsafeBytes { all in
                        try out.withUnsafeMutableBytes { destination in
                            try BlobDecoder.decode(payload: UnsafeRawBufferPointer(rebasing: all[headerLength...]), header: header,
                                                   into: destination, options: DecodeOptions(verifyRawChecksum: false))
                        }
                    }
                    #expect(out == raw)
                }
            }
        }
    }

    @Test("compressible float data is compressed; all-equal data by repeat segments")
    func ratios() throws {
        var rng = SyntheticData(seed: 7)
        let bf16 = rng.bfloat16Weights(count: 1 << 20)
        let f32 = rng.float32Weights(count: 1 << 19)
        func ratio(_ raw: [UInt8], _ dtype: DType) throws -> Double {
            let count = raw.count / dtype.elementSizeInBytes!
            let encoded = try raw.withUnsafeBytes { try BlobEncoder.encode($0, name: "w", dtype: dtype, shape: [count], options: EncodeOptions(compression: .planes)) }
            #expect(try encoded.withUnsafeBytes { try BlobDecoder.decode($0) }.bytes == raw)
            return Double(raw.count) / Double(encoded.count)
        }
        // Bounds for normal(0, 0.02): exponent ~2.7 bits, the rest stored raw.
        #expect(try ratio(bf16, .bfloat16) > 1.48)
        #expect(try ratio(f32, .float32) > 1.19)
        #expect(try ratio([UInt8](repeating: 0, count: 4 << 20), .float32) > 10_000)
        // Random bytes do not shrink: stored raw, so the payload is the raw bytes.
        let random = rng.randomBytes(count: 1 << 20)
        #expect(try ratio(random, .float32) > 0.99)
    }

    @Test("identical output on 1 and N threads", arguments: [1, 2, 3, 8])
    func threadCountIndependent(threads: Int) throws {
        var rng = SyntheticData(seed: 99)
        var raw = rng.bfloat16Weights(count: 300_000)
        raw.replaceSubrange(0..<4096, with: rng.randomBytes(count: 4096))
        func encode(_ threads: Int) throws -> [UInt8] {
            try raw.withUnsafeBytes {
                try BlobEncoder.encode($0, name: "w", dtype: .bfloat16, shape: [raw.count / 2],
                                       options: EncodeOptions(compression: .planes, chunkSizeInBytes: 65_536, threads: threads))
            }
        }
        #expect(try encode(threads) == encode(1))
        let encoded = try encode(threads)
        #expect(try encoded.withUnsafeBytes { try BlobDecoder.decode($0, options: DecodeOptions(threads: threads)) }.bytes == raw)
    }

    /// Contents for the in-place split: as `contents`, plus low planes that are not noise, so
    /// that the encoder loses its bet that they are stored raw at the first plane (quantized
    /// bf16: low byte 0x00 or 0x80) or at a later one (fp32 with a peaked second plane, the
    /// planes after it noise again; fp64 with its low half zero).
    static func inPlaceContents(_ kind: String, _ dtype: DType, count: Int, rng: inout SyntheticData) -> [UInt8] {
        let size = dtype.elementSizeInBytes ?? 1
        switch kind {
        case "low plane coded":
            var bytes = contents("weights", dtype, count: count, rng: &rng)
            for index in stride(from: 0, to: bytes.count, by: size) { bytes[index] = rng.next() % 3 == 0 ? 0x80 : 0x00 }
            return bytes
        case "middle plane coded":
            var bytes = contents("weights", dtype, count: count, rng: &rng)
            if size > 2 { for index in stride(from: 1, to: bytes.count, by: size) { bytes[index] = 0x40 | UInt8(rng.next() % 4) } }
            return bytes
        case "low half zero":
            var bytes = contents("random", dtype, count: count, rng: &rng)
            for index in 0..<bytes.count where index % size < size / 2 { bytes[index] = 0 }
            return bytes
        default:
            return contents(kind, dtype, count: count, rng: &rng)
        }
    }

    // Serialized: the switch is process-wide, and cases running side by side would flip it
    // under each other (nothing else in the tests flips it; every setting writes the same bytes).
    @Test("planes split in place in the output give exactly the bytes of planes split in scratch, whichever plane loses the bet",
          .serialized, arguments: [DType.bfloat16, .float16, .float32, .float64])
    func inPlaceSplitSameBytes(dtype: DType) throws {
        var rng = SyntheticData(seed: UInt64(dtype.rawValue) * 31 + 5)
        let size = dtype.elementSizeInBytes!
        defer { _ = ckk_planes_set_in_place(1) }
        for kind in Self.kinds + ["low plane coded", "middle plane coded", "low half zero"] {
            // 3 chunks and a short last one; the planes of a full chunk pass the 64 KiB sampling threshold.
            let chunk = size * (96 << 10)
            let count = (3 * chunk + 4096 + 3) / size
            let raw = Self.inPlaceContents(kind, dtype, count: count, rng: &rng)
            func encode(inPlace: Int32) throws -> [UInt8] {
                #expect(ckk_planes_set_in_place(inPlace) == inPlace)
                return try raw.withUnsafeBytes {
                    try BlobEncoder.encode($0, name: "w", dtype: dtype, shape: [count],
                                           options: EncodeOptions(compression: .planes, chunkSizeInBytes: chunk, skipIncompressible: false))
                }
            }
            let inScratch = try encode(inPlace: 0)
            let inPlace = try encode(inPlace: 1)
            // Compared here, not by #expect: its report of two megabyte arrays that differ takes minutes.
            let common = min(inPlace.count, inScratch.count)
            let firstDifference = (0..<common).first { inPlace[$0] != inScratch[$0] } ?? (inPlace.count == inScratch.count ? nil : common)
            #expect(firstDifference == nil, "\(dtype) \(kind): other bytes with the planes split in place (first at \(firstDifference ?? -1))")
            let decoded = try? inPlace.withUnsafeBytes { try BlobDecoder.decode($0) }.bytes
            #expect(decoded.map { $0 == raw } == true, "\(dtype) \(kind): does not decode to the input")
        }
    }

    // MARK: Damage

    /// A small blob with Huffman, raw and repeat segments in each of three chunks.
    static func damageSample() throws -> (raw: [UInt8], encoded: [UInt8]) {
        var values: [UInt16] = []
        for index in 0..<384 {
            let top: UInt16 = [0x3C, 0x3C, 0x3D, 0x3B, 0xBC, 0x3C, 0xBD, 0x3E][index % 8]
            values.append(top << 8 | UInt16(truncatingIfNeeded: index &* 37))
        }
        let raw = values.withUnsafeBytes { Array($0) }
        let encoded = try raw.withUnsafeBytes {
            try BlobEncoder.encode($0, name: "damage", dtype: .bfloat16, shape: [384],
                                   options: EncodeOptions(compression: .planes, chunkSizeInBytes: 256, skipIncompressible: false))
        }
        return (raw, encoded)
    }

    @Test("every single-byte corruption of an encoded blob is detected")
    func everyByteFlip() throws {
        let (raw, encoded) = try Self.damageSample()
        let header = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).header }
        #expect(header.storedSizeInBytes < raw.count, "the sample must be compressed")
        #expect(try encoded.withUnsafeBytes { try BlobDecoder.decode($0) }.bytes == raw)
        for position in encoded.indices {
            for mask: UInt8 in [0x01, 0x10, 0x80, 0xFF] {
                var damaged = encoded
                damaged[position] ^= mask
                #expect(throws: CheckpointError.self, "byte \(position) ^ \(mask)") { try damaged.withUnsafeBytes { try BlobDecoder.decode($0) } }
            }
        }
    }

    @Test("every truncation of an encoded blob is detected")
    func everyTruncation() throws {
        let (_, encoded) = try Self.damageSample()
        for length in 0..<encoded.count {
            #expect(throws: CheckpointError.self, "length \(length)") { try Array(encoded[..<length]).withUnsafeBytes { try BlobDecoder.decode($0) } }
        }
    }

    /// Decodes a hand-made chunk stream with the kernel directly (no CRCs in the way).
    static func kernelDecode(_ stream: [UInt8], length: Int, size: Int = 1, rotate: Int32 = 0) -> (Int32, [UInt8]) {
        var out = [UInt8](repeating: 0, count: length)
        var scratch = [UInt8](repeating: 0, count: max(length, 1))
        var crc: UInt32 = 0
        let status = stream.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { dst in
                scratch.withUnsafeMutableBufferPointer { scratch in
                    ckk_planes_decode(dst.baseAddress ?? UnsafeMutableRawPointer(scratch.baseAddress!), length, src.baseAddress, src.count,
                                      size, rotate, scratch.baseAddress, &crc, 1)
                }
            }
        }
        // What the kernel decodes, it checksums: the CRC it reports is that of its output.
        if status == 0 { #expect(crc == CRC32C.checksum(out), "the decoder's CRC32C is not that of its output") }
        return (status, out)
    }

    @Test("an unfiltered chunk of many segments (Huffman pieces, a repeat, raw bytes): the kernel's CRC32C of the decoded bytes is theirs")
    func unfilteredSegmentsChecksum() {
        // 1 MiB + 1,000 bytes, which the codec cuts into five equal pieces: two FP8-like
        // alphabets (Huffman), one value (repeat), random bytes (raw), so the CRC follows
        // segment by segment.
        var rng = SyntheticData(seed: 0xC4C)
        var raw = [UInt8](repeating: 0, count: (1 << 20) + 1000)
        for i in raw.indices {
            let r = rng.next()
            switch i * 5 / raw.count {
            case 0: raw[i] = UInt8(truncatingIfNeeded: r) & 0x87 | UInt8(r >> 8 & 3) << 3
            case 1: raw[i] = 0x3C &+ UInt8(r & 7)
            case 2: raw[i] = 0x11
            default: raw[i] = UInt8(truncatingIfNeeded: r)
            }
        }
        var stored = [UInt8](repeating: 0, count: raw.count + Int(CKK_PLANES_SLACK))
        var scratch = [UInt8](repeating: 0, count: raw.count)
        var pairs = [UInt32](repeating: 0, count: Int(CKK_HUFFMAN_PAIR_ENTRIES))
        var rawCRC: UInt32 = 0
        let size = raw.withUnsafeBytes { src in
            ckk_planes_encode(&stored, stored.count, src.baseAddress, src.count, 1, 0, &scratch, &pairs, &rawCRC)
        }
        #expect(size > 0 && size < raw.count)
        #expect(rawCRC == CRC32C.checksum(raw))
        var segments = 0, kinds = Set<UInt8>(), at = 0
        while at < size {  // each segment: kind, u32 length, then its body
            kinds.insert(stored[at])
            segments += 1
            let length = Int(stored[at + 1]) | Int(stored[at + 2]) << 8 | Int(stored[at + 3]) << 16 | Int(stored[at + 4]) << 24
            at += 5 + (stored[at] == 0 ? length : stored[at] == 1 ? 1 : Self.huffmanBodySize(stored, at: at + 5))
        }
        #expect(segments >= 5 && kinds == [0, 1, 2], "segments \(segments), kinds \(kinds.sorted())")
        let (status, decoded) = Self.kernelDecode(Array(stored[..<size]), length: raw.count)
        #expect(status == 0 && decoded == raw)
    }

    /// The size of the Huffman body at `at`: its table, four stream sizes and the streams.
    static func huffmanBodySize(_ bytes: [UInt8], at: Int) -> Int {
        let span = Int(bytes[at + 1]) - Int(bytes[at]) + 1
        let table = 2 + (span + 1) / 2
        var total = table + 16
        for k in 0..<4 {
            let p = at + table + 4 * k
            total += Int(bytes[p]) | Int(bytes[p + 1]) << 8 | Int(bytes[p + 2]) << 16 | Int(bytes[p + 3]) << 24
        }
        return total
    }

    @Test("malformed chunk streams are rejected by the kernel with the right error, never read out of bounds")
    func malformedStreams() {
        // Valid: raw "ab", repeat 3 × 'x'.
        #expect(Self.kernelDecode([0, 2, 0, 0, 0, 0x61, 0x62, 1, 3, 0, 0, 0, 0x78], length: 5) == (0, [0x61, 0x62, 0x78, 0x78, 0x78]))
        #expect(Self.kernelDecode([9, 1, 0, 0, 0, 0], length: 1).0 == CKK_ERR_BAD_SEGMENT)  // unknown kind
        #expect(Self.kernelDecode([0, 0, 0, 0, 0], length: 1).0 == CKK_ERR_BAD_SEGMENT)  // zero length
        #expect(Self.kernelDecode([0, 2, 0, 0, 0, 0x61], length: 2).0 == CKK_ERR_TRUNCATED)  // raw bytes missing
        #expect(Self.kernelDecode([0, 2, 0, 0], length: 2).0 == CKK_ERR_TRUNCATED)  // header cut
        #expect(Self.kernelDecode([0, 3, 0, 0, 0, 1, 2, 3], length: 2).0 == CKK_ERR_LENGTH)  // longer than the chunk
        #expect(Self.kernelDecode([0, 1, 0, 0, 0, 1], length: 2).0 == CKK_ERR_LENGTH)  // shorter than the chunk
        #expect(Self.kernelDecode([1, 0x01, 0x00, 0x10, 0x00, 7], length: 0x100001).0 == CKK_ERR_BAD_SEGMENT)  // repeat > 2^20
        // Huffman: symbols 'a' (length 1), 'b' (1) for "abba" in one stream.
        let good: [UInt8] = [2, 4, 0, 0, 0, 0x61, 0x62, 0x11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x06]
        // Quarters of 4 symbols: 1 each, so four streams of one byte; rebuild with that layout.
        let abba: [UInt8] = [2, 4, 0, 0, 0, 0x61, 0x62, 0x11, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x01, 0x01, 0x00]
        #expect(Self.kernelDecode(abba, length: 4) == (0, [0x61, 0x62, 0x62, 0x61]))
        #expect(Self.kernelDecode(good, length: 4).0 != 0)  // stream sizes that do not match the quarters
        var incomplete = abba
        incomplete[7] = 0x21  // lengths 1 and 2: not a complete code
        #expect(Self.kernelDecode(incomplete, length: 4).0 == CKK_ERR_BAD_TABLE)
        var long = abba
        long[7] = 0xC1  // length 12 > 11
        #expect(Self.kernelDecode(long, length: 4).0 == CKK_ERR_BAD_TABLE)
        var unordered = abba
        unordered[5] = 0x63  // first symbol after the last
        #expect(Self.kernelDecode(unordered, length: 4).0 == CKK_ERR_BAD_TABLE)
        var extra = abba
        extra[12] = 2  // stream 1 claims two bytes: one byte too many for its one code
        #expect(Self.kernelDecode(extra + [0], length: 4).0 == CKK_ERR_CORRUPT_STREAM)
        var short = abba
        short[12] = 0  // stream 1 has no byte for its code
        #expect(Self.kernelDecode(Array(short.dropLast()), length: 4).0 != 0)
        // Every truncation of a valid Huffman chunk stream fails cleanly.
        for cut in 0..<abba.count { #expect(Self.kernelDecode(Array(abba[..<cut]), length: 4).0 != 0) }
    }

    // MARK: Filter 2 with the other codecs, and the recommended options

    @Test("rotate + shuffle is the inverse of itself with every codec", arguments: [Compression.lz4, .zstd(level: 1), .zlib(level: 1), .planes])
    func rotateShuffleWithEveryCodec(codec: Compression) throws {
        var rng = SyntheticData(seed: 5)
        for (dtype, raw) in [(DType.float32, rng.float32Weights(count: 10_001)), (.bfloat16, rng.bfloat16Weights(count: 10_001)),
                             (.float64, rng.randomBytes(count: 8 * 1001)), (.float16, rng.randomBytes(count: 2 * 999))] {
            let size = dtype.elementSizeInBytes!
            let options = EncodeOptions(compression: codec, chunkSizeInBytes: 4096, skipIncompressible: false)
            let encoded = try raw.withUnsafeBytes { try BlobEncoder.encode($0, name: "w", dtype: dtype, shape: [raw.count / size], options: options) }
            let decoded = try encoded.withUnsafeBytes { try BlobDecoder.decode($0) }
            #expect(decoded.bytes == raw, "\(dtype) \(codec)")
        }
    }

    @Test("the kernel's rotate + shuffle matches the FORMAT.md definition byte for byte", arguments: [2, 4, 8])
    func rotateShuffleDefinition(size: Int) {
        var rng = SyntheticData(seed: UInt64(size))
        for count in [0, 1, 15, 16, 17, 100] {
            let raw = rng.randomBytes(count: count * size)
            // Reference: element as a little-endian integer, rotated left by one bit, byte k to plane k.
            var expected = [UInt8](repeating: 0, count: raw.count)
            for i in 0..<count {
                var value: UInt64 = 0
                for k in 0..<size { value |= UInt64(raw[i * size + k]) << (8 * k) }
                let bits = UInt64(8 * size)
                let mask: UInt64 = bits == 64 ? ~0 : (1 << bits) - 1
                let rotated = ((value << 1) | (value >> (bits - 1))) & mask
                for k in 0..<size { expected[k * count + i] = UInt8(truncatingIfNeeded: rotated >> (8 * k)) }
            }
            var planes = [UInt8](repeating: 0, count: raw.count)
            let crc = planes.withUnsafeMutableBufferPointer { out in
                let pointers: [UnsafeMutablePointer<UInt8>?] = (0..<size).map { out.baseAddress! + $0 * count }
                return raw.withUnsafeBytes { src in
                    pointers.withUnsafeBufferPointer { ckk_split_planes_crc32c($0.baseAddress!, src.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count, size, 1, 0) }
                }
            }
            #expect(planes == expected)
            #expect(crc == raw.withUnsafeBytes { CRC32C.checksum($0) })
            var back = [UInt8](repeating: 0, count: raw.count)
            _ = back.withUnsafeMutableBytes { dst in
                planes.withUnsafeBufferPointer { p in
                    let pointers: [UnsafePointer<UInt8>?] = (0..<size).map { p.baseAddress! + $0 * count }
                    return pointers.withUnsafeBufferPointer { ckk_join_planes_crc32c(dst.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!, $0.baseAddress!, count, size, 1, 0, 1) }
                }
            }
            #expect(back == raw)
        }
    }

    @Test("recommended options: planes for floats, integers and bools stored uncompressed")
    func recommendedOptions() throws {
        let options = EncodeOptions.recommended()
        #expect(options.compression(for: .float32) == .planes)
        #expect(options.compression(for: .bfloat16) == .planes)
        #expect(options.compression(for: .f8E4M3) == .planes)
        #expect(options.compression(for: .int64) == .none)
        #expect(options.compression(for: .bool) == .none)
        let ints = (0..<1000).map { Int64($0) }.withUnsafeBytes { Array($0) }
        let encoded = try ints.withUnsafeBytes { try BlobEncoder.encode($0, name: "i", dtype: .int64, shape: [1000], options: options) }
        let header = try encoded.withUnsafeBytes { try BlobHeader.decode(from: $0).header }
        #expect(header.compression == .none && header.filter == .none && header.isStoredRaw)
        #expect(try Compression(parsing: "planes") == .planes)
        #expect(throws: CheckpointError.self) { try Compression(parsing: "planes-3") }
    }
}

@testable import CheckpointIO
import Foundation
import Testing
import CZlib

/// FORMAT.md's own words, checked: the printed test vectors, and the rules
/// an outsider's reader found silent or contradictory (issue 16).
@Suite("FORMAT.md rules")
struct FormatSpecTests {
    static let formatPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("FORMAT.md").path

    /// A bit-at-a-time CRC32C, exactly as FORMAT.md §2 prints it.
    static func referenceCRC(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (crc & 1 == 1 ? 0x82F6_3B78 : 0) }
        }
        return crc ^ 0xFFFF_FFFF
    }

    @Test("§2: the iSCSI PDU printed in FORMAT.md has the printed CRC32C (RFC 3720 §B.4)")
    func printedISCSIVector() throws {
        let text = try String(contentsOfFile: Self.formatPath, encoding: .utf8)
        let start = try #require(text.range(of: "The iSCSI read command PDU, in hex:"))
        let block = text[start.upperBound...].split(separator: "```", maxSplits: 2)[1]
        let bytes = block.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { UInt8($0, radix: 16)! }
        #expect(bytes.count == 48)
        #expect(Array(bytes[20..<24]) == [0x00, 0x00, 0x04, 0x00])
        #expect(Self.referenceCRC(bytes) == 0xD996_3A56)
        #expect(bytes.withUnsafeBytes { CRC32C.checksum($0) } == 0xD996_3A56)
        #expect(text.contains("| the 48-byte iSCSI read command PDU of RFC 3720 §B.4 (below) | `0xD9963A56` |"))
    }

    /// Sets byte `offset` of the 64-byte region at `base` and fixes up the region's CRC at `crcOffset`.
    static func patch(_ bytes: inout [UInt8], at offset: Int, to value: UInt8, crcOver range: Range<Int>, crcAt crcOffset: Int) {
        bytes[offset] = value
        let crc = Self.referenceCRC(Array(bytes[range]))
        withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange(crcOffset..<(crcOffset + 4), with: $0) }
    }

    @Test("§4.1: a non-zero reserved byte in the file header is rejected even with its CRC fixed up")
    func fileHeaderReservedBytes() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/r.ckpt"
            try writeContainer(path, [TestBlob(name: "w", dtype: .uint8, shape: [3], bytes: [1, 2, 3])])
            let original = try readFile(path)
            for offset in [16, 0x1E, 55, 56, 59] {
                var bytes = original
                Self.patch(&bytes, at: offset, to: 1, crcOver: 0..<60, crcAt: 60)
                try writeFile(path, bytes)
                #expect(throws: CheckpointError.self, "reserved byte \(offset)") { try ContainerReader.open(path) }
                #expect(throws: CheckpointError.self, "reserved byte \(offset)") { try ContainerRecovery.scan(path) }
            }
        }
    }

    @Test("§4.7 step 2: a CRC-valid last trailer with an unknown version or non-zero reserved bytes is rejected, not treated as torn")
    func trailerVersionAndReserved() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/a.ckpt"
            try writeContainer(path, [TestBlob(name: "w", dtype: .uint8, shape: [3], bytes: [1, 2, 3])])
            let writer = try ContainerWriter.append(to: path)
            try write([TestBlob(name: "v", dtype: .uint8, shape: [1], bytes: [9])], with: writer)
            try writer.commit()
            let original = try readFile(path)
            let trailer = original.count - 64
            // A torn end (CRC broken) opens the previous commit...
            var torn = original
            torn[trailer + 44] = 1
            try writeFile(path, torn)
            #expect(try ContainerReader.open(path).generation == 1)
            // ...but the same trailer with a valid CRC is a real trailer: rejected.
            for (offset, field) in [(trailer + 4, "version"), (trailer + 44, "reserved"), (trailer + 55, "reserved")] {
                var bytes = original
                Self.patch(&bytes, at: offset, to: 2, crcOver: trailer..<(trailer + 56), crcAt: trailer + 56)
                try writeFile(path, bytes)
                do {
                    _ = try ContainerReader.open(path)
                    Issue.record("a trailer with a bad \(field) opened")
                } catch let error as CheckpointError {
                    if case .tornFile = error.code { Issue.record("\(field): reported as torn: \(error)") }
                }
            }
        }
    }

    @Test("§3.5: a zlib chunk that needs a preset dictionary is rejected with that reason")
    func zlibPresetDictionary() throws {
        // Compress 4096 bytes with a dictionary (FDICT set), then splice the stream into a real blob.
        let raw = [UInt8](repeating: 7, count: 4096)
        var blob = try raw.withUnsafeBytes { bytes in
            try BlobEncoder.encode(bytes, name: "z", dtype: .uint8, shape: [4096], options: EncodeOptions(compression: .zlib(level: 6)))
        }
        let (header, headerLength) = try blob.withUnsafeBytes { try BlobHeader.decode(from: $0) }
        var stream = z_stream()
        #expect(deflateInit_(&stream, 6, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK)
        let dictionary: [UInt8] = [7, 7, 7, 7, 7, 7, 7, 7]
        #expect(deflateSetDictionary(&stream, dictionary, UInt32(dictionary.count)) == Z_OK)
        var output = [UInt8](repeating: 0, count: 1024)
        var input = raw
        let produced = input.withUnsafeMutableBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer -> Int in
                stream.next_in = inBuffer.baseAddress
                stream.avail_in = UInt32(inBuffer.count)
                stream.next_out = outBuffer.baseAddress
                stream.avail_out = UInt32(outBuffer.count)
                _ = deflate(&stream, Z_FINISH)
                return outBuffer.count - Int(stream.avail_out)
            }
        }
        deflateEnd(&stream)
        #expect(output[1] & 0x20 != 0, "FDICT set")
        let compressed = Array(output.prefix(produced))
        var forged = header
        forged.chunks = [ChunkEntry(storedSize: UInt32(compressed.count), crc32c: compressed.withUnsafeBytes { CRC32C.checksum($0) })]
        blob = try forged.encoded() + compressed
        #expect(headerLength > 0)
        do {
            _ = try blob.withUnsafeBytes { try BlobDecoder.decode($0) }
            Issue.record("a chunk with a preset dictionary decoded")
        } catch let error as CheckpointError {
            #expect("\(error)".contains("preset dictionary"), "\(error)")
        }
    }

    static var fixturesPath: String { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path }

    /// A little-endian integer of `bytes` at `offset`, read by hand.
    static func le(_ bytes: [UInt8], _ offset: Int, _ size: Int) -> UInt64 {
        (0..<size).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[offset + $1]) }
    }

    @Test("§4.3.2: Fixtures/ref.ckpt is byte for byte the annotated dump, its reference reads by §4.3.1's table, the writer produces it and the reader resolves it")
    func referenceFixture() throws {
        let fixture = try readFile(Self.fixturesPath + "/ref.ckpt")
        let tiny = try readFile(Self.fixturesPath + "/tiny.ckpt")
        #expect(fixture.count == 408)
        // 1. The dump in FORMAT.md: every listed byte (and every "00 × n" run) is the fixture's.
        let text = try String(contentsOfFile: Self.formatPath, encoding: .utf8)
        let start = try #require(text.range(of: "### 4.3.2 Example: a reference"))
        let block = text[start.upperBound...].split(separator: "```", maxSplits: 2)[1]
        var covered = 0
        for line in block.split(separator: "\n") {
            let tokens = line.split(separator: " ", omittingEmptySubsequences: true)
            guard tokens.count >= 2, tokens[0].count == 4, let offset = Int(tokens[0], radix: 16) else { continue }
            if tokens.count >= 3, tokens[2] == "×", let count = Int(tokens[3]) {
                #expect(fixture[offset..<(offset + count)].allSatisfy { $0 == 0 }, "zeros at \(tokens[0])")
                covered += count
                continue
            }
            var position = offset
            for token in tokens.dropFirst() {
                guard token.count == 2, let byte = UInt8(token, radix: 16) else { break }
                #expect(fixture[position] == byte, "byte \(String(position, radix: 16))")
                position += 1
            }
            covered += position - offset
        }
        #expect(covered == fixture.count, "the dump lists every byte")
        // 2. The reference record by §4.3.1's table alone, CRCs bit at a time.
        let frame = 0x40, header = frame + 32
        #expect(Self.le(fixture, frame + 4, 2) == 3 && Self.le(fixture, frame + 16, 8) == 0)
        let headerLength = Int(Self.le(fixture, frame + 8, 4))
        #expect(Self.le(fixture, frame + 28, 4) == UInt64(Self.referenceCRC(Array(fixture[frame..<(frame + 28)]))))
        #expect(Self.le(fixture, header + headerLength - 4, 4) == UInt64(Self.referenceCRC(Array(fixture[header..<(header + headerLength - 4)]))))
        let rank = Int(fixture[header + 49]), nameLength = Int(Self.le(fixture, header + 50, 2)), fileLength = Int(Self.le(fixture, header + 52, 2))
        #expect(headerLength == 56 + 8 * rank + nameLength + fileLength + 4)
        let nameStart = header + 56 + 8 * rank
        #expect(String(decoding: fixture[nameStart..<(nameStart + nameLength)], as: UTF8.self) == "w")
        #expect(String(decoding: fixture[(nameStart + nameLength)..<(nameStart + nameLength + fileLength)], as: UTF8.self) == "tiny.ckpt")
        // The target record in tiny.ckpt is what the reference says: offset, payload, CRCs.
        let targetRecord = Int(Self.le(fixture, header, 8)), targetPayload = Int(Self.le(fixture, header + 8, 8))
        #expect(Self.le(tiny, targetRecord, 4) == 0x4352_4B43 && Self.le(tiny, targetRecord + 4, 2) == 1)
        #expect(Self.le(tiny, targetRecord + 24, 4) == Self.le(fixture, header + 32, 4), "stored CRC32C = the target frame's payload CRC")
        let payload = Array(tiny[targetPayload..<(targetPayload + Int(Self.le(fixture, header + 16, 8)))])
        #expect(UInt64(Self.referenceCRC(payload)) == Self.le(fixture, header + 36, 4), "raw CRC32C of the target's bytes")
        // 3. The writer writes exactly these bytes; the reader resolves them with tiny.ckpt beside.
        try withTemporaryDirectory { directory in
            try writeFile(directory + "/tiny.ckpt", tiny)
            let target = try ContainerReader.open(directory + "/tiny.ckpt")
            let writer = try ContainerWriter.create(at: directory + "/ref.ckpt")
            try writer.writeReference(try target.blobReference(to: "w", fileName: "tiny.ckpt"))
            try writer.commit()
            #expect(try readFile(directory + "/ref.ckpt") == fixture)
            try writeFile(directory + "/ref.ckpt", fixture)
            let reader = try ContainerReader.open(directory + "/ref.ckpt")
            #expect(try reader.descriptor("w").isReference)
            #expect(try reader.reference("w")?.fileName == "tiny.ckpt")
            let floats = try reader.withUnsafeBytes(of: "w", verify: true) { Array($0.bindMemory(to: Float.self)) }
            #expect(floats == [1, 2, 3, 4])
            #expect(try reader.header("w").attributes == ["unit": "m"])
            #expect(reader.verify().allSatisfy { $0.error == nil })
            // Recovery carries the reference over as it is.
            #expect(try ContainerRecovery.scan(directory + "/ref.ckpt").blobNames == ["w"])
            // Without its target the blob is unreadable, with an error naming both files.
            try FileManager.default.removeItem(atPath: directory + "/tiny.ckpt")
            let error = try #require(throws: CheckpointError.self) { try ContainerReader.open(directory + "/ref.ckpt").read("w") }
            #expect(error.path == directory + "/ref.ckpt" && "\(error)".contains(directory + "/tiny.ckpt"), "\(error)")
        }
    }

    @Test("§4.4–4.5: the index body a writer encodes is the tables' layout, field for field, and parses back to the same entries",
          arguments: [0, 1, 41, 700])
    func indexBodyMatchesTheTables(count: Int) throws {
        // Entries of every shape the tables allow: rank 0 and rank 64; UTF-8 names out of name
        // order, canonically equivalent pairs that only byte order tells apart, names of 600+
        // bytes (so name_length, name_offset, dims_offset and blob_header_length use their high
        // bytes; at 700 entries the name pool passes 64 KiB); references (kind 3); every codec
        // with levels and every filter; sizes past 4 GiB (a 2^33-element tensor); an odd count
        // (the name order then needs its 4 bytes of padding). The reference encoder below is
        // written from FORMAT.md's tables alone, ids included, one field after the other.
        var entries: [BlobDescriptor] = []
        let shapes: [[Int]] = [[], [3], [2, 3, 4], Array(repeating: 1, count: 64), [1 << 33]]
        let compressions: [Compression] = [.none, .lz4, .lz4hc(level: 9), .zlib(level: 6), .zstd(level: 19), .planes]
        let filters: [Filter] = [.none, .shuffle(elementSize: 4), .rotateShuffle(elementSize: 2)]
        let long = String(repeating: "layer.", count: 100)
        let names = ["zeta", "α/β.weight", "a", "e\u{301}", "\u{e9}", "layer.9.bias", "日本語", long, "Z", long + "ß"]
        let dtypes: [(DType, UInt8)] = [(.float32, 10), (.bfloat16, 7), (.uint8, 2), (.int64, 12)]  // FORMAT.md §3.6
        var offset = 64
        for index in 0..<count {
            let shape = try Shape(shapes[index % shapes.count])
            let dtype = dtypes[index % dtypes.count].0
            let raw = try #require(try dtype.byteCount(elementCount: shape.elementCount))
            let compression = compressions[index % compressions.count]
            let stored = compression == .none ? raw : raw / 2 + 1
            entries.append(BlobDescriptor(name: names[index % names.count] + "/\(index)", dtype: dtype, shape: shape, compression: compression,
                                          filter: compression == .none ? .none : filters[index / compressions.count % filters.count],
                                          rawSizeInBytes: raw, storedSizeInBytes: stored,
                                          rawCRC32C: UInt32(truncatingIfNeeded: index &* 0x9E37_79B9), recordOffset: offset,
                                          payloadOffset: offset + 32 + 96 + index, blobHeaderLength: 96 + index, isReference: index % 9 == 4))
            offset = (offset + 32 + 96 + index + stored + 4095) / 4096 * 4096
        }
        let metadata = count == 0 ? [:] : ["epoch": "3", "b": "β", "a": ""]
        let body = ContainerIndex.encode(entries: entries, metadata: metadata, generation: 7)

        var expected = Data()
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { expected.append(contentsOf: $0) } }
        let namePool = entries.flatMap { Array($0.name.utf8) }
        let dimsPool = entries.flatMap { $0.shape.dimensions.map { UInt64($0) } }
        if count == 700 { #expect(namePool.count > 1 << 16) }
        var metaBytes = Data()
        for key in metadata.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            withUnsafeBytes(of: UInt16(key.utf8.count).littleEndian) { metaBytes.append(contentsOf: $0) }
            metaBytes.append(contentsOf: Array(key.utf8))
            withUnsafeBytes(of: UInt32(metadata[key]!.utf8.count).littleEndian) { metaBytes.append(contentsOf: $0) }
            metaBytes.append(contentsOf: Array(metadata[key]!.utf8))
        }
        put(UInt32(0x5849_4B43)); put(UInt32(1)); put(UInt64(7))
        put(UInt32(entries.count)); put(UInt32(dimsPool.count)); put(UInt32(namePool.count)); put(UInt32(metaBytes.count))
        var nameOffset = 0, dimsOffset = 0
        for (index, entry) in entries.enumerated() {
            put(UInt64(entry.recordOffset)); put(UInt64(entry.payloadOffset)); put(UInt64(entry.storedSizeInBytes)); put(UInt64(entry.rawSizeInBytes))
            put(UInt32(nameOffset)); put(UInt32(dimsOffset)); put(UInt32(entry.blobHeaderLength)); put(entry.rawCRC32C)
            put(UInt16(entry.name.utf8.count)); put(UInt8(entry.isReference ? 3 : 1)); put(dtypes[index % dtypes.count].1)
            // FORMAT.md §3.5: codec ids 0 none, 1 lz4, 2 lz4hc, 3 zlib, 4 zstd, 5 planes; level 0 where the codec has none.
            let (codec, level): (UInt8, UInt8) = switch entry.compression {
            case .none: (0, 0)
            case .lz4: (1, 0)
            case let .lz4hc(level): (2, UInt8(level))
            case let .zlib(level): (3, UInt8(level))
            case let .zstd(level): (4, UInt8(level))
            case .planes: (5, 0)
            }
            put(codec); put(level)
            let (filterID, elementSize): (UInt8, Int) = switch entry.filter {
            case .none: (0, 0)
            case let .shuffle(size): (1, size)
            case let .rotateShuffle(size): (2, size)
            }
            put(filterID); put(UInt8(elementSize)); put(UInt8(entry.shape.dimensions.count))
            expected.append(contentsOf: [UInt8](repeating: 0, count: 7))
            nameOffset += entry.name.utf8.count
            dimsOffset += entry.shape.dimensions.count
        }
        let order = entries.indices.sorted { Array(entries[$0].name.utf8).lexicographicallyPrecedes(Array(entries[$1].name.utf8)) }
        for index in order { put(UInt32(index)) }
        if expected.count % 8 != 0 { expected.append(contentsOf: [UInt8](repeating: 0, count: 8 - expected.count % 8)) }
        for dimension in dimsPool { put(dimension) }
        expected.append(contentsOf: namePool)
        expected.append(metaBytes)
        let firstDifference = zip(body, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(body.count == expected.count && firstDifference == nil,
                "the encoded index body differs from FORMAT.md §4.4–4.5's layout: \(body.count) bytes against \(expected.count), first difference at \(firstDifference ?? -1)")

        let parsed = try body.withUnsafeBytes { bytes throws(CheckpointError) in
            try ContainerIndex(parsing: bytes, dataEnd: offset, generation: 7)
        }
        #expect(parsed.count == entries.count && parsed.metadata == metadata)
        for index in entries.indices { #expect(try parsed.descriptor(index) == entries[index]) }
    }
}

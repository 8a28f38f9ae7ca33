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
}

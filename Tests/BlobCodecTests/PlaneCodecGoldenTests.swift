import BlobCodec
import CCheckpointKernels
import Testing

/// The examples of FORMAT.md §3.10, byte for byte: a Huffman segment and a
/// whole BF16 blob in the plane codec. These bytes never change; if a test
/// fails, the code changed the format (a new codec id is the way to do that).
@Suite("Plane codec golden bytes")
struct PlaneCodecGoldenTests {
    static func hex(_ text: String) -> [UInt8] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { UInt8($0, radix: 16)! }
    }

    static func hexDump(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: bytes.count, by: 16).map { start in
            bytes[start..<min(bytes.count, start + 16)].map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
        }.joined(separator: "\n")
    }

    /// FORMAT.md §3.10.1: the 12 bytes below as one Huffman segment (worked by hand there).
    static let segmentInput: [UInt8] = [0x7C, 0x7C, 0x7C, 0x7B, 0x7C, 0x7D, 0x7B, 0x7C, 0x7C, 0x7A, 0x7C, 0x7B]
    static let segment: [UInt8] = hex("""
        02 0c 00 00 00 7a 7d 23 31 01 00 00 00 01 00 00
        00 01 00 00 00 01 00 00 00 00 39 01 13
        """)

    /// FORMAT.md §3.10.2: BF16 `g`, shape [64], values (2i − 63) / 128, codec planes, filter 2.
    static let blobInput: [UInt8] = (0..<64).map { UInt16((Float(2 * $0 - 63) / 128).bitPattern >> 16) }.withUnsafeBytes { Array($0) }
    static let blob: [UInt8] = hex("""
        43 4b 42 48 01 00 00 00 55 00 00 00 07 05 00 02
        02 01 01 00 00 00 00 00 80 00 00 00 00 00 00 00
        6f 00 00 00 00 00 00 00 00 00 40 00 00 00 00 00
        01 00 00 00 00 00 00 00 31 e5 a8 e5 00 00 00 00
        40 00 00 00 00 00 00 00 67 6f 00 00 00 13 88 8a
        ee e3 8b 5b fa 00 40 00 00 00 f9 e9 d9 c9 b9 a9
        99 89 79 69 59 49 39 29 19 09 f1 d1 b1 91 71 51
        31 11 e1 a1 61 21 c1 41 81 01 00 80 40 c0 20 60
        a0 e0 10 30 50 70 90 b0 d0 f0 08 18 28 38 48 58
        68 78 88 98 a8 b8 c8 d8 e8 f8 02 40 00 00 00 78
        7d 55 34 12 02 00 00 00 06 00 00 00 06 00 00 00
        02 00 00 00 00 00 55 55 db 76 f7 1f ef df 6d 5b
        55 15 00 00
        """)

    @Test("the Huffman coder writes exactly the documented segment, and the decoder reads it")
    func segmentBytes() {
        var counts = [UInt32](repeating: 0, count: 4 * 256)
        Self.segmentInput.withUnsafeBytes { ckk_histogram_quarters(&counts, $0.baseAddress, $0.count) }
        var total = [UInt32](repeating: 0, count: 256)
        for s in 0..<256 { total[s] = counts[s] + counts[256 + s] + counts[512 + s] + counts[768 + s] }
        var lengths = [UInt8](repeating: 0, count: 256)
        #expect(ckk_huffman_lengths(&lengths, total) == 4)
        #expect(lengths[0x7C] == 1 && lengths[0x7B] == 2 && lengths[0x7A] == 3 && lengths[0x7D] == 3)
        var body = [UInt8](repeating: 0, count: 128)
        let size = Self.segmentInput.withUnsafeBytes { ckk_huffman_encode(&body, body.count, $0.baseAddress, $0.count, counts, lengths, nil) }
        let encoded = [2, 12, 0, 0, 0] + Array(body[..<size])
        #expect(encoded == Self.segment, "\n\(Self.hexDump(encoded))")
        // The decoder, given the segment as a whole chunk stream of a 12-byte chunk.
        let (status, decoded) = PlaneCodecTests.kernelDecode(Self.segment, length: 12)
        #expect(status == 0 && decoded == Self.segmentInput)
    }

    @Test("the encoder writes exactly the documented BF16 blob, and the decoder reads it")
    func blobBytes() throws {
        let encoded = try Self.blobInput.withUnsafeBytes {
            try BlobEncoder.encode($0, name: "g", dtype: .bfloat16, shape: [64], options: EncodeOptions(compression: .planes))
        }
        #expect(encoded == Self.blob, "\n\(Self.hexDump(encoded))")
        let decoded = try Self.blob.withUnsafeBytes { try BlobDecoder.decode($0) }
        #expect(decoded.bytes == Self.blobInput)
        #expect(decoded.header.compression == .planes && decoded.header.filter == .rotateShuffle(elementSize: 2))
    }
}

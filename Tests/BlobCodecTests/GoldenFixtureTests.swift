import BlobCodec
import Testing

/// The example of FORMAT.md §3.9, byte for byte. Its CRCs were checked against
/// an independent bit-at-a-time CRC32C. If this test fails, either the code
/// changed the format (update FORMAT.md and the version) or it broke it.
@Suite("Golden bytes")
struct GoldenFixtureTests {
    static let fixture: [UInt8] = hex("""
        43 4b 42 48 01 00 00 00 68 00 00 00 0a 00 00 00
        00 02 01 00 0b 00 00 00 10 00 00 00 00 00 00 00
        10 00 00 00 00 00 00 00 00 00 40 00 00 00 00 00
        01 00 00 00 00 00 00 00 0a 69 ba 9e 00 00 00 00
        02 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00
        77 04 00 75 6e 69 74 01 00 00 00 6d 10 00 00 00
        0a 69 ba 9e e8 44 85 16 00 00 80 3f 00 00 00 40
        00 00 40 40 00 00 80 40
        """)

    static func hex(_ text: String) -> [UInt8] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { UInt8($0, radix: 16)! }
    }

    static let raw: [UInt8] = [Float(1), 2, 3, 4].withUnsafeBytes { Array($0) }

    @Test("the encoder writes exactly the documented bytes")
    func encoderMatchesFixture() throws {
        let encoded = try Self.raw.withUnsafeBytes {
            try BlobEncoder.encode($0, name: "w", dtype: .float32, shape: [2, 2], attributes: ["unit": "m"])
        }
        #expect(encoded == Self.fixture)
    }

    @Test("the decoder reads the documented bytes")
    func decoderReadsFixture() throws {
        let decoded = try Self.fixture.withUnsafeBytes { try BlobDecoder.decode($0) }
        let header = decoded.header
        #expect(header.name == "w")
        #expect(header.dtype == .float32 && header.shape == [2, 2])
        #expect(header.compression == .none && header.filter == .none)
        #expect(header.chunkSizeInBytes == 4 << 20 && header.chunkCount == 1)
        #expect(header.rawCRC32C == 0x9EBA_690A)
        #expect(header.attributes == ["unit": "m"])
        #expect(header.encodedSize == 104)
        #expect(decoded.bytes == Self.raw)
    }
}

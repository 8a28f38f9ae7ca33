@testable import CheckpointIO
import Foundation
import Testing

/// FORMAT.md §4.10, byte for byte.
@Suite("Container golden file")
struct ContainerGoldenTests {
    static var fixturePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/tiny.ckpt").path
    }

    @Test("the writer produces exactly Fixtures/tiny.ckpt")
    func writerMatchesFixture() throws {
        let fixture = try readFile(Self.fixturePath)
        #expect(fixture.count == 496)
        try withTemporaryDirectory { directory in
            let path = directory + "/tiny.ckpt"
            let values: [Float] = [1, 2, 3, 4]
            try writeContainer(path, [TestBlob(name: "w", dtype: .float32, shape: [2, 2], bytes: values.withUnsafeBytes { Array($0) }, attributes: ["unit": "m"])])
            #expect(try readFile(path) == fixture)
        }
    }

    @Test("the reader reads Fixtures/tiny.ckpt")
    func readerReadsFixture() throws {
        let reader = try ContainerReader.open(Self.fixturePath)
        #expect(reader.names == ["w"] && reader.generation == 1 && reader.alignment == 64 && reader.metadata.isEmpty)
        let descriptor = try reader.descriptor("w")
        #expect(descriptor.recordOffset == 0x40 && descriptor.payloadOffset == 0x100 && descriptor.rawCRC32C == 0x9EBA_690A)
        let floats = try reader.withUnsafeBytes(of: "w", verify: true) { Array($0.bindMemory(to: Float.self)) }
        #expect(floats == [1, 2, 3, 4])
        #expect(try reader.header("w").attributes == ["unit": "m"])
    }
}

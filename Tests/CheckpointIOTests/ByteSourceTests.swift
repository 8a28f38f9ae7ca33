@testable import CheckpointIO
import BlobCodec
import Foundation
import Testing

/// A file's bytes as a ``ContainerByteSource`` (an object store stand-in) that
/// can damage the bytes of given reads, the way a network might.
final class MemorySource: ContainerByteSource, @unchecked Sendable {
    let name = "memory://test"
    let bytes: [UInt8]
    var sizeInBytes: Int { bytes.count }
    private let lock = NSLock()
    /// Reads still to damage (one flipped byte in the middle of each), counted down.
    private var damagedReads: Int
    private(set) var reads = 0

    init(_ bytes: [UInt8], damagedReads: Int = 0) {
        self.bytes = bytes
        self.damagedReads = damagedReads
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointError) {
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + buffer.count)])) }
        let damage = lock.withLock { () -> Bool in
            reads += 1
            guard damagedReads > 0, buffer.count > 1024 else { return false }
            damagedReads -= 1
            return true
        }
        if damage { buffer[buffer.count / 2] ^= 0x40 }
    }
}

@Suite("Byte sources: block checksums and remote reads")
struct ByteSourceTests {
    @Test func blockChecksumsAssembleFromPiecesInAnyOrder() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<10_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for blockSize in [1, 7, 1000, 4096, 10_000, 20_000] {
                // The reference: each block checksummed whole.
                let expected = stride(from: 0, to: all.count, by: blockSize).map {
                    CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[$0..<min($0 + blockSize, all.count)]))
                }
                #expect(expected.count == (bytes.count + blockSize - 1) / blockSize)
                // Cut the buffer into ranges that ignore block boundaries, checksum each, shuffle.
                for rangeSize in [1, 333, 4096, 9999, 10_000] {
                    var pieces: [BlockChecksumAssembler.Piece] = []
                    for start in stride(from: 0, to: bytes.count, by: rangeSize) {
                        let range = UnsafeRawBufferPointer(rebasing: all[start..<min(start + rangeSize, bytes.count)])
                        pieces += BlockChecksumAssembler.pieces(of: range, at: start, blockSize: blockSize)
                    }
                    var assembler = BlockChecksumAssembler(blockSize: blockSize)
                    assembler.add(pieces.shuffled())
                    #expect(assembler.blockChecksums(count: bytes.count) == expected, "block \(blockSize), range \(rangeSize)")
                }
            }
            // Pieces that leave a gap, overlap, or cross a block boundary do not tile the buffer.
            let pieces = BlockChecksumAssembler.pieces(of: all, at: 0, blockSize: 1000)
            var gap = BlockChecksumAssembler(blockSize: 1000)
            gap.add(Array(pieces.dropLast()))
            #expect(gap.blockChecksums(count: bytes.count) == nil)
            var overlap = BlockChecksumAssembler(blockSize: 1000)
            overlap.add(pieces + [pieces[3]])
            #expect(overlap.blockChecksums(count: bytes.count) == nil)
            var crossing = BlockChecksumAssembler(blockSize: 1000)
            crossing.add([BlockChecksumAssembler.Piece(start: 0, length: 1500, crc: 0)])
            #expect(crossing.blockChecksums(count: 1500) == nil)
        }
    }

    /// A container read through a source: every chunk checked, a chunk damaged in transit
    /// read again, one damaged on every read reported with its chunk.
    @Test func remoteReadsCheckEveryChunkAndRereadDamagedOnes() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/remote.ckpt"
            var generator = SystemRandomNumberGenerator()
            let payload = (0..<(300 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var encode = EncodeOptions()
            encode.chunkSizeInBytes = 64 << 10
            try writeContainer(path, [TestBlob(name: "w", dtype: .uint8, shape: [payload.count], bytes: payload, encode: encode)])
            let file = try readFile(path)

            let cleanSource = MemorySource(file)
            let clean = try ContainerReader.open(source: cleanSource)
            let cleanOpenReads = cleanSource.reads
            #expect(try clean.read("w") == payload)
            let cleanBlobReads = cleanSource.reads - cleanOpenReads

            // The first payload read is damaged: the failing chunk (and only it) is read once more.
            let once = MemorySource(file, damagedReads: 1)
            let reader = try ContainerReader.open(source: once)
            let readsBefore = once.reads
            #expect(try reader.read("w") == payload)
            #expect(once.reads - readsBefore == cleanBlobReads + 1)

            // Damaged every time: the chunk's checksum error, naming the blob and the source.
            let always = MemorySource(file, damagedReads: .max)
            let broken = try ContainerReader.open(source: always)
            #expect { try broken.read("w") } throws: { error in
                guard let error = error as? CheckpointError, case .chunkChecksumMismatch = error.code else { return false }
                return "\(error)".contains("w") && "\(error)".contains("memory://test")
            }
        }
    }
}

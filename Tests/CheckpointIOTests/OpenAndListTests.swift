@testable import CheckpointIO
import BlobCodec
import Foundation
import Testing

/// Opening (the index checksummed on one thread while another validates it, for
/// large indexes) and listing names (``ContainerReader/nameList``).
@Suite("Open and list")
struct OpenAndListTests {
    /// Names that are tricky for substrings of one pool: multi-byte scalars, a combining
    /// mark that would join the previous name's last letter, canonically equal twins, long names.
    static let trickyNames = ["é", "e\u{301}", "a", "\u{301}", "日本", "Å", "\u{212B}", String(repeating: "z", count: 300), "", "tail"]

    func write(_ names: [String], to path: String) throws {
        try writeContainer(path, names.enumerated().map { TestBlob(name: $1, dtype: .uint8, shape: [1], bytes: [UInt8(truncatingIfNeeded: $0)]) })
    }

    @Test func nameListMatchesNamesByteForByte() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/names.ckpt"
            try write(OpenAndListTests.trickyNames, to: path)
            let reader = try ContainerReader.open(path)
            let list = reader.nameList
            #expect(list.count == OpenAndListTests.trickyNames.count)
            #expect(list.map { Array($0.utf8) } == reader.names.map { Array($0.utf8) })
            #expect(Set(list.map { Array($0.utf8) }) == Set(OpenAndListTests.trickyNames.map { Array($0.utf8) }))
            // Every listed name reads its own blob.
            for name in list { #expect(try reader.read(String(name)).count == 1) }
        }
    }

    /// The list outlives every other reference to its reader (whose mapping holds the index).
    @Test func aNameListKeepsItsReaderAlive() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/names.ckpt"
            try write(OpenAndListTests.trickyNames, to: path)
            weak var weakReader: ContainerReader?
            let list: BlobNameList = try {
                let reader = try ContainerReader.open(path, options: ReaderOptions(mode: .mmap))
                weakReader = reader
                return reader.nameList
            }()
            #expect(weakReader != nil)
            #expect(Set(list.map { Array($0.utf8) }) == Set(OpenAndListTests.trickyNames.map { Array($0.utf8) }))
            _ = consume list
            // No cycle: without the list the reader goes away (and unmaps its file).
            #expect(weakReader == nil)
        }
    }

    /// An index above the parallel threshold opens, and a damaged byte in it is reported
    /// as the index checksum mismatch (whatever the validation running beside it found).
    @Test func aLargeIndexOpensAndItsDamageIsAChecksumError() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/many.ckpt"
            let names = (0..<6000).map { "model.layers.\($0 / 16).block.\($0 % 16).weight" }
            try write(names, to: path)
            let bytes = try readFile(path)
            let trailer = try bytes.withUnsafeBytes { try ContainerLayout.Trailer.parse(UnsafeRawBufferPointer(rebasing: $0[(bytes.count - ContainerLayout.trailerSize)...]), at: bytes.count - ContainerLayout.trailerSize) }
            #expect(trailer.indexLength >= ContainerReader.parallelIndexThreshold)
            let reader = try ContainerReader.open(path, options: ReaderOptions(threads: 2))
            #expect(reader.count == names.count && reader.nameList.count == names.count)
            #expect(Set(reader.nameList.map(String.init)) == Set(names))

            // Damage the entry table (validation would complain too) and the name pool, one at a time.
            for position in [trailer.indexOffset + ContainerLayout.frameSize + 40, trailer.indexOffset + trailer.indexLength - 100] {
                var damaged = bytes
                damaged[position] ^= 0x5A
                try writeFile(path, damaged)
                for threads in [1, 2] {
                    do throws(CheckpointError) {
                        _ = try ContainerReader.open(path, options: ReaderOptions(threads: threads))
                        Issue.record("byte \(position), \(threads) threads: a damaged index opened")
                    } catch {
                        guard case .headerChecksumMismatch = error.code else {
                            Issue.record("byte \(position), \(threads) threads: \(error)")
                            continue
                        }
                    }
                }
            }
            try writeFile(path, bytes)
            #expect(try ContainerReader.open(path).count == names.count)
        }
    }
}

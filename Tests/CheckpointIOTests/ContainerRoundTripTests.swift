@testable import CheckpointIO
import Foundation
import Testing

@Suite("Container round trips")
struct ContainerRoundTripTests {
    @Test("random blobs of every dtype and codec round-trip through mmap, pread and zero-copy reads")
    func roundTrip() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/model.ckpt"
            let blobs = try randomBlobs(count: 60, seed: 1)
            try writeContainer(path, blobs, metadata: ["epoch": "7", "producer": "tests"])
            for mode in [ReadMode.mmap, .pread] {
                let reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode))
                #expect(reader.count == blobs.count)
                #expect(reader.metadata == ["epoch": "7", "producer": "tests"])
                #expect(reader.names == blobs.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
                #expect(reader.tornBytes == 0 && reader.generation == 1)
                for blob in blobs {
                    let descriptor = try reader.descriptor(blob.name)
                    #expect(descriptor.dtype == blob.dtype && descriptor.shape == blob.shape)
                    #expect(descriptor.payloadOffset % 64 == 0, "payload alignment")
                    #expect(try reader.read(blob.name) == blob.bytes, "\(blob.name) \(mode)")
                    #expect(try reader.read(blob.name, verify: false) == blob.bytes, "\(blob.name) \(mode) unverified")
                    #expect(try reader.header(blob.name).attributes == blob.attributes)
                    if mode == .mmap && descriptor.isViewableInPlace {
                        let viewed = try reader.withUnsafeBytes(of: blob.name, verify: true) { Array($0) }
                        #expect(viewed == blob.bytes)
                    }
                }
                #expect(reader.verify().allSatisfy { $0.error == nil })
            }
        }
    }

    @Test("a reader in pread mode refuses views; compressed blobs are not viewable")
    func viewRules() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/v.ckpt"
            let data = [UInt8](repeating: 1, count: 4096)
            try writeContainer(path, [
                TestBlob(name: "plain", dtype: .uint8, shape: [4096], bytes: data),
                TestBlob(name: "packed", dtype: .uint8, shape: [4096], bytes: data, encode: EncodeOptions(compression: .lz4)),
            ])
            let mapped = try ContainerReader.open(path)
            #expect(throws: CheckpointError.self) { try mapped.withUnsafeBytes(of: "packed") { _ in } }
            #expect(try mapped.withUnsafeBytes(of: "plain") { $0.count } == 4096)
            #expect(throws: CheckpointError.self) { try mapped.withUnsafeBytes(of: "missing") { _ in } }
            let pread = try ContainerReader.open(path, options: ReaderOptions(mode: .pread))
            #expect(throws: CheckpointError.self) { try pread.withUnsafeBytes(of: "plain") { _ in } }
        }
    }

    @Test("append adds blobs after the old trailer; the newest record of a name wins; deletions remove")
    func appendNewestWins() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/a.ckpt"
            try writeContainer(path, [
                TestBlob(name: "a", dtype: .int32, shape: [2], bytes: [1, 0, 0, 0, 2, 0, 0, 0]),
                TestBlob(name: "b", dtype: .uint8, shape: [3], bytes: [9, 9, 9]),
                TestBlob(name: "c", dtype: .uint8, shape: [1], bytes: [7]),
            ], metadata: ["epoch": "1"])
            let before = try readFile(path)
            let writer = try ContainerWriter.append(to: path)
            #expect(writer.metadata == ["epoch": "1"])
            writer.metadata["epoch"] = "2"
            try write([TestBlob(name: "a", dtype: .int32, shape: [1], bytes: [5, 0, 0, 0], encode: EncodeOptions(compression: .zstd(level: 1))),
                       TestBlob(name: "d", dtype: .uint8, shape: [2], bytes: [4, 4])], with: writer)
            try writer.delete("c")
            #expect(throws: CheckpointError.self) { try writer.delete("nope") }
            try writer.commit()
            let after = try readFile(path)
            #expect(Array(after.prefix(before.count)) == before, "an append never rewrites committed bytes")
            let reader = try ContainerReader.open(path)
            #expect(reader.generation == 2)
            #expect(reader.names == ["a", "b", "d"])
            #expect(try reader.read("a") == [5, 0, 0, 0])
            #expect(try reader.read("b") == [9, 9, 9])
            #expect(reader.metadata == ["epoch": "2"])
        }
    }

    @Test("a blob larger than 4 GiB round-trips (zero pages in, verified view out)")
    func largerThanFourGiB() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/big.ckpt"
            let count = (4 << 30) + 4096 + 3
            // Untouched anonymous memory reads as zeros without becoming resident.
            let memory = mmap(nil, count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
            defer { munmap(memory, count) }
            memory.storeBytes(of: 0xAB, toByteOffset: count - 1, as: UInt8.self)
            let bytes = UnsafeRawBufferPointer(start: memory, count: count)
            let writer = try ContainerWriter.create(at: path)
            try writer.write(name: "huge", dtype: .uint8, shape: [count], bytes: bytes)
            try writer.commit()
            let reader = try ContainerReader.open(path)
            let descriptor = try reader.descriptor("huge")
            #expect(descriptor.rawSizeInBytes == count)
            let (last, crc) = try reader.withUnsafeBytes(of: "huge", verify: true) { ($0[count - 1], CRC32C.checksum($0)) }
            #expect(last == 0xAB)
            #expect(crc == descriptor.rawCRC32C)
        }
    }

    @Test("100,000 tiny blobs: written, opened and listed")
    func manyTinyBlobs() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/many.ckpt"
            let blobs = (0..<100_000).map { TestBlob(name: "layer.\($0).bias", dtype: .float32, shape: [1], bytes: [UInt8(truncatingIfNeeded: $0), 0, 0, 0]) }
            try writeContainer(path, blobs)
            let reader = try ContainerReader.open(path)
            #expect(reader.count == 100_000)
            #expect(reader.contains("layer.99999.bias") && !reader.contains("layer.100000.bias"))
            #expect(try reader.read("layer.12345.bias") == [UInt8(truncatingIfNeeded: 12345), 0, 0, 0])
            #expect(reader.names.count == 100_000)
        }
    }

    @Test("a second writer of the same path gets a clear error")
    func writerLock() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/locked.ckpt"
            let first = try ContainerWriter.create(at: path)
            let error = try #require(throws: CheckpointError.self) { try ContainerWriter.create(at: path) }
            #expect(error.code == .writerLocked && error.path == path)
            first.abort()
            let second = try ContainerWriter.create(at: path)
            try second.commit()
            #expect(fileExists(path))
        }
    }
}

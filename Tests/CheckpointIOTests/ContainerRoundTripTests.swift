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

    @Test("the index's entry sections built by a write call are rebuilt after one later change of each kind",
          arguments: ["replace", "add", "delete", "reference", "metadata", "append: delete", "append: replace"])
    func preparedIndexFollowsLaterChanges(change: String) throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/p.ckpt"
            try writeContainer(directory + "/other.ckpt", [TestBlob(name: "w", dtype: .uint8, shape: [2], bytes: [5, 6])])
            var expected: [String: [UInt8]] = [:]
            let first = (0..<300).map { TestBlob(name: "t\($0)", dtype: .uint8, shape: [3], bytes: [UInt8($0 % 256), 1, 2]) }
            for blob in first { expected[blob.name] = blob.bytes }
            let appending = change.hasPrefix("append: ")
            if appending { try writeContainer(path, [TestBlob(name: "old", dtype: .uint8, shape: [1], bytes: [1])]) }
            if appending { expected["old"] = [1] }
            let writer = appending ? try ContainerWriter.append(to: path) : try ContainerWriter.create(at: path)
            // One call writes most blobs: it builds the index's entry sections before it returns.
            try write(first, with: writer)
            // Then exactly one change, too small to rebuild them in its own call: the commit
            // must not use the sections built before it.
            switch change.replacingOccurrences(of: "append: ", with: "") {
            case "replace":
                try write([TestBlob(name: "t7", dtype: .int16, shape: [2], bytes: [9, 9, 8, 8])], with: writer)
                expected["t7"] = [9, 9, 8, 8]
            case "add":
                try write([TestBlob(name: "new", dtype: .uint8, shape: [1], bytes: [3])], with: writer)
                expected["new"] = [3]
            case "delete":
                try writer.delete("t8")
                expected["t8"] = nil
            case "reference":
                let target = try ContainerReader.open(directory + "/other.ckpt").descriptor("w")
                try writer.writeReference(BlobReference(fileName: "other.ckpt", target: target, storedCRC32C: target.rawCRC32C))  // uncompressed: stored = raw
                expected["w"] = [5, 6]
            case "metadata":
                writer.metadata = ["step": "12"]
            default:
                Issue.record("unknown change \(change)")
            }
            try writer.commit()
            let reader = try ContainerReader.open(path)
            #expect(Set(reader.names) == Set(expected.keys))
            for (name, bytes) in expected where ["t7", "t9", "new", "w", "old"].contains(name) {
                #expect(try reader.read(name) == bytes, "\(name)")
            }
            if change == "replace" { #expect(try reader.descriptor("t7").dtype == .int16) }
            #expect(reader.metadata == (change == "metadata" ? ["step": "12"] : [:]))
        }
    }

    @Test("appends keep the file's payload alignment, whatever the appender's options say")
    func appendKeepsAlignment() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/aligned.ckpt"
            try writeContainer(path, [TestBlob(name: "a", dtype: .uint8, shape: [3], bytes: [1, 2, 3])], options: WriterOptions(alignment: 4096))
            let writer = try ContainerWriter.append(to: path, options: WriterOptions(alignment: 64))
            #expect(writer.alignment == 4096)
            try write([TestBlob(name: "b", dtype: .uint8, shape: [5], bytes: [1, 2, 3, 4, 5]),
                       TestBlob(name: "c", dtype: .float32, shape: [1000], bytes: [UInt8](repeating: 9, count: 4000), encode: EncodeOptions(compression: .zstd(level: 1)))],
                      with: writer)
            try writer.commit()
            let reader = try ContainerReader.open(path)
            #expect(reader.alignment == 4096)
            for name in ["a", "b", "c"] { #expect(try reader.descriptor(name).payloadOffset % 4096 == 0, "\(name)") }
            // Repair keeps it too.
            _ = try ContainerRecovery.repair(path)
            #expect(try ContainerReader.open(path).names == ["a", "b", "c"])
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

@Suite("Container compatibility and large blobs")
struct ContainerCompatibilityTests {
    @Test("tens of MiB through each codec and every read path")
    func largeBlobs() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/large.ckpt"
            var rng = SyntheticData(seed: 5)
            let weights = rng.float32Weights(count: 6 << 20)  // 24 MiB
            let blobs = [Compression.none, .lz4, .zstd(level: 1)].map { codec in
                TestBlob(name: "w.\(codec.name)", dtype: .float32, shape: [6 << 20], bytes: weights, encode: EncodeOptions(compression: codec))
            }
            try writeContainer(path, blobs)
            for mode in [ReadMode.mmap, .pread] {
                let reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode))
                for blob in blobs { #expect(try reader.read(blob.name) == weights, "\(blob.name) \(mode)") }
            }
            #expect(try ContainerReader.open(path).withUnsafeBytes(of: "w.none", verify: true) { Array($0) } == weights)
        }
    }

    /// Rewrites byte `offset` of the index body of a committed file and re-signs
    /// the index (frame payload CRC, frame CRC, trailer index CRC, trailer CRC),
    /// as a newer writer would produce it.
    static func editIndex(_ path: String, _ edit: (inout [UInt8], _ bodyStart: Int) -> Void) throws {
        var bytes = try readFile(path)
        func u64(_ o: Int) -> Int { Int(bytes[o..<(o + 8)].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }) }
        func put32(_ v: UInt32, _ o: Int) { for i in 0..<4 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        let trailer = bytes.count - 64
        let indexOffset = u64(trailer + 8)
        let bodyStart = indexOffset + 32
        let bodyLength = u64(indexOffset + 16)
        edit(&bytes, bodyStart)
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[bodyStart..<(bodyStart + bodyLength)])) }
        put32(crc, indexOffset + 24)
        put32(bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[indexOffset..<(indexOffset + 28)])) }, indexOffset + 28)
        put32(crc, trailer + 40)
        put32(bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[trailer..<(trailer + 56)])) }, trailer + 56)
        try writeFile(path, bytes)
    }

    @Test("an index entry of an unknown kind or dtype makes only that blob unreadable")
    func unknownKindsAreIsolated() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/future.ckpt"
            try writeContainer(path, [
                TestBlob(name: "a", dtype: .uint8, shape: [2], bytes: [1, 2]),
                TestBlob(name: "b", dtype: .uint8, shape: [2], bytes: [3, 4]),
                TestBlob(name: "c", dtype: .uint8, shape: [2], bytes: [5, 6]),
            ])
            // Entry 0 ("a") gets a kind no reader knows (5), entry 2 ("c") gets dtype id 99.
            // (Kind 3, the blob reference, is known since issue 13: FORMAT.md §4.3.1.)
            try Self.editIndex(path) { bytes, body in
                bytes[body + 32 + 0 * 64 + 50] = 5
                bytes[body + 32 + 2 * 64 + 51] = 99
            }
            let reader = try ContainerReader.open(path)
            #expect(reader.names == ["a", "b", "c"])
            let kindError = try #require(throws: CheckpointError.self) { try reader.read("a") }
            #expect(kindError.code == .unsupportedRecordKind(5) && kindError.blobName == "a")
            let dtypeError = try #require(throws: CheckpointError.self) { try reader.read("c") }
            #expect(dtypeError.code == .unknownDType("id 99"))
            #expect(try reader.read("b") == [3, 4])
        }
    }

    @Test("forged index entries that overlap or point outside the file are rejected at open")
    func forgedIndexEntries() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/forged.ckpt"
            let blobs = [TestBlob(name: "a", dtype: .uint8, shape: [100], bytes: [UInt8](repeating: 1, count: 100)),
                         TestBlob(name: "b", dtype: .uint8, shape: [100], bytes: [UInt8](repeating: 2, count: 100))]
            try writeContainer(path, blobs)
            let original = try readFile(path)
            let edits: [(String, (inout [UInt8], Int) -> Void)] = [
                ("b's record moved onto a's", { bytes, body in for i in 0..<16 { bytes[body + 32 + 64 + i] = bytes[body + 32 + i] } }),
                ("a's payload past the index", { bytes, body in bytes[body + 32 + 16 + 3] = 0x7F }),
                ("a's name outside the pool", { bytes, body in bytes[body + 32 + 32] = 0xFF }),
                ("duplicate names", { bytes, body in bytes[body + 32 + 64 + 32] = 0 }),  // b's name offset -> a's name
                ("rank beyond the pool", { bytes, body in bytes[body + 32 + 56] = 9 }),
            ]
            for (label, edit) in edits {
                try writeFile(path, original)
                try Self.editIndex(path, edit)
                let error = try #require(throws: CheckpointError.self, "\(label)") { try ContainerReader.open(path) }
                #expect(error.path == path, "\(label)")
            }
        }
    }
}

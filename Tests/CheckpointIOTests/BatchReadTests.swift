import BlobCodec
@testable import CheckpointIO
import Foundation
import Testing

/// ``ContainerReader/read(_:verify:)`` for many blobs at once (small blobs decoded
/// side by side, large ones chunk-parallel): the same bytes as one read per blob,
/// in both read modes, and every failure names its blob and file; and
/// ``ContainerReader/verify()``, which checks blobs the same way.
@Suite("Batch reads")
struct BatchReadTests {
    /// Random blobs of every dtype and codec, an empty one, and two over the 8 MiB
    /// line (one plane-coded in 1 MiB chunks, one uncompressed), so both paths run.
    static func blobs() throws -> [TestBlob] {
        var blobs = try randomBlobs(count: 60, seed: 0xBA7C, maximumBytes: 300_000)
        var rng = SyntheticData(seed: 9)
        let floats = (0..<(9 << 18)).flatMap { _ -> [UInt8] in
            let value = Float(Int64(truncatingIfNeeded: rng.next() % 2001) - 1000) / 50_000
            return withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
        }
        blobs.append(TestBlob(name: "large.planes", dtype: .float32, shape: [9 << 18], bytes: floats,
                              encode: EncodeOptions(compression: .none, shuffle: .auto, chunkSizeInBytes: 1 << 20, floatCompression: .planes)))
        blobs.append(TestBlob(name: "large.raw", dtype: .uint8, shape: [9 << 20 | 3], bytes: rng.randomBytes(count: 9 << 20 | 3)))
        blobs.append(TestBlob(name: "empty", dtype: .float32, shape: [0], bytes: []))
        return blobs
    }

    /// Reads `names` in one batch into fresh buffers and returns their bytes.
    static func batch(_ reader: ContainerReader, _ names: [String], sizes: [Int]) throws -> [[UInt8]] {
        let buffers = sizes.map { UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, $0), alignment: 64) }
        defer { buffers.forEach { $0.deallocate() } }
        let requests = zip(names, zip(buffers, sizes)).map { ($0, UnsafeMutableRawBufferPointer(rebasing: $1.0[0..<$1.1])) }
        try reader.read(batch: requests)
        return zip(buffers, sizes).map { Array($0[0..<$1]) }
    }

    @Test("a batch read gives every blob's bytes, in both read modes and on 1 or N threads",
          arguments: [ReadMode.mmap, .pread], [1, 0])
    func sameBytesAsSingleReads(mode: ReadMode, threads: Int) throws {
        let blobs = try Self.blobs()
        try withTemporaryDirectory { directory in
            let path = "\(directory)/batch.ckpt"
            try writeContainer(path, blobs)
            let reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode, threads: threads))
            #expect(try reader.descriptor("large.planes").compression == .planes)
            // Every blob, one asked for twice, in an order that is neither the file's nor by size.
            var order = Array(blobs.indices.reversed())
            order.insert(order[3], at: 40)
            let read = try Self.batch(reader, order.map { blobs[$0].name }, sizes: order.map { blobs[$0].bytes.count })
            for (position, index) in order.enumerated() {
                #expect(read[position] == blobs[index].bytes, "blob '\(blobs[index].name)' (\(mode), \(threads) threads)")
            }
            try reader.read(batch: [])  // nothing to read is not an error
        }
    }

    @Test("a damaged blob fails the batch with an error naming it and the file", arguments: [ReadMode.mmap, .pread])
    func damagedBlob(mode: ReadMode) throws {
        let blobs = try Self.blobs()
        try withTemporaryDirectory { directory in
            let path = "\(directory)/damaged.ckpt"
            try writeContainer(path, blobs)
            // An uncompressed small blob (only the batch's own verify catches it) and a large coded one.
            let small = try #require(blobs.first { $0.encode?.compression == Compression.none && $0.bytes.count > 1000 })
            for victim in [small.name, "large.planes"] {
                let copy = "\(directory)/\(victim).ckpt"
                var bytes = try readFile(path)
                let entry = try ContainerReader.open(path).descriptor(victim)
                #expect(entry.storedSizeInBytes > 0, "\(victim) has payload bytes to damage")
                bytes[entry.payloadOffset + entry.storedSizeInBytes / 2] ^= 0x20
                try writeFile(copy, bytes)
                let reader = try ContainerReader.open(copy, options: ReaderOptions(mode: mode))
                do {
                    _ = try Self.batch(reader, blobs.map(\.name), sizes: blobs.map(\.bytes.count))
                    Issue.record("\(victim): the damaged blob was read without an error")
                } catch let error as CheckpointError {
                    #expect(error.blobName == victim, "\(error)")
                    #expect(error.path == copy, "\(error)")
                    guard case .chunkChecksumMismatch = error.code else {
                        Issue.record("\(victim): \(error)")
                        continue
                    }
                }
                // The other blobs still read, in a batch without the damaged one.
                let others = blobs.filter { $0.name != victim }
                #expect(try Self.batch(reader, others.map(\.name), sizes: others.map(\.bytes.count)) == others.map(\.bytes))
            }
        }
    }

    @Test("an unknown name or a destination of the wrong size fails the batch, naming the blob")
    func badRequests() throws {
        let blobs = try Self.blobs()
        try withTemporaryDirectory { directory in
            let path = "\(directory)/batch.ckpt"
            try writeContainer(path, blobs)
            let reader = try ContainerReader.open(path)
            let names = blobs.map(\.name), sizes = blobs.map(\.bytes.count)
            // Both are found before anything is decoded: the destinations stay untouched.
            // A blob that would be decoded first (small blobs go first, largest first).
            let probe = try #require(sizes.indices.filter { sizes[$0] <= 8 << 20 }.max { sizes[$0] < sizes[$1] })
            #expect(sizes[probe] > 1000)
            let untouched = [UInt8](repeating: 0xA5, count: sizes[probe])
            func expectNothingDecoded(_ names: [String], _ sizes: [Int]) {
                let buffers = sizes.map { UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, $0), alignment: 64) }
                defer { buffers.forEach { $0.deallocate() } }
                buffers.forEach { $0.initializeMemory(as: UInt8.self, repeating: 0xA5) }
                let requests = zip(names, zip(buffers, sizes)).map { ($0, UnsafeMutableRawBufferPointer(rebasing: $1.0[0..<$1.1])) }
                #expect(throws: CheckpointError.self) { try reader.read(batch: requests) }
                #expect(Array(buffers[probe][0..<sizes[probe]]) == untouched, "a blob was decoded before the bad request was found")
            }
            do {
                _ = try Self.batch(reader, names + ["no such blob"], sizes: sizes + [4])
                Issue.record("an unknown name was read")
            } catch let error as CheckpointError {
                #expect(error.code == .blobNotFound("no such blob"), "\(error)")
                #expect(error.blobName == "no such blob" && error.path == path, "\(error)")
            }
            expectNothingDecoded(names + ["no such blob"], sizes + [4])
            var wrong = sizes
            wrong[5] += 1
            do {
                _ = try Self.batch(reader, names, sizes: wrong)
                Issue.record("a destination one byte too large was filled")
            } catch let error as CheckpointError {
                #expect(error.blobName == names[5] && error.path == path, "\(error)")
                guard case .sizeMismatch(what: "read destination", _, _) = error.code else {
                    Issue.record("\(error)")
                    return
                }
            }
            expectNothingDecoded(names, wrong)
        }
    }

    @Test("verify reports exactly the damaged blobs, small and large, in name order", arguments: [ReadMode.mmap, .pread], [1, 0])
    func verifyFindsEveryDamagedBlob(mode: ReadMode, threads: Int) throws {
        let blobs = try Self.blobs()
        try withTemporaryDirectory { directory in
            let path = "\(directory)/verify.ckpt"
            try writeContainer(path, blobs)
            var bytes = try readFile(path)
            let clean = try ContainerReader.open(path)
            let victims = blobs.filter { $0.bytes.count > 1000 }.map(\.name).prefix(5) + ["large.planes", "large.raw"]
            for victim in victims {
                let entry = try clean.descriptor(victim)
                bytes[entry.payloadOffset + entry.storedSizeInBytes / 3] ^= 0x01
            }
            try writeFile(path, bytes)
            let checks = try ContainerReader.open(path, options: ReaderOptions(mode: mode, threads: threads)).verify()
            #expect(checks.map(\.name) == clean.names)
            #expect(Set(checks.filter { $0.error != nil }.map(\.name)) == Set(victims))
            for check in checks where check.error != nil {
                #expect(check.error?.blobName == check.name && check.error?.path == path, "\(check.error!)")
            }
        }
    }

    @Test("blobs that are references to another file read and verify side by side", arguments: [ReadMode.mmap, .pread])
    func referencesReadSideBySide(mode: ReadMode) throws {
        let blobs = try Self.blobs()
        try withTemporaryDirectory { directory in
            // base.ckpt holds every blob; inc.ckpt refers to every other one and stores the rest anew.
            try writeContainer("\(directory)/base.ckpt", blobs)
            let base = try ContainerReader.open("\(directory)/base.ckpt")
            let referred = Set(blobs.indices.filter { $0 % 2 == 0 }.map { blobs[$0].name })
            var expected = blobs
            for index in expected.indices where !referred.contains(expected[index].name) && expected[index].dtype != .string {
                expected[index].bytes = expected[index].bytes.map { $0 ^ 0x5A }
            }
            let writer = try ContainerWriter.create(at: "\(directory)/inc.ckpt")
            for name in referred.sorted() { try writer.writeReference(try base.blobReference(to: name, fileName: "base.ckpt")) }
            try write(expected.filter { !referred.contains($0.name) }, with: writer)
            try writer.commit()

            let inc = "\(directory)/inc.ckpt"
            let reader = try ContainerReader.open(inc, options: ReaderOptions(mode: mode))
            #expect(try reader.descriptor("large.planes").isReference && reader.descriptor(blobs[2].name).isReference)
            #expect(try Self.batch(reader, expected.map(\.name), sizes: expected.map(\.bytes.count)) == expected.map(\.bytes))
            #expect(reader.verify().allSatisfy { $0.error == nil })

            // A referred blob damaged in base.ckpt: the batch fails naming it and inc.ckpt, and
            // verify reports that blob and no other.
            let victim = try #require(expected.first { referred.contains($0.name) && $0.bytes.count > 1000 && $0.name != "large.planes" }).name
            let entry = try base.descriptor(victim)
            var bytes = try readFile("\(directory)/base.ckpt")
            bytes[entry.payloadOffset + entry.storedSizeInBytes / 2] ^= 0x04
            try writeFile("\(directory)/base.ckpt", bytes)
            let damaged = try ContainerReader.open(inc, options: ReaderOptions(mode: mode))
            let error = try #require(throws: CheckpointError.self) {
                _ = try Self.batch(damaged, expected.map(\.name), sizes: expected.map(\.bytes.count))
            }
            #expect(error.blobName == victim && error.path == inc, "\(error)")
            #expect(damaged.verify().filter { $0.error != nil }.map(\.name) == [victim])
        }
    }
}

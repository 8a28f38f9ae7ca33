@testable import CheckpointIO
@testable import CheckpointS3
import Foundation
import Testing

/// `S3CheckpointStorage` against moto's real S3 server on loopback.
@Suite("S3 storage on moto", .serialized)
struct S3StorageTests {
    /// Blobs of several sizes (0, 1, odd, several parts) and dtypes.
    func sampleBlobs(seed: UInt64, large: Int = 0) -> [(name: String, dtype: DType, shape: Shape, bytes: [UInt8])] {
        var blobs: [(String, DType, Shape, [UInt8])] = [
            ("empty", .float32, [0], []),
            ("one", .uint8, [1], patternBytes(1, seed: seed)),
            ("odd", .uint8, [1001], patternBytes(1001, seed: seed + 1)),
            ("w", .float32, [256, 1024], patternBytes(1 << 20, seed: seed + 2)),
        ]
        if large > 0 { blobs.append(("big", .uint8, [large], patternBytes(large, seed: seed + 3))) }
        return blobs
    }

    func write(_ blobs: [(name: String, dtype: DType, shape: Shape, bytes: [UInt8])], storage: S3CheckpointStorage, to path: String,
               format: CheckpointFormat = .container, encode: EncodeOptions = EncodeOptions()) throws {
        try withSources(blobs, encode: encode) { sources in
            try storage.writeCheckpoint(sources, metadata: ["epoch": "7"], to: path, format: format, options: WriterOptions(encode: encode))
        }
    }

    func withSources<R>(_ blobs: [(name: String, dtype: DType, shape: Shape, bytes: [UInt8])], encode: EncodeOptions? = nil,
                        _ body: ([BlobSource]) throws -> R) throws -> R {
        var sources: [BlobSource] = []
        func next(_ index: Int) throws -> R {
            if index == blobs.count { return try body(sources) }
            return try blobs[index].bytes.withUnsafeBytes { bytes in
                sources.append(BlobSource(name: blobs[index].name, dtype: blobs[index].dtype, shape: blobs[index].shape, bytes: bytes))
                return try next(index + 1)
            }
        }
        return try next(0)
    }

    func checkRoundTrip(_ blobs: [(name: String, dtype: DType, shape: Shape, bytes: [UInt8])], storage: S3CheckpointStorage, path: String,
                        format: CheckpointFormat = .container) throws {
        let reader = try storage.openCheckpoint(path, format: format)
        #expect(reader.blobNames == blobs.map(\.name).sorted())
        for blob in blobs {
            var out = [UInt8](repeating: 0xAA, count: blob.bytes.count)
            try out.withUnsafeMutableBytes { try reader.readBlob(blob.name, into: $0) }
            #expect(out == blob.bytes, "blob \(blob.name)")
        }
    }

    @Test func smallContainerIsOnePutAndRoundTrips() throws {
        let bucket = try TestBucket()
        let blobs = sampleBlobs(seed: 1)
        try write(blobs, storage: bucket.storage, to: bucket.url("run1/trainer_0.1"))
        #expect(try bucket.allKeys() == ["run1/trainer_0.1"])
        #expect(try bucket.openUploads().isEmpty)
        try checkRoundTrip(blobs, storage: bucket.storage, path: bucket.url("run1/trainer_0.1"))
        #expect(bucket.storage.isCompleteCheckpoint(bucket.url("run1/trainer_0.1"), format: .container))
        #expect(!bucket.storage.isCompleteCheckpoint(bucket.url("run1/trainer_0.2"), format: .container))
        #expect(try bucket.storage.openCheckpoint(bucket.url("run1/trainer_0.1"), format: .container).fileMetadata["epoch"] == "7")
    }

    /// The kernel's `SO_RCVBUF` answer for `requested` bytes: twice the size, capped at `net.core.rmem_max`.
    func kernelReceiveBuffer(_ requested: Int) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/core/rmem_max", encoding: .utf8),
              let maximum = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        return 2 * min(requested, maximum)
    }

    @Test func receiveBufferIsSetOnEveryConnectionAndReadsStayExact() throws {
        // moto is on loopback: automatic asks for 4 MiB; a fixed size is asked for as given;
        // kernel leaves the sockets alone. 1 MiB ranges of a 6 MiB blob, several at once, take
        // several connections: each must report the size, and the bytes must stay exact.
        let blobs = sampleBlobs(seed: 31, large: 6 << 20 + 5)
        for (setting, requested) in [(S3Configuration.ReceiveBuffer.automatic, 4 << 20), (.fixed(96 << 10), 96 << 10), (.kernel, nil)] {
            let bucket = try TestBucket { configuration in
                configuration.receiveBuffer = setting
                configuration.rangeSizeInBytes = 1 << 20
            }
            try write(blobs, storage: bucket.storage, to: bucket.url("rb/trainer_0.1"))
            try checkRoundTrip(blobs, storage: bucket.storage, path: bucket.url("rb/trainer_0.1"))
            let reported = bucket.storage.client.receiveBuffers
            if let requested {
                #expect(reported.set >= 2, "\(setting): \(reported.set) connections reported")
                #expect(reported.refused == 0, "\(setting): the kernel refused on \(reported.refused) connections")
                if let expected = kernelReceiveBuffer(requested) {
                    #expect(reported.smallest == expected && reported.largest == expected, "\(setting): \(reported), expected \(expected) each")
                }
            } else {
                #expect(reported.set == 0 && reported.refused == 0, "\(setting) touched the sockets: \(reported)")
            }
        }
    }

    @Test func multipartUploadWithManyPartsRoundTrips() throws {
        // 5 MiB parts, 2 in flight, 8 MiB-ish ranges: a 23 MiB blob spans five parts and several ranges.
        let bucket = try TestBucket { configuration in
            configuration.partSizeInBytes = 5 << 20
            configuration.uploadConcurrency = 2
            configuration.rangeSizeInBytes = 3 << 20
        }
        let blobs = sampleBlobs(seed: 2, large: 23 << 20 + 17)
        try write(blobs, storage: bucket.storage, to: bucket.url("m/trainer_0.1"))
        #expect(try bucket.openUploads().isEmpty)
        try checkRoundTrip(blobs, storage: bucket.storage, path: bucket.url("m/trainer_0.1"))
        // The ETag of a multipart object says how many parts it has.
        let head = try bucket.storage.client.send(S3Request(operation: "HeadObject", method: .HEAD, bucket: bucket.name, key: "m/trainer_0.1"))
        #expect(head.eTag?.hasSuffix("-5\"") == true)
        // Compressed blobs go through the same sink.
        try write(blobs, storage: bucket.storage, to: bucket.url("m/zstd.1"), encode: EncodeOptions(compression: .zstd(level: 1)))
        try checkRoundTrip(blobs, storage: bucket.storage, path: bucket.url("m/zstd.1"))
    }

    @Test func multipartUploadFillsFinishedPartsBuffersAgain() throws {
        // 12 parts of 5 MiB, 2 in flight: a buffer per part would be 12 allocations (and
        // 60 MiB of fresh pages to fault in and zero); reused, the writer needs about three.
        let bucket = try TestBucket { configuration in
            configuration.partSizeInBytes = 5 << 20
            configuration.uploadConcurrency = 2
        }
        // Random bytes from the kernel (a debug build's generator would dominate the test's time).
        let random = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        let bytes = [UInt8](random.readData(ofLength: 12 * (5 << 20) - 1234))
        try random.close()
        let sink = S3MultipartSink(client: bucket.storage.client, bucket: bucket.name, key: "reuse/object")
        try bytes.withUnsafeBytes { all in
            var offset = 0
            while offset < all.count {  // uneven appends that straddle part boundaries
                let n = min(all.count - offset, 3 << 20 | 4321)
                try sink.append([UnsafeRawBufferPointer(rebasing: all[offset..<(offset + n)])], at: offset)
                offset += n
            }
        }
        try sink.commit()
        #expect(sink.buffersAllocated <= 4, "\(sink.buffersAllocated) part buffers for 12 parts with 2 in flight")
        let object = try bucket.storage.client.send(S3Request(operation: "GetObject", method: .GET, bucket: bucket.name, key: "reuse/object"),
                                                    bodyLimit: bytes.count + 1)
        #expect(object.body.getBytes(at: object.body.readerIndex, length: object.body.readableBytes) == bytes, "the object is not the bytes appended")
        #expect(try bucket.openUploads().isEmpty)
    }

    @Test func safetensorsRoundTrips() throws {
        let bucket = try TestBucket()
        let blobs = sampleBlobs(seed: 3).filter { !$0.bytes.isEmpty }
        try write(blobs, storage: bucket.storage, to: bucket.url("st/model.safetensors"), format: .safetensors)
        try checkRoundTrip(blobs, storage: bucket.storage, path: bucket.url("st/model.safetensors"), format: .safetensors)
        #expect(bucket.storage.isCompleteCheckpoint(bucket.url("st/model.safetensors"), format: .safetensors))
    }

    @Test func safetensorsOpensWithTheHeaderAndReadsTensorsByRange() throws {
        // 1 MiB ranges: the 6 MiB tensor takes several ranged GETs, the open only the head.
        let bucket = try TestBucket { $0.rangeSizeInBytes = 1 << 20 }
        let blobs = sampleBlobs(seed: 41, large: 6 << 20 + 3).filter { !$0.bytes.isEmpty }
        let path = bucket.url("st/big.safetensors")
        try write(blobs, storage: bucket.storage, to: path, format: .safetensors)
        let size = blobs.reduce(0) { $0 + $1.bytes.count }
        let before = bucket.storage.client.transferred
        let reader = try bucket.storage.openCheckpoint(path, format: .safetensors)
        let opened = bucket.storage.client.transferred
        #expect(opened.requests - before.requests == 1, "open: \(opened.requests - before.requests) requests")
        #expect(opened.bytesReceived - before.bytesReceived == 1 << 20, "open: \(opened.bytesReceived - before.bytesReceived) bytes of \(size)")
        #expect(reader.blobNames == blobs.map(\.name).sorted())
        var big = [UInt8](repeating: 0, count: 6 << 20 + 3)
        try big.withUnsafeMutableBytes { try reader.readBlob("big", into: $0) }
        #expect(big == blobs.first { $0.name == "big" }!.bytes)
        let read = bucket.storage.client.transferred
        // "big" lies past the head (the F32 tensor "w" comes first): its 6 MiB + 3 bytes in
        // seven 1 MiB ranges, nothing more.
        #expect(read.requests - opened.requests == 7, "read: \(read.requests - opened.requests) requests")
        #expect(read.bytesReceived - opened.bytesReceived == 6 << 20 + 3, "read: \(read.bytesReceived - opened.bytesReceived) bytes")
        // All of them at once (readTensors → readBlobs): one group of neighbours, bit-exact.
        let tensors = try reader.readTensors(blobs.map(\.name))
        for (tensor, blob) in zip(tensors, blobs) {
            #expect(tensor.withUnsafeBytes { $0.elementsEqual(blob.bytes) }, "\(blob.name)")
        }
        try checkRoundTrip(blobs, storage: bucket.storage, path: path, format: .safetensors)

        // A file smaller than the head: opening fetches all of it, reading costs nothing more.
        let small = sampleBlobs(seed: 42).filter { !$0.bytes.isEmpty && $0.bytes.count < 4096 }
        try write(small, storage: bucket.storage, to: bucket.url("st/small.safetensors"), format: .safetensors)
        let smallReader = try bucket.storage.openCheckpoint(bucket.url("st/small.safetensors"), format: .safetensors)
        let afterOpen = bucket.storage.client.transferred.requests
        for blob in small {
            var out = [UInt8](repeating: 0, count: blob.bytes.count)
            try out.withUnsafeMutableBytes { try smallReader.readBlob(blob.name, into: $0) }
            #expect(out == blob.bytes, "\(blob.name)")
        }
        #expect(bucket.storage.client.transferred.requests == afterOpen, "reads served from the head")
    }

    @Test func safetensorsHeaderLongerThanTheHeadAndHostileHeaders() throws {
        let bucket = try TestBucket()
        // 12,000 tensors with 80-byte names: a header of about 1.4 MB, past the 1 MiB head.
        let many = (0..<12_000).map { index in
            (name: "layer.\(index).".padding(toLength: 80, withPad: "x", startingAt: 0), bytes: [UInt8(index & 0xFF), UInt8(index >> 8)])
        }
        let path = bucket.url("st/many.safetensors")
        // One buffer for all the tensors' bytes (withSources nests a closure per tensor: too deep here).
        let packed = many.flatMap(\.bytes)
        try packed.withUnsafeBytes { all in
            let sources = many.indices.map { index in
                BlobSource(name: many[index].name, dtype: .uint8, shape: [2], bytes: UnsafeRawBufferPointer(rebasing: all[(2 * index)..<(2 * index + 2)]))
            }
            try bucket.storage.writeCheckpoint(sources, metadata: [:], to: path, format: .safetensors, options: WriterOptions())
        }
        let before = bucket.storage.client.transferred
        let reader = try bucket.storage.openCheckpoint(path, format: .safetensors)
        #expect(bucket.storage.client.transferred.requests - before.requests == 2, "head, then the rest of the header")
        #expect(reader.blobNames.count == 12_000)
        var two = [UInt8](repeating: 0, count: 2)
        try two.withUnsafeMutableBytes { try reader.readBlob(many[11_999].name, into: $0) }
        #expect(two == many[11_999].bytes)
        // All 12,000 tensors (24,000 neighbouring bytes past the head) in one ranged GET, not 12,000.
        let beforeAll = bucket.storage.client.transferred.requests
        var all = [UInt8](repeating: 0, count: 2 * many.count)
        try all.withUnsafeMutableBytes { buffer in
            try reader.readBlobs(many.indices.reversed().map { (many[$0].name, UnsafeMutableRawBufferPointer(rebasing: buffer[(2 * $0)..<(2 * $0 + 2)])) })
        }
        #expect(bucket.storage.client.transferred.requests - beforeAll == 1)
        #expect(all == packed)

        // Hostile objects: each fails with the object's URL and the rule it breaks, never a crash.
        func header(_ json: String, declared: UInt64? = nil, data: Int = 0) -> [UInt8] {
            let body = Array(json.utf8)
            return withUnsafeBytes(of: (declared ?? UInt64(body.count)).littleEndian) { Array($0) } + body + [UInt8](repeating: 7, count: data)
        }
        let hostile: [(String, [UInt8], String)] = [
            ("empty", [], "safetensors header length"),
            ("short", [1, 2, 3], "safetensors header length"),
            ("past-end", header("{}", declared: 1 << 40), "safetensors header"),
            ("not-json", header("{not json"), "safetensors header"),
            ("bad-offsets", header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]}}", data: 8), "data_offsets [0, 9]"),
        ]
        for (name, bytes, rule) in hostile {
            let object = bucket.url("st/\(name).safetensors")
            try bucket.storage.writeFile(bytes, to: object, durability: .full)
            do {
                _ = try bucket.storage.openCheckpoint(object, format: .safetensors)
                Issue.record("\(name): opened")
            } catch {
                let text = "\(error)"
                #expect(text.contains(object) && text.contains(rule), "\(name): \(text)")
            }
            #expect(!bucket.storage.isCompleteCheckpoint(object, format: .safetensors), "\(name)")
        }
    }

    @Test func smallFilesConditionalWritesAndErrors() throws {
        let bucket = try TestBucket()
        let storage = bucket.storage
        let path = bucket.url("meta/checkpoint_metadata.json")
        #expect(try storage.readFile(path, limit: 100) == nil)
        try storage.writeFile(Array("v1".utf8), to: path, durability: .full)
        #expect(try storage.readFile(path, limit: 100) == Array("v1".utf8))
        #expect(throws: CheckpointError.self) { try storage.readFile(path, limit: 1) }
        // createFileIfAbsent: exactly once.
        #expect(try storage.createFileIfAbsent(Array("a".utf8), at: bucket.url("meta/claim"), durability: .full))
        #expect(try !storage.createFileIfAbsent(Array("b".utf8), at: bucket.url("meta/claim"), durability: .full))
        #expect(try storage.readFile(bucket.url("meta/claim"), limit: 10) == Array("a".utf8))
        // updateFile from absent, then a compare-and-swap that loses a race: another writer
        // replaces the file between its read and its conditional PUT (412), so it reads again
        // and applies its change to the other writer's content. (Not threads against moto:
        // moto's own If-Match check is not atomic under concurrent requests.)
        let counter = bucket.url("meta/counter")
        var first: [UInt8]?? = nil  // .some(nil) once called with "no file"
        let created = try storage.updateFile(counter, limit: 100, durability: .full) { old throws(CheckpointError) in
            first = old
            return Array("1".utf8)
        }
        #expect(first == .some(nil))
        #expect(created == Array("1".utf8))
        var seen: [String] = []
        let final = try storage.updateFile(counter, limit: 100, durability: .full) { old throws(CheckpointError) in
            let value = String(decoding: old ?? [], as: UTF8.self)
            seen.append(value)
            if seen.count == 1 { try storage.writeFile(Array("10".utf8), to: counter, durability: .full) }  // the competitor
            return Array(String(Int(value)! + 1).utf8)
        }
        #expect(seen == ["1", "10"])
        #expect(final == Array("11".utf8))
        #expect(try storage.readFile(counter, limit: 100) == Array("11".utf8))
        // Errors name the operation, bucket, key and status.
        do {
            _ = try storage.openCheckpoint("s3://no-such-bucket-\(UUID().uuidString.lowercased().prefix(8))/x/y.1", format: .container)
            Issue.record("opened a checkpoint in a missing bucket")
        } catch {
            #expect(error.path?.hasPrefix("s3://no-such-bucket") == true || "\(error)".contains("no-such-bucket"))
        }
        let error = #expect(throws: CheckpointError.self) { try storage.writeFile([1], to: "s3://no-such-bucket-zz/k", durability: .full) }
        #expect(error.map { "\($0)" }?.contains("PutObject of s3://no-such-bucket-zz/k failed: HTTP 404 NoSuchBucket") == true)
    }

    @Test func listingPagesAndSpecialKeys() throws {
        let bucket = try TestBucket()
        let storage = bucket.storage
        let special = ["with space.1", "plus+sign.2", "per%cent.3", "ünïcødé-鍵.4", "amp&lt<gt>.5"]
        for name in special { try storage.writeFile(Array(name.utf8), to: bucket.url("dir/" + name), durability: .none) }
        try storage.writeFile([1], to: bucket.url("dir/sub/nested"), durability: .none)
        try storage.writeFile([1], to: bucket.url("dirx/other"), durability: .none)
        #expect(storage.listFiles(in: bucket.url("dir")).sorted() == special.sorted())
        for name in special { #expect(try storage.readFile(bucket.url("dir/" + name), limit: 100) == Array(name.utf8)) }
        try storage.removeCheckpoint("with space.1", in: bucket.url("dir"))
        #expect(!storage.listFiles(in: bucket.url("dir")).contains("with space.1"))
        #expect(throws: CheckpointError.self) { try storage.removeCheckpoint("../x", in: bucket.url("dir")) }
        // More than 1,000 keys: ListObjectsV2 pages with continuation tokens.
        let many = (0..<1_050).map { "k\($0)" }
        DispatchQueue.concurrentPerform(iterations: 10) { slice in
            for name in many[(slice * 105)..<((slice + 1) * 105)] { try? storage.writeFile([], to: bucket.url("many/" + name), durability: .none) }
        }
        #expect(Set(try storage.list(bucket.url("many"))) == Set(many))
    }

    @Test func writerLeaseExcludesAndExpires() throws {
        let bucket = try TestBucket { $0.leaseDurationInSeconds = 1.5 }
        let storage = bucket.storage
        var first: AnyObject? = try storage.lockWriter(in: bucket.url("run"), name: "trainer_0")
        let error = #expect(throws: CheckpointError.self) { _ = try storage.lockWriter(in: bucket.url("run"), name: "trainer_0") }
        #expect(error?.code == .writerLocked)
        // Another name is independent.
        _ = try storage.lockWriter(in: bucket.url("run"), name: "trainer_1")
        // Renewed while held: still locked after more than one lease duration.
        Thread.sleep(forTimeInterval: 2.5)
        #expect(throws: CheckpointError.self) { _ = try storage.lockWriter(in: bucket.url("run"), name: "trainer_0") }
        first = nil
        _ = first
        let second = try storage.lockWriter(in: bucket.url("run"), name: "trainer_0")
        _ = second
        // A lease whose holder stopped renewing (killed) is taken over after it expires.
        let stale = #"{"owner":"dead:1:1","expiresAt":1.000}"#
        try storage.writeFile(Array(stale.utf8), to: bucket.url("run/.trainer_9.writer.lease"), durability: .none)
        _ = try storage.lockWriter(in: bucket.url("run"), name: "trainer_9")
    }

    @Test func failedWriteLeavesNothing() throws {
        let bucket = try TestBucket { configuration in
            configuration.partSizeInBytes = 5 << 20
        }
        // A blob that fails validation after some parts went out: the upload is aborted.
        let big = patternBytes(12 << 20, seed: 9)
        big.withUnsafeBytes { bytes in
            let good = BlobSource(name: "big", dtype: .uint8, shape: [big.count], bytes: bytes)
            let bad = BlobSource(name: "bad", dtype: .float32, shape: [3], bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<5]))
            #expect(throws: CheckpointError.self) {
                try bucket.storage.writeCheckpoint([good, bad], metadata: [:], to: bucket.url("f/trainer_0.1"), format: .container, options: WriterOptions())
            }
        }
        #expect(try bucket.allKeys().isEmpty)
        #expect(try bucket.openUploads().isEmpty)
    }

    @Test func abandonedUploadsAreAborted() throws {
        let bucket = try TestBucket()
        let storage = bucket.storage
        for key in ["r/trainer_0.3", "r/trainer_1.3"] {
            _ = try storage.client.send(S3Request(operation: "CreateMultipartUpload", method: .POST, bucket: bucket.name, key: key, query: [("uploads", "")]))
        }
        #expect(try bucket.openUploads().sorted() == ["r/trainer_0.3", "r/trainer_1.3"])
        #expect(storage.removeAbandonedWrites(in: bucket.url("r"), targetPrefix: "trainer_0.") == ["trainer_0.3"])
        #expect(try bucket.openUploads() == ["r/trainer_1.3"])
    }
}

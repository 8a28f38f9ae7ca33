@testable import CheckpointIO
@testable import CheckpointS3
import Foundation
import Testing

/// Uploads and downloads through ``FaultProxy``: bit-exact after retries, or a
/// clean error with nothing under the final key and no multipart upload left open.
@Suite("S3 through a fault-injecting proxy", .serialized)
struct S3FaultTests {
    /// A bucket on moto, a storage that talks to it through a new proxy, and the proxy.
    func proxied(partSize: Int = 5 << 20, attempts: Int = 8) throws -> (bucket: TestBucket, storage: S3CheckpointStorage, proxy: FaultProxy) {
        let bucket = try TestBucket()
        let proxy = try FaultProxy(upstreamPort: bucket.server.port)
        var configuration = bucket.server.configuration(endpoint: proxy.endpoint)
        configuration.partSizeInBytes = partSize
        configuration.uploadConcurrency = 3
        configuration.rangeSizeInBytes = 2 << 20
        configuration.requestTimeoutInSeconds = 2
        configuration.retry = S3RetryPolicy(maximumAttempts: attempts, baseDelay: 0.01, maximumDelay: 0.1)
        return (bucket, try S3CheckpointStorage(configuration: configuration), proxy)
    }

    let blob = patternBytes(17 << 20 + 333, seed: 42)

    func save(_ storage: S3CheckpointStorage, _ path: String) throws {
        try blob.withUnsafeBytes { bytes in
            try storage.writeCheckpoint([BlobSource(name: "w", dtype: .uint8, shape: [blob.count], bytes: bytes)], metadata: ["epoch": "1"],
                                        to: path, format: .container, options: WriterOptions())
        }
    }

    func load(_ reader: any CheckpointFileReading) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: blob.count)
        try out.withUnsafeMutableBytes { try reader.readBlob("w", into: $0) }
        return out
    }

    /// A store without conditional writes is refused at `initialize`, naming the bucket, the
    /// probe key and the ignored condition; a store with them passes and keeps no probe object.
    @Test func aStoreWithoutConditionalWritesFailsAtInitialize() throws {
        let (bucket, storage, proxy) = try proxied()
        defer { proxy.stop() }
        proxy.setIgnoresConditionalWrites(true)
        let manager = try CheckpointManager(dbPrefix: bucket.url("run"), nodeName: "trainer_0",
                                            options: CheckpointOptions(storage: storage))
        #expect { try manager.initialize() } throws: { error in
            guard let error = error as? CheckpointError, case let .objectStore(_, errorBucket, key, _, _, message) = error.code else { return false }
            return errorBucket == bucket.name && key.hasPrefix("run/.conditional-writes.probe.") && message.contains("If-None-Match")
        }
        // The writer lock rests on the same probe: it is refused too, and takes no lease.
        #expect { try storage.lockWriter(in: bucket.url("run"), name: "trainer_0") } throws: { error in
            guard let error = error as? CheckpointError, case let .objectStore(_, _, key, _, _, _) = error.code else { return false }
            return key.hasPrefix("run/.conditional-writes.probe.")
        }
        #expect(try bucket.allKeys().isEmpty)

        proxy.setIgnoresConditionalWrites(false)
        let honest = try S3CheckpointStorage(configuration: storage.configuration)
        let good = try CheckpointManager(dbPrefix: bucket.url("run"), nodeName: "trainer_0", options: CheckpointOptions(storage: honest))
        try good.initialize()
        #expect(try bucket.allKeys().isEmpty)
    }

    /// Read-only credentials (every PUT refused with 403) still initialize, to load; a save fails naming the 403.
    @Test func readOnlyCredentialsInitializeAndFailOnlyAtTheSave() throws {
        let (bucket, storage, proxy) = try proxied()
        defer { proxy.stop() }
        proxy.setSchedule { $0.method == "PUT" ? .forbidden : nil }
        let manager = try CheckpointManager(dbPrefix: bucket.url("run"), nodeName: "trainer_0",
                                            workspace: Workspace(["w": Tensor(scalar: Int64(1))]), options: CheckpointOptions(storage: storage))
        try manager.initialize()
        #expect { try manager.save(epoch: 1) } throws: { error in
            guard let error = error as? CheckpointError, case let .objectStore(_, _, _, status, code, _) = error.code else { return false }
            return status == 403 && code == "AccessDenied"
        }
        #expect(try bucket.allKeys().isEmpty)
    }

    @Test func everyFaultKindIsRetriedToABitExactResult() throws {
        let (bucket, storage, proxy) = try proxied()
        defer { proxy.stop() }
        // Every third request fails, cycling through the kinds of failure.
        let kinds: [FaultProxy.Fault] = [.internalError, .slowDown, .resetMidBody, .truncate, .stall(seconds: 3)]
        proxy.setSchedule { info in info.index % 3 == 1 ? kinds[(info.index / 3) % kinds.count] : nil }
        try save(storage, bucket.url("r/trainer_0.1"))
        #expect(proxy.faultsInjected >= 3)
        #expect(proxy.checksumsChecked >= 4)
        #expect(proxy.checksumMismatches == 0)
        #expect(try bucket.openUploads().isEmpty)
        let reader = try storage.openCheckpoint(bucket.url("r/trainer_0.1"), format: .container)
        #expect(try load(reader) == blob)
        // Small files and conditional writes through the same faults.
        try storage.writeFile(Array("meta".utf8), to: bucket.url("r/meta"), durability: .full)
        #expect(try storage.readFile(bucket.url("r/meta"), limit: 10) == Array("meta".utf8))
        #expect(try storage.createFileIfAbsent([1, 2, 3], at: bucket.url("r/claim"), durability: .full))
        #expect(try !storage.createFileIfAbsent([4], at: bucket.url("r/claim"), durability: .full))
    }

    @Test func corruptedBytesInGetBodiesAreCaughtByCRC32C() throws {
        let (bucket, storage, proxy) = try proxied()
        defer { proxy.stop() }
        try save(storage, bucket.url("c/trainer_0.1"))
        let reader = try storage.openCheckpoint(bucket.url("c/trainer_0.1"), format: .container)
        // Every payload range comes back with a flipped byte the first time it is asked for:
        // the chunk's CRC32C catches it and the chunk is read again.
        let seen = LockedSet()
        proxy.setSchedule { info in info.method == "GET" && (info.rangeLength ?? 0) > (1 << 20) && seen.insert(info.range ?? "") ? .corruptByte : nil }
        #expect(try load(reader) == blob)
        #expect(proxy.faultsInjected > 0)
        // Every payload range damaged, every time: a checksum error naming the blob, never wrong bytes.
        proxy.setSchedule { info in info.method == "GET" && (info.rangeLength ?? 0) > (1 << 20) ? .corruptByte : nil }
        do {
            _ = try load(reader)
            Issue.record("damaged bytes were accepted")
        } catch let error as CheckpointError {
            guard case .chunkChecksumMismatch = error.code else { Issue.record("unexpected \(error)"); return }
            #expect(error.blobName == "w")
            #expect(error.path == "s3://\(bucket.name)/c/trainer_0.1")
        }
    }

    @Test func persistentFailuresFailCleanly() throws {
        let (bucket, storage, proxy) = try proxied(attempts: 3)
        defer { proxy.stop() }
        // Every part upload fails: the save throws, the upload is aborted, nothing is visible.
        proxy.setSchedule { info in info.method == "PUT" && info.target.contains("partNumber=2") ? .slowDown : nil }
        do {
            try save(storage, bucket.url("p/trainer_0.1"))
            Issue.record("the save succeeded")
        } catch let error as CheckpointError {
            #expect("\(error)".contains("UploadPart 2 of s3://\(bucket.name)/p/trainer_0.1 failed: HTTP 503 SlowDown"))
        }
        #expect(try bucket.allKeys().isEmpty)
        #expect(try bucket.openUploads().isEmpty)
        // The completion failing for good: no object either.
        proxy.setSchedule { info in info.method == "POST" && info.target.contains("uploadId=") ? .internalError : nil }
        #expect(throws: CheckpointError.self) { try save(storage, bucket.url("p/trainer_0.2")) }
        #expect(try bucket.allKeys().isEmpty)
        #expect(try bucket.openUploads().isEmpty)
        // A lost completion response: the retry meets NoSuchUpload, and the object that is there is recognised.
        let completions = LockedCounter()
        proxy.setSchedule { info in
            info.method == "POST" && info.target.contains("uploadId=") && completions.next() == 0 ? .resetMidBody : nil
        }
        try save(storage, bucket.url("p/trainer_0.3"))
        #expect(try bucket.allKeys() == ["p/trainer_0.3"])
        let reader = try storage.openCheckpoint(bucket.url("p/trainer_0.3"), format: .container)
        #expect(try load(reader) == blob)
    }
}

final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int { lock.withLock { defer { value += 1 }; return value } }
}

final class LockedSet: @unchecked Sendable {
    private let lock = NSLock()
    private var items: Set<String> = []
    /// True when `item` was not there yet.
    func insert(_ item: String) -> Bool { lock.withLock { items.insert(item).inserted } }
}

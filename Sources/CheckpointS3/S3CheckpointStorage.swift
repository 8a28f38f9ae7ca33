import BlobCodec
import CheckpointIO
import Foundation
import NIOCore

/// Checkpoints in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2,
/// GCS's S3 API): the ``CheckpointStorage`` of path type `"s3"`.
///
///     try S3CheckpointStorage.registerFromEnvironment()   // AWS_* variables, ~/.aws files
///     let manager = try CheckpointManager(dbPrefix: "s3://bucket/run1", nodeName: "trainer_0")
///
/// Paths are `s3://BUCKET/KEY` (or `BUCKET/KEY`); a "directory" is a key
/// prefix. A container is streamed into a multipart upload
/// (``S3MultipartSink``) whose completion is the atomic commit; a container
/// opens with one ranged `GET` of its tail and reads blobs with parallel
/// ranged `GET`s straight into the destination, every CRC32C checked
/// (``S3ObjectSource``). Small files are single `PUT`s; ``updateFile(_:limit:durability:_:)``
/// is a compare-and-swap loop on the ETag (`If-Match`, `If-None-Match: *`);
/// the writer lock is a lease object renewed while held. Durability is the
/// store's: a completed `PUT` is durable, whatever ``Durability`` says.
public final class S3CheckpointStorage: CheckpointStorage, @unchecked Sendable {
    let client: S3Client
    public var configuration: S3Configuration { client.configuration }

    /// A storage talking to the store `configuration` describes.
    ///
    /// - Throws: ``CheckpointError/Code/invalidField(field:reason:)`` for transfer settings outside S3's limits.
    public init(configuration: S3Configuration) throws(CheckpointError) {
        self.client = try S3Client(configuration: configuration)
    }

    /// A storage configured from the environment and the AWS files (``S3Configuration/fromEnvironment(_:overrides:)``).
    public convenience init(overrides: S3Configuration.Overrides = S3Configuration.Overrides()) throws(CheckpointError) {
        try self.init(configuration: S3Configuration.fromEnvironment(overrides: overrides))
    }

    /// Registers a storage configured from the environment as path type `"s3"`
    /// (so `s3://` prefixes resolve to it) and returns it.
    @discardableResult
    public static func registerFromEnvironment(overrides: S3Configuration.Overrides = S3Configuration.Overrides()) throws(CheckpointError) -> S3CheckpointStorage {
        let storage = try S3CheckpointStorage(overrides: overrides)
        CheckpointStorageRegistry.register(storage, for: "s3")
        return storage
    }

    // MARK: Paths

    /// The bucket and key of `s3://BUCKET/KEY` or `BUCKET/KEY`.
    ///
    /// - Throws: ``CheckpointError/Code/invalidField(field:reason:)`` when there is no bucket.
    public static func location(of path: String) throws(CheckpointError) -> (bucket: String, key: String) {
        var rest = Substring(path)
        if rest.hasPrefix("s3://") { rest = rest.dropFirst(5) }
        let bucket = rest.prefix(while: { $0 != "/" })
        guard !bucket.isEmpty, !path.utf8.contains(0) else {
            throw CheckpointError(.invalidField(field: "path", reason: "'\(path)' is not s3://BUCKET/KEY"))
        }
        let key = rest.dropFirst(bucket.count).drop(while: { $0 == "/" })
        return (String(bucket), String(key))
    }

    /// The bucket and the key of a file that must have one.
    private func objectLocation(_ path: String) throws(CheckpointError) -> (bucket: String, key: String) {
        let location = try S3CheckpointStorage.location(of: path)
        guard !location.key.isEmpty, !location.key.hasSuffix("/") else {
            throw CheckpointError(.invalidField(field: "path", reason: "'\(path)' names no object (s3://BUCKET/KEY)"))
        }
        return location
    }

    /// The bucket and the key prefix (ending in `/`, or empty for the bucket's root) of a directory.
    private func directoryLocation(_ directory: String) throws(CheckpointError) -> (bucket: String, prefix: String) {
        let (bucket, key) = try S3CheckpointStorage.location(of: directory)
        return (bucket, key.isEmpty || key.hasSuffix("/") ? key : key + "/")
    }

    // MARK: Checkpoints

    public func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
                                format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
        let (bucket, key) = try objectLocation(path)
        let sink = S3MultipartSink(client: client, bucket: bucket, key: key)
        switch format {
        case .container:
            let writer = try ContainerWriter.create(streamingTo: sink, path: "s3://\(bucket)/\(key)", options: options)
            try writer.writeAndCommit(blobs, metadata: metadata)
        case .safetensors, .minidb:
            // safetensors and minidb are written (as local storage writes them) to a local temporary file, then streamed up.
            let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-s3-\(UUID().uuidString).\(format.rawValue)").path
            defer { try? FileManager.default.removeItem(atPath: temporary) }
            var localOptions = options
            localOptions.durability = .none
            try LocalCheckpointStorage().writeCheckpoint(blobs, metadata: metadata, to: temporary, format: format, options: localOptions)
            do throws(CheckpointError) {
                try S3CheckpointStorage.stream(fileAt: temporary, into: sink)
                try sink.commit()
            } catch {
                sink.abort()
                throw error
            }
        }
    }

    /// Copies a local file into `sink` in part-sized pieces (not committed).
    static func stream(fileAt path: String, into sink: S3MultipartSink) throws(CheckpointError) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CheckpointError(.system(call: "open", errno: 2), path: path) }
        defer { try? handle.close() }
        var offset = 0
        while true {
            let data: Data
            do { data = try handle.read(upToCount: 8 << 20) ?? Data() } catch { throw CheckpointError(.system(call: "read", errno: 5), path: path) }
            if data.isEmpty { return }
            try typedThrows { try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in try sink.append([bytes], at: offset) } }
            offset += data.count
        }
    }

    /// A container opens with one ranged `GET` of the object's tail, a
    /// safetensors file with one of its head (more when its header is longer
    /// than 1 MiB); their blobs are then read with ranged `GET`s pinned to the
    /// ETag seen at open, so a read after the object was replaced fails (412)
    /// instead of mixing versions. A safetensors object without an ETag is
    /// refused: it has no checksums either, so nothing would catch a mix. A
    /// minidb file is downloaded to a local temporary file and opened there.
    public func openCheckpoint(_ path: String, format: CheckpointFormat) throws(CheckpointError) -> any CheckpointFileReading {
        let (bucket, key) = try objectLocation(path)
        switch format {
        case .container:
            let source = try S3ObjectSource(client: client, bucket: bucket, key: key)
            let reader = try ContainerReader.open(source: source)
            // Blob references (incremental checkpoints) resolve through this storage, relative to the object's prefix.
            reader.referenceResolver = StorageReferenceResolver(storage: self, directory: path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "")
            return reader
        case .safetensors:
            // The header from the object's first MiB (a second ranged GET when it is longer), then
            // each tensor as ranged GETs straight into the caller's memory.
            let source = try S3ObjectSource(client: client, bucket: bucket, key: key, prefetch: .head)
            guard !source.eTag.isEmpty || source.sizeInBytes <= S3ObjectSource.prefetchSize else {
                throw CheckpointError(.objectStore(operation: "GetObject (head)", bucket: bucket, key: key, status: 206, errorCode: "",
                                                   message: "the store returned no ETag: ranged reads of a safetensors file (which has no checksums) could mix two versions"))
            }
            return try SafetensorsFile.open(source: source)
        case .minidb:
            let source = try S3ObjectSource(client: client, bucket: bucket, key: key)
            let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-s3-\(UUID().uuidString).\(format.rawValue)").path
            defer { try? FileManager.default.removeItem(atPath: temporary) }
            try S3CheckpointStorage.download(source, to: temporary)
            return try LocalCheckpointStorage().openCheckpoint(temporary, format: format)  // mapped: the name can go at once
        }
    }

    /// Downloads a whole object into a new local file.
    static func download(_ source: S3ObjectSource, to path: String, progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) {
        let chunk = 64 << 20
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw CheckpointError(.system(call: "open", errno: 13), path: path)
        }
        defer { try? handle.close() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: min(chunk, max(1, source.sizeInBytes)), alignment: 64)
        defer { buffer.deallocate() }
        var offset = 0
        while offset < source.sizeInBytes {
            let n = min(buffer.count, source.sizeInBytes - offset)
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            try source.read(into: part, at: offset)
            do { try handle.write(contentsOf: Data(bytesNoCopy: part.baseAddress!, count: n, deallocator: .none)) } catch {
                throw CheckpointError(.system(call: "write", errno: 5), path: path)
            }
            offset += n
            progress?(offset, source.sizeInBytes)
        }
    }

    public func isCompleteCheckpoint(_ path: String, format: CheckpointFormat) -> Bool {
        // A container's trailer and index, a minidb's records, a safetensors header (it has no
        // checksums to check the tensors against).
        (try? openCheckpoint(path, format: format)) != nil
    }

    /// `DeleteObject` of `directory/name` (a missing object is not an error).
    public func removeCheckpoint(_ name: String, in directory: String) throws(CheckpointError) {
        try CheckpointNaming.validate(fileName: name)
        let (bucket, prefix) = try directoryLocation(directory)
        try client.send(S3Request(operation: "DeleteObject", method: .DELETE, bucket: bucket, key: prefix + name), accepting: [200, 204, 404])
    }

    /// Buckets whose conditional writes ``createDirectory(_:durability:)`` has checked.
    private var probedBuckets: Set<String> = []
    private let probeLock = NSLock()

    /// Keys have no directories, so nothing is created; but the first call for a
    /// bucket (a manager's `initialize` makes it) checks that the store honours
    /// conditional writes, which the writer lease, the metadata file's
    /// compare-and-swap and the distributed commit records rely on: a probe
    /// object `PREFIX.conditional-writes.probe.RANDOM` is created with
    /// `If-None-Match: *`, created again (must be refused), overwritten with
    /// `If-Match` on a wrong ETag (must be refused), then deleted.
    ///
    /// Credentials that may not write (403 on the probe) skip the check: such a
    /// job only loads, and its first write would fail with its own error.
    ///
    /// - Throws: ``CheckpointError/Code/objectStore(operation:bucket:key:status:errorCode:message:)``
    ///   naming the bucket, the probe key and the condition the store ignored.
    public func createDirectory(_ directory: String, durability: Durability) throws(CheckpointError) {
        let (bucket, prefix) = try directoryLocation(directory)
        try requireConditionalWrites(bucket: bucket, prefix: prefix)
    }

    /// The conditional-write probe of ``createDirectory(_:durability:)``, once per bucket
    /// (``lockWriter(in:name:)`` relies on it too).
    private func requireConditionalWrites(bucket: String, prefix: String) throws(CheckpointError) {
        guard !probeLock.withLock({ probedBuckets.contains(bucket) }) else { return }
        let key = prefix + ".conditional-writes.probe." + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let bytes = Array("conditional write probe".utf8)
        defer { _ = try? client.send(S3Request(operation: "DeleteObject (probe)", method: .DELETE, bucket: bucket, key: key), accepting: [200, 204, 404]) }
        func unsupported(_ operation: String, _ response: S3Response, _ what: String) -> CheckpointError {
            CheckpointError(.objectStore(operation: operation, bucket: bucket, key: key, status: response.status, errorCode: response.errorCode,
                                         message: "the store ignores \(what) (no conditional writes): the writer lease, the metadata "
                                            + "file's compare-and-swap and distributed commits cannot be enforced on it"))
        }
        let created: S3Response
        do throws(CheckpointError) {
            created = try put(bytes, bucket: bucket, key: key, condition: ("if-none-match", "*"), operation: "PutObject (probe, If-None-Match)")
        } catch {
            // Read-only credentials (a job that only loads): nothing will be written, so nothing can race.
            if case let .objectStore(_, _, _, status, _, _) = error.code, status == 403 { return }
            throw error
        }
        guard created.status == 200 else {
            throw CheckpointError(.objectStore(operation: "PutObject (probe, If-None-Match)", bucket: bucket, key: key, status: created.status,
                                               errorCode: created.errorCode, message: "a new probe object could not be created"))
        }
        let again = try put(bytes, bucket: bucket, key: key, condition: ("if-none-match", "*"), operation: "PutObject (probe, If-None-Match again)")
        guard again.status == 412 || again.status == 409 else { throw unsupported("PutObject (probe, If-None-Match again)", again, "If-None-Match: *") }
        let mismatched = try put(bytes, bucket: bucket, key: key, condition: ("if-match", "\"00000000000000000000000000000000\""),
                                 operation: "PutObject (probe, If-Match)")
        guard mismatched.status == 412 || mismatched.status == 409 else { throw unsupported("PutObject (probe, If-Match)", mismatched, "If-Match") }
        probeLock.withLock { _ = probedBuckets.insert(bucket) }
    }

    /// True when the bucket can be listed.
    public func isAccessible(directory: String) -> Bool {
        guard let (bucket, prefix) = try? directoryLocation(directory) else { return false }
        let response = try? client.send(S3Request(operation: "ListObjectsV2", method: .GET, bucket: bucket, key: "",
                                                  query: [("list-type", "2"), ("max-keys", "1"), ("prefix", prefix)]))
        return response != nil
    }

    // MARK: Small files

    /// One `PUT` (atomic on S3).
    public func writeFile(_ bytes: [UInt8], to path: String, durability: Durability) throws(CheckpointError) {
        let (bucket, key) = try objectLocation(path)
        try put(bytes, bucket: bucket, key: key, condition: nil, operation: "PutObject")
    }

    @discardableResult
    private func put(_ bytes: [UInt8], bucket: String, key: String, condition: (String, String)?, operation: String) throws(CheckpointError) -> S3Response {
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        var headers = [("x-amz-checksum-crc32c", S3MultipartSink.checksumHeader(buffer))]
        if let condition { headers.append(condition) }
        return try client.send(S3Request(operation: operation, method: .PUT, bucket: bucket, key: key, headers: headers,
                                         body: buffer, payloadHash: S3Signer.hexSHA256(bytes)),
                               accepting: condition == nil ? nil : [200, 409, 412])
    }

    public func readFile(_ path: String, limit: Int) throws(CheckpointError) -> [UInt8]? {
        let (bucket, key) = try objectLocation(path)
        return try get(bucket: bucket, key: key, limit: limit, path: path)?.bytes
    }

    private func get(bucket: String, key: String, limit: Int, path: String) throws(CheckpointError) -> (bytes: [UInt8], eTag: String)? {
        let request = S3Request(operation: "GetObject", method: .GET, bucket: bucket, key: key)
        let response: S3Response
        do throws(CheckpointError) {
            response = try client.send(request, accepting: [200, 404], bodyLimit: max(limit, 0) + 1)
        } catch {
            // The body limit was exceeded: say so as a local read would.
            if case let .objectStore(_, _, _, status, _, _) = error.code, status == 0, error.description.contains("BodyTooLarge") {
                throw CheckpointError(.limitExceeded(what: "file size", limit: UInt64(limit), actual: UInt64(limit) + 1), path: path)
            }
            throw error
        }
        if response.status == 404 { return nil }
        guard response.body.readableBytes <= limit else {
            throw CheckpointError(.limitExceeded(what: "file size", limit: UInt64(limit), actual: UInt64(response.body.readableBytes)), path: path)
        }
        return (response.body.bytes, response.eTag ?? "")
    }

    /// A compare-and-swap loop: `GET` (content and ETag), `transform`, `PUT`
    /// with `If-Match: ETAG` (or `If-None-Match: *` when there was no file);
    /// a 412 or 409 (someone else wrote in between) starts again, up to 100 times.
    public func updateFile(_ path: String, limit: Int, durability: Durability,
                           _ transform: ([UInt8]?) throws(CheckpointError) -> [UInt8]) throws(CheckpointError) -> [UInt8] {
        let (bucket, key) = try objectLocation(path)
        for attempt in 0..<100 {
            let current = try get(bucket: bucket, key: key, limit: limit, path: path)
            let updated = try transform(current?.bytes)
            let condition = current.map { ("if-match", $0.eTag) } ?? ("if-none-match", "*")
            let response = try put(updated, bucket: bucket, key: key, condition: condition, operation: "PutObject (conditional update)")
            if response.status == 200 { return updated }
            Thread.sleep(forTimeInterval: client.configuration.retry.delay(beforeRetry: min(attempt, 6)))
        }
        throw CheckpointError(.objectStore(operation: "PutObject (conditional update)", bucket: bucket, key: key, status: 412,
                                           errorCode: "PreconditionFailed", message: "gave up after 100 concurrent updates"))
    }

    /// `PUT` with `If-None-Match: *`: 200 → true, 412 (or 409, a concurrent conditional write) → false.
    public func createFileIfAbsent(_ bytes: [UInt8], at path: String, durability: Durability) throws(CheckpointError) -> Bool {
        let (bucket, key) = try objectLocation(path)
        let response = try put(bytes, bucket: bucket, key: key, condition: ("if-none-match", "*"), operation: "PutObject (create if absent)")
        if response.status == 200 { return true }
        // A retried create may meet its own earlier attempt, whose response was lost: the object holds these very bytes then.
        if response.attempts > 1, let current = (try? get(bucket: bucket, key: key, limit: bytes.count, path: path)) ?? nil, current.bytes == bytes { return true }
        return false
    }

    // MARK: Listing and cleanup

    /// `ListObjectsV2` with delimiter `/` over every continuation page: the
    /// names of the objects directly under the prefix.
    public func listFiles(in directory: String) -> [String] {
        (try? list(directory)) ?? []
    }

    /// The names directly under `directory`, every page (throws on errors, unlike ``listFiles(in:)``).
    public func list(_ directory: String) throws(CheckpointError) -> [String] {
        let (bucket, prefix) = try directoryLocation(directory)
        var names: [String] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", prefix), ("delimiter", "/")]
            if let token { query.append(("continuation-token", token)) }
            let response = try client.send(S3Request(operation: "ListObjectsV2", method: .GET, bucket: bucket, key: "", query: query))
            let text = response.bodyText
            for contents in S3XML.blocks("Contents", in: text) {
                if let key = S3XML.value("Key", in: contents), key.hasPrefix(prefix), key.count > prefix.count {
                    names.append(String(key.dropFirst(prefix.count)))
                }
            }
            token = S3XML.value("IsTruncated", in: text) == "true" ? S3XML.value("NextContinuationToken", in: text) : nil
        } while token != nil
        return names
    }

    /// Aborts the multipart uploads under `directory` whose keys start with
    /// `targetPrefix` (`ListMultipartUploads`, every page), and returns their names.
    /// Call it while holding the writer lock of those names, as the managers do at
    /// `initialize`: an upload of a live writer of the same names would be aborted too.
    public func removeAbandonedWrites(in directory: String, targetPrefix: String) -> [String] {
        guard let (bucket, prefix) = try? directoryLocation(directory) else { return [] }
        var removed: [String] = []
        var keyMarker: String?, uploadMarker: String?
        repeat {
            var query = [("uploads", ""), ("prefix", prefix + targetPrefix)]
            if let keyMarker { query.append(("key-marker", keyMarker)) }
            if let uploadMarker { query.append(("upload-id-marker", uploadMarker)) }
            guard let response = try? client.send(S3Request(operation: "ListMultipartUploads", method: .GET, bucket: bucket, key: "", query: query)) else { break }
            let text = response.bodyText
            for upload in S3XML.blocks("Upload", in: text) {
                guard let key = S3XML.value("Key", in: upload), let id = S3XML.value("UploadId", in: upload) else { continue }
                let name = String(key.dropFirst(prefix.count))
                guard !name.contains("/") else { continue }
                if (try? client.send(S3Request(operation: "AbortMultipartUpload", method: .DELETE, bucket: bucket, key: key, query: [("uploadId", id)]),
                                     accepting: [200, 204, 404])) != nil {
                    removed.append(name)
                }
            }
            if S3XML.value("IsTruncated", in: text) == "true" {
                keyMarker = S3XML.value("NextKeyMarker", in: text)
                uploadMarker = S3XML.value("NextUploadIdMarker", in: text)
            } else {
                keyMarker = nil
            }
        } while keyMarker != nil
        return removed
    }

    /// Takes the lease object `directory/.NAME.writer.lease` (see ``S3Configuration/leaseDurationInSeconds``).
    ///
    /// - Throws: ``CheckpointError/Code/writerLocked`` when another writer holds an unexpired lease;
    ///   ``CheckpointError/Code/objectStore(operation:bucket:key:status:errorCode:message:)`` when the
    ///   store does not honour conditional writes (the probe of ``createDirectory(_:durability:)``,
    ///   made here too if it was not yet: without them the lock could not exclude anyone).
    public func lockWriter(in directory: String, name: String) throws(CheckpointError) -> AnyObject {
        let (bucket, prefix) = try directoryLocation(directory)
        try requireConditionalWrites(bucket: bucket, prefix: prefix)
        return try S3WriterLease.acquire(client: client, bucket: bucket, key: prefix + ".\(name).writer.lease",
                                         displayPath: CheckpointNaming.join(directory, name + ".*"))
    }
}

extension S3CheckpointStorage {
    /// Creates `bucket` (`CreateBucket`); a bucket this account already owns is not an error.
    public func createBucket(_ bucket: String) throws(CheckpointError) {
        var body: ByteBuffer?
        var hash = S3Signer.emptyPayloadHash
        if configuration.region != "us-east-1" {
            let xml = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>"
            body = ByteBuffer(string: xml)
            hash = S3Signer.hexSHA256(Array(xml.utf8))
        }
        let request = S3Request(operation: "CreateBucket", method: .PUT, bucket: bucket, key: "", body: body, payloadHash: hash)
        let response = try client.send(request, accepting: [200, 409])
        if response.status == 409 && response.errorCode != "BucketAlreadyOwnedByYou" { throw client.error(request, response) }
    }
}

// MARK: Whole files

extension S3CheckpointStorage {
    /// Uploads the local file `localPath` to `path` (`s3://BUCKET/KEY`): one
    /// `PUT` below a part, else a multipart upload (parallel parts, each with its
    /// CRC32C) that is completed only after the last byte, so the object appears
    /// whole or not at all; on any error the upload is aborted.
    ///
    /// - Parameter progress: called with (bytes sent to the upload, file size).
    public func upload(fileAt localPath: String, to path: String, progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) {
        let (bucket, key) = try objectLocation(path)
        let size = ((try? FileManager.default.attributesOfItem(atPath: localPath)[.size]) as? Int) ?? 0
        let sink = S3MultipartSink(client: client, bucket: bucket, key: key)
        do throws(CheckpointError) {
            guard let handle = FileHandle(forReadingAtPath: localPath) else { throw CheckpointError(.system(call: "open", errno: 2), path: localPath) }
            defer { try? handle.close() }
            var offset = 0
            while true {
                let data: Data
                do { data = try handle.read(upToCount: 8 << 20) ?? Data() } catch { throw CheckpointError(.system(call: "read", errno: 5), path: localPath) }
                if data.isEmpty { break }
                try typedThrows { try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in try sink.append([bytes], at: offset) } }
                offset += data.count
                progress?(offset, max(size, offset))
            }
            try sink.commit()
        } catch {
            sink.abort()
            throw error
        }
    }

    /// Downloads `path` (`s3://BUCKET/KEY`) into a new local file `localPath`
    /// with parallel ranged `GET`s pinned to the object's ETag.
    ///
    /// - Parameter progress: called with (bytes written, object size).
    public func download(_ path: String, to localPath: String, progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) {
        let (bucket, key) = try objectLocation(path)
        let source = try S3ObjectSource(client: client, bucket: bucket, key: key)
        try S3CheckpointStorage.download(source, to: localPath, progress: progress)
    }

    /// True when an object exists at `path`.
    public func objectExists(_ path: String) throws(CheckpointError) -> Bool {
        let (bucket, key) = try objectLocation(path)
        return try client.send(S3Request(operation: "HeadObject", method: .HEAD, bucket: bucket, key: key), accepting: [200, 404]).status == 200
    }
}

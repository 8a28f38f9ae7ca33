import BlobCodec
import CheckpointIO
import Dispatch
import Foundation
import NIOCore

/// A ``ContainerByteSink`` that streams a file into one S3 object: a single
/// `PUT` when the whole file fits in one part, else a multipart upload whose
/// parts go out concurrently while the writer produces the next.
///
/// Memory: at most ``S3Configuration/uploadConcurrency`` parts in flight plus
/// the one being filled (``append(_:at:)`` blocks while every slot is busy).
/// A part's buffer is filled again once its upload has finished, so a save
/// touches fresh memory for only those parts: page faults and the kernel's
/// zeroing of fresh pages were a third of a 1 GiB save's CPU time before.
/// Every part carries `x-amz-checksum-crc32c`. ``commit()`` is
/// `CompleteMultipartUpload` (the object appears whole or not at all); any
/// error and ``abort()`` call `AbortMultipartUpload`.
public final class S3MultipartSink: ContainerByteSink, @unchecked Sendable {
    let client: S3Client
    public let bucket: String
    public let key: String
    private let slots: DispatchSemaphore
    private let group = DispatchGroup()
    private let lock = NSLock()
    private var current: ByteBuffer
    private var uploadID: String?
    private var partCount = 0
    private var completedParts: [Int: (eTag: String, crc: String)] = [:]
    /// Buffers of parts whose upload has finished, emptied, for the next parts.
    private var spareBuffers: [ByteBuffer] = []
    private var failure: CheckpointError?
    private var written = 0
    private var ended = false

    init(client: S3Client, bucket: String, key: String) {
        self.client = client
        self.bucket = bucket
        self.key = key
        self.slots = DispatchSemaphore(value: client.configuration.uploadConcurrency)
        self.current = ByteBufferAllocator().buffer(capacity: 0)
    }

    deinit { if !ended { abort() } }

    /// The size of part `number` (1-based): the configured size, doubled after every
    /// 1,000 parts, so 10,000 parts of a 16 MiB start hold more than 16 TiB.
    func partSize(_ number: Int) -> Int {
        client.configuration.partSizeInBytes << min((number - 1) / 1000, 12)
    }

    /// The bytes written so far.
    public var bytesWritten: Int { written }

    public func append(_ segments: [UnsafeRawBufferPointer], at offset: Int) throws(CheckpointError) {
        precondition(offset == written, "S3MultipartSink takes bytes in file order (got offset \(offset), expected \(written))")
        if let failure = lock.withLock({ failure }) { throw failure }
        for segment in segments {
            var rest = segment
            while !rest.isEmpty {
                let size = partSize(partCount + 1)
                if current.capacity == 0 { current = takeBuffer(capacity: size) }
                let n = min(rest.count, size - current.readableBytes)
                current.writeBytes(UnsafeRawBufferPointer(rebasing: rest[..<n]))
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
                written += n
                if current.readableBytes == size { try ship(last: false) }
            }
        }
    }

    /// A spare buffer of at least `capacity` bytes (a finished part's), else a new one.
    /// (`clear()` keeps the storage when nothing else holds it, else it allocates anew.)
    private func takeBuffer(capacity: Int) -> ByteBuffer {
        if var spare = lock.withLock({ spareBuffers.popLast() }), spare.capacity >= capacity {
            let storage = spare.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
            spare.clear()
            if spare.withVeryUnsafeBytes({ UInt(bitPattern: $0.baseAddress) }) != storage { buffersAllocated += 1 }
            return spare
        }
        buffersAllocated += 1
        return ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Part buffers allocated so far, new or anew (a spare that something still
    /// held): at most the parts in flight plus one or two once parts are reused.
    private(set) var buffersAllocated = 0

    /// A part's body, handed to its upload and taken back when that finishes, so
    /// that the spare list then holds the only reference to its storage.
    private final class PartBody: @unchecked Sendable {
        var buffer: ByteBuffer?
        init(_ buffer: ByteBuffer) { self.buffer = buffer }
    }

    /// Starts the upload of the filled part on a thread of its own (blocking while every slot is busy).
    private func ship(last: Bool) throws(CheckpointError) {
        if uploadID == nil {
            let response = try client.send(S3Request(operation: "CreateMultipartUpload", method: .POST, bucket: bucket, key: key,
                                                     query: [("uploads", "")], headers: [("x-amz-checksum-algorithm", "CRC32C")]))
            guard let id = S3XML.value("UploadId", in: response.bodyText) else {
                throw CheckpointError(.objectStore(operation: "CreateMultipartUpload", bucket: bucket, key: key, status: response.status,
                                                   errorCode: "", message: "no UploadId in the response"))
            }
            uploadID = id
        }
        partCount += 1
        guard partCount <= S3Configuration.maximumPartCount else {
            throw CheckpointError(.limitExceeded(what: "multipart upload parts", limit: UInt64(S3Configuration.maximumPartCount), actual: UInt64(partCount)),
                                  path: "s3://\(bucket)/\(key)")
        }
        let number = partCount, part = PartBody(current), id = uploadID!
        current = ByteBufferAllocator().buffer(capacity: 0)
        slots.wait()
        if let failure = lock.withLock({ failure }) {
            slots.signal()
            throw failure
        }
        group.enter()
        DispatchQueue.global().async { [self] in
            defer {
                // For a later part (written to in place once nothing else holds it).
                lock.withLock {
                    spareBuffers.append(part.buffer!)
                    part.buffer = nil
                }
                slots.signal()
                group.leave()
            }
            let body = part.buffer!
            let crc = S3MultipartSink.checksumHeader(body)
            do throws(CheckpointError) {
                let response = try client.send(S3Request(operation: "UploadPart \(number)", method: .PUT, bucket: bucket, key: key,
                                                         query: [("partNumber", String(number)), ("uploadId", id)],
                                                         headers: [("x-amz-checksum-crc32c", crc)], body: body, payloadHash: S3Signer.unsignedPayload))
                guard let eTag = response.eTag else {
                    throw CheckpointError(.objectStore(operation: "UploadPart \(number)", bucket: bucket, key: key, status: response.status,
                                                       errorCode: "", message: "no ETag in the response"))
                }
                lock.withLock { completedParts[number] = (eTag, crc) }
            } catch {
                lock.withLock { if failure == nil { failure = error } }
            }
        }
    }

    /// The base64 of the big-endian CRC32C of `body`, as `x-amz-checksum-crc32c` wants it.
    static func checksumHeader(_ body: ByteBuffer) -> String {
        let crc = body.withUnsafeReadableBytes { CRC32C.checksum($0) }
        return Data([UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]).base64EncodedString()
    }

    public func commit() throws(CheckpointError) {
        precondition(!ended, "S3MultipartSink committed or aborted twice")
        if uploadID == nil {
            // Smaller than one part: one PUT.
            let body = current
            try client.send(S3Request(operation: "PutObject", method: .PUT, bucket: bucket, key: key,
                                      headers: [("x-amz-checksum-crc32c", S3MultipartSink.checksumHeader(body))],
                                      body: body, payloadHash: S3Signer.unsignedPayload))
            ended = true
            return
        }
        if current.readableBytes > 0 { try ship(last: true) }
        group.wait()
        lock.withLock { spareBuffers.removeAll() }  // no more parts: their memory may go
        if let failure = lock.withLock({ failure }) { throw failure }
        let parts = lock.withLock { completedParts }
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for number in 1...partCount {
            guard let part = parts[number] else {
                throw CheckpointError(.objectStore(operation: "CompleteMultipartUpload", bucket: bucket, key: key, status: 0, errorCode: "", message: "part \(number) missing"))
            }
            xml += "<Part><ETag>\(S3XML.escape(part.eTag))</ETag><PartNumber>\(number)</PartNumber><ChecksumCRC32C>\(part.crc)</ChecksumCRC32C></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let request = S3Request(operation: "CompleteMultipartUpload", method: .POST, bucket: bucket, key: key, query: [("uploadId", uploadID!)],
                                headers: [("content-type", "application/xml")], body: ByteBuffer(string: xml),
                                payloadHash: S3Signer.hexSHA256(Array(xml.utf8)))
        // A lost response followed by a retry meets an upload already completed (NoSuchUpload):
        // then the object must be there with this many parts and this size.
        // S3 may also answer 200 with an <Error> body, which is retried.
        for attempt in 0..<client.configuration.retry.maximumAttempts {
            let response = try client.send(request, accepting: [200, 404])
            if response.status == 404 {
                if response.errorCode == "NoSuchUpload", try completedObjectMatches() {
                    ended = true
                    return
                }
                throw client.error(request, response)
            }
            if S3XML.blocks("Error", in: response.bodyText).isEmpty {
                ended = true
                return
            }
            Thread.sleep(forTimeInterval: client.configuration.retry.delay(beforeRetry: attempt))
        }
        throw CheckpointError(.objectStore(operation: "CompleteMultipartUpload", bucket: bucket, key: key, status: 200, errorCode: "InternalError",
                                           message: "the store kept answering with an error"))
    }

    /// True when the object at the key is the one this upload completed: its ETag ends in `-PARTS` and its size is what was written.
    private func completedObjectMatches() throws(CheckpointError) -> Bool {
        let head = try client.send(S3Request(operation: "HeadObject", method: .HEAD, bucket: bucket, key: key), accepting: [200, 404])
        guard head.status == 200, let eTag = head.eTag?.replacingOccurrences(of: "\"", with: "") else { return false }
        return eTag.hasSuffix("-\(partCount)") && head.headers.first(name: "content-length") == String(written)
    }

    public func abort() {
        guard !ended else { return }
        ended = true
        group.wait()
        lock.withLock { spareBuffers.removeAll() }
        guard let uploadID else { return }
        _ = try? client.send(S3Request(operation: "AbortMultipartUpload", method: .DELETE, bucket: bucket, key: key, query: [("uploadId", uploadID)]),
                             accepting: [200, 204, 404])
    }
}

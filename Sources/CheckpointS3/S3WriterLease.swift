import BlobCodec
import Dispatch
import Foundation
import NIOCore

/// The writer lock of a checkpoint name on S3: a small lease object
/// `PREFIX/.NAME.writer.lease` holding its owner and expiry (JSON), created
/// with `If-None-Match: *`, renewed every third of its duration with
/// `If-Match` on its ETag, taken over (again with `If-Match`) only after it
/// has expired, and deleted when the token is released.
final class S3WriterLease: @unchecked Sendable {
    let client: S3Client
    let bucket: String
    let key: String
    let owner: String
    private let lock = NSLock()
    private var eTag: String
    private var timer: DispatchSourceTimer?
    private(set) var lost = false

    private init(client: S3Client, bucket: String, key: String, owner: String, eTag: String) {
        self.client = client
        self.bucket = bucket
        self.key = key
        self.owner = owner
        self.eTag = eTag
    }

    deinit { release() }

    static func body(owner: String, expiresAt: Double) -> ByteBuffer {
        ByteBuffer(string: "{\"owner\":\"\(owner)\",\"expiresAt\":\(String(format: "%.3f", expiresAt))}\n")
    }

    /// The expiry (seconds since 1970) in a lease body, or nil.
    static func expiry(of text: Substring) -> Double? {
        guard let range = text.range(of: "\"expiresAt\":") else { return nil }
        return Double(text[range.upperBound...].prefix(while: { $0.isNumber || $0 == "." }))
    }

    /// Takes the lease or throws ``CheckpointError/Code/writerLocked``. The store's
    /// conditional writes were checked by the caller (``S3CheckpointStorage/lockWriter(in:name:)``).
    static func acquire(client: S3Client, bucket: String, key: String, displayPath: String) throws(CheckpointError) -> S3WriterLease {
        let duration = client.configuration.leaseDurationInSeconds
        var random = SystemRandomNumberGenerator()
        let owner = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(String(random.next(), radix: 16))"
        func put(_ condition: (String, String)) throws(CheckpointError) -> S3Response {
            let body = S3WriterLease.body(owner: owner, expiresAt: Date().timeIntervalSince1970 + duration)
            return try client.send(S3Request(operation: "PutObject (writer lease)", method: .PUT, bucket: bucket, key: key,
                                             headers: [condition, ("content-type", "application/json")], body: body,
                                             payloadHash: S3Signer.hexSHA256(body.bytes)),
                                   accepting: [200, 409, 412])
        }
        var created = try put(("if-none-match", "*"))
        if created.status != 200 {
            // Someone holds it: take it over only if it has expired.
            let current = try client.send(S3Request(operation: "GetObject (writer lease)", method: .GET, bucket: bucket, key: key), accepting: [200, 404])
            guard current.status == 200, let expiresAt = expiry(of: current.bodyText), let tag = current.eTag else {
                throw CheckpointError(.writerLocked, path: displayPath)
            }
            guard expiresAt < Date().timeIntervalSince1970 else { throw CheckpointError(.writerLocked, path: displayPath) }
            created = try put(("if-match", tag))
            guard created.status == 200 else { throw CheckpointError(.writerLocked, path: displayPath) }
        }
        guard let tag = created.eTag else {
            throw CheckpointError(.objectStore(operation: "PutObject (writer lease)", bucket: bucket, key: key, status: created.status, errorCode: "", message: "no ETag"))
        }
        let lease = S3WriterLease(client: client, bucket: bucket, key: key, owner: owner, eTag: tag)
        lease.startRenewing(every: duration / 3)
        return lease
    }

    private func startRenewing(every interval: Double) {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "checkpoint.s3.lease"))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in self?.renew() }
        self.timer = timer
        timer.resume()
    }

    /// Extends the lease with `If-Match` on its ETag; a 412 means it was taken over (expired while this process stalled).
    func renew() {
        let tag = lock.withLock { eTag }
        let body = S3WriterLease.body(owner: owner, expiresAt: Date().timeIntervalSince1970 + client.configuration.leaseDurationInSeconds)
        guard let response = try? client.send(S3Request(operation: "PutObject (writer lease renewal)", method: .PUT, bucket: bucket, key: key,
                                                         headers: [("if-match", tag), ("content-type", "application/json")], body: body,
                                                         payloadHash: S3Signer.hexSHA256(body.bytes)),
                                              accepting: [200, 409, 412]) else { return }
        lock.withLock {
            if response.status == 200, let newTag = response.eTag {
                eTag = newTag
            } else if response.status == 412 {
                lost = true
                timer?.cancel()
            }
        }
    }

    /// Stops renewing and deletes the lease if it is still this owner's.
    func release() {
        let (timer, wasLost) = lock.withLock { () -> (DispatchSourceTimer?, Bool) in
            let t = self.timer
            self.timer = nil
            return (t, lost)
        }
        guard let timer else { return }
        timer.cancel()
        guard !wasLost else { return }
        if let current = try? client.send(S3Request(operation: "GetObject (writer lease)", method: .GET, bucket: bucket, key: key), accepting: [200, 404]),
           current.status == 200, current.bodyText.contains("\"owner\":\"\(owner)\"") {
            _ = try? client.send(S3Request(operation: "DeleteObject (writer lease)", method: .DELETE, bucket: bucket, key: key), accepting: [200, 204, 404])
        }
    }
}

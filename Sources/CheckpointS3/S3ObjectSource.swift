import BlobCodec
import CheckpointIO
import Foundation
import NIOCore

/// A ``ContainerByteSource`` over one S3 object: ranged `GET`s, pinned to the
/// object's ETag (`If-Match`), so a replaced object fails the read instead of
/// mixing two versions.
///
/// Opening costs one `GET` of the object's last 1 MiB (its size comes with it):
/// a container's trailer and usually its index are served from that tail. A
/// safetensors file is opened with its first 1 MiB instead (``Prefetch/head``),
/// which holds the header length and usually the whole header.
/// A large read is split into ``S3Configuration/rangeSizeInBytes`` ranges fetched
/// ``S3Configuration/downloadConcurrency`` at a time, each straight into its
/// slice of the destination.
public final class S3ObjectSource: ContainerByteSource, @unchecked Sendable {
    let client: S3Client
    public let bucket: String
    public let key: String
    public let name: String
    public let sizeInBytes: Int
    /// The object's ETag when opened.
    public let eTag: String
    /// The bytes fetched when opening, and where they start in the object.
    private let prefetched: [UInt8]
    private let prefetchedOffset: Int

    static let prefetchSize = 1 << 20

    /// Which end of the object opening fetches (``S3ObjectSource/prefetchSize`` bytes of it).
    enum Prefetch {
        /// The last bytes: a container's trailer and index.
        case tail
        /// The first bytes: a safetensors header.
        case head
    }

    /// Fetches one end of the object (and so its size and ETag).
    ///
    /// - Throws: ``CheckpointError/Code/system(call:errno:)`` with ENOENT when the
    ///   object does not exist (as a missing local file does); ``CheckpointError/Code/objectStore(operation:bucket:key:status:errorCode:message:)`` otherwise.
    init(client: S3Client, bucket: String, key: String, prefetch: Prefetch = .tail) throws(CheckpointError) {
        self.client = client
        self.bucket = bucket
        self.key = key
        self.name = "s3://\(bucket)/\(key)"
        let operation = prefetch == .tail ? "GetObject (tail)" : "GetObject (head)"
        let range = prefetch == .tail ? "bytes=-\(S3ObjectSource.prefetchSize)" : "bytes=0-\(S3ObjectSource.prefetchSize - 1)"
        let request = S3Request(operation: operation, method: .GET, bucket: bucket, key: key, headers: [("range", range)])
        let response = try client.send(request, accepting: [200, 206, 404, 416], bodyLimit: S3ObjectSource.prefetchSize)
        switch response.status {
        case 404:
            throw CheckpointError(.system(call: "GetObject", errno: 2), path: name)
        case 416:
            // An empty object: no range is satisfiable.
            sizeInBytes = 0
            prefetched = []
            prefetchedOffset = 0
            eTag = response.eTag ?? ""
            return
        default:
            break
        }
        let bytes = response.body.bytes
        if response.status == 206 {
            // `bytes FIRST-LAST/TOTAL`: the server may serve less than asked for; the prefetch
            // is whatever range it names, as long as the body is exactly that range.
            guard let range = response.headers.first(name: "content-range").flatMap(S3ObjectSource.parseContentRange),
                  range.last - range.first + 1 == bytes.count, range.last < range.total else {
                throw CheckpointError(.objectStore(operation: operation, bucket: bucket, key: key, status: 206, errorCode: "",
                                                   message: "\(bytes.count) bytes with Content-Range '\(response.headers.first(name: "content-range") ?? "")'"))
            }
            sizeInBytes = range.total
            prefetchedOffset = range.first
        } else {
            sizeInBytes = bytes.count  // 200: the whole object (within the body limit)
            prefetchedOffset = 0
        }
        prefetched = bytes
        eTag = response.eTag ?? ""
    }

    /// `bytes FIRST-LAST/TOTAL` (RFC 9110 §14.4) as numbers; nil for anything else.
    static func parseContentRange(_ value: String) -> (first: Int, last: Int, total: Int)? {
        guard value.hasPrefix("bytes "), let dash = value.firstIndex(of: "-"), let slash = value.lastIndex(of: "/"), dash < slash,
              let first = Int(value[value.index(value.startIndex, offsetBy: 6)..<dash]),
              let last = Int(value[value.index(after: dash)..<slash]),
              let total = Int(value[value.index(after: slash)...]), first >= 0, last >= first else { return nil }
        return (first, last, total)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointError) {
        _ = try read(into: buffer, at: offset, checksumBlockSize: nil)
    }

    /// Reads with ranged `GET`s and checksums every `blockSize` block while
    /// copying each piece of the responses into `buffer` (no second pass).
    public func readChecksummed(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, blockSize: Int) throws(CheckpointError) -> [UInt32] {
        precondition(blockSize > 0, "blockSize must be positive")
        var assembler = BlockChecksumAssembler(blockSize: blockSize)
        assembler.add(try read(into: buffer, at: offset, checksumBlockSize: blockSize))
        guard let crcs = assembler.blockChecksums(count: buffer.count) else {
            throw CheckpointError(.invalidState(reason: "the checksummed pieces of \(name) bytes \(offset)..<\(offset + buffer.count) do not cover them"))
        }
        return crcs
    }

    /// `buffer.count` bytes at `offset`, split into ``S3Configuration/rangeSizeInBytes``
    /// ranges fetched ``S3Configuration/downloadConcurrency`` at a time; with a
    /// block size, the checksummed pieces of everything read.
    private func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, checksumBlockSize: Int?) throws(CheckpointError) -> [BlockChecksumAssembler.Piece] {
        guard buffer.count > 0 else { return [] }
        if offset >= prefetchedOffset, offset + buffer.count <= prefetchedOffset + prefetched.count {
            prefetched.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[(offset - prefetchedOffset)..<(offset - prefetchedOffset + buffer.count)]))
            }
            return checksumBlockSize.map { BlockChecksumAssembler.pieces(of: UnsafeRawBufferPointer(buffer), at: 0, blockSize: $0) } ?? []
        }
        let rangeSize = client.configuration.rangeSizeInBytes
        let count = (buffer.count + rangeSize - 1) / rangeSize
        @Sendable func checksums(_ start: Int) -> S3Client.BlockChecksums? { checksumBlockSize.map { S3Client.BlockChecksums(blockSize: $0, origin: start) } }
        if count == 1 {
            return try readRange(into: buffer, at: offset, checksums: checksums(0))
        }
        let lock = NSLock()
        nonisolated(unsafe) var pieces: [BlockChecksumAssembler.Piece] = []
        nonisolated(unsafe) let destination = buffer
        try BlockingTasks.run(count: count, limit: client.configuration.downloadConcurrency) { [self] index throws(CheckpointError) in
            let start = index * rangeSize
            let part = UnsafeMutableRawBufferPointer(rebasing: destination[start..<min(destination.count, start + rangeSize)])
            let checked = try readRange(into: part, at: offset + start, checksums: checksums(start))
            lock.withLock { pieces += checked }
        }
        return pieces
    }

    /// One ranged GET into `buffer` (retried by the client when cut short).
    private func readRange(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, checksums: S3Client.BlockChecksums?) throws(CheckpointError) -> [BlockChecksumAssembler.Piece] {
        var headers = [("range", "bytes=\(offset)-\(offset + buffer.count - 1)")]
        if !eTag.isEmpty { headers.append(("if-match", eTag)) }
        let request = S3Request(operation: "GetObject (bytes \(offset)-\(offset + buffer.count - 1))", method: .GET, bucket: bucket, key: key, headers: headers)
        let response = try client.send(request, into: buffer, checksums: checksums)
        guard response.status == 206 || (response.status == 200 && offset == 0 && buffer.count == sizeInBytes) else {
            throw client.error(request, response)
        }
        return response.pieces
    }
}

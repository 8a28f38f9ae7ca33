/// The one error type of the checkpoint engine.
///
/// Every failure that bad input, a damaged file or the operating system can
/// cause is a `CheckpointError`: a ``Code`` that says precisely what is wrong
/// (which chunk, expected vs actual), plus the context a user needs to act on
/// it — the blob's name, the file and the byte offset — filled in by whichever
/// layer knows them. Programmer errors (misuse of an API) are preconditions,
/// not thrown errors.
public struct CheckpointError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: Sendable, Equatable {
        /// Fewer bytes than the structure needs: `needed` bytes, `available` present.
        case truncated(what: String, needed: UInt64, available: UInt64)
        /// A magic number did not match.
        case badMagic(what: String, expected: UInt32, actual: UInt32)
        /// A structure's version is newer than this reader understands.
        case unsupportedVersion(what: String, version: UInt32)
        /// The CRC32C of a header did not match.
        case headerChecksumMismatch(expected: UInt32, actual: UInt32)
        /// The CRC32C of one stored chunk did not match.
        case chunkChecksumMismatch(chunk: Int, expected: UInt32, actual: UInt32)
        /// The CRC32C of the decoded (raw) bytes of a whole blob did not match.
        case rawChecksumMismatch(expected: UInt32, actual: UInt32)
        /// A chunk decompressed to a different number of bytes than declared, or failed to decompress.
        case chunkSizeMismatch(chunk: Int, expected: UInt64, actual: UInt64)
        /// A chunk's compressed stream is malformed (the decompressor rejected it).
        case corruptChunk(chunk: Int, reason: String)
        /// A codec id this reader does not know.
        case unknownCodec(UInt8)
        /// A filter id this reader does not know.
        case unknownFilter(UInt8)
        /// A dtype id or name this reader does not know.
        case unknownDType(String)
        /// A field holds a value outside its legal range, or contradicts another field.
        case invalidField(field: String, reason: String)
        /// A shape is invalid (negative dimension, rank too large, element count overflows).
        case invalidShape(reason: String)
        /// The byte count of a buffer disagrees with the shape and dtype.
        case sizeMismatch(what: String, expected: UInt64, actual: UInt64)
        /// A configured limit was exceeded (e.g. a blob larger than the decode cap).
        case limitExceeded(what: String, limit: UInt64, actual: UInt64)
        /// A compressor failed on valid input (out of memory inside the library).
        case compressionFailed(chunk: Int, reason: String)
        /// A system call failed with this errno.
        case system(call: String, errno: Int32)
        /// Another writer holds the lock on this file (or checkpoint prefix).
        case writerLocked
        /// No blob of this name.
        case blobNotFound(String)
        /// The file has no valid trailer at its end (a crash while writing, or a truncated copy).
        case tornFile(reason: String)
        /// A record kind this reader cannot read.
        case unsupportedRecordKind(UInt16)
        /// The blob cannot be viewed in place (it is compressed or filtered).
        case notViewable(reason: String)
        /// No complete checkpoint exists for this epoch (missing, temporary or torn).
        case checkpointNotFound(epoch: Int)
        /// The call is not allowed in the object's current state (a manager not
        /// initialized, a different node list, a save still in flight…).
        case invalidState(reason: String)
        /// The path names something other than a regular file (a FIFO, a device,
        /// a socket, a directory where a file is expected): refused, since reading
        /// it could block forever or never end.
        case notRegularFile(kind: String)
        /// The blob is a reference (an incremental checkpoint) to the file
        /// `target`, which is missing, damaged, or no longer holds the blob
        /// the reference describes. The error's path is the referencing file.
        case referenceTargetInvalid(target: String, reason: String)
        /// An object store refused or failed a request: the operation (`PutObject`,
        /// `UploadPart`…), the bucket and key, the HTTP status (0 when no response
        /// came) and the store's error code (`NoSuchKey`, `SlowDown`…; empty when none).
        case objectStore(operation: String, bucket: String, key: String, status: Int, errorCode: String, message: String)
    }

    /// What went wrong.
    public var code: Code
    /// The blob concerned, when known.
    public var blobName: String?
    /// The file concerned, when known.
    public var path: String?
    /// The byte offset in the file (or in the buffer being decoded) where the problem lies, when known.
    public var offset: UInt64?

    /// An error with its code and where it happened: the blob, the file and the byte offset when known.
    public init(_ code: Code, blobName: String? = nil, path: String? = nil, offset: UInt64? = nil) {
        self.code = code
        self.blobName = blobName
        self.path = path
        self.offset = offset
    }

    /// Returns a copy with the missing context filled in (context already present is kept).
    public func adding(blobName: String? = nil, path: String? = nil, offset: UInt64? = nil) -> CheckpointError {
        var copy = self
        copy.blobName = self.blobName ?? blobName
        copy.path = self.path ?? path
        copy.offset = self.offset ?? offset
        return copy
    }

    /// One line: the code's message, then the blob, the file and the offset when known.
    public var description: String {
        var parts: [String] = []
        if let path { parts.append(path) }
        if let blobName { parts.append("blob '\(blobName)'") }
        if let offset { parts.append("offset \(offset)") }
        let prefix = parts.isEmpty ? "" : parts.joined(separator: ", ") + ": "
        return prefix + code.description
    }
}

extension CheckpointError.Code: CustomStringConvertible {
    /// The code's message, e.g. the expected and actual CRC of a checksum mismatch.
    public var description: String {
        func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16, uppercase: true) }
        switch self {
        case let .truncated(what, needed, available):
            return "truncated \(what): needs \(needed) bytes, \(available) available"
        case let .badMagic(what, expected, actual):
            return "bad magic in \(what): expected \(hex(expected)), found \(hex(actual))"
        case let .unsupportedVersion(what, version):
            return "unsupported \(what) version \(version)"
        case let .headerChecksumMismatch(expected, actual):
            return "header checksum mismatch: stored CRC32C \(hex(expected)), computed \(hex(actual))"
        case let .chunkChecksumMismatch(chunk, expected, actual):
            return "chunk \(chunk) checksum mismatch: stored CRC32C \(hex(expected)), computed \(hex(actual))"
        case let .rawChecksumMismatch(expected, actual):
            return "decoded data checksum mismatch: stored CRC32C \(hex(expected)), computed \(hex(actual))"
        case let .chunkSizeMismatch(chunk, expected, actual):
            return "chunk \(chunk) decoded to \(actual) bytes, expected \(expected)"
        case let .corruptChunk(chunk, reason):
            return "chunk \(chunk) is corrupt: \(reason)"
        case let .unknownCodec(id):
            return "unknown codec id \(id)"
        case let .unknownFilter(id):
            return "unknown filter id \(id)"
        case let .unknownDType(name):
            return "unknown dtype \(name)"
        case let .invalidField(field, reason):
            return "invalid \(field): \(reason)"
        case let .invalidShape(reason):
            return "invalid shape: \(reason)"
        case let .sizeMismatch(what, expected, actual):
            return "\(what) is \(actual) bytes, expected \(expected)"
        case let .limitExceeded(what, limit, actual):
            return "\(what) of \(actual) exceeds the limit of \(limit)"
        case let .compressionFailed(chunk, reason):
            return "compressing chunk \(chunk) failed: \(reason)"
        case let .system(call, errno):
            return "\(call) failed: \(errnoName(errno)) (errno \(errno))"
        case .writerLocked:
            return "another writer holds the lock"
        case let .blobNotFound(name):
            return "no blob named '\(name)'"
        case let .tornFile(reason):
            return "torn file: \(reason)"
        case let .unsupportedRecordKind(kind):
            return "unsupported record kind \(kind)"
        case let .notViewable(reason):
            return "cannot view in place: \(reason)"
        case let .checkpointNotFound(epoch):
            return "no complete checkpoint for epoch \(epoch)"
        case let .invalidState(reason):
            return reason
        case let .notRegularFile(kind):
            return "not a regular file: it is \(kind)"
        case let .referenceTargetInvalid(target, reason):
            return "the blob is a reference to file \(target), which \(reason)"
        case let .objectStore(operation, bucket, key, status, errorCode, message):
            let what = status == 0 ? "no response" : "HTTP \(status)" + (errorCode.isEmpty ? "" : " \(errorCode)")
            return "\(operation) of s3://\(bucket)/\(key) failed: \(what)" + (message.isEmpty ? "" : ": \(message)")
        }
    }
}

/// The symbolic name of the common errno values, for messages.
func errnoName(_ code: Int32) -> String {
    let names: [Int32: String] = [
        1: "EPERM", 2: "ENOENT", 4: "EINTR", 5: "EIO", 9: "EBADF", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES",
        16: "EBUSY", 17: "EEXIST", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 24: "EMFILE", 27: "EFBIG",
        28: "ENOSPC", 30: "EROFS", 36: "ENAMETOOLONG", 122: "EDQUOT",
    ]
    return names[code] ?? "error"
}

import BlobCodec

/// A blob stored in another container file of the same checkpoint directory:
/// what a blob-reference record (FORMAT.md §4.3.1) says.
///
/// An incremental checkpoint writes a reference instead of the bytes of a
/// blob that did not change since it was last written: "blob `target.name`
/// is the blob record at `target.recordOffset` of file `fileName`, whose
/// stored bytes have CRC32C `storedCRC32C` and whose raw bytes have CRC32C
/// `target.rawCRC32C`". A reader resolves it by opening `fileName` (a file
/// name in the directory of the referencing file) and checking that the
/// record there still matches every field.
///
/// References have depth 1: ``target`` is always a stored blob (kind 1),
/// never another reference.
public struct BlobReference: Sendable, Hashable {
    /// The file holding the blob: one file name (no `/`), in the same
    /// directory (or object-key prefix) as the file holding the reference.
    public var fileName: String
    /// The blob as its own file's index describes it (name, dtype, shape,
    /// codec, sizes, raw CRC32C, record and payload offsets).
    public var target: BlobDescriptor
    /// The CRC32C of the target's stored payload (its record frame's `payload_crc32c`).
    public var storedCRC32C: UInt32

    public init(fileName: String, target: BlobDescriptor, storedCRC32C: UInt32) {
        self.fileName = fileName
        self.target = target
        self.storedCRC32C = storedCRC32C
    }

    /// Rejects a target that is not one file name: empty, `.`, `..`, or with a `/` or a NUL.
    static func validate(fileName: String) throws(CheckpointError) {
        guard !fileName.isEmpty, fileName != ".", fileName != "..", !fileName.utf8.contains(0), !fileName.contains("/"),
              fileName.utf8.count <= Int(UInt16.max)
        else {
            throw CheckpointError(.invalidField(field: "reference target", reason: "'\(fileName.prefix(80))' is not one file name in the same directory"))
        }
    }
}

/// Opens the files that blob references point at, for one referencing file.
///
/// A ``ContainerReader`` asks its resolver for a reference's target file once
/// and keeps it open for as long as the resolver lives, so the references of
/// a file into the same target cost one open. Conforming types decide where
/// the files are: ``LocalReferenceResolver`` (the directory of the
/// referencing file) or ``StorageReferenceResolver`` (a ``CheckpointStorage``,
/// for backends where files are object keys).
public protocol BlobReferenceResolving: AnyObject, Sendable {
    /// The reader of `fileName` (a name relative to the referencing file's directory).
    func openTarget(_ fileName: String) throws(CheckpointError) -> ContainerReader
    /// The full path of `fileName`, for messages.
    func targetPath(_ fileName: String) -> String
}

/// Resolves references through a ``CheckpointStorage``: the target is opened
/// with `storage.openCheckpoint(directory/fileName, format: .container)`, once.
public final class StorageReferenceResolver: BlobReferenceResolving, @unchecked Sendable {
    /// Where the target files are.
    public let storage: any CheckpointStorage
    /// The directory (or object-key prefix) of the referencing file.
    public let directory: String
    private let lock = PThreadLock()
    private var open: [String: ContainerReader] = [:]

    /// A resolver for files referencing into `directory` of `storage`.
    public init(storage: any CheckpointStorage, directory: String) {
        self.storage = storage
        self.directory = directory
    }

    public func targetPath(_ fileName: String) -> String { CheckpointNaming.join(directory, fileName) }

    public func openTarget(_ fileName: String) throws(CheckpointError) -> ContainerReader {
        // Opened under the lock: blobs read side by side that refer to one file open it once.
        try lock.locked { () throws(CheckpointError) -> ContainerReader in
            if let reader = open[fileName] { return reader }
            try BlobReference.validate(fileName: fileName)
            guard let reader = try storage.openCheckpoint(targetPath(fileName), format: .container) as? ContainerReader else {
                throw CheckpointError(.invalidField(field: "reference target", reason: "the storage did not open '\(fileName)' as a container"))
            }
            open[fileName] = reader
            return reader
        }
    }
}

/// Resolves references to files in the referencing file's directory, opened
/// with the referencing reader's options. What ``ContainerReader/open(_:options:)`` uses.
public final class LocalReferenceResolver: BlobReferenceResolving, @unchecked Sendable {
    /// The directory of the referencing file.
    public let directory: String
    let options: ReaderOptions
    private let lock = PThreadLock()
    private var open: [String: ContainerReader] = [:]

    init(directory: String, options: ReaderOptions) {
        self.directory = directory
        self.options = options
    }

    public func targetPath(_ fileName: String) -> String { CheckpointNaming.join(directory, fileName) }

    public func openTarget(_ fileName: String) throws(CheckpointError) -> ContainerReader {
        // Opened under the lock: blobs read side by side that refer to one file open it once.
        try lock.locked { () throws(CheckpointError) -> ContainerReader in
            if let reader = open[fileName] { return reader }
            try BlobReference.validate(fileName: fileName)
            let reader = try ContainerReader.open(targetPath(fileName), options: options, resolvingReferences: false)
            guard reader.tornBytes == 0 else {
                throw CheckpointError(.tornFile(reason: "\(reader.tornBytes) bytes after the last commit"), path: targetPath(fileName))
            }
            open[fileName] = reader
            return reader
        }
    }
}

extension ContainerLayout {
    /// The fixed part of a blob-reference record's kind header (FORMAT.md §4.3.1).
    static let referenceFixedSize = 56

    /// A blob-reference record's kind header, decoded.
    struct ReferenceHeader: Equatable {
        var fileName: String
        var target: BlobDescriptor
        var storedCRC: UInt32

        var encodedSize: Int { ContainerLayout.referenceFixedSize + 8 * target.shape.rank + target.name.utf8.count + fileName.utf8.count + 4 }

        func encoded() -> [UInt8] {
            var w = LittleEndianWriter(capacity: encodedSize)
            w.write(littleEndian: UInt64(target.recordOffset))
            w.write(littleEndian: UInt64(target.payloadOffset))
            w.write(littleEndian: UInt64(target.storedSizeInBytes))
            w.write(littleEndian: UInt64(target.rawSizeInBytes))
            w.write(littleEndian: storedCRC)
            w.write(littleEndian: target.rawCRC32C)
            w.write(littleEndian: UInt32(target.blobHeaderLength))
            w.write(littleEndian: target.dtype.rawValue)
            w.write(littleEndian: target.compression.id)
            w.write(littleEndian: UInt8(target.compression.level))
            w.write(littleEndian: target.filter.id)
            w.write(littleEndian: UInt8(target.filter.elementSize))
            w.write(littleEndian: UInt8(target.shape.rank))
            w.write(littleEndian: UInt16(target.name.utf8.count))
            w.write(littleEndian: UInt16(fileName.utf8.count))
            w.write(zeros: 2)
            for dimension in target.shape.dimensions { w.write(littleEndian: UInt64(dimension)) }
            w.write(Array(target.name.utf8))
            w.write(Array(fileName.utf8))
            w.write(littleEndian: CRC32C.checksum(w.bytes))
            return w.bytes
        }

        /// Parses and validates a reference header: CRC first, then every field
        /// (offsets and sizes < 2^63, ids known, UTF-8 names, the exact length).
        static func parse(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> ReferenceHeader {
            func bad(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "blob reference", reason: reason)) }
            guard bytes.count >= ContainerLayout.referenceFixedSize + 4 else {
                throw CheckpointError(.truncated(what: "blob reference", needed: UInt64(ContainerLayout.referenceFixedSize + 4), available: UInt64(bytes.count)))
            }
            let stored: UInt32 = bytes.load(littleEndianAt: bytes.count - 4)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count - 4)]))
            guard crc == stored else { throw CheckpointError(.headerChecksumMismatch(expected: stored, actual: crc)) }
            let values: [UInt64] = (0..<4).map { bytes.load(littleEndianAt: 8 * $0) }
            guard values.allSatisfy({ $0 <= UInt64(Int.max) }) else { throw bad("an offset or size exceeds 2^63-1") }
            let rank = Int(bytes[49])
            let nameLength = Int(bytes.load(littleEndianAt: 50) as UInt16)
            let fileLength = Int(bytes.load(littleEndianAt: 52) as UInt16)
            guard bytes.load(littleEndianAt: 54) as UInt16 == 0 else { throw bad("reserved bytes not zero") }
            guard rank <= Shape.maximumRank else { throw bad("rank \(rank)") }
            guard bytes.count == ContainerLayout.referenceFixedSize + 8 * rank + nameLength + fileLength + 4 else {
                throw bad("length \(bytes.count) disagrees with its rank and name lengths")
            }
            guard let dtype = DType(rawValue: bytes[44]) else { throw CheckpointError(.unknownDType("id \(bytes[44])")) }
            let compression = try Compression(id: bytes[45], level: Int(bytes[46]))
            let filter = try Filter(id: bytes[47], elementSize: Int(bytes[48]))
            var dimensions: [Int] = []
            for d in 0..<rank {
                let value: UInt64 = bytes.load(littleEndianAt: ContainerLayout.referenceFixedSize + 8 * d)
                guard value <= UInt64(Int.max) else { throw CheckpointError(.invalidShape(reason: "dimension \(value)")) }
                dimensions.append(Int(value))
            }
            let shape = try Shape(dimensions)
            let nameStart = ContainerLayout.referenceFixedSize + 8 * rank
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[nameStart..<(nameStart + nameLength)]), as: UTF8.self),
                  let fileName = String(validating: UnsafeRawBufferPointer(rebasing: bytes[(nameStart + nameLength)..<(nameStart + nameLength + fileLength)]), as: UTF8.self)
            else { throw bad("a name is not valid UTF-8") }
            try BlobHeader.validateName(name)
            try BlobReference.validate(fileName: fileName)
            let target = BlobDescriptor(
                name: name, dtype: dtype, shape: shape, compression: compression, filter: filter,
                rawSizeInBytes: Int(values[3]), storedSizeInBytes: Int(values[2]), rawCRC32C: bytes.load(littleEndianAt: 36),
                recordOffset: Int(values[0]), payloadOffset: Int(values[1]), blobHeaderLength: Int(bytes.load(littleEndianAt: 40) as UInt32))
            return ReferenceHeader(fileName: fileName, target: target, storedCRC: bytes.load(littleEndianAt: 32))
        }
    }
}

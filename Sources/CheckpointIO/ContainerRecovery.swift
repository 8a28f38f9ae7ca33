import BlobCodec

/// What a recovery scan found (FORMAT.md §4.8).
public struct RecoveryReport: Sendable {
    /// Live blob names after replaying every intact record in order (sorted).
    public var blobNames: [String]
    /// Intact blob records seen (including ones replaced later).
    public var blobRecords: Int
    /// Intact deletion markers seen.
    public var deletions: Int
    /// Complete trailers seen (commits).
    public var commits: Int
    /// Where the intact prefix ends: everything after it is lost.
    public var intactLength: Int
    /// The file's size when scanned.
    public var fileLength: Int
    /// Why the scan stopped before the end of the file, if it did.
    public var stopReason: String?
    /// The file metadata of the last intact index, if any.
    public var metadata: [String: String]
}

/// Scanning of container files unit by unit: finding the last complete commit
/// of a torn file, and recovering blobs from a file without a usable trailer.
public enum ContainerRecovery {
    /// Scans `path` read-only and reports what ``repair(_:durability:)`` would keep.
    public static func scan(_ path: String) throws(CheckpointError) -> RecoveryReport {
        try scan(path, calls: .live).report
    }

    /// Rebuilds the index of `path` from its intact records: cuts the file
    /// after the last intact unit and writes a fresh index and trailer there
    /// (generation = the highest seen + 1). Takes the writer lock.
    public static func repair(_ path: String, durability: Durability = .fileData) throws(CheckpointError) -> RecoveryReport {
        try repair(path, options: WriterOptions(durability: durability))
    }

    static func repair(_ path: String, options: WriterOptions) throws(CheckpointError) -> RecoveryReport {
        var report: RecoveryReport?
        // Scanned under the writer lock, so no append can slip in between the scan and the cut.
        let writer = try ContainerWriter.inPlace(path, options: options) { () throws(CheckpointError) -> ContainerWriter.InPlacePlan in
            let result = try scan(path, calls: options.systemCalls)
            report = result.report
            return ContainerWriter.InPlacePlan(entries: result.entries, metadata: result.report.metadata, length: result.report.intactLength,
                                               cut: true, generation: result.highestGeneration + 1, alignment: result.alignment)
        }
        do throws(CheckpointError) { try writer.commit() } catch {
            writer.abort()
            throw error
        }
        return report!
    }

    struct ScanResult {
        var report: RecoveryReport
        var entries: [BlobDescriptor]  // live, in record order
        var highestGeneration: UInt64
        var alignment: Int
    }

    static func scan(_ path: String, calls: SystemCalls) throws(CheckpointError) -> ScanResult {
        let file = try calls.openFile(path, .readOnly)
        defer { file.close() }
        do throws(CheckpointError) {
            let size = Int(try file.size())
            let source = ByteSource(file: file, map: nil, size: size)
            let alignment = try source.withBytes(at: 0, count: ContainerLayout.fileHeaderSize) { bytes throws(CheckpointError) in
                try ContainerLayout.parseFileHeader(bytes)
            }
            var live: [String: BlobDescriptor] = [:]
            var report = RecoveryReport(blobNames: [], blobRecords: 0, deletions: 0, commits: 0,
                                        intactLength: ContainerLayout.fileHeaderSize, fileLength: size, stopReason: nil, metadata: [:])
            var highest: UInt64 = 0
            report.stopReason = walk(source, fileSize: size) { unit throws(CheckpointError) in
                switch unit {
                case let .trailer(offset, trailer):
                    report.commits += 1
                    highest = max(highest, trailer.generation)
                    report.intactLength = offset + ContainerLayout.trailerSize
                case let .record(offset, frame):
                    switch frame.kind {
                    case ContainerLayout.Kind.blob.rawValue:
                        let descriptor = try checkBlobRecord(source, at: offset, frame: frame)
                        live[descriptor.name] = descriptor
                        report.blobRecords += 1
                    case ContainerLayout.Kind.deletion.rawValue:
                        guard frame.paddingLength == 0, frame.payloadLength == 0, frame.payloadCRC == 0 else {
                            throw CheckpointError(.invalidField(field: "deletion marker", reason: "padding or payload not empty"), offset: UInt64(offset))
                        }
                        let name = try source.withBytes(at: offset + ContainerLayout.frameSize, count: frame.headerLength) { bytes throws(CheckpointError) in
                            try ContainerLayout.parseDeletionHeader(bytes)
                        }
                        live[name] = nil
                        report.deletions += 1
                    case ContainerLayout.Kind.index.rawValue:
                        // Derived data: only its metadata is worth keeping.
                        if let metadata = try? indexMetadata(source, at: offset, frame: frame) { report.metadata = metadata }
                    default:
                        break  // unknown kinds are stepped over
                    }
                    report.intactLength = offset + frame.length
                }
            }
            let entries = live.values.sorted { $0.recordOffset < $1.recordOffset }
            report.blobNames = entries.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            return ScanResult(report: report, entries: entries, highestGeneration: highest, alignment: alignment)
        } catch {
            throw error.adding(path: path)
        }
    }

    enum Unit {
        case record(offset: Int, frame: ContainerLayout.Frame)
        case trailer(offset: Int, trailer: ContainerLayout.Trailer)
    }

    /// Walks the units from offset 64, stepping over each intact frame and
    /// trailer; stops at the first unit that is neither, or when `visit` throws.
    /// - Returns: why it stopped before the end of the file, or nil.
    static func walk(_ source: ByteSource, fileSize: Int, _ visit: (Unit) throws(CheckpointError) -> Void) -> String? {
        var offset = ContainerLayout.fileHeaderSize
        while offset < fileSize {
            guard fileSize - offset >= ContainerLayout.frameSize else { return "\(fileSize - offset) stray bytes at \(offset)" }
            do throws(CheckpointError) {
                let magic: UInt32 = try source.withBytes(at: offset, count: 4) { $0.load(littleEndianAt: 0) }
                if magic == ContainerLayout.trailerMagic {
                    let trailer = try source.withBytes(at: offset, count: min(ContainerLayout.trailerSize, fileSize - offset)) { bytes throws(CheckpointError) in
                        try ContainerLayout.Trailer.parse(bytes, at: offset)
                    }
                    try visit(.trailer(offset: offset, trailer: trailer))
                    offset += ContainerLayout.trailerSize
                    continue
                }
                let frame = try source.withBytes(at: offset, count: ContainerLayout.frameSize) { bytes throws(CheckpointError) in
                    try ContainerLayout.Frame.parse(bytes, at: offset)
                }
                guard frame.headerLength <= fileSize, frame.paddingLength <= 4096, frame.payloadLength <= fileSize,
                      frame.length <= fileSize - offset
                else {
                    return "record at \(offset) extends past the end of the file"
                }
                try visit(.record(offset: offset, frame: frame))
                offset = ContainerLayout.alignUp(offset + frame.length, ContainerLayout.unitAlignment)
            } catch {
                return "unit at \(offset): \(error.code)"
            }
        }
        return nil
    }

    /// Fully checks a blob record (header, every chunk, payload CRC) and describes it.
    static func checkBlobRecord(_ source: ByteSource, at offset: Int, frame: ContainerLayout.Frame) throws(CheckpointError) -> BlobDescriptor {
        let header = try source.withBytes(at: offset + ContainerLayout.frameSize, count: frame.headerLength) { bytes throws(CheckpointError) in
            let (header, length) = try BlobHeader.decode(from: bytes)
            guard length == bytes.count else { throw CheckpointError(.invalidField(field: "blob header length", reason: "disagrees with the frame")) }
            return header
        }
        guard header.storedSizeInBytes == frame.payloadLength else {
            throw CheckpointError(.invalidField(field: "record", reason: "payload length disagrees with the blob header"), offset: UInt64(offset))
        }
        var combined: UInt32 = 0
        for chunk in header.chunks { combined = CRC32C.combine(combined, chunk.crc32c, lengthOfB: Int(chunk.storedSize)) }
        guard combined == frame.payloadCRC else {
            throw CheckpointError(.headerChecksumMismatch(expected: frame.payloadCRC, actual: combined), offset: UInt64(offset + 24))
        }
        let payloadOffset = offset + frame.payloadStart
        try source.withBytes(at: payloadOffset, count: frame.payloadLength) { payload throws(CheckpointError) in
            try BlobDecoder.verify(payload: payload, header: header)
        }
        return BlobDescriptor(
            name: header.name, dtype: header.dtype, shape: header.shape, compression: header.compression, filter: header.filter,
            rawSizeInBytes: header.rawSizeInBytes, storedSizeInBytes: header.storedSizeInBytes, rawCRC32C: header.rawCRC32C,
            recordOffset: offset, payloadOffset: payloadOffset, blobHeaderLength: frame.headerLength)
    }

    private static func indexMetadata(_ source: ByteSource, at offset: Int, frame: ContainerLayout.Frame) throws(CheckpointError) -> [String: String] {
        try source.withBytes(at: offset + frame.payloadStart, count: frame.payloadLength) { body throws(CheckpointError) in
            guard CRC32C.checksum(body) == frame.payloadCRC, body.count >= 16 else {
                throw CheckpointError(.invalidField(field: "index", reason: "damaged"))
            }
            return try ContainerIndex(parsing: body, dataEnd: offset, generation: body.load(littleEndianAt: 8)).metadata
        }
    }
}

enum ContainerScanner {
    /// The last complete commit of a file whose end is torn: every trailer on
    /// the walk that directly follows the index record it points to is a
    /// candidate, newest first; the first whose index validates wins. (Only
    /// such pairs count, so each candidate's index is a distinct unit and the
    /// work stays linear in the file size, whatever a hostile file contains.)
    static func lastCommit(_ source: ByteSource, fileSize: Int) throws(CheckpointError) -> ContainerReader.OpenedCommit {
        var trailers: [Int] = []
        var previousIndexRecord: Int?
        _ = ContainerRecovery.walk(source, fileSize: fileSize) { unit in
            switch unit {
            case let .trailer(offset, trailer):
                if trailer.indexOffset == previousIndexRecord { trailers.append(offset) }
                previousIndexRecord = nil
            case let .record(offset, frame):
                previousIndexRecord = frame.kind == ContainerLayout.Kind.index.rawValue ? offset : nil
            }
        }
        for offset in trailers.reversed() {
            if let commit = try? ContainerReader.openCommit(source, trailerAt: offset) { return commit }
        }
        throw CheckpointError(.tornFile(reason: "no complete commit in the file"))
    }
}

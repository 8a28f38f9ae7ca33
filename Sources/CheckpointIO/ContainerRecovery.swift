import BlobCodec

/// What a recovery scan found (FORMAT.md §4.8).
public struct RecoveryReport: Sendable {
    /// Live blob names after recovery: the last complete commit's blobs whose
    /// records verify, then every intact record after it replayed in order (sorted).
    public var blobNames: [String]
    /// Intact blob records kept or replayed (including ones replaced later).
    public var blobRecords: Int
    /// Intact deletion markers seen after the last complete commit.
    public var deletions: Int
    /// Complete commits seen: the last complete commit (if any) and every
    /// complete trailer after it.
    public var commits: Int
    /// Where the kept part of the file ends: repair cuts the file here (never
    /// before the end of the last complete commit) and writes a new index and
    /// trailer. Everything after it is lost.
    public var intactLength: Int
    /// The file's size when scanned.
    public var fileLength: Int
    /// Why the walk stopped before the end of the file, if it did.
    public var stopReason: String?
    /// The file metadata of the last intact index, if any.
    public var metadata: [String: String]
    /// The generation of the last complete commit the scan started from, or
    /// nil when the file has none (the walk then starts at offset 64).
    public var baseGeneration: UInt64?
    /// Damaged records that recovery skips (their frames hold, so the walk
    /// steps over them), in file order.
    public var damagedRecords: [DamagedRecord]
    /// Names whose newest record is damaged: they are not in ``blobNames``,
    /// and repair drops them (an older record of the name is never revived).
    public var lostBlobs: [String]

    /// True when recovery keeps every blob it found: nothing damaged was dropped.
    public var keepsEverything: Bool { damagedRecords.isEmpty }
}

/// A record that a recovery scan found damaged and skips.
public struct DamagedRecord: Sendable {
    /// The blob (or deletion) name, when the record's header or the index still says it.
    public var name: String?
    /// The file offset of the record's frame.
    public var offset: Int
    /// What is wrong with it.
    public var error: CheckpointError
}

/// Scanning of container files unit by unit: finding the last complete commit
/// of a torn file, and recovering blobs from a file without a usable trailer.
public enum ContainerRecovery {
    /// Scans `path` read-only and reports what ``repair(_:durability:)`` would keep.
    public static func scan(_ path: String) throws(CheckpointError) -> RecoveryReport {
        try scan(path, calls: .live).report
    }

    /// Rebuilds the index of `path` from its intact records and writes a fresh
    /// index and trailer (generation = the highest seen + 1), under the writer lock.
    ///
    /// What is kept (FORMAT.md §4.8): every blob of the last complete commit
    /// whose record verifies, then every intact record after that commit in
    /// file order. A damaged record is skipped and reported in
    /// ``RecoveryReport/damagedRecords``; its name is dropped (listed in
    /// ``RecoveryReport/lostBlobs``) unless a later intact record replaces it.
    ///
    /// The file is never cut before the end of its last complete commit, so a
    /// reader that has that commit open (mapped) keeps working: only a torn
    /// tail after it is cut; damaged records inside it stay in the file as
    /// unreferenced bytes.
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

    /// A name's state during the scan: its newest intact record, or lost to a damaged one.
    private enum LiveState {
        case kept(BlobDescriptor)
        case lost
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
            var live: [BlobName: LiveState] = [:]
            var report = RecoveryReport(blobNames: [], blobRecords: 0, deletions: 0, commits: 0,
                                        intactLength: ContainerLayout.fileHeaderSize, fileLength: size, stopReason: nil, metadata: [:],
                                        baseGeneration: nil, damagedRecords: [], lostBlobs: [])
            var highest: UInt64 = 0
            var walkStart = ContainerLayout.fileHeaderSize
            // The last complete commit is the base: its index says which records are live, so a
            // damaged one is dropped by name and no older record of that name is revived.
            if let base = lastCompleteCommit(source, fileSize: size) {
                report.baseGeneration = base.trailer.generation
                report.commits = 1
                report.metadata = base.index.metadata
                highest = base.trailer.generation
                for entry in 0..<base.index.count {
                    let name = base.index.name(entry)
                    do throws(CheckpointError) {
                        let descriptor = try checkIndexedRecord(source, entry: try base.index.descriptor(entry))
                        live[BlobName(name)] = .kept(descriptor)
                        report.blobRecords += 1
                    } catch {
                        let offset = base.index.recordOffset(entry)
                        live[BlobName(name)] = .lost
                        report.damagedRecords.append(DamagedRecord(name: name, offset: offset, error: error.adding(blobName: name)))
                    }
                }
                walkStart = base.trailer.fileLength
                report.intactLength = walkStart
            }
            // Then every unit after it (a torn append's records), replayed in order.
            report.stopReason = walk(source, from: walkStart, fileSize: size) { unit throws(CheckpointError) in
                switch unit {
                case let .trailer(offset, trailer):
                    report.commits += 1
                    highest = max(highest, trailer.generation)
                    report.intactLength = offset + ContainerLayout.trailerSize
                case let .record(offset, frame):
                    switch frame.kind {
                    case ContainerLayout.Kind.blob.rawValue:
                        do throws(CheckpointError) {
                            let descriptor = try checkBlobRecord(source, at: offset, frame: frame)
                            live[BlobName(descriptor.name)] = .kept(descriptor)
                            report.blobRecords += 1
                        } catch {
                            // The frame holds, so the walk can step over it.
                            let name = try? source.withBytes(at: offset + ContainerLayout.frameSize, count: frame.headerLength) { bytes throws(CheckpointError) in
                                try BlobHeader.decode(from: bytes).header.name
                            }
                            // Without a base commit the newest record of a name is all there is, so a damaged
                            // one loses the name. After a base commit, the committed version stands.
                            if let name, report.baseGeneration == nil { live[BlobName(name)] = .lost }
                            report.damagedRecords.append(DamagedRecord(name: name, offset: offset, error: name.map { error.adding(blobName: $0) } ?? error))
                        }
                    case ContainerLayout.Kind.blobReference.rawValue:
                        // A reference is carried over as it is; its target is checked when it is read.
                        do throws(CheckpointError) {
                            let descriptor = try checkReferenceRecord(source, at: offset, frame: frame)
                            live[BlobName(descriptor.name)] = .kept(descriptor)
                            report.blobRecords += 1
                        } catch {
                            report.damagedRecords.append(DamagedRecord(name: nil, offset: offset, error: error))
                        }
                    case ContainerLayout.Kind.deletion.rawValue:
                        do throws(CheckpointError) {
                            guard frame.paddingLength == 0, frame.payloadLength == 0, frame.payloadCRC == 0 else {
                                throw CheckpointError(.invalidField(field: "deletion marker", reason: "padding or payload not empty"), offset: UInt64(offset))
                            }
                            let name = try source.withBytes(at: offset + ContainerLayout.frameSize, count: frame.headerLength) { bytes throws(CheckpointError) in
                                try ContainerLayout.parseDeletionHeader(bytes)
                            }
                            live[BlobName(name)] = nil
                            report.deletions += 1
                        } catch {
                            report.damagedRecords.append(DamagedRecord(name: nil, offset: offset, error: error))
                        }
                    case ContainerLayout.Kind.index.rawValue:
                        // Derived data: only its metadata is worth keeping.
                        if let metadata = try? indexMetadata(source, at: offset, frame: frame) { report.metadata = metadata }
                    default:
                        // A kind this version does not know (a newer writer's): it cannot be kept, so say so.
                        report.damagedRecords.append(DamagedRecord(name: nil, offset: offset, error: CheckpointError(.unsupportedRecordKind(frame.kind), offset: UInt64(offset))))
                    }
                    report.intactLength = offset + frame.length
                }
            }
            var entries: [BlobDescriptor] = []
            for (name, state) in live {
                switch state {
                case let .kept(descriptor): entries.append(descriptor)
                case .lost: report.lostBlobs.append(name.string)
                }
            }
            entries.sort { $0.recordOffset < $1.recordOffset }
            report.blobNames = entries.map { BlobName($0.name) }.sorted().map(\.string)
            report.lostBlobs = report.lostBlobs.map { BlobName($0) }.sorted().map(\.string)
            return ScanResult(report: report, entries: entries, highestGeneration: highest, alignment: alignment)
        } catch {
            throw error.adding(path: path)
        }
    }

    /// The commit a reader would open: the trailer at the end, else the last
    /// complete one before a torn end (FORMAT.md §4.8); nil when there is none.
    static func lastCompleteCommit(_ source: ByteSource, fileSize: Int) -> ContainerReader.OpenedCommit? {
        guard fileSize >= ContainerLayout.fileHeaderSize + ContainerLayout.trailerSize else { return nil }
        if let commit = try? ContainerReader.openCommit(source, trailerAt: fileSize - ContainerLayout.trailerSize) { return commit }
        return try? ContainerScanner.lastCommit(source, fileSize: fileSize)
    }

    /// Fully checks the record an index entry points at, and its agreement with the entry.
    static func checkIndexedRecord(_ source: ByteSource, entry: BlobDescriptor) throws(CheckpointError) -> BlobDescriptor {
        let frame = try source.withBytes(at: entry.recordOffset, count: ContainerLayout.frameSize) { bytes throws(CheckpointError) in
            try ContainerLayout.Frame.parse(bytes, at: entry.recordOffset)
        }
        if frame.kind == ContainerLayout.Kind.blobReference.rawValue && entry.isReference {
            let record = try checkReferenceRecord(source, at: entry.recordOffset, frame: frame)
            guard record == entry else {
                throw CheckpointError(.invalidField(field: "blob reference", reason: "disagrees with the index"), offset: UInt64(entry.recordOffset))
            }
            return record
        }
        guard frame.kind == ContainerLayout.Kind.blob.rawValue, !entry.isReference else {
            throw CheckpointError(.unsupportedRecordKind(frame.kind), offset: UInt64(entry.recordOffset))
        }
        let record = try checkBlobRecord(source, at: entry.recordOffset, frame: frame)
        guard record.name.hasSameBytes(as: entry.name), record.dtype == entry.dtype, record.shape == entry.shape,
              record.compression == entry.compression, record.filter == entry.filter,
              record.rawSizeInBytes == entry.rawSizeInBytes, record.storedSizeInBytes == entry.storedSizeInBytes,
              record.rawCRC32C == entry.rawCRC32C, record.payloadOffset == entry.payloadOffset, record.blobHeaderLength == entry.blobHeaderLength
        else {
            throw CheckpointError(.invalidField(field: "blob header", reason: "disagrees with the index"), offset: UInt64(entry.recordOffset))
        }
        return record
    }

    /// Checks a blob-reference record (its frame and kind header, not its target) and returns its index entry.
    static func checkReferenceRecord(_ source: ByteSource, at offset: Int, frame: ContainerLayout.Frame) throws(CheckpointError) -> BlobDescriptor {
        guard frame.paddingLength == 0, frame.payloadLength == 0, frame.payloadCRC == 0 else {
            throw CheckpointError(.invalidField(field: "blob reference", reason: "padding or payload not empty"), offset: UInt64(offset))
        }
        let header = try source.withBytes(at: offset + ContainerLayout.frameSize, count: frame.headerLength) { bytes throws(CheckpointError) in
            do throws(CheckpointError) { return try ContainerLayout.ReferenceHeader.parse(bytes) } catch {
                throw error.adding(offset: UInt64(offset + ContainerLayout.frameSize))
            }
        }
        var entry = header.target
        entry.recordOffset = offset
        entry.blobHeaderLength = frame.headerLength
        entry.isReference = true
        return entry
    }

    enum Unit {
        case record(offset: Int, frame: ContainerLayout.Frame)
        case trailer(offset: Int, trailer: ContainerLayout.Trailer)
    }

    /// Walks the units from `start` (offset 64 unless given), stepping over
    /// each intact frame and trailer; stops at the first unit that is neither,
    /// or when `visit` throws.
    /// - Returns: why it stopped before the end of the file, or nil.
    static func walk(_ source: ByteSource, from start: Int = ContainerLayout.fileHeaderSize, fileSize: Int,
                     _ visit: (Unit) throws(CheckpointError) -> Void) -> String? {
        var offset = start
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
        // Unchecksummed bytes must be zeros, or the kept blob would fail a later read or verify.
        try requireZeros(source, at: offset + ContainerLayout.frameSize + frame.headerLength, count: frame.paddingLength)
        let payloadEnd = payloadOffset + frame.payloadLength
        try requireZeros(source, at: payloadEnd, count: min(ContainerLayout.alignUp(payloadEnd, ContainerLayout.unitAlignment), source.size) - payloadEnd)
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

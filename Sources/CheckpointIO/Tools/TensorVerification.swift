import BlobCodec

/// The outcome of checking every checksum of a file.
public struct VerificationReport: Sendable {
    /// One damaged blob.
    public struct Damage: Sendable, Equatable {
        /// The damaged blob's name.
        public var blob: String
        /// The chunk whose checksum failed, when the error names one.
        public var chunk: Int?
        /// The checksum the file stores, when the error is a checksum mismatch.
        public var expectedCRC: UInt32?
        /// The checksum of the bytes read, when the error is a checksum mismatch.
        public var actualCRC: UInt32?
        /// The error reading the blob raised.
        public var error: CheckpointError
    }

    /// A file whose end is torn (no valid trailer at the end).
    public struct Torn: Sendable {
        /// Why the last commit could not be used, or how many bytes follow it.
        public var reason: String
        /// What ``ContainerRecovery/repair(_:durability:)`` (`ckpt recover`) would keep.
        public var recoverableBlobs: [String]
        /// Bytes up to the end of the last complete commit.
        public var intactLength: Int
        /// The file's length.
        public var fileLength: Int
    }

    /// The file checked.
    public var path: String
    /// The file's format.
    public var format: TensorFileFormat
    /// False for formats without checksums (safetensors, npy): only their structure was checked.
    public var hasChecksums: Bool
    /// Blobs checked.
    public var blobCount: Int
    /// The damaged blobs, in file order.
    public var damaged: [Damage]
    /// The torn end, if any.
    public var torn: Torn?

    /// True when nothing is damaged or torn.
    public var isIntact: Bool { damaged.isEmpty && torn == nil }
}

/// Checks files: ``verify(_:)`` reads every blob and checks every checksum the format has.
public enum TensorVerification {
    /// Verifies `path`.
    ///
    /// Containers: every chunk CRC32C and every raw CRC32C; a torn end is
    /// reported with what recovery would keep. npz: every member's CRC-32
    /// (note: ZIP's CRC-32, not CRC32C) and npy header, member by member.
    /// safetensors, npy: the structure (they carry no checksums).
    ///
    /// - Throws: when the file cannot be read at all or is not a tensor file
    ///   (the report covers damage inside a readable file).
    public static func verify(_ path: String) throws(CheckpointError) -> VerificationReport {
        let format = try TensorFileFormat.detect(path)
        if format == .npz { return try verifyNpz(path) }
        guard format == .container else {
            let file = try TensorFile.open(path)  // validates the structure
            return VerificationReport(path: path, format: format, hasChecksums: false, blobCount: file.entries.count, damaged: [], torn: nil)
        }
        let reader: ContainerReader
        do throws(CheckpointError) {
            reader = try ContainerReader.open(path)
        } catch {
            guard case let .tornFile(reason) = error.code else { throw error }
            let scan = try ContainerRecovery.scan(path)
            let torn = VerificationReport.Torn(reason: reason, recoverableBlobs: scan.blobNames, intactLength: scan.intactLength, fileLength: scan.fileLength)
            return VerificationReport(path: path, format: format, hasChecksums: true, blobCount: 0, damaged: [], torn: torn)
        }
        var torn: VerificationReport.Torn?
        if reader.tornBytes > 0 {
            let scan = try ContainerRecovery.scan(path)
            torn = VerificationReport.Torn(reason: "\(reader.tornBytes) bytes after the last complete commit", recoverableBlobs: scan.blobNames,
                                           intactLength: scan.intactLength, fileLength: scan.fileLength)
        }
        let damaged = reader.verify().compactMap { check -> VerificationReport.Damage? in
            guard let error = check.error else { return nil }
            switch error.code {
            case let .chunkChecksumMismatch(chunk, expected, actual):
                return .init(blob: check.name, chunk: chunk, expectedCRC: expected, actualCRC: actual, error: error)
            case let .rawChecksumMismatch(expected, actual), let .headerChecksumMismatch(expected, actual):
                return .init(blob: check.name, chunk: nil, expectedCRC: expected, actualCRC: actual, error: error)
            default:
                return .init(blob: check.name, chunk: nil, expectedCRC: nil, actualCRC: nil, error: error)
            }
        }
        return VerificationReport(path: path, format: format, hasChecksums: true, blobCount: reader.count, damaged: damaged, torn: torn)
    }
}

extension TensorVerification {
    /// Every `.npy` member of an npz: its CRC-32 and its npy header, each
    /// damaged member reported on its own. Other members are skipped, as
    /// ``TensorFile`` skips them.
    static func verifyNpz(_ path: String) throws(CheckpointError) -> VerificationReport {
        let map = try MappedFile(path)
        let members: [NpzArchive.Member]
        do throws(CheckpointError) { members = try NpzArchive.members(of: map.bytes).filter(\.isArray) } catch { throw error.adding(path: path) }
        var damaged: [VerificationReport.Damage] = []
        for member in members {
            let name = member.name.hasSuffix(".npy") ? String(member.name.dropLast(4)) : member.name
            do throws(CheckpointError) {
                let contents = try NpzArchive.contents(of: member, in: map.bytes, verify: false)
                let actual = ZipCRC32.checksum(contents.bytes)
                guard actual == member.crc32 else {
                    damaged.append(.init(blob: name, chunk: nil, expectedCRC: member.crc32, actualCRC: actual,
                                         error: CheckpointError(.rawChecksumMismatch(expected: member.crc32, actual: actual), blobName: name, path: path)))
                    continue
                }
                _ = try NumpyFormat.parseHeader(contents.bytes)
            } catch {
                damaged.append(.init(blob: name, chunk: nil, expectedCRC: nil, actualCRC: nil, error: error.adding(blobName: name, path: path)))
            }
        }
        return VerificationReport(path: path, format: .npz, hasChecksums: true, blobCount: members.count, damaged: damaged, torn: nil)
    }
}

extension ContainerRecovery {
    /// Writes the recovered content of `path` to `output` (a copy cut back to
    /// its last complete record and given a new index), leaving `path` as it is.
    ///
    /// The copy is made and repaired under a temporary name beside `output`,
    /// synced as `durability` asks (default: file and directory fsync) and
    /// renamed into place: `output` never holds a torn or partial copy, and
    /// an existing `output` keeps its content if anything fails.
    public static func recover(_ path: String, to output: String, durability: Durability = .full) throws(CheckpointError) -> RecoveryReport {
        let calls = SystemCalls.live
        let source = try MappedFile(path)
        _ = AtomicFile.removeTemporariesOfDeadWriters(in: ContainerWriter.splitPath(output).directory, calls: calls)
        var report: RecoveryReport?
        try AtomicFile.replace(output, durability: durability, calls: calls) { (temporary) throws(CheckpointError) in
            let file = try calls.openFile(temporary, .createExclusive)
            do throws(CheckpointError) { try file.writeAll([source.bytes], at: 0) } catch {
                file.close()
                throw error
            }
            file.close()
            do throws(CheckpointError) {
                report = try repair(temporary, options: WriterOptions(durability: durability))
            } catch {
                throw error.naming(path, insteadOf: temporary)
            }
        }
        return report!
    }
}

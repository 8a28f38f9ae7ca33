import BlobCodec

extension CheckpointError {
    /// True when the error says a checkpoint's stored bytes are damaged or
    /// incomplete (a checksum, a structure, a missing file or blob), so that
    /// an older checkpoint may still load. False for errors of the machine or
    /// the caller (I/O errors, limits, locks, a newer format version, misuse),
    /// which an older checkpoint would not avoid.
    var isCheckpointDamage: Bool {
        switch code {
        case .truncated, .badMagic, .headerChecksumMismatch, .chunkChecksumMismatch, .rawChecksumMismatch,
             .chunkSizeMismatch, .corruptChunk, .unknownCodec, .unknownFilter, .unknownDType, .invalidField,
             .invalidShape, .sizeMismatch, .blobNotFound, .tornFile, .unsupportedRecordKind, .checkpointNotFound, .referenceTargetInvalid:
            return true
        case .unsupportedVersion, .limitExceeded, .compressionFailed, .system, .writerLocked, .notViewable, .invalidState,
             .notRegularFile, .objectStore:
            return false
        }
    }
}

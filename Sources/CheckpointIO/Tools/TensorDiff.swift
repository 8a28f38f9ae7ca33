import BlobCodec

/// What differs between two tensor files of any supported format (container,
/// safetensors, `.npy`, `.npz`, a directory of `.npy`): what `ckpt diff` prints.
///
///     let diff = try TensorDiff.compare("run1/trainer_0.9", "run1/trainer_0.10")
///     for entry in diff.entries where entry.status == .changed { print(entry.name, entry.maximumAbsoluteDifference ?? 0) }
///
/// A blob present in both is **identical** when both files are containers
/// and it is the same stored record (a blob reference in one file to the
/// other, or two references to the same record), or when both raw CRC32Cs
/// are known and equal (the container stores one; a 32-bit check, as the
/// format's own), or else when its bytes are equal. Otherwise it is
/// **changed**: another dtype or shape, or other bytes, with the largest
/// absolute element difference for F16, BF16, F32 and F64 blobs of the same
/// shape. Reads every blob whose identity the indexes do not settle.
public struct TensorDiff: Sendable {
    /// How a blob compares.
    public enum Status: String, Sendable {
        /// Only in the second file.
        case new
        /// Only in the first file.
        case removed
        case identical
        case changed
    }

    /// One blob's comparison.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var status: Status
        /// Why: "same record (reference)", "same CRC32C", "same bytes", "dtype F32 → F16", "shape [2] → [3]", "bytes differ".
        public var reason: String
        /// For changed float blobs of the same dtype and shape: the largest |a − b| over the elements (NaN against a number counts as infinity).
        public var maximumAbsoluteDifference: Double?
    }

    /// Every blob of either file, in name order (UTF-8 bytes).
    public var entries: [Entry]

    /// The number of blobs of each status.
    public func count(_ status: Status) -> Int { entries.filter { $0.status == status }.count }

    /// Compares the files at `first` and `second`.
    ///
    /// - Throws: `CheckpointError` when either file cannot be opened or a
    ///   blob cannot be read (naming the file and the blob).
    public static func compare(_ first: String, _ second: String) throws(CheckpointError) -> TensorDiff {
        let a = try TensorFile.open(first), b = try TensorFile.open(second)
        var entries: [Entry] = []
        let namesA = Set(a.entries.map { BlobName($0.name) }), namesB = Set(b.entries.map { BlobName($0.name) })
        for name in namesA.union(namesB).sorted() {
            guard namesA.contains(name) else { entries.append(Entry(name: name.string, status: .new, reason: "only in \(second)")); continue }
            guard namesB.contains(name) else { entries.append(Entry(name: name.string, status: .removed, reason: "only in \(first)")); continue }
            entries.append(try compare(name.string, a, b))
        }
        return TensorDiff(entries: entries)
    }

    private static func compare(_ name: String, _ a: TensorFile, _ b: TensorFile) throws(CheckpointError) -> Entry {
        let x = try a.entry(name), y = try b.entry(name)
        if x.dtype != y.dtype { return Entry(name: name, status: .changed, reason: "dtype \(x.dtype.name) → \(y.dtype.name)") }
        if x.shape != y.shape { return Entry(name: name, status: .changed, reason: "shape \(x.shape) → \(y.shape)") }
        if sameRecord(x, a, y, b) { return Entry(name: name, status: .identical, reason: "same record (reference)") }
        if let crcA = x.crc32c, let crcB = y.crc32c {
            return crcA == crcB ? Entry(name: name, status: .identical, reason: "same CRC32C")
                                : Entry(name: name, status: .changed, reason: "bytes differ", maximumAbsoluteDifference: try maximumDifference(name, a, b, dtype: x.dtype))
        }
        let equal = try typedThrows { try a.withUnsafeBytes(of: name) { p in try b.withUnsafeBytes(of: name) { q in p.elementsEqual(q) } } }
        if equal { return Entry(name: name, status: .identical, reason: "same bytes") }
        return Entry(name: name, status: .changed, reason: "bytes differ", maximumAbsoluteDifference: try maximumDifference(name, a, b, dtype: x.dtype))
    }

    /// Whether two container entries are the same stored record: the blob of
    /// one file referenced by the other, or two references to one record.
    private static func sameRecord(_ x: TensorEntry, _ a: TensorFile, _ y: TensorEntry, _ b: TensorFile) -> Bool {
        guard a.format == .container, b.format == .container else { return false }
        let directoryA = ContainerWriter.splitPath(a.path).directory, directoryB = ContainerWriter.splitPath(b.path).directory
        func location(_ entry: TensorEntry, _ file: TensorFile, _ directory: String) -> (String, Int)? {
            if let target = entry.referenceFile, let offset = entry.referenceRecordOffset { return (CheckpointNaming.join(directory, target), offset) }
            guard let reader = file.containerReader, let descriptor = try? reader.descriptor(entry.name) else { return nil }
            return (file.path, descriptor.recordOffset)
        }
        guard let p = location(x, a, directoryA), let q = location(y, b, directoryB) else { return false }
        guard p.1 == q.1 else { return false }
        if p.0 == q.0 { return true }
        guard let u = SystemCalls.live.pathIdentity(p.0), let v = SystemCalls.live.pathIdentity(q.0) else { return false }
        return u == v
    }

    private static func maximumDifference(_ name: String, _ a: TensorFile, _ b: TensorFile, dtype: DType) throws(CheckpointError) -> Double? {
        guard TensorStatistics.supports(dtype), let size = dtype.elementSizeInBytes else { return nil }
        return try typedThrows {
            try a.withUnsafeBytes(of: name) { p in
                try b.withUnsafeBytes(of: name) { q -> Double? in
                    guard p.count == q.count, p.count % size == 0 else { return nil }
                    var maximum = 0.0
                    for i in 0..<(p.count / size) {
                        let u = element(p, i, dtype), v = element(q, i, dtype)
                        if u.isNaN && v.isNaN { continue }
                        let difference = (u.isNaN || v.isNaN) ? Double.infinity : abs(u - v)
                        if difference > maximum || difference.isNaN { maximum = difference.isNaN ? .infinity : difference }
                    }
                    return maximum
                }
            }
        }
    }

    private static func element(_ bytes: UnsafeRawBufferPointer, _ i: Int, _ dtype: DType) -> Double {
        switch dtype {
        case .float32: return Double(Float(bitPattern: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self).littleEndian))
        case .float64: return Double(bitPattern: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self).littleEndian)
        case .bfloat16: return Double(Float(bitPattern: UInt32(bytes.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian) << 16))
        default: return TensorStatistics.half(bytes.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian)
        }
    }
}

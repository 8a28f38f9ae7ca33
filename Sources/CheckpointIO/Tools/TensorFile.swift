import BlobCodec

/// The tensor file formats the tools read and write.
public enum TensorFileFormat: String, Sendable, CaseIterable {
    /// This package's container (FORMAT.md §4).
    case container = "ckpt"
    /// A safetensors file (header length, JSON header, data).
    case safetensors
    /// One NumPy array.
    case npy
    /// A ZIP of NumPy arrays (`numpy.savez`).
    case npz
    /// A directory of `.npy` files, one per tensor (`NAME.npy`; `/` in a name makes subdirectories).
    /// Symbolic links to directories are not followed; a walk visits at most
    /// ``TensorFile/maximumDirectoryEntries`` entries.
    case npyDirectory = "npy-dir"
    /// Caffe2's `minidb` (``MiniDBFile``): records of serialized `BlobProto`s. No checksums.
    case minidb

    /// The format of the file at `path`, from its first bytes (not its
    /// name); a directory is ``npyDirectory``.
    ///
    /// Safetensors has no magic: a file is taken for one when its first 8
    /// bytes are a little-endian length `N` that fits in the file and the
    /// first byte of the header that is not JSON whitespace is `{` (writers
    /// may pad the header on either side). Reads the first 16 bytes, and for
    /// a safetensors candidate whose header starts with whitespace, that
    /// whitespace (within the header size cap).
    ///
    /// - Throws: `CheckpointError.Code.invalidField` when the
    ///   bytes match no format; the system error when the file cannot be read.
    public static func detect(_ path: String) throws(CheckpointError) -> TensorFileFormat {
        if AtomicFile.isDirectory(path) { return .npyDirectory }
        let file = try SystemCalls.live.openFile(path, .readOnly)
        defer { file.close() }
        let size = Int(try file.size())
        var head = [UInt8](repeating: 0, count: min(size, 16))
        try typedThrows { try head.withUnsafeMutableBytes { try file.readAll(into: $0, at: 0) } }
        if head.starts(with: ContainerLayout.fileMagic) { return .container }
        if head.starts(with: NumpyFormat.magic) { return .npy }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x50, 0x4B, 0x05, 0x06]) { return .npz }
        if head.count >= 9 {
            let length = head.withUnsafeBytes { $0.load(littleEndianAt: 0) as UInt64 }
            if length <= UInt64(size - 8), try firstNonWhitespaceByte(of: file, from: 8, to: 8 + min(Int(length), SafetensorsFile.maximumHeaderLength)) == UInt8(ascii: "{") {
                return .safetensors
            }
        }
        if head.count >= 9, try looksLikeMiniDB(file, head: head, fileSize: size) { return .minidb }
        throw CheckpointError(.invalidField(field: "format", reason: "not a checkpoint, safetensors, .npy, .npz or Caffe2 minidb file"), path: path)
    }

    /// minidb has no magic: a file is taken for one when its first record's
    /// key length is in 1…``MiniDBFile/maximumKeyLength`` and its value
    /// length positive, its key is UTF-8, and its value (when the file
    /// reaches it) starts like a `BlobProto` (a length-delimited field 1, 2 or
    /// 3). The record need not fit in the file: a truncated minidb is then
    /// reported as one, with the offset. Reads the key and one more byte.
    private static func looksLikeMiniDB(_ file: SystemFile, head: [UInt8], fileSize: Int) throws(CheckpointError) -> Bool {
        let (keyLength, valueLength) = head.withUnsafeBytes { (Int($0.load(littleEndianAt: 0) as Int32), Int($0.load(littleEndianAt: 4) as Int32)) }
        guard keyLength > 0, keyLength <= MiniDBFile.maximumKeyLength, valueLength > 0 else { return false }
        var record = [UInt8](repeating: 0, count: min(fileSize, 8 + keyLength + 1) - 8)
        try typedThrows { try record.withUnsafeMutableBytes { try file.readAll(into: $0, at: 8) } }
        guard String(validating: record.prefix(keyLength), as: UTF8.self) != nil else { return false }
        // The file may end before the value (a truncated minidb): still one.
        return record.count <= keyLength || [0x0A, 0x12, 0x1A].contains(record[keyLength])
    }

    /// The first byte in `start..<end` of `file` that is not JSON whitespace
    /// (space, tab, line feed, carriage return), or nil; reads 4 KiB at a time.
    private static func firstNonWhitespaceByte(of file: SystemFile, from start: Int, to end: Int) throws(CheckpointError) -> UInt8? {
        var position = start
        var block = [UInt8](repeating: 0, count: 4096)
        while position < end {
            let count = min(block.count, end - position)
            try typedThrows { try block.withUnsafeMutableBytes { try file.readAll(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<count]), at: Int64(position)) } }
            if let byte = block[..<count].first(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }) { return byte }
            position += count
        }
        return nil
    }
}

/// What the tools show of one tensor; fields a format lacks are nil.
public struct TensorEntry: Sendable, Equatable {
    /// The tensor's name.
    public var name: String
    /// The element type.
    public var dtype: DType
    /// The dimensions, outermost first.
    public var shape: Shape
    /// The codec name (`none`, `lz4`, `zstd`…); for npz members `stored` or `deflate`; nil where the format has none.
    public var codec: String?
    /// The filter (`none`, `shuffle`), where the format has filters; for a
    /// `.npy` array stored big-endian or in Fortran order, the conversion its
    /// bytes go through when read (`byteswap`, `transpose`, `byteswap+transpose`).
    public var filter: String?
    /// Decoded size in bytes.
    public var rawBytes: Int
    /// Bytes the tensor occupies in the file, when the format says (container, npz).
    public var storedBytes: Int?
    /// CRC32C of the raw bytes (the container), else nil.
    public var crc32c: UInt32?
    /// Offset of the stored bytes in the file, where there is one (for a
    /// blob reference: in ``referenceFile``).
    public var offset: Int?
    /// For a blob reference (an incremental checkpoint, FORMAT.md §4.3.1): the
    /// file, in the same directory, that holds the bytes; nil when they are in this file.
    public var referenceFile: String? = nil
    /// For a blob reference: the target's record offset in ``referenceFile``.
    public var referenceRecordOffset: Int? = nil
}

/// Any tensor file, opened for reading: the container, safetensors, `.npy`,
/// `.npz` or a directory of `.npy` files, detected from the bytes.
///
///     let file = try TensorFile.open("model.safetensors")
///     for entry in file.entries { print(entry.name, entry.dtype, entry.shape) }
///     try file.withUnsafeBytes(of: "lm_head.weight") { bytes in … }   // zero-copy where the format allows
///
/// Opening reads headers and indexes only, except stored `.npz` members,
/// whose CRC-32 is checked then (they are viewed in place afterwards);
/// deflated members are inflated and checked each time they are read.
/// `.npy` arrays stored big-endian or in Fortran order are converted to
/// little-endian C order each time they are read (no zero-copy view);
/// ``notes`` lists them, and the `.npz` members that are not arrays (skipped).
public final class TensorFile: @unchecked Sendable {
    /// The file's path as given to ``open(_:)``.
    public let path: String
    /// The format detected from the file's bytes.
    public let format: TensorFileFormat
    /// The format version, e.g. "1" for the container, "1.0" for npy; nil where the format has none.
    public let version: String?
    /// File-level metadata (container metadata, safetensors `__metadata__`).
    public let metadata: [String: String]
    /// The tensors, sorted by name (UTF-8 bytes).
    public let entries: [TensorEntry]
    /// What opening found that a user should know, one sentence each: `.npz`
    /// members skipped because they are not `.npy` arrays, arrays converted
    /// when read (big-endian, Fortran order) and so never viewed in place.
    public let notes: [String]
    /// Bytes after the last complete commit of a torn container (0 otherwise); the entries are those of that commit.
    public var tornBytes: Int { containerReader?.tornBytes ?? 0 }
    /// True when the file has a metadata section even if it is empty (safetensors `"__metadata__": {}`),
    /// so that a conversion back writes it again.
    public var hasMetadataSection: Bool {
        if case let .safetensors(file, _) = backend { return file.metadata != nil }
        return !metadata.isEmpty
    }

    enum Backend {
        case container(ContainerReader)
        case safetensors(SafetensorsFile, MappedFile)
        /// Decoded on every read (protobuf fields, chunks).
        case minidb(MiniDBFile)
        /// Per tensor: the mapped file (or inflated buffer) and the data range in it.
        case arrays([BlobName: (owner: AnyObject, bytes: UnsafeRawBufferPointer)])
    }
    let backend: Backend
    private let entryIndex: [BlobName: Int]  // byte-wise: NFC and NFD spellings are two tensors
    /// Deflated npz members, inflated (and CRC-checked) only when read.
    private let deflated: (map: MappedFile, members: [BlobName: (member: NpzArchive.Member, dataOffset: Int)])?
    /// The headers of arrays whose stored bytes need converting (big-endian, Fortran order).
    let conversions: [BlobName: NumpyFormat.Header]

    private init(path: String, format: TensorFileFormat, version: String?, metadata: [String: String], entries: [TensorEntry], backend: Backend,
                 deflated: (map: MappedFile, members: [BlobName: (member: NpzArchive.Member, dataOffset: Int)])? = nil,
                 conversions: [BlobName: NumpyFormat.Header] = [:], notes: [String] = []) {
        self.deflated = deflated
        self.conversions = conversions
        self.notes = notes
        self.path = path
        self.format = format
        self.version = version
        self.metadata = metadata
        let sorted = entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        self.entries = sorted
        self.backend = backend
        var index: [BlobName: Int] = [:]
        for (i, entry) in sorted.enumerated() { index[BlobName(entry.name)] = i }
        self.entryIndex = index
    }

    /// Opens and validates `path` (see each format's rules).
    ///
    /// - Throws: `CheckpointError` naming the file and what is wrong.
    public static func open(_ path: String) throws(CheckpointError) -> TensorFile {
        let format = try TensorFileFormat.detect(path)
        do throws(CheckpointError) {
            switch format {
            case .container: return try openContainer(path)
            case .safetensors: return try openSafetensors(path)
            case .npy: return try openNpy(path)
            case .npz: return try openNpz(path)
            case .npyDirectory: return try openNpyDirectory(path)
            case .minidb: return try openMiniDB(path)
            }
        } catch {
            throw error.path == nil ? error.adding(path: path) : error
        }
    }

    private static func openContainer(_ path: String) throws(CheckpointError) -> TensorFile {
        let reader = try ContainerReader.open(path)
        let entries = try reader.descriptors().map { (d: BlobDescriptor) throws(CheckpointError) -> TensorEntry in
            var entry = TensorEntry(name: d.name, dtype: d.dtype, shape: d.shape, codec: d.compression.name, filter: d.filter.description,
                                    rawBytes: d.rawSizeInBytes, storedBytes: d.storedSizeInBytes, crc32c: d.rawCRC32C, offset: d.payloadOffset)
            if let reference = try reader.reference(d.name) {
                entry.referenceFile = reference.fileName
                entry.referenceRecordOffset = reference.target.recordOffset
            }
            return entry
        }
        return TensorFile(path: path, format: .container, version: String(ContainerLayout.version), metadata: reader.metadata,
                          entries: entries, backend: .container(reader))
    }

    private static func openSafetensors(_ path: String) throws(CheckpointError) -> TensorFile {
        let file = try SafetensorsFile.open(path)
        let map = try MappedFile(path)
        guard map.bytes.count == file.fileSize else {
            throw CheckpointError(.invalidField(field: "file", reason: "changed while being opened"), path: path)
        }
        let entries = file.entries.map { e in
            TensorEntry(name: e.name, dtype: e.dtype, shape: e.shape, codec: nil, filter: nil, rawBytes: e.dataRange.count,
                        storedBytes: e.dataRange.count, crc32c: nil, offset: file.dataOffset + e.dataRange.lowerBound)
        }
        return TensorFile(path: path, format: .safetensors, version: nil, metadata: file.metadata ?? [:], entries: entries, backend: .safetensors(file, map))
    }

    private static func openMiniDB(_ path: String) throws(CheckpointError) -> TensorFile {
        let file = try MiniDBFile.open(path)
        let entries = file.entries.map { e in
            TensorEntry(name: e.name, dtype: e.dtype, shape: e.shape, codec: nil, filter: nil, rawBytes: e.byteCount,
                        storedBytes: e.storedByteCount, crc32c: nil, offset: e.offset)
        }
        var notes = ["minidb has no checksums: damaged values are not detected, only the structure is checked"]
        notes += file.entries.filter { $0.caffe2Type != "Tensor" }.map { e in
            "'\(e.name)' is a Caffe2 '\(e.caffe2Type)' blob, read as \(e.caffe2DataType == nil ? "its raw content bytes" : "its tensor")"
        }
        return TensorFile(path: path, format: .minidb, version: nil, metadata: file.fileMetadata, entries: entries, backend: .minidb(file), notes: notes)
    }

    private static func openNpy(_ path: String) throws(CheckpointError) -> TensorFile {
        let map = try MappedFile(path)
        let header = try NumpyFormat.parseHeader(map.bytes)
        let name = npyTensorName(ContainerWriter.splitPath(path).base)
        let data = UnsafeRawBufferPointer(rebasing: map.bytes[header.dataOffset...])
        let entry = TensorEntry(name: name, dtype: header.dtype, shape: header.shape, codec: nil, filter: header.conversion, rawBytes: data.count,
                                storedBytes: data.count, crc32c: nil, offset: header.dataOffset)
        let conversions = header.needsConversion ? [BlobName(name): header] : [:]
        return TensorFile(path: path, format: .npy, version: header.version, metadata: [:], entries: [entry], backend: .arrays([BlobName(name): (map, data)]),
                          conversions: conversions, notes: conversionNotes(conversions))
    }

    /// One note per converted array, in name order.
    private static func conversionNotes(_ conversions: [BlobName: NumpyFormat.Header]) -> [String] {
        conversions.keys.sorted().map { key in
            let name = key.string, header = conversions[key]!
            let stored = [header.isBigEndian ? "big-endian" : nil, header.isTransposed ? "in Fortran order" : nil].compactMap { $0 }.joined(separator: " and ")
            return "'\(name)' is stored \(stored): converted to little-endian C order when read (\(header.conversion!)), never viewed in place"
        }
    }

    private static func npyTensorName(_ fileName: String) -> String {
        fileName.hasSuffix(".npy") ? String(fileName.dropLast(4)) : fileName
    }

    private static func openNpz(_ path: String) throws(CheckpointError) -> TensorFile {
        let map = try MappedFile(path)
        let members = try NpzArchive.members(of: map.bytes)
        var entries: [TensorEntry] = []
        var arrays: [BlobName: (owner: AnyObject, bytes: UnsafeRawBufferPointer)] = [:]
        var deflated: [BlobName: (member: NpzArchive.Member, dataOffset: Int)] = [:]
        var conversions: [BlobName: NumpyFormat.Header] = [:]
        var skipped: [String] = []
        for member in members {
            guard member.isArray else {
                // numpy.load returns such members as bytes; they are no tensors, and no reason to refuse the archive.
                skipped.append(member.name.hasSuffix("/") ? "skipped '\(member.name)': a directory entry, not an .npy array"
                                                          : "skipped '\(member.name)': not an .npy array (numpy.load returns it as bytes)")
                continue
            }
            let name = npyTensorName(member.name)
            guard arrays[BlobName(name)] == nil && deflated[BlobName(name)] == nil else {
                throw CheckpointError(.invalidField(field: "npz member '\(member.name)'", reason: "names the same tensor '\(name)' as another member"))
            }
            let header: NumpyFormat.Header
            do throws(CheckpointError) {
                if member.isStored {
                    // Stored: checked (CRC-32) and viewed in place.
                    let contents = try NpzArchive.contents(of: member, in: map.bytes)
                    header = try NumpyFormat.parseHeader(contents.bytes)
                    arrays[BlobName(name)] = (map, UnsafeRawBufferPointer(rebasing: contents.bytes[header.dataOffset...]))
                } else {
                    // Deflated: only the header is inflated now; the data (and its CRC-32) when read.
                    let compressed = UnsafeRawBufferPointer(rebasing: map.bytes[member.dataOffset..<(member.dataOffset + member.compressedSize)])
                    var prefix = try RawDeflate.inflatePrefix(compressed, count: min(member.uncompressedSize, 4096))
                    if prefix.count < member.uncompressedSize, (try? prefix.withUnsafeBytes({ try NumpyFormat.parseHeader($0, fileSize: member.uncompressedSize) })) == nil {
                        prefix = try RawDeflate.inflatePrefix(compressed, count: min(member.uncompressedSize, NumpyFormat.maximumHeaderLength + 16))
                    }
                    header = try typedThrows { try prefix.withUnsafeBytes { try NumpyFormat.parseHeader($0, fileSize: member.uncompressedSize) } }
                    deflated[BlobName(name)] = (member, header.dataOffset)
                }
            } catch {
                throw error.adding(blobName: name)
            }
            if header.needsConversion { conversions[BlobName(name)] = header }
            entries.append(TensorEntry(name: name, dtype: header.dtype, shape: header.shape, codec: member.isStored ? "stored" : "deflate",
                                       filter: header.conversion, rawBytes: header.dataByteCount, storedBytes: member.isStored ? header.dataByteCount : member.compressedSize,
                                       crc32c: nil, offset: member.isStored ? member.dataOffset + header.dataOffset : member.dataOffset))
        }
        return TensorFile(path: path, format: .npz, version: nil, metadata: [:], entries: entries, backend: .arrays(arrays),
                          deflated: deflated.isEmpty ? nil : (map, deflated), conversions: conversions, notes: skipped + conversionNotes(conversions))
    }

    /// The most entries (files and directories) a walk of a `.npy` directory visits.
    public static let maximumDirectoryEntries = 1_000_000

    private static func openNpyDirectory(_ path: String) throws(CheckpointError) -> TensorFile {
        if CheckpointDirectory.isCheckpointDirectory(path) {
            throw CheckpointError(.invalidField(field: "directory", reason: "is a checkpoint directory (it has \(DurableMetadataHandler.fileName)), "
                + "not a directory of .npy files: open one of its checkpoint files, or read it with CheckpointDirectory"), path: path)
        }
        var entries: [TensorEntry] = []
        var arrays: [BlobName: (owner: AnyObject, bytes: UnsafeRawBufferPointer)] = [:]
        var conversions: [BlobName: NumpyFormat.Header] = [:]
        // Symbolic links to directories are not followed (links that fan out or loop would make
        // the walk exponential or endless), and the walk visits a bounded number of entries.
        var visited = 0
        func walk(_ directory: String, prefix: String, depth: Int) throws(CheckpointError) {
            guard depth < 32 else { throw CheckpointError(.limitExceeded(what: "directory depth", limit: 32, actual: UInt64(depth)), path: directory) }
            for name in AtomicFile.listDirectory(directory).sorted() where !name.hasPrefix(".") {
                visited += 1
                guard visited <= maximumDirectoryEntries else {
                    throw CheckpointError(.limitExceeded(what: "directory entries visited", limit: UInt64(maximumDirectoryEntries), actual: UInt64(visited)), path: path)
                }
                let full = CheckpointNaming.join(directory, name)
                if AtomicFile.entryType(full) == .directory {
                    try walk(full, prefix: prefix + name + "/", depth: depth + 1)
                } else if name.hasSuffix(".npy") {
                    // One mapping per file but no descriptor: a directory of thousands of arrays stays under the fd limit.
                    let map = try MappedFile(full, keepDescriptor: false)
                    let header: NumpyFormat.Header
                    do throws(CheckpointError) { header = try NumpyFormat.parseHeader(map.bytes) } catch { throw error.adding(path: full) }
                    let tensor = prefix + npyTensorName(name)
                    let data = UnsafeRawBufferPointer(rebasing: map.bytes[header.dataOffset...])
                    arrays[BlobName(tensor)] = (map, data)
                    if header.needsConversion { conversions[BlobName(tensor)] = header }
                    entries.append(TensorEntry(name: tensor, dtype: header.dtype, shape: header.shape, codec: nil, filter: header.conversion,
                                               rawBytes: data.count, storedBytes: data.count, crc32c: nil, offset: header.dataOffset))
                }
            }
        }
        try walk(path, prefix: "", depth: 0)
        guard !entries.isEmpty else {
            throw CheckpointError(.invalidField(field: "directory", reason: "holds no .npy files (a directory is read as one .npy file per tensor)"), path: path)
        }
        return TensorFile(path: path, format: .npyDirectory, version: nil, metadata: [:], entries: entries, backend: .arrays(arrays),
                          conversions: conversions, notes: conversionNotes(conversions))
    }

    // MARK: Reading

    /// The entry of `name`.
    public func entry(_ name: String) throws(CheckpointError) -> TensorEntry {
        guard let index = entryIndex[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name, path: path) }
        return entries[index]
    }

    /// Calls `body` with the raw bytes of `name`: a view of the mapped file
    /// where the format stores them as they are (uncompressed container blobs,
    /// safetensors, npy, stored npz members), else a decoded buffer that lives
    /// for the call (compressed blobs, deflated members, big-endian or
    /// Fortran-order arrays). Container blobs are verified (CRC32C) first.
    public func withUnsafeBytes<R>(of name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let entry = try entry(name)
        switch backend {
        case let .container(reader):
            let descriptor = try reader.descriptor(name)
            if descriptor.isViewableInPlace {
                return try reader.withUnsafeBytes(of: name, verify: true, body)
            }
            let storage = try TensorStorage(checkedByteCount: entry.rawBytes)
            let buffer = UnsafeMutableRawBufferPointer(start: storage.base, count: storage.count)
            try reader.read(name, into: buffer, verify: true)
            return try withExtendedLifetime(storage) { try body(UnsafeRawBufferPointer(buffer)) }
        case let .safetensors(file, map):
            let e = try file.entry(name)
            let start = file.dataOffset + e.dataRange.lowerBound
            return try withExtendedLifetime(map) { try body(UnsafeRawBufferPointer(rebasing: map.bytes[start..<(start + e.dataRange.count)])) }
        case let .minidb(file):
            let storage = try TensorStorage(checkedByteCount: entry.rawBytes)
            let buffer = UnsafeMutableRawBufferPointer(start: storage.base, count: storage.count)
            try file.read(name, into: buffer)
            return try withExtendedLifetime(storage) { try body(UnsafeRawBufferPointer(buffer)) }
        case let .arrays(arrays):
            let array = try arrays[BlobName(name)] ?? inflatedMember(name)
            if conversions[BlobName(name)] != nil {
                let converted = try withExtendedLifetime(array.owner) { () throws(CheckpointError) in try convertedArray(name, stored: array.bytes) }
                return try withExtendedLifetime(converted.owner) { try body(converted.bytes) }
            }
            return try withExtendedLifetime(array.owner) { try body(array.bytes) }
        }
    }

    /// A little-endian C-order copy of an array stored big-endian or in Fortran order.
    func convertedArray(_ name: String, stored: UnsafeRawBufferPointer) throws(CheckpointError) -> (owner: AnyObject, bytes: UnsafeRawBufferPointer) {
        guard let header = conversions[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name, path: path) }
        let storage = try TensorStorage(checkedByteCount: header.dataByteCount)
        let buffer = UnsafeMutableRawBufferPointer(start: storage.base, count: storage.count)
        NumpyFormat.convertToLittleEndianCOrder(stored, header: header, into: buffer)
        return (storage, UnsafeRawBufferPointer(buffer))
    }

    /// Inflates and CRC-checks a deflated npz member; its data and the object that owns them.
    func inflatedMember(_ name: String) throws(CheckpointError) -> (owner: AnyObject, bytes: UnsafeRawBufferPointer) {
        guard let deflated, let (member, dataOffset) = deflated.members[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name, path: path) }
        do throws(CheckpointError) {
            let contents = try NpzArchive.contents(of: member, in: deflated.map.bytes)
            return (contents, UnsafeRawBufferPointer(rebasing: contents.bytes[dataOffset...]))
        } catch {
            throw error.adding(blobName: name, path: path)
        }
    }

    /// Copies (and verifies, for the container) the raw bytes of `name` into `destination`, exactly its size.
    public func read(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        if case let .container(reader) = backend {
            try reader.read(name, into: destination, verify: true)
            return
        }
        if case let .minidb(file) = backend {
            try file.read(name, into: destination)
            return
        }
        let entry = try entry(name)
        guard destination.count == entry.rawBytes else {
            throw CheckpointError(.sizeMismatch(what: "read destination", expected: UInt64(entry.rawBytes), actual: UInt64(destination.count)), blobName: name, path: path)
        }
        if let header = conversions[BlobName(name)], case let .arrays(arrays) = backend {
            // Converted straight into the destination, without a temporary copy.
            let stored: (owner: AnyObject, bytes: UnsafeRawBufferPointer)
            if let view = arrays[BlobName(name)] { stored = view } else { stored = try inflatedMember(name) }
            withExtendedLifetime(stored.owner) { NumpyFormat.convertToLittleEndianCOrder(stored.bytes, header: header, into: destination) }
            return
        }
        try typedThrows { try withUnsafeBytes(of: name) { destination.copyMemory(from: $0) } }
    }

    /// The container reader behind this file, when it is one.
    public var containerReader: ContainerReader? {
        if case let .container(reader) = backend { return reader }
        return nil
    }
}

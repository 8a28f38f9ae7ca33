import BlobCodec

/// The index body of a container file (FORMAT.md §4.4–4.5): built by
/// writers, parsed and validated by readers. A parsed index keeps the body's
/// bytes and reads entries from them on demand, so opening a file allocates
/// nothing per blob.
final class ContainerIndex: @unchecked Sendable {
    static let magic: UInt32 = 0x5849_4B43  // "CKIX"
    static let headerSize = 32
    static let entrySize = 64

    let generation: UInt64
    let count: Int
    let metadata: [String: String]
    private let body: UnsafeRawBufferPointer
    private let ownsBody: Bool
    private let entriesStart = ContainerIndex.headerSize
    private let orderStart: Int
    private let dimsStart: Int
    private let namesStart: Int
    private let namesLength: Int

    deinit { if ownsBody { body.deallocate() } }

    // MARK: Building

    /// The part of an index body that depends on the entries alone (FORMAT.md §4.4:
    /// the table, the name order, the dims and the name pool, the bytes between the
    /// 32-byte header and the metadata) and its CRC32C. A writer builds it while its
    /// last records are still being written, so that its commit adds only the header
    /// and the metadata: the 20,000-blob save paid ~1 ms for the whole body after its
    /// last write.
    struct PreparedEntries: @unchecked Sendable {
        let count: Int
        let dimsCount: Int
        let namesLength: Int
        /// The section bytes, in memory that stays put while a write pipeline holds it.
        let bytes: OwnedBuffer
        let crc: UInt32
    }

    /// Builds the entry sections for `entries` (in increasing record offset).
    static func prepare(entries: [BlobDescriptor]) -> PreparedEntries {
        var namesLength = 0
        var dimsCount = 0
        for entry in entries {
            namesLength += entry.name.utf8.count
            dimsCount += entry.shape.dimensions.count
        }
        // Offsets inside the sections; the body adds headerSize in front (a multiple of 8).
        let orderStart = entries.count * entrySize
        let dimsStart = ContainerLayout.alignUp(orderStart + 4 * entries.count, 8)
        let namesStart = dimsStart + 8 * dimsCount
        let owned = OwnedBuffer(capacity: namesStart + namesLength)
        let out = UnsafeMutableRawBufferPointer(mutating: owned.buffer)
        // Reserved row bytes and the padding after the order stay zero.
        out.initializeMemory(as: UInt8.self, repeating: 0)
        var nameRanges = [Range<Int>](repeating: 0..<0, count: entries.count)
        entries.withUnsafeBufferPointer { entries in
            // The table, dims and name pool are filled in place, a 64-byte row per entry field
            // by field (appending field by field cost ~200 ns per entry).
            var nameOffset = 0
            var dimsOffset = 0
            for index in entries.indices {
                var name = entries[index].name  // withUTF8 makes it contiguous if it is not
                let nameCount = name.withUTF8 { utf8 in
                    if !utf8.isEmpty { (out.baseAddress! + namesStart + nameOffset).copyMemory(from: utf8.baseAddress!, byteCount: utf8.count) }
                    return utf8.count
                }
                nameRanges[index] = (namesStart + nameOffset)..<(namesStart + nameOffset + nameCount)
                let firstDim = dimsOffset
                for dimension in entries[index].shape.dimensions {
                    out.storeBytes(of: UInt64(dimension).littleEndian, toByteOffset: dimsStart + 8 * dimsOffset, as: UInt64.self)
                    dimsOffset += 1
                }
                let row = out.baseAddress! + index * entrySize
                row.storeBytes(of: UInt64(entries[index].recordOffset).littleEndian, toByteOffset: 0, as: UInt64.self)
                row.storeBytes(of: UInt64(entries[index].payloadOffset).littleEndian, toByteOffset: 8, as: UInt64.self)
                row.storeBytes(of: UInt64(entries[index].storedSizeInBytes).littleEndian, toByteOffset: 16, as: UInt64.self)
                row.storeBytes(of: UInt64(entries[index].rawSizeInBytes).littleEndian, toByteOffset: 24, as: UInt64.self)
                row.storeBytes(of: UInt32(nameOffset).littleEndian, toByteOffset: 32, as: UInt32.self)
                row.storeBytes(of: UInt32(firstDim).littleEndian, toByteOffset: 36, as: UInt32.self)
                row.storeBytes(of: UInt32(entries[index].blobHeaderLength).littleEndian, toByteOffset: 40, as: UInt32.self)
                row.storeBytes(of: entries[index].rawCRC32C.littleEndian, toByteOffset: 44, as: UInt32.self)
                row.storeBytes(of: UInt16(nameCount).littleEndian, toByteOffset: 48, as: UInt16.self)
                row.storeBytes(of: UInt8((entries[index].isReference ? ContainerLayout.Kind.blobReference : ContainerLayout.Kind.blob).rawValue),
                               toByteOffset: 50, as: UInt8.self)
                row.storeBytes(of: entries[index].dtype.rawValue, toByteOffset: 51, as: UInt8.self)
                row.storeBytes(of: entries[index].compression.id, toByteOffset: 52, as: UInt8.self)
                row.storeBytes(of: UInt8(entries[index].compression.level), toByteOffset: 53, as: UInt8.self)
                row.storeBytes(of: entries[index].filter.id, toByteOffset: 54, as: UInt8.self)
                row.storeBytes(of: UInt8(entries[index].filter.elementSize), toByteOffset: 55, as: UInt8.self)
                row.storeBytes(of: UInt8(entries[index].shape.dimensions.count), toByteOffset: 56, as: UInt8.self)
                nameOffset += nameCount
            }
            // The stores above are unchecked: the sections were sized by the first pass over the same entries.
            precondition(nameOffset == namesLength && dimsOffset == dimsCount, "index sections sized from different entries")
        }
        // Byte-wise name order, compared in the name pool (memcmp), not through String.
        let pool = UnsafeRawBufferPointer(out)
        let order = entries.indices.sorted { precedes(UnsafeRawBufferPointer(rebasing: pool[nameRanges[$0]]), UnsafeRawBufferPointer(rebasing: pool[nameRanges[$1]])) }
        for (position, index) in order.enumerated() {
            out.storeBytes(of: UInt32(index).littleEndian, toByteOffset: orderStart + 4 * position, as: UInt32.self)
        }
        return PreparedEntries(count: entries.count, dimsCount: dimsCount, namesLength: namesLength, bytes: owned, crc: CRC32C.checksum(owned.buffer))
    }

    /// The 32-byte body header for `prepared` sections followed by `metadataLength` bytes of metadata.
    static func encodeHeader(_ prepared: PreparedEntries, metadataLength: Int, generation: UInt64) -> [UInt8] {
        var w = LittleEndianWriter(capacity: headerSize)
        w.write(littleEndian: magic)
        w.write(littleEndian: UInt32(1))
        w.write(littleEndian: generation)
        w.write(littleEndian: UInt32(prepared.count))
        w.write(littleEndian: UInt32(prepared.dimsCount))
        w.write(littleEndian: UInt32(prepared.namesLength))
        w.write(littleEndian: UInt32(metadataLength))
        return w.bytes
    }

    /// The metadata section: its pairs in byte-wise key order.
    static func encodeMetadata(_ metadata: [String: String]) -> [UInt8] {
        var meta = LittleEndianWriter(capacity: 64)
        for key in metadata.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            meta.write(littleEndian: UInt16(key.utf8.count))
            meta.write(Array(key.utf8))
            let value = metadata[key]!
            meta.write(littleEndian: UInt32(value.utf8.count))
            meta.write(Array(value.utf8))
        }
        return meta.bytes
    }

    /// Encodes an index body for `entries` (in increasing record offset) and `metadata`.
    static func encode(entries: [BlobDescriptor], metadata: [String: String], generation: UInt64) -> [UInt8] {
        let prepared = prepare(entries: entries)
        let meta = encodeMetadata(metadata)
        return encodeHeader(prepared, metadataLength: meta.count, generation: generation) + Array(prepared.bytes.buffer) + meta
    }

    /// Checks file metadata before it is written: keys non-empty, sizes representable.
    static func validateMetadata(_ metadata: [String: String]) throws(CheckpointError) {
        for (key, value) in metadata {
            guard !key.isEmpty, key.utf8.count <= Int(UInt16.max), value.utf8.count <= Int(UInt32.max) else {
                throw CheckpointError(.invalidField(field: "metadata key '\(key.prefix(64))'", reason: "empty, or key or value too long"))
            }
        }
    }

    // MARK: Parsing

    /// Validates an index body (FORMAT.md §4.7, steps 5–8).
    ///
    /// - Parameters:
    ///   - bytes: the body.
    ///   - dataEnd: the index record's offset; every blob record must end before it.
    ///   - generation: the trailer's generation.
    ///   - borrowing: true when `bytes` outlive this index (a mapping its owner
    ///     keeps); otherwise the body is copied.
    /// Cost: O(entries) plus one byte-wise comparison per adjacent pair of names; no per-blob allocation.
    init(parsing bytes: UnsafeRawBufferPointer, dataEnd: Int, generation expectedGeneration: UInt64, borrowing: Bool = false) throws(CheckpointError) {
        func invalid(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "index", reason: reason)) }
        guard bytes.count >= ContainerIndex.headerSize else {
            throw CheckpointError(.truncated(what: "index", needed: UInt64(ContainerIndex.headerSize), available: UInt64(bytes.count)))
        }
        let magic: UInt32 = bytes.load(littleEndianAt: 0)
        guard magic == ContainerIndex.magic else { throw CheckpointError(.badMagic(what: "index", expected: ContainerIndex.magic, actual: magic)) }
        let version: UInt32 = bytes.load(littleEndianAt: 4)
        guard version == 1 else { throw CheckpointError(.unsupportedVersion(what: "index", version: version)) }
        let generation: UInt64 = bytes.load(littleEndianAt: 8)
        guard generation == expectedGeneration else { throw invalid("generation \(generation), trailer says \(expectedGeneration)") }
        let count = Int(bytes.load(littleEndianAt: 16) as UInt32)
        let dimsCount = Int(bytes.load(littleEndianAt: 20) as UInt32)
        let namesLength = Int(bytes.load(littleEndianAt: 24) as UInt32)
        let metadataLength = Int(bytes.load(littleEndianAt: 28) as UInt32)
        let orderStart = ContainerIndex.headerSize + ContainerIndex.entrySize * count
        let dimsStart = ContainerLayout.alignUp(orderStart + 4 * count, 8)
        let namesStart = dimsStart + 8 * dimsCount
        let total = namesStart + namesLength + metadataLength  // all terms < 2^38: no overflow
        guard total == bytes.count else { throw invalid("sections need \(total) bytes, the body has \(bytes.count)") }

        if borrowing {
            self.body = bytes
        } else {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
            copy.copyMemory(from: bytes)
            self.body = UnsafeRawBufferPointer(copy)
        }
        self.ownsBody = !borrowing
        self.count = count
        self.generation = generation
        self.orderStart = orderStart
        self.dimsStart = dimsStart
        self.namesStart = namesStart
        self.namesLength = namesLength
        do throws(CheckpointError) {
            self.metadata = try ContainerIndex.parseMetadata(UnsafeRawBufferPointer(rebasing: bytes[(namesStart + namesLength)...]))
        } catch {
            if !borrowing { body.deallocate() }
            throw error
        }
        // From here on a failed validation releases `body` in deinit.
        try validateEntries(dataEnd: dataEnd, dimsCount: dimsCount, namesLength: namesLength)
        try validateNameOrder()
    }

    private var raw: UnsafeRawBufferPointer { body }

    private func entryBase(_ index: Int) -> Int { entriesStart + index * ContainerIndex.entrySize }

    private func validateEntries(dataEnd: Int, dimsCount: Int, namesLength: Int) throws(CheckpointError) {
        var previousEnd = UInt64(ContainerLayout.fileHeaderSize)
        let raw = self.raw
        let end = UInt64(dataEnd)
        let names = raw.baseAddress! + namesStart
        for index in 0..<count {
            let base = entryBase(index)
            let recordOffset: UInt64 = raw.load(littleEndianAt: base)
            let payloadOffset: UInt64 = raw.load(littleEndianAt: base + 8)
            let storedSize: UInt64 = raw.load(littleEndianAt: base + 16)
            let rawSize: UInt64 = raw.load(littleEndianAt: base + 24)
            let nameOffset = Int(raw.load(littleEndianAt: base + 32) as UInt32)
            let dimsOffset = Int(raw.load(littleEndianAt: base + 36) as UInt32)
            let headerLength = UInt64(raw.load(littleEndianAt: base + 40) as UInt32)
            let nameLength = Int(raw.load(littleEndianAt: base + 48) as UInt16)
            let kind: UInt8 = raw.load(littleEndianAt: base + 50)
            let tail: UInt64 = raw.load(littleEndianAt: base + 56)  // rank, then 7 reserved bytes
            let rank = Int(tail & 0xFF)
            if kind == UInt8(ContainerLayout.Kind.blobReference.rawValue) {
                // A blob reference (FORMAT.md §4.3.1): its record lies in this file, in
                // record order like any other; its payload lies in the target file.
                let valid = tail >> 8 == 0
                    && recordOffset % 8 == 0 && recordOffset >= previousEnd && recordOffset <= end && headerLength <= end
                    && recordOffset + UInt64(ContainerLayout.frameSize) + headerLength <= end
                    && payloadOffset <= UInt64(Int.max) && storedSize <= UInt64(Int.max) && rawSize <= UInt64(Int.max)
                    && nameOffset <= namesLength && nameLength <= namesLength - nameOffset
                    && rank <= Shape.maximumRank && dimsOffset <= dimsCount && rank <= dimsCount - dimsOffset
                guard valid else { throw describeInvalidEntry(index, previousEnd: previousEnd, dataEnd: dataEnd, dimsCount: dimsCount, namesLength: namesLength) }
                guard ContainerIndex.isValidUTF8(UnsafeRawBufferPointer(start: names + nameOffset, count: nameLength)) else {
                    throw CheckpointError(.invalidField(field: "index entry \(index)", reason: "name is not valid UTF-8"))
                }
                previousEnd = recordOffset + UInt64(ContainerLayout.frameSize) + headerLength
                continue
            }
            if kind != UInt8(ContainerLayout.Kind.blob.rawValue) {
                // A kind this version cannot read (a future blob reference): its name and
                // dimensions must still be sound, its location is not ours to judge.
                // Reading it fails with unsupportedRecordKind; the other blobs stay readable.
                guard tail >> 8 == 0, nameOffset <= namesLength, nameLength <= namesLength - nameOffset,
                      rank <= Shape.maximumRank, dimsOffset <= dimsCount, rank <= dimsCount - dimsOffset,
                      ContainerIndex.isValidUTF8(UnsafeRawBufferPointer(start: names + nameOffset, count: nameLength))
                else { throw describeInvalidEntry(index, previousEnd: previousEnd, dataEnd: dataEnd, dimsCount: dimsCount, namesLength: namesLength) }
                continue
            }
            // Every bound is < 2^63, so none of these sums can overflow.
            let valid = tail >> 8 == 0
                && recordOffset % 8 == 0 && recordOffset >= previousEnd && recordOffset <= end && headerLength <= end
                && payloadOffset >= recordOffset + UInt64(ContainerLayout.frameSize) + headerLength
                && payloadOffset <= end && storedSize <= end - payloadOffset && rawSize <= UInt64(Int.max)
                && nameOffset <= namesLength && nameLength <= namesLength - nameOffset
                && rank <= Shape.maximumRank && dimsOffset <= dimsCount && rank <= dimsCount - dimsOffset
            guard valid else { throw describeInvalidEntry(index, previousEnd: previousEnd, dataEnd: dataEnd, dimsCount: dimsCount, namesLength: namesLength) }
            guard ContainerIndex.isValidUTF8(UnsafeRawBufferPointer(start: names + nameOffset, count: nameLength)) else {
                throw CheckpointError(.invalidField(field: "index entry \(index)", reason: "name is not valid UTF-8"))
            }
            previousEnd = payloadOffset + storedSize
        }
    }

    /// The precise reason an entry failed validation (the slow path of validateEntries).
    private func describeInvalidEntry(_ index: Int, previousEnd: UInt64, dataEnd: Int, dimsCount: Int, namesLength: Int) -> CheckpointError {
        let raw = self.raw
        let base = entryBase(index)
        func bad(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "index entry \(index)", reason: reason)) }
        let tail: UInt64 = raw.load(littleEndianAt: base + 56)
        if tail >> 8 != 0 { return bad("reserved bytes not zero") }
        let rawSize: UInt64 = raw.load(littleEndianAt: base + 24)
        if rawSize > UInt64(Int.max) { return bad("raw size \(rawSize)") }
        let nameOffset = Int(raw.load(littleEndianAt: base + 32) as UInt32)
        let nameLength = Int(raw.load(littleEndianAt: base + 48) as UInt16)
        if nameOffset > namesLength || nameLength > namesLength - nameOffset { return bad("name outside the name pool") }
        let rank = Int(tail & 0xFF)
        let dimsOffset = Int(raw.load(littleEndianAt: base + 36) as UInt32)
        if rank > Shape.maximumRank || dimsOffset > dimsCount || rank > dimsCount - dimsOffset { return bad("dimensions outside the pool") }
        let recordOffset: UInt64 = raw.load(littleEndianAt: base)
        let payloadOffset: UInt64 = raw.load(littleEndianAt: base + 8)
        let storedSize: UInt64 = raw.load(littleEndianAt: base + 16)
        return bad("record at \(recordOffset), payload at \(payloadOffset)+\(storedSize) is outside the data area (ends at \(dataEnd)) or overlaps the previous record (which ends at \(previousEnd))")
    }

    /// The name order table is a permutation whose names strictly ascend. No
    /// "seen" set is needed: strictly ascending names are distinct, so no entry
    /// appears twice, and `count` distinct entries below `count` are all of them.
    private func validateNameOrder() throws(CheckpointError) {
        var previous: UnsafeRawBufferPointer?
        for position in 0..<count {
            let index = Int(raw.load(littleEndianAt: orderStart + 4 * position) as UInt32)
            guard index < count else {
                throw CheckpointError(.invalidField(field: "index name order", reason: "position \(position) is not a permutation entry"))
            }
            let name = nameBytes(index)
            if let previous, !ContainerIndex.precedes(previous, name) {
                throw CheckpointError(.invalidField(field: "index name order", reason: "names not strictly ascending at position \(position)"))
            }
            previous = name
        }
    }

    private static func parseMetadata(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> [String: String] {
        var metadata: [String: String] = [:]
        var offset = 0
        var previousKey: [UInt8]?
        func bad(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "file metadata", reason: reason)) }
        while offset < bytes.count {
            guard bytes.count - offset >= 2 else { throw bad("truncated key length") }
            let keyLength = Int(bytes.load(littleEndianAt: offset) as UInt16)
            offset += 2
            guard keyLength > 0, bytes.count - offset >= keyLength + 4 else { throw bad("truncated key") }
            let keyBytes = Array(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + keyLength)]))
            offset += keyLength
            let valueLength = Int(bytes.load(littleEndianAt: offset) as UInt32)
            offset += 4
            guard bytes.count - offset >= valueLength else { throw bad("truncated value") }
            guard let key = String(validating: keyBytes, as: UTF8.self),
                  let value = String(validating: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + valueLength)]), as: UTF8.self)
            else { throw bad("not valid UTF-8") }
            offset += valueLength
            if let previousKey, !previousKey.lexicographicallyPrecedes(keyBytes) { throw bad("keys not strictly ascending") }
            previousKey = keyBytes
            // Keys are distinct bytes (strictly ascending), but Swift's String merges canonically
            // equivalent ones (NFC/NFD): refuse rather than silently keep one value.
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw bad("key '\(key.prefix(64))' has a canonically equivalent twin that a Swift String dictionary cannot keep apart")
            }
        }
        return metadata
    }

    // MARK: Access

    func nameBytes(_ index: Int) -> UnsafeRawBufferPointer {
        let range = nameTable.nameRange(ofEntry: index)
        return UnsafeRawBufferPointer(rebasing: raw[(namesStart + range.lowerBound)..<(namesStart + range.upperBound)])
    }

    /// The whole name pool as one string, or nil when it is not valid UTF-8 as a
    /// whole (unused bytes between names): every name is valid UTF-8, so in a
    /// valid pool each name's byte range is a range of the string.
    func namePoolString() -> String? {
        let pool = UnsafeRawBufferPointer(rebasing: raw[namesStart..<(namesStart + namesLength)])
        guard ContainerIndex.isValidUTF8(pool) else { return nil }
        return String(unsafeUninitializedCapacity: pool.count) { buffer in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: pool)
            return pool.count
        }
    }

    /// The name of entry `index` (validated as UTF-8 when the index was opened).
    func name(_ index: Int) -> String {
        let bytes = nameBytes(index)
        return String(unsafeUninitializedCapacity: bytes.count) { buffer in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
            return bytes.count
        }
    }

    /// The record offset entry `index` gives (validated at open for kind-1 entries).
    func recordOffset(_ index: Int) -> Int { Int(clamping: raw.load(littleEndianAt: entryBase(index)) as UInt64) }

    /// The name-order table and the entries' name fields, read straight from the
    /// body: what ``BlobNameList`` needs per name, without going through the index
    /// object (valid while this index lives).
    struct NameTable {
        fileprivate let order: UnsafeRawPointer
        fileprivate let entries: UnsafeRawPointer

        /// The entry number at `position` in name order.
        @inline(__always) func entry(at position: Int) -> Int {
            Int(UInt32(littleEndian: order.loadUnaligned(fromByteOffset: 4 * position, as: UInt32.self)))
        }

        /// Where entry `entry`'s name lies in the name pool (validated when the index was opened).
        @inline(__always) func nameRange(ofEntry entry: Int) -> Range<Int> {
            let fields = entries + entry * ContainerIndex.entrySize
            let offset = Int(UInt32(littleEndian: fields.loadUnaligned(fromByteOffset: 32, as: UInt32.self)))
            return offset..<(offset + Int(UInt16(littleEndian: fields.loadUnaligned(fromByteOffset: 48, as: UInt16.self))))
        }
    }

    var nameTable: NameTable { NameTable(order: raw.baseAddress! + orderStart, entries: raw.baseAddress! + entriesStart) }

    /// Entry numbers in name order.
    func entryInNameOrder(_ position: Int) -> Int { nameTable.entry(at: position) }

    /// Binary search by name: O(log n) byte comparisons, no allocation.
    func lookup(_ name: String) -> Int? {
        var name = name
        return name.withUTF8 { utf8 -> Int? in
            let key = UnsafeRawBufferPointer(utf8)
            var low = 0, high = count
            while low < high {
                let mid = (low + high) / 2
                let candidate = entryInNameOrder(mid)
                let bytes = nameBytes(candidate)
                if ContainerIndex.precedes(bytes, key) { low = mid + 1 } else if ContainerIndex.precedes(key, bytes) { high = mid } else { return candidate }
            }
            return nil
        }
    }

    /// The descriptor of entry `index`; throws when it names a dtype, codec or filter this reader does not know.
    func descriptor(_ index: Int) throws(CheckpointError) -> BlobDescriptor {
        let raw = self.raw
        let base = entryBase(index)
        let name = self.name(index)
        do throws(CheckpointError) {
            let kind: UInt8 = raw.load(littleEndianAt: base + 50)
            let isReference = kind == UInt8(ContainerLayout.Kind.blobReference.rawValue)
            guard kind == UInt8(ContainerLayout.Kind.blob.rawValue) || isReference else { throw CheckpointError(.unsupportedRecordKind(UInt16(kind))) }
            let dtypeID: UInt8 = raw.load(littleEndianAt: base + 51)
            guard let dtype = DType(rawValue: dtypeID) else { throw CheckpointError(.unknownDType("id \(dtypeID)")) }
            let compression = try Compression(id: raw.load(littleEndianAt: base + 52), level: Int(raw.load(littleEndianAt: base + 53) as UInt8))
            let filterID: UInt8 = raw.load(littleEndianAt: base + 54)
            let filterSize = Int(raw.load(littleEndianAt: base + 55) as UInt8)
            let filter: Filter
            switch filterID {
            case 0: filter = .none
            case 1 where (2...16).contains(filterSize): filter = .shuffle(elementSize: filterSize)
            case 2 where [2, 4, 8].contains(filterSize): filter = .rotateShuffle(elementSize: filterSize)
            default: throw CheckpointError(.unknownFilter(filterID))
            }
            let rank = Int(raw.load(littleEndianAt: base + 56) as UInt8)
            let dimsOffset = Int(raw.load(littleEndianAt: base + 36) as UInt32)
            var dimensions: [Int] = []
            dimensions.reserveCapacity(rank)
            for d in 0..<rank {
                let value: UInt64 = raw.load(littleEndianAt: dimsStart + 8 * (dimsOffset + d))
                guard value <= UInt64(Int.max) else { throw CheckpointError(.invalidShape(reason: "dimension \(value)")) }
                dimensions.append(Int(value))
            }
            let shape = try Shape(dimensions)
            let rawSize = Int(raw.load(littleEndianAt: base + 24) as UInt64)
            let storedSize = Int(raw.load(littleEndianAt: base + 16) as UInt64)
            // The raw size must follow from the shape (strings: at least their length table) and,
            // uncompressed, equal the stored size: nothing is ever allocated from an unchecked size.
            if let expected = try shape.byteCount(for: dtype) {
                guard rawSize == expected else {
                    throw CheckpointError(.sizeMismatch(what: "raw size of a \(dtype) blob of shape \(shape)", expected: UInt64(expected), actual: UInt64(rawSize)))
                }
            } else {
                try StringTensor.checkMinimumSize(rawSize, count: shape.elementCount)
            }
            guard compression != .none || rawSize == storedSize else {
                throw CheckpointError(.sizeMismatch(what: "stored size of an uncompressed blob", expected: UInt64(rawSize), actual: UInt64(storedSize)))
            }
            return BlobDescriptor(
                name: name, dtype: dtype, shape: shape, compression: compression, filter: filter,
                rawSizeInBytes: rawSize,
                storedSizeInBytes: storedSize,
                rawCRC32C: raw.load(littleEndianAt: base + 44),
                recordOffset: Int(raw.load(littleEndianAt: base) as UInt64),
                payloadOffset: Int(raw.load(littleEndianAt: base + 8) as UInt64),
                blobHeaderLength: Int(raw.load(littleEndianAt: base + 40) as UInt32),
                isReference: isReference)
        } catch {
            throw error.adding(blobName: name)
        }
    }

    // MARK: Helpers

    static func precedes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        let common = min(a.count, b.count)
        if common > 0 {
            let order = memcmpBytes(a.baseAddress!, b.baseAddress!, common)
            if order != 0 { return order < 0 }
        }
        return a.count < b.count
    }

    static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // ASCII fast path, 8 bytes at a time.
        var i = 0
        var high: UInt64 = 0
        while i + 8 <= bytes.count {
            high |= bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < bytes.count {
            high |= UInt64(bytes[i])
            i += 1
        }
        if high & 0x8080_8080_8080_8080 == 0 { return true }
        return String(validating: bytes, as: UTF8.self) != nil
    }
}

extension BlobHeader {
    /// `"CKBH"` read as a little-endian UInt32.
    public static let magic: UInt32 = 0x4842_4B43
    /// The header layout version this code writes and reads.
    public static let version: UInt16 = 1
    /// Bytes of the fixed part that precedes the variable fields.
    public static let fixedSize = 64
    /// The longest name, in UTF-8 bytes.
    public static let maximumNameLength = Int(UInt16.max)

    /// The number of bytes ``encoded()`` produces.
    public var encodedSize: Int {
        BlobHeader.fixedSize + 8 * shape.rank + name.utf8.count + attributesEncodedSize + 8 * chunks.count + 4
    }

    private var attributesEncodedSize: Int {
        attributes.reduce(0) { $0 + 2 + $1.key.utf8.count + 4 + $1.value.utf8.count }
    }

    /// Serialises the header (FORMAT.md, "Blob header"), ending with its CRC32C.
    ///
    /// - Throws: ``CheckpointError`` when a field cannot be represented
    ///   (see ``validateForEncoding()``).
    public func encoded() throws(CheckpointError) -> [UInt8] {
        try validateForEncoding()
        let length = encodedSize
        var w = LittleEndianWriter(capacity: length)
        w.write(littleEndian: BlobHeader.magic)
        w.write(littleEndian: BlobHeader.version)
        w.write(littleEndian: UInt16(0))  // flags
        w.write(littleEndian: UInt32(length))
        w.write(littleEndian: dtype.rawValue)
        w.write(littleEndian: compression.id)
        w.write(littleEndian: UInt8(compression.level))
        w.write(littleEndian: filter.id)
        w.write(littleEndian: UInt8(filter.elementSize))
        w.write(littleEndian: UInt8(shape.rank))
        w.write(littleEndian: UInt16(name.utf8.count))
        w.write(littleEndian: UInt32(attributesEncodedSize))
        w.write(littleEndian: UInt64(rawSizeInBytes))
        w.write(littleEndian: UInt64(storedSizeInBytes))
        w.write(littleEndian: UInt64(chunkSizeInBytes))
        w.write(littleEndian: UInt64(chunks.count))
        w.write(littleEndian: rawCRC32C)
        w.write(littleEndian: UInt32(0))  // reserved
        for dimension in shape.dimensions { w.write(littleEndian: UInt64(dimension)) }
        w.write(name.utf8)
        for key in attributes.keys.sorted(by: BlobHeader.utf8Order) {
            let value = attributes[key]!
            w.write(littleEndian: UInt16(key.utf8.count))
            w.write(key.utf8)
            w.write(littleEndian: UInt32(value.utf8.count))
            w.write(value.utf8)
        }
        for chunk in chunks {
            w.write(littleEndian: chunk.storedSize)
            w.write(littleEndian: chunk.crc32c)
        }
        let crc = w.bytes.withUnsafeBytes { CRC32C.checksum($0) }
        w.write(littleEndian: crc)
        assert(w.bytes.count == length)
        return w.bytes
    }

    /// Reads the total header length from the first ``fixedSize`` bytes, so a
    /// file reader knows how much more to read. Checks magic and version only.
    public static func encodedLength(fromFixedPart bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> Int {
        var r = LittleEndianReader(bytes, what: "blob header")
        let magic = try r.read(littleEndian: UInt32.self)
        guard magic == BlobHeader.magic else { throw CheckpointError(.badMagic(what: "blob header", expected: BlobHeader.magic, actual: magic), offset: 0) }
        let version = try r.read(littleEndian: UInt16.self)
        guard version == BlobHeader.version else { throw CheckpointError(.unsupportedVersion(what: "blob header", version: UInt32(version)), offset: 4) }
        _ = try r.read(littleEndian: UInt16.self)
        let length = Int(try r.read(littleEndian: UInt32.self))
        guard length >= fixedSize + 4 else {
            throw CheckpointError(.invalidField(field: "blob header length", reason: "\(length) is shorter than the fixed part"), offset: 8)
        }
        return length
    }

    /// Parses and fully validates a header at the start of `bytes`.
    ///
    /// Checks, in order: the fixed part is present; magic and version; the
    /// declared length fits in `bytes`; the CRC32C; then every field and every
    /// relation between fields (see FORMAT.md, "What a reader must reject").
    /// Allocates nothing proportional to a declared size, only to bytes present.
    ///
    /// - Returns: the header and its length in bytes (where the payload begins in the plain encoded form).
    public static func decode(from bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> (header: BlobHeader, length: Int) {
        guard bytes.count >= fixedSize else {
            throw CheckpointError(.truncated(what: "blob header", needed: UInt64(fixedSize), available: UInt64(bytes.count)))
        }
        let length = try encodedLength(fromFixedPart: bytes)
        guard length <= bytes.count else {
            throw CheckpointError(.truncated(what: "blob header", needed: UInt64(length), available: UInt64(bytes.count)))
        }
        let stored = bytes.loadUnaligned(fromByteOffset: length - 4, as: UInt32.self).littleEndian
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(length - 4)]))
        guard stored == computed else {
            throw CheckpointError(.headerChecksumMismatch(expected: stored, actual: computed), offset: UInt64(length - 4))
        }
        let header = try parseFields(UnsafeRawBufferPointer(rebasing: bytes[0..<(length - 4)]))
        return (header, length)
    }

    /// Parses the fields of a checksum-verified header (without its trailing CRC).
    private static func parseFields(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> BlobHeader {
        func invalid(_ field: String, _ reason: String) -> CheckpointError {
            CheckpointError(.invalidField(field: field, reason: reason))
        }
        var r = LittleEndianReader(bytes, what: "blob header")
        _ = try r.read(littleEndian: UInt32.self)  // magic, checked
        _ = try r.read(littleEndian: UInt16.self)  // version, checked
        let flags = try r.read(littleEndian: UInt16.self)
        guard flags == 0 else { throw invalid("blob header flags", "reserved bits set: 0x\(String(flags, radix: 16))") }
        _ = try r.read(littleEndian: UInt32.self)  // length, checked
        let dtypeID = try r.read(littleEndian: UInt8.self)
        guard let dtype = DType(rawValue: dtypeID) else { throw CheckpointError(.unknownDType("id \(dtypeID)")) }
        let codecID = try r.read(littleEndian: UInt8.self)
        let level = try r.read(littleEndian: UInt8.self)
        let compression = try Compression(id: codecID, level: Int(level))
        let filterID = try r.read(littleEndian: UInt8.self)
        let filterSize = Int(try r.read(littleEndian: UInt8.self))
        let filter = try Filter(id: filterID, elementSize: filterSize)
        if filter != .none, compression == .none {
            throw invalid("filter", "\(filter.id == 1 ? "shuffle" : "rotate + shuffle") without compression")
        }
        let rank = Int(try r.read(littleEndian: UInt8.self))
        guard rank <= Shape.maximumRank else { throw CheckpointError(.invalidShape(reason: "rank \(rank) exceeds \(Shape.maximumRank)")) }
        let nameLength = Int(try r.read(littleEndian: UInt16.self))
        let attributesLength = Int(try r.read(littleEndian: UInt32.self))
        let rawSize64 = try r.read(littleEndian: UInt64.self)
        let storedSize64 = try r.read(littleEndian: UInt64.self)
        let chunkSize64 = try r.read(littleEndian: UInt64.self)
        let chunkCount64 = try r.read(littleEndian: UInt64.self)
        let rawCRC = try r.read(littleEndian: UInt32.self)
        let reserved = try r.read(littleEndian: UInt32.self)
        guard reserved == 0 else { throw invalid("blob header reserved field", "not zero") }

        guard rawSize64 <= UInt64(Int.max) else { throw invalid("raw size", "\(rawSize64) exceeds 2^63-1") }
        guard (1...UInt64(EncodeOptions.maximumChunkSize)).contains(chunkSize64) else {
            throw invalid("chunk size", "\(chunkSize64) outside 1...\(EncodeOptions.maximumChunkSize)")
        }
        let rawSize = Int(rawSize64), chunkSize = Int(chunkSize64)
        let expectedChunks = chunkCount(rawSize: rawSize, chunkSize: chunkSize)
        guard chunkCount64 == UInt64(expectedChunks) else {
            throw invalid("chunk count", "\(chunkCount64), but \(rawSize) bytes in chunks of \(chunkSize) make \(expectedChunks)")
        }
        // The variable part must account for every byte of the header exactly
        // (the chunk count is bounded by the bytes present first, so 8 × count cannot overflow).
        guard chunkCount64 <= UInt64(r.remaining) / 8 else {
            throw invalid("blob header length", "\(chunkCount64) chunks need more than the \(bytes.count + 4) header bytes")
        }
        let variableLength = UInt64(8 * rank) + UInt64(nameLength) + UInt64(attributesLength) + 8 * chunkCount64
        guard variableLength == UInt64(r.remaining) else {
            throw invalid("blob header length", "fields need \(UInt64(BlobHeader.fixedSize) + variableLength + 4) bytes, header has \(bytes.count + 4)")
        }

        var dimensions: [Int] = []
        dimensions.reserveCapacity(rank)
        for _ in 0..<rank {
            let dimension = try r.read(littleEndian: UInt64.self)
            guard dimension <= UInt64(Int.max) else { throw CheckpointError(.invalidShape(reason: "dimension \(dimension) exceeds 2^63-1")) }
            dimensions.append(Int(dimension))
        }
        let shape = try Shape(dimensions)

        let nameBytes = try r.readBytes(nameLength)
        guard let name = String(validatingUTF8Bytes: nameBytes) else { throw invalid("blob name", "not valid UTF-8") }
        try validateName(name)

        let attributes = try parseAttributes(try r.readBytes(attributesLength))

        // The raw size must be exactly what the shape and dtype declare.
        if let expected = try shape.byteCount(for: dtype) {
            guard expected == rawSize else {
                throw CheckpointError(.sizeMismatch(what: "raw size of \(dtype) \(shape)", expected: UInt64(expected), actual: rawSize64))
            }
        } else {
            try StringTensor.checkMinimumSize(rawSize, count: shape.elementCount)
        }

        var chunks: [ChunkEntry] = []
        chunks.reserveCapacity(expectedChunks)
        var storedTotal: UInt64 = 0
        for index in 0..<expectedChunks {
            let entry = ChunkEntry(storedSize: try r.read(littleEndian: UInt32.self), crc32c: try r.read(littleEndian: UInt32.self))
            let rawLength = UInt64(index == expectedChunks - 1 ? rawSize - index * chunkSize : chunkSize)
            let stored = UInt64(entry.storedSize)
            guard stored <= rawLength else {
                throw invalid("chunk \(index) stored size", "\(stored) exceeds its raw length \(rawLength)")
            }
            if stored < rawLength {
                guard compression != .none else { throw invalid("chunk \(index) stored size", "\(stored) < raw length \(rawLength) with no compression") }
                guard stored > 0, rawLength <= stored * compression.maximumExpansion else {
                    throw invalid("chunk \(index) stored size", "\(stored) bytes cannot expand to \(rawLength) with \(compression.name)")
                }
            }
            storedTotal += stored
            chunks.append(entry)
        }
        guard storedTotal == storedSize64 else {
            throw invalid("stored size", "\(storedSize64), but the chunk table sums to \(storedTotal)")
        }
        return BlobHeader(
            name: name, dtype: dtype, shape: shape, compression: compression, filter: filter,
            chunkSizeInBytes: chunkSize, rawSizeInBytes: rawSize, rawCRC32C: rawCRC, chunks: chunks,
            attributes: attributes)
    }

    private static func parseAttributes(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> [String: String] {
        var r = LittleEndianReader(bytes, what: "blob attributes")
        var attributes: [String: String] = [:]
        var previousKey: String?
        while r.remaining > 0 {
            let keyLength = Int(try r.read(littleEndian: UInt16.self))
            guard let key = String(validatingUTF8Bytes: try r.readBytes(keyLength)), !key.isEmpty else {
                throw CheckpointError(.invalidField(field: "attribute key", reason: "empty or not valid UTF-8"))
            }
            let valueLength = Int(try r.read(littleEndian: UInt32.self))
            guard let value = String(validatingUTF8Bytes: try r.readBytes(valueLength)) else {
                throw CheckpointError(.invalidField(field: "attribute '\(key)'", reason: "value is not valid UTF-8"))
            }
            if let previousKey, !utf8Order(previousKey, key) {
                throw CheckpointError(.invalidField(field: "attribute '\(key)'", reason: "keys not strictly ascending"))
            }
            previousKey = key
            // Distinct bytes (strictly ascending), but Swift's String merges canonically equivalent keys.
            guard attributes.updateValue(value, forKey: key) == nil else {
                throw CheckpointError(.invalidField(field: "attribute '\(key)'", reason: "has a canonically equivalent twin that a Swift String dictionary cannot keep apart"))
            }
        }
        return attributes
    }

    /// Byte-wise UTF-8 order, the order attributes are stored in.
    static func utf8Order(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    /// Checks a blob name: at most ``maximumNameLength`` UTF-8 bytes, no NUL.
    /// The empty name is a name (safetensors and numpy allow it; FORMAT.md §3.2).
    public static func validateName(_ name: String) throws(CheckpointError) {
        let length = name.utf8.count
        guard length <= maximumNameLength else {
            throw CheckpointError(.invalidField(field: "blob name", reason: "\(length) bytes exceeds \(maximumNameLength)"))
        }
        guard !name.utf8.contains(0) else { throw CheckpointError(.invalidField(field: "blob name", reason: "contains NUL")) }
    }

    /// Checks user attributes: keys non-empty and at most 65,535 UTF-8 bytes,
    /// the whole attributes area at most 2^32−1 bytes.
    public static func validateAttributes(_ attributes: [String: String]) throws(CheckpointError) {
        var total = 0
        for (key, value) in attributes {
            guard !key.isEmpty, key.utf8.count <= Int(UInt16.max) else {
                throw CheckpointError(.invalidField(field: "attribute key '\(key.prefix(64))'", reason: "empty or longer than 65535 bytes"))
            }
            total += 2 + key.utf8.count + 4 + value.utf8.count
        }
        guard total <= Int(UInt32.max) else {
            throw CheckpointError(.limitExceeded(what: "attributes size", limit: UInt64(UInt32.max), actual: UInt64(total)))
        }
    }

    /// Checks that every field can be written and that the fields agree.
    public func validateForEncoding() throws(CheckpointError) {
        try BlobHeader.validateName(name)
        try BlobHeader.validateAttributes(attributes)
        guard encodedSize <= Int(UInt32.max) else {
            throw CheckpointError(.limitExceeded(what: "blob header size", limit: UInt64(UInt32.max), actual: UInt64(encodedSize)))
        }
        guard (1...EncodeOptions.maximumChunkSize).contains(chunkSizeInBytes) else {
            throw CheckpointError(.invalidField(field: "chunk size", reason: "\(chunkSizeInBytes) outside 1...\(EncodeOptions.maximumChunkSize)"))
        }
        guard chunks.count == BlobHeader.chunkCount(rawSize: rawSizeInBytes, chunkSize: chunkSizeInBytes) else {
            throw CheckpointError(.invalidField(field: "chunk count", reason: "\(chunks.count) does not match raw size and chunk size"))
        }
        if let expected = try shape.byteCount(for: dtype), expected != rawSizeInBytes {
            throw CheckpointError(.sizeMismatch(what: "raw size of \(dtype) \(shape)", expected: UInt64(expected), actual: UInt64(rawSizeInBytes)))
        }
    }
}

import BlobCodec

/// A Caffe2 `minidb` file (`db_type: "minidb"`, `caffe2/core/db.cc`): the
/// database Caffe2's `Save` op writes, read and written as Caffe2 does.
///
/// Layout: records back to back, no header, no index, **no checksums**:
///
///     record := keyLength: Int32 LE (> 0) | valueLength: Int32 LE (> 0) | key | value
///
/// Each value is a serialized `caffe2.BlobProto` (`caffe2/proto/caffe2.proto`):
/// `name` (1), `type` (2), `tensor` (3, a `TensorProto`), `content` (4). A
/// tensor of more than 1,000,000 elements (`caffe2_tensor_chunk_size`) is
/// split into several records whose `TensorProto.segment` says which
/// elements each holds; every tensor record's key is `NAME#%CHUNK`
/// (`kChunkIdSeparator`), and a reader takes the blob name from the key up
/// to the first `#%`. A `TensorProto` holds `dims` (1), `data_type` (2) and
/// its elements in the field for that type: `float_data` (3), `int32_data`
/// (4, also BOOL, UINT8, INT8, UINT16, INT16 and FLOAT16, whose bits are
/// stored as an unsigned 16-bit value), `byte_data` (5, those same small
/// types when Caffe2 ran with `caffe2_serialize_fp16_as_bytes` /
/// `caffe2_serialize_using_bytes_as_holder`, and the legacy BYTE type),
/// `string_data` (6), `double_data` (9), `int64_data` (10); `raw_data` (13),
/// little-endian elements, is read for any fixed-size type. A `std::string`
/// blob (`type` `"std::string"`, key `NAME`) holds its bytes in `content`.
///
/// Type mapping: FLOAT ↔ `DType.float32`, INT32 ↔ `DType.int32`, INT64 ↔
/// `DType.int64`, DOUBLE ↔ `DType.float64`, FLOAT16 ↔ `DType.float16`,
/// BOOL, UINT8, INT8, UINT16, INT16 ↔ the same, STRING ↔ `DType.string`
/// (elements must be UTF-8), BYTE → `DType.uint8`, and a `std::string` blob
/// ↔ `DType.raw`. Other dtypes cannot be written (Caffe2 has no type for them).
///
/// Opening maps the file and parses every record (the format has no index:
/// O(file size)), checking every length against the file and every tensor's
/// chunks against its shape (they must cover it exactly once); reading a
/// blob decodes its records into the destination. Errors name the file, the
/// blob and the offset of the record (or byte) at fault.
public final class MiniDBFile: @unchecked Sendable {
    /// Caffe2's default chunk size in elements (`caffe2_tensor_chunk_size`).
    public static let defaultChunkElementCount = 1_000_000
    /// Caffe2's separator between a blob name and its chunk number in a key.
    public static let chunkIDSeparator = "#%"
    /// The blob holding a checkpoint's blob list, as Caffe2's
    /// `CheckpointManager` names it: a 1-D STRING tensor.
    public static let blobListBlobName = "blob_names"
    /// The longest key accepted (bytes).
    public static let maximumKeyLength = 1 << 16
    /// The most records a file may hold.
    public static let maximumRecordCount = 50_000_000

    /// One blob: its chunks' records, assembled.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var shape: Shape
        /// The decoded size (for STRING, `StringTensor`'s layout).
        public var byteCount: Int
        /// The number of records holding it.
        public var recordCount: Int
        /// The bytes of those records' values.
        public var storedByteCount: Int
        /// The offset of its first record in the file.
        public var offset: Int
        /// The `BlobProto.type` (`"Tensor"`, `"std::string"`, a counter's type…).
        public var caffe2Type: String
        /// The `TensorProto.data_type` number, nil for a `content` blob.
        public var caffe2DataType: Int?
    }

    /// A tensor record's parsed fields (views into the mapped file).
    struct Chunk {
        var recordOffset: Int
        var dims: [Int64] = []
        var dataType: Int64?
        var segment: (begin: Int64, end: Int64)?
        var floatData: [NumericRun] = []
        var int32Data: [NumericRun] = []
        var doubleData: [NumericRun] = []
        var int64Data: [NumericRun] = []
        var byteData: UnsafeRawBufferPointer?
        var rawData: UnsafeRawBufferPointer?
        var stringData: [UnsafeRawBufferPointer] = []
        /// Elements this chunk holds (set once the type is known).
        var elementCount = 0
        var begin = 0
    }

    /// A run of a repeated numeric field: packed bytes, or one unpacked element's bytes.
    struct NumericRun {
        var bytes: UnsafeRawBufferPointer
        var count: Int
    }

    enum Body {
        case tensor([Chunk], caffe2Type: Int64)
        case content(UnsafeRawBufferPointer)
    }

    public let path: String
    /// The file size in bytes.
    public let fileSize: Int
    /// The blobs, sorted by name (UTF-8 bytes).
    public let entries: [Entry]
    /// The blob list stored in ``blobListBlobName``, when the file has one (1-D STRING).
    public let storedBlobList: [String]?
    private let map: MappedFile
    private let bodies: [BlobName: Body]
    private let index: [BlobName: Int]

    private init(path: String, map: MappedFile, entries: [Entry], bodies: [BlobName: Body], storedBlobList: [String]?) {
        self.path = path
        self.map = map
        self.fileSize = map.bytes.count
        self.entries = entries
        self.bodies = bodies
        self.storedBlobList = storedBlobList
        var index: [BlobName: Int] = [:]
        for (i, entry) in entries.enumerated() { index[BlobName(entry.name)] = i }
        self.index = index
    }

    /// The blob names, sorted by their UTF-8 bytes.
    public var names: [String] { entries.map(\.name) }

    /// True when the file has a blob of this name.
    public func contains(_ name: String) -> Bool { index[BlobName(name)] != nil }

    /// The entry of `name`.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound`.
    public func entry(_ name: String) throws(CheckpointError) -> Entry {
        guard let i = index[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name, path: path) }
        return entries[i]
    }

    // MARK: Opening

    /// Opens and validates a minidb file: every record, every `BlobProto`,
    /// every tensor's chunks (see ``MiniDBFile``).
    ///
    /// - Throws: `CheckpointError` naming the file, the blob and the offset:
    ///   a truncated record, a key or value length ≤ 0, a key that is not
    ///   UTF-8 or longer than ``maximumKeyLength``, malformed protobuf, an
    ///   unsupported data type or `data_format`, chunks that disagree on dims
    ///   or type, overlap, or leave elements out, element counts that differ
    ///   from the segment, strings that are not UTF-8, sizes over the caps.
    public static func open(_ path: String) throws(CheckpointError) -> MiniDBFile {
        try open(path, calls: .live)
    }

    static func open(_ path: String, calls: SystemCalls) throws(CheckpointError) -> MiniDBFile {
        let map = try MappedFile(path, keepDescriptor: false, calls: calls)
        do throws(CheckpointError) {
            return try parse(map, path: path)
        } catch {
            throw error.path == nil ? error.adding(path: path) : error
        }
    }

    private static func parse(_ map: MappedFile, path: String) throws(CheckpointError) -> MiniDBFile {
        let bytes = map.bytes
        guard !bytes.isEmpty else {
            throw CheckpointError(.truncated(what: "minidb file (no record)", needed: 8, available: 0), offset: 0)
        }
        var groups: [BlobName: (name: String, type: String, firstOffset: Int, stored: Int, records: [(offset: Int, blob: ParsedBlob)])] = [:]
        var order: [BlobName] = []
        var offset = 0
        var recordCount = 0
        while offset < bytes.count {
            recordCount += 1
            guard recordCount <= maximumRecordCount else {
                throw CheckpointError(.limitExceeded(what: "minidb records", limit: UInt64(maximumRecordCount), actual: UInt64(recordCount)), offset: UInt64(offset))
            }
            let available = bytes.count - offset
            guard available >= 8 else {
                throw CheckpointError(.truncated(what: "minidb record header", needed: 8, available: UInt64(available)), offset: UInt64(offset))
            }
            let keyLength = Int(bytes.load(littleEndianAt: offset) as Int32)
            let valueLength = Int(bytes.load(littleEndianAt: offset + 4) as Int32)
            guard keyLength > 0, keyLength <= maximumKeyLength else {
                throw CheckpointError(.invalidField(field: "minidb key length", reason: "\(keyLength) is not in 1...\(maximumKeyLength)"), offset: UInt64(offset))
            }
            guard valueLength > 0 else {
                throw CheckpointError(.invalidField(field: "minidb value length", reason: "\(valueLength) is not positive"), offset: UInt64(offset + 4))
            }
            guard keyLength + valueLength <= available - 8 else {
                throw CheckpointError(.truncated(what: "minidb record (key and value)", needed: UInt64(keyLength + valueLength), available: UInt64(available - 8)),
                                      offset: UInt64(offset))
            }
            let keyBytes = UnsafeRawBufferPointer(rebasing: bytes[(offset + 8)..<(offset + 8 + keyLength)])
            guard let key = String(validating: keyBytes, as: UTF8.self) else {
                throw CheckpointError(.invalidField(field: "minidb key", reason: "not valid UTF-8"), offset: UInt64(offset + 8))
            }
            let name = blobName(fromKey: key)
            guard !name.isEmpty else {
                throw CheckpointError(.invalidField(field: "minidb key", reason: "'\(key.prefix(80))' names no blob"), offset: UInt64(offset + 8))
            }
            let valueOffset = offset + 8 + keyLength
            let value = UnsafeRawBufferPointer(rebasing: bytes[valueOffset..<(valueOffset + valueLength)])
            let blob: ParsedBlob
            do throws(CheckpointError) {
                blob = try parseBlobProto(value, offset: valueOffset, recordOffset: offset)
            } catch {
                throw error.adding(blobName: name)
            }
            let keyName = BlobName(name)
            if groups[keyName] == nil {
                groups[keyName] = (name, blob.type, offset, 0, [])
                order.append(keyName)
            }
            groups[keyName]!.stored += valueLength
            groups[keyName]!.records.append((offset, blob))
            offset = valueOffset + valueLength
        }
        var entries: [Entry] = []
        var bodies: [BlobName: Body] = [:]
        for key in order {
            let group = groups[key]!
            do throws(CheckpointError) {
                let (entry, body) = try assemble(name: group.name, type: group.type, records: group.records, storedByteCount: group.stored, firstOffset: group.firstOffset)
                entries.append(entry)
                bodies[key] = body
            } catch {
                throw error.adding(blobName: group.name)
            }
        }
        entries.sort { BlobName($0.name) < BlobName($1.name) }
        var list: [String]?
        if let body = bodies[BlobName(blobListBlobName)], case let .tensor(chunks, dataType) = body, dataType == DataType.string.rawValue,
           let entry = entries.first(where: { $0.name == blobListBlobName }), entry.shape.rank == 1 {
            list = try decodeStrings(chunks, count: entry.shape.elementCount, name: blobListBlobName)
        }
        return MiniDBFile(path: path, map: map, entries: entries, bodies: bodies, storedBlobList: list)
    }

    /// The blob name a key stands for: up to the first `#%` (Caffe2's `LoadOp`).
    static func blobName(fromKey key: String) -> String {
        let bytes = Array(key.utf8)
        guard bytes.count >= 2, let at = (0..<(bytes.count - 1)).first(where: { bytes[$0] == UInt8(ascii: "#") && bytes[$0 + 1] == UInt8(ascii: "%") }) else {
            return key
        }
        // The separator is ASCII, so the prefix is valid UTF-8.
        return String(decoding: bytes[..<at], as: UTF8.self)
    }

    /// Caffe2's `TensorProto.DataType` numbers.
    enum DataType: Int64 {
        case undefined = 0, float = 1, int32 = 2, byte = 3, string = 4, bool = 5, uint8 = 6, int8 = 7
        case uint16 = 8, int16 = 9, int64 = 10, float16 = 12, double = 13

        var dtype: DType? {
            switch self {
            case .float: return .float32
            case .int32: return .int32
            case .byte, .uint8: return .uint8
            case .string: return .string
            case .bool: return .bool
            case .int8: return .int8
            case .uint16: return .uint16
            case .int16: return .int16
            case .int64: return .int64
            case .float16: return .float16
            case .double: return .float64
            case .undefined: return nil
            }
        }

        init?(_ dtype: DType) {
            switch dtype {
            case .float32: self = .float
            case .int32: self = .int32
            case .string: self = .string
            case .bool: self = .bool
            case .uint8: self = .uint8
            case .int8: self = .int8
            case .uint16: self = .uint16
            case .int16: self = .int16
            case .int64: self = .int64
            case .float16: self = .float16
            case .float64: self = .double
            default: return nil
            }
        }
    }

    struct ParsedBlob {
        var type: String
        var tensor: Chunk?
        var content: UnsafeRawBufferPointer?
    }

    static func parseBlobProto(_ value: UnsafeRawBufferPointer, offset: Int, recordOffset: Int) throws(CheckpointError) -> ParsedBlob {
        var reader = ProtobufReader(value, baseOffset: offset, what: "BlobProto")
        var blob = ParsedBlob(type: "")
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch field {
            case 2:
                try reader.expect(wireType, .lengthDelimited, field: "type")
                let (bytes, at) = try reader.readLengthDelimited()
                guard let type = String(validating: bytes, as: UTF8.self) else {
                    throw CheckpointError(.invalidField(field: "BlobProto.type", reason: "not valid UTF-8"), offset: UInt64(at))
                }
                blob.type = type
            case 3:
                try reader.expect(wireType, .lengthDelimited, field: "tensor")
                let (bytes, at) = try reader.readLengthDelimited()
                blob.tensor = try parseTensorProto(bytes, offset: at, recordOffset: recordOffset)
            case 4:
                try reader.expect(wireType, .lengthDelimited, field: "content")
                blob.content = try reader.readLengthDelimited().bytes
            default:
                // name (1), qtensor (5), content chunking (6, 7) and unknown fields.
                try reader.skip(wireType)
            }
        }
        return blob
    }

    private static func parseTensorProto(_ bytes: UnsafeRawBufferPointer, offset: Int, recordOffset: Int) throws(CheckpointError) -> Chunk {
        var reader = ProtobufReader(bytes, baseOffset: offset, what: "TensorProto")
        var chunk = Chunk(recordOffset: recordOffset)
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch field {
            case 1:  // dims: repeated int64, packed or not
                if wireType == .lengthDelimited {
                    let (run, at) = try reader.readLengthDelimited()
                    var inner = ProtobufReader(run, baseOffset: at, what: "TensorProto.dims")
                    while !inner.isAtEnd { chunk.dims.append(Int64(bitPattern: try inner.readVarint())) }
                } else {
                    try reader.expect(wireType, .varint, field: "dims")
                    chunk.dims.append(Int64(bitPattern: try reader.readVarint()))
                }
                guard chunk.dims.count <= Shape.maximumRank else {
                    throw CheckpointError(.invalidShape(reason: "rank above \(Shape.maximumRank)"), offset: UInt64(reader.offset))
                }
            case 2:
                try reader.expect(wireType, .varint, field: "data_type")
                chunk.dataType = Int64(bitPattern: try reader.readVarint())
            case 3: chunk.floatData.append(try numericRun(&reader, wireType, scalar: .fixed32, field: "float_data"))
            case 4: chunk.int32Data.append(try numericRun(&reader, wireType, scalar: .varint, field: "int32_data"))
            case 5:
                try reader.expect(wireType, .lengthDelimited, field: "byte_data")
                chunk.byteData = try reader.readLengthDelimited().bytes
            case 6:
                try reader.expect(wireType, .lengthDelimited, field: "string_data")
                chunk.stringData.append(try reader.readLengthDelimited().bytes)
            case 9: chunk.doubleData.append(try numericRun(&reader, wireType, scalar: .fixed64, field: "double_data"))
            case 10: chunk.int64Data.append(try numericRun(&reader, wireType, scalar: .varint, field: "int64_data"))
            case 11:
                try reader.expect(wireType, .lengthDelimited, field: "segment")
                let (run, at) = try reader.readLengthDelimited()
                var inner = ProtobufReader(run, baseOffset: at, what: "TensorProto.Segment")
                var begin: Int64?, end: Int64?
                while !inner.isAtEnd {
                    let (f, w) = try inner.readTag()
                    switch f {
                    case 1: try inner.expect(w, .varint, field: "begin"); begin = Int64(bitPattern: try inner.readVarint())
                    case 2: try inner.expect(w, .varint, field: "end"); end = Int64(bitPattern: try inner.readVarint())
                    default: try inner.skip(w)
                    }
                }
                guard let begin, let end else {
                    throw CheckpointError(.invalidField(field: "TensorProto.segment", reason: "lacks its required begin or end"), offset: UInt64(at))
                }
                chunk.segment = (begin, end)
            case 13:
                try reader.expect(wireType, .lengthDelimited, field: "raw_data")
                chunk.rawData = try reader.readLengthDelimited().bytes
            case 15:
                let at = reader.offset
                try reader.expect(wireType, .varint, field: "data_format")
                let format = try reader.readVarint()
                guard format == 0 else {
                    throw CheckpointError(.invalidField(field: "TensorProto.data_format", reason: "\(format) is not supported (only FMT_PROTOBUF, 0)"), offset: UInt64(at))
                }
            default:
                // name (7), device_detail (8) and unknown fields.
                try reader.skip(wireType)
            }
        }
        return chunk
    }

    /// A packed run (length-delimited) or one unpacked element of a repeated numeric field.
    private static func numericRun(_ reader: inout ProtobufReader, _ wireType: ProtobufWireType, scalar: ProtobufWireType, field: String) throws(CheckpointError) -> NumericRun {
        let start = reader.position
        if wireType == .lengthDelimited {
            let (run, at) = try reader.readLengthDelimited()
            switch scalar {
            case .fixed32, .fixed64:
                let size = scalar == .fixed32 ? 4 : 8
                guard run.count % size == 0 else {
                    throw CheckpointError(.invalidField(field: "TensorProto.\(field)", reason: "packed length \(run.count) is not a multiple of \(size)"), offset: UInt64(at))
                }
                return NumericRun(bytes: run, count: run.count / size)
            default:
                return NumericRun(bytes: run, count: try ProtobufReader.packedVarintCount(run, offset: at, what: "TensorProto.\(field)"))
            }
        }
        try reader.expect(wireType, scalar, field: field)
        try reader.skip(wireType)
        return NumericRun(bytes: UnsafeRawBufferPointer(rebasing: reader.bytes[start..<reader.position]), count: 1)
    }

    // MARK: Assembling

    private static func assemble(name: String, type: String, records: [(offset: Int, blob: ParsedBlob)], storedByteCount: Int,
                                 firstOffset: Int) throws(CheckpointError) -> (Entry, Body) {
        guard records.allSatisfy({ $0.blob.tensor != nil }) else {
            // A blob that is not a tensor: its content, in one record.
            guard records.count == 1, let content = records[0].blob.content else {
                let bad = records.first { $0.blob.tensor == nil && $0.blob.content == nil } ?? records[records.count - 1]
                throw CheckpointError(.invalidField(field: "BlobProto", reason: records.count == 1
                    ? "type '\(type)' holds neither a tensor nor content"
                    : "\(records.count) records for a blob that is not a tensor"), offset: UInt64(bad.offset))
            }
            let entry = Entry(name: name, dtype: .raw, shape: Shape(arrayLiteral: content.count), byteCount: content.count, recordCount: 1,
                              storedByteCount: storedByteCount, offset: firstOffset, caffe2Type: type, caffe2DataType: nil)
            return (entry, .content(content))
        }
        var chunks = records.map { $0.blob.tensor! }
        let first = chunks[0]
        guard let rawType = first.dataType else {
            throw CheckpointError(.invalidField(field: "TensorProto.data_type", reason: "missing (Caffe2 refuses such a tensor)"), offset: UInt64(first.recordOffset))
        }
        guard let dataType = DataType(rawValue: rawType), let dtype = dataType.dtype else {
            throw CheckpointError(.invalidField(field: "TensorProto.data_type", reason: "\(rawType) is not a supported Caffe2 data type"), offset: UInt64(first.recordOffset))
        }
        let dimensions = try first.dims.map { (d) throws(CheckpointError) -> Int in
            guard d >= 0 else { throw CheckpointError(.invalidShape(reason: "negative dimension \(d)"), offset: UInt64(first.recordOffset)) }
            return Int(d)
        }
        let shape: Shape
        do throws(CheckpointError) { shape = try Shape(dimensions) } catch { throw error.adding(offset: UInt64(first.recordOffset)) }
        let numel = shape.elementCount
        for i in chunks.indices {
            let chunk = chunks[i]
            guard chunk.dims == first.dims, chunk.dataType == rawType else {
                throw CheckpointError(.invalidField(field: "TensorProto", reason: "chunk dims \(chunk.dims) / data_type \(chunk.dataType.map(String.init) ?? "none") differ from the first chunk's \(first.dims) / \(rawType)"),
                                      offset: UInt64(chunk.recordOffset))
            }
            let (begin, end) = chunk.segment ?? (0, Int64(numel))
            guard begin >= 0, begin <= end, end <= Int64(numel) else {
                throw CheckpointError(.invalidField(field: "TensorProto.segment", reason: "[\(begin), \(end)) is not inside the tensor's \(numel) elements"), offset: UInt64(chunk.recordOffset))
            }
            let count = try elementCount(chunk, dataType)
            guard count == Int(end - begin) else {
                throw CheckpointError(.invalidField(field: "TensorProto", reason: "the chunk holds \(count) \(dtype) elements, its segment [\(begin), \(end)) says \(end - begin)"),
                                      offset: UInt64(chunk.recordOffset))
            }
            chunks[i].begin = Int(begin)
            chunks[i].elementCount = count
        }
        // Every element exactly once.
        chunks.sort { $0.begin < $1.begin }
        var covered = 0
        for chunk in chunks where chunk.elementCount > 0 {
            guard chunk.begin == covered else {
                let reason = chunk.begin < covered ? "chunk [\(chunk.begin), \(chunk.begin + chunk.elementCount)) overlaps another"
                                                   : "elements [\(covered), \(chunk.begin)) are in no chunk"
                throw CheckpointError(.invalidField(field: "TensorProto.segment", reason: reason), offset: UInt64(chunk.recordOffset))
            }
            covered += chunk.elementCount
        }
        guard covered == numel else {
            throw CheckpointError(.invalidField(field: "TensorProto.segment", reason: "elements [\(covered), \(numel)) are in no chunk (a record is missing)"),
                                  offset: UInt64(firstOffset))
        }
        let byteCount: Int
        if dtype == .string {
            var total = 0
            for chunk in chunks {
                for s in chunk.stringData {
                    guard String(validating: s, as: UTF8.self) != nil else {
                        throw CheckpointError(.invalidField(field: "TensorProto.string_data", reason: "an element is not UTF-8 (STRING blobs are read as UTF-8 strings)"),
                                              offset: UInt64(chunk.recordOffset))
                    }
                    total += s.count
                }
            }
            byteCount = 8 * numel + total
        } else {
            do throws(CheckpointError) { byteCount = try shape.byteCount(for: dtype)! } catch { throw error.adding(offset: UInt64(firstOffset)) }
        }
        guard byteCount <= TensorStorage.maximumCheckedByteCount else {
            throw CheckpointError(.limitExceeded(what: "tensor size (bytes)", limit: UInt64(TensorStorage.maximumCheckedByteCount), actual: UInt64(byteCount)), offset: UInt64(firstOffset))
        }
        let entry = Entry(name: name, dtype: dtype, shape: shape, byteCount: byteCount, recordCount: chunks.count, storedByteCount: storedByteCount,
                          offset: firstOffset, caffe2Type: type, caffe2DataType: Int(rawType))
        return (entry, .tensor(chunks, caffe2Type: rawType))
    }

    /// Where a small type's elements are: `raw_data`, else `byte_data`, else `int32_data`.
    private static func elementCount(_ chunk: Chunk, _ dataType: DataType) throws(CheckpointError) -> Int {
        func fixed(_ bytes: UnsafeRawBufferPointer, _ size: Int, _ field: String) throws(CheckpointError) -> Int {
            guard bytes.count % size == 0 else {
                throw CheckpointError(.invalidField(field: "TensorProto.\(field)", reason: "\(bytes.count) bytes is not a whole number of \(size)-byte elements"),
                                      offset: UInt64(chunk.recordOffset))
            }
            return bytes.count / size
        }
        let size = dataType.dtype?.elementSizeInBytes ?? 0
        if let raw = chunk.rawData, dataType != .string { return try fixed(raw, size, "raw_data") }
        switch dataType {
        case .float: return chunk.floatData.reduce(0) { $0 + $1.count }
        case .double: return chunk.doubleData.reduce(0) { $0 + $1.count }
        case .int32: return chunk.int32Data.reduce(0) { $0 + $1.count }
        case .int64: return chunk.int64Data.reduce(0) { $0 + $1.count }
        case .string: return chunk.stringData.count
        case .byte: return chunk.byteData?.count ?? 0
        case .bool, .uint8, .int8, .uint16, .int16, .float16:
            if let bytes = chunk.byteData { return try fixed(bytes, size, "byte_data") }
            return chunk.int32Data.reduce(0) { $0 + $1.count }
        case .undefined: return 0
        }
    }

    private static func decodeStrings(_ chunks: [Chunk], count: Int, name: String) throws(CheckpointError) -> [String] {
        var strings: [String] = []
        strings.reserveCapacity(count)
        for chunk in chunks {
            for s in chunk.stringData {
                guard let string = String(validating: s, as: UTF8.self) else {
                    throw CheckpointError(.invalidField(field: "TensorProto.string_data", reason: "not UTF-8"), blobName: name, offset: UInt64(chunk.recordOffset))
                }
                strings.append(string)
            }
        }
        return strings
    }

    // MARK: Reading

    /// Decodes `name` into `destination`, exactly ``Entry/byteCount`` bytes
    /// (little-endian elements, row-major; STRING in `StringTensor`'s layout).
    /// Nothing is verified beyond the structure: minidb has no checksums.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound`; `CheckpointError.Code.sizeMismatch`
    ///   for a destination of another size.
    public func read(_ name: String, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        let entry = try entry(name)
        guard destination.count == entry.byteCount else {
            throw CheckpointError(.sizeMismatch(what: "read destination", expected: UInt64(entry.byteCount), actual: UInt64(destination.count)), blobName: name, path: path)
        }
        guard let body = bodies[BlobName(name)] else { throw CheckpointError(.blobNotFound(name), blobName: name, path: path) }
        do throws(CheckpointError) {
            try withExtendedLifetime(map) { () throws(CheckpointError) in
                switch body {
                case let .content(bytes):
                    destination.copyMemory(from: bytes)
                case let .tensor(chunks, rawType):
                    let dataType = DataType(rawValue: rawType)!
                    if dataType == .string {
                        let strings = chunks.flatMap(\.stringData)
                        var lengths = destination.baseAddress!
                        var data = destination.baseAddress! + 8 * strings.count
                        for s in strings {
                            lengths.storeBytes(of: UInt64(s.count).littleEndian, as: UInt64.self)
                            lengths += 8
                            if let base = s.baseAddress, !s.isEmpty { data.copyMemory(from: base, byteCount: s.count) }
                            data += s.count
                        }
                    } else {
                        let size = entry.dtype.elementSizeInBytes!
                        for chunk in chunks where chunk.elementCount > 0 {
                            let target = UnsafeMutableRawBufferPointer(rebasing: destination[(chunk.begin * size)..<((chunk.begin + chunk.elementCount) * size)])
                            try MiniDBFile.decode(chunk, dataType, size: size, into: target)
                        }
                    }
                }
            }
        } catch {
            throw error.adding(blobName: name, path: path)
        }
    }

    /// A copy of `name`'s decoded bytes.
    public func bytes(of name: String) throws(CheckpointError) -> [UInt8] {
        let entry = try entry(name)
        var bytes = [UInt8](repeating: 0, count: entry.byteCount)
        try typedThrows { try bytes.withUnsafeMutableBytes { try read(name, into: $0) } }
        return bytes
    }

    private static func decode(_ chunk: Chunk, _ dataType: DataType, size: Int, into target: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        if let raw = chunk.rawData {
            target.copyMemory(from: raw)
            return
        }
        func copyFixed(_ runs: [NumericRun]) {
            var at = 0
            for run in runs {
                UnsafeMutableRawBufferPointer(rebasing: target[at..<(at + run.bytes.count)]).copyMemory(from: run.bytes)
                at += run.bytes.count
            }
        }
        switch dataType {
        case .float: copyFixed(chunk.floatData)
        case .double: copyFixed(chunk.doubleData)
        case .byte: target.copyMemory(from: chunk.byteData!)
        case .int32, .int64, .bool, .uint8, .int8, .uint16, .int16, .float16:
            if dataType != .int32, dataType != .int64, let bytes = chunk.byteData {
                target.copyMemory(from: bytes)
                return
            }
            var index = 0
            for run in dataType == .int64 ? chunk.int64Data : chunk.int32Data {
                var reader = ProtobufReader(run.bytes, baseOffset: chunk.recordOffset, what: "TensorProto")
                while !reader.isAtEnd {
                    let value = try reader.readVarint()
                    let at = index * size
                    // As Caffe2's static_cast: narrower types keep the low bits; bool is value != 0.
                    switch dataType {
                    case .int64: target.storeBytes(of: value.littleEndian, toByteOffset: at, as: UInt64.self)
                    case .int32: target.storeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian, toByteOffset: at, as: UInt32.self)
                    case .uint16, .int16, .float16: target.storeBytes(of: UInt16(truncatingIfNeeded: value).littleEndian, toByteOffset: at, as: UInt16.self)
                    case .bool: target.storeBytes(of: UInt8(UInt32(truncatingIfNeeded: value) != 0 ? 1 : 0), toByteOffset: at, as: UInt8.self)
                    default: target.storeBytes(of: UInt8(truncatingIfNeeded: value), toByteOffset: at, as: UInt8.self)
                    }
                    index += 1
                }
            }
        case .string, .undefined:
            break
        }
    }

    // MARK: Writing

    /// Writes `blobs` as a minidb file, exactly as Caffe2's `Save` op lays
    /// them out: records in the order given, tensors split every
    /// `chunkElementCount` elements into records keyed `NAME#%CHUNK`, each a
    /// `BlobProto` of type `"Tensor"` whose `TensorProto` has the full dims,
    /// the data type, the chunk's elements in Caffe2's field for the type
    /// (small types and FLOAT16 as `int32_data`, Caffe2's default), the name,
    /// a CPU `device_detail` and the `segment`; a `DType.raw` blob as a
    /// `std::string` blob keyed `NAME`. With `blobList`, a 1-D STRING tensor
    /// ``blobListBlobName`` holding it is added (unless a blob of that name is
    /// given), as Caffe2's `CheckpointManager` keeps its blob list.
    ///
    /// The file is built in memory (protobuf varints change sizes), then
    /// written through a temporary file renamed into place; `durability`
    /// says what is synced.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for a
    ///   dtype Caffe2 has no type for, an empty name, a name containing `#%`,
    ///   a duplicate name, a string that is not valid; the errors of the write.
    public static func write(_ blobs: [BlobSource], blobList: [String]? = nil, to path: String, durability: Durability = .none,
                             chunkElementCount: Int = defaultChunkElementCount) throws(CheckpointError) {
        try write(blobs, blobList: blobList, to: path, durability: durability, chunkElementCount: chunkElementCount, calls: .live)
    }

    static func write(_ blobs: [BlobSource], blobList: [String]?, to path: String, durability: Durability,
                      chunkElementCount: Int = defaultChunkElementCount, calls: SystemCalls) throws(CheckpointError) {
        let file = try encode(blobs, blobList: blobList, chunkElementCount: chunkElementCount, path: path)
        try typedThrows {
            try file.withUnsafeBytes { buffer in try AtomicFile.write([buffer], to: path, durability: durability, calls: calls) }
        }
    }

    /// The bytes of a minidb file holding `blobs` (see ``write(_:blobList:to:durability:chunkElementCount:)``).
    static func encode(_ blobs: [BlobSource], blobList: [String]?, chunkElementCount: Int, path: String? = nil) throws(CheckpointError) -> [UInt8] {
        precondition(chunkElementCount > 0, "chunkElementCount must be positive")
        var seen = Set<BlobName>()
        var file: [UInt8] = []
        func append(key: String, value: [UInt8]) {
            file.reserveCapacity(file.count + 8 + key.utf8.count + value.count)
            withUnsafeBytes(of: Int32(key.utf8.count).littleEndian) { file.append(contentsOf: $0) }
            withUnsafeBytes(of: Int32(value.count).littleEndian) { file.append(contentsOf: $0) }
            file.append(contentsOf: key.utf8)
            file.append(contentsOf: value)
        }
        for blob in blobs {
            guard !blob.name.isEmpty, !blob.name.contains(chunkIDSeparator), blob.name.utf8.count + 16 <= maximumKeyLength else {
                throw CheckpointError(.invalidField(field: "name", reason: "a minidb blob name must be non-empty, shorter than \(maximumKeyLength - 16) bytes and free of '#%' (the chunk separator)"),
                                      blobName: blob.name, path: path)
            }
            guard seen.insert(BlobName(blob.name)).inserted else {
                throw CheckpointError(.invalidField(field: "name", reason: "duplicate blob name"), blobName: blob.name, path: path)
            }
            do throws(CheckpointError) {
                for (key, value) in try encodeRecords(blob, chunkElementCount: chunkElementCount) { append(key: key, value: value) }
            } catch {
                throw error.adding(blobName: blob.name, path: path)
            }
        }
        if let blobList, !seen.contains(BlobName(blobListBlobName)) {
            let bytes = StringTensor.encode(blobList)
            try typedThrows {
                try bytes.withUnsafeBytes { buffer in
                    let source = BlobSource(name: blobListBlobName, dtype: .string, shape: Shape(arrayLiteral: blobList.count), bytes: buffer)
                    for (key, value) in try encodeRecords(source, chunkElementCount: chunkElementCount) { append(key: key, value: value) }
                }
            }
        }
        return file
    }

    /// One blob's records: (key, serialized BlobProto).
    private static func encodeRecords(_ blob: BlobSource, chunkElementCount: Int) throws(CheckpointError) -> [(String, [UInt8])] {
        if blob.dtype == .raw {
            var proto = ProtobufWriter(capacity: blob.bytes.count + blob.name.utf8.count + 24)
            proto.writeBytesField(1, Array(blob.name.utf8))
            proto.writeBytesField(2, Array("std::string".utf8))
            proto.writeBytesField(4, blob.bytes)
            return [(blob.name, proto.bytes)]
        }
        guard let dataType = DataType(blob.dtype) else {
            throw CheckpointError(.invalidField(field: "dtype", reason: "Caffe2 has no TensorProto data type for \(blob.dtype)"))
        }
        let numel = blob.shape.elementCount
        var strings: [String] = []
        if blob.dtype == .string {
            strings = try StringTensor.decode(blob.bytes, count: numel)
        } else {
            let expected = try blob.shape.byteCount(for: blob.dtype)!
            guard expected == blob.bytes.count else {
                throw CheckpointError(.sizeMismatch(what: "\(blob.dtype) tensor of shape \(blob.shape)", expected: UInt64(expected), actual: UInt64(blob.bytes.count)))
            }
        }
        let size = blob.dtype.elementSizeInBytes ?? 0
        var records: [(String, [UInt8])] = []
        var chunkBegin = 0
        // An empty tensor still gets one record (Caffe2 serializes its shape).
        while chunkBegin < max(numel, 1) {
            let chunkEnd = min(numel, chunkBegin + chunkElementCount)
            var tensor = ProtobufWriter(capacity: (chunkEnd - chunkBegin) * max(size, 1) + 64)
            for dimension in blob.shape.dimensions { tensor.writeVarintField(1, Int64(dimension)) }
            tensor.writeVarintField(2, dataType.rawValue)
            let elements = UnsafeRawBufferPointer(rebasing: blob.bytes[(chunkBegin * size)..<(chunkEnd * size)])
            switch dataType {
            case .float: tensor.writePackedFixed(3, littleEndianBytes: elements)
            case .int32:
                tensor.writePackedVarints(4, (0..<(chunkEnd - chunkBegin)).map { UInt64(bitPattern: Int64(elements.load(fromByteOffset: $0 * 4, as: Int32.self))) })
            case .bool, .uint8:
                tensor.writePackedVarints(4, elements.map { UInt64($0) })
            case .int8:
                tensor.writePackedVarints(4, elements.map { UInt64(bitPattern: Int64(Int8(bitPattern: $0))) })
            case .uint16, .float16:
                tensor.writePackedVarints(4, (0..<(chunkEnd - chunkBegin)).map { UInt64(UInt16(littleEndian: elements.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) })
            case .int16:
                tensor.writePackedVarints(4, (0..<(chunkEnd - chunkBegin)).map {
                    UInt64(bitPattern: Int64(Int16(littleEndian: elements.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self))))
                })
            case .string:
                for string in strings[chunkBegin..<chunkEnd] { tensor.writeBytesField(6, Array(string.utf8)) }
            case .double: break
            case .int64: break
            case .byte, .undefined: break
            }
            tensor.writeBytesField(7, Array(blob.name.utf8))
            var device = ProtobufWriter()
            device.writeVarintField(1, 0)  // CPU
            tensor.writeMessageField(8, device)
            switch dataType {
            case .double: tensor.writePackedFixed(9, littleEndianBytes: elements)
            case .int64:
                tensor.writePackedVarints(10, (0..<(chunkEnd - chunkBegin)).map { UInt64(littleEndian: elements.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) })
            default: break
            }
            var segment = ProtobufWriter()
            segment.writeVarintField(1, Int64(chunkBegin))
            segment.writeVarintField(2, Int64(chunkEnd))
            tensor.writeMessageField(11, segment)
            var proto = ProtobufWriter(capacity: tensor.bytes.count + blob.name.utf8.count + 24)
            proto.writeBytesField(1, Array(blob.name.utf8))
            proto.writeBytesField(2, Array("Tensor".utf8))
            proto.writeMessageField(3, tensor)
            records.append(("\(blob.name)\(chunkIDSeparator)\(chunkBegin / chunkElementCount)", proto.bytes))
            chunkBegin += chunkElementCount
        }
        return records
    }
}

import BlobCodec

/// Protocol Buffers' wire format (protobuf.dev, "Encoding"), the parts that
/// Caffe2's `BlobProto` and `TensorProto` use: varints, fixed 32/64-bit
/// values, length-delimited fields (bytes, strings, sub-messages, packed
/// repeated fields). Groups (wire types 3 and 4) are refused.
enum ProtobufWireType: UInt8 {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// Reads one message's fields from a buffer, bounds-checking every length.
///
/// Errors are `CheckpointError.Code.invalidField` or
/// `CheckpointError.Code.truncated` with the
/// offset (`baseOffset` + position in the buffer) of the bad byte.
struct ProtobufReader {
    let bytes: UnsafeRawBufferPointer
    /// Where `bytes` starts in the file, for error offsets.
    let baseOffset: Int
    /// The message's name, for errors.
    let what: String
    private(set) var position = 0

    init(_ bytes: UnsafeRawBufferPointer, baseOffset: Int, what: String) {
        self.bytes = bytes
        self.baseOffset = baseOffset
        self.what = what
    }

    var isAtEnd: Bool { position >= bytes.count }
    /// The file offset of the next byte.
    var offset: Int { baseOffset + position }

    func error(_ reason: String, at position: Int? = nil) -> CheckpointError {
        CheckpointError(.invalidField(field: what, reason: reason), offset: UInt64(baseOffset + (position ?? self.position)))
    }

    /// A base-128 varint of at most 10 bytes (the 10th may only hold bit 63).
    mutating func readVarint() throws(CheckpointError) -> UInt64 {
        let start = position
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else {
                throw CheckpointError(.truncated(what: "\(what) varint", needed: UInt64(position - start + 1), available: UInt64(position - start)),
                                      offset: UInt64(baseOffset + start))
            }
            let byte = bytes[position]
            position += 1
            if shift == 63 && byte > 1 { throw error("varint longer than 64 bits", at: start) }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    /// The next field's number and wire type.
    mutating func readTag() throws(CheckpointError) -> (field: Int, wireType: ProtobufWireType) {
        let start = position
        let key = try readVarint()
        guard let wireType = ProtobufWireType(rawValue: UInt8(key & 7)), wireType != .startGroup, wireType != .endGroup else {
            throw error("unsupported wire type \(key & 7)", at: start)
        }
        let field = key >> 3
        guard field >= 1, field <= (1 << 29) - 1 else { throw error("invalid field number \(field)", at: start) }
        return (Int(field), wireType)
    }

    /// The bytes of a length-delimited field and their file offset.
    mutating func readLengthDelimited() throws(CheckpointError) -> (bytes: UnsafeRawBufferPointer, offset: Int) {
        let start = position
        let length = try readVarint()
        guard length <= UInt64(bytes.count - position) else {
            throw CheckpointError(.truncated(what: "\(what) length-delimited field", needed: length, available: UInt64(bytes.count - position)),
                                  offset: UInt64(baseOffset + start))
        }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + Int(length))])
        let offset = baseOffset + position
        position += Int(length)
        return (slice, offset)
    }

    mutating func readFixed32() throws(CheckpointError) -> UInt32 {
        guard bytes.count - position >= 4 else {
            throw CheckpointError(.truncated(what: "\(what) fixed32", needed: 4, available: UInt64(bytes.count - position)), offset: UInt64(offset))
        }
        defer { position += 4 }
        return bytes.load(littleEndianAt: position) as UInt32
    }

    mutating func readFixed64() throws(CheckpointError) -> UInt64 {
        guard bytes.count - position >= 8 else {
            throw CheckpointError(.truncated(what: "\(what) fixed64", needed: 8, available: UInt64(bytes.count - position)), offset: UInt64(offset))
        }
        defer { position += 8 }
        return bytes.load(littleEndianAt: position) as UInt64
    }

    /// Skips a field's value (an unknown field, kept by no one).
    mutating func skip(_ wireType: ProtobufWireType) throws(CheckpointError) {
        switch wireType {
        case .varint: _ = try readVarint()
        case .fixed64: _ = try readFixed64()
        case .fixed32: _ = try readFixed32()
        case .lengthDelimited: _ = try readLengthDelimited()
        case .startGroup, .endGroup: throw error("unsupported wire type \(wireType.rawValue)")
        }
    }

    /// Throws unless a field has the wire type its declaration implies.
    func expect(_ actual: ProtobufWireType, _ expected: ProtobufWireType, field: String) throws(CheckpointError) {
        guard actual == expected else { throw error("field \(field) has wire type \(actual.rawValue), expected \(expected.rawValue)") }
    }

    /// The number of varints in a packed run (each ends with a byte below 0x80).
    static func packedVarintCount(_ bytes: UnsafeRawBufferPointer, offset: Int, what: String) throws(CheckpointError) -> Int {
        guard let last = bytes.last else { return 0 }
        guard last & 0x80 == 0 else {
            throw CheckpointError(.truncated(what: "\(what): last packed varint", needed: 1, available: 0), offset: UInt64(offset + bytes.count))
        }
        var count = 0
        for byte in bytes where byte & 0x80 == 0 { count += 1 }
        return count
    }
}

/// Builds one message's bytes, fields in the order they are written (Caffe2's
/// C++ and Python serializers write fields in field-number order; so do the callers).
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func writeVarint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    /// A fixed32 value (little-endian), after its tag.
    mutating func writeFixed32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    static func varintSize(_ value: UInt64) -> Int {
        var value = value, size = 1
        while value >= 0x80 { value >>= 7; size += 1 }
        return size
    }

    mutating func writeTag(_ field: Int, _ wireType: ProtobufWireType) {
        writeVarint(UInt64(field) << 3 | UInt64(wireType.rawValue))
    }

    /// An `int32`/`int64`/enum/`uint32` field (negative values as 10-byte two's complement varints, as protobuf does).
    mutating func writeVarintField(_ field: Int, _ value: Int64) {
        writeTag(field, .varint)
        writeVarint(UInt64(bitPattern: value))
    }

    mutating func writeBytesField<Bytes: Collection>(_ field: Int, _ value: Bytes) where Bytes.Element == UInt8 {
        writeTag(field, .lengthDelimited)
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func writeMessageField(_ field: Int, _ message: ProtobufWriter) {
        writeBytesField(field, message.bytes)
    }

    /// A packed repeated varint field (omitted when empty, as protobuf does).
    mutating func writePackedVarints(_ field: Int, _ values: [UInt64]) {
        guard !values.isEmpty else { return }
        writeTag(field, .lengthDelimited)
        writeVarint(UInt64(values.reduce(0) { $0 + ProtobufWriter.varintSize($1) }))
        for value in values { writeVarint(value) }
    }

    /// A packed repeated fixed32/fixed64/float/double field from little-endian bytes (omitted when empty).
    mutating func writePackedFixed(_ field: Int, littleEndianBytes: UnsafeRawBufferPointer) {
        guard !littleEndianBytes.isEmpty else { return }
        writeTag(field, .lengthDelimited)
        writeVarint(UInt64(littleEndianBytes.count))
        bytes.append(contentsOf: littleEndianBytes)
    }
}

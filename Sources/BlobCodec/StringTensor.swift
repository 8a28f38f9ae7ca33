/// The raw byte layout of a ``DType/string`` blob of `n` strings:
/// `n` little-endian UInt64 byte lengths, then the `n` strings' UTF-8 bytes
/// back to back (no terminators). The lengths must add up to exactly the rest
/// of the blob and every string must be valid UTF-8.
public enum StringTensor {
    /// Encodes strings into the raw layout.
    public static func encode(_ strings: [String]) -> [UInt8] {
        var w = LittleEndianWriter(capacity: 8 * strings.count + strings.reduce(0) { $0 + $1.utf8.count })
        for string in strings { w.write(littleEndian: UInt64(string.utf8.count)) }
        for string in strings { w.write(string.utf8) }
        return w.bytes
    }

    /// Decodes `count` strings from the raw layout, validating every length and all UTF-8.
    public static func decode(_ bytes: UnsafeRawBufferPointer, count: Int) throws(CheckpointError) -> [String] {
        try checkMinimumSize(bytes.count, count: count)
        var lengths = LittleEndianReader(UnsafeRawBufferPointer(rebasing: bytes[0..<(8 * count)]), what: "string lengths")
        var data = LittleEndianReader(UnsafeRawBufferPointer(rebasing: bytes[(8 * count)...]), what: "string data")
        var strings: [String] = []
        strings.reserveCapacity(count)
        for index in 0..<count {
            let length = try lengths.read(littleEndian: UInt64.self)
            guard length <= UInt64(data.remaining) else {
                throw CheckpointError(.truncated(what: "string \(index)", needed: length, available: UInt64(data.remaining)))
            }
            guard let string = String(validatingUTF8Bytes: try data.readBytes(Int(length))) else {
                throw CheckpointError(.invalidField(field: "string \(index)", reason: "not valid UTF-8"))
            }
            strings.append(string)
        }
        guard data.remaining == 0 else {
            throw CheckpointError(.sizeMismatch(what: "string tensor data", expected: UInt64(bytes.count - data.remaining), actual: UInt64(bytes.count)))
        }
        return strings
    }

    /// A string tensor of `count` elements needs at least its length table.
    ///
    /// - Throws: ``CheckpointError/Code/truncated(what:needed:available:)`` when `size` is smaller.
    public static func checkMinimumSize(_ size: Int, count: Int) throws(CheckpointError) {
        let (table, overflow) = count.multipliedReportingOverflow(by: 8)
        guard !overflow, size >= table else {
            throw CheckpointError(.truncated(what: "string tensor of \(count) strings", needed: overflow ? UInt64.max : UInt64(table), available: UInt64(size)))
        }
    }
}

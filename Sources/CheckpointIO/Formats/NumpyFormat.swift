import BlobCodec

/// NumPy's `.npy` format (versions 1.0, 2.0 and 3.0): a magic string, a
/// version, a header length, a Python-literal header dict, then the array's
/// bytes in C order.
///
/// ```
/// "\x93NUMPY" major minor  HEADER_LEN (u16 LE in 1.0; u32 LE in 2.0, 3.0)
/// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   + spaces + "\n"
/// data
/// ```
///
/// Writing follows `numpy.lib.format.write_array`: the header is padded so
/// that the data starts at a multiple of 64, version 1.0 unless the header
/// needs more than 65535 bytes, little-endian C order.
///
/// Reading accepts every numeric dtype below in any byte order (`<`, `>`,
/// `=`, `|`; one-byte types have none, so `>u1` is `u1`) and in C or Fortran
/// order, as `numpy.load` does. A big-endian or Fortran-order array cannot be
/// used in place: ``Header/needsConversion`` says so, and
/// ``convertToLittleEndianCOrder(_:header:into:)`` copies it into
/// little-endian C order. Structured, string, datetime and object (pickled)
/// arrays are rejected with a clear error. The shape must be a tuple, as
/// numpy requires (`(4,)`; `(4)` is the integer 4).
public enum NumpyFormat {
    static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
    static let alignment = 64
    /// Headers larger than this are rejected (numpy's own reader limit is 10,000 bytes by default).
    public static let maximumHeaderLength = 1 << 20

    /// The `descr` numpy writes for a dtype; nil where numpy has no such dtype
    /// (bfloat16, the fp8/fp6/fp4 formats, strings).
    public static func descr(for dtype: DType) -> String? {
        switch dtype {
        case .bool: return "|b1"
        case .uint8, .raw: return "|u1"
        case .int8: return "|i1"
        case .uint16: return "<u2"
        case .int16: return "<i2"
        case .float16: return "<f2"
        case .uint32: return "<u4"
        case .int32: return "<i4"
        case .float32: return "<f4"
        case .uint64: return "<u8"
        case .int64: return "<i8"
        case .float64: return "<f8"
        case .complex64: return "<c8"
        case .complex128: return "<c16"
        case .bfloat16, .f8E4M3, .f8E5M2, .f8E8M0, .f8E4M3FNUZ, .f8E5M2FNUZ, .f6E2M3, .f6E3M2, .f4, .string: return nil
        }
    }

    /// The dtype of a descr, and whether its elements are stored big-endian.
    ///
    /// `<` is little-endian, `=` native (little-endian on every platform this
    /// package runs on), `|` or nothing byte-order-free, `>` big-endian, which
    /// one-byte types ignore (numpy reads `>u1` as `|u1`).
    static func dtype(descr: String) throws(CheckpointError) -> (dtype: DType, isBigEndian: Bool) {
        var text = Substring(descr)
        let order = text.first
        if order == "<" || order == "|" || order == "=" || order == ">" { text = text.dropFirst() }
        let dtype: DType
        switch text {
        case "b1", "?": dtype = .bool
        case "u1", "B": dtype = .uint8
        case "i1", "b": dtype = .int8
        case "u2": dtype = .uint16
        case "i2": dtype = .int16
        case "f2", "e": dtype = .float16
        case "u4": dtype = .uint32
        case "i4": dtype = .int32
        case "f4", "f": dtype = .float32
        case "u8": dtype = .uint64
        case "i8": dtype = .int64
        case "f8", "d": dtype = .float64
        case "c8": dtype = .complex64
        case "c16": dtype = .complex128
        default:
            throw CheckpointError(.unknownDType("npy descr '\(descr.prefix(80))' (object, structured and other dtypes are not supported)"))
        }
        return (dtype, order == ">" && dtype.elementSizeInBytes! > 1)
    }

    /// A parsed header: the dtype, the shape, and where the data starts.
    public struct Header: Sendable, Equatable {
        /// The element type.
        public var dtype: DType
        /// The dimensions as the header writes them (Fortran-order arrays: see ``isFortranOrder``).
        public var shape: Shape
        /// Offset of the first data byte (magic + version + length + header).
        public var dataOffset: Int
        /// The format version, e.g. "1.0".
        public var version: String
        /// Bytes of array data the header declares (element count × element size).
        public var dataByteCount: Int
        /// The elements are stored big-endian (`>` with a multi-byte dtype).
        public var isBigEndian: Bool = false
        /// The header says `'fortran_order': True`.
        public var isFortranOrder: Bool = false

        /// Fortran order changes the layout only with two or more dimensions above 1.
        var isTransposed: Bool { isFortranOrder && shape.dimensions.filter({ $0 > 1 }).count > 1 }

        /// The stored bytes differ from the little-endian C-order bytes this
        /// package works with, so they cannot be viewed in place: convert them
        /// with ``NumpyFormat/convertToLittleEndianCOrder(_:header:into:)``.
        public var needsConversion: Bool { (isBigEndian || isTransposed) && dataByteCount > 0 }

        /// What a conversion does, for display: `byteswap`, `transpose`, both, or nil.
        public var conversion: String? {
            guard needsConversion else { return nil }
            return [isBigEndian ? "byteswap" : nil, isTransposed ? "transpose" : nil].compactMap { $0 }.joined(separator: "+")
        }
    }

    /// Copies an array's stored data (`dataByteCount` bytes laid out as
    /// `header` says) into `destination` (the same size) as little-endian
    /// C-order elements: Fortran order is transposed, big-endian elements
    /// (each half of a complex number) are byte-swapped. O(n); one pass for
    /// the copy and one over the destination for the swap.
    public static func convertToLittleEndianCOrder(_ source: UnsafeRawBufferPointer, header: Header, into destination: UnsafeMutableRawBufferPointer) {
        precondition(source.count == header.dataByteCount && destination.count == header.dataByteCount, "buffers must hold exactly the array's bytes")
        guard header.dataByteCount > 0 else { return }
        let elementSize = header.dtype.elementSizeInBytes!
        if header.isTransposed {
            copyFortranToC(source, dimensions: header.shape.dimensions, elementSize: elementSize, into: destination)
        } else {
            destination.copyMemory(from: source)
        }
        if header.isBigEndian {
            let wordSize = header.dtype == .complex64 || header.dtype == .complex128 ? elementSize / 2 : elementSize
            swapBytes(destination, wordSize: wordSize)
        }
    }

    /// Fortran order (first index fastest) to C order (last index fastest).
    static func copyFortranToC(_ source: UnsafeRawBufferPointer, dimensions: [Int], elementSize: Int, into destination: UnsafeMutableRawBufferPointer) {
        let rank = dimensions.count
        // Element strides of the Fortran layout.
        var strides = [Int](repeating: 1, count: rank)
        for k in 1..<rank { strides[k] = strides[k - 1] * dimensions[k - 1] }
        let innerCount = dimensions[rank - 1], innerStride = strides[rank - 1] * elementSize
        var index = [Int](repeating: 0, count: rank - 1)
        var sourceBase = 0  // byte offset of index (i0, …, i(rank-2), 0)
        var out = destination.baseAddress!
        let end = destination.baseAddress! + destination.count
        let input = source.baseAddress!
        while out < end {
            var from = input + sourceBase
            for _ in 0..<innerCount {
                out.copyMemory(from: from, byteCount: elementSize)
                out += elementSize
                from += innerStride
            }
            var k = rank - 2
            while k >= 0 {
                index[k] += 1
                sourceBase += strides[k] * elementSize
                if index[k] < dimensions[k] { break }
                sourceBase -= index[k] * strides[k] * elementSize
                index[k] = 0
                k -= 1
            }
        }
    }

    /// Reverses the bytes of every `wordSize`-byte word of `buffer` in place.
    static func swapBytes(_ buffer: UnsafeMutableRawBufferPointer, wordSize: Int) {
        let count = buffer.count / wordSize
        switch wordSize {
        case 2:
            for i in 0..<count { buffer.storeBytes(of: buffer.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).byteSwapped, toByteOffset: 2 * i, as: UInt16.self) }
        case 4:
            for i in 0..<count { buffer.storeBytes(of: buffer.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).byteSwapped, toByteOffset: 4 * i, as: UInt32.self) }
        case 8:
            for i in 0..<count { buffer.storeBytes(of: buffer.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).byteSwapped, toByteOffset: 8 * i, as: UInt64.self) }
        default:
            for i in 0..<count {
                var low = i * wordSize, high = low + wordSize - 1
                while low < high { buffer.swapAt(low, high); low += 1; high -= 1 }
            }
        }
    }

    // MARK: Writing

    /// The bytes before the data of an array: magic, version, length and the padded header.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for a dtype numpy lacks.
    public static func encodeHeader(dtype: DType, shape: Shape) throws(CheckpointError) -> [UInt8] {
        guard let descr = descr(for: dtype) else {
            throw CheckpointError(.invalidField(field: "dtype", reason: "numpy has no \(dtype) dtype; keep this tensor in safetensors or the container format"))
        }
        let dims = shape.dimensions.map(String.init)
        let tuple = dims.count == 1 ? "(\(dims[0]),)" : "(" + dims.joined(separator: ", ") + ")"
        let dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(tuple), }"
        var header = Array(dict.utf8)
        // Version 1.0 has a u16 length; 2.0 a u32.
        let prefixV1 = magic.count + 2 + 2
        var version: UInt8 = 1
        var prefix = prefixV1
        var total = alignUp(prefix + header.count + 1, alignment)
        if total - prefix > Int(UInt16.max) {
            version = 2
            prefix = magic.count + 2 + 4
            total = alignUp(prefix + header.count + 1, alignment)
        }
        header += [UInt8](repeating: UInt8(ascii: " "), count: total - prefix - header.count - 1)
        header.append(UInt8(ascii: "\n"))
        var out = magic + [version, 0]
        if version == 1 {
            out += [UInt8(header.count & 0xFF), UInt8(header.count >> 8)]
        } else {
            let length = UInt32(header.count)
            out += [UInt8(length & 0xFF), UInt8((length >> 8) & 0xFF), UInt8((length >> 16) & 0xFF), UInt8(length >> 24)]
        }
        return out + header
    }

    static func alignUp(_ value: Int, _ alignment: Int) -> Int { (value + alignment - 1) / alignment * alignment }

    // MARK: Reading

    /// Parses the header at the start of `bytes` (an `.npy` file, or its
    /// first bytes) and checks that the data fits in `bytes`; with
    /// `exactSize`, that it ends exactly at the end.
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, exactSize: Bool = true) throws(CheckpointError) -> Header {
        try parseHeader(bytes, fileSize: bytes.count, exactSize: exactSize)
    }

    /// Parses the header at the start of `bytes`, the first bytes of an
    /// `.npy` of `fileSize` bytes, and checks the data against `fileSize`.
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, fileSize: Int, exactSize: Bool = true) throws(CheckpointError) -> Header {
        guard bytes.count >= magic.count + 4 else {
            throw CheckpointError(.truncated(what: "npy header", needed: UInt64(magic.count + 4), available: UInt64(bytes.count)))
        }
        guard bytes.prefix(magic.count).elementsEqual(magic) else {
            throw CheckpointError(.invalidField(field: "npy magic", reason: "not an .npy file (no \\x93NUMPY magic)"))
        }
        let major = bytes[6], minor = bytes[7]
        let lengthSize: Int
        switch (major, minor) {
        case (1, 0): lengthSize = 2
        case (2, 0), (3, 0): lengthSize = 4
        default: throw CheckpointError(.unsupportedVersion(what: "npy", version: UInt32(major) << 8 | UInt32(minor)))
        }
        guard bytes.count >= magic.count + 2 + lengthSize else {
            throw CheckpointError(.truncated(what: "npy header length", needed: UInt64(magic.count + 2 + lengthSize), available: UInt64(bytes.count)))
        }
        var headerLength = 0
        for i in 0..<lengthSize { headerLength |= Int(bytes[8 + i]) << (8 * i) }
        guard headerLength <= maximumHeaderLength else {
            throw CheckpointError(.limitExceeded(what: "npy header length", limit: UInt64(maximumHeaderLength), actual: UInt64(headerLength)))
        }
        let start = 8 + lengthSize
        guard headerLength <= bytes.count - start else {
            throw CheckpointError(.truncated(what: "npy header", needed: UInt64(start + headerLength), available: UInt64(bytes.count)))
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + headerLength)])
        // 1.0 and 2.0 headers are latin-1 (in practice ASCII); 3.0 is UTF-8.
        guard let text = String(validating: headerBytes, as: UTF8.self) else {
            throw CheckpointError(.invalidField(field: "npy header", reason: "not valid text"))
        }
        var parser = PythonLiteralParser(text: text)
        let dict = try parser.parseHeaderDict()
        guard let descr = dict.descr else { throw CheckpointError(.invalidField(field: "npy header", reason: "no 'descr'")) }
        guard let fortranOrder = dict.fortranOrder else { throw CheckpointError(.invalidField(field: "npy header", reason: "no 'fortran_order'")) }
        guard let dims = dict.shape else { throw CheckpointError(.invalidField(field: "npy header", reason: "no 'shape'")) }
        let (dtype, isBigEndian) = try self.dtype(descr: descr)
        let shape = try Shape(dims)
        let dataByteCount = try shape.byteCount(for: dtype)!
        let dataOffset = start + headerLength
        let available = fileSize - dataOffset
        if exactSize ? available != dataByteCount : available < dataByteCount {
            throw CheckpointError(.sizeMismatch(what: "npy data of \(dtype) \(shape)", expected: UInt64(dataByteCount), actual: UInt64(available)))
        }
        return Header(dtype: dtype, shape: shape, dataOffset: dataOffset, version: "\(major).\(minor)", dataByteCount: dataByteCount,
                      isBigEndian: isBigEndian, isFortranOrder: fortranOrder)
    }
}

/// The subset of Python literal syntax an `.npy` header uses: a dict of
/// string keys to strings, booleans and tuples of integers.
struct PythonLiteralParser {
    struct HeaderDict {
        var descr: String?
        var fortranOrder: Bool?
        var shape: [Int]?
    }

    let bytes: [UInt8]
    var position = 0

    init(text: String) { bytes = Array(text.utf8) }

    func error(_ reason: String) -> CheckpointError {
        CheckpointError(.invalidField(field: "npy header", reason: "\(reason) at byte \(position)"))
    }

    var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipSpace() {
        while let b = peek, b == 0x20 || b == 0x0A || b == 0x09 || b == 0x0D { position += 1 }
    }

    mutating func expect(_ byte: UInt8) throws(CheckpointError) {
        skipSpace()
        guard peek == byte else { throw error("expected '\(Character(Unicode.Scalar(byte)))'") }
        position += 1
    }

    mutating func parseHeaderDict() throws(CheckpointError) -> HeaderDict {
        var dict = HeaderDict()
        var seen = Set<String>()
        try expect(UInt8(ascii: "{"))
        while true {
            skipSpace()
            if peek == UInt8(ascii: "}") { position += 1; break }
            let key = try parseString()
            guard seen.insert(key).inserted else { throw error("duplicate key '\(key)'") }
            try expect(UInt8(ascii: ":"))
            skipSpace()
            switch key {
            case "descr":
                guard peek == UInt8(ascii: "'") || peek == UInt8(ascii: "\"") else {
                    throw error("'descr' is not a string (structured dtypes are not supported)")
                }
                dict.descr = try parseString()
            case "fortran_order": dict.fortranOrder = try parseBool()
            case "shape": dict.shape = try parseIntTuple()
            default: throw error("unexpected key '\(key.prefix(40))'")
            }
            skipSpace()
            if peek == UInt8(ascii: ",") { position += 1; continue }
            skipSpace()
            if peek == UInt8(ascii: "}") { position += 1; break }
            throw error("expected ',' or '}'")
        }
        skipSpace()
        guard position == bytes.count else { throw error("unexpected text after the header dict") }
        return dict
    }

    mutating func parseString() throws(CheckpointError) -> String {
        skipSpace()
        guard let quote = peek, quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else { throw error("expected a string") }
        position += 1
        let start = position
        while let b = peek, b != quote {
            guard b != UInt8(ascii: "\\"), b >= 0x20 else { throw error("escapes and control characters are not supported in header strings") }
            position += 1
        }
        guard peek == quote else { throw error("unterminated string") }
        let value = String(decoding: bytes[start..<position], as: UTF8.self)
        position += 1
        return value
    }

    mutating func parseBool() throws(CheckpointError) -> Bool {
        if bytes[position...].starts(with: Array("True".utf8)) { position += 4; return true }
        if bytes[position...].starts(with: Array("False".utf8)) { position += 5; return false }
        throw error("expected True or False")
    }

    /// A tuple of integers: `()`, `(4,)`, `(2, 3)`, `(2, 3,)`. As in Python,
    /// `(4)` is the integer 4, not a tuple, and numpy rejects it.
    mutating func parseIntTuple() throws(CheckpointError) -> [Int] {
        try expect(UInt8(ascii: "("))
        let open = position - 1
        var values: [Int] = []
        var trailingComma = false
        while true {
            skipSpace()
            if peek == UInt8(ascii: ")") {
                if values.count == 1 && !trailingComma {
                    position = open
                    throw error("shape (\(values[0])) is the integer \(values[0]), not a tuple (numpy: \"shape is not valid: \(values[0])\"); a one-dimensional shape is written (\(values[0]),)")
                }
                position += 1
                return values
            }
            trailingComma = false
            let start = position
            while let b = peek, b >= 0x30 && b <= 0x39 { position += 1 }
            guard position > start, position - start <= 19, let value = Int(String(decoding: bytes[start..<position], as: UTF8.self)) else {
                throw error("expected a non-negative integer dimension")
            }
            if peek == UInt8(ascii: "L") { position += 1 }  // Python 2 longs
            values.append(value)
            skipSpace()
            if peek == UInt8(ascii: ",") { position += 1; trailingComma = true; continue }
            skipSpace()
            guard peek == UInt8(ascii: ")") else { throw error("expected ',' or ')'") }
        }
    }
}

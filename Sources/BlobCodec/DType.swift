/// The element type of a blob.
///
/// Covers every dtype of the safetensors format, plus complex128, opaque raw
/// bytes and UTF-8 string tensors. The raw value is the dtype's stable id in
/// the on-disk format (see FORMAT.md, "dtype ids"); it never changes.
///
/// Sub-byte dtypes (``f6E2M3``, ``f6E3M2``, ``f4``) are packed densely: element
/// `i` occupies bits `[i·b, (i+1)·b)` of the little-endian bit stream (bit 0 is
/// the least significant bit of byte 0), so two F4 values share a byte (element
/// `2k` in the low nibble of byte `k`) and four F6 values share three bytes. As
/// in safetensors, a tensor of a sub-byte dtype must fill whole bytes
/// (`elementCount · bits` divisible by 8).
///
/// ``string`` blobs hold `elementCount` UTF-8 strings laid out as described by
/// ``StringTensor``; their byte count is not a function of the shape.
public enum DType: UInt8, Sendable, CaseIterable, Hashable, CustomStringConvertible {
    /// Booleans, one byte each (safetensors `BOOL`).
    case bool = 1
    /// Unsigned 8-bit integers (`U8`).
    case uint8 = 2
    /// Signed 8-bit integers (`I8`).
    case int8 = 3
    /// Unsigned 16-bit integers (`U16`).
    case uint16 = 4
    /// Signed 16-bit integers (`I16`).
    case int16 = 5
    /// IEEE 754 half precision (`F16`).
    case float16 = 6
    /// bfloat16: float32's top 16 bits (`BF16`).
    case bfloat16 = 7
    /// Unsigned 32-bit integers (`U32`).
    case uint32 = 8
    /// Signed 32-bit integers (`I32`).
    case int32 = 9
    /// IEEE 754 single precision (`F32`).
    case float32 = 10
    /// Unsigned 64-bit integers (`U64`).
    case uint64 = 11
    /// Signed 64-bit integers (`I64`).
    case int64 = 12
    /// IEEE 754 double precision (`F64`).
    case float64 = 13
    /// Two float32s, real then imaginary (`C64`).
    case complex64 = 14
    /// Two float64s, real then imaginary (not in safetensors).
    case complex128 = 15
    /// 8-bit float, 4 exponent and 3 mantissa bits (`F8_E4M3`).
    case f8E4M3 = 16
    /// 8-bit float, 5 exponent and 2 mantissa bits (`F8_E5M2`).
    case f8E5M2 = 17
    /// 8-bit power-of-two scale, 8 exponent bits (`F8_E8M0`).
    case f8E8M0 = 18
    /// 8-bit float E4M3, finite, no negative zero (`F8_E4M3FNUZ`).
    case f8E4M3FNUZ = 19
    /// 8-bit float E5M2, finite, no negative zero (`F8_E5M2FNUZ`).
    case f8E5M2FNUZ = 20
    /// 6-bit float, 2 exponent and 3 mantissa bits, packed (`F6_E2M3`).
    case f6E2M3 = 21
    /// 6-bit float, 3 exponent and 2 mantissa bits, packed (`F6_E3M2`).
    case f6E3M2 = 22
    /// 4-bit float E2M1, packed two per byte (`F4`).
    case f4 = 23
    /// Opaque bytes: one byte per element.
    case raw = 32
    /// UTF-8 strings, one per element (see ``StringTensor``).
    case string = 33

    /// Bits per element; 0 for ``string`` (variable length).
    public var bitsPerElement: Int {
        switch self {
        case .f4: return 4
        case .f6E2M3, .f6E3M2: return 6
        case .bool, .uint8, .int8, .f8E4M3, .f8E5M2, .f8E8M0, .f8E4M3FNUZ, .f8E5M2FNUZ, .raw: return 8
        case .uint16, .int16, .float16, .bfloat16: return 16
        case .uint32, .int32, .float32: return 32
        case .uint64, .int64, .float64, .complex64: return 64
        case .complex128: return 128
        case .string: return 0
        }
    }

    /// Bytes per element for byte-sized dtypes; `nil` for sub-byte dtypes and ``string``.
    public var elementSizeInBytes: Int? {
        let bits = bitsPerElement
        return bits >= 8 ? bits / 8 : nil
    }

    /// The name safetensors uses (`"F32"`, `"BF16"`, …); `nil` where safetensors has none.
    public var safetensorsName: String? {
        switch self {
        case .complex128, .raw, .string: return nil
        default: return name
        }
    }

    /// The canonical upper-case name: the safetensors name where there is one, else `C128`, `RAW`, `STRING`.
    public var name: String {
        switch self {
        case .bool: return "BOOL"
        case .uint8: return "U8"
        case .int8: return "I8"
        case .uint16: return "U16"
        case .int16: return "I16"
        case .float16: return "F16"
        case .bfloat16: return "BF16"
        case .uint32: return "U32"
        case .int32: return "I32"
        case .float32: return "F32"
        case .uint64: return "U64"
        case .int64: return "I64"
        case .float64: return "F64"
        case .complex64: return "C64"
        case .complex128: return "C128"
        case .f8E4M3: return "F8_E4M3"
        case .f8E5M2: return "F8_E5M2"
        case .f8E8M0: return "F8_E8M0"
        case .f8E4M3FNUZ: return "F8_E4M3FNUZ"
        case .f8E5M2FNUZ: return "F8_E5M2FNUZ"
        case .f6E2M3: return "F6_E2M3"
        case .f6E3M2: return "F6_E3M2"
        case .f4: return "F4"
        case .raw: return "RAW"
        case .string: return "STRING"
        }
    }

    /// The dtype's ``name``, e.g. `F32`.
    public var description: String { name }

    /// Looks a dtype up by its ``name`` (which includes every safetensors name).
    public init?(name: String) {
        guard let match = DType.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// True for floating-point and complex dtypes of every width.
    public var isFloatingPoint: Bool {
        switch self {
        case .float16, .bfloat16, .float32, .float64, .complex64, .complex128,
             .f8E4M3, .f8E5M2, .f8E8M0, .f8E4M3FNUZ, .f8E5M2FNUZ, .f6E2M3, .f6E3M2, .f4:
            return true
        default:
            return false
        }
    }

    /// The element size the byte-shuffle filter groups by: the size of one
    /// real component (complex64 shuffles as float32 pairs), or `nil` where
    /// shuffling cannot help (1-byte, sub-byte and string dtypes).
    public var shuffleElementSize: Int? {
        switch self {
        case .complex64: return 4
        case .complex128: return 8
        default:
            guard let size = elementSizeInBytes, size > 1 else { return nil }
            return size
        }
    }

    /// The exact byte count of `elementCount` elements; `nil` for ``string``.
    ///
    /// - Throws: ``CheckpointError/Code/invalidShape(reason:)`` when the count overflows
    ///   or a sub-byte tensor does not fill whole bytes.
    public func byteCount(elementCount: Int) throws(CheckpointError) -> Int? {
        guard self != .string else { return nil }
        let (bits, overflow) = elementCount.multipliedReportingOverflow(by: bitsPerElement)
        guard !overflow else {
            throw CheckpointError(.invalidShape(reason: "\(elementCount) elements of \(name) overflow a 64-bit byte count"))
        }
        guard bits % 8 == 0 else {
            throw CheckpointError(.invalidShape(reason: "\(elementCount) elements of \(name) (\(bitsPerElement) bits each) do not fill whole bytes"))
        }
        return bits / 8
    }
}

import BlobCodec

/// Summary statistics of a floating-point tensor: min, max, mean, standard
/// deviation over the finite values, and how many values are NaN or infinite.
///
///     let file = try TensorFile.open("model.safetensors")
///     let stats = try file.withUnsafeBytes(of: "lm_head.weight") { TensorStatistics($0, dtype: .bfloat16) }
///
/// One pass over the bytes (O(n)), in Double.
public struct TensorStatistics: Sendable, Equatable {
    /// Elements read.
    public var count: Int
    /// Finite elements (the ones min, max, mean and std are over).
    public var finiteCount: Int
    /// Elements that are NaN.
    public var nanCount: Int
    /// Elements that are +∞ or −∞.
    public var infinityCount: Int
    /// Over the finite elements; nil when there are none.
    public var minimum: Double?
    /// Over the finite elements; nil when there are none.
    public var maximum: Double?
    /// Over the finite elements; nil when there are none.
    public var mean: Double?
    /// Population standard deviation.
    public var standardDeviation: Double?

    /// The dtypes statistics are computed for: F16, BF16, F32, F64.
    public static func supports(_ dtype: DType) -> Bool {
        [.float16, .bfloat16, .float32, .float64].contains(dtype)
    }

    /// Statistics of `bytes` as little-endian elements of `dtype`; nil for a dtype ``supports(_:)`` rejects
    /// or a byte count that is not a whole number of elements.
    public init?(_ bytes: UnsafeRawBufferPointer, dtype: DType) {
        guard TensorStatistics.supports(dtype), let size = dtype.elementSizeInBytes, bytes.count % size == 0 else { return nil }
        var accumulator = Accumulator()
        let count = bytes.count / size
        switch dtype {
        case .float32:
            for i in 0..<count { accumulator.add(Double(Float(bitPattern: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self).littleEndian))) }
        case .float64:
            for i in 0..<count { accumulator.add(Double(bitPattern: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self).littleEndian)) }
        case .bfloat16:
            for i in 0..<count {
                let bits = UInt32(bytes.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian) << 16
                accumulator.add(Double(Float(bitPattern: bits)))
            }
        default:  // float16
            for i in 0..<count { accumulator.add(TensorStatistics.half(bytes.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian)) }
        }
        self.count = count
        finiteCount = accumulator.finite
        nanCount = accumulator.nan
        infinityCount = accumulator.infinite
        if accumulator.finite > 0 {
            minimum = accumulator.minimum
            maximum = accumulator.maximum
            mean = accumulator.mean
            standardDeviation = (accumulator.m2 / Double(accumulator.finite)).squareRoot()
        }
    }

    /// IEEE 754 binary16 to Double.
    static func half(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int((bits >> 10) & 0x1F)
        let fraction = Double(bits & 0x3FF)
        switch exponent {
        case 0: return sign * fraction * 0x1p-24
        case 31: return fraction == 0 ? sign * .infinity : .nan
        default: return sign * (1 + fraction / 1024) * Double(sign: .plus, exponent: exponent - 15, significand: 1)
        }
    }

    /// Welford's running mean and sum of squared deviations.
    private struct Accumulator {
        var finite = 0, nan = 0, infinite = 0
        var minimum = Double.infinity, maximum = -Double.infinity
        var mean = 0.0, m2 = 0.0

        mutating func add(_ value: Double) {
            if value.isNaN { nan += 1; return }
            if value.isInfinite { infinite += 1; return }
            finite += 1
            minimum = Swift.min(minimum, value)
            maximum = Swift.max(maximum, value)
            let delta = value - mean
            mean += delta / Double(finite)
            m2 += delta * (value - mean)
        }
    }
}

import BlobCodec

/// Builds blob contents of a given dtype and approximate byte size, shaped like real data.
enum TestBlobs {
    /// A shape of `dtype` whose byte count is close to `targetBytes`, and bytes for it.
    static func make(_ dtype: DType, targetBytes: Int, rng: inout SyntheticData) throws -> (shape: Shape, bytes: [UInt8]) {
        switch dtype {
        case .string:
            var strings: [String] = []
            var size = 0
            while size + 8 < targetBytes || strings.isEmpty && targetBytes >= 8 {
                let length = Int(rng.next() % 40)
                let string = String((0..<length).map { _ in Character(Unicode.Scalar(UInt8(97 + rng.next() % 26))) })
                strings.append(string)
                size += 8 + length
            }
            return (try Shape([strings.count]), StringTensor.encode(strings))
        case .float32:
            let count = targetBytes / 4
            return (try Shape([count]), rng.float32Weights(count: count))
        case .bfloat16:
            let count = targetBytes / 2
            return (try Shape([count]), rng.bfloat16Weights(count: count))
        default:
            // Elements per whole byte group (sub-byte dtypes pack 8/gcd(bits,8) elements per group).
            let bits = dtype.bitsPerElement
            let elementsPerGroup = bits % 8 == 0 ? 1 : (bits == 4 ? 2 : 4)
            let bytesPerGroup = elementsPerGroup * bits / 8
            let groups = targetBytes / bytesPerGroup
            let shape = try Shape([groups * elementsPerGroup])
            let count = try shape.byteCount(for: dtype)!
            // Mostly small values (compressible), some noise.
            var bytes = rng.randomBytes(count: count)
            for index in bytes.indices where rng.next() % 4 != 0 { bytes[index] &= 0x07 }
            return (shape, bytes)
        }
    }
}

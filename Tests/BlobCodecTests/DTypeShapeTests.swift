import BlobCodec
import Testing

@Suite("DType and Shape")
struct DTypeShapeTests {
    @Test("every safetensors dtype is present with its name and size")
    func safetensorsNames() {
        let expected: [String: Int] = [
            "BOOL": 8, "U8": 8, "I8": 8, "U16": 16, "I16": 16, "F16": 16, "BF16": 16, "U32": 32, "I32": 32,
            "F32": 32, "U64": 64, "I64": 64, "F64": 64, "C64": 64, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
            "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
        ]
        for (name, bits) in expected {
            let dtype = DType(name: name)
            #expect(dtype != nil, "\(name) missing")
            #expect(dtype?.bitsPerElement == bits, "\(name)")
            #expect(dtype?.safetensorsName == name)
        }
        #expect(DType.complex128.elementSizeInBytes == 16)
        #expect(DType.complex128.safetensorsName == nil)
        #expect(DType.raw.elementSizeInBytes == 1)
        #expect(DType.string.elementSizeInBytes == nil)
        #expect(Set(DType.allCases.map(\.rawValue)).count == DType.allCases.count, "ids are unique")
    }

    @Test("byte counts, including packed sub-byte dtypes")
    func byteCounts() throws {
        #expect(try Shape([2, 3]).byteCount(for: .float32) == 24)
        #expect(try Shape([]).byteCount(for: .float64) == 8, "a scalar is one element")
        #expect(try Shape([0, 5]).byteCount(for: .float32) == 0)
        #expect(try Shape([4]).byteCount(for: .f4) == 2, "two F4 per byte")
        #expect(try Shape([4]).byteCount(for: .f6E2M3) == 3, "four F6 per three bytes")
        #expect(throws: CheckpointError.self) { try Shape([3]).byteCount(for: .f4) }
        #expect(throws: CheckpointError.self) { try Shape([2]).byteCount(for: .f6E3M2) }
        #expect(try Shape([5]).byteCount(for: .string) == nil)
    }

    @Test("invalid shapes are rejected, overflow included")
    func invalidShapes() throws {
        #expect(throws: CheckpointError.self) { try Shape([-1]) }
        #expect(throws: CheckpointError.self) { try Shape([1 << 32, 1 << 32]) }
        #expect(throws: CheckpointError.self) { try Shape(Array(repeating: 1, count: 65)) }
        #expect(throws: CheckpointError.self) { try Shape([1 << 61]).byteCount(for: .float32) }
        // A zero dimension makes the product zero even when the others would overflow.
        #expect(try Shape([1 << 40, 1 << 40, 0]).elementCount == 0)
        #expect(try Shape([Int.max]).elementCount == Int.max)
    }

    @Test("string tensors round trip and reject bad layouts")
    func stringTensors() throws {
        let strings = ["", "hello", "naïve", String(repeating: "x", count: 1000)]
        let bytes = StringTensor.encode(strings)
        #expect(try bytes.withUnsafeBytes { try StringTensor.decode($0, count: strings.count) } == strings)
        var bad = bytes
        bad[8 * 4 + 5 + 2] = 0xFF  // the first byte of "ï" in "naïve": invalid UTF-8
        #expect(throws: CheckpointError.self) { try bad.withUnsafeBytes { try StringTensor.decode($0, count: strings.count) } }
        #expect(throws: CheckpointError.self) { try bytes.dropLast().withUnsafeBytes { try StringTensor.decode($0, count: strings.count) } }
        #expect(throws: CheckpointError.self) { try (bytes + [0]).withUnsafeBytes { try StringTensor.decode($0, count: strings.count) } }
    }
}

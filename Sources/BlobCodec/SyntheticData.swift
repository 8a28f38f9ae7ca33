/// Deterministic synthetic tensor data for tests, benchmarks and demos:
/// weights drawn like a freshly initialised model's (normal, mean 0) from a
/// seeded generator, so every run and every machine sees the same bytes.
public struct SyntheticData: Sendable {
    private var state: UInt64

    /// A generator seeded with `seed` (SplitMix64).
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in (0, 1].
    private mutating func unit() -> Double { Double((next() >> 11) + 1) * 0x1p-53 }

    /// Fills `values` with normal(0, `standardDeviation`) samples (Box–Muller).
    public mutating func fillNormal(_ values: UnsafeMutableBufferPointer<Float>, standardDeviation: Float = 0.02) {
        var index = 0
        while index < values.count {
            let radius = (-2 * _log(unit())).squareRoot() * Double(standardDeviation)
            let angle = 2 * Double.pi * unit()
            values[index] = Float(radius * _cos(angle))
            if index + 1 < values.count { values[index + 1] = Float(radius * _sin(angle)) }
            index += 2
        }
    }

    /// `count` float32 normal(0, `standardDeviation`) values as little-endian bytes.
    public mutating func float32Weights(count: Int, standardDeviation: Float = 0.02) -> [UInt8] {
        var floats = [Float](repeating: 0, count: count)
        floats.withUnsafeMutableBufferPointer { fillNormal($0, standardDeviation: standardDeviation) }
        return floats.withUnsafeBytes { Array($0) }
    }

    /// `count` bfloat16 normal(0, `standardDeviation`) values (float32 rounded to nearest even) as bytes.
    public mutating func bfloat16Weights(count: Int, standardDeviation: Float = 0.02) -> [UInt8] {
        var floats = [Float](repeating: 0, count: count)
        floats.withUnsafeMutableBufferPointer { fillNormal($0, standardDeviation: standardDeviation) }
        var out = [UInt8](repeating: 0, count: 2 * count)
        for (index, value) in floats.enumerated() {
            let bits = value.bitPattern
            let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16
            out[2 * index] = UInt8(truncatingIfNeeded: rounded)
            out[2 * index + 1] = UInt8(truncatingIfNeeded: rounded >> 8)
        }
        return out
    }

    /// `count` uniformly random bytes (incompressible).
    public mutating func randomBytes(count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let word = next()
                let n = min(8, buffer.count - offset)
                withUnsafeBytes(of: word) { buffer.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
        return out
    }
}

#if canImport(Glibc)
import func Glibc.cos
import func Glibc.log
import func Glibc.sin
private func _log(_ x: Double) -> Double { log(x) }
private func _cos(_ x: Double) -> Double { cos(x) }
private func _sin(_ x: Double) -> Double { sin(x) }
#elseif canImport(Darwin)
import func Darwin.cos
import func Darwin.log
import func Darwin.sin
private func _log(_ x: Double) -> Double { log(x) }
private func _cos(_ x: Double) -> Double { cos(x) }
private func _sin(_ x: Double) -> Double { sin(x) }
#endif

/// Deterministic blob contents for crash tests: the bytes of blob `blob` at
/// `epoch`, the same in every process.
public enum StressContent {
    /// `count` bytes for blob `blob` at `epoch`: the same for the same arguments in every process.
    public static func bytes(blob: Int, epoch: Int, count: Int) -> [UInt8] {
        var generator = SyntheticData(seed: UInt64(truncatingIfNeeded: epoch) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: blob))
        return generator.randomBytes(count: count)
    }

    /// The epoch whose content blob `blob` holds at `epoch` when only blob
    /// `e % blobCount` changes at epoch `e` (the crash tests' incremental
    /// workload): the last such epoch ≤ `epoch`, or 0 (the initial content).
    public static func lastChange(blob: Int, epoch: Int, blobCount: Int) -> Int {
        guard epoch > 0, blobCount > 0 else { return 0 }
        let last = epoch - ((epoch - blob) % blobCount + blobCount) % blobCount
        return last > 0 ? last : 0
    }
}

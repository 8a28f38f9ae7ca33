// BlobCodec benchmarks: CRC32C, shuffle, and encode/decode per codec on 64 MiB
// of fp32 and bf16 weights drawn like a fresh model's (normal, std 0.02), next
// to the libraries called directly on the same (pre-shuffled) bytes.
//
// Every benchmark records a custom metric "MB/s" (decimal megabytes of raw
// data per second, from the iteration's own wall clock) besides the usual
// wall clock, so ratios can be read off one run.
import Benchmark
import BlobCodec
import CLZ4Baseline
import CZstdBaseline
import Dispatch
import Synchronization

let dataSize = 64 << 20
let chunkSize = EncodeOptions.defaultChunkSize

/// The workload, generated once per process (deterministic seed).
final class Workload: @unchecked Sendable {
    static let shared = Workload()
    let fp32: [UInt8]
    let bf16: [UInt8]
    let fp32Shuffled: [UInt8]
    let bf16Shuffled: [UInt8]

    init() {
        var rng = SyntheticData(seed: 2026)
        fp32 = rng.float32Weights(count: dataSize / 4)
        bf16 = rng.bfloat16Weights(count: dataSize / 2)
        fp32Shuffled = Workload.shuffledByChunk(fp32, elementSize: 4)
        bf16Shuffled = Workload.shuffledByChunk(bf16, elementSize: 2)
    }

    /// The bytes our codec hands to the compressor: each chunk shuffled on its own.
    static func shuffledByChunk(_ bytes: [UInt8], elementSize: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: bytes.count)
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                for start in stride(from: 0, to: src.count, by: chunkSize) {
                    let end = min(src.count, start + chunkSize)
                    ByteShuffle.shuffle(UnsafeRawBufferPointer(rebasing: src[start..<end]),
                                        into: UnsafeMutableRawBufferPointer(rebasing: dst[start..<end]), elementSize: elementSize)
                }
            }
        }
        return out
    }
}

let megabytesPerSecond = BenchmarkMetric.custom("MB/s", polarity: .prefersLarger, useScalingFactor: false)

/// Times `body` once per iteration and records raw megabytes per second.
func throughputBenchmark(_ name: String, bytes: Int, maxDuration: Duration = .seconds(3), _ body: @escaping @Sendable () -> Void) {
    Benchmark(name, configuration: .init(
        metrics: [.wallClock, megabytesPerSecond], warmupIterations: 2, maxDuration: maxDuration, maxIterations: 50)
    ) { benchmark in
        let clock = ContinuousClock()
        for _ in benchmark.scaledIterations {
            let start = clock.now
            body()
            let elapsed = clock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            benchmark.measurement(megabytesPerSecond, Int(Double(bytes) / seconds / 1e6))
        }
    }
}

/// A reusable output buffer of `count` bytes, touched once so timings do not measure first-touch page faults.
func warmBuffer(_ count: Int) -> UnsafeMutableRawBufferPointer {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    return buffer
}

struct EncodedBlob: Sendable {
    let header: BlobHeader
    let payload: [UInt8]
}

/// Encoded blobs, made on first use (inside a benchmark's warm-up, not at registration).
let encodedCache = Mutex<[String: EncodedBlob]>([:])

/// The encoded form of `bytes` (header + payload) with `options`, cached.
func encoded(_ bytes: [UInt8], _ dtype: DType, _ options: EncodeOptions) -> EncodedBlob {
    let key = "\(dtype) \(options.compression)"
    if let blob = encodedCache.withLock({ $0[key] }) { return blob }
    let shape = try! Shape([bytes.count / dtype.elementSizeInBytes!])
    let all = try! bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "w", dtype: dtype, shape: shape, options: options) }
    let (header, length) = try! all.withUnsafeBytes { try BlobHeader.decode(from: $0) }
    let blob = EncodedBlob(header: header, payload: Array(all[length...]))
    print("\(key): ratio \(String(Double(dataSize) / Double(header.storedSizeInBytes)).prefix(5)) (raw/stored), filter \(header.filter)")
    encodedCache.withLock { $0[key] = blob }
    return blob
}

let benchmarks: @Sendable () -> Void = {
    let work = LazyWorkload()

    // MARK: Kernels, one core.
    throughputBenchmark("CRC32C hardware 64 MiB", bytes: dataSize) {
        work.fp32.withUnsafeBytes { blackHole(CRC32C.checksum($0)) }
    }
    throughputBenchmark("CRC32C portable 64 MiB", bytes: dataSize) {
        work.fp32.withUnsafeBytes { blackHole(CRC32C.extendPortable(0, $0)) }
    }
    let shuffleOut = UncheckedBuffer(warmBuffer(dataSize))
    for (label, dtype, size) in [("fp32", DType.float32, 4), ("bf16", DType.bfloat16, 2)] {
        throughputBenchmark("shuffle \(label) 64 MiB", bytes: dataSize) {
            work.raw(dtype).withUnsafeBytes { ByteShuffle.shuffle($0, into: shuffleOut.buffer, elementSize: size) }
        }
    }
    throughputBenchmark("unshuffle fp32 64 MiB", bytes: dataSize) {
        work.fp32Shuffled.withUnsafeBytes { ByteShuffle.unshuffle($0, into: shuffleOut.buffer, elementSize: 4) }
    }

    // MARK: LZ4 + shuffle, ours vs liblz4 called directly on the same shuffled bytes.
    let lz4Out = UncheckedBuffer(warmBuffer(Int(LZ4_compressBound(Int32(chunkSize))) * (dataSize / chunkSize)))
    let lz4State = UncheckedBuffer(warmBuffer(Int(LZ4_sizeofState())))
    throughputBenchmark("lz4 direct encode fp32 (shuffled input) 1 thread", bytes: dataSize) {
        work.fp32Shuffled.withUnsafeBytes { src in
            var offset = 0
            for start in stride(from: 0, to: src.count, by: chunkSize) {
                let n = min(chunkSize, src.count - start)
                let produced = LZ4_compress_fast_extState(lz4State.buffer.baseAddress, src.baseAddress! + start,
                                                          lz4Out.buffer.baseAddress! + offset, Int32(n), Int32(n - 1), 1)
                offset += Int(produced)
            }
            blackHole(offset)
        }
    }
    let rawOut = UncheckedBuffer(warmBuffer(dataSize))
    // liblz4 alone on the same chunks, chunk i on thread i % threads: how far bare LZ4 decode
    // scales on this machine, next to ours (decode + unshuffle + both CRCs) below.
    for threads in [1, 2] {
        throughputBenchmark("lz4 direct decode fp32 \(threads) thread\(threads == 1 ? "" : "s")", bytes: dataSize) {
            let blob = encoded(work.fp32, .float32, EncodeOptions(compression: .lz4))
            var starts = [0]
            for chunk in blob.header.chunks { starts.append(starts.last! + Int(chunk.storedSize)) }
            let offsets = starts
            blob.payload.withUnsafeBytes { bytes in
                nonisolated(unsafe) let payload = bytes
                DispatchQueue.concurrentPerform(iterations: threads) { thread in
                    for index in stride(from: thread, to: blob.header.chunks.count, by: threads) {
                        let raw = blob.header.rawLength(ofChunk: index)
                        let stored = Int(blob.header.chunks[index].storedSize)
                        if stored < raw {
                            blackHole(LZ4_decompress_safe(payload.baseAddress! + offsets[index], rawOut.buffer.baseAddress! + index * chunkSize,
                                                          Int32(stored), Int32(raw)))
                        }
                    }
                }
            }
        }
    }
    for threads in [1, 2] {
        throughputBenchmark("lz4+shuffle encode fp32 \(threads) thread(s)", bytes: dataSize) {
            let options = EncodeOptions(compression: .lz4, threads: threads)
            try! work.fp32.withUnsafeBytes {
                try BlobEncoder.encode($0, name: "w", dtype: .float32, shape: [dataSize / 4], options: options) { header, _ in
                    blackHole(header.storedSizeInBytes)
                }
            }
        }
        throughputBenchmark("lz4+shuffle decode fp32 \(threads) thread(s)", bytes: dataSize) {
            let blob = encoded(work.fp32, .float32, EncodeOptions(compression: .lz4))
            try! blob.payload.withUnsafeBytes {
                try BlobDecoder.decode(payload: $0, header: blob.header, into: rawOut.buffer, options: DecodeOptions(threads: threads))
            }
        }
    }

    // MARK: Every codec, 2 threads, fp32 and bf16.
    let codecs: [Compression] = [.none, .lz4, .zstd(level: 1), .zstd(level: 3), .zlib(level: 1)]
    for (label, dtype) in [("fp32", DType.float32), ("bf16", DType.bfloat16)] {
        for codec in codecs {
            let options = EncodeOptions(compression: codec, threads: 2)
            let slow = codec.id == 3
            throughputBenchmark("\(codec) encode \(label) 2 threads", bytes: dataSize, maxDuration: .seconds(slow ? 6 : 3)) {
                try! work.raw(dtype).withUnsafeBytes {
                    try BlobEncoder.encode($0, name: "w", dtype: dtype, shape: [dataSize / dtype.elementSizeInBytes!], options: options) { header, _ in
                        blackHole(header.storedSizeInBytes)
                    }
                }
            }
            throughputBenchmark("\(codec) decode \(label) 2 threads", bytes: dataSize) {
                let blob = encoded(work.raw(dtype), dtype, options)
                try! blob.payload.withUnsafeBytes {
                    try BlobDecoder.decode(payload: $0, header: blob.header, into: rawOut.buffer, options: DecodeOptions(threads: 2))
                }
            }
        }
    }

    // MARK: zstd-1 called directly on the same shuffled bf16 bytes, 1 thread, for reference.
    let zstdOut = UncheckedBuffer(warmBuffer(ZSTD_compressBound(chunkSize)))
    let zstdContext = UncheckedPointer(ZSTD_createCCtx())
    throughputBenchmark("zstd-1 direct encode bf16 (shuffled input) 1 thread", bytes: dataSize) {
        work.bf16Shuffled.withUnsafeBytes { src in
            var total = 0
            for start in stride(from: 0, to: src.count, by: chunkSize) {
                let n = min(chunkSize, src.count - start)
                total += ZSTD_compressCCtx(zstdContext.pointer, zstdOut.buffer.baseAddress, zstdOut.buffer.count, src.baseAddress! + start, n, 1)
            }
            blackHole(total)
        }
    }
    throughputBenchmark("zstd-1+shuffle encode bf16 1 thread", bytes: dataSize) {
        let options = EncodeOptions(compression: .zstd(level: 1), threads: 1)
        try! work.bf16.withUnsafeBytes {
            try BlobEncoder.encode($0, name: "w", dtype: .bfloat16, shape: [dataSize / 2], options: options) { header, _ in
                blackHole(header.storedSizeInBytes)
            }
        }
    }
}

/// Lets a buffer allocated once be used from the benchmark closures.
struct UncheckedBuffer: @unchecked Sendable {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

struct UncheckedPointer: @unchecked Sendable {
    let pointer: OpaquePointer?
    init(_ pointer: OpaquePointer?) { self.pointer = pointer }
}

/// Defers generating the workload until a benchmark body first needs it.
struct LazyWorkload: Sendable {
    var fp32: [UInt8] { Workload.shared.fp32 }
    var bf16: [UInt8] { Workload.shared.bf16 }
    var fp32Shuffled: [UInt8] { Workload.shared.fp32Shuffled }
    var bf16Shuffled: [UInt8] { Workload.shared.bf16Shuffled }
    func raw(_ dtype: DType) -> [UInt8] { dtype == .float32 ? fp32 : bf16 }
}

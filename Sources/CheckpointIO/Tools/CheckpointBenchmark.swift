import BlobCodec

/// Tensors held in memory for a benchmark: one arena, pre-touched.
public final class BenchmarkWorkload: @unchecked Sendable {
    /// The workload's name (`llm`, `small`, …).
    public let name: String
    /// The tensors: name, dtype, shape and byte range in the arena.
    public let tensors: [(name: String, dtype: DType, shape: Shape, range: Range<Int>)]
    let arena: TensorStorage
    /// Bytes of all tensors together.
    public var totalBytes: Int { arena.count }

    init(name: String, tensors: [(name: String, dtype: DType, shape: Shape, range: Range<Int>)], arena: TensorStorage) {
        self.name = name
        self.tensors = tensors
        self.arena = arena
    }

    /// The tensors as write sources (pointing into the arena, which this workload keeps alive).
    public var sources: [BlobSource] {
        tensors.map { t in
            BlobSource(name: t.name, dtype: t.dtype, shape: t.shape, bytes: UnsafeRawBufferPointer(start: arena.base + t.range.lowerBound, count: t.range.count))
        }
    }

    /// Transformer-shaped fp32 tensors from normal(0, 0.02), about `size` bytes:
    /// an embedding, layers of attention (q, k, v, o) and MLP (gate, up, down)
    /// weights with their norms, a final norm and an LM head.
    public static func llm(size: Int = 2 << 30) -> BenchmarkWorkload {
        var hidden = 64
        while hidden < 4096 && 16 * (hidden * 2) * (hidden * 2) * 4 <= size / 8 { hidden *= 2 }
        // The embedding and head take at most a quarter of the size.
        let vocabulary = max(16, min(32000, size / 4 / (2 * hidden * 4)))
        var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [vocabulary, hidden])]
        let layerBytes = (12 * hidden * hidden + 2 * hidden) * 4
        let fixedBytes = (2 * vocabulary * hidden + hidden) * 4
        let layers = max(1, (size - fixedBytes) / layerBytes)
        for layer in 0..<layers {
            let p = "model.layers.\(layer)."
            shapes += [(p + "input_layernorm.weight", [hidden]),
                       (p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [hidden, hidden]),
                       (p + "self_attn.v_proj.weight", [hidden, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                       (p + "post_attention_layernorm.weight", [hidden]),
                       (p + "mlp.gate_proj.weight", [8 * hidden / 3, hidden]), (p + "mlp.up_proj.weight", [8 * hidden / 3, hidden]),
                       (p + "mlp.down_proj.weight", [hidden, 8 * hidden / 3])]
        }
        shapes += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocabulary, hidden])]
        return make(name: "llm", shapes.map { ($0.0, DType.float32, $0.1) }) { buffer in
            // A 32 MiB block of normal(0, 0.02) floats, tiled: realistic for compressors, quick to make.
            var generator = SyntheticData(seed: 2026)
            let block = generator.float32Weights(count: min(buffer.count, 32 << 20) / 4)
            var offset = 0
            while offset < buffer.count {
                let n = min(block.count, buffer.count - offset)
                block.withUnsafeBytes { (buffer.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
    }

    /// `count` uint8 tensors of 256 B to 64 KiB (uniform, seeded), random bytes.
    public static func small(count: Int = 20_000) -> BenchmarkWorkload {
        var generator = SyntheticData(seed: 20_000)
        let shapes = (0..<count).map { i in ("small.\(i)", DType.uint8, [256 + Int(generator.next() % UInt64(65536 - 256 + 1))]) }
        return make(name: "small", shapes) { buffer in
            var bytes = SyntheticData(seed: 5)
            let block = bytes.randomBytes(count: min(buffer.count, 16 << 20))
            var offset = 0
            while offset < buffer.count {
                let n = min(block.count, buffer.count - offset)
                block.withUnsafeBytes { (buffer.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
    }

    /// The tensors of a file (any ``TensorFileFormat``), read into memory.
    public static func file(_ path: String) throws(CheckpointError) -> BenchmarkWorkload {
        let file = try TensorFile.open(path)
        var tensors: [(name: String, dtype: DType, shape: Shape, range: Range<Int>)] = []
        var offset = 0
        for entry in file.entries {
            tensors.append((entry.name, entry.dtype, entry.shape, offset..<(offset + entry.rawBytes)))
            offset += (entry.rawBytes + 63) / 64 * 64
        }
        let arena = try TensorStorage(checkedByteCount: offset, limit: .max)  // backed by a real file of that size
        for tensor in tensors {
            try file.read(tensor.name, into: UnsafeMutableRawBufferPointer(start: arena.base + tensor.range.lowerBound, count: tensor.range.count))
        }
        return BenchmarkWorkload(name: path, tensors: tensors, arena: arena)
    }

    private static func make(name: String, _ shapes: [(String, DType, [Int])], fill: (UnsafeMutableRawBufferPointer) -> Void) -> BenchmarkWorkload {
        var tensors: [(name: String, dtype: DType, shape: Shape, range: Range<Int>)] = []
        var offset = 0
        for (tensorName, dtype, dims) in shapes {
            let shape = try! Shape(dims)
            let bytes = try! shape.byteCount(for: dtype)!
            tensors.append((tensorName, dtype, shape, offset..<(offset + bytes)))
            offset += bytes
        }
        let arena = TensorStorage(uninitializedByteCount: offset)
        fill(UnsafeMutableRawBufferPointer(start: arena.base, count: offset))
        return BenchmarkWorkload(name: name, tensors: tensors, arena: arena)
    }
}

/// One line of a benchmark: ours, and the physical floor on the same bytes.
public struct BenchmarkResult: Sendable {
    /// What was measured (`save`, `load`, `open+list`, …).
    public var name: String
    /// The bytes moved; 0 for latency measurements (open + list, view), which have no throughput.
    public var bytes: Int
    /// Median seconds of ours in the steady state (the repetitions after the first).
    public var seconds: Double
    /// The floor measured next to it (`write`, `read`, `memcpy`), when there is one.
    public var floorName: String?
    /// Median seconds of the floor in the steady state.
    public var floorSeconds: Double?
    /// Seconds of ours in the first run (cold: fresh file blocks, first page faults), not part of ``seconds``.
    public var firstSeconds: Double
    /// Seconds of the floor in its first run.
    public var floorFirstSeconds: Double?
    /// Why a figure may surprise (e.g. a page-cache save measured slower than a durable one), when it does.
    public var note: String?
    /// CPU seconds (user + system, every thread of this process) of ours in the steady-state
    /// run whose wall time is the median: over ``seconds`` it is the cores kept busy, so a figure short of its floor shows
    /// whether the CPU or the wait was the limit.
    public var cpuSeconds: Double = 0

    /// Our steady-state throughput in GB/s (10^9 bytes); nil for latency measurements.
    public var gigabytesPerSecond: Double? { bytes > 0 ? Double(bytes) / seconds / 1e9 : nil }
    /// The floor's steady-state throughput in GB/s; nil without a floor or for latency measurements.
    public var floorGigabytesPerSecond: Double? { bytes > 0 ? floorSeconds.map { Double(bytes) / $0 / 1e9 } : nil }
    /// Our throughput over the floor's (1.0 = as fast as the floor).
    public var ratio: Double? { floorSeconds.map { $0 / seconds } }
    /// Cores kept busy on average: ``cpuSeconds`` over ``seconds``.
    public var cores: Double { seconds > 0 ? cpuSeconds / seconds : 0 }
}

/// The engine's throughput benchmark on the user's own disk: save (page
/// cache and durable), open + list, load with verification and zero-copy
/// view, each next to its floor measured in the same run (sequential
/// `write`/`read` of the same bytes in 16 MiB calls, memcpy). With a codec,
/// also the durable save next to the same save uncompressed: whether the codec
/// pays on this disk. Each figure carries the CPU time it took (``BenchmarkResult/cpuSeconds``).
///
/// Each measurement runs once first (the first run, reported apart: it
/// warms caches and allocates file blocks), then `repetitions` more times
/// (ours and the floor alternating), whose median is the steady state.
/// Destination buffers are allocated and touched before any timing
/// (first-touch page faults would measure the hypervisor). Scratch files
/// (`.ckpt-bench.PID.*` in `directory`) are removed at the end, on SIGINT or
/// SIGTERM under ``InterruptCleanup``, and, for a benchmark killed outright,
/// by the next one in the same directory.
public enum CheckpointBenchmark {
    /// The measurements ``run(_:directory:encode:repetitions:progress:)`` makes (and reports
    /// progress for) with these options: 6, or 7 with a codec.
    public static func measurementCount(encode: EncodeOptions) -> Int { comparesUncompressed(encode) ? 7 : 6 }

    /// With a codec, the durable save is also measured uncompressed.
    private static func comparesUncompressed(_ encode: EncodeOptions) -> Bool {
        encode.compression != .none || encode.floatCompression != nil
    }

    /// Runs every measurement on `workload` in `directory` and returns one result per line, each next to its floor.
    public static func run(_ workload: BenchmarkWorkload, directory: String, encode: EncodeOptions = EncodeOptions(), repetitions: Int = 3,
                           progress: (String) -> Void = { _ in }) throws(CheckpointError) -> [BenchmarkResult] {
        let calls = SystemCalls.live
        let ours = CheckpointNaming.join(directory, ".ckpt-bench.\(SystemCalls.processID).ckpt")
        let floorFile = CheckpointNaming.join(directory, ".ckpt-bench.\(SystemCalls.processID).dd")
        // Scratch files of benchmarks killed outright (SIGKILL): `.ckpt-bench.PID.*` of processes that are gone.
        for name in AtomicFile.listDirectory(directory) where name.hasPrefix(".ckpt-bench.") {
            let parts = name.split(separator: ".")
            if parts.count >= 3, let pid = Int32(parts[1]), pid != SystemCalls.processID, !SystemCalls.processExists(pid) {
                calls.unlinkRetrying(CheckpointNaming.join(directory, name))
            }
        }
        HeldWriterLocks.shared.addScratch([ours, floorFile])
        defer {
            HeldWriterLocks.shared.removeScratch([ours, floorFile])
            _ = calls.unlink(ours)
            _ = calls.unlink(ours + ".lock")
            _ = calls.unlink(floorFile)
        }
        let sources = workload.sources
        let total = workload.totalBytes
        let destination = TensorStorage(uninitializedByteCount: total)
        destination.base.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        var results: [BenchmarkResult] = []

        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        func seconds(_ body: () throws(CheckpointError) -> Void) throws(CheckpointError) -> Double {
            try measured(body).wall
        }
        /// Wall and CPU seconds (user + system of the whole process) of one run.
        func measured(_ body: () throws(CheckpointError) -> Void) throws(CheckpointError) -> (wall: Double, cpu: Double) {
            let cpuStart = SystemCalls.processCPUSeconds()
            let start = ContinuousClock.now
            try body()
            let elapsed = ContinuousClock.now - start
            return (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18,
                    SystemCalls.processCPUSeconds() - cpuStart)
        }
        func pair(_ name: String, floor floorName: String?, bytes: Int, ours: () throws(CheckpointError) -> Void,
                  floor: (() throws(CheckpointError) -> Void)?, prepare: () -> Void = {}) throws(CheckpointError) {
            progress(name)
            // The first run: reported apart, never part of the steady state.
            prepare()
            let firstOurs = try seconds(ours)
            var firstFloor: Double?
            if let floor { prepare(); firstFloor = try seconds(floor) }
            var oursTimes: [Double] = [], oursCPU: [Double] = [], floorTimes: [Double] = []
            for repetition in 0..<repetitions {
                // Alternate the order: the second of a pair often meets a disk still busy with the first.
                if repetition % 2 == 1, let floor { prepare(); floorTimes.append(try seconds(floor)) }
                prepare()
                let run = try measured(ours)
                oursTimes.append(run.wall)
                oursCPU.append(run.cpu)
                if repetition % 2 == 0, let floor { prepare(); floorTimes.append(try seconds(floor)) }
            }
            var result = BenchmarkResult(name: name, bytes: bytes, seconds: median(oursTimes), floorName: floorName,
                                         floorSeconds: floorTimes.isEmpty ? nil : median(floorTimes), firstSeconds: firstOurs, floorFirstSeconds: firstFloor)
            // The CPU time of the run whose wall time is the median, so that cores = CPU / wall is one run's.
            let middle = oursTimes.indices.sorted { oursTimes[$0] < oursTimes[$1] }[oursTimes.count / 2]
            result.cpuSeconds = oursCPU[middle]
            results.append(result)
        }
        func save(_ durability: Durability, encode: EncodeOptions = encode) throws(CheckpointError) {
            let writer = try ContainerWriter.create(at: ours, options: WriterOptions(encode: encode, durability: durability))
            do throws(CheckpointError) {
                try writer.write(sources)
                try writer.commit()
            } catch {
                writer.abort()
                throw error
            }
        }
        func ddWrite(sync: Bool) throws(CheckpointError) {
            let file = try calls.openFile(floorFile, flags: OpenMode.createOrOpen.flags | AtomicFile.truncateFlag)
            defer { file.close() }
            var offset = 0
            while offset < total {
                let n = min(16 << 20, total - offset)
                try file.writeAll([UnsafeRawBufferPointer(start: workload.arena.base + offset, count: n)], at: Int64(offset))
                offset += n
            }
            if sync { try file.dataSync() }
        }
        func ddRead() throws(CheckpointError) {
            let file = try calls.openFile(floorFile, .readOnly)
            defer { file.close() }
            var offset = 0
            while offset < total {
                let n = min(16 << 20, total - offset)
                try file.readAll(into: UnsafeMutableRawBufferPointer(start: destination.base + offset, count: n), at: Int64(offset))
                offset += n
            }
        }
        // Before every save (ours and the floor alike): the files removed, and the write-back of
        // whatever the previous run left dirty on this file system finished (syncfs), so that no
        // run meets the write-back of the run before it.
        let clean = {
            _ = calls.unlink(ours)
            _ = calls.unlink(floorFile)
            try? calls.syncFileSystem(of: directory)
        }

        try pair("save (page cache)", floor: "write 16 MiB", bytes: total, ours: { () throws(CheckpointError) in try save(.none) },
                 floor: { () throws(CheckpointError) in try ddWrite(sync: false) }, prepare: clean)
        try pair("save (durable, fdatasync)", floor: "write + fdatasync", bytes: total, ours: { () throws(CheckpointError) in try save(.fileData) },
                 floor: { () throws(CheckpointError) in try ddWrite(sync: true) }, prepare: clean)
        if comparesUncompressed(encode) {
            // Does the codec pay on this disk? The same durable save, uncompressed, as the floor.
            try pair("save (durable) vs uncompressed", floor: "ours uncompressed", bytes: total,
                     ours: { () throws(CheckpointError) in try save(.fileData) },
                     floor: { () throws(CheckpointError) in try save(.fileData, encode: EncodeOptions()) }, prepare: clean)
        }
        if results[0].seconds > results[1].seconds {
            results[0].note = "the page-cache save measured slower than the durable one: the difference is noise of this disk and machine "
                + "(the kernel writing back the previous repetition's pages, other processes); more repetitions narrow it"
        }
        // Leave one file of each for the read measurements.
        try save(.none)
        try ddWrite(sync: false)
        try pair("open + list", floor: nil, bytes: 0, ours: { () throws(CheckpointError) in
            // Every name listed and touched (nameList: no String per name).
            let reader = try ContainerReader.open(ours)
            var bytes = 0
            for name in reader.nameList { bytes &+= name.utf8.count }
            if bytes < 0 { print(bytes) }  // keeps the loop
        }, floor: nil)
        let layout = workload.tensors
        try pair("load + verify CRC32C", floor: "read 16 MiB", bytes: total, ours: { () throws(CheckpointError) in
            // One batch read, as the managers load: small blobs decode side by side.
            let reader = try ContainerReader.open(ours)
            try reader.read(batch: layout.map { ($0.name, UnsafeMutableRawBufferPointer(start: destination.base + $0.range.lowerBound, count: $0.range.count)) })
        }, floor: { () throws(CheckpointError) in try ddRead() })
        try pair("zero-copy view (open + every blob)", floor: nil, bytes: 0, ours: { () throws(CheckpointError) in
            let reader = try ContainerReader.open(ours)
            for tensor in layout where try reader.descriptor(tensor.name).isViewableInPlace {
                _ = try typedThrows { try reader.withUnsafeBytes(of: tensor.name) { $0.count } }
            }
        }, floor: nil)
        try pair("memcpy (the copy floor)", floor: nil, bytes: total, ours: {
            destination.base.copyMemory(from: workload.arena.base, byteCount: total)
        }, floor: nil)
        return results
    }
}

import BlobCodec

/// What ``IncrementalBenchmark/run(frozenBytes:trainableFraction:epochs:directory:progress:)`` measured (medians over the epochs after the first).
public struct IncrementalBenchmarkResult: Sendable {
    /// Bytes of the workspace (frozen + trainable).
    public var totalBytes: Int
    /// Bytes of the blobs that change every epoch.
    public var changedBytes: Int
    /// Seconds of a full save of the whole workspace (durable).
    public var fullSaveSeconds: Double
    /// Seconds of an incremental save of the same workspace (durable).
    public var incrementalSaveSeconds: Double
    /// Size of an incremental epoch's file: the bytes a save writes to it.
    public var incrementalFileBytes: Int
    /// Seconds to load the full file of an epoch into a fresh workspace.
    public var fullLoadSeconds: Double
    /// Seconds to load the incremental file of the same epoch (through its references).
    public var incrementalLoadSeconds: Double
    /// How many epochs each median covers.
    public var epochs: Int

    /// Full save time over incremental save time.
    public var saveSpeedup: Double { fullSaveSeconds / incrementalSaveSeconds }
    /// Full load time over incremental load time (≥ 1: the incremental load is as fast or faster).
    public var loadRatio: Double { fullLoadSeconds / incrementalLoadSeconds }
    /// Bytes written beyond the changed bytes (headers, references, index).
    public var overheadBytes: Int { incrementalFileBytes - changedBytes }
}

/// A LoRA-like workload for incremental saves: frozen F32 weights (64 MiB
/// blobs) and small trainable blobs (`trainableFraction` of the bytes) that
/// all change every epoch. One workspace is saved each epoch by two managers
/// side by side, full and incremental, both with ``Durability/full``; then
/// the last epoch is loaded from each. What `ckpt bench --workload lora` runs.
public enum IncrementalBenchmark {
    /// Runs the workload in a scratch directory under `directory` (removed
    /// afterwards): `epochs` saves by each manager (the first not counted: the
    /// incremental manager's first save is full), then `max(3, epochs)` loads
    /// of the last epoch from each, alternating. Needs memory for the workspace and one load, and
    /// disk for two full copies of it.
    ///
    /// - Precondition: `epochs` ≥ 2, `frozenBytes` ≥ 1 MiB.
    public static func run(frozenBytes: Int, trainableFraction: Double = 0.02, epochs: Int = 4, directory: String,
                           progress: (String) -> Void = { _ in }) throws(CheckpointError) -> IncrementalBenchmarkResult {
        precondition(epochs >= 2 && frozenBytes >= 1 << 20)
        let root = CheckpointNaming.join(directory, ".ckpt-bench-incremental.\(SystemCalls.processID)")
        let fullDirectory = root + "/full", incrementalDirectory = root + "/incremental"
        HeldWriterLocks.shared.addScratch([root])
        defer {
            AtomicFile.removeTree(root, calls: .live)
            HeldWriterLocks.shared.removeScratch([root])
        }
        // The workspace: frozen weights in 64 MiB blobs, adapters of 256 KiB.
        let workspace = Workspace()
        let frozenBlob = 64 << 20
        var offset = 0, index = 0
        while offset < frozenBytes {
            let count = min(frozenBlob, frozenBytes - offset) / 4 * 4
            guard count > 0 else { break }
            workspace.setBlob("frozen.\(index).weight", filled(count, seed: UInt32(index)))
            offset += count
            index += 1
        }
        let adapterBytes = 256 << 10
        let adapterCount = max(1, Int(Double(frozenBytes) * trainableFraction) / adapterBytes)
        for i in 0..<adapterCount { workspace.setBlob("adapter.\(i).weight", filled(adapterBytes, seed: UInt32(1000 + i))) }
        let changedBytes = adapterCount * adapterBytes
        let total = offset + changedBytes

        var options = CheckpointOptions(writer: WriterOptions(durability: .full))
        let full = try CheckpointManager(dbPrefix: fullDirectory, nodeName: "n", workspace: workspace, options: options)
        options.incremental = IncrementalOptions(fullEvery: 1_000_000)
        let incremental = try CheckpointManager(dbPrefix: incrementalDirectory, nodeName: "n", workspace: workspace, options: options)
        try full.initialize()
        try incremental.initialize()
        var fullTimes: [Double] = [], incrementalTimes: [Double] = [], sizes: [Int] = []
        for epoch in 1...epochs {
            progress("epoch \(epoch)")
            for i in 0..<adapterCount {
                // An optimizer step on every adapter, in place.
                try? workspace.update("adapter.\(i).weight") { tensor in
                    tensor.withUnsafeMutableBytes { bytes in
                        let floats = bytes.bindMemory(to: Float.self)
                        for k in floats.indices { floats[k] += 0.001 }
                    }
                }
            }
            // Alternate the order: the second save may meet a disk still busy with the first.
            let pair: [(CheckpointManager, Bool)] = epoch % 2 == 0 ? [(full, true), (incremental, false)] : [(incremental, false), (full, true)]
            for (manager, isFull) in pair {
                let seconds = try timed { () throws(CheckpointError) in try manager.save(epoch: epoch) }
                if epoch > 1 { if isFull { fullTimes.append(seconds) } else { incrementalTimes.append(seconds) } }
            }
            if epoch > 1 {
                let file = try SystemCalls.live.openFile(incremental.dbName(epoch: epoch), .readOnly)
                defer { file.close() }
                sizes.append(Int(try file.size()))
            }
            // Only the newest full file is needed (the disk holds one copy of the weights per full file).
            if epoch > 1 { SystemCalls.live.unlinkRetrying(full.dbName(epoch: epoch - 1)) }
        }
        progress("load")
        var fullLoads: [Double] = [], incrementalLoads: [Double] = []
        for repetition in 0..<max(3, epochs) {
            let order = repetition % 2 == 0 ? [fullDirectory, incrementalDirectory] : [incrementalDirectory, fullDirectory]
            for directory in order {
                let loader = try CheckpointManager(dbPrefix: directory, nodeName: "n", workspace: Workspace(),
                                                   options: CheckpointOptions(writer: WriterOptions(durability: .none)))
                try loader.initialize(retrieveFromEpoch: epochs)
                let seconds = try timed { () throws(CheckpointError) in try loader.load(epoch: epochs) }
                if directory == fullDirectory { fullLoads.append(seconds) } else { incrementalLoads.append(seconds) }
            }
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        return IncrementalBenchmarkResult(totalBytes: total, changedBytes: changedBytes, fullSaveSeconds: median(fullTimes),
                                          incrementalSaveSeconds: median(incrementalTimes), incrementalFileBytes: sizes.sorted()[sizes.count / 2],
                                          fullLoadSeconds: median(fullLoads), incrementalLoadSeconds: median(incrementalLoads), epochs: epochs - 1)
    }

    private static func filled(_ count: Int, seed: UInt32) -> Tensor {
        let storage = TensorStorage(uninitializedByteCount: count)
        let words = storage.base.bindMemory(to: UInt32.self, capacity: count / 4)
        var state = seed &* 2_654_435_761 | 1
        for i in 0..<(count / 4) {
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            // Small normal-ish floats: sign and mantissa random, exponent near 2^-7.
            words[i] = (state & 0x807F_FFFF) | 0x3C00_0000
        }
        return Tensor(dtype: .float32, shape: [count / 4], storage: storage)
    }

    private static func timed(_ body: () throws(CheckpointError) -> Void) throws(CheckpointError) -> Double {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }
}

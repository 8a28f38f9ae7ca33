@testable import CheckpointIO
import Foundation
import Testing

/// The writer's pipeline: early write-back for durable saves, and large
/// compressed blobs written while the next one is encoded.
@Suite("Write pipeline")
struct WritePipelineTests {
    final class Log: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [(offset: Int64, length: Int64)] = []
        func add(_ offset: Int64, _ length: Int64) { lock.withLock { items.append((offset, length)) } }
        var ranges: [(offset: Int64, length: Int64)] { lock.withLock { items } }
    }

    /// 40 MiB of bytes (streamed in chunks) and 20 MiB of bf16 weights (planes, encoded by itself).
    static func blobs() throws -> [TestBlob] {
        var rng = SyntheticData(seed: 31)
        let plain = rng.randomBytes(count: 40 << 20)
        let weights = rng.bfloat16Weights(count: 10 << 20)
        return [TestBlob(name: "plain", dtype: .uint8, shape: try Shape([plain.count]), bytes: plain),
                TestBlob(name: "weights", dtype: .bfloat16, shape: try Shape([weights.count / 2]), bytes: weights,
                         encode: .recommended())]
    }

    @Test("a durable save starts the write-back of whole pages as it goes; a page-cache save does not; a failed start is harmless",
          arguments: [Durability.fileData, .full, .none])
    func writeBack(durability: Durability) throws {
        let blobs = try Self.blobs()
        for failing in [false, true] {
            try withTemporaryDirectory { directory in
                let path = directory + "/w.ckpt"
                let log = Log()
                var options = WriterOptions(durability: durability)
                let live = SystemCalls.live
                options.systemCalls.startWriteback = { fd, offset, length in
                    log.add(offset, length)
                    if failing { errno = EIO; return -1 }
                    return live.startWriteback(fd, offset, length)
                }
                try writeContainer(path, blobs, options: options)
                let size = Int64(try readFile(path).count)
                let ranges = log.ranges
                if durability == .none {
                    #expect(ranges.isEmpty)
                } else {
                    // ~53 MiB written: a start every 16 MiB.
                    #expect(ranges.count >= 2, "\(ranges)")
                    var end: Int64 = 0
                    for (offset, length) in ranges {
                        #expect(offset % 4096 == 0 && length % 4096 == 0 && length > 0, "\(offset)+\(length)")
                        #expect(offset + length <= size, "past the end: \(offset)+\(length) of \(size)")
                        #expect(offset >= end, "a range started twice: \(offset) after \(end)")
                        end = offset + length
                    }
                }
                let reader = try ContainerReader.open(path)
                for blob in blobs {
                    var back = [UInt8](repeating: 0, count: blob.bytes.count)
                    try back.withUnsafeMutableBytes { try reader.read(blob.name, into: $0) }
                    #expect(back == blob.bytes, "\(blob.name), write-back failing: \(failing)")
                }
            }
        }
    }

    @Test("large compressed blobs queued while the next is encoded: the same file as one blob per call, bit-exact on reading")
    func overlappedEncodes() throws {
        var rng = SyntheticData(seed: 8)
        // Above the run limit (8 MiB), so each is encoded alone with its chunks in parallel;
        // the pool then reuses a written blob's buffers only after its writes are done.
        let blobs = try (0..<5).map { index in
            let bytes = index == 2 ? rng.randomBytes(count: 9 << 20) : rng.float32Weights(count: (9 << 20) / 4 + index * 1000)
            return TestBlob(name: "layer.\(index)", dtype: index == 2 ? .uint8 : .float32,
                            shape: try Shape([index == 2 ? bytes.count : bytes.count / 4]), bytes: bytes)
        }
        try withTemporaryDirectory { directory in
            for codec in [Compression.planes, .lz4] {
                var options = WriterOptions(encode: EncodeOptions(compression: codec, chunkSizeInBytes: 1 << 20))
                // Slow writes: the writing thread lags behind the encoder, so a blob's buffers
                // released (and reused by the next encode) before their writes would show.
                let live = SystemCalls.live
                options.systemCalls.pwritev = { fd, vectors, count, offset in
                    usleep(2000)
                    return live.pwritev(fd, vectors, count, offset)
                }
                let together = directory + "/together.ckpt", apart = directory + "/apart.ckpt"
                try writeContainer(together, blobs, options: options)
                let writer = try ContainerWriter.create(at: apart, options: options)
                for blob in blobs { try write([blob], with: writer) }
                try writer.commit()
                #expect(try readFile(together) == readFile(apart), "\(codec)")
                let reader = try ContainerReader.open(together)
                for blob in blobs {
                    #expect(try reader.descriptor(blob.name).compression == codec || blob.dtype == .uint8)
                    var back = [UInt8](repeating: 0, count: blob.bytes.count)
                    try back.withUnsafeMutableBytes { try reader.read(blob.name, into: $0) }
                    #expect(back == blob.bytes, "\(codec) \(blob.name)")
                }
            }
        }
    }

    /// Collects a streamed file's bytes in memory, in the order they are appended.
    final class MemorySink: ContainerByteSink, @unchecked Sendable {
        private(set) var bytes: [UInt8] = []
        private(set) var misordered = false
        func append(_ segments: [UnsafeRawBufferPointer], at offset: Int) throws(CheckpointError) {
            if offset != bytes.count { misordered = true }
            for segment in segments { bytes += segment }
        }
        func commit() throws(CheckpointError) {}
        func abort() {}
    }

    /// Every `pwritev` of a save: offset, bytes, segments and the calling thread.
    final class CallLog: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [(offset: Int64, length: Int64, segments: Int, thread: pthread_t)] = []
        var calls: [(offset: Int64, length: Int64, segments: Int, thread: pthread_t)] { lock.withLock { items } }
        func add(_ offset: Int64, _ length: Int64, _ segments: Int) {
            let thread = pthread_self()
            lock.withLock { items.append((offset, length, segments, thread)) }
        }
    }

    /// Writer options whose `pwritev` records each call in `log`, then writes.
    static func recording(_ log: CallLog) -> WriterOptions {
        var options = WriterOptions()
        let live = SystemCalls.live
        options.systemCalls.pwritev = { fd, vectors, count, offset in
            var length = 0
            for index in 0..<Int(count) { length += vectors[index].iov_len }
            log.add(offset, Int64(length), Int(count))
            return live.pwritev(fd, vectors, count, offset)
        }
        return options
    }

    /// Writes `blobs` to a file (recording every `pwritev`) and through a sink; checks that the calls
    /// cover the file once, front to back, that every blob reads back, and that the sink got the
    /// same bytes in order. Returns the calls (offset, bytes, segments), sorted by offset.
    func writeRecorded(_ blobs: [TestBlob], in directory: String) throws -> [(offset: Int64, length: Int64, segments: Int)] {
        let path = directory + "/recorded.ckpt"
        let log = CallLog()
        let options = Self.recording(log)
        try writeContainer(path, blobs, options: options)
        let file = try readFile(path)
        let calls = log.calls.map { (offset: $0.offset, length: $0.length, segments: $0.segments) }.sorted { $0.offset < $1.offset }
        var end: Int64 = 0
        for call in calls {
            #expect(call.offset == end, "a gap or overlap at \(call.offset), expected \(end)")
            end = call.offset + call.length
        }
        #expect(end == Int64(file.count))
        let reader = try ContainerReader.open(path)
        for blob in blobs {
            var back = [UInt8](repeating: 0, count: blob.bytes.count)
            try back.withUnsafeMutableBytes { try reader.read(blob.name, into: $0) }
            #expect(back == blob.bytes, "\(blob.name)")
        }
        let sink = MemorySink()
        let writer = try ContainerWriter.create(streamingTo: sink, path: directory + "/sink.ckpt")
        try write(blobs, with: writer)
        try writer.commit()
        #expect(!sink.misordered)
        #expect(sink.bytes == file)
        return calls
    }

    @Test("small and 5 MiB blobs: full batches past the first 2 MiB end at 2 MiB multiples of the file (whole large folios); the first ones start small and double; the same bytes through a sink")
    func alignedBatches() throws {
        var rng = SyntheticData(seed: 16)
        // 6,000 blobs of 1 B to 24 KiB fill batches by segment count (two per blob); every
        // 1,000th is 5 MiB, so some batches fill by bytes and are cut inside a payload.
        var blobs: [TestBlob] = []
        for index in 0..<6000 {
            let count = index % 1000 == 999 ? 5 << 20 : 1 + Int(rng.next() % UInt64(24 << 10))
            blobs.append(TestBlob(name: "t.\(index)", dtype: .uint8, shape: try Shape([count]), bytes: rng.randomBytes(count: count)))
        }
        try withTemporaryDirectory { directory in
            let calls = try writeRecorded(blobs, in: directory)
            #expect(calls.count >= 10, "\(calls.count) calls")
            // Every call but the last two (the records' tail, then index and trailer) that ends
            // past the first 2 MiB ends on a 2 MiB multiple.
            let alignment = Int64(WritePipeline.batchAlignment)
            let unaligned = calls.dropLast(2).filter { $0.offset + $0.length > alignment && ($0.offset + $0.length) % alignment != 0 }
            #expect(unaligned.isEmpty, "calls ending inside a 2 MiB range: \(unaligned.prefix(5))")
            // The first batch is handed over at the first record past 256 KiB, not at 16 MiB:
            // the writes start early. The next ones double (unless cut at 2 MiB) up to 16 MiB.
            let first = Int64(WritePipeline.firstBatchBytes)
            #expect(calls.count > 3 && calls[0].length >= first && calls[0].length < first + (32 << 10), "first call: \(calls.prefix(1))")
            #expect(calls.count > 3 && calls[1].length >= 2 * first && calls[1].length < 2 * first + (32 << 10), "second call: \(calls.prefix(2))")
        }
    }

    @Test("a cut inside a batch's first segment leaves no batch over 1024 segments; the bytes go once, in order, to the file and the sink")
    func cutInFirstSegment() throws {
        var rng = SyntheticData(seed: 17)
        // 511 four-byte blobs fill a batch by count below 2 MiB; then a 3 MiB blob whose payload
        // holds the next 2 MiB multiple; then enough small blobs to fill that batch by count.
        var blobs: [TestBlob] = []
        for index in 0..<1800 {
            let count = index < 511 ? 4 : index == 511 ? 3 << 20 : 100
            blobs.append(TestBlob(name: "c.\(index)", dtype: .uint8, shape: try Shape([count]), bytes: rng.randomBytes(count: count)))
        }
        try withTemporaryDirectory { directory in
            let calls = try writeRecorded(blobs, in: directory)
            #expect(calls.contains { $0.offset + $0.length == Int64(WritePipeline.batchAlignment) }, "no call ends at 2 MiB: \(calls)")
            // A batch of 1,025 segments would go as a 1,024-segment pwritev and a 1-segment
            // one that ends off a 2 MiB multiple, right behind it.
            for (index, call) in calls.enumerated().dropFirst().dropLast(2) where call.segments == 1 {
                let previous = calls[index - 1]
                #expect(previous.segments != WritePipeline.maximumBatchSegments
                        || (call.offset + call.length) % Int64(WritePipeline.batchAlignment) == 0,
                        "a batch over 1024 segments split by writeAll at \(call.offset)")
            }
        }
    }

    @Test("a write of raw blobs makes its pwritev calls on the calling thread; one with compressed blobs reads back bit-exact too")
    func writesOnTheCallingThread() throws {
        var rng = SyntheticData(seed: 41)
        var raw: [TestBlob] = []
        for index in 0..<300 {
            let count = 1 + Int(rng.next() % UInt64(64 << 10))
            raw.append(TestBlob(name: "raw.\(index)", dtype: .uint8, shape: try Shape([count]), bytes: rng.randomBytes(count: count)))
        }
        let both = try Self.blobs()  // a streamed 40 MiB raw blob and an encoded 20 MiB one
        raw.append(both[0])
        let weights = rng.bfloat16Weights(count: 1 << 20)
        let compressed = [both[1], TestBlob(name: "small.weights", dtype: .bfloat16, shape: try Shape([weights.count / 2]),
                                            bytes: weights, encode: .recommended())]  // alone, and in a run
        try withTemporaryDirectory { directory in
            for (name, blobs, onCaller) in [("raw", raw, true), ("mixed", raw + compressed, false)] {
                let path = directory + "/\(name).ckpt"
                let log = CallLog()
                let options = Self.recording(log)
                let caller = pthread_self()
                try writeContainer(path, blobs, options: options)
                let reader = try ContainerReader.open(path)
                var recordBytes: Int64 = 0
                for blob in blobs {
                    let descriptor = try reader.descriptor(blob.name)
                    let start = Int64(descriptor.recordOffset), end = Int64(descriptor.payloadOffset + descriptor.storedSizeInBytes)
                    let writing = log.calls.filter { $0.offset < end && $0.offset + $0.length > start }
                    #expect(!writing.isEmpty, "\(name) \(blob.name): no write covers its record")
                    if onCaller {
                        #expect(writing.allSatisfy { pthread_equal($0.thread, caller) != 0 }, "\(blob.name) written on another thread")
                    }
                    recordBytes += end - start
                    var back = [UInt8](repeating: 0, count: blob.bytes.count)
                    try back.withUnsafeMutableBytes { try reader.read(blob.name, into: $0) }
                    #expect(back == blob.bytes, "\(name) \(blob.name)")
                }
                #expect(recordBytes > 40 << 20)
            }
        }
    }

    @Test("a failed write mid-call and a rejected blob mid-call come back to the calling thread: the error, no hang, earlier blobs kept")
    func failuresReachTheCallingThread() throws {
        var rng = SyntheticData(seed: 42)
        let blobs = try (0..<200).map { index in
            TestBlob(name: "b.\(index)", dtype: .uint8, shape: try Shape([256 << 10]), bytes: rng.randomBytes(count: 256 << 10))
        }
        try withTemporaryDirectory { directory in
            // The third pwritev fails: the call throws the write's error and the writer is unusable.
            let path = directory + "/failing.ckpt"
            let lock = NSLock()
            nonisolated(unsafe) var count = 0
            var options = WriterOptions()
            let live = SystemCalls.live
            options.systemCalls.pwritev = { fd, vectors, vectorCount, offset in
                let call = lock.withLock { count += 1; return count }
                if call == 3 { errno = EIO; return -1 }
                return live.pwritev(fd, vectors, vectorCount, offset)
            }
            let writer = try ContainerWriter.create(at: path, options: options)
            #expect(throws: CheckpointError.self) { try write(blobs, with: writer) }
            #expect(throws: CheckpointError.self) { try writer.commit() }
            writer.abort()
            #expect(!FileManager.default.fileExists(atPath: path))

            // A blob whose bytes do not match its shape, after 100 good ones: that blob is
            // refused, the ones before it are written, and the writer goes on.
            let rejected = directory + "/rejected.ckpt"
            let second = try ContainerWriter.create(at: rejected)
            var bad = blobs
            bad[100].shape = try Shape([(256 << 10) + 1])
            #expect(throws: CheckpointError.self) { try write(bad, with: second) }
            try write([blobs[150]], with: second)
            try second.commit()
            let reader = try ContainerReader.open(rejected)
            #expect(Set(reader.names) == Set(blobs[..<100].map(\.name) + [blobs[150].name]))
            for blob in blobs[..<100] {
                var back = [UInt8](repeating: 0, count: blob.bytes.count)
                try back.withUnsafeMutableBytes { try reader.read(blob.name, into: $0) }
                #expect(back == blob.bytes, "\(blob.name)")
            }
        }
    }
}

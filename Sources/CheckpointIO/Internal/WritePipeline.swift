import BlobCodec
import Dispatch
import Glibc

/// Writes segments to a file on a dedicated thread, in submission order,
/// gathering contiguous segments into one `pwritev` (up to 1024 segments or
/// 16 MiB per call). The producer (checksums, compression) runs ahead on the
/// caller's thread, so computing and writing overlap; inside
/// ``producing(_:)`` the two swap threads.
///
/// A full batch is cut at the last multiple of ``batchAlignment`` (2 MiB) in
/// the file, the rest carried into the next batch, so that a long run of
/// contiguous writes covers whole 2 MiB ranges: the kernel can fill each with
/// one large page-cache folio instead of small folios where a call starts or
/// ends inside it. (Measured with `scripts/page-cache-write-calls.c` on this
/// project's VMs: the same 623 MiB written in 11,000,000-byte calls took 1.1 to
/// 2.6 times as long as in 16 MiB calls, median ~1.6, over six runs of 9 to 15
/// alternating repetitions; in 10 MiB calls as long.) Calls still end
/// unaligned at every full ``flush()``: before a write elsewhere (a streamed
/// blob's header), before a ``copy(_:from:at:)``, after each compressed blob or
/// run (handed over while the next is encoded), at ``drain()``; and when 1024
/// segments span less than 2 MiB, or a cut would leave 1024 of them queued.
///
/// Segments point at memory the caller keeps alive until ``drain()`` returns,
/// or at buffers the pipeline owns (``write(copying:at:)``).
///
/// With `startWriteback`, for a save that ends in fdatasync, the writing thread
/// also starts the disk write-back of every 16 MiB it has written
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, no waiting): the disk then works
/// while the producer computes, instead of all at the final fdatasync.
final class WritePipeline: @unchecked Sendable {
    /// Where the bytes go: a file (`pwritev` at any offset) or a sink (in file order).
    enum Target {
        case file(SystemFile)
        case sink(any ContainerByteSink)
    }
    private let target: Target
    private let queue = DispatchQueue(label: "checkpoint.write-pipeline")
    private let group = DispatchGroup()
    private let failureLock = PThreadLock()
    private var failure: CheckpointError?

    // While ``producing(_:)`` runs: the work queued for the calling thread, in order
    // (nil: the producer has returned), from `servedHead` on.
    private var servedByCaller = false
    private let servedLock = PThreadLock()
    private var served: [(@Sendable () -> Void)?] = []
    private var servedHead = 0
    private let servedReady = DispatchSemaphore(value: 0)

    // Producer-side batch, touched only by the submitting thread.
    private var pending: [UnsafeRawBufferPointer] = []
    /// Parallel to `pending`: the pipeline's own buffer a segment points into, if any.
    private var pendingOwners: [OwnedBuffer?] = []
    private var pendingOffset = 0
    private var pendingBytes = 0
    /// The bytes that fill a batch: ``firstBatchBytes``, doubled after each full batch up
    /// to ``maximumBatchBytes``. The writes start as soon as the first few records are
    /// checksummed, and each batch is checksummed while the one before it (half its
    /// size) is written: the checksums run 2-3 times as fast as the page cache fills,
    /// so the writer waits only for the first.
    private var batchBytes = WritePipeline.firstBatchBytes
    /// Where small copied byte strings (``write(copying:at:)``) go, from `slabUsed` on.
    private var slab: OwnedBuffer?
    private var slabUsed = 0

    static let maximumBatchBytes = 16 << 20
    /// The first full batch's bytes: the writes start after this much is checksummed
    /// instead of 16 MiB.
    static let firstBatchBytes = 256 << 10
    /// The size of the slabs small copied byte strings share.
    static let slabBytes = 64 << 10
    static let maximumBatchSegments = 1024
    /// Full batches end at a multiple of this file offset where they can (the largest page-cache folio).
    static let batchAlignment = 2 << 20
    /// Bytes written between two write-back starts.
    static let writebackBytes = 16 << 20
    /// The kernel's page size: write-back is started for whole pages only.
    static let pageSize = max(4096, sysconf(Int32(_SC_PAGESIZE)))

    // Writing-thread state: write-back has been started up to `frontier`; `end` is the
    // furthest byte written.
    private let startWriteback: Bool
    private var writebackFrontier = 0
    private var writebackEnd = 0

    init(file: SystemFile, startWriteback: Bool = false) {
        self.target = .file(file)
        self.startWriteback = startWriteback
    }
    init(sink: any ContainerByteSink) {
        self.target = .sink(sink)
        self.startWriteback = false
    }

    /// On the writing thread, after `count` bytes went to `offset`: once the bytes written
    /// reach ``writebackBytes`` past the last range started, starts the write-back of the whole
    /// pages up to the end of what was written (not the last partial page, which the next
    /// write changes again). Bytes written behind that frontier (a streamed blob's header,
    /// written last) are left to the final sync. A failure is ignored: the final fdatasync
    /// reports any real one.
    private func wrote(_ count: Int, at offset: Int, to file: SystemFile) {
        guard startWriteback, count > 0 else { return }
        let page = WritePipeline.pageSize
        // The first write (the header of a new file, the first record of an append) sets the start.
        if writebackEnd == 0 { writebackFrontier = offset / page * page }
        writebackEnd = max(writebackEnd, offset + count)
        let end = writebackEnd / page * page
        guard end - writebackFrontier >= WritePipeline.writebackBytes else { return }
        _ = file.calls.startWriteback(file.fd, Int64(writebackFrontier), Int64(end - writebackFrontier))
        writebackFrontier = end
    }

    /// Queues `segment` for writing at `offset`.
    func write(_ segment: UnsafeRawBufferPointer, at offset: Int) {
        append(segment, owner: nil, at: offset)
    }

    private func append(_ segment: UnsafeRawBufferPointer, owner: OwnedBuffer?, at offset: Int) {
        guard segment.count > 0 else { return }
        if !pending.isEmpty && offset != pendingOffset + pendingBytes { flush() }
        if pending.isEmpty { pendingOffset = offset }
        pending.append(segment)
        pendingOwners.append(owner)
        pendingBytes += segment.count
        if pending.count >= WritePipeline.maximumBatchSegments || pendingBytes >= batchBytes {
            batchBytes = min(2 * batchBytes, WritePipeline.maximumBatchBytes)
            flush(keepingUnalignedTail: true)
        }
    }

    /// Queues `owned`'s bytes for writing at `offset`; the pipeline keeps it alive until they are written.
    func write(_ owned: OwnedBuffer, at offset: Int) {
        append(owned.buffer, owner: owned, at: offset)
    }

    /// Queues a copy of `bytes` (small structures: frames, headers, padding) for writing at `offset`.
    ///
    /// Copies up to a quarter of ``slabBytes`` share slabs, so that a record's header
    /// costs no allocation of its own, and the writing thread frees one slab per many
    /// records: allocations freed on another thread than the one that made them
    /// contend for the allocator's lock (`perf` of a 20,000-blob save showed both
    /// threads sleeping in glibc's lock, over a thousand times).
    func write(copying bytes: [UInt8], at offset: Int) {
        guard !bytes.isEmpty else { return }
        guard bytes.count <= WritePipeline.slabBytes / 4 else { return write(OwnedBuffer(bytes), at: offset) }
        if slab == nil || slabUsed + bytes.count > WritePipeline.slabBytes {
            slab = OwnedBuffer(capacity: WritePipeline.slabBytes)
            slabUsed = 0
        }
        let owner = slab!
        let destination = UnsafeMutableRawPointer(mutating: owner.buffer.baseAddress!) + slabUsed
        bytes.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        slabUsed += bytes.count
        append(UnsafeRawBufferPointer(start: destination, count: bytes.count), owner: owner, at: offset)
    }

    /// Queues a copy of `bytes`, which also lie at `source`, to `offset`: file
    /// to file in the kernel when it can, else from `bytes`.
    func copy(_ bytes: UnsafeRawBufferPointer, from source: SourceFileRange, at offset: Int) {
        guard bytes.count > 0 else { return }
        guard case let .file(file) = target else { preconditionFailure("in-kernel copies need a file target") }
        flush()
        nonisolated(unsafe) let view = bytes
        enqueue { [self] () throws(CheckpointError) in
            if try !file.copyAll(from: source.fd, sourceOffset: source.offset, count: view.count, at: Int64(offset)) {
                try file.writeAll([view], at: Int64(offset))
            }
            wrote(view.count, at: offset, to: file)
        }
    }

    /// Hands the current batch to the writing thread. With `keepingUnalignedTail`,
    /// only up to the last multiple of ``batchAlignment`` in the batch (when there is
    /// one past its start): the bytes behind it stay queued, to start the next batch
    /// at that multiple. ``drain()`` always hands over everything.
    func flush(keepingUnalignedTail: Bool = false) {
        guard !pending.isEmpty else { return }
        let end = pendingOffset + pendingBytes
        let boundary = end / WritePipeline.batchAlignment * WritePipeline.batchAlignment
        guard keepingUnalignedTail, boundary > pendingOffset, boundary < end else {
            submit(pending, owned: WritePipeline.distinct(pendingOwners[...]), at: pendingOffset)
            pending = []
            pendingOwners = []
            pendingBytes = 0
            return
        }
        // The segments before `boundary` go now; the one across it is split.
        var head: [UnsafeRawBufferPointer] = []
        var left = boundary - pendingOffset
        var index = 0
        while left > 0 {
            let segment = pending[index]
            if segment.count <= left {
                head.append(segment)
                left -= segment.count
                index += 1
            } else {
                head.append(UnsafeRawBufferPointer(rebasing: segment[..<left]))
                pending[index] = UnsafeRawBufferPointer(rebasing: segment[left...])
                left = 0
            }
        }
        // A split segment's owner goes with both halves.
        submit(head, owned: WritePipeline.distinct(pendingOwners[..<head.count]), at: pendingOffset)
        pending.removeFirst(index)
        pendingOwners.removeFirst(index)
        pendingOffset = boundary
        pendingBytes = end - boundary
        // A cut inside the first segment leaves every segment queued: hand them over too,
        // so that no batch passes maximumBatchSegments.
        if pending.count >= WritePipeline.maximumBatchSegments { flush() }
    }

    /// The owners of a batch's segments, each once (segments of one slab are neighbours).
    private static func distinct(_ owners: ArraySlice<OwnedBuffer?>) -> [OwnedBuffer] {
        var result: [OwnedBuffer] = []
        for case let owner? in owners where result.last !== owner { result.append(owner) }
        return result
    }

    /// Queues one `pwritev` (or sink append) of `segments` at `offset` on the writing thread.
    private func submit(_ batch: [UnsafeRawBufferPointer], owned: [OwnedBuffer], at offset: Int) {
        // The segments point at memory kept alive until drain() (caller's) or by `owned`.
        nonisolated(unsafe) let segments = batch
        nonisolated(unsafe) let target = self.target
        enqueue { [self] () throws(CheckpointError) in
            defer { withExtendedLifetime(owned) {} }
            switch target {
            case let .file(file):
                try file.writeAll(segments, at: Int64(offset))
                wrote(segments.reduce(0) { $0 + $1.count }, at: offset, to: file)
            case let .sink(sink): try sink.append(segments, at: offset)
            }
        }
    }

    /// Runs `work` on the writing thread after everything queued before it, unless a
    /// write has failed; its error becomes the pipeline's failure. `work`, and what it
    /// captures, lives until then.
    private func enqueue(_ work: @escaping @Sendable () throws(CheckpointError) -> Void) {
        group.enter()
        let item: @Sendable () -> Void = { [self] in
            defer { group.leave() }
            if hasFailed { return }
            do throws(CheckpointError) { try work() } catch {
                failureLock.locked { if failure == nil { failure = error } }
            }
        }
        if servedByCaller {
            servedLock.locked { served.append(item) }
            servedReady.signal()
        } else {
            queue.async(execute: item)
        }
    }

    /// Runs `produce` on the pipeline's thread while the calling thread performs,
    /// in order, the writes `produce` queues; returns when `produce` has returned
    /// and every write it queued has run, and rethrows its error.
    ///
    /// The roles are swapped so that the system calls run on the thread that
    /// called the save. The kernel keeps the pages a thread frees on that CPU's
    /// own free lists for a while: a save whose writes run on the thread that
    /// just deleted the previous checkpoint fills the page cache with those warm
    /// pages, where a writing thread on another CPU takes colder ones. (Measured
    /// on this project's 2-vCPU VMs with `scripts/page-cache-write-threads.c`:
    /// 625 MiB written right after deleting a file of that size took medians of
    /// 126.5 and 123.1 ms from a thread on the deleting CPU, and 169.7 and 135.1 ms,
    /// with outliers to 945 ms, from one on the other CPU, in two runs of 15.) A
    /// sink target keeps the pipeline's thread: a sink's appends may block on the network.
    func producing(_ produce: @escaping () throws(CheckpointError) -> Void) throws(CheckpointError) {
        guard case .file = target else { return try produce() }
        // Whatever was queued before runs first, in order, on the pipeline's thread.
        group.wait()
        servedByCaller = true
        defer { servedByCaller = false }
        let run = ProducerRun(produce)
        queue.async { [self] in
            run.run()
            servedLock.locked { served.append(nil) }
            servedReady.signal()
        }
        while true {
            servedReady.wait()
            let next: (@Sendable () -> Void)? = servedLock.locked {
                let item = served[servedHead]
                servedHead += 1
                if servedHead == served.count {
                    served.removeAll(keepingCapacity: true)
                    servedHead = 0
                }
                return item
            }
            guard let next else { break }
            next()
        }
        if let error = run.error { throw error }
    }

    /// True once a write has failed (later batches are skipped).
    var hasFailed: Bool { failureLock.locked { failure != nil } }

    /// Writes everything queued and waits; throws the first write error.
    func drain() throws(CheckpointError) {
        flush()
        group.wait()
        if let failure = failureLock.locked({ failure }) { throw failure }
    }
}

/// A producer run by ``WritePipeline/producing(_:)`` on the pipeline's thread, and the
/// error it threw, for the calling thread.
private final class ProducerRun: @unchecked Sendable {
    private var body: (() throws(CheckpointError) -> Void)?
    private(set) var error: CheckpointError?

    init(_ body: @escaping () throws(CheckpointError) -> Void) { self.body = body }

    /// Runs the body once, then lets it go before the calling thread resumes: what it
    /// captured (the writer) must not outlive the call, or the writer's deinit (which
    /// aborts, and so waits for the pipeline) could run late, on the pipeline's thread.
    func run() {
        do throws(CheckpointError) { try body?() } catch { self.error = error }
        body = nil
    }
}

/// Heap memory whose address stays fixed until it is released: a copy of a byte
/// string, or a slab that ``WritePipeline`` fills with many.
final class OwnedBuffer: @unchecked Sendable {
    let buffer: UnsafeRawBufferPointer

    init(_ bytes: [UInt8]) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
        memory.copyBytes(from: bytes)
        buffer = UnsafeRawBufferPointer(memory)
    }

    /// Uninitialized memory of `capacity` bytes, written by its owner before use.
    init(capacity: Int) {
        buffer = UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 8))
    }

    deinit { buffer.deallocate() }
}

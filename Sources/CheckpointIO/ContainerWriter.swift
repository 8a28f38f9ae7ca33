import BlobCodec

/// Writes a container file (FORMAT.md §4): a new file committed atomically,
/// or an append to an existing one.
///
///     let writer = try ContainerWriter.create(at: "/ckpt/model.ckpt")
///     writer.metadata["epoch"] = "3"
///     try weights.withUnsafeBytes { bytes in
///         try writer.write([BlobSource(name: "w", dtype: .float32, shape: [1024, 1024], bytes: bytes)])
///     }
///     try writer.commit()
///
/// A new file is written under a temporary name in the target's directory and
/// renamed into place by ``commit()``; until then, and whatever happens before
/// it, the final name holds its old content or nothing. An append writes new
/// records after the current trailer and a new index and trailer last; until
/// the new trailer is complete, readers see the previous commit. Writers of
/// one path exclude each other with `flock` on `PATH.lock` (deleted again on
/// release); the loser gets
/// `CheckpointError.Code.writerLocked`.
///
/// Uncompressed payloads go from the caller's memory to `pwritev` without a
/// copy: a ``write(_:)`` of raw blobs checksums them on the writer's own thread
/// and makes the `pwritev` calls on the calling thread, right behind it.
/// Compressed blobs are encoded in parallel (`BlobEncoder`) on the calling
/// thread and the other cores, then written on the writer's thread while the
/// next ones are encoded.
public final class ContainerWriter {
    /// The final path of the file.
    public let path: String
    /// The options the writer was created with.
    public let options: WriterOptions
    /// The payload alignment in use: the options' for a new file, the file's own when appending.
    public let alignment: Int
    /// File-level key/value metadata (epoch, step, producer…), stored in the index at commit.
    public var metadata: [String: String]

    private let calls: SystemCalls
    private let file: SystemFile?  // nil when writing to a sink
    private let lockFile: WriterLock?
    private let sink: (any ContainerByteSink)?
    private let temporaryPath: String?  // nil when appending in place
    private let originalLength: Int  // append: where the file ended before this writer
    private let generation: UInt64
    private var position: Int  // end of the last unit written (not padded)
    private var entries: [BlobDescriptor]  // live blobs, in record order
    private var entryIndexByName: [BlobName: Int]  // byte-wise: NFC and NFD spellings are two names
    /// The index's entry sections for `entries` as they are, built by a write call while
    /// its last records were still being written; nil once `entries` changes.
    private var preparedIndex: ContainerIndex.PreparedEntries?
    private let pipeline: WritePipeline
    /// The encoded blobs of the last run, alive until their writes are drained.
    private var writtenRun: [RetainedEncoding] = []
    private var state = State.open

    private enum State { case open, failed, committed, aborted }

    /// Throws unless the writer can still write: after a failed write or commit
    /// nothing but ``abort()`` is allowed (the kernel may have dropped pages whose
    /// write failed, so retrying could publish a file with holes).
    private func requireWritable() throws(CheckpointError) {
        precondition(state != .committed && state != .aborted, "ContainerWriter used after commit() or abort()")
        if state == .failed {
            throw CheckpointError(.invalidField(field: "writer", reason: "an earlier write or commit failed; call abort()"), path: path)
        }
    }

    private init(path: String, options: WriterOptions, alignment: Int, calls: SystemCalls, file: SystemFile?, lockFile: WriterLock?,
                 sink: (any ContainerByteSink)? = nil,
                 temporaryPath: String?, originalLength: Int, generation: UInt64, entries: [BlobDescriptor], metadata: [String: String]) {
        self.path = path
        self.options = options
        self.alignment = alignment
        self.calls = calls
        self.file = file
        self.lockFile = lockFile
        self.sink = sink
        self.temporaryPath = temporaryPath
        self.originalLength = originalLength
        self.position = originalLength
        self.generation = generation
        self.entries = entries
        self.metadata = metadata
        var byName: [BlobName: Int] = [:]
        for (index, entry) in entries.enumerated() { byName[BlobName(entry.name)] = index }
        self.entryIndexByName = byName
        if let sink {
            self.pipeline = WritePipeline(sink: sink)
        } else {
            // A durable save (or append) starts the disk's write-back as it goes.
            self.pipeline = WritePipeline(file: file!, startWriteback: options.durability != .none)
        }
    }

    deinit {
        if state == .open || state == .failed { abort() }
    }

    // MARK: Opening

    /// Starts a new file that will replace `path` at ``commit()``.
    ///
    /// Takes the writer lock, removes the temporaries of `path` that killed
    /// writers left (every live writer of `path` would hold the lock), creates
    /// `.NAME.tmp.PID.RANDOM` in the same directory and writes the file header.
    ///
    /// The temporaries go first, before any byte of the new file, so that a
    /// dead writer's space is free again for this one (on a nearly full disk,
    /// the difference between a save and ENOSPC). That costs a directory
    /// listing per save: ~0.8 ms in a directory of 2,000 files on this
    /// project's VMs, a few microseconds in a checkpoint directory.
    public static func create(at path: String, options: WriterOptions = WriterOptions()) throws(CheckpointError) -> ContainerWriter {
        try validate(options)
        let calls = options.systemCalls
        let lock = try takeLock(for: path, calls: calls)
        AtomicFile.removeTemporariesOfLockedTarget(path, calls: calls)
        let temporary = temporaryPath(for: path)
        let file: SystemFile
        do throws(CheckpointError) {
            file = try calls.openFile(temporary, .createExclusive)
        } catch {
            lock.release()
            throw error.naming(path, insteadOf: temporary)
        }
        let writer = ContainerWriter(path: path, options: options, alignment: options.alignment, calls: calls, file: file, lockFile: lock, temporaryPath: temporary,
                                     originalLength: ContainerLayout.fileHeaderSize, generation: 1, entries: [], metadata: [:])
        writer.pipeline.write(copying: ContainerLayout.encodeFileHeader(alignment: options.alignment), at: 0)
        return writer
    }

    /// Starts a new file whose bytes go, front to back, to `sink` (an object
    /// store's multipart upload, say); ``commit()`` ends with the sink's
    /// ``ContainerByteSink/commit()``, ``abort()`` with its ``ContainerByteSink/abort()``.
    ///
    /// `path` names the file in errors only. No lock is taken (the sink's
    /// storage provides its own exclusion) and nothing is synced (the sink's
    /// commit is its durability). Payloads are written in file order, so a
    /// large uncompressed blob is checksummed in one pass before its bytes go out.
    public static func create(streamingTo sink: any ContainerByteSink, path: String, options: WriterOptions = WriterOptions()) throws(CheckpointError) -> ContainerWriter {
        try validate(options)
        let writer = ContainerWriter(path: path, options: options, alignment: options.alignment, calls: options.systemCalls, file: nil, lockFile: nil,
                                     sink: sink, temporaryPath: nil, originalLength: ContainerLayout.fileHeaderSize, generation: 1, entries: [], metadata: [:])
        writer.pipeline.write(copying: ContainerLayout.encodeFileHeader(alignment: options.alignment), at: 0)
        return writer
    }

    /// Opens `path` to append blobs to it in place.
    ///
    /// Takes the writer lock and validates the file. When its end is torn (a
    /// crash during an earlier append), the file is first cut back to its last
    /// complete trailer. New blobs replace older ones of the same name. New
    /// payloads are aligned as the file's header says (`options.alignment` is
    /// not used).
    public static func append(to path: String, options: WriterOptions = WriterOptions()) throws(CheckpointError) -> ContainerWriter {
        try validate(options)
        return try inPlace(path, options: options) { () throws(CheckpointError) -> InPlacePlan in
            let reader = try ContainerReader.open(path, options: ReaderOptions(mode: .pread, systemCalls: options.systemCalls))
            let descriptors = try (0..<reader.index.count).map { (i: Int) throws(CheckpointError) -> BlobDescriptor in try reader.index.descriptor(i) }
            // New payloads keep the file's alignment (FORMAT.md §4.2), whatever the options say.
            return InPlacePlan(entries: descriptors, metadata: reader.metadata, length: reader.committedLength,
                               cut: reader.tornBytes > 0, generation: reader.generation + 1, alignment: reader.alignment)
        }
    }

    /// What an in-place writer starts from: the live blobs, the metadata, where
    /// the file ends (cutting it there when `cut`), and the next generation.
    struct InPlacePlan {
        var entries: [BlobDescriptor]
        var metadata: [String: String]
        var length: Int
        var cut: Bool
        var generation: UInt64
        var alignment: Int
    }

    /// A writer that rewrites the end of an existing file: takes the lock, then
    /// (under it) makes the plan, opens the file and cuts it to the plan's length.
    static func inPlace(_ path: String, options: WriterOptions,
                        plan makePlan: () throws(CheckpointError) -> InPlacePlan) throws(CheckpointError) -> ContainerWriter {
        let calls = options.systemCalls
        let lock = try takeLock(for: path, calls: calls)
        do throws(CheckpointError) {
            let plan = try makePlan()
            let file = try calls.openFile(path, .readWrite)
            if plan.cut {
                do throws(CheckpointError) { try file.truncate(to: Int64(plan.length)) } catch {
                    file.close()
                    throw error
                }
            }
            return ContainerWriter(path: path, options: options, alignment: plan.alignment, calls: calls, file: file, lockFile: lock, temporaryPath: nil,
                                   originalLength: plan.length, generation: plan.generation, entries: plan.entries, metadata: plan.metadata)
        } catch {
            lock.release()
            throw error
        }
    }

    private static func validate(_ options: WriterOptions) throws(CheckpointError) {
        guard ContainerLayout.isValidAlignment(options.alignment) else {
            throw CheckpointError(.invalidField(field: "alignment", reason: "\(options.alignment) is not a power of two in 8...4096"))
        }
    }

    static func takeLock(for path: String, calls: SystemCalls) throws(CheckpointError) -> WriterLock {
        try validatePath(path)
        return try WriterLock.acquire(for: path, directory: splitPath(path).directory, calls: calls)
    }

    // MARK: Writing

    /// The live blob names so far (sorted), including those this writer added.
    public var names: [String] { entryIndexByName.keys.sorted().map(\.string) }

    /// Writes one blob; see ``write(_:)``.
    public func write(name: String, dtype: DType, shape: Shape, bytes: UnsafeRawBufferPointer,
                      attributes: [String: String] = [:], encode: EncodeOptions? = nil) throws(CheckpointError) {
        try write([BlobSource(name: name, dtype: dtype, shape: shape, bytes: bytes, attributes: attributes, encode: encode)])
    }

    /// Writes blobs as records, in order; a name written again replaces the
    /// earlier blob. Returns when every byte has been handed to the kernel,
    /// so the callers' buffers may change afterwards.
    ///
    /// - Throws: `CheckpointError` for invalid input (nothing of that blob
    ///   is written) or a failed write (the writer is then unusable: ``abort()``).
    public func write(_ blobs: [BlobSource]) throws(CheckpointError) {
        try requireWritable()
        // Raw records: their checksums on the pipeline's thread and their writes on this one,
        // where the page cache fills faster (WritePipeline.producing). Compressed saves are
        // bound by encoding instead, and measured slower with the roles swapped (MiniLM bf16,
        // planes: 2.7 against 2.9 GiB/s, medians of 5 alternating runs), so they keep them.
        // Fields read in place: `contains` copied every BlobSource (~40 ns each, 0.8 ms for 20,000).
        let defaultEncode = options.encode
        var encodes = false
        for index in blobs.indices {
            guard case .none = blobs[index].reference else { continue }
            let dtype = blobs[index].dtype
            if (blobs[index].encode?.compression(for: dtype) ?? defaultEncode.compression(for: dtype)) != .none {
                encodes = true
                break
            }
        }
        if !encodes {
            nonisolated(unsafe) let writer = self
            try pipeline.producing { () throws(CheckpointError) in try writer.produce(blobs) }
        } else {
            try produce(blobs)
        }
    }

    /// The body of ``write(_:)``: records queued in order, on whichever thread runs it.
    private func produce(_ blobs: [BlobSource]) throws(CheckpointError) {
        let defaultEncode = options.encode
        do throws(CheckpointError) {
            // Compressed blobs up to ``encodedBlobLimit`` are encoded several at a time, one
            // per thread, so that a checkpoint of many small tensors keeps every core busy,
            // and a run is written while the next one is encoded.
            var run: [(BlobSource, EncodeOptions)] = []
            var runBytes = 0
            for blob in blobs {
                if let reference = blob.reference {
                    try writeEncodedRun(run)
                    run.removeAll()
                    runBytes = 0
                    try appendReference(reference)
                    continue
                }
                let options = blob.encode ?? defaultEncode
                do throws(CheckpointError) {
                    try BlobEncoder.validate(blob.bytes, name: blob.name, dtype: blob.dtype, shape: blob.shape, attributes: blob.attributes, options: options)
                } catch {
                    try writeEncodedRun(run)
                    throw error
                }
                if options.compression(for: blob.dtype) != .none, blob.bytes.count <= ContainerWriter.encodedBlobLimit {
                    run.append((blob, options))
                    runBytes += blob.bytes.count
                    if runBytes >= ContainerWriter.encodedRunBytes {
                        try writeEncodedRun(run)
                        run.removeAll()
                        runBytes = 0
                    }
                    if pipeline.hasFailed { break }
                    continue
                }
                try writeEncodedRun(run)
                run.removeAll()
                runBytes = 0
                if options.compression(for: blob.dtype) == .none {
                    try writeUncompressed(blob, options: options)
                } else {
                    try writeEncoded(blob, options: options)
                }
                if pipeline.hasFailed { break }
            }
            try writeEncodedRun(run)
            // The index's entry sections, built while the last records are still being
            // written (the last batch is handed over first), unless most live blobs came
            // from earlier calls: a caller writing one blob per call would rebuild it every
            // time. (Built only when this call wrote at least half of them, the work stays
            // within twice the entries written.)
            if blobs.count * 2 >= entries.count, !pipeline.hasFailed {
                pipeline.flush()
                preparedIndex = ContainerIndex.prepare(entries: entries)
            }
            try pipeline.drain()
            writtenRun = []
        } catch {
            // Whatever was queued is finished before the caller may reuse its buffers.
            _ = try? pipeline.drain()
            writtenRun = []
            if pipeline.hasFailed { state = .failed }
            throw error.naming(path, insteadOf: temporaryPath ?? path)
        }
    }

    /// Writes a deletion marker: `name` is no longer in the file after ``commit()``.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound` when no live blob has that name.
    public func delete(_ name: String) throws(CheckpointError) {
        try requireWritable()
        guard entryIndexByName[BlobName(name)] != nil else { throw CheckpointError(.blobNotFound(name), path: path) }
        let header = ContainerLayout.encodeDeletionHeader(name: name)
        let start = ContainerLayout.alignUp(position, ContainerLayout.unitAlignment)
        let frame = ContainerLayout.Frame(kind: ContainerLayout.Kind.deletion.rawValue, headerLength: header.count,
                                          paddingLength: 0, payloadLength: 0, payloadCRC: 0)
        pipeline.write(copying: [UInt8](repeating: 0, count: start - position) + frame.encoded() + header, at: position)
        position = start + frame.length
        remove(name)
        do throws(CheckpointError) { try pipeline.drain() } catch {
            state = .failed
            throw error.naming(path, insteadOf: temporaryPath ?? path)
        }
    }

    /// Writes a blob reference record (FORMAT.md §4.3.1): after ``commit()`` the
    /// blob `reference.target.name` of this file is the target blob of
    /// `reference.fileName`, which readers open and check when the blob is read.
    /// Writes a few dozen bytes; the target is not opened.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` for a
    ///   target that is a reference itself (references have depth 1), a file
    ///   name that is not one name in the same directory, or an invalid blob name.
    public func writeReference(_ reference: BlobReference) throws(CheckpointError) {
        try write([BlobSource(reference: reference)])
    }

    private func appendReference(_ reference: BlobReference) throws(CheckpointError) {
        let target = reference.target
        guard !target.isReference else {
            throw CheckpointError(.invalidField(field: "reference target", reason: "is a reference itself: point at its target (depth 1)"), blobName: target.name, path: path)
        }
        do throws(CheckpointError) {
            try BlobReference.validate(fileName: reference.fileName)
            try BlobHeader.validateName(target.name)
        } catch {
            throw error.adding(blobName: target.name, path: path)
        }
        let header = ContainerLayout.ReferenceHeader(fileName: reference.fileName, target: target, storedCRC: reference.storedCRC32C).encoded()
        let start = ContainerLayout.alignUp(position, ContainerLayout.unitAlignment)
        let frame = ContainerLayout.Frame(kind: ContainerLayout.Kind.blobReference.rawValue, headerLength: header.count,
                                          paddingLength: 0, payloadLength: 0, payloadCRC: 0)
        pipeline.write(copying: [UInt8](repeating: 0, count: start - position) + frame.encoded() + header, at: position)
        position = start + frame.length
        remove(target.name)
        preparedIndex = nil
        entryIndexByName[BlobName(target.name)] = entries.count
        var entry = target
        entry.recordOffset = start
        entry.blobHeaderLength = header.count
        entry.isReference = true
        entries.append(entry)
    }

    /// The record layout of a blob whose blob header is `headerLength` bytes:
    /// where it starts, how much padding aligns its payload, where the payload starts.
    private func layout(headerLength: Int) -> (start: Int, padding: Int, payloadOffset: Int) {
        let start = ContainerLayout.alignUp(position, ContainerLayout.unitAlignment)
        let unpadded = start + ContainerLayout.frameSize + headerLength
        let payloadOffset = ContainerLayout.alignUp(unpadded, alignment)
        return (start, payloadOffset - unpadded, payloadOffset)
    }

    /// Uncompressed: the payload is the caller's bytes. A small blob is
    /// checksummed first and written in file order with its record (so that
    /// many small blobs coalesce into few `pwritev` calls). A large one streams:
    /// each chunk is written as soon as it is checksummed, into space reserved
    /// behind the frame and header, which are written last.
    private func writeUncompressed(_ blob: BlobSource, options: EncodeOptions) throws(CheckpointError) {
        let chunkSize = options.chunkSizeInBytes
        let raw = blob.bytes
        let chunkCount = raw.count == 0 ? 0 : (raw.count - 1) / chunkSize + 1
        var header = BlobHeader(name: blob.name, dtype: blob.dtype, shape: blob.shape, compression: .none, filter: .none,
                                chunkSizeInBytes: chunkSize, rawSizeInBytes: raw.count, rawCRC32C: 0,
                                chunks: [ChunkEntry](repeating: ChunkEntry(storedSize: 0, crc32c: 0), count: chunkCount),
                                attributes: blob.attributes)
        guard header.encodedSize <= Int(UInt32.max) else {
            throw CheckpointError(.limitExceeded(what: "blob header size", limit: UInt64(UInt32.max), actual: UInt64(header.encodedSize)), blobName: blob.name)
        }
        let (start, padding, payloadOffset) = layout(headerLength: header.encodedSize)
        // A sink takes bytes in file order only: the record's header, then the payload.
        let streaming = raw.count > WritePipeline.maximumBatchBytes && sink == nil
        var rawCRC: UInt32 = 0
        for index in 0..<chunkCount {
            let begin = index * chunkSize
            let chunk = UnsafeRawBufferPointer(rebasing: raw[begin..<min(raw.count, begin + chunkSize)])
            let crc = CRC32C.checksum(chunk)
            header.chunks[index] = ChunkEntry(storedSize: UInt32(chunk.count), crc32c: crc)
            rawCRC = CRC32C.combine(rawCRC, crc, lengthOfB: chunk.count)
            if streaming {
                if let source = blob.sourceFile {
                    pipeline.copy(chunk, from: SourceFileRange(fd: source.fd, offset: source.offset + Int64(begin)), at: payloadOffset + begin)
                } else {
                    pipeline.write(chunk, at: payloadOffset + begin)
                }
                if pipeline.hasFailed { return }
            }
        }
        header.rawCRC32C = rawCRC
        // Uncompressed: the payload CRC is the raw CRC.
        try finishRecord(header: header, payloadCRC: rawCRC, start: start, padding: padding, payloadOffset: payloadOffset,
                         payload: streaming ? [] : [raw])
    }

    /// Compressed: encoded in parallel by BlobEncoder (chunks on every core),
    /// then queued for writing in file order. The writes go on while the next
    /// blob is encoded, so the disk and the cores work at the same time; the
    /// compressed chunks live until the next drain. Memory: the compressed bytes
    /// of this blob and the previous one (or run), unless together they would
    /// pass ``overlapBytes``: then the previous writes finish first.
    private func writeEncoded(_ blob: BlobSource, options: EncodeOptions) throws(CheckpointError) {
        try makeRoom(forRawBytes: blob.bytes.count)
        let encoding = try BlobEncoder.encodeRetained(blob.bytes, name: blob.name, dtype: blob.dtype, shape: blob.shape,
                                                      attributes: blob.attributes, options: options)
        // The previous blob is written by now (or soon): its buffers may go.
        try pipeline.drain()
        writtenRun = [encoding]  // kept alive until the next drain (also when queueing fails)
        try queue(encoding)
        pipeline.flush()  // written on the pipeline's thread while the next blob is encoded
    }

    /// The compressed bytes that may wait for the disk while the next blob (or
    /// run) is encoded, counted with that blob's raw size: 512 MiB.
    static let overlapBytes = 512 << 20

    /// Before encoding `rawBytes` more: if the compressed bytes still waiting to be
    /// written and those would pass ``overlapBytes``, lets the writes finish first.
    private func makeRoom(forRawBytes rawBytes: Int) throws(CheckpointError) {
        let waiting = writtenRun.reduce(0) { $0 + $1.header.storedSizeInBytes }
        guard waiting > 0 && waiting + rawBytes > ContainerWriter.overlapBytes else { return }
        try pipeline.drain()
        writtenRun = []
    }

    /// The raw bytes of compressed blobs encoded together before they are written.
    static let encodedRunBytes = 64 << 20
    /// The largest compressed blob encoded in a run (one thread per blob); larger
    /// ones are encoded alone, chunks in parallel.
    static let encodedBlobLimit = 8 << 20

    /// Encodes `run` (validated blobs) in parallel, one blob per thread, and queues
    /// them for writing in order; the previous run's writes go on meanwhile.
    /// Memory: the compressed bytes of two runs, until written.
    private func writeEncodedRun(_ run: [(BlobSource, EncodeOptions)]) throws(CheckpointError) {
        guard !run.isEmpty else { return }
        try makeRoom(forRawBytes: run.reduce(0) { $0 + $1.0.bytes.count })
        var encodings = [RetainedEncoding?](repeating: nil, count: run.count)
        try encodings.withUnsafeMutableBufferPointer { encodings throws(CheckpointError) in
            nonisolated(unsafe) let slots = encodings
            try ChunkScheduler.run(count: run.count, threads: run[0].1.threads, makeWorker: {}) { _, index throws(CheckpointError) in
                let (blob, options) = run[index]
                var single = options
                single.threads = 1
                slots[index] = try BlobEncoder.encodeRetained(blob.bytes, name: blob.name, dtype: blob.dtype, shape: blob.shape,
                                                              attributes: blob.attributes, options: single)
            }
        }
        // The previous run is written by now (or soon): its buffers may go.
        try pipeline.drain()
        let retained = encodings.compactMap { $0 }
        writtenRun = retained  // kept alive until the next drain (also when queueing fails)
        for encoding in retained { try queue(encoding) }
        pipeline.flush()  // written on the pipeline's thread while the next run is encoded
    }

    /// Queues the record of an encoded blob (its buffers must stay alive until the next drain).
    private func queue(_ encoding: RetainedEncoding) throws(CheckpointError) {
        let header = encoding.header
        let (start, padding, payloadOffset) = layout(headerLength: header.encodedSize)
        var payloadCRC: UInt32 = 0
        for chunk in header.chunks {
            payloadCRC = CRC32C.combine(payloadCRC, chunk.crc32c, lengthOfB: Int(chunk.storedSize))
        }
        try finishRecord(header: header, payloadCRC: payloadCRC, start: start, padding: padding, payloadOffset: payloadOffset,
                         payload: encoding.payload.segments)
    }

    /// Queues the zero gap before the record, its frame, blob header and
    /// padding, then `payload` (the segments not already written), and indexes the blob.
    private func finishRecord(header: BlobHeader, payloadCRC: UInt32, start: Int, padding: Int, payloadOffset: Int,
                              payload: [UnsafeRawBufferPointer]) throws(CheckpointError) {
        let headerBytes = try header.encoded()
        let frame = ContainerLayout.Frame(kind: ContainerLayout.Kind.blob.rawValue, headerLength: headerBytes.count,
                                          paddingLength: padding, payloadLength: header.storedSizeInBytes, payloadCRC: payloadCRC)
        var prefix = [UInt8](repeating: 0, count: start - position)
        prefix.reserveCapacity(prefix.count + ContainerLayout.frameSize + headerBytes.count + padding)
        prefix += frame.encoded()
        prefix += headerBytes
        prefix += repeatElement(0, count: padding)
        pipeline.write(copying: prefix, at: position)
        var offset = payloadOffset
        for segment in payload {
            pipeline.write(segment, at: offset)
            offset += segment.count
        }
        position = payloadOffset + header.storedSizeInBytes
        remove(header.name)
        preparedIndex = nil
        entryIndexByName[BlobName(header.name)] = entries.count
        entries.append(BlobDescriptor(
            name: header.name, dtype: header.dtype, shape: header.shape, compression: header.compression, filter: header.filter,
            rawSizeInBytes: header.rawSizeInBytes, storedSizeInBytes: header.storedSizeInBytes, rawCRC32C: header.rawCRC32C,
            recordOffset: start, payloadOffset: payloadOffset, blobHeaderLength: headerBytes.count))
    }

    private func remove(_ name: String) {
        guard let index = entryIndexByName.removeValue(forKey: BlobName(name)) else { return }
        preparedIndex = nil
        entries.remove(at: index)
        for i in index..<entries.count { entryIndexByName[BlobName(entries[i].name)] = i }
    }

    // MARK: Commit

    /// Writes `blobs` with `metadata` as the file's metadata and commits
    /// (``write(_:)``, ``commit()``); on any error aborts (``abort()``), so
    /// nothing of this writer stays, and rethrows.
    public func writeAndCommit(_ blobs: [BlobSource], metadata: [String: String]) throws(CheckpointError) {
        do throws(CheckpointError) {
            self.metadata = metadata
            try write(blobs)
            try commit()
        } catch {
            abort()
            throw error
        }
    }

    /// Writes the index and the trailer, makes them as durable as
    /// ``WriterOptions/durability`` asks, and (for a new file) renames it into
    /// place. An append with durability syncs its records and index before
    /// writing the trailer that makes them live, then syncs again.
    ///
    /// After an error the previous state of `path` is intact and the writer
    /// only accepts ``abort()``. One exception: with ``Durability/full``, if the
    /// directory fsync after the rename fails, the new file is already in place
    /// (complete and synced) and the error says only that its name may not
    /// survive a power cut.
    public func commit() throws(CheckpointError) {
        try requireWritable()
        try ContainerIndex.validateMetadata(metadata)
        do throws(CheckpointError) {
            let prepared = preparedIndex ?? ContainerIndex.prepare(entries: entries)
            preparedIndex = nil  // the pipeline keeps it until written
            let meta = ContainerIndex.encodeMetadata(metadata)
            let bodyHeader = ContainerIndex.encodeHeader(prepared, metadataLength: meta.count, generation: generation)
            let sections = prepared.bytes.buffer.count
            let bodyLength = bodyHeader.count + sections + meta.count
            let bodyCRC = CRC32C.combine(CRC32C.combine(CRC32C.checksum(bodyHeader), prepared.crc, lengthOfB: sections),
                                         CRC32C.checksum(meta), lengthOfB: meta.count)
            let indexStart = ContainerLayout.alignUp(position, ContainerLayout.unitAlignment)
            let padding = ContainerLayout.alignUp(indexStart + ContainerLayout.frameSize, 8) - (indexStart + ContainerLayout.frameSize)
            let frame = ContainerLayout.Frame(kind: ContainerLayout.Kind.index.rawValue, headerLength: 0, paddingLength: padding,
                                              payloadLength: bodyLength, payloadCRC: bodyCRC)
            let indexLength = frame.length
            let trailerOffset = ContainerLayout.alignUp(indexStart + indexLength, ContainerLayout.unitAlignment)
            let trailer = ContainerLayout.Trailer(indexOffset: indexStart, indexLength: indexLength, generation: generation,
                                                  fileLength: trailerOffset + ContainerLayout.trailerSize, indexCRC: bodyCRC)
            // The index record in three pieces: the gap, frame, padding and body header; the
            // entry sections (queued as they are, not copied); the metadata and the gap to the trailer.
            var front = [UInt8](repeating: 0, count: indexStart - position)
            front += frame.encoded()
            front += [UInt8](repeating: 0, count: padding)
            front += bodyHeader
            let sectionsOffset = position + front.count
            var back = meta
            back += [UInt8](repeating: 0, count: trailerOffset - (indexStart + indexLength))
            // In place and durable, the new records and the index must be on disk before the
            // trailer that makes them live: un-synced pages reach the disk in any order, and a
            // trailer kept over a lost index page is a corrupt file, not a torn end.
            let trailerAfterSync = temporaryPath == nil && sink == nil && options.durability != .none
            if !trailerAfterSync { back += trailer.encoded() }
            pipeline.write(copying: front, at: position)
            pipeline.write(prepared.bytes, at: sectionsOffset)
            pipeline.write(copying: back, at: sectionsOffset + sections)
            if trailerAfterSync {
                try pipeline.drain()
                try sync()
                pipeline.write(copying: trailer.encoded(), at: trailerOffset)
            }
            try pipeline.drain()
            position = trailer.fileLength
            if let sink {
                try sink.commit()
            } else {
                try sync()
            }
            if let temporaryPath, let file {
                try file.retrying("rename") { calls.rename(temporaryPath, path) }
            }
        } catch {
            state = .failed
            throw error.naming(path, insteadOf: temporaryPath ?? path)
        }
        state = .committed
        if temporaryPath != nil && options.durability == .full {
            // The file is complete and in place; only its name's durability is left.
            do throws(CheckpointError) { try calls.syncDirectory(ContainerWriter.splitPath(path).directory) } catch {
                file?.close()
                lockFile?.release()
                throw error.adding(path: path)
            }
        }
        file?.close()
        lockFile?.release()
    }

    private func sync() throws(CheckpointError) {
        guard let file else { return }
        switch options.durability {
        case .none: break
        case .fileData: try file.dataSync()
        case .full: try file.fullSync()
        }
    }

    /// Abandons the writer: a new file's temporary is removed; an append is cut
    /// back to where the file ended before it. Releases the lock. Idempotent.
    public func abort() {
        guard state == .open || state == .failed else { return }
        state = .aborted
        _ = try? pipeline.drain()
        if let sink {
            sink.abort()
        } else if let temporaryPath {
            calls.unlinkRetrying(temporaryPath)
        } else {
            _ = try? file?.truncate(to: Int64(originalLength))
        }
        file?.close()
        lockFile?.release()
    }

    // MARK: Paths

    static func splitPath(_ path: String) -> (directory: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// `DIR/.NAME.tmp.PID.RANDOM`: where a new version of `path` is written before its rename (FORMAT.md §6.3).
    static func temporaryPath(for path: String) -> String {
        let (directory, base) = splitPath(path)
        var random = SystemRandomNumberGenerator()
        return "\(directory)/.\(base).tmp.\(SystemCalls.processID).\(String(random.next() & 0xFFFF_FFFF, radix: 16))"
    }

    /// Rejects paths that cannot name a file: empty, containing NUL, or ending in "/".
    static func validatePath(_ path: String) throws(CheckpointError) {
        guard !path.isEmpty, !path.utf8.contains(0), !path.hasSuffix("/") else {
            throw CheckpointError(.invalidField(field: "path", reason: "'\(path)' does not name a file"))
        }
    }
}

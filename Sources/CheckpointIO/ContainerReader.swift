import BlobCodec
import Glibc

/// How a reader gets at the bytes of a file.
public enum ReadMode: String, Sendable {
    /// Map the file read-only: zero-copy views, reads straight from the page cache.
    case mmap
    /// `pread` into the caller's memory: for filesystems where mmap is slow (NFS, Lustre). No views.
    case pread
}

/// Options of a ``ContainerReader``.
public struct ReaderOptions: Sendable {
    /// How payloads are read: through a mapping of the file or with `pread`.
    public var mode: ReadMode
    /// Worker threads for decoding chunks (0 = one per CPU).
    public var threads: Int
    /// The largest blob ``ContainerReader/read(_:verify:)`` allocates (default 64 GiB).
    public var maximumRawSize: Int = 64 << 30
    /// The system calls to make; tests replace them to inject faults.
    var systemCalls: SystemCalls = .live

    /// Options; `threads` 0 decodes with one thread per CPU.
    public init(mode: ReadMode = .mmap, threads: Int = 0) {
        self.mode = mode
        self.threads = threads
    }

    init(mode: ReadMode, systemCalls: SystemCalls) {
        self.mode = mode
        self.threads = 0
        self.systemCalls = systemCalls
    }
}

/// Reads a container file (FORMAT.md §4).
///
/// Opening reads the file header, the trailer and the index, and validates
/// them completely (every offset inside the file, no overlaps, names sorted
/// and unique) before anything is exposed; no record or payload page is read.
/// If the file's end is torn (a crash during an append), the reader opens the
/// last complete commit and reports the ignored bytes in ``tornBytes``.
///
/// Reads check the blob's record against the index and, unless asked not to,
/// every CRC32C. A damaged blob throws an error naming the file, the blob, the
/// chunk and the offset; every other blob stays readable.
public final class ContainerReader: @unchecked Sendable {
    /// The file's path as given to ``open(_:options:)``.
    public let path: String
    /// The options the reader was opened with.
    public let options: ReaderOptions
    /// The commit generation opened (1 for a file never appended to).
    public let generation: UInt64
    /// File-level metadata from the index.
    public let metadata: [String: String]
    /// The payload alignment the file was written with.
    public let alignment: Int
    /// Bytes after the last complete commit (0 unless the end of the file is torn).
    public let tornBytes: Int
    /// The length of the file through its last complete trailer.
    public let committedLength: Int

    let index: ContainerIndex
    private let resolverLock = PThreadLock()
    private var resolverState: (any BlobReferenceResolving)?
    /// Opens the files this file's blob references point at (FORMAT.md §4.3.1),
    /// each once. ``open(_:options:)`` sets a ``LocalReferenceResolver`` (files in
    /// the same directory); a ``CheckpointStorage`` sets its own. Nil for a
    /// reader opened as a reference's target: references are depth 1.
    public var referenceResolver: (any BlobReferenceResolving)? {
        get { resolverLock.locked { resolverState } }
        set { resolverLock.locked { resolverState = newValue } }
    }
    private let file: ReadableFile
    /// The open file descriptor (for in-kernel copies of raw payloads); -1 for a remote source.
    var fileDescriptor: Int32 { file.fd }
    fileprivate let map: UnsafeRawBufferPointer?  // the whole file, in mmap mode

    /// Opens `path`.
    ///
    /// - Throws: `CheckpointError` naming the file and what is wrong; a file
    ///   without any complete commit throws `CheckpointError.Code.tornFile`.
    public static func open(_ path: String, options: ReaderOptions = ReaderOptions()) throws(CheckpointError) -> ContainerReader {
        try open(path, options: options, resolvingReferences: true)
    }

    /// Opens `path`; with `resolvingReferences` false (a reference's target) its own references are not followed.
    static func open(_ path: String, options: ReaderOptions, resolvingReferences: Bool) throws(CheckpointError) -> ContainerReader {
        let file = try options.systemCalls.openFile(path, .readOnly)
        do throws(CheckpointError) {
            let reader = try ContainerReader(path: path, file: ReadableFile(file), options: options)
            if resolvingReferences {
                reader.resolverState = LocalReferenceResolver(directory: ContainerWriter.splitPath(path).directory, options: options)
            }
            return reader
        } catch {
            file.close()
            throw error.adding(path: path)
        }
    }

    /// Opens a container that is not a local file (an object in an object
    /// store): the same validation as ``open(_:options:)``, reading the file
    /// header, the trailer and the index through `source` (three small reads;
    /// no payload). Reads use ``ReadMode/pread`` whatever `options` say;
    /// an uncompressed blob is read with one ``ContainerByteSource/read(into:at:)``
    /// straight into the destination (the source parallelises it), then every
    /// chunk's CRC32C is checked, and a chunk that fails is read once more
    /// before its error is reported (bytes damaged in transit).
    public static func open(source: any ContainerByteSource, options: ReaderOptions = ReaderOptions()) throws(CheckpointError) -> ContainerReader {
        var options = options
        options.mode = .pread
        do throws(CheckpointError) {
            return try ContainerReader(path: source.name, file: ReadableFile(remote: source), options: options)
        } catch {
            throw error.adding(path: source.name)
        }
    }

    private init(path: String, file: ReadableFile, options: ReaderOptions) throws(CheckpointError) {
        self.path = path
        self.options = options
        self.file = file
        let size = Int(try file.size())
        guard size >= ContainerLayout.fileHeaderSize + ContainerLayout.trailerSize else {
            throw CheckpointError(.tornFile(reason: "\(size) bytes is shorter than a file header and a trailer"))
        }
        var map: UnsafeRawBufferPointer?
        if options.mode == .mmap, let local = file.local {
            guard let address = options.systemCalls.mmap(size, local.fd) else { throw local.error("mmap") }
            map = UnsafeRawBufferPointer(start: address, count: size)
        }
        self.map = map
        let source = ByteSource(file: file, map: map, size: size)
        // The end of a torn file may be cut by a concurrent appender or repair: it is
        // only ever read with pread (a short read is an error, a vanished mapped page a SIGBUS).
        let unmapped = ByteSource(file: file, map: nil, size: size)
        do throws(CheckpointError) {
            alignment = try source.withBytes(at: 0, count: ContainerLayout.fileHeaderSize) { bytes throws(CheckpointError) in
                try ContainerLayout.parseFileHeader(bytes)
            }
            let trailerOffset = size - ContainerLayout.trailerSize
            let opened: OpenedCommit
            do throws(CheckpointError) {
                _ = try unmapped.withBytes(at: trailerOffset, count: ContainerLayout.trailerSize) { bytes throws(CheckpointError) in
                    try ContainerLayout.Trailer.parse(bytes, at: trailerOffset)
                }
                // A complete commit ends the file: everything up to `size` is committed and never cut.
                opened = try ContainerReader.openCommit(source, trailerAt: trailerOffset, threads: options.threads)
            } catch {
                // The end is not a complete commit: fall back to the last complete one, if any
                // (a remote object is never torn: it was written whole or not at all).
                guard case .tornFile = error.code, file.remote == nil, let last = try? ContainerScanner.lastCommit(unmapped, fileSize: size) else { throw error }
                opened = last
            }
            index = opened.index
            generation = opened.trailer.generation
            metadata = opened.index.metadata
            committedLength = opened.trailer.fileLength
            tornBytes = size - opened.trailer.fileLength
        } catch {
            if let map { _ = options.systemCalls.munmap(UnsafeMutableRawPointer(mutating: map.baseAddress!), map.count) }
            throw error
        }
    }

    deinit {
        if let map { _ = options.systemCalls.munmap(UnsafeMutableRawPointer(mutating: map.baseAddress!), map.count) }
        file.close()
    }

    struct OpenedCommit {
        let trailer: ContainerLayout.Trailer
        let index: ContainerIndex
    }

    /// Index bodies from this size on are checksummed on one thread while another validates them.
    static let parallelIndexThreshold = 256 << 10

    /// Validates the trailer at `offset` and the index it points to (FORMAT.md §4.7, steps 2–8).
    ///
    /// The index body's CRC32C and its structural validation are independent
    /// reads of the same bytes: for a large index (``parallelIndexThreshold``)
    /// and more than one thread they run side by side. Validation is bounds-checked
    /// throughout (it must survive hostile bytes whose checksum was fixed up), so
    /// running it on bytes whose checksum then fails is harmless, and the checksum
    /// error is the one reported.
    static func openCommit(_ source: ByteSource, trailerAt offset: Int, threads: Int = 1) throws(CheckpointError) -> OpenedCommit {
        let trailer = try source.withBytes(at: offset, count: ContainerLayout.trailerSize) { bytes throws(CheckpointError) in
            try ContainerLayout.Trailer.parse(bytes, at: offset)
        }
        let frame = try source.withBytes(at: trailer.indexOffset, count: ContainerLayout.frameSize) { bytes throws(CheckpointError) in
            try ContainerLayout.Frame.parse(bytes, at: trailer.indexOffset)
        }
        guard frame.kind == ContainerLayout.Kind.index.rawValue, frame.headerLength == 0, frame.paddingLength < 8,
              frame.length == trailer.indexLength, (trailer.indexOffset + frame.payloadStart) % 8 == 0
        else {
            throw CheckpointError(.invalidField(field: "index record", reason: "kind \(frame.kind), length \(frame.length) where the trailer says \(trailer.indexLength)"), offset: UInt64(trailer.indexOffset))
        }
        let bodyOffset = trailer.indexOffset + frame.payloadStart
        // The unchecksummed bytes around the index body (its padding, the gap before the trailer) must be zeros.
        try requireZeros(source, at: trailer.indexOffset + ContainerLayout.frameSize, count: frame.paddingLength)
        try requireZeros(source, at: trailer.indexOffset + frame.length, count: offset - (trailer.indexOffset + frame.length))
        let index = try source.withBytes(at: bodyOffset, count: frame.payloadLength) { body throws(CheckpointError) in
            nonisolated(unsafe) let body = body
            nonisolated(unsafe) var parsed: ContainerIndex?
            // Task 0 (the checksum) fails first whenever it fails: the lowest failed task's error is thrown.
            try ChunkScheduler.run(count: 2, threads: body.count >= parallelIndexThreshold ? threads : 1, makeWorker: {}) { _, task throws(CheckpointError) in
                if task == 0 {
                    let crc = CRC32C.checksum(body)
                    guard crc == frame.payloadCRC, crc == trailer.indexCRC else {
                        throw CheckpointError(.headerChecksumMismatch(expected: trailer.indexCRC, actual: crc), offset: UInt64(bodyOffset))
                    }
                } else {
                    // A mapped body lives as long as the reader that owns the index; a pread buffer does not.
                    parsed = try ContainerIndex(parsing: body, dataEnd: trailer.indexOffset, generation: trailer.generation, borrowing: source.map != nil)
                }
            }
            return parsed!
        }
        return OpenedCommit(trailer: trailer, index: index)
    }

    // MARK: Listing

    /// The number of blobs.
    public var count: Int { index.count }

    /// Blob names in byte-wise order. Builds one String per blob (an allocation
    /// each for names longer than 15 bytes); touches no record. For many blobs,
    /// ``nameList`` lists them without a String each.
    public var names: [String] { (0..<index.count).map { index.name(index.entryInNameOrder($0)) } }

    /// Blob names in byte-wise order, as substrings of one string that holds the
    /// index's whole name pool: built on first use with one allocation and one
    /// copy, then each name costs O(1) and no allocation (100,000 names list in
    /// a fraction of the time ``names`` takes). `String(name)` makes an owned copy.
    /// The list keeps this reader (and so a mapped index) alive.
    public var nameList: BlobNameList {
        let pool = nameListLock.locked { () -> String? in
            if let cached = cachedNamePool { return cached }
            let pool = index.namePoolString()
            cachedNamePool = .some(pool)
            return pool
        }
        return BlobNameList(reader: self, pool: pool)
    }
    private let nameListLock = PThreadLock()
    /// The name pool as one string (nil inside: not valid UTF-8 as a whole), once built.
    private var cachedNamePool: String??

    /// Whether a live blob has this name (byte-wise). O(log n); touches no record.
    public func contains(_ name: String) -> Bool { index.lookup(name) != nil }

    /// What the index says about `name` (O(log n), no record read).
    public func descriptor(_ name: String) throws(CheckpointError) -> BlobDescriptor {
        guard let entry = index.lookup(name) else { throw CheckpointError(.blobNotFound(name), path: path) }
        do throws(CheckpointError) { return try index.descriptor(entry) } catch { throw error.adding(path: path) }
    }

    /// All descriptors, in name order.
    public func descriptors() throws(CheckpointError) -> [BlobDescriptor] {
        try (0..<index.count).map { (position: Int) throws(CheckpointError) -> BlobDescriptor in
            do throws(CheckpointError) { return try index.descriptor(index.entryInNameOrder(position)) } catch { throw error.adding(path: path) }
        }
    }

    // MARK: Reading

    /// Reads and validates a blob's record frame and header against the index.
    public func header(_ name: String) throws(CheckpointError) -> BlobHeader {
        let entry = try descriptor(name)
        if entry.isReference { return try resolve(entry).header }
        return try record(entry).header
    }

    fileprivate func record(_ entry: BlobDescriptor) throws(CheckpointError) -> (header: BlobHeader, frame: ContainerLayout.Frame) {
        let source = ByteSource(file: file, map: map, size: committedLength)
        do throws(CheckpointError) {
            let frame = try source.withBytes(at: entry.recordOffset, count: ContainerLayout.frameSize) { bytes throws(CheckpointError) in
                try ContainerLayout.Frame.parse(bytes, at: entry.recordOffset)
            }
            guard frame.kind == ContainerLayout.Kind.blob.rawValue else { throw CheckpointError(.unsupportedRecordKind(frame.kind)) }
            guard frame.headerLength == entry.blobHeaderLength, entry.recordOffset + frame.payloadStart == entry.payloadOffset,
                  frame.payloadLength == entry.storedSizeInBytes, frame.paddingLength < alignment
            else {
                throw CheckpointError(.invalidField(field: "record frame", reason: "lengths disagree with the index"), offset: UInt64(entry.recordOffset))
            }
            let headerOffset = entry.recordOffset + ContainerLayout.frameSize
            let header = try source.withBytes(at: headerOffset, count: frame.headerLength + frame.paddingLength) { all throws(CheckpointError) in
                do throws(CheckpointError) {
                    let bytes = UnsafeRawBufferPointer(rebasing: all[0..<frame.headerLength])
                    let (header, length) = try BlobHeader.decode(from: bytes)
                    guard length == bytes.count else {
                        throw CheckpointError(.invalidField(field: "blob header length", reason: "\(length), the frame says \(bytes.count)"))
                    }
                    // Padding is not checksummed, so it must be exactly zeros.
                    if let nonZero = all[frame.headerLength...].firstIndex(where: { $0 != 0 }) {
                        throw CheckpointError(.invalidField(field: "record padding", reason: "byte is not zero"), offset: UInt64(nonZero))
                    }
                    return header
                } catch {
                    throw error.offset == nil ? error.adding(offset: UInt64(headerOffset)) : rebased(error, by: headerOffset)
                }
            }
            guard header.name.hasSameBytes(as: entry.name), header.dtype == entry.dtype, header.shape == entry.shape,
                  header.compression == entry.compression, header.filter == entry.filter,
                  header.rawSizeInBytes == entry.rawSizeInBytes, header.rawCRC32C == entry.rawCRC32C,
                  header.storedSizeInBytes == frame.payloadLength
            else {
                throw CheckpointError(.invalidField(field: "blob header", reason: "disagrees with the index"), offset: UInt64(headerOffset))
            }
            // The frame's payload CRC must be the combination of the chunk CRCs (no data pass needed).
            var combined: UInt32 = 0
            for chunk in header.chunks { combined = CRC32C.combine(combined, chunk.crc32c, lengthOfB: Int(chunk.storedSize)) }
            guard combined == frame.payloadCRC else {
                throw CheckpointError(.headerChecksumMismatch(expected: frame.payloadCRC, actual: combined), offset: UInt64(entry.recordOffset + 24))
            }
            return (header, frame)
        } catch {
            throw error.adding(blobName: entry.name, path: path)
        }
    }

    /// Decodes blob `name` into `destination` (exactly its raw size), checking
    /// every CRC unless `verify` is false. Chunks decode in parallel; in mmap
    /// mode raw chunks are checksummed and copied in one pass, in pread mode
    /// they are read straight into `destination` and checksummed there.
    public func read(_ name: String, into destination: UnsafeMutableRawBufferPointer, verify: Bool = true) throws(CheckpointError) {
        try read(try descriptor(name), into: destination, verify: verify, threads: options.threads)
    }

    /// The largest blob the batch ``read(batch:verify:)`` decodes on one thread next
    /// to others; larger ones get every thread for their chunks, one at a time.
    static let batchBlobLimit = 8 << 20

    /// Decodes several blobs, each into its own destination (exactly its raw
    /// size), checking every CRC unless `verify` is false: the form of
    /// ``read(_:into:verify:)`` for loading many blobs, such as a whole checkpoint.
    ///
    /// A blob of one chunk can only decode on one thread, so reading small
    /// blobs one after the other leaves the other cores idle. Here blobs of up
    /// to 8 MiB decode side by side, one per thread (largest first), and larger
    /// blobs one at a time with their chunks in parallel. (From a remote
    /// source, such as S3, blobs are read one after the other: the source
    /// fetches each in parallel ranges itself.) Destinations must not overlap.
    ///
    /// - Throws: before anything is decoded, `CheckpointError.Code.blobNotFound`
    ///   for a name the file lacks and `CheckpointError.Code.sizeMismatch` for a
    ///   destination that is not the blob's size; then the first failure of a
    ///   read (the earliest in the order above, naming its blob). No new blob
    ///   starts after one fails, and destinations of blobs not yet finished may
    ///   hold partial data.
    public func read(batch requests: [(name: String, destination: UnsafeMutableRawBufferPointer)], verify: Bool = true) throws(CheckpointError) {
        let entries = try requests.map { (request) throws(CheckpointError) -> BlobDescriptor in
            let entry: BlobDescriptor
            do throws(CheckpointError) { entry = try descriptor(request.name) } catch {
                throw error.adding(blobName: request.name, path: path)
            }
            guard request.destination.count == entry.rawSizeInBytes else {
                throw CheckpointError(.sizeMismatch(what: "read destination", expected: UInt64(entry.rawSizeInBytes), actual: UInt64(request.destination.count)),
                                      blobName: request.name, path: path)
            }
            return entry
        }
        nonisolated(unsafe) let requests = requests
        try forEachBlob(sizes: entries.map(\.rawSizeInBytes)) { index, threads throws(CheckpointError) in
            try self.read(entries[index], into: requests[index].destination, verify: verify, threads: threads)
        }
    }

    /// Calls `body(index, threads)` for each blob of `sizes` (decoded bytes): those of
    /// up to ``batchBlobLimit`` side by side, one thread each, largest first (one after
    /// the other from a remote source, whose reads of more than one range wait on work
    /// of their own in the same thread pool); then the larger ones one at a time, with
    /// every thread for their chunks (as is a lone small blob). No new blob starts after one fails.
    private func forEachBlob(sizes: [Int], _ body: (_ index: Int, _ threads: Int) throws(CheckpointError) -> Void) throws(CheckpointError) {
        let small = sizes.indices.filter { sizes[$0] <= Self.batchBlobLimit }.sorted { sizes[$0] > sizes[$1] || (sizes[$0] == sizes[$1] && $0 < $1) }
        // Side by side only with a neighbour: a lone small blob gets every thread for its chunks, as a large one does.
        let sideBySide = small.count > 1
        if sideBySide {
            try ChunkScheduler.run(count: small.count, threads: file.remote == nil ? options.threads : 1, makeWorker: {}) { _, position throws(CheckpointError) in
                try body(small[position], 1)
            }
        }
        for index in sizes.indices where !sideBySide || sizes[index] > Self.batchBlobLimit { try body(index, options.threads) }
    }

    private func read(_ entry: BlobDescriptor, into destination: UnsafeMutableRawBufferPointer, verify: Bool, threads: Int) throws(CheckpointError) {
        if entry.isReference {
            let resolved = try resolve(entry)
            try resolvedRead(resolved, entry: entry) { () throws(CheckpointError) in
                try resolved.reader.decode(resolved.entry, header: resolved.header, into: destination, verify: verify, threads: threads)
            }
            return
        }
        let (header, _) = try record(entry)
        try decode(entry, header: header, into: destination, verify: verify, threads: threads)
    }

    /// Decodes a blob whose record has been checked against the index.
    fileprivate func decode(_ entry: BlobDescriptor, header: BlobHeader, into destination: UnsafeMutableRawBufferPointer, verify: Bool,
                            threads: Int) throws(CheckpointError) {
        let name = entry.name
        guard destination.count == header.rawSizeInBytes else {
            throw CheckpointError(.sizeMismatch(what: "read destination", expected: UInt64(header.rawSizeInBytes), actual: UInt64(destination.count)), blobName: name, path: path)
        }
        let decodeOptions = DecodeOptions(threads: threads, verifyRawChecksum: verify)
        do throws(CheckpointError) {
            if let map {
                let payload = UnsafeRawBufferPointer(rebasing: map[entry.payloadOffset..<(entry.payloadOffset + entry.storedSizeInBytes)])
                if verify {
                    try BlobDecoder.decode(payload: payload, header: header, into: destination, options: decodeOptions)
                } else if header.isStoredRaw && payload.count == destination.count {
                    destination.copyMemory(from: payload)
                } else {
                    try BlobDecoder.decode(payload: payload, header: header, into: destination, options: decodeOptions)
                }
            } else if header.isStoredRaw {
                try readRawWithPread(header: header, entry: entry, into: destination, verify: verify, threads: threads)
            } else {
                let stored = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, entry.storedSizeInBytes), alignment: 64)
                defer { stored.deallocate() }
                let payload = UnsafeMutableRawBufferPointer(rebasing: stored[0..<entry.storedSizeInBytes])
                try file.readAll(into: payload, at: Int64(entry.payloadOffset))
                try BlobDecoder.decode(payload: UnsafeRawBufferPointer(payload), header: header, into: destination, options: decodeOptions)
            }
        } catch {
            throw rebased(error, by: entry.payloadOffset).adding(blobName: name, path: path)
        }
    }

    /// pread of an uncompressed payload into the caller's memory, chunks in
    /// parallel, each checksummed in 1 MiB pieces while they are still in cache.
    /// Raw-stored, so the raw CRC is the combination of the chunk CRCs checked here.
    private func readRawWithPread(header: BlobHeader, entry: BlobDescriptor, into destination: UnsafeMutableRawBufferPointer, verify: Bool,
                                  threads: Int) throws(CheckpointError) {
        let file = self.file
        if file.remote != nil {
            try readRawFromRemote(header: header, entry: entry, into: destination, verify: verify)
            return
        }
        try ChunkScheduler.run(count: header.chunks.count, threads: threads, makeWorker: {}) { _, index throws(CheckpointError) in
            let start = index * header.chunkSizeInBytes
            let length = header.rawLength(ofChunk: index)
            var crc: UInt32 = 0
            var done = 0
            while done < length {
                let n = min(1 << 20, length - done)
                let part = UnsafeMutableRawBufferPointer(rebasing: destination[(start + done)..<(start + done + n)])
                try file.readAll(into: part, at: Int64(entry.payloadOffset + start + done))
                if verify { crc = CRC32C.extend(crc, UnsafeRawBufferPointer(part)) }
                done += n
            }
            if verify && crc != header.chunks[index].crc32c {
                throw CheckpointError(.chunkChecksumMismatch(chunk: index, expected: header.chunks[index].crc32c, actual: crc), offset: UInt64(start))
            }
        }
    }

    /// A remote source's uncompressed payload: one read of the whole payload
    /// (the source splits it into parallel ranges and checksums every chunk
    /// as its bytes arrive, ``ContainerByteSource/readChecksummed(into:at:blockSize:)``);
    /// a chunk that fails is read once more, since the bytes may have been
    /// damaged on the way.
    private func readRawFromRemote(header: BlobHeader, entry: BlobDescriptor, into destination: UnsafeMutableRawBufferPointer, verify: Bool) throws(CheckpointError) {
        let file = self.file
        guard verify, let remote = file.remote, destination.count > 0 else {
            try file.readAll(into: destination, at: Int64(entry.payloadOffset))
            return
        }
        try file.checkRange(count: destination.count, at: Int64(entry.payloadOffset))
        ContainerReader.prefault(destination)
        let crcs = try remote.readChecksummed(into: destination, at: entry.payloadOffset, blockSize: header.chunkSizeInBytes)
        guard crcs.count == header.chunks.count else {
            throw CheckpointError(.invalidState(reason: "\(remote.name) returned \(crcs.count) checksums for \(header.chunks.count) chunks"))
        }
        for index in header.chunks.indices where crcs[index] != header.chunks[index].crc32c {
            let start = index * header.chunkSizeInBytes
            let part = UnsafeMutableRawBufferPointer(rebasing: destination[start..<(start + header.rawLength(ofChunk: index))])
            let expected = header.chunks[index].crc32c
            try file.readAll(into: part, at: Int64(entry.payloadOffset + start))
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(part))
            if crc != expected {
                throw CheckpointError(.chunkChecksumMismatch(chunk: index, expected: expected, actual: crc), offset: UInt64(start))
            }
        }
    }

    /// Maps the whole pages of `destination` writable in one call
    /// (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14+; contents unchanged), so that
    /// a download filling fresh memory piece by piece does not take one page
    /// fault per 4 KiB (~5% of a load's CPU on loopback S3). Best effort: an
    /// older kernel's EINVAL, or memory that is not writable, changes nothing.
    static func prefault(_ destination: UnsafeMutableRawBufferPointer) {
        guard let base = destination.baseAddress else { return }
        let page = 4096
        let start = (Int(bitPattern: base) + page - 1) & ~(page - 1)
        let end = (Int(bitPattern: base) + destination.count) & ~(page - 1)
        let populateWrite: Int32 = 23  // MADV_POPULATE_WRITE
        if end > start { _ = Glibc.madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, populateWrite) }
    }

    /// Reads blob `name` into a new array.
    ///
    /// The record is checked against the index before anything is allocated,
    /// and the raw size must be within ``ReaderOptions/maximumRawSize``.
    public func read(_ name: String, verify: Bool = true) throws(CheckpointError) -> [UInt8] {
        let entry = try descriptor(name)
        if entry.isReference {
            let resolved = try resolve(entry)
            guard resolved.header.rawSizeInBytes <= options.maximumRawSize else {
                throw CheckpointError(.limitExceeded(what: "raw size", limit: UInt64(options.maximumRawSize), actual: UInt64(resolved.header.rawSizeInBytes)), blobName: name, path: path)
            }
            return try resolvedRead(resolved, entry: entry) { () throws(CheckpointError) -> [UInt8] in try resolved.reader.read(name, verify: verify) }
        }
        let (header, _) = try record(entry)
        guard header.rawSizeInBytes <= options.maximumRawSize else {
            throw CheckpointError(.limitExceeded(what: "raw size", limit: UInt64(options.maximumRawSize), actual: UInt64(header.rawSizeInBytes)), blobName: name, path: path)
        }
        guard header.rawSizeInBytes > 0 else { return [] }
        var failure: CheckpointError?
        let bytes = [UInt8](unsafeUninitializedCapacity: header.rawSizeInBytes) { buffer, count in
            do throws(CheckpointError) {
                try decode(entry, header: header, into: UnsafeMutableRawBufferPointer(buffer), verify: verify, threads: options.threads)
                count = buffer.count
            } catch {
                failure = error
                count = 0
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Calls `body` with the bytes of an uncompressed blob, in place in the
    /// mapped file: no copy, and without `verify` no payload page is touched.
    ///
    /// The view is valid only inside `body` (the reader keeps the mapping
    /// alive for as long as it lives; do not let the pointer escape).
    ///
    /// - Throws: `CheckpointError.Code.notViewable` for a compressed
    ///   blob or a reader in pread mode; checksum errors when `verify` is true.
    public func withUnsafeBytes<R>(of name: String, verify: Bool = false, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let entry = try descriptor(name)
        if entry.isReference {
            let resolved = try resolve(entry)
            return try withExtendedLifetime(self) { try resolved.reader.withUnsafeBytes(of: name, verify: verify, body) }
        }
        guard let map else { throw CheckpointError(.notViewable(reason: "the reader uses pread mode"), blobName: name, path: path) }
        guard entry.isViewableInPlace else {
            throw CheckpointError(.notViewable(reason: "the blob is stored with \(entry.compression)"), blobName: name, path: path)
        }
        let view = UnsafeRawBufferPointer(rebasing: map[entry.payloadOffset..<(entry.payloadOffset + entry.storedSizeInBytes)])
        if verify {
            let (header, _) = try record(entry)
            do throws(CheckpointError) {
                try BlobDecoder.verify(payload: view, header: header, options: DecodeOptions(threads: options.threads))
            } catch {
                throw rebased(error, by: entry.payloadOffset).adding(blobName: name, path: path)
            }
        }
        return try withExtendedLifetime(self) { try body(view) }
    }

    /// Hints the kernel that the payload of `name` will be read soon (`madvise(WILLNEED)`); mmap mode only.
    public func prefetch(_ name: String) throws(CheckpointError) {
        let entry = try descriptor(name)
        if entry.isReference {
            try resolve(entry).reader.prefetch(name)
            return
        }
        guard let map, entry.storedSizeInBytes > 0 else { return }
        let page = 4096
        let start = entry.payloadOffset / page * page
        let end = min(map.count, entry.payloadOffset + entry.storedSizeInBytes)
        _ = options.systemCalls.madvise(UnsafeMutableRawPointer(mutating: map.baseAddress! + start), end - start, SystemCalls.adviceWillNeed)
    }

    // MARK: Verification

    /// The result of checking one blob.
    public struct BlobCheck: Sendable {
        /// The blob's name.
        public var name: String
        /// nil when every checksum held.
        public var error: CheckpointError?
    }

    /// Checks every checksum of every blob (record frame, blob header, each
    /// chunk, the raw CRC). Never throws for a damaged blob: each gets its own
    /// result, in name order. Blobs of up to 8 MiB (decoded) are checked side by
    /// side, one per thread, larger ones one at a time with their chunks in
    /// parallel (as the batch ``read(batch:verify:)``).
    public func verify() -> [BlobCheck] { verify(names) }

    /// ``verify()`` of the blobs `names`.
    func verify(only name: String) -> [BlobCheck] { verify([name]) }

    private func verify(_ names: [String]) -> [BlobCheck] {
        let entries = names.map { name in Result { () throws(CheckpointError) in try descriptor(name) } }
        var results = [BlobCheck?](repeating: nil, count: names.count)
        results.withUnsafeMutableBufferPointer { results in
            // Each index is written by exactly one call; the body never throws.
            nonisolated(unsafe) let slots = results
            // Raw sizes: checking a compressed blob costs its decoding.
            try? forEachBlob(sizes: entries.map { (try? $0.get())?.rawSizeInBytes ?? 0 }) { index, threads in
                slots[index] = self.verify(names[index], entries[index], threads: threads)
            }
        }
        return results.map { $0! }
    }

    /// Checks blob `name`, whose index entry (or the error of looking it up) is `lookup`.
    private func verify(_ name: String, _ lookup: Result<BlobDescriptor, CheckpointError>, threads: Int) -> BlobCheck {
        do throws(CheckpointError) {
            let entry = try lookup.get()
            if entry.isReference {
                // Follow the reference: its record here, then every checksum of the target blob.
                let resolved = try resolve(entry)
                let checks = resolved.reader.verify(only: name)
                if let error = checks.first?.error { throw referenceError(entry, target: resolved.reader.path, reason: "fails verification: \(error)") }
                return BlobCheck(name: name, error: nil)
            }
            let (header, _) = try record(entry)
            let payloadEnd = entry.payloadOffset + entry.storedSizeInBytes
            do throws(CheckpointError) {
                try requireZeros(ByteSource(file: file, map: map, size: committedLength), at: payloadEnd,
                                 count: min(ContainerLayout.alignUp(payloadEnd, ContainerLayout.unitAlignment), committedLength) - payloadEnd)
            } catch {
                throw error.adding(blobName: name, path: path)
            }
            do throws(CheckpointError) {
                if let map {
                    let payload = UnsafeRawBufferPointer(rebasing: map[entry.payloadOffset..<(entry.payloadOffset + entry.storedSizeInBytes)])
                    try BlobDecoder.verify(payload: payload, header: header, options: DecodeOptions(threads: threads))
                } else {
                    let stored = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, entry.storedSizeInBytes), alignment: 64)
                    defer { stored.deallocate() }
                    let payload = UnsafeMutableRawBufferPointer(rebasing: stored[0..<entry.storedSizeInBytes])
                    try file.readAll(into: payload, at: Int64(entry.payloadOffset))
                    try BlobDecoder.verify(payload: UnsafeRawBufferPointer(payload), header: header, options: DecodeOptions(threads: threads))
                }
            } catch {
                throw rebased(error, by: entry.payloadOffset).adding(blobName: name, path: path)
            }
            return BlobCheck(name: name, error: nil)
        } catch {
            return BlobCheck(name: name, error: error)
        }
    }

    // MARK: Blob references

    /// What a blob reference resolves to: the target file's reader, the target's
    /// index entry there, and its record's blob header (checked against both).
    struct ResolvedReference {
        let reader: ContainerReader
        let entry: BlobDescriptor
        let header: BlobHeader
        let reference: BlobReference
    }

    /// The reference `name` holds (FORMAT.md §4.3.1), read from its record and
    /// checked against the index; nil when `name` is stored in this file.
    /// Reads one small record; does not open the target.
    public func reference(_ name: String) throws(CheckpointError) -> BlobReference? {
        let entry = try descriptor(name)
        guard entry.isReference else { return nil }
        return try referenceRecord(entry)
    }

    /// Reads and checks the reference record of a reference entry.
    private func referenceRecord(_ entry: BlobDescriptor) throws(CheckpointError) -> BlobReference {
        let source = ByteSource(file: file, map: map, size: committedLength)
        do throws(CheckpointError) {
            let frame = try source.withBytes(at: entry.recordOffset, count: ContainerLayout.frameSize) { bytes throws(CheckpointError) in
                try ContainerLayout.Frame.parse(bytes, at: entry.recordOffset)
            }
            guard frame.kind == ContainerLayout.Kind.blobReference.rawValue, frame.headerLength == entry.blobHeaderLength,
                  frame.paddingLength == 0, frame.payloadLength == 0, frame.payloadCRC == 0
            else {
                throw CheckpointError(.invalidField(field: "reference record frame", reason: "kind \(frame.kind) or lengths disagree with the index"), offset: UInt64(entry.recordOffset))
            }
            let headerOffset = entry.recordOffset + ContainerLayout.frameSize
            let header = try source.withBytes(at: headerOffset, count: frame.headerLength) { bytes throws(CheckpointError) in
                do throws(CheckpointError) { return try ContainerLayout.ReferenceHeader.parse(bytes) } catch {
                    throw error.offset == nil ? error.adding(offset: UInt64(headerOffset)) : rebased(error, by: headerOffset)
                }
            }
            let target = header.target
            guard target.name.hasSameBytes(as: entry.name), target.dtype == entry.dtype, target.shape == entry.shape,
                  target.compression == entry.compression, target.filter == entry.filter,
                  target.rawSizeInBytes == entry.rawSizeInBytes, target.storedSizeInBytes == entry.storedSizeInBytes,
                  target.rawCRC32C == entry.rawCRC32C, target.payloadOffset == entry.payloadOffset
            else {
                throw CheckpointError(.invalidField(field: "blob reference", reason: "disagrees with the index"), offset: UInt64(headerOffset))
            }
            return BlobReference(fileName: header.fileName, target: target, storedCRC32C: header.storedCRC)
        } catch {
            throw error.adding(blobName: entry.name, path: path)
        }
    }

    /// The error for a reference whose target fails: names this file, the blob and the target file.
    private func referenceError(_ entry: BlobDescriptor, target: String, reason: String) -> CheckpointError {
        CheckpointError(.referenceTargetInvalid(target: target, reason: reason), blobName: entry.name, path: path, offset: UInt64(entry.recordOffset))
    }

    /// Resolves a reference entry: reads its record, opens the target file
    /// (once, through ``referenceResolver``), and checks that the target's
    /// index entry and record match the reference in every field (name,
    /// dtype, shape, codec, filter, sizes, record and payload offsets, both
    /// CRCs) and that the target is a stored blob, not another reference.
    func resolve(_ entry: BlobDescriptor) throws(CheckpointError) -> ResolvedReference {
        let reference = try referenceRecord(entry)
        guard let resolver = referenceResolver else {
            throw referenceError(entry, target: reference.fileName, reason: "is not followed: this file was opened as a reference's target, and references have depth 1")
        }
        let targetPath = resolver.targetPath(reference.fileName)
        let reader: ContainerReader
        do throws(CheckpointError) { reader = try resolver.openTarget(reference.fileName) } catch {
            let reason = AtomicFile.isMissingFile(error) ? "does not exist" : "cannot be opened: \(error)"
            throw referenceError(entry, target: targetPath, reason: reason)
        }
        guard let index = reader.index.lookup(entry.name) else {
            throw referenceError(entry, target: targetPath, reason: "has no blob of that name (it was replaced or damaged)")
        }
        let targetEntry: BlobDescriptor
        do throws(CheckpointError) { targetEntry = try reader.index.descriptor(index) } catch {
            throw referenceError(entry, target: targetPath, reason: "holds an unreadable entry for it: \(error)")
        }
        let expected = reference.target
        guard !targetEntry.isReference else {
            throw referenceError(entry, target: targetPath, reason: "holds a reference, not the blob (references have depth 1)")
        }
        guard targetEntry.recordOffset == expected.recordOffset, targetEntry.payloadOffset == expected.payloadOffset,
              targetEntry.blobHeaderLength == expected.blobHeaderLength, targetEntry.dtype == expected.dtype, targetEntry.shape == expected.shape,
              targetEntry.compression == expected.compression, targetEntry.filter == expected.filter,
              targetEntry.rawSizeInBytes == expected.rawSizeInBytes, targetEntry.storedSizeInBytes == expected.storedSizeInBytes
        else {
            throw referenceError(entry, target: targetPath, reason: "holds a different blob of that name (record at \(targetEntry.recordOffset), \(targetEntry.dtype) \(targetEntry.shape); the reference expects the record at \(expected.recordOffset), \(expected.dtype) \(expected.shape)): it was replaced")
        }
        guard targetEntry.rawCRC32C == expected.rawCRC32C else {
            throw referenceError(entry, target: targetPath, reason: "holds that blob with raw CRC32C 0x\(String(targetEntry.rawCRC32C, radix: 16)), the reference expects 0x\(String(expected.rawCRC32C, radix: 16)): it was replaced")
        }
        let checked: (header: BlobHeader, frame: ContainerLayout.Frame)
        do throws(CheckpointError) { checked = try reader.record(targetEntry) } catch {
            throw referenceError(entry, target: targetPath, reason: "is damaged: \(error)")
        }
        guard checked.frame.payloadCRC == reference.storedCRC32C else {
            throw referenceError(entry, target: targetPath, reason: "holds that blob with stored CRC32C 0x\(String(checked.frame.payloadCRC, radix: 16)), the reference expects 0x\(String(reference.storedCRC32C, radix: 16)): it was replaced")
        }
        return ResolvedReference(reader: reader, entry: targetEntry, header: checked.header, reference: reference)
    }

    /// Runs a read of a resolved target, turning the target's errors (a checksum
    /// mismatch in its payload) into one that names both files.
    private func resolvedRead<R>(_ resolved: ResolvedReference, entry: BlobDescriptor, _ body: () throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        do throws(CheckpointError) { return try body() } catch {
            if case .referenceTargetInvalid = error.code { throw error }
            if case .sizeMismatch(what: "read destination", _, _) = error.code { throw error }
            throw referenceError(entry, target: resolved.reader.path, reason: "is damaged: \(error)")
        }
    }

    /// The CRC32C of a stored blob's payload, from its record frame (checked against the index and the chunk CRCs).
    func storedCRC(of entry: BlobDescriptor) throws(CheckpointError) -> UInt32 { try record(entry).frame.payloadCRC }

    /// The reader and entry holding the stored bytes of `name`: this file's, or a reference's target's.
    func storedLocation(_ name: String) throws(CheckpointError) -> (reader: ContainerReader, entry: BlobDescriptor) {
        let entry = try descriptor(name)
        guard entry.isReference else { return (self, entry) }
        let resolved = try resolve(entry)
        return (resolved.reader, resolved.entry)
    }
}

/// Checks that the `count` bytes at `offset` are zeros (unchecksummed padding).
func requireZeros(_ source: ByteSource, at offset: Int, count: Int) throws(CheckpointError) {
    guard count > 0 else { return }
    try source.withBytes(at: offset, count: count) { bytes throws(CheckpointError) in
        if let index = bytes.firstIndex(where: { $0 != 0 }) {
            throw CheckpointError(.invalidField(field: "padding", reason: "byte is not zero"), offset: UInt64(offset + index))
        }
    }
}

/// Shifts a buffer-relative error offset to a file offset.
func rebased(_ error: CheckpointError, by base: Int) -> CheckpointError {
    var copy = error
    if let offset = error.offset, error.path == nil { copy.offset = offset + UInt64(base) }
    return copy
}

/// Reads byte ranges of a file through its mapping or with pread, checked
/// against `size` (the file's size when opened, or a committed length within it).
struct ByteSource {
    let file: ReadableFile
    let map: UnsafeRawBufferPointer?
    let size: Int

    init(file: ReadableFile, map: UnsafeRawBufferPointer?, size: Int) {
        self.file = file
        self.map = map
        self.size = size
    }

    init(file: SystemFile, map: UnsafeRawBufferPointer?, size: Int) {
        self.init(file: ReadableFile(file), map: map, size: size)
    }

    func withBytes<R>(at offset: Int, count: Int, _ body: (UnsafeRawBufferPointer) throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw CheckpointError(.truncated(what: "file", needed: UInt64(max(0, offset)) + UInt64(max(0, count)), available: UInt64(size)), offset: UInt64(max(0, offset)))
        }
        if let map { return try body(UnsafeRawBufferPointer(rebasing: map[offset..<(offset + count)])) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 8)
        defer { buffer.deallocate() }
        let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
        try file.readAll(into: part, at: Int64(offset))
        return try body(UnsafeRawBufferPointer(part))
    }
}

/// What a reader reads from: a local file (pread, mmap) or a ``ContainerByteSource``.
struct ReadableFile: @unchecked Sendable {
    let local: SystemFile?
    let remote: (any ContainerByteSource)?

    init(_ file: SystemFile) {
        local = file
        remote = nil
    }

    init(remote: any ContainerByteSource) {
        local = nil
        self.remote = remote
    }

    var fd: Int32 { local?.fd ?? -1 }

    func size() throws(CheckpointError) -> Int64 {
        if let local { return try local.size() }
        return Int64(remote!.sizeInBytes)
    }

    /// Reads exactly `buffer.count` bytes at `offset`; end of file is an error.
    func readAll(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(CheckpointError) {
        if let local { return try local.readAll(into: buffer, at: offset) }
        try checkRange(count: buffer.count, at: offset)
        guard buffer.count > 0 else { return }
        try remote!.read(into: buffer, at: Int(offset))
    }

    /// Throws unless `count` bytes at `offset` lie inside a remote source.
    func checkRange(count: Int, at offset: Int64) throws(CheckpointError) {
        guard let remote else { return }
        guard offset >= 0, Int(offset) + count <= remote.sizeInBytes else {
            throw CheckpointError(.truncated(what: "object", needed: UInt64(offset) + UInt64(count), available: UInt64(remote.sizeInBytes)), path: remote.name)
        }
    }

    func close() { local?.close() }
}

/// The blob names of a ``ContainerReader`` in byte-wise order (``ContainerReader/nameList``):
/// substrings of one string holding the index's name pool, so listing them
/// allocates nothing per name.
public struct BlobNameList: RandomAccessCollection, @unchecked Sendable {
    // @unchecked: `table` points into the index's body, which is immutable and
    // lives as long as `reader` (kept here) does.
    /// The reader, kept alive: its index may lie in its file mapping.
    private let reader: ContainerReader
    /// The name pool as one string, when the pool as a whole is valid UTF-8 (a
    /// writer may leave unused bytes in it: then each name is its own string).
    private let pool: String?
    /// The index's name-order table and name fields.
    private let table: ContainerIndex.NameTable

    init(reader: ContainerReader, pool: String?) {
        self.reader = reader
        self.pool = pool
        table = reader.index.nameTable
        endIndex = reader.index.count
    }

    /// 0.
    public var startIndex: Int { 0 }
    /// The number of blobs.
    public let endIndex: Int

    /// The name at `position` in byte-wise order. O(1): three loads from the
    /// index and a substring of the pool, no allocation.
    public subscript(position: Int) -> Substring {
        precondition(position >= 0 && position < endIndex, "BlobNameList index \(position) out of range 0..<\(endIndex)")
        let entry = table.entry(at: position)
        guard let pool else { return Substring(reader.index.name(entry)) }
        let range = table.nameRange(ofEntry: entry)
        let utf8 = pool.utf8
        let start = utf8.index(utf8.startIndex, offsetBy: range.lowerBound)
        return Substring(utf8[start..<utf8.index(start, offsetBy: range.count)])
    }
}

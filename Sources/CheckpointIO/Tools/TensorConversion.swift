import BlobCodec

/// How converted tensors are written.
public struct ConversionOptions: Sendable {
    /// Codec, level, shuffle, chunk size and threads for container output
    /// (default: no compression, so the output can be viewed zero-copy).
    public var encode: EncodeOptions
    /// Payload alignment for container output.
    public var alignment: Int
    /// How far the output is synced before the conversion returns. The
    /// default, ``Durability/full``, fsyncs the file (every file of a `.npy`
    /// directory), renames it into place and fsyncs its directory, so that
    /// after a power cut the output's name holds the whole output or its old
    /// content: deleting the input afterwards is safe. ``Durability/none``
    /// is for scratch conversions.
    public var durability: Durability
    /// The output format; nil: from the output's name (``TensorConversion/outputFormat(for:)``).
    public var format: TensorFileFormat?

    /// Options; container output is uncompressed, 64-byte aligned and fully synced by default.
    public init(encode: EncodeOptions = EncodeOptions(), alignment: Int = 64, durability: Durability = .full, format: TensorFileFormat? = nil) {
        self.encode = encode
        self.alignment = alignment
        self.durability = durability
        self.format = format
    }
}

/// What a conversion wrote.
public struct ConversionSummary: Sendable {
    /// The format written.
    public var format: TensorFileFormat
    /// Tensors written.
    public var tensorCount: Int
    /// Raw (decoded) bytes of the tensors written.
    public var rawBytes: Int
    /// The size of the output (all files, for a directory).
    public var outputBytes: Int
    /// Temporaries of killed writers removed from the output's directory before writing (names).
    public var removedTemporaries: [String] = []
    /// Their total size in bytes.
    public var removedTemporaryBytes: Int = 0
}

/// Writes tensors to any ``TensorFileFormat`` and converts between them.
///
///     let input = try TensorFile.open("model.safetensors")
///     try TensorConversion.convert(input, to: "model.ckpt")                 // zero-copy viewable container
///     try TensorConversion.convert(input, names: ["lm_head.weight"], to: "head.npz")
public enum TensorConversion {
    /// The format an output path names: `.ckpt` the container,
    /// `.safetensors`, `.npz`, `.npy` (one tensor), `.minidb` (Caffe2), a directory (an existing
    /// one, or a path ending in `/`) for `.npy` files; nil for any other name
    /// (a `.pt` file is not ours to write: say the format with
    /// ``ConversionOptions/format``).
    public static func outputFormat(for path: String) -> TensorFileFormat? {
        if path.hasSuffix("/") || AtomicFile.isDirectory(path) { return .npyDirectory }
        if path.hasSuffix(".safetensors") { return .safetensors }
        if path.hasSuffix(".npz") { return .npz }
        if path.hasSuffix(".npy") { return .npy }
        if path.hasSuffix(".ckpt") { return .container }
        if path.hasSuffix(".minidb") { return .minidb }
        return nil
    }

    /// The format `options` and the name of `path` say, or an error naming the path.
    static func resolveFormat(_ path: String, _ options: ConversionOptions) throws(CheckpointError) -> TensorFileFormat {
        if let format = options.format { return format }
        if let format = outputFormat(for: path) { return format }
        throw CheckpointError(.invalidField(field: "output name", reason: "its extension names no format written here "
            + "(.ckpt, .safetensors, .npz, .npy, .minidb, or a directory ending in /); give the format explicitly"), path: path)
    }

    /// Copies the tensors `names` (nil: all, in name order) of `input` to `output`, in the format its path names.
    ///
    /// Tensors are borrowed from the input without a copy where it stores
    /// them raw (mapped files), decoded and verified otherwise. File metadata
    /// goes along to formats that have it (container, safetensors). Blob
    /// references (an incremental checkpoint) are flattened: the output holds
    /// every blob's bytes, read from the referenced files, and not the
    /// references' metadata (``CheckpointManager/referencesKey``).
    /// `progress(done, total)` is called with raw byte counts.
    ///
    /// - Throws: `CheckpointError.Code.blobNotFound` for a name the input
    ///   lacks; the writer's errors (a dtype the output format lacks, …).
    @discardableResult
    public static func convert(_ input: TensorFile, names: [String]? = nil, to output: String, options: ConversionOptions = ConversionOptions(),
                               progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> ConversionSummary {
        let selected = try names.map { (names) throws(CheckpointError) -> [TensorEntry] in try names.map { (name) throws(CheckpointError) -> TensorEntry in try input.entry(name) } } ?? input.entries
        var owners: [AnyObject] = []
        var sources: [BlobSource] = []
        for entry in selected {
            let (owner, bytes) = try input.borrow(entry.name)
            if let owner { owners.append(owner) }
            var source = BlobSource(name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes: bytes)
            source.sourceFile = input.fileRange(of: entry.name, view: bytes)
            sources.append(source)
        }
        return try withExtendedLifetime(owners) { () throws(CheckpointError) -> ConversionSummary in
            var metadata = input.hasMetadataSection ? input.metadata : nil
            // The output is self-contained: it refers to no file.
            metadata?.removeValue(forKey: CheckpointManager.referencesKey)
            metadata?.removeValue(forKey: CheckpointManager.savesSinceFullKey)
            return try write(sources, metadata: metadata, to: output, options: options, progress: progress)
        }
    }

    /// Writes `tensors` to `path` in the format of ``ConversionOptions/format``
    /// or, without one, the format ``outputFormat(for:)`` names.
    ///
    /// Every format is written under a temporary name and renamed into
    /// place (a `.npy` directory as a temporary directory), so that a failure
    /// or an interrupt leaves the old output or none. Temporaries that killed
    /// writers left in the output's directory are removed first (see
    /// ``ConversionSummary/removedTemporaries``).
    @discardableResult
    public static func write(_ tensors: [BlobSource], metadata: [String: String]? = nil, to path: String, options: ConversionOptions = ConversionOptions(),
                             progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> ConversionSummary {
        let format = try resolveFormat(path, options)
        let path = format == .npyDirectory && path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let total = tensors.reduce(0) { $0 + $1.bytes.count }
        let cleaned = AtomicFile.removeTemporariesOfDeadWriters(in: ContainerWriter.splitPath(path).directory, calls: .live)
        switch format {
        case .container:
            let writer = try ContainerWriter.create(at: path, options: WriterOptions(encode: options.encode, alignment: options.alignment, durability: options.durability))
            do throws(CheckpointError) {
                writer.metadata = metadata ?? [:]
                // Batches of about 256 MiB, so that progress moves.
                var batch: [BlobSource] = []
                var batchBytes = 0, done = 0
                for tensor in tensors {
                    batch.append(tensor)
                    batchBytes += tensor.bytes.count
                    if batchBytes >= 256 << 20 {
                        try writer.write(batch)
                        done += batchBytes
                        progress?(done, total)
                        batch = []
                        batchBytes = 0
                    }
                }
                try writer.write(batch)
                try writer.commit()
            } catch {
                writer.abort()
                throw error
            }
        case .safetensors:
            try SafetensorsFile.write(tensors, metadata: metadata, to: path, durability: options.durability)
        case .npz:
            try NpzArchive.write(tensors, to: path, durability: options.durability)
        case .npy:
            guard tensors.count == 1 else {
                throw CheckpointError(.invalidField(field: "output", reason: "a .npy file holds one tensor, not \(tensors.count); name a directory (ending in /) or an .npz"), path: path)
            }
            try writeNpy(tensors[0], to: path, durability: options.durability)
        case .npyDirectory:
            try writeNpyDirectory(tensors, to: path, durability: options.durability, total: total, progress: progress)
        case .minidb:
            try MiniDBFile.write(tensors, to: path, durability: options.durability)
        }
        progress?(total, total)
        return ConversionSummary(format: format, tensorCount: tensors.count, rawBytes: total, outputBytes: AtomicFile.totalSize(path),
                                 removedTemporaries: cleaned.names, removedTemporaryBytes: cleaned.bytes)
    }

    /// Writes one `.npy` per tensor into a temporary directory beside `path`,
    /// synced, then renames it to `path` (missing or empty) or, when `path`
    /// is a directory with files, moves the files into it one by one: only
    /// renames, the writing (which can fail) is done by then; if a move
    /// fails, the error says how many files were moved.
    static func writeNpyDirectory(_ tensors: [BlobSource], to path: String, durability: Durability, total: Int,
                                  progress: ((Int, Int) -> Void)?) throws(CheckpointError) {
        let calls = SystemCalls.live
        for tensor in tensors { _ = try npyPath(for: tensor.name, in: path) }
        let lock = try ContainerWriter.takeLock(for: path, calls: calls)
        defer { lock.release() }
        let merge = AtomicFile.isDirectory(path) && !AtomicFile.listDirectory(path).isEmpty
        let temporary = ContainerWriter.temporaryPath(for: path)
        do throws(CheckpointError) {
            try AtomicFile.makeDirectory(temporary)
            var directories: Set<String> = [temporary]
            var done = 0
            for tensor in tensors {
                let file = try npyPath(for: tensor.name, in: temporary)
                var parent = ContainerWriter.splitPath(file).directory
                try AtomicFile.makeDirectory(parent, parents: true)
                while parent.count > temporary.count && directories.insert(parent).inserted { parent = ContainerWriter.splitPath(parent).directory }
                try writeNpy(tensor, to: file, durability: durability == .full ? .fileData : durability, lockHeld: true)
                done += tensor.bytes.count
                progress?(done, total)
            }
            if durability == .full {
                // Deepest first: each directory's entries, then its own name in its parent.
                for directory in directories.sorted(by: { $0.count > $1.count }) { try calls.syncDirectory(directory) }
            }
            if merge {
                var moved = 0
                do throws(CheckpointError) {
                    for tensor in tensors {
                        let destination = try npyPath(for: tensor.name, in: path)
                        let parent = ContainerWriter.splitPath(destination).directory
                        try AtomicFile.makeDirectory(parent, parents: true)
                        try AtomicFile.rename(try npyPath(for: tensor.name, in: temporary), to: destination, calls: calls)
                        if durability == .full { try calls.syncDirectory(parent) }
                        moved += 1
                    }
                } catch {
                    throw CheckpointError(.invalidState(reason: "\(error) (\(moved) of \(tensors.count) complete .npy files had been moved into the directory; the others were not written)"),
                                          path: path)
                }
                AtomicFile.removeTree(temporary, calls: calls)
            } else {
                try AtomicFile.rename(temporary, to: path, calls: calls)
                if durability == .full { try calls.syncDirectory(ContainerWriter.splitPath(path).directory) }
            }
        } catch {
            AtomicFile.removeTree(temporary, calls: calls)
            throw error.naming(path, insteadOf: temporary)
        }
    }

    /// `DIRECTORY/NAME.npy`, after checking that the name cannot leave the directory.
    static func npyPath(for name: String, in directory: String) throws(CheckpointError) -> String {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.utf8.contains(0), parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.hasPrefix(".") }) else {
            throw CheckpointError(.invalidField(field: "name", reason: "cannot be a file name under the output directory"), blobName: name)
        }
        return CheckpointNaming.join(directory, name + ".npy")
    }

    static func writeNpy(_ tensor: BlobSource, to path: String, durability: Durability, lockHeld: Bool = false) throws(CheckpointError) {
        let header: [UInt8]
        do throws(CheckpointError) { header = try NumpyFormat.encodeHeader(dtype: tensor.dtype, shape: tensor.shape) } catch {
            throw error.adding(blobName: tensor.name, path: path)
        }
        try typedThrows {
            try header.withUnsafeBytes { headerBytes in
                try AtomicFile.write([headerBytes, tensor.bytes], to: path, durability: durability, calls: .live, lockHeld: lockHeld)
            }
        }
    }
}

extension TensorFile {
    /// Where the raw bytes of `name` (borrowed as `view`) lie in the file, when they are stored there as they are.
    func fileRange(of name: String, view: UnsafeRawBufferPointer) -> SourceFileRange? {
        switch backend {
        case let .container(reader):
            // A blob reference's bytes lie in its target file.
            guard let (holder, descriptor) = try? reader.storedLocation(name), descriptor.isViewableInPlace, holder.options.mode == .mmap else { return nil }
            return SourceFileRange(fd: holder.fileDescriptor, offset: Int64(descriptor.payloadOffset))
        case let .safetensors(_, map):
            return map.fileRange(of: view)
        case let .arrays(arrays):
            return (arrays[BlobName(name)]?.owner as? MappedFile)?.fileRange(of: view)
        case .minidb:
            return nil
        }
    }

    /// The raw bytes of `name` without copying where possible, and the object
    /// that keeps them alive (the file itself for views; a decoded buffer otherwise).
    func borrow(_ name: String) throws(CheckpointError) -> (owner: AnyObject?, bytes: UnsafeRawBufferPointer) {
        let entry = try entry(name)
        if let reader = containerReader, try reader.descriptor(name).isViewableInPlace == false || reader.options.mode != .mmap {
            let storage = try TensorStorage(checkedByteCount: entry.rawBytes)
            try reader.read(name, into: UnsafeMutableRawBufferPointer(start: storage.base, count: storage.count), verify: true)
            return (storage, UnsafeRawBufferPointer(start: storage.base, count: storage.count))
        }
        if case let .minidb(file) = backend {
            let storage = try TensorStorage(checkedByteCount: entry.rawBytes)
            try file.read(name, into: UnsafeMutableRawBufferPointer(start: storage.base, count: storage.count))
            return (storage, UnsafeRawBufferPointer(start: storage.base, count: storage.count))
        }
        if case let .arrays(arrays) = backend, arrays[BlobName(name)] == nil || conversions[BlobName(name)] != nil {
            let stored: (owner: AnyObject, bytes: UnsafeRawBufferPointer)
            if let view = arrays[BlobName(name)] { stored = view } else { stored = try inflatedMember(name) }
            defer { withExtendedLifetime(stored.owner) {} }
            return conversions[BlobName(name)] == nil ? stored : try convertedArray(name, stored: stored.bytes)
        }
        // Views into a mapping that lives as long as this file.
        let view = try typedThrows { try withUnsafeBytes(of: name) { $0 } }
        return (self, view)
    }
}

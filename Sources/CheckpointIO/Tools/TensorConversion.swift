import BlobCodec

/// How converted tensors are written.
public struct ConversionOptions: Sendable {
    /// Codec, level, shuffle, chunk size and threads for container output
    /// (default: no compression, so the output can be viewed zero-copy).
    public var encode: EncodeOptions
    /// Payload alignment for container output.
    public var alignment: Int
    public var durability: Durability

    public init(encode: EncodeOptions = EncodeOptions(), alignment: Int = 64, durability: Durability = .none) {
        self.encode = encode
        self.alignment = alignment
        self.durability = durability
    }
}

/// What a conversion wrote.
public struct ConversionSummary: Sendable {
    public var format: TensorFileFormat
    public var tensorCount: Int
    public var rawBytes: Int
    /// The size of the output (all files, for a directory).
    public var outputBytes: Int
}

/// Writes tensors to any ``TensorFileFormat`` and converts between them.
///
///     let input = try TensorFile.open("model.safetensors")
///     try TensorConversion.convert(input, to: "model.ckpt")                 // zero-copy viewable container
///     try TensorConversion.convert(input, names: ["lm_head.weight"], to: "head.npz")
public enum TensorConversion {
    /// The format of an output path: `.safetensors`, `.npz`, `.npy` (one
    /// tensor), a directory (an existing one, or a path ending in `/`) for
    /// `.npy` files, anything else the container.
    public static func outputFormat(for path: String) -> TensorFileFormat {
        if path.hasSuffix("/") || AtomicFile.isDirectory(path) { return .npyDirectory }
        if path.hasSuffix(".safetensors") { return .safetensors }
        if path.hasSuffix(".npz") { return .npz }
        if path.hasSuffix(".npy") { return .npy }
        return .container
    }

    /// Copies the tensors `names` (nil: all, in name order) of `input` to `output`, in the format its path names.
    ///
    /// Tensors are borrowed from the input without a copy where it stores
    /// them raw (mapped files), decoded and verified otherwise. File metadata
    /// goes along to formats that have it (container, safetensors).
    /// `progress(done, total)` is called with raw byte counts.
    ///
    /// - Throws: ``CheckpointError/Code/blobNotFound(_:)`` for a name the input
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
            try write(sources, metadata: input.hasMetadataSection ? input.metadata : nil, to: output, options: options, progress: progress)
        }
    }

    /// Writes `tensors` to `path` in the format ``outputFormat(for:)`` names.
    @discardableResult
    public static func write(_ tensors: [BlobSource], metadata: [String: String]? = nil, to path: String, options: ConversionOptions = ConversionOptions(),
                             progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> ConversionSummary {
        let format = outputFormat(for: path)
        let total = tensors.reduce(0) { $0 + $1.bytes.count }
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
            try AtomicFile.makeDirectory(path)
            var done = 0
            for tensor in tensors {
                let file = try npyPath(for: tensor.name, in: path)
                try AtomicFile.makeDirectory(ContainerWriter.splitPath(file).directory, parents: true)
                try writeNpy(tensor, to: file, durability: options.durability)
                done += tensor.bytes.count
                progress?(done, total)
            }
        }
        progress?(total, total)
        return ConversionSummary(format: format, tensorCount: tensors.count, rawBytes: total, outputBytes: AtomicFile.totalSize(path))
    }

    /// `DIRECTORY/NAME.npy`, after checking that the name cannot leave the directory.
    static func npyPath(for name: String, in directory: String) throws(CheckpointError) -> String {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.utf8.contains(0), parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.hasPrefix(".") }) else {
            throw CheckpointError(.invalidField(field: "name", reason: "cannot be a file name under the output directory"), blobName: name)
        }
        return CheckpointNaming.join(directory, name + ".npy")
    }

    static func writeNpy(_ tensor: BlobSource, to path: String, durability: Durability) throws(CheckpointError) {
        let header: [UInt8]
        do throws(CheckpointError) { header = try NumpyFormat.encodeHeader(dtype: tensor.dtype, shape: tensor.shape) } catch {
            throw error.adding(blobName: tensor.name, path: path)
        }
        try typedThrows {
            try header.withUnsafeBytes { headerBytes in
                try AtomicFile.write([headerBytes, tensor.bytes], to: path, durability: durability, calls: .live)
            }
        }
    }
}

extension TensorFile {
    /// Where the raw bytes of `name` (borrowed as `view`) lie in the file, when they are stored there as they are.
    func fileRange(of name: String, view: UnsafeRawBufferPointer) -> SourceFileRange? {
        switch backend {
        case let .container(reader):
            guard let descriptor = try? reader.descriptor(name), descriptor.isViewableInPlace, reader.options.mode == .mmap else { return nil }
            return SourceFileRange(fd: reader.fileDescriptor, offset: Int64(descriptor.payloadOffset))
        case let .safetensors(_, map):
            return map.fileRange(of: view)
        case let .arrays(arrays):
            return (arrays[BlobName(name)]?.owner as? MappedFile)?.fileRange(of: view)
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

import ArgumentParser
import CheckpointIO
import Foundation

/// Options for writing tensors (convert, extract).
struct WriteOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Codec for container (.ckpt) output: \(codecList), or auto (planes for float dtypes, none for the rest: the recommended choice); NAME-LEVEL (zstd-3) or --level. Default: none, so the output can be viewed zero-copy.",
                               valueName: "codec"))
    var codec: String?

    @Option(help: "Codec level (lz4hc 1-12, zlib 1-9, zstd 1-19); same as NAME-LEVEL.")
    var level: Int?

    @Option(help: "Byte shuffle before compressing (needs --codec): auto, on, off. Default: auto (floats only).")
    var shuffle: String?

    @Option(name: .customLong("chunk-size"), help: "Chunk size for container output, e.g. 4M (a multiple of 16, at most 1G). Default: 4M.")
    var chunkSize: String?

    @Option(parsing: .unconditional, help: "Worker threads (0 = one per CPU).")
    var threads: Int = 0

    @Option(parsing: .unconditional, help: "Payload alignment for container output (a power of two, 8-4096). Default: 64.")
    var align: Int?

    @Option(help: "Output format: ckpt, safetensors, npz, npy, npy-dir. Default: from the output's name (.ckpt, .safetensors, .npz, .npy, a directory); other names are refused without it.")
    var format: String?

    @Flag(name: .shortAndLong, help: "Replace an existing output file (add to an existing directory), as `zstd -f` does; without it an existing output is an error.")
    var force = false

    @Flag(name: .customLong("no-sync"), help: "Skip the fsyncs, for scratch outputs. By default the output is durable: the file is fsync'd, renamed into place and its directory fsync'd, so that deleting the input afterwards is safe even across a power cut.")
    var noSync = false

    /// The output format: `--format`, or the one the name says; a usage error otherwise.
    func outputFormat(for output: String) throws -> TensorFileFormat {
        if let format {
            guard let parsed = TensorFileFormat(rawValue: format.lowercased()) else {
                let suggestion = closestNames(to: format, among: TensorFileFormat.allCases.map(\.rawValue), limit: 1).first.map { "; did you mean \($0)?" } ?? ""
                throw ValidationError("unknown --format '\(format)'\(suggestion) Formats: ckpt, safetensors, npz, npy, npy-dir, minidb.")
            }
            return parsed
        }
        guard let inferred = TensorConversion.outputFormat(for: output) else {
            throw ValidationError("'\(output)': ckpt writes .ckpt, .safetensors, .npz, .npy and .minidb (Caffe2) files and directories of .npy (ending in /); "
                                  + "pass --format to write one of them under another name")
        }
        return inferred
    }

    func conversionOptions(format: TensorFileFormat, output: String) throws -> ConversionOptions {
        guard threads >= 0 else { throw ValidationError("--threads must be ≥ 0 (0 = one per CPU), not \(threads)") }
        if format != .container {
            let given = [("--codec", codec != nil), ("--level", level != nil), ("--shuffle", shuffle != nil), ("--chunk-size", chunkSize != nil), ("--align", align != nil)]
                .filter(\.1).map(\.0)
            if !given.isEmpty {
                throw ValidationError("\(given.joined(separator: ", ")) \(given.count == 1 ? "applies" : "apply") to container (.ckpt) output only; '\(output)' is written as \(format.rawValue)")
            }
        }
        // `auto`: the plane codec for float dtypes, the rest uncompressed (EncodeOptions.recommended).
        let auto = codec?.lowercased() == "auto"
        if auto && level != nil { throw ValidationError("--level does not apply to --codec auto") }
        let compression = auto ? Compression.none : try codec.map { try parseCodec($0, level: level, help: "convert") } ?? {
            if level != nil { throw ValidationError("--level needs --codec (e.g. --codec zstd --level 3)") }
            return Compression.none
        }()
        var shuffleMode = ShuffleMode.auto
        if let shuffle {
            guard let mode = ShuffleMode(rawValue: shuffle) else { throw ValidationError("--shuffle must be auto, on or off, not '\(shuffle)'") }
            guard compression != .none else {
                throw ValidationError("--shuffle needs --codec: uncompressed blobs are never shuffled (they stay viewable in place)")
            }
            shuffleMode = mode
        }
        var chunk = 4 << 20
        if let chunkSize {
            guard let parsed = parseSize(chunkSize), parsed >= 16, parsed <= EncodeOptions.maximumChunkSize, parsed % 16 == 0 else {
                throw ValidationError("bad --chunk-size '\(chunkSize)': a multiple of 16 bytes up to 1G, e.g. 4M")
            }
            chunk = parsed
        }
        let alignment = align ?? 64
        guard alignment >= 8, alignment <= 4096, alignment & (alignment - 1) == 0 else { throw ValidationError("--align must be a power of two in 8...4096, not \(alignment)") }
        var encode = EncodeOptions(compression: compression, shuffle: shuffleMode, chunkSizeInBytes: chunk, threads: threads)
        if auto {
            encode = .recommended(threads: threads, chunkSizeInBytes: chunkSize == nil ? 1 << 20 : chunk)
        }
        return ConversionOptions(encode: encode,
                                 alignment: alignment, durability: noSync ? .none : .full, format: format)
    }
}

/// Refuses an output that exists (unless `force`) or whose directory does not.
func checkOutput(_ output: String, format: TensorFileFormat, force: Bool) throws {
    let trimmed = output.count > 1 && output.hasSuffix("/") ? String(output.dropLast()) : output
    let parent = (trimmed as NSString).deletingLastPathComponent
    var isDirectory: ObjCBool = false
    if !parent.isEmpty, !(FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory) && isDirectory.boolValue) {
        printError("ckpt: error: the output directory '\(parent)' does not exist (create it first, e.g. mkdir -p '\(parent)')")
        throw ExitCode(Exit.io)
    }
    guard FileManager.default.fileExists(atPath: trimmed, isDirectory: &isDirectory), !force else { return }
    if isDirectory.boolValue {
        guard format == .npyDirectory else {
            throw usageError("'\(output)' is a directory; name a file, or write one .npy per tensor into it with --format npy-dir")
        }
        if (try? FileManager.default.contentsOfDirectory(atPath: trimmed))?.isEmpty ?? true { return }
        throw usageError("'\(output)' is a directory with files in it; pass --force (-f) to add the .npy files to it (files of the same names are replaced)")
    }
    throw usageError("'\(output)' exists; pass --force (-f) to replace it")
}

/// Writes the summary of a conversion: what, how much, how compressed, how long, how fast, how durable.
func printSummary(_ summary: ConversionSummary, to output: String, seconds: Double, compressed: Bool, durable: Bool) {
    var line = "wrote \(output) (\(summary.format.rawValue)): \(plural(summary.tensorCount, "tensor")), "
    if compressed {
        line += compressionSummary(raw: summary.rawBytes, stored: summary.outputBytes)
    } else {
        line += "\(formatBytesShort(summary.rawBytes)) of tensors in \(formatBytesShort(summary.outputBytes))"
    }
    line += ", \(formatDuration(seconds)), \(formatRate(bytes: summary.rawBytes, seconds: seconds))"
    line += durable ? ", durable (fsync'd)" : ", not synced (--no-sync)"
    print(line)
}

/// Converts `names` (nil: all) of `input` to `output` with a progress bar and a summary line.
func runConversion(label: String, input: String, names: [String]?, output: String, write: WriteOptions, outputOptions: OutputOptions) throws {
    if S3Paths.isS3(input) || S3Paths.isS3(output) {
        // s3:// on either side (or both): staged through local temporary files.
        try reportingErrors(outputOptions) {
            try S3Paths.withLocalInput(input, output: outputOptions) { localInput in
                try S3Paths.withLocalOutput(output, force: write.force, output: outputOptions) { localOutput in
                    try runConversion(label: label, input: localInput, names: names, output: localOutput, write: write, outputOptions: outputOptions)
                }
            }
        }
        return
    }
    try reportingErrors(outputOptions) {
        let format = try write.outputFormat(for: output)
        let options = try write.conversionOptions(format: format, output: output)
        try checkOutput(output, format: format, force: write.force)
        let file = try TensorFile.open(input)
        if outputOptions.verbose { file.notes.forEach { printError("ckpt: note: \($0)") } }
        if let names {
            let known = Set(file.entries.map { BlobName($0.name) })
            for name in names where !known.contains(BlobName(name)) {
                let suggestions = closestNames(to: name, among: file.entries.map(\.name))
                throw usageError("\(input) has no tensor '\(name)'"
                                 + (suggestions.isEmpty ? "" : "; did you mean " + suggestions.map { "'\($0)'" }.joined(separator: ", ") + "?")
                                 + " (`ckpt inspect \(input)` lists its \(plural(file.entries.count, "tensor")))")
            }
        }
        let progress = ProgressBar(label, output: outputOptions)
        let start = ContinuousClock.now
        let summary = try TensorConversion.convert(file, names: names, to: output, options: options, progress: progress.update)
        let elapsed = ContinuousClock.now - start
        progress.finish()
        if !summary.removedTemporaries.isEmpty && !outputOptions.quiet {
            print("removed \(plural(summary.removedTemporaries.count, "abandoned temporary", "abandoned temporaries")) (\(formatBytes(summary.removedTemporaryBytes))) "
                  + "that interrupted runs left beside \(output)")
        }
        if !outputOptions.quiet {
            printSummary(summary, to: output, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18,
                         compressed: options.encode.compression != .none && format == .container, durable: options.durability != .none)
        }
    }
}

/// `ckpt convert IN OUT`: between the container, safetensors, .npz, .npy and Caffe2 minidb.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert between our container, safetensors, .npz, .npy and Caffe2 minidb files.",
        discussion: """
            The output format comes from OUT: .ckpt our container, .safetensors, .npz, .npy (one tensor), .minidb (Caffe2's format: `ckpt convert old_checkpoint.minidb new.ckpt` migrates a Caffe2 checkpoint; an input minidb is detected from its bytes), a directory (existing, or ending in /) for one .npy per tensor; any other name needs --format. Without --codec the container is uncompressed, so it can be viewed zero-copy; --codec, --level, --shuffle, --chunk-size and --align apply to container output only.

            An existing OUT is an error unless --force (as with zstd). The output is written under a hidden temporary name, fsync'd, renamed into place and its directory fsync'd (durable: deleting the input afterwards is safe); --no-sync skips the fsyncs. Ctrl-C removes the unfinished temporary; temporaries left by killed runs are removed by the next write into the directory.
            """)

    @Argument(help: "The input file (format detected from its bytes).")
    var input: String

    @Argument(help: "The output path.")
    var output: String

    @OptionGroup var write: WriteOptions
    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try runConversion(label: "convert", input: input, names: nil, output: output, write: write, outputOptions: outputOptions)
    }
}

/// `ckpt extract FILE [NAME…] -o OUT`: some blobs into any format.
struct Extract: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy some blobs (all without names) of a file into a new file of any format.")

    @Argument(help: "The input file.")
    var input: String

    @Argument(help: "The blobs to extract (none: all).")
    var names: [String] = []

    @Option(name: .shortAndLong, help: "The output path (format from its name, as for convert).")
    var output: String

    @OptionGroup var write: WriteOptions
    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try runConversion(label: "extract", input: input, names: names.isEmpty ? nil : names, output: output, write: write, outputOptions: outputOptions)
    }
}

/// `ckpt recover FILE [-o OUT]`: rebuild a torn container's index.
struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild the index of a torn container from its complete records (in place, or into a copy with -o).",
        discussion: "Keeps every blob of the last complete commit whose record verifies, then every intact record after it. Damaged records are skipped and named on stderr, and the exit status is then 65 (the file is repaired, but those blobs are lost). The file is never cut before the end of its last complete commit, so readers that have it open keep working.")

    @Argument(help: "The container file.")
    var file: String

    @Option(name: .shortAndLong, help: "Write the recovered file here and leave FILE untouched.")
    var output: String?

    @Flag(name: .shortAndLong, help: "Replace an existing -o file; without it an existing output is an error.")
    var force = false

    @Flag(name: .customLong("no-sync"), help: "Skip the fsyncs. By default the result is durable: -o output is fsync'd, renamed into place and its directory fsync'd; an in-place repair syncs before and after writing the new index.")
    var noSync = false

    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        if let output { try checkOutput(output, format: .container, force: force) }
        try reportingErrors(outputOptions) {
            guard try TensorFileFormat.detect(file) == .container else {
                throw CheckpointError(.invalidField(field: "format", reason: "recover works on our container files only"), path: file)
            }
            let report: RecoveryReport
            let cleaned = InterruptCleanup.removeTemporariesOfDeadWriters(in: ((output ?? file) as NSString).deletingLastPathComponent.nonEmpty ?? ".")
            if !cleaned.names.isEmpty {
                print("removed \(plural(cleaned.names.count, "abandoned temporary", "abandoned temporaries")) (\(formatBytesShort(cleaned.bytes))) that interrupted runs left")
            }
            if let output {
                report = try ContainerRecovery.recover(file, to: output, durability: noSync ? .none : .full)
            } else {
                report = try ContainerRecovery.repair(file, durability: noSync ? .none : .fileData)
            }
            let lost = report.fileLength - report.intactLength
            print("recovered \(output ?? file): \(plural(report.blobNames.count, "blob")) from \(plural(report.blobRecords, "intact record"))"
                  + (lost > 0 ? ", dropped \(formatBytes(lost)) after the last intact record" : "")
                  + (report.stopReason.map { " (\($0))" } ?? "")
                  + (lost == 0 && report.keepsEverything ? ", nothing lost" : ""))
            // Damaged records are skipped, never silently: each is named, and the exit status says data was lost.
            for damaged in report.damagedRecords {
                printError("dropped damaged record at offset \(damaged.offset)" + (damaged.name.map { " (blob '\($0)')" } ?? "") + ": \(damaged.error.code)")
            }
            if !report.lostBlobs.isEmpty {
                printError("lost \(plural(report.lostBlobs.count, "blob")) whose newest record is damaged: "
                           + report.lostBlobs.prefix(20).joined(separator: ", ") + (report.lostBlobs.count > 20 ? ", …" : ""))
            }
            if !report.keepsEverything { throw ExitCode(Exit.data) }
        }
    }
}

import ArgumentParser
import CheckpointIO
import Foundation

/// Options for writing tensors (convert, extract).
struct WriteOptions: ParsableArguments {
    @Option(help: "Codec for container output: none, lz4, lz4hc, zlib, zstd, planes, or auto (planes for float dtypes, none for the rest: the recommended choice).")
    var codec: String = "none"

    @Option(help: "Codec level (lz4hc 1-12, zlib 1-9, zstd 1-19).")
    var level: Int?

    @Option(help: "Byte shuffle before compressing: auto, on, off.")
    var shuffle: String = "auto"

    @Option(name: .customLong("chunk-size"), help: "Chunk size, e.g. 4M (a multiple of 16, at most 1G).")
    var chunkSize: String = "4M"

    @Option(help: "Worker threads (0 = one per CPU).")
    var threads: Int = 0

    @Option(help: "Payload alignment for container output (a power of two, 8-4096).")
    var align: Int = 64

    func conversionOptions() throws -> ConversionOptions {
        let compression: Compression
        var floatCompression: Compression?
        do {
            if codec.lowercased() == "auto" {
                guard level == nil else { throw ValidationError("--level does not apply to --codec auto") }
                compression = .none
                floatCompression = .planes
            } else if let level {
                guard ["lz4hc", "zlib", "zstd"].contains(codec.lowercased()) else {
                    throw ValidationError("--level applies to lz4hc, zlib and zstd, not '\(codec)'")
                }
                compression = try Compression(parsing: "\(codec)-\(level)")
            } else {
                guard !codec.contains("-") else { throw ValidationError("unknown codec '\(codec)' (use --level for the level)") }
                compression = try Compression(parsing: codec)
            }
        } catch let error as CheckpointError {
            throw ValidationError("\(error.code)")
        }
        guard let shuffleMode = ShuffleMode(rawValue: shuffle) else { throw ValidationError("--shuffle must be auto, on or off, not '\(shuffle)'") }
        guard let chunk = parseSize(chunkSize), chunk >= 16, chunk <= EncodeOptions.maximumChunkSize, chunk % 16 == 0 else {
            throw ValidationError("bad --chunk-size '\(chunkSize)': a multiple of 16 bytes up to 1G, e.g. 4M")
        }
        guard threads >= 0 else { throw ValidationError("--threads must be 0 or more") }
        guard align >= 8, align <= 4096, align & (align - 1) == 0 else { throw ValidationError("--align must be a power of two in 8...4096") }
        return ConversionOptions(encode: EncodeOptions(compression: compression, shuffle: shuffleMode, chunkSizeInBytes: chunk, threads: threads,
                                                       floatCompression: floatCompression),
                                 alignment: align)
    }
}

/// Writes a one-line summary of a conversion.
func printSummary(_ summary: ConversionSummary, to output: String, seconds: Double) {
    let rate = seconds > 0 ? String(format2: Double(summary.rawBytes) / seconds / 1e9) + " GB/s" : "-"
    print("wrote \(output) (\(summary.format.rawValue)): \(summary.tensorCount) tensors, \(formatBytes(summary.rawBytes)) raw, "
          + "\(formatBytes(summary.outputBytes)) on disk, \(String(format2: seconds)) s, \(rate)")
}

/// Converts `names` (nil: all) of `input` to `output` with a progress bar and a summary line.
func runConversion(label: String, input: String, names: [String]?, output: String, write: WriteOptions, outputOptions: OutputOptions) throws {
    let options = try write.conversionOptions()
    try reportingErrors(outputOptions) {
        let file = try TensorFile.open(input)
        let progress = ProgressBar(label, output: outputOptions)
        let start = ContinuousClock.now
        let summary = try TensorConversion.convert(file, names: names, to: output, options: options, progress: progress.update)
        let elapsed = ContinuousClock.now - start
        progress.finish()
        if !outputOptions.quiet {
            printSummary(summary, to: output, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        }
    }
}

/// `ckpt convert IN OUT`: between the container, safetensors, .npz and .npy.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert between our container, safetensors, .npz and .npy files.",
        discussion: "The output format comes from OUT: .safetensors, .npz, .npy (one tensor), a directory (existing, or ending in /) for one .npy per tensor, anything else our container. Without --codec the container is uncompressed, so it can be viewed zero-copy.")

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

    @OptionGroup var outputOptions: OutputOptions

    func run() throws {
        try reportingErrors(outputOptions) {
            guard try TensorFileFormat.detect(file) == .container else {
                throw CheckpointError(.invalidField(field: "format", reason: "recover works on our container files only"), path: file)
            }
            let report: RecoveryReport
            if let output {
                report = try ContainerRecovery.recover(file, to: output)
            } else {
                report = try ContainerRecovery.repair(file)
            }
            let lost = report.fileLength - report.intactLength
            print("recovered \(output ?? file): \(report.blobNames.count) blobs from \(report.blobRecords) intact records"
                  + (lost > 0 ? ", dropped \(lost) bytes after the last intact record" : "")
                  + (report.stopReason.map { " (\($0))" } ?? "")
                  + (lost == 0 && report.keepsEverything ? ", nothing lost" : ""))
            // Damaged records are skipped, never silently: each is named, and the exit status says data was lost.
            for damaged in report.damagedRecords {
                printError("dropped damaged record at offset \(damaged.offset)" + (damaged.name.map { " (blob '\($0)')" } ?? "") + ": \(damaged.error.code)")
            }
            if !report.lostBlobs.isEmpty {
                printError("lost \(report.lostBlobs.count) blob\(report.lostBlobs.count == 1 ? "" : "s") whose newest record is damaged: "
                           + report.lostBlobs.prefix(20).joined(separator: ", ") + (report.lostBlobs.count > 20 ? ", …" : ""))
            }
            if !report.keepsEverything { throw ExitCode(Exit.data) }
        }
    }
}

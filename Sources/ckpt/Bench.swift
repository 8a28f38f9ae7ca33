import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt bench`: throughput on this machine's disk, next to the floor.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure save, open, load and view throughput on your disk, each next to its floor (sequential write/read, memcpy) in the same run.")

    @Option(help: "llm (transformer-shaped fp32, --size bytes), small (20,000 tensors of 256 B-64 KiB), lora (incremental saves: --size bytes of frozen fp32 plus 2% adapters changing every epoch, full vs incremental durable saves and loads), or a tensor file to use as the workload.")
    var workload: String = "llm"

    @Option(help: "Bytes of the llm workload, e.g. 2G.")
    var size: String = "2G"

    @Option(help: ArgumentHelp("Codec for the saves: \(codecList), or auto (planes for float dtypes, none for the rest); NAME-LEVEL (zstd-3) or --level.", valueName: "codec"))
    var codec: String = "none"

    @Option(help: "Codec level (lz4hc 1-12, zlib 1-9, zstd 1-19); same as NAME-LEVEL.")
    var level: Int?

    @Option(help: "Directory for the benchmark files (default: the temporary directory).")
    var dir: String?

    @Option(parsing: .unconditional, help: "Repetitions of each measurement after its first run (their median is the steady state; the first run is reported apart).")
    var repetitions: Int = 3

    @Flag(help: "Print one JSON object.")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        try reportingErrors(output) {
            guard let bytes = parseSize(size), bytes >= 1 << 20 else { throw ValidationError("bad --size '\(size)': at least 1M, e.g. 2G") }
            guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1, not \(repetitions)") }
            let auto = codec.lowercased() == "auto"
            if auto && level != nil { throw ValidationError("--level does not apply to --codec auto") }
            let compression = auto ? Compression.planes : try parseCodec(codec, level: level, help: "bench")
            let options = auto ? EncodeOptions.recommended() : EncodeOptions(compression: compression)
            let directory = dir ?? NSTemporaryDirectory()
            if workload == "lora" {
                try runIncremental(frozenBytes: bytes, directory: directory)
                return
            }
            let cleaned = InterruptCleanup.removeTemporariesOfDeadWriters(in: directory)
            if !cleaned.names.isEmpty && !json {
                print("removed \(plural(cleaned.names.count, "abandoned temporary", "abandoned temporaries")) (\(formatBytesShort(cleaned.bytes))) that interrupted runs left in \(directory)")
            }
            let load: BenchmarkWorkload
            switch workload {
            case "llm": load = BenchmarkWorkload.llm(size: bytes)
            case "small": load = BenchmarkWorkload.small()
            default: load = try BenchmarkWorkload.file(workload)
            }
            let status = ProgressBar("bench", output: output)
            status.countsBytes = false
            var step = 0
            let results = try CheckpointBenchmark.run(load, directory: directory, encode: options, repetitions: repetitions) { _ in
                step += 1
                status.update(step, CheckpointBenchmark.measurementCount(encode: options))
            }
            status.finish()
            if json {
                printJSON(encode(load, results))
            } else {
                let shownDirectory = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
                print("workload \(load.name): \(plural(load.tensors.count, "tensor")), \(formatBytesShort(load.totalBytes)), codec \(auto ? "auto (planes for floats)" : "\(compression)"), in \(shownDirectory)")
                print("each measurement: 1 first run (warm-up, shown apart), then the median of \(plural(repetitions, "repetition"))")
                let rows = results.map { result -> [String] in
                    let rate = result.bytes > 0 ? formatRate(bytes: result.bytes, seconds: result.seconds) : "-"
                    let floorRate = result.bytes > 0 ? result.floorSeconds.map { formatRate(bytes: result.bytes, seconds: $0) } ?? "-" : "-"
                    return [result.name, formatDuration(result.firstSeconds), formatDuration(result.seconds), rate,
                            result.bytes > 0 ? String(format2: result.cores) : "-",
                            result.floorName ?? "-", floorRate, result.ratio.map { String(format2: $0) } ?? "-"]
                }
                printTable(["measurement", "first run", "steady", "rate", "cores", "floor", "floor rate", "ours/floor"], rows, leftAligned: 1, alsoLeftAligned: [5])
                print("cores: CPU seconds (user + system, all threads) over wall seconds of the steady runs; \(Processors.available) available")
                for result in results { if let note = result.note { print("note: \(result.name): \(note)") } }
            }
        }
    }

    func encode(_ workload: BenchmarkWorkload, _ results: [BenchmarkResult]) -> JSONValue {
        .object([
            ("workload", .string(workload.name)),
            ("tensors", .integer(workload.tensors.count)),
            ("bytes", .integer(workload.totalBytes)),
            ("codec", .string(codec)),
            ("warmup_repetitions", .integer(1)),
            ("repetitions", .integer(repetitions)),
            ("results", .array(results.map { result in
                .object([
                    ("name", .string(result.name)),
                    ("seconds", .double(result.seconds)),
                    ("cpu_seconds", .double(result.cpuSeconds)),
                    ("first_seconds", .double(result.firstSeconds)),
                    ("floor_first_seconds", result.floorFirstSeconds.map { .double($0) } ?? .null),
                    ("note", result.note.map { .string($0) } ?? .null),
                    ("gb_per_s", result.gigabytesPerSecond.map { .double($0) } ?? .null),
                    ("floor", result.floorName.map { .string($0) } ?? .null),
                    ("floor_seconds", result.floorSeconds.map { .double($0) } ?? .null),
                    ("floor_gb_per_s", result.floorGigabytesPerSecond.map { .double($0) } ?? .null),
                    ("ratio", result.ratio.map { .double($0) } ?? .null),
                ])
            })),
        ])
    }

    /// `--workload lora`: full against incremental saves of one workspace, side by side.
    func runIncremental(frozenBytes: Int, directory: String) throws {
        let status = ProgressBar("bench", output: output)
        status.countsBytes = false
        let epochs = repetitions + 1
        var step = 0
        let result = try IncrementalBenchmark.run(frozenBytes: frozenBytes, epochs: epochs, directory: directory) { _ in
            step += 1
            status.update(step, epochs + 1)
        }
        status.finish()
        if json {
            printJSON(.object([
                ("workload", .string("lora")), ("total_bytes", .integer(result.totalBytes)), ("changed_bytes", .integer(result.changedBytes)),
                ("epochs", .integer(result.epochs)),
                ("full_save_seconds", .double(result.fullSaveSeconds)), ("incremental_save_seconds", .double(result.incrementalSaveSeconds)),
                ("save_speedup", .double(result.saveSpeedup)), ("incremental_file_bytes", .integer(result.incrementalFileBytes)),
                ("overhead_bytes", .integer(result.overheadBytes)),
                ("full_load_seconds", .double(result.fullLoadSeconds)), ("incremental_load_seconds", .double(result.incrementalLoadSeconds)),
                ("load_ratio", .double(result.loadRatio)),
            ]))
            return
        }
        print("lora workload: \(formatBytesShort(result.totalBytes)) (\(formatBytesShort(result.changedBytes)) of adapters change every epoch), durable saves, medians of \(result.epochs) epochs")
        print(String(format: "save   full %.3f s   incremental %.4f s   speedup %.1f×", result.fullSaveSeconds, result.incrementalSaveSeconds, result.saveSpeedup))
        print("bytes  incremental file \(result.incrementalFileBytes) = changed \(result.changedBytes) + \(result.overheadBytes) (headers, references, index)")
        print(String(format: "load   full %.3f s   incremental %.3f s   full/incremental %.2f", result.fullLoadSeconds, result.incrementalLoadSeconds, result.loadRatio))
    }
}

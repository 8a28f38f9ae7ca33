import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt bench`: throughput on this machine's disk, next to the floor.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure save, open, load and view throughput on your disk, each next to its floor (sequential write/read, memcpy) in the same run.")

    @Option(help: "llm (transformer-shaped fp32, --size bytes), small (20,000 tensors of 256 B-64 KiB), or a tensor file to use as the workload.")
    var workload: String = "llm"

    @Option(help: "Bytes of the llm workload, e.g. 2G.")
    var size: String = "2G"

    @Option(help: "Codec for the saves: none, lz4, lz4hc, zlib, zstd (with -N for a level, e.g. zstd-3), planes, or auto (planes for float dtypes).")
    var codec: String = "none"

    @Option(help: "Directory for the benchmark files (default: the temporary directory).")
    var dir: String?

    @Option(help: "Repetitions of each measurement (the median is reported).")
    var repetitions: Int = 3

    @Flag(help: "Print one JSON object.")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        guard let bytes = parseSize(size), bytes >= 1 << 20 else { throw ValidationError("bad --size '\(size)': at least 1M, e.g. 2G") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
        let options: EncodeOptions
        if codec.lowercased() == "auto" {
            options = .recommended()
        } else {
            do { options = EncodeOptions(compression: try Compression(parsing: codec)) } catch { throw ValidationError("\(error.code)") }
        }
        let directory = dir ?? NSTemporaryDirectory()
        try reportingErrors(output) {
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
                status.update(step, 6)
            }
            status.finish()
            if json {
                printJSON(encode(load, results))
            } else {
                print("workload \(load.name): \(load.tensors.count) tensors, \(formatBytes(load.totalBytes)), codec \(codec), in \(directory) (median of \(repetitions))")
                let rows = results.map { result -> [String] in
                    [result.name, String(format2: result.seconds * 1000) + " ms", result.gigabytesPerSecond.map { String(format2: $0) } ?? "-",
                     result.floorName ?? "-", result.floorGigabytesPerSecond.map { String(format2: $0) } ?? "-",
                     result.ratio.map { String(format2: $0) } ?? "-"]
                }
                printTable(["measurement", "time", "GB/s", "floor", "floor GB/s", "ours/floor"], rows, leftAligned: 1)
            }
        }
    }

    func encode(_ workload: BenchmarkWorkload, _ results: [BenchmarkResult]) -> JSONValue {
        .object([
            ("workload", .string(workload.name)),
            ("tensors", .integer(workload.tensors.count)),
            ("bytes", .integer(workload.totalBytes)),
            ("codec", .string(codec)),
            ("results", .array(results.map { result in
                .object([
                    ("name", .string(result.name)),
                    ("seconds", .double(result.seconds)),
                    ("gb_per_s", result.gigabytesPerSecond.map { .double($0) } ?? .null),
                    ("floor", result.floorName.map { .string($0) } ?? .null),
                    ("floor_seconds", result.floorSeconds.map { .double($0) } ?? .null),
                    ("floor_gb_per_s", result.floorGigabytesPerSecond.map { .double($0) } ?? .null),
                    ("ratio", result.ratio.map { .double($0) } ?? .null),
                ])
            })),
        ])
    }
}

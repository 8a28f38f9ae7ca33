import ArgumentParser
import CheckpointIO
import Foundation

/// Encodes and decodes synthetic model weights with every codec and reports
/// ratio, throughput and bit-exactness, then saves them all as one container
/// file and reads and verifies it back: a quick end-to-end check on this machine.
struct Codecs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare the codecs on synthetic fp32 and bf16 weights: ratio, throughput, bit-exactness.")

    @Option(name: .customLong("size-mib"), help: "MiB of weights per dtype.")
    var sizeMiB: Int = 64

    @Option(parsing: .unconditional, help: "Worker threads (0 = one per CPU).")
    var threads: Int = 0

    @Option(help: ArgumentHelp("Codecs to run, comma-separated, each NAME or NAME-LEVEL: \(codecList).", valueName: "codecs"))
    var codecs: String = "none,planes,lz4,zstd-1,zstd-3,zlib-1,lz4hc-9"

    @OptionGroup var output: OutputOptions

    mutating func run() throws {
        try reportingErrors(output) {
            guard sizeMiB > 0 else { throw ValidationError("--size-mib must be positive, not \(sizeMiB)") }
            guard threads >= 0 else { throw ValidationError("--threads must be ≥ 0 (0 = one per CPU), not \(threads)") }
            let compressions = try codecs.split(separator: ",").map { try parseCodec(String($0), level: nil, help: "codecs") }
            try compare(compressions)
        }
    }

    private func compare(_ compressions: [Compression]) throws {
        let count = sizeMiB << 20
        var rng = SyntheticData(seed: 2026)
        let weights: [(DType, [UInt8])] = [
            (.float32, rng.float32Weights(count: count / 4)),
            (.bfloat16, rng.bfloat16Weights(count: count / 2)),
        ]
        print("Codec comparison: \(sizeMiB) MiB of normal(0, 0.02) weights per dtype, CRC32C: \(CRC32C.implementation)")
        print("(one run each, fresh output buffers included; `make bench` has steady-state figures next to their floors)")
        print("")
        let columns = ["dtype", "codec", "filter", "stored", "ratio", "encode", "decode", "bit-exact"]
        var rows: [[String]] = []
        for (dtype, bytes) in weights {
            let shape = try Shape([bytes.count / dtype.elementSizeInBytes!])
            for compression in compressions {
                let options = EncodeOptions(compression: compression, threads: threads)
                var encoded: [UInt8] = []
                let encodeTime = try measure {
                    encoded = try bytes.withUnsafeBytes { try BlobEncoder.encode($0, name: "weights", dtype: dtype, shape: shape, options: options) }
                }
                var decoded: DecodedBlob?
                let decodeTime = try measure {
                    decoded = try encoded.withUnsafeBytes { try BlobDecoder.decode($0, options: DecodeOptions(threads: threads)) }
                }
                guard let decoded else { continue }
                let header = decoded.header
                rows.append([
                    dtype.name, compression.description, header.filter.description,
                    formatBytesShort(header.storedSizeInBytes),
                    String(format2: Double(bytes.count) / Double(max(1, header.storedSizeInBytes))),
                    formatRate(bytes: bytes.count, seconds: encodeTime),
                    formatRate(bytes: bytes.count, seconds: decodeTime),
                    decoded.bytes == bytes ? "yes" : "NO",
                ])
                if decoded.bytes != bytes {
                    throw CheckpointError(.invalidState(reason: "round trip of \(dtype) with \(compression) was not bit-exact"))
                }
            }
        }
        printTable(columns, rows)
        try containerRoundTrip(weights, codecs: compressions)
    }

    /// Saves the weights in every codec as one container file, reopens it, reads
    /// every blob back through mmap and pread, and verifies every checksum.
    private func containerRoundTrip(_ weights: [(DType, [UInt8])], codecs: [Compression]) throws {
        let directory = joinPath(NSTemporaryDirectory(), "ckpt-codecs-\(getpid())")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/demo.ckpt"
        let writer = try ContainerWriter.create(at: path, options: WriterOptions(durability: .fileData))
        writer.metadata = ["producer": "ckpt codecs", "epoch": "1"]
        for (dtype, bytes) in weights {
            let shape = try Shape([bytes.count / dtype.elementSizeInBytes!])
            try bytes.withUnsafeBytes { raw in
                try writer.write(codecs.map { codec in
                    BlobSource(name: "\(dtype.name.lowercased()).\(codec)", dtype: dtype, shape: shape, bytes: raw,
                               encode: EncodeOptions(compression: codec, threads: threads))
                })
            }
        }
        try writer.commit()
        var exact = true
        for mode in [ReadMode.mmap, .pread] {
            let reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode, threads: threads))
            for (dtype, bytes) in weights {
                for codec in codecs where try reader.read("\(dtype.name.lowercased()).\(codec)") != bytes { exact = false }
            }
        }
        let reader = try ContainerReader.open(path)
        let damaged = reader.verify().filter { $0.error != nil }
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        print("")
        print("Container: \(plural(reader.count, "blob")), \(formatBytesShort(size)), committed with fdatasync; " +
              "read back through mmap and pread: \(exact ? "bit-exact" : "NOT bit-exact"); verify: \(damaged.isEmpty ? "all checksums hold" : "\(damaged.count) damaged")")
        if !exact || !damaged.isEmpty { throw CheckpointError(.invalidState(reason: "container round trip failed"), path: path) }
    }

    private func measure(_ body: () throws -> Void) throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        try body()
        let elapsed = clock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }
}

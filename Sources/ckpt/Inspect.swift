import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt inspect FILE`: what a tensor file holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a tensor file's format, metadata and blobs (container, safetensors, .npy, .npz, a directory of .npy).")

    @Argument(help: "The file (or directory of .npy files).")
    var file: String

    @Flag(help: "Print one JSON object: format, version, metadata, blobs.")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        try reportingErrors(output) {
            let tensors = try TensorFile.open(file)
            if json {
                printJSON(inspection(tensors))
            } else {
                printHuman(tensors)
            }
        }
    }

    func inspection(_ file: TensorFile) -> JSONValue {
        func optional<T: BinaryInteger>(_ value: T?) -> JSONValue { value.map { JSONValue.integer($0) } ?? .null }
        let blobs: [JSONValue] = file.entries.map { entry in
            .object([
                ("name", .string(entry.name)),
                ("dtype", .string(entry.dtype.name)),
                ("shape", .array(entry.shape.dimensions.map { .integer($0) })),
                ("codec", entry.codec.map { .string($0) } ?? .null),
                ("filter", entry.filter.map { .string($0) } ?? .null),
                ("raw_bytes", .integer(entry.rawBytes)),
                ("stored_bytes", optional(entry.storedBytes)),
                ("crc32c", optional(entry.crc32c)),
                ("offset", optional(entry.offset)),
            ])
        }
        let metadata = file.metadata.keys.sorted().map { ($0, JSONValue.string(file.metadata[$0]!)) }
        return .object([
            ("format", .string(file.format.rawValue)),
            ("version", file.version.map { .string($0) } ?? .null),
            ("metadata", .object(metadata)),
            ("notes", .array(file.notes.map { .string($0) })),
            ("blobs", .array(blobs)),
        ])
    }

    func printHuman(_ file: TensorFile) {
        let raw = file.entries.reduce(0) { $0.addingReportingOverflow($1.rawBytes).overflow ? Int.max : $0 + $1.rawBytes }
        let stored = file.entries.reduce(0) { sum, entry in
            let bytes = entry.storedBytes ?? entry.rawBytes
            return sum.addingReportingOverflow(bytes).overflow ? Int.max : sum + bytes
        }
        print("file:     \(file.path)")
        print("format:   \(file.format.rawValue)\(file.version.map { " (version \($0))" } ?? "")")
        print("blobs:    \(file.entries.count), \(formatBytes(raw)) raw, \(formatBytes(stored)) stored")
        if file.tornBytes > 0 {
            print("warning:  torn file: \(file.tornBytes) bytes after the last complete commit (shown); `ckpt recover` cuts them")
        }
        for note in file.notes { print("note:     \(note)") }
        if !file.metadata.isEmpty {
            print("metadata:")
            for key in file.metadata.keys.sorted() {
                let value = file.metadata[key]!
                print("  \(key) = \(value.count > 100 ? String(value.prefix(97)) + "..." : value)")
            }
        }
        guard !file.entries.isEmpty else { return }
        print("")
        let rows = file.entries.map { entry -> [String] in
            let storedBytes = entry.storedBytes ?? entry.rawBytes
            return [
                entry.name, entry.dtype.name, entry.shape.description, entry.codec ?? "-", entry.filter ?? "-",
                formatBytes(entry.rawBytes), formatBytes(storedBytes),
                storedBytes > 0 ? String(format2: Double(entry.rawBytes) / Double(storedBytes)) : "-",
                entry.crc32c.map { String(format: "%08X", $0) } ?? "-",
                entry.offset.map(String.init) ?? "-",
            ]
        }
        printTable(["name", "dtype", "shape", "codec", "filter", "raw", "stored", "ratio", "crc32c", "offset"], rows, leftAligned: 5)
    }
}

import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt inspect FILE`: what a tensor file (or a checkpoint directory) holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a tensor file's format, metadata and tensors (container, safetensors, .npy, .npz, a directory of .npy, Caffe2 minidb), or a checkpoint directory's epochs.",
        discussion: """
            The header gives the file's size on disk and the parameter count per dtype. The table fits 100 columns (--wide adds raw bytes, filter and offset; long names are shortened in the middle). A checkpoint directory written by the managers (it has checkpoint_metadata.json) is listed epoch by epoch: complete, damaged, unrecorded, the resume point, and the epoch retention keeps because a run resumed from it.
            """)

    @Argument(help: "The file, directory of .npy files, or checkpoint directory.")
    var file: String

    @Option(help: ArgumentHelp("Only the tensors whose names match this shell pattern (*, ?, [...]), e.g. 'model.layers.*.mlp.*'.", valueName: "glob"))
    var filter: String?

    @Flag(help: "Add min, max, mean, std and NaN/Inf counts of every F16, BF16, F32 and F64 tensor (reads every such tensor).")
    var stats = false

    @Flag(help: "All columns (raw bytes, filter, offset), names never shortened.")
    var wide = false

    @Flag(help: "Print one JSON object: path, format, version, file size, totals, metadata, blobs (CRCs as the table's hex strings).")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        if S3Paths.isS3(file) {
            try reportingErrors(output) {
                try S3Paths.withLocalInput(file, output: output) { local in
                    var local_ = self
                    local_.file = local
                    try local_.run()
                }
            }
            return
        }
        try reportingErrors(output) {
            if CheckpointDirectory.isCheckpointDirectory(file) {
                let directory = try CheckpointDirectory.open(file)
                if json { printJSON(encode(directory)) } else { printDirectory(directory) }
                return
            }
            let tensors = try TensorFile.open(file)
            let entries = tensors.entries.filter { entry in filter.map { fnmatch($0, entry.name, 0) == 0 } ?? true }
            var statistics: [BlobName: TensorStatistics] = [:]
            if stats {
                for entry in entries where TensorStatistics.supports(entry.dtype) {
                    statistics[BlobName(entry.name)] = try tensors.withUnsafeBytes(of: entry.name) { TensorStatistics($0, dtype: entry.dtype) }
                }
            }
            if json {
                printJSON(inspection(tensors, entries, statistics))
            } else {
                printHuman(tensors, entries, statistics)
            }
        }
    }

    // MARK: Files

    var fileSize: Int {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else { return 0 }
        if !isDirectory.boolValue { return (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0 }
        let enumerator = FileManager.default.enumerator(atPath: file)
        var total = 0
        while let name = enumerator?.nextObject() as? String {
            total += (try? FileManager.default.attributesOfItem(atPath: joinPath(file, name))[.size] as? Int) ?? 0
        }
        return total
    }

    struct Totals {
        var tensors = 0, parameters = 0, raw = 0, stored = 0
        var parametersByDType: [(String, Int)] = []
    }

    func totals(_ entries: [TensorEntry]) -> Totals {
        var totals = Totals()
        var byDType: [String: Int] = [:]
        for entry in entries {
            totals.tensors += 1
            totals.parameters &+= entry.shape.elementCount
            totals.raw &+= entry.rawBytes
            totals.stored &+= entry.storedBytes ?? entry.rawBytes
            byDType[entry.dtype.name, default: 0] &+= entry.shape.elementCount
        }
        totals.parametersByDType = byDType.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        return totals
    }

    func inspection(_ file: TensorFile, _ entries: [TensorEntry], _ statistics: [BlobName: TensorStatistics]) -> JSONValue {
        func optional<T: BinaryInteger>(_ value: T?) -> JSONValue { value.map { JSONValue.integer($0) } ?? .null }
        func number(_ value: Double?) -> JSONValue { value.map { $0.isFinite ? JSONValue.double($0) : .null } ?? .null }
        let blobs: [JSONValue] = entries.map { entry in
            var members: [(String, JSONValue)] = [
                ("name", .string(entry.name)),
                ("dtype", .string(entry.dtype.name)),
                ("shape", .array(entry.shape.dimensions.map { .integer($0) })),
                ("parameters", .integer(entry.shape.elementCount)),
                ("codec", entry.codec.map { .string($0) } ?? .null),
                ("filter", entry.filter.map { .string($0) } ?? .null),
                ("raw_bytes", .integer(entry.rawBytes)),
                ("stored_bytes", optional(entry.storedBytes)),
                ("crc32c", entry.crc32c.map { .string(hex($0)) } ?? .null),
                ("offset", optional(entry.offset)),
                ("reference", entry.referenceFile.map { file in
                    .object([("file", .string(file)), ("record_offset", optional(entry.referenceRecordOffset))])
                } ?? .null),
            ]
            if stats {
                members.append(("stats", statistics[BlobName(entry.name)].map { s in
                    .object([("min", number(s.minimum)), ("max", number(s.maximum)), ("mean", number(s.mean)), ("std", number(s.standardDeviation)),
                             ("nan", .integer(s.nanCount)), ("inf", .integer(s.infinityCount))])
                } ?? .null))
            }
            return .object(members)
        }
        let metadata = file.metadata.keys.sorted().map { ($0, JSONValue.string(file.metadata[$0]!)) }
        let sums = totals(entries)
        let version: JSONValue = file.version.map { text in Double(text) != nil ? .number(text) : .string(text) } ?? .null
        return .object([
            ("path", .string(file.path)),
            ("format", .string(file.format.rawValue)),
            ("version", version),
            ("file_bytes", .integer(fileSize)),
            ("torn_bytes", .integer(file.tornBytes)),
            ("totals", .object([
                ("tensors", .integer(sums.tensors)),
                ("parameters", .integer(sums.parameters)),
                ("parameters_by_dtype", .object(sums.parametersByDType.map { ($0.0, .integer($0.1)) })),
                ("raw_bytes", .integer(sums.raw)),
                ("stored_bytes", .integer(sums.stored)),
            ])),
            ("metadata", .object(metadata)),
            ("notes", .array(file.notes.map { .string($0) })),
            ("blobs", .array(blobs)),
        ])
    }

    func hex(_ value: UInt32) -> String { String(format: "%08X", value) }

    func printHuman(_ file: TensorFile, _ entries: [TensorEntry], _ statistics: [BlobName: TensorStatistics]) {
        let sums = totals(entries)
        print("file:       \(file.path), \(formatBytesShort(fileSize)) on disk")
        print("format:     \(file.format.rawValue)\(file.version.map { " (version \($0))" } ?? "")")
        let filtered = filter.map { " matching '\($0)' (of \(file.entries.count))" } ?? ""
        print("tensors:    \(sums.tensors)\(filtered), \(formatBytesShort(sums.raw)) raw, \(formatBytesShort(sums.stored)) stored")
        let byDType = sums.parametersByDType.map { "\(groupedDigits($0.1)) \($0.0)" }.joined(separator: ", ")
        print("parameters: \(groupedDigits(sums.parameters))" + (sums.parametersByDType.count > 1 ? " (\(byDType))" : sums.parametersByDType.first.map { " \($0.0)" } ?? ""))
        if file.tornBytes > 0 {
            print("warning:    torn file: \(file.tornBytes) bytes after the last complete commit (shown); `ckpt recover \(file.path)` cuts them")
        }
        for note in file.notes { print("note:     \(note)") }
        if !file.metadata.isEmpty {
            print("metadata:")
            for key in file.metadata.keys.sorted() {
                let value = file.metadata[key]!
                print("  \(key) = \(value.count > 90 ? String(value.prefix(87)) + "..." : value)")
            }
        }
        guard !entries.isEmpty else { return }
        print("")
        var columns = wide ? ["name", "dtype", "shape", "codec", "filter", "raw", "stored", "ratio", "crc32c", "offset"]
                           : ["name", "dtype", "shape", "codec", "stored", "ratio", "crc32c"]
        var rows = entries.map { entry -> [String] in
            let storedBytes = entry.storedBytes ?? entry.rawBytes
            let ratio = storedBytes > 0 ? String(format2: Double(entry.rawBytes) / Double(storedBytes)) : "-"
            let crc = entry.crc32c.map(hex) ?? "-"
            if wide {
                return [entry.name, entry.dtype.name, entry.shape.description, entry.codec ?? "-", entry.filter ?? "-",
                        formatBytesShort(entry.rawBytes), formatBytesShort(storedBytes), ratio, crc, entry.offset.map(String.init) ?? "-"]
            }
            let codec = (entry.codec ?? "-") + (entry.filter.map { $0 == "none" ? "" : "+" + $0 } ?? "")
            return [entry.name, entry.dtype.name, entry.shape.description, codec, formatBytesShort(storedBytes), ratio, crc]
        }
        let leftAligned = wide ? 5 : 4
        if stats {
            columns += ["min", "max", "mean", "std", "nan", "inf"]
            for (index, entry) in entries.enumerated() {
                if let s = statistics[BlobName(entry.name)] {
                    rows[index] += [s.minimum, s.maximum, s.mean, s.standardDeviation].map { $0.map(shortNumber) ?? "-" } + [String(s.nanCount), String(s.infinityCount)]
                } else {
                    rows[index] += Array(repeating: "-", count: 6)
                }
            }
        }
        if !wide && !stats {
            // Fit 100 columns: shorten the longest names in the middle.
            let others = columns.indices.dropFirst().map { column in ([columns[column]] + rows.map { $0[column] }).map(\.count).max()! }
            let room = max(16, 100 - others.reduce(0, +) - 2 * others.count)
            for index in rows.indices where rows[index][0].count > room {
                let name = rows[index][0]
                rows[index][0] = String(name.prefix((room - 1) / 2)) + "…" + String(name.suffix(room - 1 - (room - 1) / 2))
            }
        }
        printTable(columns, rows, leftAligned: leftAligned)
        let references = entries.filter { $0.referenceFile != nil }
        if !references.isEmpty {
            let files = Set(references.compactMap(\.referenceFile)).sorted()
            print("")
            print("references: \(references.count) of \(entries.count) blobs are stored in other files (\(files.joined(separator: ", "))):")
            for entry in references {
                print("  \(entry.name) → \(entry.referenceFile!), record at offset \(entry.referenceRecordOffset.map { String($0) } ?? "?")")
            }
        }
    }

    /// 1234567 as `1,234,567`.
    func groupedDigits(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var result = ""
        for (index, character) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { result += "," }
            result.append(character)
        }
        return (value < 0 ? "-" : "") + result
    }

    /// Four significant digits, in exponent form outside 0.001...99999.
    func shortNumber(_ value: Double) -> String {
        if value == 0 { return "0" }
        let magnitude = abs(value)
        return magnitude >= 1e-3 && magnitude < 1e5 ? String(format: "%.4g", value) : String(format: "%.3e", value)
    }

    // MARK: Checkpoint directories

    func printDirectory(_ directory: CheckpointDirectory) {
        let recorded = directory.epochs.filter { $0.status != .unrecorded }
        print("checkpoint directory: \(directory.path) (\(directory.dbType); metadata: \(DurableMetadataHandler.fileName))")
        print("epochs:               \(recorded.count) recorded, \(recorded.filter { $0.status == .complete }.count) complete"
              + (directory.epochs.count > recorded.count ? ", \(directory.epochs.count - recorded.count) unrecorded on disk" : ""))
        print("resume point:         " + (directory.resumeEpoch.map { "epoch \($0)" } ?? "none (no recorded epoch is complete)"))
        if let resumed = directory.resumedFrom { print("resumed from:         epoch \(resumed) (retention keeps it)") }
        if !directory.temporaries.isEmpty {
            print("temporaries:          \(directory.temporaries.count) (writes in flight, or left by killed ones: the next save or ckpt write removes those)")
        }
        guard !directory.epochs.isEmpty else { return }
        print("")
        let rows = directory.epochs.map { epoch -> [String] in
            var notes: [String] = []
            if epoch.isResumePoint { notes.append("resume point") }
            if epoch.isResumedFrom { notes.append("resumed from: kept by retention") }
            if epoch.status == .unrecorded {
                notes.append(epoch.isReferenced ? "not in the metadata, kept: recorded epochs' blob references point into it (incremental saves)"
                                                : "not in the metadata: a save killed before it was recorded, or awaiting retention")
            }
            for file in epoch.files where !file.isComplete { notes.append(file.exists ? "\(file.node): torn" : "\(file.node): missing") }
            let size = epoch.files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1.path)[.size] as? Int) ?? 0) }
            return [String(epoch.epoch), epoch.status.rawValue, epoch.files.map { ($0.path as NSString).lastPathComponent }.joined(separator: " "),
                    formatBytesShort(size), epoch.metric.map { String(format: "%g", $0) } ?? "-", notes.joined(separator: "; ")]
        }
        printTable(["epoch", "status", "files", "size", "metric", "notes"], rows, leftAligned: 3, alsoLeftAligned: [5])
    }

    func encode(_ directory: CheckpointDirectory) -> JSONValue {
        .object([
            ("path", .string(directory.path)),
            ("format", .string("checkpoint-directory")),
            ("db_type", .string(directory.dbType)),
            ("resume_epoch", directory.resumeEpoch.map { .integer($0) } ?? .null),
            ("resumed_from", directory.resumedFrom.map { .integer($0) } ?? .null),
            ("temporaries", .array(directory.temporaries.map { .string($0) })),
            ("epochs", .array(directory.epochs.map { epoch in
                .object([
                    ("epoch", .integer(epoch.epoch)),
                    ("status", .string(epoch.status.rawValue)),
                    ("metric", epoch.metric.map { .double($0) } ?? .null),
                    ("resume_point", .bool(epoch.isResumePoint)),
                    ("files", .array(epoch.files.map { file in
                        .object([("node", .string(file.node)), ("path", .string(file.path)), ("exists", .bool(file.exists)), ("complete", .bool(file.isComplete))])
                    })),
                ])
            })),
        ])
    }
}

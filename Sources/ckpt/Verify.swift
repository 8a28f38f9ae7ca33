import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt verify FILE…`: every checksum of every blob.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every checksum of every blob; exit 0 only when all hold.",
        discussion: """
            Containers: every chunk and raw CRC32C; a torn file is reported with what `ckpt recover` would keep. .npz: every member's CRC-32. safetensors, .npy and Caffe2 minidb carry no checksums: only their structure is checked.

            A checkpoint directory written by the managers (it has checkpoint_metadata.json) is checked as a whole: every file its metadata names, with the epochs listed as `ckpt inspect` lists them; checkpoint_metadata.json itself is checked as metadata, and lock files are skipped, so `ckpt verify run1/*` works too.
            """)

    @Argument(help: "The files (or checkpoint directories) to check.")
    var files: [String]

    @Flag(help: "Print one JSON object with a report per file.")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        if files.contains(where: S3Paths.isS3) {
            // s3:// files are downloaded one at a time and checked like local files.
            var status: Int32 = 0
            for file in files {
                do {
                    try S3Paths.withLocalInput(file, output: output) { local in
                        var single = self
                        single.files = [local]
                        try single.run()
                    }
                } catch let error as ExitCode {
                    status = max(status, error.rawValue)
                } catch let error as CheckpointError {
                    printError("ckpt: error: \(error)")
                    status = max(status, exitStatus(for: error))
                }
            }
            if status != 0 { throw ExitCode(status) }
            return
        }
        var status: Int32 = 0
        var reports: [JSONValue] = []
        let progress = ProgressBar("verify", output: output)
        progress.countsBytes = false
        func failed(_ file: String, _ error: CheckpointError) {
            status = max(status, exitStatus(for: error))
            if json {
                reports.append(.object([("path", .string(file)), ("ok", .bool(false)), ("error", .string("\(error)"))]))
            } else {
                progress.finish()
                printError("ckpt: error: \(error)")
            }
        }
        func checked(_ report: VerificationReport) {
            if !report.isIntact { status = max(status, Exit.data) }
            if json { reports.append(encode(report)) } else { progress.finish(); printHuman(report) }
        }
        for (index, file) in files.enumerated() {
            progress.update(index, files.count)
            do throws(CheckpointError) {
                if CheckpointDirectory.isCheckpointDirectory(file) || CheckpointDirectory.isMetadataFile(file) {
                    let directory = try CheckpointDirectory.open(file)
                    let results = CheckpointDirectory.isMetadataFile(file) ? [] : directory.verify()
                    let missing = results.filter { if case .failure = $0.result { return true } else { return false } }.count
                    let recorded = directory.epochs.filter { $0.status != .unrecorded }
                    if !json {
                        progress.finish()
                        let what = CheckpointDirectory.isMetadataFile(file) ? "checkpoint metadata" : "checkpoint directory"
                        print("\(missing == 0 && recorded.allSatisfy { $0.status == .complete } ? "OK      " : "DAMAGED ") \(file): \(what), "
                              + "\(plural(recorded.count, "recorded epoch")), resume point: \(directory.resumeEpoch.map { "epoch \($0)" } ?? "none")"
                              + (CheckpointDirectory.isMetadataFile(file) ? "" : ", \(plural(results.count, "file")) checked"))
                    }
                    if CheckpointDirectory.isMetadataFile(file) {
                        // Only the files' presence and structure: `ckpt verify DIR` reads them.
                        for epoch in recorded where epoch.status != .complete {
                            status = max(status, Exit.data)
                            if !json { print("DAMAGED  \(file): epoch \(epoch.epoch): " + epoch.files.filter { !$0.isComplete }.map { "\($0.path) \($0.exists ? "torn" : "missing")" }.joined(separator: ", ")) }
                        }
                        if json { reports.append(.object([("path", .string(file)), ("format", .string("checkpoint-metadata")), ("ok", .bool(recorded.allSatisfy { $0.status == .complete }))])) }
                        continue
                    }
                    for (_, checkedFile, result) in results {
                        switch result {
                        case let .success(report): checked(report)
                        case let .failure(error): failed(checkedFile.path, error)
                        }
                    }
                    continue
                }
                if file.hasSuffix(".lock"), let size = try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int, size == 0 {
                    if !json { progress.finish(); print("SKIPPED  \(file): a writer's lock file, not a checkpoint") }
                    continue
                }
                checked(try TensorVerification.verify(file))
            } catch {
                failed(file, error)
            }
        }
        progress.finish()
        if json { printJSON(.object([("ok", .bool(status == 0)), ("files", .array(reports))])) }
        if status != 0 { throw ExitCode(status) }
    }

    func hex(_ value: UInt32?) -> String { value.map { String(format: "0x%08X", $0) } ?? "?" }

    func printHuman(_ report: VerificationReport) {
        if report.isIntact {
            let what = report.hasChecksums ? "all checksums hold" : "structure valid (this format has no checksums)"
            print("OK       \(report.path): \(plural(report.blobCount, "blob")), \(what)")
            return
        }
        if let torn = report.torn {
            print("TORN     \(report.path): \(torn.reason)")
            print("         recovery (`ckpt recover`) would keep \(torn.recoverableBlobs.count) blobs, the first \(torn.intactLength) of \(torn.fileLength) bytes"
                  + (torn.recoverableBlobs.isEmpty ? "" : ": " + torn.recoverableBlobs.prefix(10).joined(separator: ", ") + (torn.recoverableBlobs.count > 10 ? ", …" : "")))
        }
        let checksum = report.format == .npz ? "CRC-32" : "CRC32C"
        for damage in report.damaged {
            let chunk = damage.chunk.map { ", chunk \($0)" } ?? ""
            let crc = damage.expectedCRC != nil ? ": expected \(checksum) \(hex(damage.expectedCRC)), actual \(hex(damage.actualCRC))" : ": \(damage.error.code)"
            print("DAMAGED  \(report.path): blob '\(damage.blob)'\(chunk)\(crc)")
        }
    }

    func encode(_ report: VerificationReport) -> JSONValue {
        let damaged: [JSONValue] = report.damaged.map { damage in
            .object([
                ("blob", .string(damage.blob)),
                ("chunk", damage.chunk.map { .integer($0) } ?? .null),
                ("expected_crc32c", damage.expectedCRC.map { .integer($0) } ?? .null),
                ("actual_crc32c", damage.actualCRC.map { .integer($0) } ?? .null),
                ("error", .string("\(damage.error)")),
            ])
        }
        let torn: JSONValue = report.torn.map { torn in
            .object([
                ("reason", .string(torn.reason)),
                ("recoverable_blobs", .array(torn.recoverableBlobs.map { .string($0) })),
                ("intact_bytes", .integer(torn.intactLength)),
                ("file_bytes", .integer(torn.fileLength)),
            ])
        } ?? .null
        return .object([
            ("path", .string(report.path)),
            ("format", .string(report.format.rawValue)),
            ("ok", .bool(report.isIntact)),
            ("checksums", .bool(report.hasChecksums)),
            ("blobs", .integer(report.blobCount)),
            ("damaged", .array(damaged)),
            ("torn", torn),
        ])
    }
}

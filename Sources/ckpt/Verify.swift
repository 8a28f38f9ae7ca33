import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt verify FILE…`: every checksum of every blob.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every checksum of every blob; exit 0 only when all hold.",
        discussion: "Containers: every chunk and raw CRC32C; a torn file is reported with what `ckpt recover` would keep. .npz: every member's CRC-32. safetensors and .npy carry no checksums: only their structure is checked.")

    @Argument(help: "The files to check.")
    var files: [String]

    @Flag(help: "Print one JSON object with a report per file.")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        var status: Int32 = 0
        var reports: [JSONValue] = []
        let progress = ProgressBar("verify", output: output)
        for (index, file) in files.enumerated() {
            progress.update(index, files.count)
            do {
                let report = try TensorVerification.verify(file)
                if !report.isIntact { status = max(status, Exit.data) }
                if json { reports.append(encode(report)) } else { progress.finish(); printHuman(report) }
            } catch {
                status = max(status, exitStatus(for: error))
                if json {
                    reports.append(.object([("path", .string(file)), ("ok", .bool(false)), ("error", .string("\(error)"))]))
                } else {
                    progress.finish()
                    printError("ckpt: error: \(error)")
                }
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
            print("OK       \(report.path): \(report.blobCount) blobs, \(what)")
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

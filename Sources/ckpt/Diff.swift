import ArgumentParser
import CheckpointIO
import Foundation

/// `ckpt diff A B`: which tensors are new, removed, identical or changed.
struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two tensor files (any supported format): blobs new, removed, identical or changed, with the largest absolute difference of changed float blobs.",
        discussion: """
            A blob is identical when both files are containers and it is the same stored record (an incremental checkpoint's reference to the other file), when both raw CRC32Cs are known and equal, or else when its bytes are equal. Exit status: 0 when every blob is identical, 1 when any differs, 65/74 on errors.
            """)

    @Argument(help: "The first file.")
    var first: String

    @Argument(help: "The second file.")
    var second: String

    @Flag(help: "Also list identical blobs.")
    var all = false

    @Flag(help: "Print one JSON object: counts and every blob's status.")
    var json = false

    @OptionGroup var output: OutputOptions

    func run() throws {
        var differs = false
        try reportingErrors(output) {
            let diff = try TensorDiff.compare(first, second)
            differs = diff.entries.contains { $0.status != .identical }
            if json {
                printJSON(.object([
                    ("first", .string(first)), ("second", .string(second)),
                    ("counts", .object([TensorDiff.Status.new, .removed, .identical, .changed].map { ($0.rawValue, .integer(diff.count($0))) })),
                    ("blobs", .array(diff.entries.map { entry in
                        .object([("name", .string(entry.name)), ("status", .string(entry.status.rawValue)), ("reason", .string(entry.reason)),
                                 ("max_abs_diff", entry.maximumAbsoluteDifference.map { $0.isFinite ? JSONValue.double($0) : .string("inf") } ?? .null)])
                    })),
                ]))
                return
            }
            print("\(diff.count(.new)) new, \(diff.count(.removed)) removed, \(diff.count(.identical)) identical, \(diff.count(.changed)) changed")
            for entry in diff.entries where all || entry.status != .identical {
                let difference = entry.maximumAbsoluteDifference.map { ", max |a-b| = \($0)" } ?? ""
                print("\(entry.status.rawValue.uppercased().padding(toLength: 10, withPad: " ", startingAt: 0)) \(entry.name): \(entry.reason)\(difference)")
            }
        }
        if differs { throw ExitCode(1) }
    }
}

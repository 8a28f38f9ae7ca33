import ArgumentParser
import CheckpointIO
import CheckpointS3
import Foundation

/// `s3://BUCKET/KEY` arguments: an input is downloaded (parallel ranged GETs)
/// into a temporary directory and read there; an output is written there and
/// uploaded (multipart, completed only when whole). Configuration comes from
/// the AWS environment variables and files (``S3Configuration/fromEnvironment(_:overrides:)``).
enum S3Paths {
    static func isS3(_ path: String) -> Bool { path.hasPrefix("s3://") }

    nonisolated(unsafe) private static var cached: S3CheckpointStorage?

    static func storage() throws(CheckpointError) -> S3CheckpointStorage {
        if let cached { return cached }
        let storage = try S3CheckpointStorage.registerFromEnvironment()
        cached = storage
        return storage
    }

    /// A new temporary directory, removed after `body`.
    static func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
        let directory = NSTemporaryDirectory() + "ckpt-s3-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try body(directory)
    }

    /// The local path to read `path` from: `path` itself, or a downloaded copy (with a progress bar) while `body` runs.
    static func withLocalInput<R>(_ path: String, output: OutputOptions, _ body: (String) throws -> R) throws -> R {
        guard isS3(path) else { return try body(path) }
        let storage = try storage()
        return try withTemporaryDirectory { directory in
            let name = (path as NSString).lastPathComponent
            let local = directory + "/" + (name.isEmpty ? "object" : name)
            let progress = ProgressBar("download", output: output)
            try storage.download(path, to: local, progress: progress.update)
            progress.finish()
            return try body(local)
        }
    }

    /// The local path to write `path` to: `path` itself, or a temporary file uploaded (with a progress bar) after `body`.
    /// An existing object is refused unless `force`.
    static func withLocalOutput(_ path: String, force: Bool, output: OutputOptions, _ body: (String) throws -> Void) throws {
        guard isS3(path) else { return try body(path) }
        let storage = try storage()
        if !force, try storage.objectExists(path) { throw usageError("'\(path)' exists; pass --force (-f) to replace it") }
        try withTemporaryDirectory { directory in
            let local = directory + "/" + (path as NSString).lastPathComponent
            try body(local)
            let progress = ProgressBar("upload", output: output)
            try storage.upload(fileAt: local, to: path, progress: progress.update)
            progress.finish()
            if !output.quiet { print("uploaded \(path)") }
        }
    }
}

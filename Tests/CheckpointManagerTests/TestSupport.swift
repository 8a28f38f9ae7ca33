@testable import CheckpointIO
import Foundation
import Testing

/// A temporary directory removed when the closure returns, whatever happens.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    // mkdtemp replaces the template's six trailing X characters.
    var template = Array((NSTemporaryDirectory() + "/ckpt-manager-test-" + String(repeating: "X", count: 6)).utf8CString)
    guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw CheckpointError(.system(call: "mkdtemp", errno: errno))
    }
    let directory = String(cString: created)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    return try body(directory)
}

func fileBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
func writeBytes(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }
func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }
func directoryListing(_ path: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }

/// The directory holding the built products (the test bundle's, where SwiftPM also puts executables).
func productsDirectory() -> URL {
    let bundle = Bundle.allBundles.first { $0.bundlePath.hasSuffix(".xctest") }
    if let bundle { return bundle.bundleURL.deletingLastPathComponent() }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// An Int64 scalar blob's value.
func int64(_ workspace: Workspace, _ name: String) throws -> Int64 {
    try workspace.fetchBlob(name).scalars(as: Int64.self)[0]
}

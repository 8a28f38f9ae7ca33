@testable import CheckpointIO
import Foundation
import Testing

/// A temporary directory removed when the closure returns, whatever happens.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    let directory = NSTemporaryDirectory() + "/ckpt-cli-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    return try body(directory)
}

/// The directory holding the built products (where SwiftPM puts `ckpt` beside the tests).
func productsDirectory() -> URL {
    if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) { return bundle.bundleURL.deletingLastPathComponent() }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs an executable to completion and captures its output.
func run(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> Run {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes while the process runs, so a full pipe cannot block it.
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errBox.data = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    let errData = errBox.data
    process.waitUntilExit()
    return Run(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// Runs the built `ckpt`.
func ckpt(_ arguments: String..., in directory: String? = nil) throws -> Run {
    try run(productsDirectory().appendingPathComponent("ckpt").path, arguments, in: directory)
}

/// Python 3 with numpy and safetensors, or nil (the interop tests then say they are skipped).
let python: String? = {
    for candidate in ["/usr/bin/env"] {
        if let result = try? run(candidate, ["python3", "-c", "import numpy, safetensors"]), result.status == 0 { return candidate }
    }
    return nil
}()

/// Runs a Python script with python3 (through /usr/bin/env); fails the test on a non-zero status.
@discardableResult
func runPython(_ script: String, in directory: String) throws -> String {
    let result = try run(python ?? "/usr/bin/env", ["python3", "-c", script], in: directory)
    guard result.status == 0 else {
        Issue.record("python failed (\(result.status)): \(result.stderr)")
        return result.stdout
    }
    return result.stdout
}

func fileBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
func writeBytes(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

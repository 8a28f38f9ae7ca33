@testable import CheckpointIO
import Foundation
import Testing

/// Runs the built `ckpt`, killing it after `seconds` (a hang fails the test instead of the suite).
func ckptWithTimeout(_ arguments: [String], seconds: Double = 20) throws -> (run: Run, timedOut: Bool) {
    let process = Process()
    process.executableURL = productsDirectory().appendingPathComponent("ckpt")
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let finished = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in finished.signal() }
    try process.run()
    final class Box: @unchecked Sendable { var data = Data() }
    let outBox = Box(), errBox = Box()
    let group = DispatchGroup()
    for (pipe, box) in [(out, outBox), (err, errBox)] {
        group.enter()
        DispatchQueue.global().async {
            box.data = pipe.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
    }
    var timedOut = false
    if finished.wait(timeout: .now() + seconds) == .timedOut {
        timedOut = true
        process.terminate()
        kill(process.processIdentifier, SIGKILL)
        finished.wait()
    }
    group.wait()
    return (Run(status: process.terminationStatus, stdout: String(decoding: outBox.data, as: UTF8.self),
                stderr: String(decoding: errBox.data, as: UTF8.self)), timedOut)
}

/// The `ckpt` side of the adversarial review's defects (issue 19).
@Suite("Reproduced defects through ckpt")
struct ReproducedDefectsCLITests {
    /// A committed container with blobs `a` and `b`, one damaged payload byte in `a`.
    static func damagedContainer(_ path: String) throws -> (a: [UInt8], b: [UInt8]) {
        let a = (0..<4096).map { UInt8($0 % 199) }, b = (0..<8192).map { UInt8($0 % 7) }
        let writer = try ContainerWriter.create(at: path)
        try a.withUnsafeBytes { try writer.write(name: "a", dtype: .uint8, shape: [4096], bytes: $0) }
        try b.withUnsafeBytes { try writer.write(name: "b", dtype: .uint8, shape: [8192], bytes: $0) }
        try writer.commit()
        let offset = try ContainerReader.open(path).descriptor("a").payloadOffset
        var bytes = try fileBytes(path)
        bytes[offset + 100] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (a, b)
    }

    @Test("a mapped reader keeps reading while `ckpt recover` repairs the same file in another process (no SIGBUS)")
    func recoverUnderAMappedReader() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/m.ckpt"
            let (_, b) = try Self.damagedContainer(path)
            let reader = try ContainerReader.open(path, options: ReaderOptions(mode: .mmap))
            #expect(throws: CheckpointError.self) { try reader.read("a") }
            let (recover, timedOut) = try ckptWithTimeout(["recover", path])
            #expect(!timedOut)
            // Exit 65: the file is repaired, but blob `a` was lost, and ckpt says which.
            #expect(recover.status == 65, "\(recover.stdout)\(recover.stderr)")
            #expect(recover.stdout.contains("1 blob"), "\(recover.stdout)")
            #expect(recover.stderr.contains("'a'"), "\(recover.stderr)")
            // The old reader's mapping, index and intact blob are all still there.
            #expect(reader.names == ["a", "b"])
            #expect(try reader.read("b") == b)
            #expect(try reader.withUnsafeBytes(of: "b", verify: true) { Array($0) } == b)
            // And the repaired file opens with the intact blob only.
            let repaired = try ContainerReader.open(path)
            #expect(repaired.names == ["b"])
            #expect(try repaired.read("b") == b)
            let verify = try ckpt("verify", path)
            #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        }
    }

    @Test("`ckpt recover -o` of an intact file keeps every blob and exits 0")
    func recoverIntact() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/m.ckpt"
            let writer = try ContainerWriter.create(at: path)
            try [UInt8](repeating: 1, count: 64).withUnsafeBytes { try writer.write(name: "x", dtype: .uint8, shape: [64], bytes: $0) }
            try writer.commit()
            let run = try ckpt("recover", path, "-o", dir + "/copy.ckpt")
            #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
            #expect(run.stdout.contains("nothing lost"), "\(run.stdout)")
            #expect(try ContainerReader.open(dir + "/copy.ckpt").names == ["x"])
        }
    }

    @Test("`ckpt extract` of an NFD name from a file that also has the NFC name writes the NFD tensor")
    func extractExactName() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/nfc.safetensors"
            let nfc: [UInt8] = [1, 1], nfd: [UInt8] = [2, 2]
            try nfc.withUnsafeBytes { a in
                try nfd.withUnsafeBytes { b in
                    try SafetensorsFile.write([BlobSource(name: "\u{E9}", dtype: .uint8, shape: [2], bytes: a),
                                               BlobSource(name: "e\u{301}", dtype: .uint8, shape: [2], bytes: b)], to: path)
                }
            }
            let convert = try ckpt("convert", path, dir + "/both.ckpt")
            #expect(convert.status == 0, "\(convert.stderr)")
            let both = try ContainerReader.open(dir + "/both.ckpt")
            #expect(both.count == 2)
            #expect(try both.read("e\u{301}") == nfd)
            let extract = try ckpt("extract", path, "e\u{301}", "-o", dir + "/one.safetensors")
            #expect(extract.status == 0, "\(extract.stderr)")
            let one = try SafetensorsFile.open(dir + "/one.safetensors")
            #expect(one.names.map { Array($0.utf8) } == [Array("e\u{301}".utf8)])
            #expect(try one.read("e\u{301}") == nfd)
        }
    }

    @Test("`ckpt inspect` of a FIFO fails at once with the reason; of fanning-out symlinks it returns at once")
    func fifoAndSymlinks() throws {
        try withTemporaryDirectory { dir in
            #expect(mkfifo(dir + "/f", 0o644) == 0)
            let (fifo, timedOut) = try ckptWithTimeout(["inspect", dir + "/f"], seconds: 10)
            #expect(!timedOut, "ckpt inspect blocked on a FIFO")
            #expect(fifo.status != 0)
            #expect(fifo.stderr.contains("not a regular file"), "\(fifo.stderr)")

            for level in 0...30 { try FileManager.default.createDirectory(atPath: dir + "/d\(level)", withIntermediateDirectories: true) }
            for level in 0..<30 {
                for link in ["x", "y"] {
                    try FileManager.default.createSymbolicLink(atPath: dir + "/d\(level)/\(link)", withDestinationPath: dir + "/d\(level + 1)")
                }
            }
            try Data(try NumpyFormat.encodeHeader(dtype: .uint8, shape: [1]) + [9]).write(to: URL(fileURLWithPath: dir + "/d30/leaf.npy"))
            let (walk, walkTimedOut) = try ckptWithTimeout(["inspect", dir + "/d0"], seconds: 20)
            #expect(!walkTimedOut, "ckpt inspect followed fanning-out symlinks")
            #expect(!walk.stdout.contains("leaf"), "\(walk.stdout)")
        }
    }
}

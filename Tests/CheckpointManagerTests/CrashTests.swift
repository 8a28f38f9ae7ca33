@testable import CheckpointIO
import Foundation
import Testing

/// Runs `checkpoint-stress child` and kills it with SIGKILL after `delay`.
/// Returns the lines it printed (complete lines only).
func runAndKill(prefix: String, arguments: [String], after delay: TimeInterval) throws -> [String] {
    let process = Process()
    process.executableURL = productsDirectory().appendingPathComponent("checkpoint-stress")
    process.arguments = ["child", prefix] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    Thread.sleep(forTimeInterval: delay)
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let text = String(decoding: data, as: UTF8.self)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    lines.removeLast()  // empty after a final newline, or a line cut short by the kill
    return lines
}

@Suite("Crash safety")
struct CrashTests {
    static let blobCount = 3
    static let byteCount = 200_000

    /// After every kill: the handler's resume epoch is at least the last epoch
    /// the child reported committed, its checkpoint loads, and every blob is
    /// bit-exact; every file under a final name is a complete checkpoint.
    ///
    /// With `incremental` the child saves incrementally (one blob changes per
    /// epoch, the others are references; a full save every 4) under retention
    /// keep-3: on top of the same invariants, every file a kept epoch refers
    /// to is there and complete (no dangling reference), and every checkpoint
    /// file left verifies through its references.
    @Test(arguments: [false, true])
    func sigkillAtRandomMomentsLosesNoCompletedEpoch(incremental: Bool) throws {
        guard FileManager.default.isExecutableFile(atPath: productsDirectory().appendingPathComponent("checkpoint-stress").path) else {
            Issue.record("checkpoint-stress is not built next to the tests")
            return
        }
        try withTemporaryDirectory { dir in
            var random = SystemRandomNumberGenerator()
            var lastCommitted: Int?
            var appended = Set<Int>()
            var killsDuringWork = 0
            var abandonedTemporaries = 0
            var tornLogs = 0
            // scripts/torture.sh sets CKPT_CRASH_ROUNDS for long runs; CI runs 40.
            let rounds = Int(ProcessInfo.processInfo.environment["CKPT_CRASH_ROUNDS"] ?? "") ?? (incremental ? 30 : 40)
            let log = dir + "/appends.ckpt"
            for round in 0..<rounds {
                let delay = Double.random(in: 0.005...0.12, using: &random)
                let lines = try runAndKill(prefix: dir, arguments: ["--blobs", "\(Self.blobCount)", "--bytes", "\(Self.byteCount)", "--keep-latest", "3",
                                                                    "--append-log", log] + (incremental ? ["--incremental", "4"] : []), after: delay)
                let committed = lines.compactMap { $0.hasPrefix("committed ") ? Int($0.dropFirst(10)) : nil }
                appended.formUnion(lines.compactMap { $0.hasPrefix("appended ") ? Int($0.dropFirst(9)) : nil })
                if let newest = committed.max() { lastCommitted = max(lastCommitted ?? newest, newest) }
                if lines.contains(where: { $0.hasPrefix("resumed") }) { killsDuringWork += 1 }

                let temporaries = directoryListing(dir).filter { $0.hasPrefix(".trainer_0.") && $0.contains(".tmp.") }
                abandonedTemporaries += temporaries.count

                let handler = DurableMetadataHandler()
                let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: handler)
                try manager.setParams()
                let resume = try manager.getResumeFromEpochID(userEpoch: nil)
                if let lastCommitted {
                    let resume = try #require(resume, "round \(round): an epoch was committed but none is resumable")
                    #expect(resume >= lastCommitted, "round \(round): committed \(lastCommitted) was lost (resume \(resume))")
                    try manager.initialize(retrieveFromEpoch: resume)
                    // The append log is not the manager's: a child killed inside its first `ContainerWriter.create`
                    // leaves `.appends.ckpt.tmp.*`, which only that log's writer may clean up.
                    let managerTemporaries = directoryListing(dir).filter { $0.contains(".tmp.") && !$0.hasPrefix(".appends.ckpt.") }
                    #expect(managerTemporaries.isEmpty, "initialize removes abandoned temporaries: \(managerTemporaries)")
                    try manager.load(epoch: resume)
                    #expect(try int64(manager.workspace, "epoch") == Int64(resume))
                    for blob in 0..<Self.blobCount {
                        let bytes = try manager.workspace.fetchBlob("w\(blob)").bytes
                        let epoch = incremental ? StressContent.lastChange(blob: blob, epoch: resume, blobCount: Self.blobCount) : resume
                        #expect(bytes == StressContent.bytes(blob: blob, epoch: epoch, count: Self.byteCount), "round \(round) epoch \(resume) blob w\(blob)")
                    }
                }
                // No kept epoch has a dangling reference: the files it refers to are there, complete.
                for record in try handler.completeEpochs() {
                    for file in record.references {
                        #expect(LocalCheckpointStorage().isCompleteCheckpoint(dir + "/" + file, format: .container),
                                "round \(round): epoch \(record.epoch) refers to \(file), which is missing or incomplete")
                    }
                }
                // Whatever is under a final name is complete and verifies; temporaries are not mistaken for checkpoints.
                for name in directoryListing(dir) where name.hasPrefix("trainer_0.") && !name.hasSuffix(".lock") {
                    let epoch = try #require(Int(name.dropFirst("trainer_0.".count)), "unexpected file \(name)")
                    #expect(manager.checkDBExists(epoch: epoch), "round \(round): \(name) is not a complete checkpoint")
                    let report = try TensorVerification.verify(dir + "/" + name)
                    #expect(report.isIntact, "round \(round): \(name) does not verify: \(report.damaged.map { "\($0.error)" }) files: \(directoryListing(dir)) metadata: \((try? String(contentsOfFile: dir + "/checkpoint_metadata.json", encoding: .utf8)) ?? "")")
                }
                // The append log: a torn tail is recovered (what `ckpt recover` does) to its complete prefix,
                // which holds every epoch reported appended, bit-exact.
                if fileExists(log) {
                    if try TensorVerification.verify(log).torn != nil {
                        tornLogs += 1
                        _ = try ContainerRecovery.repair(log)
                    }
                    #expect(try TensorVerification.verify(log).isIntact, "round \(round): the append log does not verify")
                    // Each append of N deletes "epoch.N-3" in the same commit: a reported append is live
                    // unless a later append (reported or cut off by the kill) deleted it.
                    let reader = try ContainerReader.open(log)
                    let newestLive = reader.names.compactMap { Int($0.dropFirst("epoch.".count)) }.max() ?? -1
                    if let newest = appended.max() {
                        for epoch in (newest - 2)...newest where appended.contains(epoch) {
                            if reader.contains("epoch.\(epoch)") {
                                #expect(try reader.read("epoch.\(epoch)") == StressContent.bytes(blob: 0, epoch: epoch, count: 4096), "round \(round): appended epoch \(epoch)")
                            } else {
                                #expect(newestLive >= epoch + 3, "round \(round): appended epoch \(epoch) was lost")
                            }
                        }
                    }
                }
            }
            let references = directoryListing(dir).filter { $0.hasPrefix("trainer_0.") && !$0.hasSuffix(".lock") }
                .compactMap { try? ContainerReader.open(dir + "/" + $0) }
                .reduce(0) { count, reader in count + ((try? reader.descriptors()) ?? []).filter(\.isReference).count }
            if incremental { #expect(references > 0, "the incremental child wrote blob references") }
            print("crash test\(incremental ? " (incremental)" : ""): \(rounds) kills, \(references) blob references in the files left, last committed epoch \(lastCommitted ?? -1), \(abandonedTemporaries) abandoned temporary files found and removed, "
                  + "\(appended.count) appends reported and checked, \(tornLogs) torn append logs recovered")
            #expect(lastCommitted != nil)
            #expect(killsDuringWork > rounds / 2, "most children should have been killed after starting work")
        }
    }
}

@Suite("Writer exclusion")
struct WriterExclusionTests {
    /// Two processes saving to one prefix: the second fails fast with a clear error; the first goes on unharmed.
    @Test func aSecondProcessOnTheSamePrefixFailsFast() throws {
        let executable = productsDirectory().appendingPathComponent("checkpoint-stress")
        try withTemporaryDirectory { dir in
            let first = Process()
            first.executableURL = executable
            first.arguments = ["child", dir, "--blobs", "2", "--bytes", "100000", "--durability", "none"]
            let firstOutput = Pipe()
            first.standardOutput = firstOutput
            first.standardError = FileHandle.nullDevice
            try first.run()
            defer { if first.isRunning { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() } }
            // Wait until the first child has committed an epoch.
            var seen = ""
            while !seen.contains("committed") {
                let data = firstOutput.fileHandleForReading.availableData
                if data.isEmpty { break }
                seen += String(decoding: data, as: UTF8.self)
            }
            #expect(seen.contains("committed"))

            let second = Process()
            second.executableURL = executable
            second.arguments = ["child", dir, "--blobs", "2", "--bytes", "100000", "--durability", "none"]
            let secondError = Pipe()
            second.standardOutput = FileHandle.nullDevice
            second.standardError = secondError
            let start = Date()
            try second.run()
            second.waitUntilExit()
            let message = String(decoding: secondError.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(second.terminationStatus != 0)
            #expect(message.contains("another writer holds the lock"), "\(message)")
            #expect(Date().timeIntervalSince(start) < 10)
            #expect(first.isRunning, "the first writer goes on")

            kill(first.processIdentifier, SIGKILL)
            first.waitUntilExit()
            let handler = DurableMetadataHandler()
            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: handler)
            try manager.setParams()
            let resume = try #require(try manager.getResumeFromEpochID(userEpoch: nil))
            try manager.initialize(retrieveFromEpoch: resume)
            try manager.load(epoch: resume)
            #expect(try manager.workspace.fetchBlob("w1").bytes == StressContent.bytes(blob: 1, epoch: resume, count: 100000))
        }
    }
}

import CheckpointIO
import Foundation
import Testing

// The README's ```swift blocks, compiled and run. Each block is copied below,
// between `// README block N` and `// end of README block N`, at column 0 and
// byte for byte, with two differences only: without its `import CheckpointIO`
// line (this file imports it once) and with `"/ckpt/` written `"\(ckpt)/`,
// where `ckpt` is a temporary directory. `theCodeBelowIsTheReadmes` fails
// when README.md and this file disagree, so an edit of either that breaks the
// example fails a test.

@Suite("README examples")
struct ReadmeExampleTests {
    static let readmePath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("README.md").path

    /// The ```swift blocks of a Markdown text.
    static func swiftBlocks(_ text: String) -> [String] {
        var blocks: [String] = [], current: [Substring]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```swift" {
                current = []
            } else if current != nil, line == "```" {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(line)
            }
        }
        return blocks
    }

    /// The lines between `// README block N` and `// end of README block N` in this file.
    static func copiedBlocks(_ text: String) -> [Int: String] {
        var blocks: [Int: String] = [:]
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (index, line) in lines.enumerated() where line.hasPrefix("// README block ") {
            guard let number = Int(line.dropFirst("// README block ".count)),
                  let end = lines[index...].firstIndex(of: "// end of README block \(number)") else { continue }
            blocks[number] = lines[(index + 1)..<end].joined(separator: "\n")
        }
        return blocks
    }

    @Test func theCodeBelowIsTheReadmes() throws {
        let readme = Self.swiftBlocks(try String(contentsOfFile: Self.readmePath, encoding: .utf8))
        let copies = Self.copiedBlocks(try String(contentsOfFile: #filePath, encoding: .utf8))
        #expect(readme.count == 3, "README.md has \(readme.count) swift blocks; this file runs 3: copy new ones below")
        #expect(copies.keys.sorted() == Array(1...readme.count))
        for (index, block) in readme.enumerated() {
            let prefix = "import CheckpointIO\n\n"
            #expect(block.hasPrefix(prefix), "README block \(index + 1) does not start with `import CheckpointIO` and a blank line")
            let expected = String(block.dropFirst(prefix.count)).replacingOccurrences(of: "\"/ckpt/", with: "\"\\(ckpt)/")
            #expect(copies[index + 1] == expected, "README block \(index + 1) differs from its copy in ReadmeExampleTests.swift")
        }
    }

    @Test func containerFile() throws {
        try withTemporaryDirectory { ckpt in
            let weights = (0..<(4096 * 4096)).map { Float($0 % 251) }
// README block 1
let writer = try ContainerWriter.create(at: "\(ckpt)/epoch-3.ckpt", options: WriterOptions(durability: .full))
writer.metadata["epoch"] = "3"
try weights.withUnsafeBytes { bytes in
    try writer.write(name: "layers.0.weight", dtype: .float32, shape: [4096, 4096], bytes: bytes)
}
try writer.commit()  // the file appears under its name complete, or not at all

let reader = try ContainerReader.open("\(ckpt)/epoch-3.ckpt")
let view = try reader.withUnsafeBytes(of: "layers.0.weight") { bytes in bytes.count }  // zero-copy
// end of README block 1
            #expect(view == 4096 * 4096 * 4)
            #expect(reader.metadata["epoch"] == "3")
            let copy = try reader.withUnsafeBytes(of: "layers.0.weight", verify: true) { Array($0.bindMemory(to: Float.self)) }
            #expect(copy == weights)
        }
    }

    /// Runs the example, "crashes" it at epoch 42 (a step throws), runs it
    /// again: it resumes from epoch 41 and ends at 90 with every epoch's
    /// training applied exactly once.
    @Test func trainingJob() throws {
        try withTemporaryDirectory { root in
            let ckpt = root + "/not/yet"  // the example's directory does not exist beforehand
            struct Crash: Error {}
            let crashAtEpoch = LockedBox<Int?>(42)
            let epochsRun = LockedBox(0)
            // One epoch of "training": adds 1 to the first weight; the first run crashes in epoch 42.
            func trainOneEpoch(_ ws: Workspace) throws {
                let epoch = try ws.fetchBlob("w").scalars(as: Float.self)[0] + 1
                if Int(epoch) == crashAtEpoch.value { throw Crash() }
                try ws.update("w") { w in w.withUnsafeMutableBytes { $0.storeBytes(of: epoch, as: Float.self) } }
                epochsRun.value += 1
            }
            func runExample() throws -> (Int, JobRunner, CheckpointManager) {
// README block 2
let job = Job()
job.addInitStep(node: "trainer_0") { ws in ws["w"] = try Tensor([Float](repeating: 0, count: 1 << 20)) }
job.addEpochStep(node: "trainer_0") { ws in try trainOneEpoch(ws) }
epochLimiter(job, numEpochs: 90, node: "trainer_0")

let manager = try CheckpointManager(
    dbPrefix: "\(ckpt)/run1", nodeName: "trainer_0",          // files /ckpt/run1/trainer_0.<epoch>
    metadataHandler: DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 3, keepEvery: 10)))
let runner = JobRunner(job: job, checkpointManager: manager)
let lastEpoch = try runner.train()  // creates /ckpt/run1; throws if 3 saves in a row fail
// runner.failedSaves: the epochs whose save failed (each logged with its cause).
// Run it again after a crash: it resumes from the newest complete epoch that loads.
// end of README block 2
                return (lastEpoch, runner, manager)
            }
            #expect(throws: Crash.self) { try runExample() }
            #expect(epochsRun.value == 41)
            crashAtEpoch.value = nil
            let (lastEpoch, runner, manager) = try runExample()
            #expect(lastEpoch == 90)
            #expect(runner.resumeFromEpoch == 41 && runner.failedSaves.isEmpty && runner.lastSavedEpoch == 90)
            #expect(epochsRun.value == 90)
            #expect(try manager.workspace.fetchBlob("w").scalars(as: Float.self)[0] == 90)
            // Retention: every 10th, the latest 3, and 41 (the epoch the second run resumed from).
            let kept = directoryListing(ckpt + "/run1").filter { $0.hasPrefix("trainer_0.") && !$0.hasSuffix(".lock") }
            #expect(Set(kept) == Set([0, 10, 20, 30, 40, 41, 50, 60, 70, 80, 88, 89, 90].map { "trainer_0.\($0)" }))
        }
    }

    @Test func byHand() throws {
        try withTemporaryDirectory { root in
            let ckpt = root + "/missing"
// README block 3
let workspace = Workspace(["w": try Tensor([Float](repeating: 1, count: 1024))])
let manager = try CheckpointManager(dbPrefix: "\(ckpt)/run2", nodeName: "trainer_0",
                                    metadataHandler: DurableMetadataHandler(), workspace: workspace)
try manager.initialize()                       // creates /ckpt/run2; the blob list is ["w"]
try manager.save(epoch: 1)                     // /ckpt/run2/trainer_0.1, complete or absent
try manager.writeCheckpointMetadata(epoch: 1)  // recorded: a resume may choose it
let resumeEpoch = try manager.getResumeFromEpochID()  // 1
try manager.load(epoch: 1)                     // every blob of the list, verified
// end of README block 3
            #expect(resumeEpoch == 1)
            #expect(try manager.blobList() == ["w"])
            #expect(try workspace.fetchBlob("w").scalars(as: Float.self) == [Float](repeating: 1, count: 1024))
            let handler = try #require(manager.metadataHandler as? DurableMetadataHandler)
            #expect(try handler.completeEpochs().map(\.epoch) == [1])
        }
    }
}

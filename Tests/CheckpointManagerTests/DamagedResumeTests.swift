import CheckpointIO
import Foundation
import Logging
import Testing

// Issue 19 point 6: resume never fell back from an epoch whose payload is
// damaged. Public API only.

/// A job on `nodes`: blob "w" is 64 KiB of the byte 0xA0 + epoch, "steps" counts epochs;
/// it stops once `steps` reaches `target`, and throws `Crash` in an epoch when `crash` says so.
func patternJob(nodes: [String] = ["trainer_0"], target: Int, crash: @escaping @Sendable (Int64) -> Bool = { _ in false }) -> Job {
    let job = Job()
    for node in nodes {
        job.addInitStep(node: node) { ws in
            ws["steps"] = Tensor(scalar: Int64(0))
            ws["w"] = try Tensor(dtype: .uint8, shape: [65536], bytes: [UInt8](repeating: 0xA0, count: 65536))
        }
        job.addEpochStep(node: node) { ws in
            let steps = try ws.fetchBlob("steps").scalars(as: Int64.self)[0] + 1
            if crash(steps) { throw Crash() }
            ws["steps"] = Tensor(scalar: steps)
            ws["w"] = try Tensor(dtype: .uint8, shape: [65536], bytes: [UInt8](repeating: 0xA0 &+ UInt8(truncatingIfNeeded: steps), count: 65536))
        }
        job.addStopCondition(node: node) { ws in try ws.fetchBlob("steps").scalars(as: Int64.self)[0] >= Int64(target) }
    }
    return job
}

struct Crash: Error {}

/// Flips one byte in the middle of `byte`'s 64 KiB run in the file (a payload byte of "w").
func flipPayloadByte(_ path: String, of byte: UInt8) throws {
    var bytes = try fileBytes(path)
    let run = [UInt8](repeating: byte, count: 4096)
    let start = try #require(bytes.indices.first { bytes[$0] == byte && bytes[$0..<min(bytes.count, $0 + run.count)].elementsEqual(run) })
    bytes[start + 1000] ^= 0x01
    try writeBytes(path, bytes)
}

@Suite("Issue 19: resuming past a damaged checkpoint")
struct DamagedResumeTests {
    /// The `damaged` member (FORMAT.md §6.2) is checked like the rest, and files without it read as before.
    @Test func theDamagedMemberIsCheckedAndOptional() throws {
        try expectRejected([
            (#""resumed_from":null,"epochs":[],"damaged":{"epoch":1}}"#, "damaged is not an array"),
            (#""resumed_from":null,"epochs":[],"damaged":[{"epoch":1,"nodes":["../x"],"reason":"r"}]}"#, "node '../x'"),
            (#""resumed_from":null,"epochs":[{"epoch":1,"nodes":["n"]}],"damaged":[{"epoch":1,"nodes":["n"],"reason":"r"}]}"#, "both complete and damaged"),
        ])
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            try handler.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
            try writeBytes(try #require(handler.metadataPath), Array((metadataHead + #""resumed_from":null,"epochs":[{"epoch":0,"nodes":["n"],"metric":null}]}"#).utf8))
            #expect(try handler.damagedEpochs().isEmpty && handler.completeEpochs().map(\.epoch) == [0])
        }
    }

    /// The issue's steps: keepLatest 2, train to epoch 4, flip a payload byte
    /// of `trainer_0.4`. Before: every rerun chose epoch 4 and threw a
    /// checksum mismatch. Now: the rerun falls back to epoch 3, says so,
    /// records the damage; the next run goes straight to 3; retention keeps 3.
    @Test func aDamagedPayloadFallsBackToTheEpochBefore() throws {
        try withTemporaryDirectory { dir in
            func manager() throws -> (CheckpointManager, DurableMetadataHandler) {
                let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2))
                return (try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: handler), handler)
            }
            let (first, _) = try manager()
            #expect(try JobRunner(job: patternJob(target: 4), checkpointManager: first).train() == 4)
            first.releaseWriterLock()
            try flipPayloadByte(dir + "/trainer_0.4", of: 0xA4)
            let damagedBytes = try fileBytes(dir + "/trainer_0.4")

            // The rerun falls back to 3 (and then crashes in its first epoch).
            let capture = LogCapture()
            let (second, secondHandler) = try manager()
            let rerun = JobRunner(job: patternJob(target: 4) { _ in true }, checkpointManager: second, logger: capture.logger)
            #expect(throws: Crash.self) { try rerun.train() }
            #expect(rerun.resumeFromEpoch == 3)
            #expect(try second.workspace.fetchBlob("steps").scalars(as: Int64.self) == [3])
            let errors = capture.messages(.error)
            #expect(errors.count == 1 && errors[0].contains("epoch 4 is damaged") && errors[0].contains("checksum") && errors[0].contains("Falling back to epoch 3"), "\(errors)")
            #expect(try secondHandler.completeEpochs().map(\.epoch) == [3])
            let damaged = try secondHandler.damagedEpochs()
            #expect(damaged.map(\.epoch) == [4] && damaged[0].nodes == ["trainer_0"] && damaged[0].reason.contains("checksum"))
            #expect(try fileBytes(dir + "/trainer_0.4") == damagedBytes)  // left alone
            second.releaseWriterLock()

            // The next run resumes from 3 without trying 4, trains on to 7; retention keeps 3.
            let next = LogCapture()
            let (third, thirdHandler) = try manager()
            let runner = JobRunner(job: patternJob(target: 7), checkpointManager: third, logger: next.logger)
            #expect(try runner.train() == 7)
            #expect(runner.resumeFromEpoch == 3 && runner.failedSaves.isEmpty)
            #expect(!next.entries.contains { $0.message.contains("epoch 4") && $0.level >= .info })
            #expect(next.messages(.error).isEmpty)
            #expect(try thirdHandler.completeEpochs().map(\.epoch) == [3, 6, 7])
            #expect(try thirdHandler.damagedEpochs().isEmpty)  // epoch 4 was saved again, then dropped
            #expect(directoryListing(dir).filter { $0.hasPrefix("trainer_0.") && !$0.hasSuffix(".lock") } == ["trainer_0.3", "trainer_0.6", "trainer_0.7"])
            try third.load(epoch: 3)
            #expect(try third.workspace.fetchBlob("w").bytes == [UInt8](repeating: 0xA3, count: 65536))
        }
    }

    @Test func aDamagedEpochOnOneOfSeveralNodesFallsBackForAll() throws {
        try withTemporaryDirectory { dir in
            let nodes = ["a", "b"]
            let first = try MultiNodeCheckpointManager(dbPrefix: dir, metadataHandler: DurableMetadataHandler())
            #expect(try JobRunner(job: patternJob(nodes: nodes, target: 3), checkpointManager: first).train() == 3)
            first.releaseWriterLock()
            try flipPayloadByte(dir + "/b.3", of: 0xA3)
            let handler = DurableMetadataHandler()
            let second = try MultiNodeCheckpointManager(dbPrefix: dir, metadataHandler: handler)
            let runner = JobRunner(job: patternJob(nodes: nodes, target: 3), checkpointManager: second)
            #expect(try runner.train() == 3)
            #expect(runner.resumeFromEpoch == 2)
            for node in nodes { #expect(try second.workspace(forNode: node).fetchBlob("w").bytes == [UInt8](repeating: 0xA3, count: 65536)) }
            #expect(try handler.completeEpochs().map(\.epoch) == [0, 1, 2, 3] && handler.damagedEpochs().isEmpty)
        }
    }

    /// No fallback when the user chose the epoch, or when no older epoch is
    /// recorded: the load error, every time, and the metadata unchanged.
    @Test func withoutAnOlderEpochOrWhenTheUserChoseItTheErrorStands() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1))
            let first = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: handler)
            #expect(try JobRunner(job: patternJob(target: 2), checkpointManager: first).train() == 2)
            first.releaseWriterLock()
            let metadata = try fileBytes(dir + "/checkpoint_metadata.json")
            try flipPayloadByte(dir + "/trainer_0.2", of: 0xA2)
            for _ in 0..<2 {
                let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1)))
                #expect { try JobRunner(job: patternJob(target: 4), checkpointManager: manager).train() } throws: { "\($0)".contains("checksum") }
                #expect(try fileBytes(dir + "/checkpoint_metadata.json") == metadata)
            }
            // keepLatest 1 kept only epoch 2; with 0 … 2 kept, a chosen epoch still does not fall back.
            let all = try CheckpointManager(dbPrefix: dir + "/all", nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            #expect(try JobRunner(job: patternJob(target: 2), checkpointManager: all).train() == 2)
            all.releaseWriterLock()
            try flipPayloadByte(dir + "/all/trainer_0.2", of: 0xA2)
            let chosen = try CheckpointManager(dbPrefix: dir + "/all", nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            #expect { try JobRunner(job: patternJob(target: 4), checkpointManager: chosen, resumeFromEpoch: 2).train() } throws: { "\($0)".contains("checksum") }
        }
    }
}

@testable import CheckpointIO
import Caffe2Port
import Foundation
import Testing

@Suite("Caffe2 checkpoint_test.py, ported")
struct Caffe2PortTests {
    /// The storage-independent part of the port (target Caffe2Port, shared with the S3 suite), in temporary directories.
    let port = Caffe2Port(withPrefix: { body in try withTemporaryDirectory(body) }, exists: { fileExists($0) })

    @Test(arguments: Caffe2PortCase.allCases) func port(_ test: Caffe2PortCase) throws { try test.run(on: port) }

    @Test func uploadBuilderReceivesTheFinalEpoch() throws {
        struct UploadToLocalDirectory: UploadTaskGroupBuilder {
            let destination: String
            let received: LockedBox<[Int]>
            func build(epoch: Int, checkpointManager: (any CheckpointManaging)?) throws -> () throws -> Void {
                received.value.append(epoch)
                let paths = checkpointManager?.checkpointPaths(epoch: epoch) ?? []
                return {
                    for (node, path) in paths {
                        try FileManager.default.copyItem(atPath: path, toPath: destination + "/" + node)
                    }
                }
            }
        }
        try withTemporaryDirectory { dir in
            let upload = dir + "/upload"
            try FileManager.default.createDirectory(atPath: upload, withIntermediateDirectories: false)
            let received = LockedBox<[Int]>([])
            let nodes = (0..<3).map { "trainer_\($0)" }
            let manager = try MultiNodeCheckpointManager(dbPrefix: dir)
            let runner = JobRunner(job: pipelineJob(nodes: nodes), checkpointManager: manager,
                                   uploadTaskGroupBuilder: UploadToLocalDirectory(destination: upload, received: received))
            #expect(try runner.train() == expectedTotals.count)
            #expect(received.value == [4])
            for node in nodes {
                #expect(try fileBytes(upload + "/" + node) == fileBytes(dir + "/\(node).4"))
            }
        }
    }

    /// Caffe2 saves into a directory that does not exist; ours creates it, so
    /// every save fails in storage instead. With Caffe2's policy
    /// (`maxConsecutiveSaveFailures: nil`) the job still runs to its end.
    @Test func savesFailingDoNotStopTheJob() throws {
        try withTemporaryDirectory { dir in
            for node in (0..<3).map({ "trainer_\($0)" }) {
                let storage = MultiNodeCheckpointManagerTests.FailingStorage(failing: Set((0...4).map { dir + "/\(node).\($0)" }))
                let manager = try MultiNodeCheckpointManager(dbPrefix: dir, options: CheckpointOptions(storage: storage))
                let runner = JobRunner(job: pipelineJob(nodes: [node]), checkpointManager: manager, maxConsecutiveSaveFailures: nil)
                #expect(try runner.train() == expectedTotals.count)
                #expect(try int64(manager.workspace(forNode: node), "\(node)/total") == 145)
                #expect(manager.checkpointPaths(epoch: 1).allSatisfy { !fileExists($0.path) })
                #expect(runner.failedSaves.map(\.epoch) == [0, 1, 2, 3, 4] && runner.lastSavedEpoch == nil)
            }
        }
    }

    @Test func downloadGroupRunsBetweenEpochsAndExit() throws {
        let job = Job()
        let node = "trainer:0"
        var order: [String] = []
        job.addInitStep(node: node) { ws in
            for name in ["input1", "input2", "output", "download_result"] {
                ws[name] = try Tensor([Float](repeating: 1, count: 8))
            }
        }
        job.addEpochStep(node: node) { ws in
            let a = try ws.fetchBlob("input1").scalars(as: Float.self), b = try ws.fetchBlob("input2").scalars(as: Float.self)
            ws["output"] = try Tensor(zip(a, b).map(+))
            order.append("epoch")
        }
        job.addDownloadStep(node: node) { ws in
            ws["download_result"] = ws["output"]
            order.append("download")
        }
        job.addExitStep(node: node) { _ in order.append("exit") }
        epochLimiter(job, numEpochs: 1, node: node)
        let runner = JobRunner(job: job)
        #expect(try runner.train() == 1)
        let expected = [Float](repeating: 2, count: 8)
        #expect(try runner.workspace(forNode: node).fetchBlob("output").scalars(as: Float.self) == expected)
        #expect(try runner.workspace(forNode: node).fetchBlob("download_result").scalars(as: Float.self) == expected)
        #expect(order == ["epoch", "download", "exit"])
    }
}

/// A value shared with closures, under a lock.
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); defer { lock.unlock() }; stored = newValue }
    }
}

@testable import CheckpointIO
import Foundation
import Testing

/// Power-cut crash consistency (README guarantees 1 and 2).
///
/// Each workload runs for real in a temporary directory under a
/// ``RecordingFileSystem``; then, for a crash after every recorded call, the
/// directory states that ``CrashStateModel`` (read its comment for the
/// model) allows are rebuilt one by one in another temporary directory and
/// checked with the real reader, recovery and manager code. CI takes a
/// sample of each crash point's states; `scripts/powerloss.sh` enumerates
/// them in full (up to 2^16 per crash point). Every test prints its counts.
@Suite("Power loss")
struct PowerLossTests {
    static func workload(_ name: String) -> PowerLossWorkload {
        switch name {
        case "commit": return PowerLossWorkloads.containerCommit
        case "append": return PowerLossWorkloads.containerAppend
        case "save": return PowerLossWorkloads.singleNodeSave()
        case "retention": return PowerLossWorkloads.retention
        case "multinode": return PowerLossWorkloads.multiNode
        case "metadata": return PowerLossWorkloads.metadataUpdates()
        case "saveAsync": return PowerLossWorkloads.saveAsync
        default: preconditionFailure("no workload \(name)")
        }
    }

    /// Every checkpoint reported complete before the crash is complete and
    /// bit-exact; the resume epoch is at least the newest reported one and
    /// loads bit-exact; `checkDBExists` is never true for an incomplete file;
    /// the metadata parses and names only complete epochs; an appended
    /// container opens as its old or new commit and recovers to a complete prefix.
    @Test(arguments: ["commit", "append", "save", "retention", "multinode", "metadata", "saveAsync"])
    func noReportedCheckpointIsLostAtAPowerCut(_ workload: String) throws {
        let outcome = try PowerLossHarness.explore(Self.workload(workload))
        print("power loss: \(outcome)")
        #expect(outcome.untrackedMutations == 0)
        #expect(outcome.crashPoints > 10 && outcome.distinctStates >= outcome.crashPoints, "\(outcome)")
        #expect(outcome.violations.isEmpty, "\(outcome)\n\(outcome.violations.joined(separator: "\n"))")
    }

    // MARK: The checker is not vacuous

    /// A writer whose directory fsyncs do nothing (the model knows they were
    /// not made): renames may be lost, and the checker says so.
    @Test func checkerReportsAWriterWithoutDirectorySync() throws {
        let outcome = try PowerLossHarness.explore(PowerLossWorkloads.singleNodeSave(name: "save without directory fsync"),
                                                   budget: PowerLossHarness.sampleBudget, wrap: { $0.skippingDirectorySync() })
        print("power loss (deliberately broken): \(outcome)")
        #expect(outcome.violations.contains { $0.contains("reported epoch") || $0.contains("resumes from") }, "\(outcome)")
    }

    /// A writer that renames without syncing the file first: a complete name over lost data.
    @Test func checkerReportsAWriterWithoutFileSync() throws {
        let outcome = try PowerLossHarness.explore(PowerLossWorkloads.singleNodeSave(name: "save without fsync before rename"),
                                                   budget: PowerLossHarness.sampleBudget, wrap: { $0.skippingFileSync() })
        print("power loss (deliberately broken): \(outcome)")
        #expect(outcome.violations.contains { $0.contains("not a complete checkpoint") || $0.contains("does not load") }, "\(outcome)")
    }

    /// The model itself: a write that was never synced can be lost, in part or in full; a synced one cannot.
    @Test func modelKeepsSyncedDataAndMayDropTheRest() {
        let model = CrashStateModel(initialNames: [:], initialContents: [:], operations: [
            .create(name: "f", inode: 0),
            .write(inode: 0, offset: 0, bytes: [UInt8](repeating: 1, count: 5000)),
            .sync(inode: 0, call: "fsync"),
            .syncDirectory,
            .write(inode: 0, offset: 5000, bytes: [UInt8](repeating: 2, count: 4000)),
        ])
        let beforeSync = model.crashPoint(after: 2)
        let early = Set(model.optionVectors(beforeSync, budget: .init(exhaustive: 1 << 10, sampled: 0), seed: 1)
            .map { model.materialize(beforeSync, options: $0)["f"].map(\.count) })
        #expect(early.contains(nil) && early.contains(0) && early.contains(5000))  // no name; a name but no data; everything
        let afterAppend = model.crashPoint(after: 5)
        let late = model.optionVectors(afterAppend, budget: .init(exhaustive: 1 << 10, sampled: 0), seed: 1)
            .map { model.materialize(afterAppend, options: $0)["f"]! }
        #expect(late.allSatisfy { $0.count >= 5000 && $0.prefix(5000).allSatisfy { $0 == 1 } })
        #expect(late.contains { $0.count == 9000 && $0[5000] == 2 && $0[8999] == 0 })  // size kept, last page lost
        #expect(late.contains { $0.count == 5000 })
    }

    // MARK: Regressions

    /// An in-place commit makes its records and index durable before it writes
    /// the trailer: a power cut can never keep a trailer over a lost index page
    /// (which the reader rightly rejects as corrupt instead of opening the old commit).
    @Test func appendSyncsTheIndexBeforeTheTrailer() throws {
        try withTemporaryDirectory { directory in
            try PowerLossWorkloads.writeContainer(directory + "/log.ckpt", PowerLossWorkloads.containerBlobs(1), calls: .live, append: false)
            let recorder = try RecordingFileSystem(root: directory)
            try PowerLossWorkloads.writeContainer(directory + "/log.ckpt", PowerLossWorkloads.appendedBlobs, calls: recorder.calls, append: true)
            let operations = recorder.operations
            let writes = operations.indices.filter { if case .write = operations[$0] { return true } else { return false } }
            let trailer = try #require(writes.last)
            guard case let .write(_, _, bytes) = operations[trailer] else { return }
            #expect(bytes.count <= ContainerLayout.trailerSize, "the last write is the trailer alone")
            let syncBeforeTrailer = (writes.dropLast().last! + 1..<trailer).contains { if case .sync = operations[$0] { return true } else { return false } }
            #expect(syncBeforeTrailer, "\(operations.map(\.description))")
        }
    }

    // MARK: fsync failures

    /// A failed `fsync` of a save (every one in turn, EIO): the save reports
    /// failure, the file whose sync failed is never synced again or renamed
    /// into place, the previous checkpoint stays the resume point (unless
    /// only the metadata's directory sync failed, after its rename), a later
    /// save works, and no power-cut state after any of it loses a reported epoch.
    @Test func failedSyncIsNeverTakenForSuccess() throws {
        // The syncs of one epoch's save and metadata update.
        let counter = SyncFailureInjector(failing: Int.max)
        try withTemporaryDirectory { directory in
            try PowerLossWorkloads.runSingleNode(directory, calls: .live, recorder: nil, epochs: [1])
            try PowerLossWorkloads.runSingleNode(directory, calls: counter.calls, recorder: nil, epochs: [2])
        }
        #expect(counter.syncs >= 4, "file and directory syncs of the checkpoint and of the metadata")
        for target in 0..<counter.syncs {
            let injector = SyncFailureInjector(failing: target)
            let failure = FailureBox()
            let expectation = ManagerExpectation(nodes: [PowerLossWorkloads.node], epochs: [1, 2, 3], reportedBeforehand: [1], keepsEverything: true)
            let workload = PowerLossWorkload(
                name: "EIO at sync \(target)",
                setup: { try PowerLossWorkloads.runSingleNode($0, calls: .live, recorder: nil, epochs: [1]) },
                run: { directory, calls, recorder in
                    do { try PowerLossWorkloads.runSingleNode(directory, calls: calls, recorder: recorder, epochs: [2]) } catch {
                        failure.error = error
                        let handler = DurableMetadataHandler(storage: LocalCheckpointStorage(calls: calls))
                        try handler.setParams(dbPrefix: directory, dbType: "ckpt", nodeNames: [PowerLossWorkloads.node], pathPrefix: nil, pathType: nil)
                        failure.resumeAfterFailure = try handler.lastEpoch(userEpoch: nil)
                        failure.metadataRenamed = recorder.operations.contains {
                            if case let .rename(_, to, _) = $0 { return to == DurableMetadataHandler.fileName } else { return false }
                        }
                    }
                    try PowerLossWorkloads.runSingleNode(directory, calls: calls, recorder: recorder, epochs: [3])
                    failure.operations = recorder.operations
                },
                check: expectation.violations)
            let outcome = try PowerLossHarness.explore(workload, base: injector.calls)
            print("power loss: \(outcome)")
            #expect(injector.failed, "sync \(target) was not reached")
            #expect(failure.error != nil, "EIO at sync \(target) was not reported")
            if failure.metadataRenamed {
                #expect(failure.resumeAfterFailure == 1 || failure.resumeAfterFailure == 2)
            } else {
                #expect(failure.resumeAfterFailure == 1, "EIO at sync \(target): resumes from \(failure.resumeAfterFailure.map(String.init) ?? "nothing")")
            }
            Self.expectNoRetryAfterFailedSync(failure.operations, label: "EIO at sync \(target)")
            #expect(outcome.violations.isEmpty, "\(outcome)\n\(outcome.violations.joined(separator: "\n"))")
        }
    }
}

extension PowerLossTests {
    /// A failed sync of an in-place append (each in turn, EIO): the commit
    /// reports failure, the file reads as its old commit at once, and after a
    /// power cut it opens as the old or the new commit, bit-exact (the new one
    /// only if its index had been synced), and recovers to a complete prefix.
    @Test func failedSyncOfAnAppendKeepsTheOldCommit() throws {
        let counter = SyncFailureInjector(failing: Int.max)
        try withTemporaryDirectory { directory in
            try PowerLossWorkloads.writeContainer(directory + "/log.ckpt", PowerLossWorkloads.containerBlobs(1), calls: .live, append: false)
            try PowerLossWorkloads.writeContainer(directory + "/log.ckpt", PowerLossWorkloads.appendedBlobs, calls: counter.calls, append: true)
        }
        #expect(counter.syncs == 2, "records and index, then the trailer")
        for target in 0..<counter.syncs {
            let injector = SyncFailureInjector(failing: target)
            let failure = FailureBox()
            var workload = PowerLossWorkloads.containerAppend
            workload.name = "append, EIO at sync \(target)"
            workload.run = { directory, calls, recorder in
                do {
                    try PowerLossWorkloads.writeContainer(directory + "/log.ckpt", PowerLossWorkloads.appendedBlobs, calls: calls, append: true)
                } catch {
                    failure.error = error
                }
                failure.resumeAfterFailure = PowerLossWorkloads.contents(directory + "/log.ckpt")?.blobs.count
                failure.operations = recorder.operations
            }
            let outcome = try PowerLossHarness.explore(workload, base: injector.calls)
            print("power loss: \(outcome)")
            #expect(failure.error != nil, "EIO at sync \(target) was not reported")
            #expect(failure.resumeAfterFailure == PowerLossWorkloads.containerBlobs(1).count, "the old commit, at once")
            Self.expectNoRetryAfterFailedSync(failure.operations, label: "append, EIO at sync \(target)")
            #expect(outcome.violations.isEmpty, "\(outcome)\n\(outcome.violations.joined(separator: "\n"))")
        }
    }
}

extension PowerLossTests {
    /// Never retried as if it had worked: after a failed sync of a file, no later
    /// sync of it and no rename of it to a final name.
    static func expectNoRetryAfterFailedSync(_ operations: [RecordedOperation], label: String) {
        #expect(operations.contains { if case .syncFailed = $0 { return true } else { return false } } || operations.contains {
            if case .syncDirectoryFailed = $0 { return true } else { return false }
        }, "\(label): the failure is in the log")
        for (index, operation) in operations.enumerated() {
            guard case let .syncFailed(inode, _) = operation else { continue }
            for later in operations[(index + 1)...] {
                switch later {
                case let .sync(other, call) where other == inode:
                    Issue.record("\(label): \(call) of #\(inode) retried after it failed")
                case let .rename(_, to, other) where other == inode && !to.hasPrefix("."):
                    Issue.record("\(label): #\(inode) renamed to \(to) after its sync failed")
                default:
                    break
                }
            }
        }
    }
}

final class FailureBox: @unchecked Sendable {
    var error: Error?
    var resumeAfterFailure: Int?
    var metadataRenamed = false
    var operations: [RecordedOperation] = []
}

/// Live calls whose `target`-th `fsync`/`fdatasync` (counting from 0, files and directories) fails with EIO.
final class SyncFailureInjector: @unchecked Sendable {
    private let lock = NSLock()
    private let target: Int
    private(set) var syncs = 0
    private(set) var failed = false

    init(failing target: Int) { self.target = target }

    var calls: SystemCalls {
        var calls = SystemCalls.live
        let live = SystemCalls.live
        func counted(_ body: @escaping (Int32) -> Int32) -> (Int32) -> Int32 {
            { fd in
                let fail = self.lock.withLock { () -> Bool in
                    defer { self.syncs += 1 }
                    if self.syncs == self.target { self.failed = true }
                    return self.syncs == self.target
                }
                if fail {
                    errno = EIO
                    return -1
                }
                return body(fd)
            }
        }
        calls.fsync = counted(live.fsync)
        calls.fdatasync = counted(live.fdatasync)
        return calls
    }
}

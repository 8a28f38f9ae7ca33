@testable import CheckpointIO
import Foundation
import Testing

/// One `checkpoint-stress dist-child` process (a rank), its output read when it ends.
final class RankProcess: @unchecked Sendable {
    let process = Process()
    private let output = Pipe()
    private var collected = Data()
    private let readLock = NSLock()

    init(prefix: String, rank: Int, world: Int, runID: String, extra: [String]) throws {
        process.executableURL = productsDirectory().appendingPathComponent("checkpoint-stress")
        process.arguments = ["dist-child", prefix, "--rank", "\(rank)", "--world", "\(world)", "--run", runID] + extra
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        // Drain the pipe as it fills, so that a chatty child never blocks on a full pipe.
        output.fileHandleForReading.readabilityHandler = { [readLock] handle in
            let data = handle.availableData
            readLock.lock()
            self.collected.append(data)
            readLock.unlock()
        }
        try process.run()
    }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// Waits for the end and returns the complete lines printed.
    func finish() -> [String] {
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
        let rest = output.fileHandleForReading.readDataToEndOfFile()
        readLock.lock()
        collected.append(rest)
        let text = String(decoding: collected, as: UTF8.self)
        readLock.unlock()
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines.removeLast()  // empty after a final newline, or a line cut short by a kill
        return lines
    }
}

/// Commit events collected from any thread.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [DistributedCommitEvent] = []
    func append(_ event: DistributedCommitEvent) { lock.lock(); items.append(event); lock.unlock() }
    var events: [DistributedCommitEvent] { lock.lock(); defer { lock.unlock() }; return items }
}

/// The epochs of lines "WORD E".
func epochs(_ lines: [String], _ word: String) -> [Int] {
    lines.compactMap { $0.hasPrefix(word + " ") ? Int($0.dropFirst(word.count + 1)) : nil }
}

/// The blobs a dist-child of rank `rank` holds at `epoch`.
func rankBlobs(rank: Int, epoch: Int, blobs: Int, bytes: Int) -> [String: [UInt8]] {
    var result: [String: [UInt8]] = [:]
    for i in 0..<blobs { result["r\(rank).w\(i)"] = StressContent.bytes(blob: rank * 1000 + i, epoch: epoch, count: bytes) }
    return result
}

/// Loads every blob of every rank of `epoch` through a 1-node reader and compares it bit for bit.
func expectEpochLoadsBitExact(_ dir: String, epoch: Int, world: Int, blobs: Int, bytes: Int, _ context: String) throws {
    let reader = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: 1, runID: "check", nodeName: { _ in "reader" })
    let workspace = Workspace()
    var expected: [String: [UInt8]] = [:]
    for rank in 0..<world { expected.merge(rankBlobs(rank: rank, epoch: epoch, blobs: blobs, bytes: bytes)) { a, _ in a } }
    try reader.loadBlobsFromCheckpoint(Array(expected.keys) + ["epoch"], epoch: epoch, into: workspace)
    #expect(try int64(workspace, "epoch") == Int64(epoch), "\(context): epoch \(epoch)")
    for (name, bytes) in expected {
        #expect(try workspace.fetchBlob(name).bytes == bytes, "\(context): epoch \(epoch) blob \(name)")
    }
}

@Suite("Distributed checkpoints (issue 11)", .serialized)
struct DistributedProcessTests {
    static let world = 4

    func requireStress() -> Bool {
        let built = FileManager.default.isExecutableFile(atPath: productsDirectory().appendingPathComponent("checkpoint-stress").path)
        if !built { Issue.record("checkpoint-stress is not built next to the tests") }
        return built
    }

    /// Four processes (separate address spaces) run JobRunner on one prefix:
    /// every epoch completes, exactly one process completes each, and after a
    /// restart all four resume from the same, newest, epoch and go on.
    @Test func fourProcessesRunJobRunnerOnOneSharedPrefix() throws {
        guard requireStress() else { return }
        try withTemporaryDirectory { dir in
            let arguments = ["--blobs", "3", "--bytes", "50000", "--epochs", "4"]
            var ranks = try (0..<Self.world).map { try RankProcess(prefix: dir, rank: $0, world: Self.world, runID: "first", extra: arguments) }
            var outputs = ranks.map { $0.finish() }
            for (rank, lines) in outputs.enumerated() {
                #expect(lines.contains("finished 4"), "rank \(rank): \(lines)")
                #expect(lines.first == "resumed none")
            }
            // Each epoch was completed by exactly one process.
            let completers = outputs.flatMap { epochs($0, "completer") }.sorted()
            #expect(completers == [0, 1, 2, 3, 4])
            let manager = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: Self.world, runID: "inspect")
            #expect(try manager.completeEpochs() == [0, 1, 2, 3, 4])
            for epoch in 0...4 { try expectEpochLoadsBitExact(dir, epoch: epoch, world: Self.world, blobs: 3, bytes: 50000, "first run") }
            // Node records of complete epochs are folded into the completion records.
            #expect(directoryListing(dir + "/distributed").filter { $0.hasSuffix(".committed") }.isEmpty, "\(directoryListing(dir + "/distributed"))")

            ranks = try (0..<Self.world).map {
                try RankProcess(prefix: dir, rank: $0, world: Self.world, runID: "second", extra: ["--blobs", "3", "--bytes", "50000", "--epochs", "6"])
            }
            outputs = ranks.map { $0.finish() }
            for (rank, lines) in outputs.enumerated() {
                #expect(lines.first == "resumed 4", "rank \(rank): \(lines)")
                #expect(lines.contains("finished 6"))
            }
            #expect(try manager.completeEpochs() == [0, 1, 2, 3, 4, 5, 6])
            for epoch in 5...6 { try expectEpochLoadsBitExact(dir, epoch: epoch, world: Self.world, blobs: 3, bytes: 50000, "second run") }
        }
    }

    /// A slow rank: the others wait (CompletionWait.upTo) and every epoch
    /// completes when the slow one publishes, never before.
    @Test func aSlowRankCompletesEachEpochWhenItFinishes() throws {
        guard requireStress() else { return }
        try withTemporaryDirectory { dir in
            let common = ["--blobs", "2", "--bytes", "20000", "--epochs", "3", "--wait-seconds", "30"]
            let start = Date()
            let ranks = try (0..<Self.world).map { rank in
                try RankProcess(prefix: dir, rank: rank, world: Self.world, runID: "slow", extra: common + (rank == 2 ? ["--slow-ms", "400"] : []))
            }
            let outputs = ranks.map { $0.finish() }
            let elapsed = Date().timeIntervalSince(start)
            for (rank, lines) in outputs.enumerated() {
                #expect(lines.contains("finished 3"), "rank \(rank): \(lines)")
                // Waiting: each epoch is complete before the rank goes on to the next one.
                for epoch in 0..<3 {
                    let completed = try #require(lines.firstIndex(of: "complete \(epoch)"), "rank \(rank) never saw epoch \(epoch) complete: \(lines)")
                    let next = try #require(lines.firstIndex(of: "published \(epoch + 1)"))
                    #expect(completed < next, "rank \(rank): \(lines)")
                }
            }
            // The slow rank sleeps 0.4 s in each of 3 epochs: the fast ones waited for it.
            #expect(elapsed >= 1.2)
            let manager = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: Self.world, runID: "inspect")
            #expect(try manager.completeEpochs() == [0, 1, 2, 3])
        }
    }

    /// scripts/dist-torture.sh: SIGKILL a random rank at a random moment, then
    /// the rest, and restart the whole job (a new run id), round after round.
    /// After each round: every epoch with a completion record loads bit-exact
    /// on every node; all ranks resumed from the same epoch, the one the
    /// storage says; no epoch reported complete was lost (retention keeps the
    /// newest 2); every file under a final name is complete.
    @Test func sigkillOfRandomRanksNeverBreaksTheGlobalCommit() throws {
        guard requireStress() else { return }
        try withTemporaryDirectory { dir in
            var random = SystemRandomNumberGenerator()
            let rounds = Int(ProcessInfo.processInfo.environment["CKPT_DIST_ROUNDS"] ?? "") ?? 8
            let keepLatest = 2, blobs = 2, bytes = 30000
            var reportedComplete = Set<Int>()
            var completions = 0, abandonedSeen = 0, resumedRounds = 0, leftovers = 0
            for round in 0..<rounds {
                let inspector = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: Self.world, runID: "inspect\(round)")
                let expectedResume = try inspector.getResumeFromEpochID(userEpoch: nil)
                let ranks = try (0..<Self.world).map {
                    try RankProcess(prefix: dir, rank: $0, world: Self.world, runID: "t\(round)",
                                    extra: ["--blobs", "\(blobs)", "--bytes", "\(bytes)", "--keep-latest", "\(keepLatest)"])
                }
                // The first round runs long enough to complete epochs even on a loaded machine.
                Thread.sleep(forTimeInterval: round == 0 ? 2.0 : Double.random(in: 0.05...0.6, using: &random))
                ranks[Int.random(in: 0..<Self.world, using: &random)].kill()
                Thread.sleep(forTimeInterval: Double.random(in: 0...0.15, using: &random))
                for rank in ranks { rank.kill() }
                let outputs = ranks.map { $0.finish() }

                // Resume agreement: every rank that got that far resumed from the epoch the storage named.
                let resumed = outputs.compactMap { $0.first { $0.hasPrefix("resumed ") }.map { String($0.dropFirst(8)) } }
                let expected = expectedResume.map(String.init) ?? "none"
                #expect(resumed.allSatisfy { $0 == expected }, "round \(round): resumed \(resumed), storage says \(expected)")
                if !resumed.isEmpty { resumedRounds += 1 }
                for lines in outputs {
                    reportedComplete.formUnion(epochs(lines, "complete"))
                    abandonedSeen += epochs(lines, "abandoned").count
                    completions += epochs(lines, "completer").count
                }

                // Every complete epoch loads bit-exact on every node.
                let complete = try inspector.completeEpochs()
                for epoch in complete {
                    try expectEpochLoadsBitExact(dir, epoch: epoch, world: Self.world, blobs: blobs, bytes: bytes, "round \(round)")
                }
                // No epoch reported complete is lost: present, or dropped by retention with keepLatest newer ones present.
                for epoch in reportedComplete where !complete.contains(epoch) {
                    #expect(complete.filter { $0 > epoch }.count >= keepLatest, "round \(round): epoch \(epoch) was reported complete and is gone (complete now: \(complete))")
                }
                if let newest = reportedComplete.max() {
                    let resume = try inspector.getResumeFromEpochID(userEpoch: nil)
                    #expect((resume ?? -1) >= newest, "round \(round): reported complete \(newest), resume \(resume ?? -1)")
                }
                // Files under final names are complete checkpoints; count leftovers of never-completed epochs.
                for name in directoryListing(dir) where name.hasPrefix("trainer_") && !name.hasSuffix(".lock") {
                    let epoch = try #require(Int(name.split(separator: ".").last ?? ""), "unexpected file \(name)")
                    #expect(try TensorVerification.verify(dir + "/" + name).isIntact, "round \(round): \(name) does not verify")
                    if !complete.contains(epoch), epoch < (complete.max() ?? -1) { leftovers += 1 }
                }
            }
            print("distributed torture: \(rounds) rounds, \(resumedRounds) with ranks that resumed, \(completions) epochs completed, "
                  + "newest reported complete \(reportedComplete.max() ?? -1), \(abandonedSeen) never-completed epochs cleaned up, "
                  + "\(leftovers) leftover files of never-completed older epochs seen between rounds")
            #expect(completions > 0)
        }
    }
}

/// The managers of one job, each as its own process would hold it (one per rank; run in threads here).
func makeRanks(_ dir: String, world: Int, runID: String, retention: RetentionPolicy = .keepAll,
               wait: DistributedCheckpointManager.CompletionWait = .none) throws -> [DistributedCheckpointManager] {
    try (0..<world).map { rank in
        try DistributedCheckpointManager(dbPrefix: dir, rank: rank, worldSize: world, runID: runID, retention: retention, completionWait: wait,
                                         options: CheckpointOptions(writer: WriterOptions(durability: .none)))
    }
}

/// Fills rank `rank`'s workspace with blobs of several dtypes and shapes for `epoch`.
func fillRank(_ manager: DistributedCheckpointManager, rank: Int, epoch: Int) throws {
    let workspace = manager.workspace(forNode: manager.localNodes[0])
    workspace["epoch"] = Tensor(scalar: Int64(epoch))
    workspace["r\(rank).f32"] = try Tensor(dtype: .float32, shape: [rank + 3, 7], bytes: StressContent.bytes(blob: rank * 10, epoch: epoch, count: (rank + 3) * 7 * 4))
    workspace["r\(rank).u8"] = try Tensor(dtype: .uint8, shape: [1000 + rank], bytes: StressContent.bytes(blob: rank * 10 + 1, epoch: epoch, count: 1000 + rank))
    workspace["r\(rank).i64"] = try Tensor(dtype: .int64, shape: [5], bytes: StressContent.bytes(blob: rank * 10 + 2, epoch: epoch, count: 40))
}

@Suite("Distributed commit protocol (issue 11)")
struct DistributedCommitTests {
    /// A slow rank: the others' parts are published, the epoch is not complete
    /// until the slow one publishes; waiting ranks return when it does.
    @Test func anEpochCompletesOnlyWhenTheSlowRankPublishes() throws {
        try withTemporaryDirectory { dir in
            let ranks = try makeRanks(dir, world: 4, runID: "run1")
            for (rank, manager) in ranks.enumerated() {
                try fillRank(manager, rank: rank, epoch: 1)
                try manager.initialize(nodes: manager.localNodes)
            }
            for manager in ranks.dropLast() {
                try manager.save(epoch: 1)
                try manager.writeCheckpointMetadata(epoch: 1)
                #expect(try !manager.isEpochComplete(1))
                #expect(try manager.getResumeFromEpochID(userEpoch: nil) == nil, "no process may resume from an incomplete epoch")
            }
            #expect(try !ranks[0].waitForCompletion(epoch: 1, timeout: .milliseconds(50)))
            // Three waiters return once the slow rank publishes, 200 ms later.
            let waiters = try makeRanks(dir, world: 4, runID: "run1")
            let results = ParallelSlots<Bool>(count: 3)
            let group = DispatchGroup()
            for index in 0..<3 {
                DispatchQueue.global().async(group: group) {
                    results.set(index, (try? waiters[index].waitForCompletion(epoch: 1, timeout: .seconds(20))) ?? false)
                }
            }
            Thread.sleep(forTimeInterval: 0.2)
            let log = EventLog()
            ranks[3].commitObserver = { event in log.append(event) }
            try ranks[3].save(epoch: 1)
            try ranks[3].writeCheckpointMetadata(epoch: 1)
            group.wait()
            #expect((0..<3).allSatisfy { results.get($0) == true })
            #expect(log.events.contains(.published(epoch: 1)))
            #expect(log.events.contains { if case .completed(1, _) = $0 { return true } else { return false } })
            for manager in ranks { #expect(try manager.getResumeFromEpochID(userEpoch: nil) == 1) }
            let completion = try #require(try DistributedCommitLog(storage: LocalCheckpointStorage(), dbPrefix: dir, durability: .none).completion(epoch: 1))
            #expect(completion.runID == "run1" && completion.nodes == ["trainer_0", "trainer_1", "trainer_2", "trainer_3"])
        }
    }

    /// A dead rank: the epoch it never published never completes (waiting
    /// ranks time out with an error naming it), the next epoch completes,
    /// and its completion removes the dead epoch's files and records.
    @Test func aDeadRanksEpochNeverCompletesAndTheNextOneDoes() throws {
        try withTemporaryDirectory { dir in
            let ranks = try makeRanks(dir, world: 4, runID: "run1", wait: .upTo(.milliseconds(300)))
            for (rank, manager) in ranks.enumerated() {
                try fillRank(manager, rank: rank, epoch: 2)
                try manager.initialize(nodes: manager.localNodes)
            }
            // Rank 3 writes its file of epoch 2 and dies before its record.
            try ranks[3].save(epoch: 2)
            for manager in ranks.dropLast() {
                try manager.save(epoch: 2)
                let error = #expect(throws: CheckpointError.self) { try manager.writeCheckpointMetadata(epoch: 2) }
                #expect("\(error!)".contains("trainer_3") && "\(error!)".contains("did not complete"), "\(error!)")
            }
            #expect(fileExists(dir + "/trainer_3.2"))
            #expect(try ranks[0].completeEpochs().isEmpty)
            // Restarted (its dead process's writer lock gone), rank 3 takes part in epoch 3: it completes.
            ranks[3].releaseWriterLock()
            let restarted = try DistributedCheckpointManager(dbPrefix: dir, rank: 3, worldSize: 4, runID: "run1", completionWait: .upTo(.seconds(5)),
                                                             options: CheckpointOptions(writer: WriterOptions(durability: .none)))
            try fillRank(restarted, rank: 3, epoch: 3)
            try restarted.initialize(nodes: restarted.localNodes)
            let group = DispatchGroup()
            for (rank, manager) in ranks.dropLast().enumerated() {
                try fillRank(manager, rank: rank, epoch: 3)
                try manager.save(epoch: 3)
                DispatchQueue.global().async(group: group) { try? manager.writeCheckpointMetadata(epoch: 3) }
            }
            try restarted.save(epoch: 3)
            try restarted.writeCheckpointMetadata(epoch: 3)
            // Whichever process completed epoch 3 has finished its cleanup.
            group.wait()
            #expect(try restarted.completeEpochs() == [3])
            #expect(try restarted.getResumeFromEpochID(userEpoch: nil) == 3)
            // Epoch 2 never completed: its files and records are gone once epoch 3 completed.
            #expect(directoryListing(dir).filter { $0.hasSuffix(".2") }.isEmpty, "\(directoryListing(dir))")
            #expect(directoryListing(dir + "/distributed").filter { $0.contains(".2.") }.isEmpty, "\(directoryListing(dir + "/distributed"))")
        }
    }

    /// 8 writers' checkpoint loads bit-exact into 4 processes (each loading its
    /// share of the blobs) and into 1 (all of them), whatever node wrote each blob.
    @Test func eightNodesCheckpointLoadsIntoFourAndIntoOne() throws {
        try withTemporaryDirectory { dir in
            let writers = try makeRanks(dir, world: 8, runID: "eight")
            var expected: [String: Tensor] = [:]
            for (rank, manager) in writers.enumerated() {
                try fillRank(manager, rank: rank, epoch: 5)
                for (name, tensor) in manager.workspace(forNode: manager.localNodes[0]).snapshot() where name != "epoch" { expected[name] = tensor }
                try manager.initialize(nodes: manager.localNodes)
                try manager.save(epoch: 5)
                try manager.writeCheckpointMetadata(epoch: 5)
            }
            #expect(try writers[0].isEpochComplete(5))
            let names = expected.keys.sorted()
            for world in [4, 1] {
                let readers = try (0..<world).map { rank in
                    try DistributedCheckpointManager(dbPrefix: dir, rank: rank, worldSize: world, runID: "read\(world)", nodeName: { "reader_\($0)" })
                }
                #expect(try readers[0].getResumeFromEpochID(userEpoch: nil) == 5)
                var loaded = 0
                for (rank, reader) in readers.enumerated() {
                    // Rank r of `world` takes every world-th name: a resharding.
                    let share = names.enumerated().filter { $0.offset % world == rank }.map(\.element)
                    let workspace = Workspace()
                    try reader.loadBlobsFromCheckpoint(share + ["no such blob"], epoch: 5, into: workspace)
                    #expect(workspace.blobNames.sorted() == share.sorted())
                    for name in share {
                        let tensor = try workspace.fetchBlob(name)
                        #expect(tensor.bytes == expected[name]!.bytes && tensor.dtype == expected[name]!.dtype && tensor.shape == expected[name]!.shape, "\(world) readers: \(name)")
                        loaded += 1
                    }
                }
                #expect(loaded == names.count)
            }
            // An epoch without a completion record is not loaded, even with its files present.
            let reader = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: 1, runID: "read1")
            let error = #expect(throws: CheckpointError.self) { try reader.loadBlobsFromCheckpoint(names, epoch: 4) }
            #expect(error?.code == .checkpointNotFound(epoch: 4))
        }
    }

    /// Resume agreement: a completion record whose node file is damaged is
    /// skipped (by every process alike); records that cover every node but
    /// lack the completion record (the last rank killed in between) are completed.
    @Test func resumeAgreementSkipsDamageAndCompletesWhatAllNodesCommitted() throws {
        try withTemporaryDirectory { dir in
            let ranks = try makeRanks(dir, world: 3, runID: "run1")
            for epoch in 1...3 {
                for (rank, manager) in ranks.enumerated() {
                    try fillRank(manager, rank: rank, epoch: epoch)
                    if epoch == 1 { try manager.initialize(nodes: manager.localNodes) }
                    try manager.save(epoch: epoch)
                    try manager.writeCheckpointMetadata(epoch: epoch)
                }
            }
            // Epoch 3's completion record lost (killed before it), its records all there.
            let log = DistributedCommitLog(storage: LocalCheckpointStorage(), dbPrefix: dir, durability: .none)
            try log.remove(DistributedCommitLog.completionName(epoch: 3))
            for (rank, node) in ["trainer_0", "trainer_1", "trainer_2"].enumerated() {
                try log.publish(.init(epoch: 3, runID: "run1", node: node, nodes: ["trainer_0", "trainer_1", "trainer_2"], metric: nil, resumedFrom: nil))
                _ = rank
            }
            let restarted = try makeRanks(dir, world: 3, runID: "run2")
            #expect(try restarted.map { try $0.getResumeFromEpochID(userEpoch: nil) } == [3, 3, 3])
            #expect(try restarted[0].isEpochComplete(3))
            // Epoch 3's file on node 1 torn: every process resumes from 2.
            let path = dir + "/trainer_1.3"
            let bytes = try fileBytes(path)
            try writeBytes(path, Array(bytes.dropLast(10)))
            #expect(try restarted.map { try $0.getResumeFromEpochID(userEpoch: nil) } == [2, 2, 2])
            #expect(try !restarted[0].cpAccessible(epoch: 3))
            #expect(try restarted[0].cpAccessible(epoch: 2))
        }
    }

    /// Retention is decided once per epoch, by the process that completed it;
    /// the run's resume epoch and the newest are never dropped.
    @Test func retentionKeepsTheNewestAndTheResumeEpoch() throws {
        try withTemporaryDirectory { dir in
            let ranks = try makeRanks(dir, world: 2, runID: "run1", retention: RetentionPolicy(keepLatest: 2))
            let log = EventLog()
            for manager in ranks { manager.commitObserver = { event in log.append(event) } }
            for epoch in 0...5 {
                for (rank, manager) in ranks.enumerated() {
                    try fillRank(manager, rank: rank, epoch: epoch)
                    if epoch == 0 { try manager.initialize(nodes: manager.localNodes) }
                    try manager.save(epoch: epoch)
                    try manager.writeCheckpointMetadata(epoch: epoch)
                }
            }
            #expect(try ranks[0].completeEpochs() == [4, 5])
            let dropped = log.events.compactMap { event -> Int? in if case let .dropped(epoch) = event { return epoch } else { return nil } }
            #expect(dropped.sorted() == [0, 1, 2, 3], "each epoch dropped once: \(dropped)")
            #expect(directoryListing(dir).filter { $0.hasPrefix("trainer_") }.sorted() == ["trainer_0.4", "trainer_0.5", "trainer_1.4", "trainer_1.5"])
            // A new run (the old one's processes gone) resumes from 5 and keeps it while it saves 6, 7, 8.
            for manager in ranks { manager.releaseWriterLock() }
            let next = try makeRanks(dir, world: 2, runID: "run2", retention: RetentionPolicy(keepLatest: 1))
            for manager in next { #expect(try manager.getResumeFromEpochID(userEpoch: nil) == 5) }
            for epoch in 6...8 {
                for (rank, manager) in next.enumerated() {
                    try fillRank(manager, rank: rank, epoch: epoch)
                    if epoch == 6 { try manager.initialize(nodes: manager.localNodes) }
                    try manager.save(epoch: epoch)
                    try manager.writeCheckpointMetadata(epoch: epoch)
                }
            }
            #expect(try next[0].completeEpochs() == [5, 8])
        }
    }

    /// A run that goes back to an older epoch (the user's choice) rewrites the
    /// later ones: the other run's completion records of them go before the
    /// first file is rewritten, so no epoch is ever complete with mixed files.
    @Test func goingBackToAnOlderEpochRetiresTheLaterOnesBeforeRewritingThem() throws {
        try withTemporaryDirectory { dir in
            let first = try makeRanks(dir, world: 2, runID: "run1")
            for epoch in 1...3 {
                for (rank, manager) in first.enumerated() {
                    try fillRank(manager, rank: rank, epoch: epoch)
                    if epoch == 1 { try manager.initialize(nodes: manager.localNodes) }
                    try manager.save(epoch: epoch)
                    try manager.writeCheckpointMetadata(epoch: epoch)
                }
            }
            for manager in first { manager.releaseWriterLock() }
            let second = try makeRanks(dir, world: 2, runID: "run2")
            for manager in second { #expect(try manager.getResumeFromEpochID(userEpoch: 1) == 1) }
            // Rank 0 of the new run rewrites epoch 2 (other data: epoch 20's); rank 1 has not yet.
            try fillRank(second[0], rank: 0, epoch: 20)
            try second[0].initialize(nodes: second[0].localNodes, retrieveFromEpoch: 1)
            try second[0].save(epoch: 2)
            #expect(try second[0].completeEpochs() == [1], "epochs 2 and 3 of run1 no longer hold")
            let inspector = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: 2, runID: "inspect")
            #expect(try inspector.getResumeFromEpochID(userEpoch: nil) == 1)
            try second[0].writeCheckpointMetadata(epoch: 2)
            #expect(try !second[0].isEpochComplete(2))
            try fillRank(second[1], rank: 1, epoch: 20)
            try second[1].initialize(nodes: second[1].localNodes, retrieveFromEpoch: 1)
            try second[1].save(epoch: 2)
            try second[1].writeCheckpointMetadata(epoch: 2)
            #expect(try inspector.getResumeFromEpochID(userEpoch: nil) == 2)
            let workspace = Workspace()
            try inspector.loadBlobsFromCheckpoint(["r0.u8", "r1.u8"], epoch: 2, into: workspace)
            #expect(try workspace.fetchBlob("r0.u8").bytes == StressContent.bytes(blob: 1, epoch: 20, count: 1000))
            #expect(try workspace.fetchBlob("r1.u8").bytes == StressContent.bytes(blob: 11, epoch: 20, count: 1001))
        }
    }

    @Test func badArgumentsAreRejectedBeforeAnyFileIsTouched() throws {
        try withTemporaryDirectory { dir in
            for runID in ["", "a.b", "a/b", String(repeating: "x", count: 65)] {
                #expect(throws: CheckpointError.self) { try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: 2, runID: runID) }
            }
            #expect(throws: CheckpointError.self) { try DistributedCheckpointManager(dbPrefix: dir, rank: 2, worldSize: 2, runID: "r") }
            #expect(throws: CheckpointError.self) { try DistributedCheckpointManager(dbPrefix: dir, nodes: ["x"], allNodes: ["a", "b"], runID: "r") }
            #expect(throws: CheckpointError.self) { try DistributedCheckpointManager(dbPrefix: dir, nodes: ["a"], allNodes: ["a", "a"], runID: "r") }
            let manager = try DistributedCheckpointManager(dbPrefix: dir, rank: 0, worldSize: 2, runID: "r")
            let error = #expect(throws: CheckpointError.self) { try manager.setParams(nodes: ["trainer_1"]) }
            #expect("\(error!)".contains("trainer_0"))
            #expect(directoryListing(dir).isEmpty)
        }
    }
}

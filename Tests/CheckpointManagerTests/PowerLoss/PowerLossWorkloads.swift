@testable import CheckpointIO
import Foundation

/// The content of every checkpoint the power-loss workloads write: small
/// (a few KiB, so that a file spans a few 4 KiB pages), different per node and epoch.
enum PowerLossData {
    static func blobs(node: String, epoch: Int) -> [String: Tensor] {
        var generator = SyntheticData(seed: UInt64(epoch) &* 7919 &+ UInt64(node.utf8.reduce(0) { $0 &* 31 &+ Int($1) }))
        return [
            "w": try! Tensor(dtype: .float32, shape: [700], bytes: generator.float32Weights(count: 700)),
            "b": try! Tensor(dtype: .float32, shape: [300], bytes: generator.float32Weights(count: 300)),
            "step": Tensor(scalar: Int64(epoch)),
        ]
    }

    static func fill(_ workspace: Workspace, node: String, epoch: Int) {
        for (name, tensor) in blobs(node: node, epoch: epoch) { workspace.setBlob(name, tensor) }
    }

    /// Nil when `node`'s checkpoint of `epoch` in `directory` is complete and
    /// loads bit-exact; else what is wrong.
    static func problem(directory: String, node: String, epoch: Int) -> String? {
        do {
            let manager = try CheckpointManager(dbPrefix: directory, nodeName: node)
            guard manager.checkDBExists(epoch: epoch) else { return "\(node).\(epoch) is not a complete checkpoint" }
            try manager.initialize(retrieveFromEpoch: epoch)
            try manager.load(epoch: epoch)
            let expected = blobs(node: node, epoch: epoch)
            guard manager.workspace.blobNames.sorted() == expected.keys.sorted(),
                  expected.allSatisfy({ manager.workspace.blob($0.key) == $0.value })
            else { return "\(node).\(epoch) loads, but not bit-exact" }
            return nil
        } catch {
            return "\(node).\(epoch) passes checkDBExists but does not load: \(error)"
        }
    }
}

/// The invariants of README guarantees 1 and 2 for a checkpoint directory.
struct ManagerExpectation {
    var nodes: [String]
    /// Every epoch the workload may have written.
    var epochs: [Int]
    /// Epochs reported complete before recording started.
    var reportedBeforehand: [Int]
    /// True when no retention rule may delete a reported epoch.
    var keepsEverything: Bool

    /// Violations in `directory`, given the epochs reported complete before the crash (`marks`).
    func violations(_ directory: String, marks: [WorkloadMark]) throws -> [String] {
        var problems: [String] = []
        let reported = reportedBeforehand + marks.compactMap(\.epoch)
        // checkDBExists is never true for an incomplete or wrong file.
        for epoch in epochs {
            for node in nodes where fileExists(CheckpointNaming.dbName(epoch: epoch, nodeName: node, dbPrefix: directory)) {
                if let manager = try? CheckpointManager(dbPrefix: directory, nodeName: node), manager.checkDBExists(epoch: epoch),
                   let problem = PowerLossData.problem(directory: directory, node: node, epoch: epoch) {
                    problems.append(problem)
                }
            }
        }
        // The metadata parses and names no missing or damaged epoch.
        let handler = DurableMetadataHandler()
        try handler.setParams(dbPrefix: directory, dbType: "ckpt", nodeNames: nodes, pathPrefix: nil, pathType: nil)
        var named: [Int] = []
        do {
            for record in try handler.completeEpochs() {
                named.append(record.epoch)
                for node in record.nodes {
                    if let problem = PowerLossData.problem(directory: directory, node: node, epoch: record.epoch) {
                        problems.append("the metadata names epoch \(record.epoch): \(problem)")
                    }
                }
            }
        } catch {
            problems.append("the metadata file is unreadable: \(error)")
        }
        // Every reported epoch is complete and bit-exact; with retention, the newest one
        // until the metadata names a newer epoch (retention may then delete it).
        var mustExist = keepsEverything ? reported : []
        if !keepsEverything, let newest = reported.max(), !named.contains(where: { $0 > newest }) { mustExist = [newest] }
        for epoch in mustExist {
            for node in nodes {
                if let problem = PowerLossData.problem(directory: directory, node: node, epoch: epoch) { problems.append("reported epoch \(epoch): \(problem)") }
            }
        }
        // The resume epoch is at least the newest reported one, and loads bit-exact.
        let resume = try handler.lastEpoch(userEpoch: nil)
        if let newest = reported.max(), (resume ?? Int.min) < newest {
            problems.append("resumes from \(resume.map(String.init) ?? "nothing") although epoch \(newest) was reported complete")
        }
        if let resume {
            if !epochs.contains(resume) { problems.append("resumes from epoch \(resume), never written") }
            let manager = try MultiNodeCheckpointManager(dbPrefix: directory, metadataHandler: DurableMetadataHandler())
            try manager.setParams(nodes: nodes)
            do {
                try manager.initialize(nodes: nodes, retrieveFromEpoch: resume)
                try manager.load(epoch: resume)
                for node in nodes {
                    let expected = PowerLossData.blobs(node: node, epoch: resume)
                    let workspace = manager.workspace(forNode: node)
                    if !(workspace.blobNames.sorted() == expected.keys.sorted() && expected.allSatisfy({ workspace.blob($0.key) == $0.value })) {
                        problems.append("the resume epoch \(resume) of \(node) is not bit-exact")
                    }
                }
            } catch {
                problems.append("the resume epoch \(resume) does not load: \(error)")
            }
        }
        return problems
    }
}

enum PowerLossWorkloads {
    static let node = "trainer_0"

    /// A single-node run: resumes (if there is anything to resume from) and
    /// saves `epochs`, each followed by its metadata, marking each once reported.
    static func runSingleNode(_ directory: String, calls: SystemCalls, recorder: RecordingFileSystem?, epochs: [Int],
                              retention: RetentionPolicy = .keepAll, async: Bool = false) throws {
        let storage = LocalCheckpointStorage(calls: calls)
        let handler = DurableMetadataHandler(retention: retention, storage: storage)
        let workspace = Workspace()
        PowerLossData.fill(workspace, node: node, epoch: 0)
        let manager = try CheckpointManager(dbPrefix: directory, nodeName: node, metadataHandler: handler, workspace: workspace,
                                            options: CheckpointOptions(storage: storage))
        try manager.setParams()
        if let resume = try manager.getResumeFromEpochID() {
            try manager.initialize(retrieveFromEpoch: resume)
            try manager.load(epoch: resume)
        } else {
            try manager.initialize()
        }
        for epoch in epochs {
            PowerLossData.fill(workspace, node: node, epoch: epoch)
            if async {
                try manager.saveAsync(epoch: epoch, metric: Double(epoch))
                try manager.waitUntilFinished()
            } else {
                try manager.save(epoch: epoch)
                try manager.writeCheckpointMetadata(epoch: epoch, metric: Double(epoch))
            }
            recorder?.mark("epoch \(epoch) reported complete", epoch: epoch)
        }
        manager.releaseWriterLock()
    }

    static func singleNodeSave(name: String = "CheckpointManager.save + writeCheckpointMetadata") -> PowerLossWorkload {
        let expectation = ManagerExpectation(nodes: [node], epochs: [1, 2, 3], reportedBeforehand: [1], keepsEverything: true)
        return PowerLossWorkload(
            name: name,
            setup: { try runSingleNode($0, calls: .live, recorder: nil, epochs: [1]) },
            run: { try runSingleNode($0, calls: $1, recorder: $2, epochs: [2, 3]) },
            check: expectation.violations)
    }

    static var saveAsync: PowerLossWorkload {
        PowerLossWorkload(
            name: "CheckpointManager.saveAsync",
            setup: { try runSingleNode($0, calls: .live, recorder: nil, epochs: [1]) },
            run: { try runSingleNode($0, calls: $1, recorder: $2, epochs: [2, 3], async: true) },
            check: ManagerExpectation(nodes: [node], epochs: [1, 2, 3], reportedBeforehand: [1], keepsEverything: true).violations)
    }

    /// Keep the newest epoch: saving 3 and 4 deletes 1 and 2, then 3 (2 is the resume epoch, kept while this run lasts).
    static var retention: PowerLossWorkload {
        PowerLossWorkload(
            name: "retention deleting old epochs",
            setup: { try runSingleNode($0, calls: .live, recorder: nil, epochs: [1, 2]) },
            run: { try runSingleNode($0, calls: $1, recorder: $2, epochs: [3, 4], retention: RetentionPolicy(keepLatest: 1)) },
            check: ManagerExpectation(nodes: [node], epochs: [1, 2, 3, 4], reportedBeforehand: [1, 2], keepsEverything: false).violations)
    }

    static let multiNodeNames = ["trainer_0", "trainer_1"]

    static func runMultiNode(_ directory: String, calls: SystemCalls, recorder: RecordingFileSystem?, epochs: [Int]) throws {
        let storage = LocalCheckpointStorage(calls: calls)
        let manager = try MultiNodeCheckpointManager(dbPrefix: directory, metadataHandler: DurableMetadataHandler(storage: storage),
                                                     options: CheckpointOptions(storage: storage))
        try manager.setParams(nodes: multiNodeNames)
        for node in multiNodeNames { PowerLossData.fill(manager.workspace(forNode: node), node: node, epoch: 0) }
        if let resume = try manager.getResumeFromEpochID() {
            try manager.initialize(nodes: multiNodeNames, retrieveFromEpoch: resume)
            try manager.load(epoch: resume)
        } else {
            try manager.initialize(nodes: multiNodeNames)
        }
        for epoch in epochs {
            for node in multiNodeNames { PowerLossData.fill(manager.workspace(forNode: node), node: node, epoch: epoch) }
            try manager.save(epoch: epoch)
            try manager.writeCheckpointMetadata(epoch: epoch)
            recorder?.mark("epoch \(epoch) reported complete", epoch: epoch)
        }
        manager.releaseWriterLock()
    }

    static var multiNode: PowerLossWorkload {
        PowerLossWorkload(
            name: "MultiNodeCheckpointManager.save (2 nodes)",
            setup: { try runMultiNode($0, calls: .live, recorder: nil, epochs: [1]) },
            run: { try runMultiNode($0, calls: $1, recorder: $2, epochs: [2]) },
            check: ManagerExpectation(nodes: multiNodeNames, epochs: [1, 2], reportedBeforehand: [1], keepsEverything: true).violations)
    }

    /// What the metadata named after each write of the handler workload (filled by its run).
    final class RecordSequence: @unchecked Sendable { var lists: [[Int]] = [] }

    /// DurableMetadataHandler alone: four updates with keep-latest-2 over existing checkpoint files.
    static func metadataUpdates() -> PowerLossWorkload {
        let sequence = RecordSequence()
        let epochs = [1, 2, 3, 4]
        return PowerLossWorkload(
            name: "DurableMetadataHandler updates",
            setup: { directory in
                let workspace = Workspace()
                PowerLossData.fill(workspace, node: node, epoch: 0)
                let manager = try CheckpointManager(dbPrefix: directory, nodeName: node, workspace: workspace)
                try manager.initialize()
                for epoch in epochs {
                    PowerLossData.fill(workspace, node: node, epoch: epoch)
                    try manager.save(epoch: epoch)
                }
            },
            run: { directory, calls, recorder in
                let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 2), storage: LocalCheckpointStorage(calls: calls))
                try handler.setParams(dbPrefix: directory, dbType: "ckpt", nodeNames: [node], pathPrefix: nil, pathType: nil)
                sequence.lists = [[]]
                for epoch in epochs {
                    try handler.write(epoch: epoch, metric: nil)
                    let records = try handler.completeEpochs().map(\.epoch)
                    sequence.lists.append(records)
                    recorder.mark("metadata names \(records)", epoch: epoch, records: records)
                }
            },
            check: { directory, marks in
                var problems = try ManagerExpectation(nodes: [node], epochs: epochs, reportedBeforehand: [], keepsEverything: false)
                    .violations(directory, marks: marks)
                // The file names exactly what one completed update left, or what the one in flight writes.
                let handler = DurableMetadataHandler()
                try handler.setParams(dbPrefix: directory, dbType: "ckpt", nodeNames: [node], pathPrefix: nil, pathType: nil)
                if let named = try? handler.completeEpochs().map(\.epoch) {
                    let allowed = sequence.lists[marks.count...].prefix(2)
                    if !allowed.contains(named) { problems.append("the metadata names \(named), not one of \(Array(allowed))") }
                }
                return problems
            })
    }

    // MARK: Containers without a manager

    static func containerBlobs(_ version: Int, count: Int = 2) -> [(name: String, bytes: [UInt8])] {
        var generator = SyntheticData(seed: UInt64(100 + version))
        return (0..<count).map { index in ("v\(version)-\(index)", generator.randomBytes(count: 2500 + 700 * index)) }
    }

    static func writeContainer(_ path: String, _ blobs: [(name: String, bytes: [UInt8])], calls: SystemCalls, append: Bool) throws {
        var options = WriterOptions(durability: .full)
        options.systemCalls = calls
        let writer = append ? try ContainerWriter.append(to: path, options: options) : try ContainerWriter.create(at: path, options: options)
        for blob in blobs {
            try blob.bytes.withUnsafeBytes { bytes in try writer.write(name: blob.name, dtype: .uint8, shape: [bytes.count], bytes: bytes) }
        }
        try writer.commit()
    }

    /// The blobs of a container, or why it does not open.
    static func contents(_ path: String) -> (blobs: [String: [UInt8]], tornBytes: Int)? {
        guard let reader = try? ContainerReader.open(path, options: ReaderOptions(mode: .pread)) else { return nil }
        var blobs: [String: [UInt8]] = [:]
        for name in reader.names {
            guard let bytes = try? reader.read(name) else { return nil }
            blobs[name] = bytes
        }
        return (blobs, reader.tornBytes)
    }

    static func dictionary(_ blobs: [(name: String, bytes: [UInt8])]) -> [String: [UInt8]] {
        Dictionary(uniqueKeysWithValues: blobs.map { ($0.name, $0.bytes) })
    }

    /// A new container replacing an old one under the same name.
    static var containerCommit: PowerLossWorkload {
        let old = dictionary(containerBlobs(1)), new = dictionary(containerBlobs(2, count: 3))
        return PowerLossWorkload(
            name: "ContainerWriter.create + commit (replacing a file)",
            setup: { try writeContainer($0 + "/model.ckpt", containerBlobs(1), calls: .live, append: false) },
            run: { directory, calls, recorder in
                try writeContainer(directory + "/model.ckpt", containerBlobs(2, count: 3), calls: calls, append: false)
                recorder.mark("commit returned")
            },
            check: { directory, marks in
                guard let (blobs, torn) = contents(directory + "/model.ckpt") else { return ["model.ckpt does not open"] }
                if torn != 0 { return ["model.ckpt has a torn tail of \(torn) bytes"] }
                if !marks.isEmpty && blobs != new { return ["model.ckpt is not the committed version"] }
                if blobs != new && blobs != old { return ["model.ckpt is neither the old nor the new version"] }
                return []
            })
    }

    /// Blobs appended in place: many small ones (so the new index spans several pages) and a replacement.
    static let appendedBlobs: [(name: String, bytes: [UInt8])] = {
        var generator = SyntheticData(seed: 7)
        return (0..<60).map { ("n\($0)", generator.randomBytes(count: 40)) } + [("v1-0", generator.randomBytes(count: 1500))]
    }()

    /// An in-place append: the reader sees the old or the new commit; recovery keeps a complete prefix.
    static var containerAppend: PowerLossWorkload {
        let old = dictionary(containerBlobs(1))
        var new = old
        for blob in appendedBlobs { new[blob.name] = blob.bytes }
        let versions = Dictionary(grouping: containerBlobs(1) + appendedBlobs, by: \.name).mapValues { $0.map(\.bytes) }
        return PowerLossWorkload(
            name: "ContainerWriter.append (in place)",
            setup: { try writeContainer($0 + "/log.ckpt", containerBlobs(1), calls: .live, append: false) },
            run: { directory, calls, recorder in
                try writeContainer(directory + "/log.ckpt", appendedBlobs, calls: calls, append: true)
                recorder.mark("commit returned")
            },
            check: { directory, marks in
                let path = directory + "/log.ckpt"
                guard let (blobs, torn) = contents(path) else { return ["log.ckpt does not open (neither commit is readable)"] }
                if !marks.isEmpty && (blobs != new || torn != 0) { return ["log.ckpt is not the committed append"] }
                if blobs != new && blobs != old { return ["log.ckpt opens as neither the old nor the new commit"] }
                // Recovery keeps the commit the reader saw, plus intact records after it, each one of its written versions.
                let report: RecoveryReport
                do { report = try ContainerRecovery.repair(path, durability: .none) } catch { return ["recovery fails: \(error)"] }
                guard let (recovered, recoveredTorn) = contents(path), recoveredTorn == 0 else { return ["the recovered file does not open"] }
                var problems: [String] = []
                for (name, bytes) in recovered where versions[name]?.contains(bytes) != true { problems.append("recovery yields a wrong \(name)") }
                for name in blobs.keys where recovered[name] == nil { problems.append("recovery lost \(name) (lost: \(report.lostBlobs))") }
                if blobs == new && recovered != new { problems.append("recovery changed a complete commit") }
                return problems
            })
    }
}

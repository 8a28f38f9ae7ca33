import ArgumentParser
import CheckpointIO
import Foundation
import Logging

/// Writes one line straight to a file descriptor (no buffering: the process may be killed at any moment).
func emitLine(_ line: String, fd: Int32 = 1) {
    var text = line + "\n"
    text.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
}

/// A metadata handler that also reports, on stdout, each committed epoch and each save's timing.
final class AnnouncingHandler: CheckpointMetadataHandler, @unchecked Sendable {
    let inner: DurableMetadataHandler
    let announce: (String) -> Void
    init(_ inner: DurableMetadataHandler, announce: @escaping (String) -> Void) {
        self.inner = inner
        self.announce = announce
    }
    func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError) {
        try inner.setParams(dbPrefix: dbPrefix, dbType: dbType, nodeNames: nodeNames, pathPrefix: pathPrefix, pathType: pathType)
    }
    func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int? { try inner.lastEpoch(userEpoch: userEpoch) }
    func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool { try inner.cpAccessible(epoch: epoch) }
    func write(epoch: Int, metric: Double?) throws(CheckpointError) {
        try inner.write(epoch: epoch, metric: metric)
        announce("committed \(epoch)")
    }
    func report(action: String, stats: [String: UInt64]) {
        inner.report(action: action, stats: stats)
        for (path, nanoseconds) in stats { announce("\(action) \(nanoseconds) \(path)") }
    }
}

/// Local storage that announces each checkpoint write, and pauses half-way
/// through it (after half of the blobs are written, before the commit) so
/// that the demo's kill lands in the middle of a save whatever the disk speed.
struct AnnouncingStorage: CheckpointStorageDecorator {
    let base: any CheckpointStorage = LocalCheckpointStorage()
    func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String, format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
        let writer = try ContainerWriter.create(at: path, options: options)
        do throws(CheckpointError) {
            writer.metadata = metadata
            try writer.write(Array(blobs.prefix(blobs.count / 2)))
            emitLine("half-written \(path)")
            usleep(200_000)
            try writer.write(Array(blobs.dropFirst(blobs.count / 2)))
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
    }
}

/// The demo's training settings, shared by the demo and its child.
struct DemoSettings: ParsableArguments {
    @Option(help: "Epochs of the job.")
    var epochs: Int = 8

    @Option(help: "Layers (each a hidden x hidden fp32 weight matrix and its momentum).")
    var layers: Int = 4

    @Option(help: "Hidden size.")
    var hidden: Int = 1024

    var training: DemoTraining { DemoTraining(layers: layers, hidden: hidden, epochs: epochs) }
    static let retention = RetentionPolicy(keepLatest: 3)
}

/// `ckpt demo`: the README's main job.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a small training job with checkpoints, crash it mid-save, resume it and check every byte.",
        discussion: "A child process trains with JobRunner + CheckpointManager (a checkpoint per epoch, fsync'd, the latest 3 kept) and is killed with SIGKILL while it writes a checkpoint. This process then resumes from the newest complete epoch, checks the loaded blobs bit for bit against a recomputation, and finishes the job.")

    @Option(help: "Work in this directory (kept afterwards) instead of a temporary one (removed).")
    var dir: String?

    @OptionGroup var settings: DemoSettings
    @OptionGroup var output: OutputOptions

    func run() throws {
        guard settings.epochs >= 4, settings.layers >= 1, settings.hidden >= 16 else { throw ValidationError("need --epochs >= 4, --layers >= 1, --hidden >= 16") }
        let training = settings.training
        let workDirectory = dir ?? joinPath(NSTemporaryDirectory(), "ckpt-demo-\(getpid())")
        let prefix = joinPath(workDirectory, "checkpoints")
        defer { if dir == nil { try? FileManager.default.removeItem(atPath: workDirectory) } }
        try reportingErrors(output) {
            try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
            try demo(training, prefix: prefix)
        }
    }

    func demo(_ training: DemoTraining, prefix: String) throws {
        let perCheckpoint = training.checkpointBytes
        print("ckpt demo: \(training.layers) layers of \(training.hidden)x\(training.hidden) fp32 weights + momentum, \(formatBytes(perCheckpoint)) per checkpoint, \(training.epochs) epochs")
        print("checkpoints in \(prefix) (durable: fsync + rename + directory fsync; keep the latest 3)")
        print("")

        // 1. A child trains from scratch; kill it while it writes the checkpoint after epoch 3.
        let crashEpoch = min(4, training.epochs - 1)
        print("1. A child process trains from scratch; it is killed with SIGKILL while it saves epoch \(crashEpoch).")
        let child = try runChild(prefix: prefix, killWhileSaving: crashEpoch)
        print("   (the child pauses half-way through each save, so that the kill lands inside one)")
        print("   child: killed while writing \(URL(fileURLWithPath: child.killedWhileSaving).lastPathComponent); committed epochs: \(child.committed.map(String.init).joined(separator: ", "))")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: prefix).filter { $0.contains(".tmp.") }) ?? []
        print("   on disk: \(leftovers.count) abandoned temporary file(s); \(FileManager.default.fileExists(atPath: child.killedWhileSaving) ? "the checkpoint being written EXISTS under its final name" : "nothing under the final name of the checkpoint being written")")
        print("")

        // 2. Resume in this process: the newest complete epoch, checked bit for bit.
        print("2. Resume: ask the metadata for the newest complete epoch, load it, compare with a recomputation.")
        let handler = AnnouncingHandler(DurableMetadataHandler(retention: DemoSettings.retention)) { _ in }
        let manager = try CheckpointManager(dbPrefix: prefix, nodeName: training.node, metadataHandler: handler)
        try manager.setParams()
        guard let resume = try manager.getResumeFromEpochID(userEpoch: nil) else {
            throw CheckpointError(.checkpointNotFound(epoch: 0), path: prefix)
        }
        guard resume >= (child.committed.max() ?? -1) else {
            throw CheckpointError(.invalidState(reason: "epoch \(child.committed.max()!) was committed but the resume epoch is \(resume)"))
        }
        try manager.initialize(retrieveFromEpoch: resume)
        let loadStart = ContinuousClock.now
        try manager.load(epoch: resume)
        let loadTime = ContinuousClock.now - loadStart
        let mismatches = try training.mismatches(in: manager.workspace, epoch: resume)
        guard mismatches.isEmpty else {
            throw CheckpointError(.invalidState(reason: "blobs differ from the recomputation after epoch \(resume): \(mismatches.joined(separator: ", "))"))
        }
        let loadNanoseconds = UInt64(loadTime.components.seconds) * 1_000_000_000 + UInt64(loadTime.components.attoseconds / 1_000_000_000)
        print("   newest complete epoch: \(resume) (the child's last commit); loaded \(manager.workspace.count) blobs in \(ms(loadNanoseconds)) (\(rate(perCheckpoint, loadNanoseconds))), CRC32C verified")
        print("   all \(manager.workspace.count) blobs are bit-exact with a recomputation of epoch \(resume)")
        print("")

        // 3. Finish the job from there with JobRunner.
        print("3. Finish the job with JobRunner from epoch \(resume).")
        let saves = LockedSaves()
        let finisher = AnnouncingHandler(DurableMetadataHandler(retention: DemoSettings.retention)) { line in saves.record(line) }
        let finishing = try CheckpointManager(dbPrefix: prefix, nodeName: training.node, metadataHandler: finisher)
        var quietLogger = Logger(label: "ckpt.demo")
        quietLogger.logLevel = .warning
        let last = try JobRunner(job: training.makeJob(), checkpointManager: finishing, logger: quietLogger).train()
        let finalMismatches = try training.mismatches(in: finishing.workspace, epoch: last)
        for (epoch, nanoseconds) in saves.saves { print("   epoch \(epoch) saved in \(ms(nanoseconds)) (\(rate(perCheckpoint, nanoseconds)))") }
        print("   finished at epoch \(last); final state bit-exact: \(finalMismatches.isEmpty ? "yes" : "NO")")
        let files = (try FileManager.default.contentsOfDirectory(atPath: prefix)).filter { !$0.hasPrefix(".") && !$0.hasSuffix(".lock") }.sorted()
        print("   on disk now: \(files.joined(separator: ", ")) (retention keeps the latest 3, and epoch \(resume) this run resumed from; abandoned temporaries removed)")
        print("")
        let median = saves.saves.map(\.1).sorted()[saves.saves.count / 2]
        print("Summary: \(child.committed.count + saves.saves.count) checkpoints of \(formatBytes(perCheckpoint)); median durable save \(ms(median)) (\(rate(perCheckpoint, median))); "
              + "crash lost nothing committed; resume from epoch \(resume) bit-exact.")
        guard finalMismatches.isEmpty else { throw CheckpointError(.invalidState(reason: "final state differs from the recomputation")) }
    }

    struct ChildRun {
        var committed: [Int] = []
        var killedWhileSaving = ""
    }

    /// Runs `ckpt demo-child` and kills it a few milliseconds into the save of `epoch`.
    func runChild(prefix: String, killWhileSaving epoch: Int) throws -> ChildRun {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["demo-child", prefix, "--epochs", "\(settings.epochs)", "--layers", "\(settings.layers)", "--hidden", "\(settings.hidden)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        var run = ChildRun()
        var buffer = ""
        let target = CheckpointNaming.dbName(epoch: epoch, nodeName: settings.training.node, dbPrefix: prefix)
        reading: while true {
            let data = pipe.fileHandleForReading.availableData
            if data.isEmpty { break }
            buffer += String(decoding: data, as: UTF8.self)
            while let newline = buffer.firstIndex(of: "\n") {
                let line = String(buffer[..<newline])
                buffer.removeSubrange(...newline)
                let parts = line.split(separator: " ")
                if parts.first == "committed", let value = Int(parts[1]) { run.committed.append(value) }
                if parts.first == "half-written", String(parts[1]) == target {
                    // Half of the blobs are in the temporary file: pull the plug.
                    kill(process.processIdentifier, SIGKILL)
                    run.killedWhileSaving = target
                    break reading
                }
            }
        }
        process.waitUntilExit()
        guard !run.killedWhileSaving.isEmpty else {
            throw CheckpointError(.invalidState(reason: "the child finished before it could be killed (status \(process.terminationStatus))"))
        }
        return run
    }

    func ms(_ nanoseconds: UInt64) -> String { formatDuration(Double(nanoseconds) / 1e9) }
    func rate(_ bytes: Int, _ nanoseconds: UInt64) -> String { formatRate(bytes: bytes, seconds: Double(max(nanoseconds, 1)) / 1e9) }
}

/// Collects `checkpoint_save` timings announced by a handler.
final class LockedSaves: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var saves: [(Int, UInt64)] = []
    func record(_ line: String) {
        let parts = line.split(separator: " ")
        guard parts.first == "checkpoint_save", parts.count == 3, let nanoseconds = UInt64(parts[1]), let epoch = Int(parts[2].split(separator: ".").last ?? "") else { return }
        lock.lock()
        saves.append((epoch, nanoseconds))
        lock.unlock()
    }
}

/// The demo's child: trains from scratch (or resumes), announcing saves and commits on stdout.
struct DemoChild: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo-child", abstract: "The process `ckpt demo` kills.", shouldDisplay: false)

    @Argument var prefix: String
    @OptionGroup var settings: DemoSettings

    func run() throws {
        let training = settings.training
        let handler = AnnouncingHandler(DurableMetadataHandler(retention: DemoSettings.retention)) { emitLine($0) }
        let manager = try CheckpointManager(dbPrefix: prefix, nodeName: training.node, metadataHandler: handler,
                                            options: CheckpointOptions(storage: AnnouncingStorage()))
        var quietLogger = Logger(label: "ckpt.demo-child")
        quietLogger.logLevel = .warning
        try JobRunner(job: training.makeJob(), checkpointManager: manager, logger: quietLogger).train()
    }
}

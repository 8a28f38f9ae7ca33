// checkpoint-stress: the child process of the crash tests.
//
//     checkpoint-stress save PREFIX NODE   (see saveByHand)
//     checkpoint-stress child PREFIX [--node NAME] [--blobs N] [--bytes B]
//                                    [--epochs MAX] [--keep-latest K] [--durability none|fileData|full]
//                                    [--append-log PATH] [--file-size-limit BYTES] [--incremental K]
//
// --incremental K saves incrementally (a full checkpoint every K saves), and
// each epoch E changes only blob w(E mod N): the other blobs keep their
// tensors, so they are saved as blob references (StressContent.lastChange
// says which epoch's content each blob holds).
//
// --file-size-limit sets RLIMIT_FSIZE (with SIGXFSZ ignored), so that writes
// past it fail with EFBIG: a real "disk full" for one process.
//
// Runs a JobRunner job on CheckpointManager + DurableMetadataHandler under
// PREFIX: each epoch sets blob "epoch" (Int64) to the epoch and blobs w0…wN-1
// to `StressContent.bytes(blob:epoch:count:)`, then checkpoints. It resumes
// from whatever the metadata says, so a killed child can be started again.
// After the metadata of an epoch is durably written it prints
// "committed EPOCH" on stdout (flushed), which is what a crash test may
// rely on: no epoch printed may ever be lost. With --append-log, each
// committed epoch is then also appended to one container file (blob
// "epoch.N": StressContent of blob 0 at epoch N, 4 KiB, deleting "epoch.N-3" in
// the same commit) and "appended N" printed.
import CheckpointIO
import Glibc

/// Wraps the durable handler and reports each committed epoch on stdout.
final class ReportingHandler: CheckpointMetadataHandler, @unchecked Sendable {
    let inner: DurableMetadataHandler
    let appendLog: String?
    init(_ inner: DurableMetadataHandler, appendLog: String?) {
        self.inner = inner
        self.appendLog = appendLog
    }
    func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError) {
        try inner.setParams(dbPrefix: dbPrefix, dbType: dbType, nodeNames: nodeNames, pathPrefix: pathPrefix, pathType: pathType)
    }
    func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int? {
        let epoch = try inner.lastEpoch(userEpoch: userEpoch)
        emit("resumed \(epoch.map(String.init) ?? "none")", to: 1)
        return epoch
    }
    func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool { try inner.cpAccessible(epoch: epoch) }
    func write(epoch: Int, metric: Double?) throws(CheckpointError) {
        try inner.write(epoch: epoch, metric: metric)
        emit("committed \(epoch)", to: 1)
        guard let appendLog else { return }
        let bytes = StressContent.bytes(blob: 0, epoch: epoch, count: 4096)
        let writer = access(appendLog, F_OK) == 0 ? try ContainerWriter.append(to: appendLog) : try ContainerWriter.create(at: appendLog)
        do throws(CheckpointError) {
            let result = bytes.withUnsafeBytes { (buffer) -> Result<Void, CheckpointError> in
                do throws(CheckpointError) {
                    try writer.write([BlobSource(name: "epoch.\(epoch)", dtype: .uint8, shape: [buffer.count], bytes: buffer)])
                    // Keep the live set (and so each appended index) small: the file grows linearly.
                    if writer.names.contains("epoch.\(epoch - 3)") { try writer.delete("epoch.\(epoch - 3)") }
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            try result.get()
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        emit("appended \(epoch)", to: 1)
    }
    func report(action: String, stats: [String: UInt64]) { inner.report(action: action, stats: stats) }
    /// Forwarded, so a resume from a damaged newest epoch falls back as the durable handler does.
    func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int? {
        try inner.fallBack(fromDamagedEpoch: epoch, reason: reason)
    }
}

/// Writes one line straight to a file descriptor (unbuffered: the process may be killed at any moment).
func emit(_ line: String, to fd: Int32) {
    var text = line + "\n"
    text.withUTF8 { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
}

func fail(_ message: String) -> Never {
    emit("checkpoint-stress: \(message)", to: 2)
    exit(2)
}

func integer(_ value: String, _ flag: String) -> Int {
    guard let number = Int(value), number >= 0 else { fail("bad \(flag) \(value)") }
    return number
}

/// Pauses every checkpoint write (after the manager took its writer lock)
/// until a line arrives on stdin, saying "saving" on stdout first.
struct PausingStorage: CheckpointStorageDecorator {
    let base: any CheckpointStorage = LocalCheckpointStorage()
    func writeCheckpoint(_ blobs: [BlobSource], metadata: [String: String], to path: String,
                         format: CheckpointFormat, options: WriterOptions) throws(CheckpointError) {
        emit("saving", to: 1)
        _ = readLine()
        try base.writeCheckpoint(blobs, metadata: metadata, to: path, format: format, options: options)
    }
}

/// `checkpoint-stress save PREFIX NODE`: a save by hand (Caffe2's
/// `CheckpointManager.save`, no JobRunner) of epoch 1, blob "w" = Int64 41,
/// paused mid-write until a line arrives on stdin. Prints "saving" when paused,
/// "saved" when done; "locked" (exit 3) when another writer holds the node's
/// writer lock; other errors exit 2.
func saveByHand(_ arguments: [String]) -> Never {
    guard arguments.count == 2 else { fail("usage: checkpoint-stress save PREFIX NODE") }
    do throws(CheckpointError) {
        let manager = try CheckpointManager(dbPrefix: arguments[0], nodeName: arguments[1], workspace: Workspace(["w": Tensor(scalar: Int64(41))]),
                                            options: CheckpointOptions(storage: PausingStorage()))
        try manager.initialize()
        try manager.save(epoch: 1)
        emit("saved", to: 1)
        exit(0)
    } catch where error.code == .writerLocked {
        emit("locked", to: 1)
        exit(3)
    } catch {
        fail("\(error)")
    }
}

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "dist-child" { runDistributedChild(arguments) }
if arguments.first == "dist-bench" { runDistributedBench(arguments) }
if arguments.first == "save" { saveByHand(Array(arguments.dropFirst())) }
guard arguments.first == "child", arguments.count >= 2 else {
    fail("usage: checkpoint-stress child PREFIX [--node NAME] [--blobs N] [--bytes B] [--epochs MAX] [--keep-latest K] [--durability none|fileData|full]")
}
let prefix = arguments[1]
var node = "trainer_0", blobCount = 4, byteCount = 65536, maxEpochs = 1_000_000, keepLatest: Int? = nil
var appendLog: String?
var fileSizeLimit: Int?
var incremental: Int?
var durability = Durability.full
var index = 2
while index < arguments.count {
    let flag = arguments[index]
    guard index + 1 < arguments.count else { fail("\(flag) needs a value") }
    let value = arguments[index + 1]
    switch flag {
    case "--node": node = value
    case "--blobs": blobCount = integer(value, flag)
    case "--bytes": byteCount = integer(value, flag)
    case "--epochs": maxEpochs = integer(value, flag)
    case "--keep-latest": keepLatest = integer(value, flag)
    case "--append-log": appendLog = value
    case "--file-size-limit": fileSizeLimit = integer(value, flag)
    case "--incremental": incremental = max(1, integer(value, flag))
    case "--durability":
        guard let parsed = Durability(rawValue: value) else { fail("bad --durability \(value)") }
        durability = parsed
    default: fail("unknown option \(flag)")
    }
    index += 2
}

if let fileSizeLimit {
    signal(SIGXFSZ, SIG_IGN)
    var limit = rlimit(rlim_cur: rlim_t(fileSizeLimit), rlim_max: rlim_t(fileSizeLimit))
    guard setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit) == 0 else { fail("setrlimit(RLIMIT_FSIZE) failed") }
}

let blobNames = (0..<blobCount).map { "w\($0)" }
let job = Job()
job.addInitStep(node: node) { workspace in
    workspace["epoch"] = Tensor(scalar: Int64(0))
    for (i, name) in blobNames.enumerated() {
        workspace[name] = try Tensor(dtype: .uint8, shape: [byteCount], bytes: StressContent.bytes(blob: i, epoch: 0, count: byteCount))
    }
}
job.addEpochStep(node: node) { workspace in
    let epoch = try workspace.fetchBlob("epoch").scalars(as: Int64.self)[0] + 1
    workspace["epoch"] = Tensor(scalar: epoch)
    for (i, name) in blobNames.enumerated() where incremental == nil || Int(epoch) % blobNames.count == i {
        workspace[name] = try Tensor(dtype: .uint8, shape: [byteCount], bytes: StressContent.bytes(blob: i, epoch: Int(epoch), count: byteCount))
    }
}
job.addStopCondition(node: node) { workspace in
    try workspace.fetchBlob("epoch").scalars(as: Int64.self)[0] >= Int64(maxEpochs)
}

do {
    let handler = ReportingHandler(DurableMetadataHandler(retention: RetentionPolicy(keepLatest: keepLatest)), appendLog: appendLog)
    var options = CheckpointOptions(writer: WriterOptions(durability: durability))
    options.incremental = incremental.map { IncrementalOptions(fullEvery: $0) }
    let manager = try CheckpointManager(dbPrefix: prefix, nodeName: node, metadataHandler: handler, options: options)
    let runner = JobRunner(job: job, checkpointManager: manager)
    let last = try runner.train()
    emit("finished \(last)", to: 1)
} catch {
    fail("\(error)")
}

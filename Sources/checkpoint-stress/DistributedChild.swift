// The distributed modes of checkpoint-stress: one process (rank) of a job that
// runs as several processes on one shared prefix.
//
//     checkpoint-stress dist-child PREFIX --rank R --world W --run ID [--blobs N] [--bytes B]
//                                  [--epochs MAX] [--keep-latest K] [--durability none|fileData|full]
//                                  [--slow-ms MS] [--wait-seconds S]
//
// Runs a JobRunner job on DistributedCheckpointManager (node trainer_R of
// trainer_0…trainer_W-1): each epoch sets blob "epoch" (Int64) to the epoch
// and blobs rR.w0…rR.wN-1 to `StressContent.bytes(blob: R*1000+i, epoch:, count: B)`
// (--slow-ms: sleeps that long in each epoch), then checkpoints. Prints
// (unbuffered) "resumed E|none", "published E", "complete E", "completer E",
// "dropped E", "abandoned E" as they happen and "finished E" at the end.
//
//     checkpoint-stress dist-bench PREFIX --rank R --world W --run ID --bytes TOTAL [--plain]
//                                  [--start-at UNIX_NS] [--durability D]
//
// Saves one epoch of TOTAL bytes (4 blobs) once, starting at --start-at
// (so that W processes start together), and prints
// "bench START_NS END_NS FILES_NS PUBLISH_NS COMPLETE_NS WAIT_NS" (wall-clock
// nanoseconds): with --plain a CheckpointManager save alone, no commit protocol.
import CheckpointIO
import Glibc

func wallClockNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

struct DistributedOptions {
    var prefix = ""
    var rank = 0, world = 1, runID = "run"
    var blobCount = 4, byteCount = 65536, maxEpochs = 1_000_000
    var keepLatest: Int?
    var durability = Durability.full
    var slowMilliseconds = 0
    var waitSeconds: Double?
    var plain = false
    var startAt: UInt64 = 0

    init(_ arguments: [String]) {
        guard arguments.count >= 2 else { fail("usage: checkpoint-stress dist-child|dist-bench PREFIX --rank R --world W --run ID …") }
        prefix = arguments[1]
        var index = 2
        while index < arguments.count {
            let flag = arguments[index]
            if flag == "--plain" { plain = true; index += 1; continue }
            guard index + 1 < arguments.count else { fail("\(flag) needs a value") }
            let value = arguments[index + 1]
            switch flag {
            case "--rank": rank = integer(value, flag)
            case "--world": world = integer(value, flag)
            case "--run": runID = value
            case "--blobs": blobCount = integer(value, flag)
            case "--bytes": byteCount = integer(value, flag)
            case "--epochs": maxEpochs = integer(value, flag)
            case "--keep-latest": keepLatest = integer(value, flag)
            case "--slow-ms": slowMilliseconds = integer(value, flag)
            case "--wait-seconds":
                guard let seconds = Double(value), seconds >= 0 else { fail("bad \(flag) \(value)") }
                waitSeconds = seconds
            case "--start-at":
                guard let instant = UInt64(value) else { fail("bad \(flag) \(value)") }
                startAt = instant
            case "--durability":
                guard let parsed = Durability(rawValue: value) else { fail("bad --durability \(value)") }
                durability = parsed
            default: fail("unknown option \(flag)")
            }
            index += 2
        }
    }

    func manager() throws(CheckpointError) -> DistributedCheckpointManager {
        let wait = waitSeconds.map { DistributedCheckpointManager.CompletionWait.upTo(.milliseconds(Int($0 * 1000))) } ?? .none
        return try DistributedCheckpointManager(dbPrefix: prefix, rank: rank, worldSize: world, runID: runID,
                                                retention: RetentionPolicy(keepLatest: keepLatest), completionWait: wait,
                                                options: CheckpointOptions(writer: WriterOptions(durability: durability)))
    }
}

func runDistributedChild(_ arguments: [String]) -> Never {
    let options = DistributedOptions(arguments)
    let node = "trainer_\(options.rank)"
    let names = (0..<options.blobCount).map { "r\(options.rank).w\($0)" }
    let job = Job()
    job.addInitStep(node: node) { workspace in
        workspace["epoch"] = Tensor(scalar: Int64(0))
        for (i, name) in names.enumerated() {
            workspace[name] = try Tensor(dtype: .uint8, shape: [options.byteCount],
                                         bytes: StressContent.bytes(blob: options.rank * 1000 + i, epoch: 0, count: options.byteCount))
        }
    }
    job.addEpochStep(node: node) { workspace in
        if options.slowMilliseconds > 0 { usleep(UInt32(options.slowMilliseconds) * 1000) }
        let epoch = try workspace.fetchBlob("epoch").scalars(as: Int64.self)[0] + 1
        workspace["epoch"] = Tensor(scalar: epoch)
        for (i, name) in names.enumerated() {
            workspace[name] = try Tensor(dtype: .uint8, shape: [options.byteCount],
                                         bytes: StressContent.bytes(blob: options.rank * 1000 + i, epoch: Int(epoch), count: options.byteCount))
        }
    }
    job.addStopCondition(node: node) { workspace in
        try workspace.fetchBlob("epoch").scalars(as: Int64.self)[0] >= Int64(options.maxEpochs)
    }
    do {
        let manager = try options.manager()
        manager.commitObserver = { event in
            switch event {
            case let .published(epoch): emit("published \(epoch)", to: 1)
            case let .completed(epoch, byThisProcess):
                emit("complete \(epoch)", to: 1)
                if byThisProcess { emit("completer \(epoch)", to: 1) }
            case let .dropped(epoch): emit("dropped \(epoch)", to: 1)
            case let .abandoned(epoch): emit("abandoned \(epoch)", to: 1)
            }
        }
        let runner = JobRunner(job: job, checkpointManager: manager)
        // JobRunner asks for the resume epoch first; print it as the single-node child does.
        try manager.setParams(nodes: [node])
        let resume = try manager.getResumeFromEpochID(userEpoch: nil)
        emit("resumed \(resume.map(String.init) ?? "none")", to: 1)
        let last = try runner.train()
        emit("finished \(last)", to: 1)
        exit(0)
    } catch {
        fail("\(error)")
    }
}

func runDistributedBench(_ arguments: [String]) -> Never {
    let options = DistributedOptions(arguments)
    let node = "trainer_\(options.rank)"
    let perBlob = options.byteCount / 4
    do {
        let workspace: Workspace
        let distributed: DistributedCheckpointManager?
        let plain: CheckpointManager?
        if options.plain {
            plain = try CheckpointManager(dbPrefix: options.prefix, nodeName: node,
                                          options: CheckpointOptions(writer: WriterOptions(durability: options.durability)))
            distributed = nil
            workspace = plain!.workspace
        } else {
            var bench = options
            bench.waitSeconds = bench.waitSeconds ?? 600
            distributed = try bench.manager()
            plain = nil
            workspace = distributed!.workspace(forNode: node)
        }
        for i in 0..<4 {
            workspace["r\(options.rank).w\(i)"] = try Tensor(dtype: .uint8, shape: [perBlob],
                                                            bytes: StressContent.bytes(blob: options.rank * 1000 + i, epoch: 1, count: perBlob))
        }
        try plain?.initialize()
        try distributed?.initialize()
        while wallClockNanoseconds() < options.startAt { usleep(200) }
        let start = wallClockNanoseconds()
        try plain?.save(epoch: 1)
        try distributed?.save(epoch: 1)
        let filesDone = wallClockNanoseconds()
        try distributed?.writeCheckpointMetadata(epoch: 1)
        let end = wallClockNanoseconds()
        let timings = distributed?.lastCommitTimings
        emit("bench \(start) \(end) \(filesDone - start) \(timings?.publishNanoseconds ?? 0) \(timings?.completeNanoseconds ?? 0) \(timings?.waitNanoseconds ?? 0)", to: 1)
        exit(0)
    } catch {
        fail("\(error)")
    }
}

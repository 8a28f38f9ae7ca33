@testable import CheckpointIO
import Foundation
import Testing

/// Counts the write-path system calls of a save and fails the chosen one.
final class FaultInjector: @unchecked Sendable {
    enum Fault: String, CaseIterable {
        case enospc, eio, shortWrite, eintr
    }

    private let lock = NSLock()
    private var index = 0
    private var target: (index: Int, fault: Fault)?
    private(set) var log: [String] = []
    private(set) var fired = false

    func arm(_ index: Int, _ fault: Fault) {
        lock.lock(); defer { lock.unlock() }
        self.index = 0
        target = (index, fault)
        log = []
        fired = false
    }

    func disarm() {
        lock.lock(); defer { lock.unlock() }
        target = nil
    }

    /// Counts a call; the fault to apply to it, if it is the chosen one.
    func tick(_ name: String, canBeShort: Bool = false) -> Fault? {
        lock.lock(); defer { lock.unlock() }
        defer { index += 1 }
        log.append(name)
        guard let target, target.index == index else { return nil }
        if target.fault == .shortWrite && !canBeShort { return nil }
        fired = true
        return target.fault
    }

    /// The live system calls, with every write-path call counted and fallible.
    var calls: SystemCalls {
        var calls = SystemCalls.live
        let live = SystemCalls.live
        func fail(_ fault: Fault) -> Int32 {
            switch fault {
            case .enospc: errno = ENOSPC
            case .eio: errno = EIO
            case .eintr, .shortWrite: errno = EINTR
            }
            return -1
        }
        calls.open = { path, flags, mode in
            guard flags & (O_WRONLY | O_RDWR | O_CREAT) != 0 || flags & O_DIRECTORY != 0, let fault = self.tick("open") else { return live.open(path, flags, mode) }
            return fail(fault)
        }
        calls.pwritev = { fd, vectors, count, offset in
            guard let fault = self.tick("pwritev", canBeShort: true) else { return live.pwritev(fd, vectors, count, offset) }
            if fault == .shortWrite {
                // Write part of the first vector only: the caller must continue.
                var first = vectors[0]
                first.iov_len = max(1, first.iov_len / 2)
                return withUnsafePointer(to: &first) { live.pwritev(fd, $0, 1, offset) }
            }
            return Int(fail(fault))
        }
        calls.copyFileRange = { a, b, c, d, length in
            guard let fault = self.tick("copy_file_range", canBeShort: true) else { return live.copyFileRange(a, b, c, d, length) }
            if fault == .shortWrite { return live.copyFileRange(a, b, c, d, max(1, length / 2)) }
            return Int(fail(fault))
        }
        calls.fdatasync = { fd in self.tick("fdatasync").map(fail) ?? live.fdatasync(fd) }
        calls.fsync = { fd in self.tick("fsync").map(fail) ?? live.fsync(fd) }
        calls.ftruncate = { fd, length in self.tick("ftruncate").map(fail) ?? live.ftruncate(fd, length) }
        calls.flock = { fd, operation in self.tick("flock").map(fail) ?? live.flock(fd, operation) }
        calls.rename = { from, to in self.tick("rename").map(fail) ?? live.rename(from, to) }
        calls.unlink = { path in self.tick("unlink").map(fail) ?? live.unlink(path) }
        return calls
    }
}

@Suite("Fault injection")
struct FaultInjectionTests {
    /// Every write-path call of a save and its metadata update fails in turn
    /// with ENOSPC, EIO, a short write and EINTR. Afterwards: a clean error
    /// (or success for short writes and EINTR), the previous checkpoint and
    /// metadata intact and loadable, nothing incomplete under a final name.
    @Test func everyWritePathCallFailsInTurn() throws {
        try withTemporaryDirectory { dir in
            let injector = FaultInjector()
            let storage = LocalCheckpointStorage(calls: injector.calls)
            var generator = SyntheticData(seed: 1)
            let epoch1 = try Tensor(dtype: .float32, shape: [1024], bytes: generator.float32Weights(count: 1024))
            let epoch2 = try Tensor(dtype: .float32, shape: [1024], bytes: generator.float32Weights(count: 1024))

            func makeManager() throws -> (CheckpointManager, DurableMetadataHandler) {
                let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1), storage: storage)
                let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: handler,
                                                    workspace: Workspace(["w": epoch1, "step": Tensor(scalar: Int64(1))]),
                                                    options: CheckpointOptions(storage: storage))
                try manager.setParams()
                try manager.initialize()
                return (manager, handler)
            }
            /// Saves epoch 2 as JobRunner does: the metadata only after the save succeeded.
            func saveEpoch2(_ manager: CheckpointManager) throws(CheckpointError) {
                manager.workspace["w"] = epoch2
                manager.workspace["step"] = Tensor(scalar: Int64(2))
                try manager.save(epoch: 2)
                try manager.writeCheckpointMetadata(epoch: 2)
            }

            // Epoch 1, without faults; then count the calls of a fault-free epoch-2 save.
            injector.disarm()
            let baseline = try fileCopy(of: dir)
            var (manager, _) = try makeManager()
            try manager.save(epoch: 1)
            try manager.writeCheckpointMetadata(epoch: 1)
            manager.releaseWriterLock()
            let afterEpoch1 = try fileCopy(of: dir)
            _ = baseline
            injector.arm(Int.max, .eio)
            (manager, _) = try makeManager()
            try saveEpoch2(manager)
            manager.releaseWriterLock()
            let callCount = injector.log.count
            let callNames = injector.log
            #expect(callCount > 10, "\(callNames)")

            var outcomes: [String: Int] = [:]
            for fault in FaultInjector.Fault.allCases {
                for index in 0..<callCount {
                    try restore(afterEpoch1, into: dir)
                    injector.disarm()
                    (manager, _) = try makeManager()
                    injector.arm(index, fault)
                    var thrown: CheckpointError?
                    do throws(CheckpointError) { try saveEpoch2(manager) } catch { thrown = error }
                    let fired = injector.fired
                    injector.disarm()
                    manager.releaseWriterLock()
                    let label = "\(fault) at call \(index) (\(callNames[index]))"
                    switch fault {
                    case .eintr, .shortWrite:
                        #expect(thrown == nil, "\(label): \(thrown.map { "\($0)" } ?? "")")
                    case .enospc, .eio:
                        if fired, let thrown {
                            // A clean error names the call and errno.
                            #expect("\(thrown)".contains("ENOSPC") || "\(thrown)".contains("EIO"), "\(label): \(thrown)")
                        }
                    }
                    outcomes["\(fault) \(thrown == nil ? "ok" : "error")", default: 0] += 1
                    try checkInvariants(dir: dir, storage: storage, label: label, epoch1: epoch1, epoch2: epoch2)
                }
            }
            print("fault injection: \(callCount) write-path calls per save (\(Set(callNames).sorted().joined(separator: ", "))); outcomes: \(outcomes.sorted { $0.key < $1.key })")
        }
    }

    /// After any fault: the metadata names epoch 1 or 2, that epoch loads bit-exact, and every file under a final name is complete.
    func checkInvariants(dir: String, storage: LocalCheckpointStorage, label: String, epoch1: Tensor, epoch2: Tensor) throws {
        let handler = DurableMetadataHandler(storage: storage)
        let manager = try CheckpointManager(dbPrefix: dir, nodeName: "n", metadataHandler: handler, options: CheckpointOptions(storage: storage))
        try manager.setParams()
        let resume = try #require(try manager.getResumeFromEpochID(userEpoch: nil), "\(label): no resumable epoch")
        #expect(resume == 1 || resume == 2, "\(label)")
        try manager.initialize(retrieveFromEpoch: resume)
        try manager.load(epoch: resume)
        #expect(manager.workspace.blob("w") == (resume == 1 ? epoch1 : epoch2), "\(label)")
        #expect(try int64(manager.workspace, "step") == Int64(resume), "\(label)")
        for name in directoryListing(dir) where !name.hasPrefix(".") && !name.hasSuffix(".lock") && name != DurableMetadataHandler.fileName {
            let epoch = try #require(Int(name.dropFirst(2)), "\(label): unexpected file \(name)")
            #expect(manager.checkDBExists(epoch: epoch), "\(label): \(name) is incomplete under its final name")
        }
    }

    func fileCopy(of dir: String) throws -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for name in directoryListing(dir) { files[name] = try fileBytes(dir + "/" + name) }
        return files
    }

    func restore(_ files: [String: [UInt8]], into dir: String) throws {
        for name in directoryListing(dir) { try FileManager.default.removeItem(atPath: dir + "/" + name) }
        for (name, bytes) in files { try writeBytes(dir + "/" + name, bytes) }
    }
}

@Suite("A real file size limit")
struct FileSizeLimitTests {
    /// A child whose RLIMIT_FSIZE is below a checkpoint's size: every save fails
    /// with EFBIG, the job still ends, and the last checkpoint from before stays
    /// the resume point, bit-exact, with nothing under a final name.
    @Test func efbigFailsSavesCleanly() throws {
        let executable = productsDirectory().appendingPathComponent("checkpoint-stress").path
        try withTemporaryDirectory { dir in
            func child(_ extra: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = ["child", dir, "--blobs", "2", "--bytes", "300000", "--durability", "fileData"] + extra
                let out = Pipe(), err = Pipe()
                process.standardOutput = out
                process.standardError = err
                try process.run()
                let errData = err.fileHandleForReading.readDataToEndOfFile()
                let outData = out.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
            }
            let first = try child(["--epochs", "2"])
            #expect(first.status == 0 && first.stdout.contains("committed 2"), "\(first.stderr)")
            // A checkpoint is ~600 KB; the limit is 100 KB: saves of epochs 3 and 4 fail with EFBIG.
            let limited = try child(["--epochs", "4", "--file-size-limit", "100000"])
            #expect(limited.status == 0, "\(limited.stderr)")
            #expect(limited.stdout.contains("finished 4"))
            #expect(!limited.stdout.contains("committed 3") && !limited.stdout.contains("committed 4"))
            #expect(limited.stderr.contains("EFBIG"), "\(limited.stderr)")
            #expect(!fileExists(dir + "/trainer_0.3") && !fileExists(dir + "/trainer_0.4"))
            #expect(directoryListing(dir).allSatisfy { !$0.contains(".tmp.") })

            let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
            try manager.setParams()
            #expect(try manager.getResumeFromEpochID(userEpoch: nil) == 2)
            try manager.initialize(retrieveFromEpoch: 2)
            try manager.load(epoch: 2)
            #expect(try manager.workspace.fetchBlob("w0").bytes == StressContent.bytes(blob: 0, epoch: 2, count: 300000))
        }
    }
}

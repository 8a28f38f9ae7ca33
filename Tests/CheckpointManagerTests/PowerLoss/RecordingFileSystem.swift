@testable import CheckpointIO
import Foundation

/// A workload's own note in the call log: "epoch 2 was reported complete".
struct WorkloadMark: Sendable {
    var label: String
    /// The epoch the workload was told is complete, if any.
    var epoch: Int?
    /// What the metadata file named right after (DurableMetadataHandler workloads).
    var records: [Int]?
}

/// One call the recording layer saw, in the order the kernel ran it.
/// Files are identified by inode (a number the recorder hands out), names by
/// their base name inside the recorded directory.
enum RecordedOperation: CustomStringConvertible {
    case create(name: String, inode: Int)
    case write(inode: Int, offset: Int, bytes: [UInt8])
    case truncate(inode: Int, length: Int)
    /// A successful `fsync` or `fdatasync` of a file.
    case sync(inode: Int, call: String)
    /// A failed one (not EINTR): the kernel may have dropped the file's dirty pages.
    case syncFailed(inode: Int, call: String)
    case syncDirectory
    case syncDirectoryFailed
    case rename(from: String, to: String, inode: Int)
    case unlink(name: String, inode: Int)
    case close(inode: Int)
    case mark(WorkloadMark)

    var description: String {
        switch self {
        case let .create(name, inode): return "create \(name) (#\(inode))"
        case let .write(inode, offset, bytes): return "pwrite #\(inode) [\(offset), \(offset + bytes.count))"
        case let .truncate(inode, length): return "ftruncate #\(inode) to \(length)"
        case let .sync(inode, call): return "\(call) #\(inode)"
        case let .syncFailed(inode, call): return "\(call) #\(inode) FAILED"
        case .syncDirectory: return "fsync directory"
        case .syncDirectoryFailed: return "fsync directory FAILED"
        case let .rename(from, to, inode): return "rename \(from) -> \(to) (#\(inode))"
        case let .unlink(name, inode): return "unlink \(name) (#\(inode))"
        case let .close(inode): return "close #\(inode)"
        case let .mark(mark): return "mark: \(mark.label)"
        }
    }
}

/// Test support: ``SystemCalls`` that run the real calls on a real directory
/// and log every mutating one (open/create, pwritev, copy_file_range,
/// ftruncate, fsync, fdatasync, directory fsync, rename, unlink, close) with
/// its bytes, for ``CrashStateModel``.
///
/// Scope: one flat directory, `root` (the managers keep every file of a
/// prefix directly in it and never create directories, so no `mkdir` is
/// needed). The files already in `root` when the recorder is made are taken
/// as durable: set-up happens before it. Mutating calls and syncs run under
/// one lock together with their logging, so the log's order is the order the
/// kernel ran them in, even when several threads write (multi-node saves,
/// background saves, the write pipeline).
final class RecordingFileSystem: @unchecked Sendable {
    let root: String
    private let base: SystemCalls
    private let lock = NSLock()
    private var names: [String: Int] = [:]
    private var inodeOfDescriptor: [Int32: Int] = [:]
    private var directoryDescriptors: Set<Int32> = []
    /// Descriptors opened read-only: closing one changes nothing, so it is not logged (not a crash point).
    private var readOnlyDescriptors: Set<Int32> = []
    private var nextInode = 0
    private var log: [RecordedOperation] = []
    /// Mutating calls on descriptors the recorder does not know (must stay 0, or the model is blind).
    private(set) var untrackedMutations = 0

    let initialNames: [String: Int]
    let initialContents: [Int: [UInt8]]

    /// Starts recording `root`, whose present files count as durable. `base`
    /// is what the calls really do (the live calls, or a fault injector).
    init(root: String, base: SystemCalls = .live) throws {
        self.root = RecordingFileSystem.normalize(root)
        self.base = base
        var names: [String: Int] = [:]
        var contents: [Int: [UInt8]] = [:]
        for name in directoryListing(root) {
            names[name] = names.count
            contents[names.count - 1] = try fileBytes(root + "/" + name)
        }
        self.names = names
        self.nextInode = names.count
        self.initialNames = names
        self.initialContents = contents
    }

    static func normalize(_ path: String) -> String {
        var path = path
        while path.contains("//") { path = path.replacingOccurrences(of: "//", with: "/") }
        if path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }

    /// The name inside `root` of a path directly in it, else nil.
    private func trackedName(_ path: String) -> String? {
        let path = RecordingFileSystem.normalize(path)
        guard path.hasPrefix(root + "/") else { return nil }
        let name = String(path.dropFirst(root.count + 1))
        return name.isEmpty || name.contains("/") ? nil : name
    }

    /// The operations so far.
    var operations: [RecordedOperation] { lock.withLock { log } }

    /// Notes a workload event at this point of the log.
    func mark(_ label: String, epoch: Int? = nil, records: [Int]? = nil) {
        lock.withLock { log.append(.mark(WorkloadMark(label: label, epoch: epoch, records: records))) }
    }

    /// The model of everything recorded so far.
    var model: CrashStateModel {
        CrashStateModel(initialNames: initialNames, initialContents: initialContents, operations: operations)
    }

    /// Runs `body` under the log's lock and returns its result with errno as the call left it.
    private func logged<R>(_ body: () -> R) -> R {
        lock.lock()
        let result = body()
        let code = errno
        lock.unlock()
        errno = code
        return result
    }

    /// The recording calls.
    var calls: SystemCalls {
        var calls = base
        let base = self.base
        calls.open = { path, flags, mode in
            if flags & O_DIRECTORY != 0 {
                return self.logged {
                    let fd = base.open(path, flags, mode)
                    if fd >= 0 && RecordingFileSystem.normalize(path) == self.root { self.directoryDescriptors.insert(fd) }
                    return fd
                }
            }
            guard let name = self.trackedName(path) else { return base.open(path, flags, mode) }
            return self.logged {
                let existing = self.names[name]
                let fd = base.open(path, flags, mode)
                guard fd >= 0 else { return fd }
                if flags & O_ACCMODE == O_RDONLY { self.readOnlyDescriptors.insert(fd) } else { self.readOnlyDescriptors.remove(fd) }
                if let existing {
                    self.inodeOfDescriptor[fd] = existing
                    if flags & O_TRUNC != 0 { self.log.append(.truncate(inode: existing, length: 0)) }
                } else if flags & O_CREAT != 0 {
                    let inode = self.nextInode
                    self.nextInode += 1
                    self.names[name] = inode
                    self.inodeOfDescriptor[fd] = inode
                    self.log.append(.create(name: name, inode: inode))
                }
                return fd
            }
        }
        calls.pwritev = { fd, vectors, count, offset in
            self.logged {
                let result = base.pwritev(fd, vectors, count, offset)
                guard result > 0 else { return result }
                guard let inode = self.inodeOfDescriptor[fd] else {
                    self.untrackedMutations += 1
                    return result
                }
                var bytes: [UInt8] = []
                bytes.reserveCapacity(result)
                for index in 0..<Int(count) where bytes.count < result {
                    let vector = vectors[index]
                    let take = min(vector.iov_len, result - bytes.count)
                    if take > 0 { bytes += UnsafeRawBufferPointer(start: vector.iov_base, count: take) }
                }
                self.log.append(.write(inode: inode, offset: Int(offset), bytes: bytes))
                return result
            }
        }
        calls.copyFileRange = { inFD, inOffset, outFD, outOffset, length in
            self.logged {
                let result = base.copyFileRange(inFD, inOffset, outFD, outOffset, length)
                guard result > 0 else { return result }
                guard let inode = self.inodeOfDescriptor[outFD] else {
                    self.untrackedMutations += 1
                    return result
                }
                // What was copied, read back from the destination.
                var bytes = [UInt8](repeating: 0, count: result)
                let read = bytes.withUnsafeMutableBytes { base.pread(outFD, $0.baseAddress!, result, outOffset) }
                precondition(read == result, "could not read back a copy_file_range")
                self.log.append(.write(inode: inode, offset: Int(outOffset), bytes: bytes))
                return result
            }
        }
        calls.ftruncate = { fd, length in
            self.logged {
                let result = base.ftruncate(fd, length)
                guard result == 0 else { return result }
                if let inode = self.inodeOfDescriptor[fd] {
                    self.log.append(.truncate(inode: inode, length: Int(length)))
                } else {
                    self.untrackedMutations += 1
                }
                return result
            }
        }
        func sync(_ call: String, _ body: @escaping (Int32) -> Int32) -> (Int32) -> Int32 {
            { fd in
                self.logged {
                    let result = body(fd)
                    let failed = result != 0 && errno != EINTR  // EINTR: nothing happened, the caller retries
                    if self.directoryDescriptors.contains(fd) {
                        if result == 0 { self.log.append(.syncDirectory) } else if failed { self.log.append(.syncDirectoryFailed) }
                    } else if let inode = self.inodeOfDescriptor[fd] {
                        if result == 0 {
                            self.log.append(.sync(inode: inode, call: call))
                        } else if failed {
                            self.log.append(.syncFailed(inode: inode, call: call))
                        }
                    } else {
                        self.untrackedMutations += 1
                    }
                    return result
                }
            }
        }
        calls.fsync = sync("fsync", base.fsync)
        calls.fdatasync = sync("fdatasync", base.fdatasync)
        calls.rename = { from, to in
            guard let fromName = self.trackedName(from), let toName = self.trackedName(to) else {
                return self.logged {
                    self.untrackedMutations += 1
                    return base.rename(from, to)
                }
            }
            return self.logged {
                let result = base.rename(from, to)
                guard result == 0, let inode = self.names[fromName] else { return result }
                self.names[fromName] = nil
                self.names[toName] = inode
                self.log.append(.rename(from: fromName, to: toName, inode: inode))
                return result
            }
        }
        calls.unlink = { path in
            guard let name = self.trackedName(path) else {
                return self.logged {
                    self.untrackedMutations += 1
                    return base.unlink(path)
                }
            }
            return self.logged {
                let result = base.unlink(path)
                guard result == 0, let inode = self.names[name] else { return result }
                self.names[name] = nil
                self.log.append(.unlink(name: name, inode: inode))
                return result
            }
        }
        calls.close = { fd in
            self.logged {
                if let inode = self.inodeOfDescriptor.removeValue(forKey: fd), self.readOnlyDescriptors.remove(fd) == nil { self.log.append(.close(inode: inode)) }
                self.directoryDescriptors.remove(fd)
                return base.close(fd)
            }
        }
        return calls
    }
}

extension SystemCalls {
    /// These calls with every `fsync` of a directory turned into a no-op that
    /// reports success and reaches nothing below (so a recorder below never
    /// sees it): a writer that "forgot" its directory fsync, for showing that
    /// the power-loss checker is not vacuous.
    func skippingDirectorySync() -> SystemCalls {
        var calls = self
        let inner = self
        calls.fsync = { fd in inner.fileType(fd) == .directory ? 0 : inner.fsync(fd) }
        return calls
    }

    /// These calls with every `fsync`/`fdatasync` of a regular file turned
    /// into a no-op that reports success: a writer that renames without
    /// syncing the data first.
    func skippingFileSync() -> SystemCalls {
        var calls = self
        let inner = self
        calls.fsync = { fd in inner.fileType(fd) == .directory ? inner.fsync(fd) : 0 }
        calls.fdatasync = { _ in 0 }
        return calls
    }
}

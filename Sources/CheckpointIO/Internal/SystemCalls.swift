import BlobCodec
import CCheckpointKernels
import Glibc

/// Every operating-system call CheckpointIO makes, as replaceable functions.
///
/// The one door to the kernel: readers and writers hold a `SystemCalls` value
/// (``live`` unless a test injects faults: ENOSPC, EIO, short writes, EINTR)
/// and call nothing else. Each function has the C function's contract: a
/// result of -1 (or nil) means failure with the reason in `errno`.
struct SystemCalls: @unchecked Sendable {
    var open: (_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32
    var close: (_ fd: Int32) -> Int32
    var pwritev: (_ fd: Int32, _ vectors: UnsafePointer<iovec>, _ count: Int32, _ offset: Int64) -> Int
    var pread: (_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: Int64) -> Int
    var fdatasync: (_ fd: Int32) -> Int32
    var fsync: (_ fd: Int32) -> Int32
    var ftruncate: (_ fd: Int32, _ length: Int64) -> Int32
    var flock: (_ fd: Int32, _ operation: Int32) -> Int32
    var fileSize: (_ fd: Int32) -> Int64
    var rename: (_ from: String, _ to: String) -> Int32
    var unlink: (_ path: String) -> Int32
    /// Creates a directory; -1 with errno on failure, EEXIST when something exists there (`mkdir`).
    var mkdir: (_ path: String, _ mode: mode_t) -> Int32
    var mmap: (_ length: Int, _ fd: Int32) -> UnsafeMutableRawPointer?
    var munmap: (_ address: UnsafeMutableRawPointer, _ length: Int) -> Int32
    var madvise: (_ address: UnsafeMutableRawPointer, _ length: Int, _ advice: Int32) -> Int32
    /// Copies up to `length` bytes between files in the kernel; -1 with errno on failure (`copy_file_range`).
    var copyFileRange: (_ inFD: Int32, _ inOffset: Int64, _ outFD: Int32, _ outOffset: Int64, _ length: Int) -> Int
    /// The (device, inode) of an open file (`fstat`), or nil.
    var fileIdentity: (_ fd: Int32) -> FileIdentity?
    /// The (device, inode) a path names now (`stat`), or nil.
    var pathIdentity: (_ path: String) -> FileIdentity?
    /// The type of an open file (`fstat`'s `st_mode & S_IFMT`), or nil.
    var fileType: (_ fd: Int32) -> FileType? = { fd in
        var info = stat()
        return fstat(fd, &info) == 0 ? FileType(mode: info.st_mode) : nil
    }
    /// Gives the file `existing` a second name `new`; -1 with errno on failure,
    /// EEXIST when `new` exists (`link`: atomic create-if-absent, also on NFS).
    var link: (_ existing: String, _ new: String) -> Int32 = { Glibc.link($0, $1) }
    /// Starts the write-back of the file's dirty pages in a range without waiting; no durability
    /// promise (`sync_file_range(SYNC_FILE_RANGE_WRITE)`; 0 and nothing done off Linux).
    var startWriteback: (_ fd: Int32, _ offset: Int64, _ length: Int64) -> Int32 = { ckk_start_writeback($0, $1, $2) }

    /// The real system calls.
    static let live = SystemCalls(
        open: { path, flags, mode in Glibc.open(path, flags | O_CLOEXEC, mode) },
        close: { Glibc.close($0) },
        pwritev: { Glibc.pwritev($0, $1, $2, off_t($3)) },
        pread: { Glibc.pread($0, $1, $2, off_t($3)) },
        fdatasync: { Glibc.fdatasync($0) },
        fsync: { Glibc.fsync($0) },
        ftruncate: { Glibc.ftruncate($0, off_t($1)) },
        flock: cFlock,
        fileSize: { fd in
            var info = stat()
            return fstat(fd, &info) == 0 ? Int64(info.st_size) : -1
        },
        rename: { Glibc.rename($0, $1) },
        unlink: { Glibc.unlink($0) },
        mkdir: { Glibc.mkdir($0, $1) },
        mmap: { length, fd in
            let address = Glibc.mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0)
            return address == MAP_FAILED ? nil : address
        },
        munmap: { Glibc.munmap($0, $1) },
        madvise: { Glibc.madvise($0, $1, $2) },
        copyFileRange: { inFD, inOffset, outFD, outOffset, length in
            var source = inOffset, destination = outOffset
            return cCopyFileRange(inFD, &source, outFD, &destination, length, 0)
        },
        fileIdentity: { fd in
            var info = stat()
            return fstat(fd, &info) == 0 ? FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)) : nil
        },
        pathIdentity: { path in
            var info = stat()
            return stat(path, &info) == 0 ? FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)) : nil
        }
    )

    /// The current thread's errno.
    static var errno: Int32 { Glibc.errno }
}

/// `flock(2)`. Glibc's module also has a `struct flock`, which shadows the
/// function for Swift, so the C symbol is bound by name.
@_silgen_name("flock")
private func cFlock(_ fd: Int32, _ operation: Int32) -> Int32

/// `copy_file_range(2)`, which Glibc declares only under `_GNU_SOURCE`: bound by name.
@_silgen_name("copy_file_range")
private func cCopyFileRange(_ inFD: Int32, _ inOffset: UnsafeMutablePointer<Int64>?, _ outFD: Int32, _ outOffset: UnsafeMutablePointer<Int64>?,
                            _ length: Int, _ flags: UInt32) -> Int

/// Helpers over ``SystemCalls`` that retry EINTR, finish short transfers, and
/// turn failures into `CheckpointError`s naming the call and the file.
struct SystemFile {
    let calls: SystemCalls
    let fd: Int32
    let path: String

    func error(_ call: String, _ code: Int32 = SystemCalls.errno, offset: Int64? = nil) -> CheckpointError {
        CheckpointError(.system(call: call, errno: code), path: path, offset: offset.map { UInt64($0) })
    }

    /// Writes the concatenation of `segments` at `offset` with as few `pwritev`
    /// calls as IOV_MAX allows, retrying EINTR and continuing short writes.
    func writeAll(_ segments: [UnsafeRawBufferPointer], at offset: Int64) throws(CheckpointError) {
        var vectors = segments.filter { $0.count > 0 }.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress!), iov_len: $0.count) }
        var first = 0
        var position = offset
        while first < vectors.count {
            let batch = min(vectors.count - first, 1024)
            let result = vectors.withUnsafeBufferPointer { calls.pwritev(fd, $0.baseAddress! + first, Int32(batch), position) }
            if result < 0 {
                let code = SystemCalls.errno
                if code == EINTR { continue }
                throw error("pwritev", code, offset: position)
            }
            if result == 0 { throw error("pwritev", ENOSPC, offset: position) }
            position += Int64(result)
            // Skip the vectors written in full, and trim a partly written one.
            var left = result
            while first < vectors.count && left >= vectors[first].iov_len {
                left -= vectors[first].iov_len
                first += 1
            }
            if left > 0 {
                vectors[first].iov_base = vectors[first].iov_base! + left
                vectors[first].iov_len -= left
            }
        }
    }

    /// Copies `count` bytes at `sourceOffset` of `source` to `offset` of this
    /// file in the kernel, retrying EINTR and continuing short copies
    /// (`copy_file_range`). Returns false, having copied nothing, when the
    /// kernel or file system cannot do it (the caller then writes from memory).
    func copyAll(from source: Int32, sourceOffset: Int64, count: Int, at offset: Int64) throws(CheckpointError) -> Bool {
        var done = 0
        while done < count {
            let result = calls.copyFileRange(source, sourceOffset + Int64(done), fd, offset + Int64(done), min(count - done, 1 << 30))
            if result < 0 {
                let code = SystemCalls.errno
                if code == EINTR { continue }
                if done == 0 && (code == ENOSYS || code == EXDEV || code == EINVAL || code == EOPNOTSUPP || code == EBADF) { return false }
                throw error("copy_file_range", code, offset: offset + Int64(done))
            }
            if result == 0 {
                throw CheckpointError(.truncated(what: "source file of copy_file_range", needed: UInt64(sourceOffset) + UInt64(count),
                                                 available: UInt64(sourceOffset) + UInt64(done)), path: path)
            }
            done += result
        }
        return true
    }

    /// Reads exactly `buffer.count` bytes at `offset`, retrying EINTR; end of file is an error (`pread`).
    func readAll(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(CheckpointError) {
        var done = 0
        while done < buffer.count {
            let result = calls.pread(fd, buffer.baseAddress! + done, buffer.count - done, offset + Int64(done))
            if result < 0 {
                let code = SystemCalls.errno
                if code == EINTR { continue }
                throw error("pread", code, offset: offset + Int64(done))
            }
            if result == 0 {
                throw CheckpointError(.truncated(what: "file", needed: UInt64(offset) + UInt64(buffer.count), available: UInt64(offset) + UInt64(done)), path: path)
            }
            done += result
        }
    }

    /// Retries a call that fails with EINTR.
    func retrying(_ call: String, _ body: () -> Int32) throws(CheckpointError) {
        while body() != 0 {
            let code = SystemCalls.errno
            if code != EINTR { throw error(call, code) }
        }
    }

    func dataSync() throws(CheckpointError) { try retrying("fdatasync") { calls.fdatasync(fd) } }
    func fullSync() throws(CheckpointError) { try retrying("fsync") { calls.fsync(fd) } }
    func truncate(to length: Int64) throws(CheckpointError) { try retrying("ftruncate") { calls.ftruncate(fd, length) } }

    func size() throws(CheckpointError) -> Int64 {
        let size = calls.fileSize(fd)
        guard size >= 0 else { throw error("fstat") }
        return size
    }

    /// Takes an exclusive advisory lock without waiting (`flock(LOCK_EX | LOCK_NB)`).
    func lockExclusively(target: String) throws(CheckpointError) {
        while calls.flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = SystemCalls.errno
            if code == EINTR { continue }
            if code == EWOULDBLOCK {
                throw CheckpointError(.writerLocked, path: target)
            }
            throw error("flock", code)
        }
    }

    func close() { _ = calls.close(fd) }
}

/// Which file an open descriptor or a path refers to.
struct FileIdentity: Equatable {
    var device: UInt64
    var inode: UInt64
}

/// The writer lock of a path: an exclusive `flock` on `PATH.lock`, a file
/// that exists only while someone holds it.
///
/// Deleting a lock file is safe only because a taker checks, after its
/// `flock` succeeded, that the name still refers to the file it locked: a
/// taker that opened the file just before the previous holder deleted it
/// would otherwise hold a lock on a file nobody else can find.
struct WriterLock {
    let file: SystemFile
    let lockPath: String

    /// Takes the lock of `target` without waiting.
    ///
    /// - Throws: `CheckpointError.Code.writerLocked` when another writer
    ///   holds it; a system error naming `directory` when it does not exist.
    static func acquire(for target: String, directory: String, calls: SystemCalls) throws(CheckpointError) -> WriterLock {
        let lockPath = target + ".lock"
        for _ in 0..<64 {
            // Created, locked and recorded as one step for an interrupt's cleanup (which removes
            // the lock files this process holds): a signal never leaves a lock file behind.
            let taken = try HeldWriterLocks.shared.atomically { (record) throws(CheckpointError) -> WriterLock? in
                let file: SystemFile
                do throws(CheckpointError) {
                    file = try calls.openFile(lockPath, .createOrOpen)
                } catch {
                    // The lock file is created beside the target: name the directory, not a file the caller never chose.
                    if case .system("open", ENOENT) = error.code { throw CheckpointError(.system(call: "open", errno: ENOENT), path: directory) }
                    throw error
                }
                do throws(CheckpointError) {
                    try file.lockExclusively(target: target)
                } catch {
                    file.close()
                    throw error
                }
                if let locked = calls.fileIdentity(file.fd), locked == calls.pathIdentity(lockPath) {
                    record(lockPath, target)
                    return WriterLock(file: file, lockPath: lockPath)
                }
                file.close()  // the previous holder deleted it meanwhile: try the new one
                return nil
            }
            if let taken { return taken }
        }
        throw CheckpointError(.writerLocked, path: target)
    }

    /// Takes the lock of `target`, retrying every 10 ms while another writer
    /// holds it, for at most `timeout` seconds (for short critical sections
    /// such as a metadata update).
    static func acquireWaiting(for target: String, directory: String, calls: SystemCalls, timeout: Double = 30) throws(CheckpointError) -> WriterLock {
        var waited = 0.0
        while true {
            do throws(CheckpointError) {
                return try acquire(for: target, directory: directory, calls: calls)
            } catch {
                guard error.code == .writerLocked, waited < timeout else { throw error }
                usleep(10_000)
                waited += 0.01
            }
        }
    }

    /// Deletes the lock file, then releases the lock (`unlink`, `close`).
    func release() {
        try? HeldWriterLocks.shared.atomically { (record) throws(CheckpointError) in
            file.calls.unlinkRetrying(lockPath)
            record(lockPath, nil)
        }
        file.close()
    }
}

/// The type of a file, from `st_mode`.
enum FileType: Equatable, CustomStringConvertible {
    case regular, directory, fifo, socket, characterDevice, blockDevice, symbolicLink, unknown

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFLNK: self = .symbolicLink
        default: self = .unknown
        }
    }

    var description: String {
        switch self {
        case .regular: return "a regular file"
        case .directory: return "a directory"
        case .fifo: return "a FIFO (named pipe)"
        case .socket: return "a socket"
        case .characterDevice: return "a character device"
        case .blockDevice: return "a block device"
        case .symbolicLink: return "a symbolic link"
        case .unknown: return "a special file"
        }
    }
}

/// How a file is opened (the `open` flags, named).
enum OpenMode {
    case readOnly, readWrite, createExclusive, createOrOpen

    var flags: Int32 {
        switch self {
        // Non-blocking, so that opening a FIFO returns at once (and is then refused) instead
        // of waiting forever for a writer; it changes nothing for regular files.
        case .readOnly: return O_RDONLY | O_NONBLOCK
        case .readWrite: return O_RDWR | O_NONBLOCK
        case .createExclusive: return O_RDWR | O_CREAT | O_EXCL
        case .createOrOpen: return O_RDWR | O_CREAT
        }
    }
}

extension SystemCalls {
    /// This process's id (`getpid`), for temporary names.
    static var processID: Int32 { getpid() }

    /// CPU seconds (user + system) of every thread of this process so far (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`).
    static func processCPUSeconds() -> Double {
        var time = timespec()
        guard clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time) == 0 else { return 0 }
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// `SIGINT` and `SIGTERM`, the signals a user's Ctrl-C or `kill` sends.
    static let interruptSignals: [Int32] = [SIGINT, SIGTERM]

    /// Stops the default action of `signal` (so that a dispatch source can take it) (`signal(SIG_IGN)`).
    static func ignoreSignal(_ signal: Int32) { _ = Glibc.signal(signal, SIG_IGN) }

    /// Ends the process at once with `status`, without running exit handlers or flushing stdio (`_exit`).
    static func exitImmediately(_ status: Int32) -> Never { Glibc._exit(status) }

    /// Writes `text` to standard error unbuffered (`write(2)`).
    static func writeToStandardError(_ text: String) {
        var copy = text
        copy.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// False only when no process `pid` exists (`kill(pid, 0)` failing with ESRCH).
    static func processExists(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return Glibc.kill(pid, 0) == 0 || Glibc.errno != ESRCH
    }

    /// `madvise(MADV_WILLNEED)`.
    static let adviceWillNeed = MADV_WILLNEED

    /// Removes `path`, retrying EINTR; 0 or -1 with errno (`unlink`).
    @discardableResult
    func unlinkRetrying(_ path: String) -> Int32 {
        while true {
            let result = unlink(path)
            if result == 0 || SystemCalls.errno != EINTR { return result }
        }
    }

    /// Opens `path` in `mode` (files are created 0644), retrying EINTR (`open`).
    ///
    /// An existing file opened to be read or rewritten must be a regular file:
    /// a FIFO, device, socket or directory is refused with
    /// `CheckpointError.Code.notRegularFile` (it is opened
    /// non-blocking, so a FIFO without a writer cannot hang the open).
    func openFile(_ path: String, _ mode: OpenMode) throws(CheckpointError) -> SystemFile {
        let file = try openFile(path, flags: mode.flags)
        switch mode {
        case .readOnly, .readWrite:
            guard let type = fileType(file.fd) else {
                let error = file.error("fstat")
                file.close()
                throw error
            }
            guard type == .regular else {
                file.close()
                throw CheckpointError(.notRegularFile(kind: type.description), path: path)
            }
        case .createExclusive, .createOrOpen:
            break
        }
        return file
    }

    /// Opens `path`, retrying EINTR (`open`).
    func openFile(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(CheckpointError) -> SystemFile {
        while true {
            let fd = open(path, flags, mode)
            if fd >= 0 { return SystemFile(calls: self, fd: fd, path: path) }
            let code = SystemCalls.errno
            if code != EINTR { throw CheckpointError(.system(call: "open", errno: code), path: path) }
        }
    }

    /// fsyncs a directory so that a rename in it is durable.
    func syncDirectory(_ directory: String) throws(CheckpointError) {
        let file = try openFile(directory, flags: O_RDONLY | O_DIRECTORY)
        defer { file.close() }
        try file.fullSync()
    }

    /// Writes back the dirty data of the whole file system holding `directory` and waits
    /// (`syncfs`): benchmarks start each run from a quiet disk with it.
    func syncFileSystem(of directory: String) throws(CheckpointError) {
        let file = try openFile(directory, flags: O_RDONLY | O_DIRECTORY)
        defer { file.close() }
        if ckk_sync_file_system(file.fd) != 0 {
            throw CheckpointError(.system(call: "syncfs", errno: SystemCalls.errno), path: directory)
        }
    }
}

/// `memcmp`, for byte-wise name comparison.
func memcmpBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Int32 {
    Glibc.memcmp(a, b, count)
}

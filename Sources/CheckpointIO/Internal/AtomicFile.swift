import BlobCodec
import Glibc

/// Whole-file writes that replace a file atomically, and small whole-file reads.
enum AtomicFile {
    /// Writes the concatenation of `segments` as the new content of `path`.
    ///
    /// Takes the writer lock `PATH.lock` (as ``ContainerWriter`` does; unless the caller holds it: `lockHeld`), writes
    /// `.NAME.tmp.PID.RANDOM` in the same directory with `pwritev` straight
    /// from the segments, syncs it as `durability` asks, renames it over
    /// `path` and, for ``Durability/full``, fsyncs the directory. On any
    /// failure the temporary file is removed and `path` keeps its old content
    /// (or stays absent).
    static func write(_ segments: [UnsafeRawBufferPointer], to path: String, durability: Durability, calls: SystemCalls,
                      lockHeld: Bool = false) throws(CheckpointError) {
        let lock = lockHeld ? nil : try ContainerWriter.takeLock(for: path, calls: calls)
        defer { lock?.release() }
        let directory = ContainerWriter.splitPath(path).directory
        let temporary = ContainerWriter.temporaryPath(for: path)
        let file: SystemFile
        do throws(CheckpointError) { file = try calls.openFile(temporary, .createExclusive) } catch {
            throw error.naming(path, insteadOf: temporary)
        }
        do throws(CheckpointError) {
            try file.writeAll(segments, at: 0)
            switch durability {
            case .none: break
            case .fileData: try file.dataSync()
            case .full: try file.fullSync()
            }
            try file.retrying("rename") { calls.rename(temporary, path) }
        } catch {
            file.close()
            calls.unlinkRetrying(temporary)
            throw error.naming(path, insteadOf: temporary)
        }
        file.close()
        if durability == .full {
            try calls.syncDirectory(directory)
        }
    }

    /// Creates `path` holding the concatenation of `segments` only if nothing
    /// exists there, atomically: the content is written (and synced as
    /// `durability` asks) to `.NAME.tmp.PID.RANDOM`, which is then hard-linked
    /// to `path`. `link` fails with EEXIST when `path` exists, so of
    /// concurrent creators (in any process, on NFS too) exactly one wins and
    /// a reader never sees a partial file. Returns false, changing nothing,
    /// when `path` already existed. The temporary is always removed; the
    /// writer lock `PATH.lock` is held (waiting up to 30 s) while it exists.
    static func createIfAbsent(_ segments: [UnsafeRawBufferPointer], at path: String, durability: Durability,
                               calls: SystemCalls) throws(CheckpointError) -> Bool {
        let directory = ContainerWriter.splitPath(path).directory
        // Held while the temporary exists, so that a cleanup never takes it for a killed writer's.
        let lock = try WriterLock.acquireWaiting(for: path, directory: directory, calls: calls)
        defer { lock.release() }
        if calls.pathIdentity(path) != nil { return false }
        let temporary = ContainerWriter.temporaryPath(for: path)
        let file: SystemFile
        do throws(CheckpointError) { file = try calls.openFile(temporary, .createExclusive) } catch {
            throw error.naming(path, insteadOf: temporary)
        }
        defer { calls.unlinkRetrying(temporary) }
        var created = false
        do throws(CheckpointError) {
            try file.writeAll(segments, at: 0)
            switch durability {
            case .none: break
            case .fileData: try file.dataSync()
            case .full: try file.fullSync()
            }
            while true {
                if calls.link(temporary, path) == 0 { created = true; break }
                let code = errno
                if code == EINTR { continue }
                if code == EEXIST { break }
                throw CheckpointError(.system(call: "link", errno: code), path: path)
            }
        } catch {
            file.close()
            throw error.naming(path, insteadOf: temporary)
        }
        file.close()
        if created, durability == .full {
            try calls.syncDirectory(directory)
        }
        return created
    }

    /// Replaces `path` with the file `fill` creates at the temporary path it
    /// is given, atomically: under the writer lock (unless `lockHeld`),
    /// `fill` creates and syncs `.NAME.tmp.PID.RANDOM`; it is renamed over
    /// `path` and, for ``Durability/full``, the directory is fsynced. On any
    /// failure the temporary is removed and `path` is as it was.
    static func replace(_ path: String, durability: Durability, calls: SystemCalls, lockHeld: Bool = false,
                        _ fill: (_ temporary: String) throws(CheckpointError) -> Void) throws(CheckpointError) {
        let lock = lockHeld ? nil : try ContainerWriter.takeLock(for: path, calls: calls)
        defer { lock?.release() }
        let temporary = ContainerWriter.temporaryPath(for: path)
        do throws(CheckpointError) {
            try fill(temporary)
            try rename(temporary, to: path, calls: calls)
        } catch {
            removeTree(temporary, calls: calls)
            throw error.naming(path, insteadOf: temporary)
        }
        if durability == .full {
            try calls.syncDirectory(ContainerWriter.splitPath(path).directory)
        }
    }

    /// Renames `source` to `destination`, retrying EINTR (`rename`).
    static func rename(_ source: String, to destination: String, calls: SystemCalls) throws(CheckpointError) {
        while calls.rename(source, destination) != 0 {
            let code = SystemCalls.errno
            if code != EINTR { throw CheckpointError(.system(call: "rename", errno: code), path: destination) }
        }
    }

    /// Removes a file, or a directory and everything below it; errors are ignored (`lstat`, `unlink`, `rmdir`).
    static func removeTree(_ path: String, calls: SystemCalls) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for name in listDirectory(path) { removeTree(CheckpointNaming.join(path, name), calls: calls) }
            _ = rmdir(path)
        } else {
            calls.unlinkRetrying(path)
        }
    }

    /// The target name and writer process id of a temporary name `.TARGET.tmp.PID.RANDOM`
    /// (PID decimal, RANDOM 1-8 hex digits), or nil for any other name.
    static func parseTemporaryName(_ name: String) -> (target: String, pid: Int32)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 5, parts[0].isEmpty, parts[parts.count - 3] == "tmp" else { return nil }
        let target = parts[1..<(parts.count - 3)].joined(separator: ".")
        let pidText = parts[parts.count - 2], random = parts[parts.count - 1]
        guard !target.isEmpty, let pid = Int32(pidText), pid > 0, String(pid) == pidText,
              (1...8).contains(random.count), random.allSatisfy(\.isHexDigit) else { return nil }
        return (target, pid)
    }

    /// Removes what writers killed before their rename left in `directory`:
    /// temporaries `.TARGET.tmp.PID.RANDOM` (files or directories) whose
    /// process is gone and whose `TARGET.lock` nobody holds, with that lock
    /// file. Returns the removed names and their size in bytes. Names of any
    /// other shape, and temporaries of live processes, are never touched.
    static func removeTemporariesOfDeadWriters(in directory: String, calls: SystemCalls) -> (names: [String], bytes: Int) {
        var removed: [String] = []
        var bytes = 0
        for name in listDirectory(directory).sorted() {
            guard let (target, pid) = parseTemporaryName(name), pid != SystemCalls.processID, !SystemCalls.processExists(pid) else { continue }
            let full = CheckpointNaming.join(directory, name)
            guard let lock = try? ContainerWriter.takeLock(for: CheckpointNaming.join(directory, target), calls: calls) else { continue }
            let size = totalSize(full)
            removeTree(full, calls: calls)
            removeTree(full + ".lock", calls: calls)  // a recovery's lock on its temporary
            if !exists(full) {
                removed.append(name)
                bytes += size
            }
            lock.release()
        }
        return (removed, bytes)
    }

    /// Reads a whole file of at most `limit` bytes; nil when it does not exist.
    ///
    /// - Throws: `CheckpointError.Code.limitExceeded` for a
    ///   larger file; `CheckpointError.Code.system` for other failures.
    static func read(_ path: String, limit: Int, calls: SystemCalls) throws(CheckpointError) -> [UInt8]? {
        let file: SystemFile
        do throws(CheckpointError) {
            file = try calls.openFile(path, .readOnly)
        } catch {
            if case .system(_, ENOENT) = error.code { return nil }
            throw error
        }
        defer { file.close() }
        let size = Int(try file.size())
        guard size <= limit else {
            throw CheckpointError(.limitExceeded(what: "file size", limit: UInt64(limit), actual: UInt64(size)), path: path)
        }
        var bytes = [UInt8](repeating: 0, count: size)
        try typedThrows { try bytes.withUnsafeMutableBytes { buffer in try file.readAll(into: buffer, at: 0) } }
        return bytes
    }

    /// Removes `path`; a missing file is not an error (`unlink`).
    static func remove(_ path: String, calls: SystemCalls) throws(CheckpointError) {
        if calls.unlinkRetrying(path) != 0 {
            let code = SystemCalls.errno
            if code != ENOENT { throw CheckpointError(.system(call: "unlink", errno: code), path: path) }
        }
    }

    /// True when `directory` exists and this process may create files in it (`access(W_OK | X_OK)`).
    static func isWritableDirectory(_ directory: String) -> Bool {
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { return false }
        return access(directory, W_OK | X_OK) == 0
    }

    /// Removes the temporary files that writers killed before their rename
    /// left in `directory` for targets whose names start with `targetPrefix`,
    /// and returns their names.
    ///
    /// A temporary `.TARGET.tmp.PID.RANDOM` is abandoned when nobody holds the
    /// writer lock `TARGET.lock`: every writer holds it until its temporary is
    /// renamed or removed. The lock is taken (without waiting) before the
    /// unlink, so a live writer's file is never touched (`opendir`, `readdir`,
    /// `flock`, `unlink`).
    static func removeAbandonedTemporaries(in directory: String, targetPrefix: String, calls: SystemCalls) -> [String] {
        var candidates: [(file: String, target: String)] = []
        for name in listDirectory(directory) {
            guard name.hasPrefix("." + targetPrefix), let marker = name.firstRange(of: ".tmp.") else { continue }
            let target = String(name[name.index(after: name.startIndex)..<marker.lowerBound])
            candidates.append((name, target))
        }
        var removed: [String] = []
        for (file, target) in candidates {
            let targetPath = CheckpointNaming.join(directory, target)
            guard let lock = try? ContainerWriter.takeLock(for: targetPath, calls: calls) else { continue }
            if calls.unlinkRetrying(CheckpointNaming.join(directory, file)) == 0 { removed.append(file) }
            lock.release()
        }
        return removed
    }

    /// Removes every `.NAME.tmp.*` beside `path` (`NAME` its last component).
    /// The caller holds `path`'s writer lock, so no live writer owns one.
    static func removeTemporariesOfLockedTarget(_ path: String, calls: SystemCalls) {
        let (directory, base) = ContainerWriter.splitPath(path)
        let prefix = "." + base + ".tmp."
        for name in listDirectory(directory) where name.hasPrefix(prefix) {
            calls.unlinkRetrying(CheckpointNaming.join(directory, name))
        }
    }

    /// The names in `directory` (without `.` and `..`); empty when it cannot be read (`opendir`, `readdir`).
    static func listDirectory(_ directory: String) -> [String] {
        guard let stream = opendir(directory.isEmpty ? "." : directory) else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// True when `error` is an `open` that failed because the file does not exist (ENOENT).
    static func isMissingFile(_ error: CheckpointError) -> Bool {
        if case .system("open", ENOENT) = error.code { return true }
        return false
    }

    /// Creates a directory (0755) unless it exists; with `parents`, its missing parents too (`mkdir`).
    static func makeDirectory(_ path: String, parents: Bool = false) throws(CheckpointError) {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        if trimmed.isEmpty || isDirectory(trimmed) { return }
        if parents {
            let parent = ContainerWriter.splitPath(trimmed).directory
            if parent != trimmed { try makeDirectory(parent, parents: true) }
        }
        if mkdir(trimmed, 0o755) != 0 && errno != EEXIST {
            throw CheckpointError(.system(call: "mkdir", errno: errno), path: trimmed)
        }
    }

    /// Creates `path` and its missing parents (0755), like `mkdir -p`, and for
    /// ``Durability/full`` fsyncs the parent of each directory it created, so
    /// that the new directory survives a power cut (`stat`, `mkdir`, `open`,
    /// `fsync`). An existing directory costs one `stat`; one created meanwhile
    /// by someone else is fine.
    ///
    /// - Throws: `CheckpointError.Code.system` for `mkdir`
    ///   naming the first directory that could not be created (EEXIST when a
    ///   file that is not a directory is in the way), or for the parent's fsync.
    static func makeDirectoryDurably(_ path: String, durability: Durability, calls: SystemCalls) throws(CheckpointError) {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        if trimmed.isEmpty || isDirectory(trimmed) { return }
        var missing: [String] = []  // innermost first
        var current = trimmed
        while !isDirectory(current) {
            missing.append(current)
            let parent = ContainerWriter.splitPath(current).directory
            if parent == current || parent.isEmpty { break }
            current = parent
        }
        for directory in missing.reversed() {
            if calls.mkdir(directory, 0o755) != 0 {
                let code = SystemCalls.errno
                // Created meanwhile by someone else: still sync its entry before relying on it.
                guard code == EEXIST && isDirectory(directory) else {
                    throw CheckpointError(.system(call: "mkdir", errno: code), path: directory)
                }
            }
            if durability == .full { try calls.syncDirectory(ContainerWriter.splitPath(directory).directory) }
        }
    }

    /// Runs `body`, and again every 10 ms while it throws
    /// `CheckpointError.Code.writerLocked`, for at most `timeout` seconds;
    /// then throws that error (`usleep`). For writers that may meet a lock
    /// held for a moment (a cleanup checking whether a temporary is abandoned).
    static func retryingWhileLocked<R>(timeout: Double, _ body: () throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        var waited = 0.0
        while true {
            do throws(CheckpointError) {
                return try body()
            } catch {
                guard error.code == .writerLocked, waited < timeout else { throw error }
                usleep(10_000)
                waited += 0.01
            }
        }
    }

    /// The size of a file, or of all files below a directory (`stat`); 0 when missing.
    static func totalSize(_ path: String) -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { return 0 }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return Int(info.st_size) }
        return listDirectory(path).reduce(0) { $0 + totalSize(CheckpointNaming.join(path, $1)) }
    }

    /// `O_TRUNC`, for the benchmark's floor files.
    static let truncateFlag = O_TRUNC

    /// True when `path` is a directory (`stat`, following links).
    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// The type of what `path` names itself, without following a final symbolic link (`lstat`); nil when nothing is there.
    static func entryType(_ path: String) -> FileType? {
        var info = stat()
        return lstat(path, &info) == 0 ? FileType(mode: info.st_mode) : nil
    }

    /// True when something exists at `path` (`stat`).
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }
}

extension CheckpointError {
    /// This error naming `path` where it named `temporary` (or nothing): users know
    /// the file they asked for, not its hidden temporary.
    func naming(_ path: String, insteadOf temporary: String) -> CheckpointError {
        var copy = self
        if copy.path == nil || copy.path == temporary { copy.path = path }
        return copy
    }

    /// The errno of a `CheckpointError.Code.system` error.
    var systemErrno: Int32? {
        if case let .system(_, code) = code { return code }
        return nil
    }
}

/// Runs `body`, whose only errors are `CheckpointError`s, where an API in
/// between rethrows them untyped (closures passed through `rethrows` functions).
func typedThrows<R>(_ body: () throws -> R) throws(CheckpointError) -> R {
    do {
        return try body()
    } catch let error as CheckpointError {
        throw error
    } catch {
        preconditionFailure("unexpected error type: \(error)")
    }
}

/// A whole file mapped read-only (`open`, `fstat`, `mmap`; `munmap` and `close` on deinit).
/// An empty file has an empty buffer and no mapping.
final class MappedFile: @unchecked Sendable {
    let path: String
    let bytes: UnsafeRawBufferPointer
    private let file: SystemFile?
    private let calls: SystemCalls

    /// Where a view into this mapping lies in the file (nil once the file was closed).
    func fileRange(of view: UnsafeRawBufferPointer) -> SourceFileRange? {
        guard let file, let base = bytes.baseAddress, let start = view.baseAddress, start >= base, start + view.count <= base + bytes.count else { return nil }
        return SourceFileRange(fd: file.fd, offset: Int64(start - base))
    }

    /// Maps `path`. Without `keepDescriptor` the file is closed once mapped
    /// (the mapping stays valid): many mapped files then hold no descriptors,
    /// but ``fileRange(of:)`` has no file to offer.
    init(_ path: String, keepDescriptor: Bool = true, calls: SystemCalls = .live) throws(CheckpointError) {
        let file = try calls.openFile(path, .readOnly)
        do throws(CheckpointError) {
            let size = Int(try file.size())
            if size == 0 {
                bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            } else {
                guard let address = calls.mmap(size, file.fd) else { throw file.error("mmap") }
                bytes = UnsafeRawBufferPointer(start: address, count: size)
            }
        } catch {
            file.close()
            throw error
        }
        self.path = path
        if keepDescriptor {
            self.file = file
        } else {
            file.close()
            self.file = nil
        }
        self.calls = calls
    }

    deinit {
        if let base = bytes.baseAddress { _ = calls.munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
        file?.close()
    }
}

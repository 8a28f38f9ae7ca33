import Foundation

/// The directory contents a POSIX file system may legally show after a power
/// cut, given the calls a workload made (``RecordingFileSystem``).
///
/// **The model.** A crash after call `k` keeps everything made durable before
/// it and an arbitrary choice of everything else:
///
/// - *Durable data.* A successful `fsync` or `fdatasync` of a file makes every
///   earlier write and truncation of that file, and its size, durable. It does
///   not make the file's name durable.
/// - *Durable names.* A successful `fsync` of the directory makes every earlier
///   create, rename and unlink in it durable.
/// - *Everything else may be lost or kept, independently.* Each un-synced
///   write may persist in any subset of the 4 KiB pages it touched (a page not
///   kept shows what the file had there before: older data, or zeros); each
///   un-synced truncation may or may not have happened; a file's size is its
///   durable size or any size it had after an un-synced call; each un-synced
///   create, rename and unlink may or may not have happened. Kept operations
///   apply in the order they were made. Every choice is independent of every
///   other, so un-synced operations reach the disk in any order: this
///   includes every reordering ext4 `data=ordered` (and `data=writeback`,
///   short of exposing other files' stale blocks) can produce, for example a
///   rename persisted while the renamed file's data is lost.
/// - *A failed sync* (`EIO`, not `EINTR`) makes nothing durable, and the
///   writes (or, for a directory, the name operations) pending at that moment
///   stay undecided at every later crash, even after a later successful sync:
///   the kernel may have dropped those pages and marked them clean (fsyncgate).
/// - `close` makes nothing durable.
///
/// The set of states is the product of these choices. ``states(crashPoint:budget:seed:)``
/// lists all of them when there are at most `budget.exhaustive`; otherwise it
/// takes the two extremes (nothing un-synced kept; everything kept), every
/// state one choice away from each extreme, and random states, up to
/// `budget.sampled` in all.
struct CrashStateModel {
    let initialNames: [String: Int]
    let initialContents: [Int: [UInt8]]
    let operations: [RecordedOperation]

    static let pageSize = 4096

    struct Budget {
        /// Enumerate every state of a crash point when there are at most this many.
        var exhaustive: Int
        /// Otherwise, take this many (extremes, single flips, then random).
        var sampled: Int
    }

    /// One undecided thing at a crash point.
    enum Choice {
        /// Operation `index` (create, rename, unlink) happened or not.
        case name(index: Int)
        /// Page `page` of write `index` reached the disk or not.
        case page(index: Int, page: Int)
        /// Truncation `index` happened or not.
        case truncation(index: Int)
        /// The size of `inode`: one of `sizes` (the durable one first).
        case size(inode: Int, sizes: [Int])

        var optionCount: Int {
            if case let .size(_, sizes) = self { return sizes.count }
            return 2
        }
    }

    /// What is durable and what is undecided after the first `count` operations.
    struct CrashPoint {
        var count: Int
        var durable: Set<Int>  // indices of operations that are durable
        var choices: [Choice]
        /// The size of each inode that has no size choice.
        var fixedSizes: [Int: Int]
        var marks: [WorkloadMark]
        /// The number of states (saturating).
        var stateCount: Int {
            choices.reduce(1) { product, choice in
                let (result, overflow) = product.multipliedReportingOverflow(by: choice.optionCount)
                return overflow ? Int.max : result
            }
        }
    }

    /// The crash points: before the first operation and after each one that is not a mark.
    var crashPointCounts: [Int] {
        [0] + operations.indices.compactMap { index in
            if case .mark = operations[index] { return nil }
            return index + 1
        }
    }

    /// The 4 KiB pages `count` bytes at `offset` touch.
    private static func pages(offset: Int, count: Int) -> [Int] {
        guard count > 0 else { return [] }
        return Array((offset / pageSize)...((offset + count - 1) / pageSize))
    }

    func crashPoint(after count: Int) -> CrashPoint {
        var durable = Set<Int>()
        var pendingData: [Int: [Int]] = [:]  // inode → indices of undecided writes and truncations
        var pendingNames: [Int] = []
        var marks: [WorkloadMark] = []
        var sizes: [Int: [Int]] = [:]  // inode → durable size, then sizes after undecided calls
        var currentSize: [Int: Int] = [:]
        var inodes = Set(initialNames.values)
        var poisoned: [Int: [Int]] = [:]  // inode → writes pending when a sync of it failed
        var poisonedNames: [Int] = []  // name operations pending when a directory sync failed
        for (inode, bytes) in initialContents {
            sizes[inode] = [bytes.count]
            currentSize[inode] = bytes.count
        }
        for index in 0..<count {
            switch operations[index] {
            case let .create(_, inode):
                pendingNames.append(index)
                inodes.insert(inode)
                sizes[inode] = [0]
                currentSize[inode] = 0
            case .rename, .unlink:
                pendingNames.append(index)
            case let .write(inode, offset, bytes):
                pendingData[inode, default: []].append(index)
                currentSize[inode] = max(currentSize[inode] ?? 0, offset + bytes.count)
                sizes[inode, default: [0]].append(currentSize[inode]!)
            case let .truncate(inode, length):
                pendingData[inode, default: []].append(index)
                currentSize[inode] = length
                sizes[inode, default: [0]].append(length)
            case let .sync(inode, _):
                durable.formUnion(pendingData[inode] ?? [])
                pendingData[inode] = []
                // After a failed sync the sizes it left undecided stay candidates.
                let earlier = (poisoned[inode] ?? []).isEmpty ? [] : (sizes[inode] ?? [])
                sizes[inode] = earlier + [currentSize[inode] ?? 0]
            case let .syncFailed(inode, _):
                // Undecided forever: moved out of reach of later syncs.
                poisoned[inode, default: []] += pendingData[inode] ?? []
                pendingData[inode] = []
            case .syncDirectory:
                durable.formUnion(pendingNames)
                pendingNames = []
            case .syncDirectoryFailed:
                poisonedNames += pendingNames
                pendingNames = []
            case .close:
                break
            case let .mark(mark):
                marks.append(mark)
            }
        }
        var fixedSizes: [Int: Int] = [:]
        let undecidedNames = (poisonedNames + pendingNames).sorted()
        var choices: [Choice] = undecidedNames.map { .name(index: $0) }
        // Only files some name may lead to get choices: with no undecided name operation
        // kept, with all of them kept, or named by one of them.
        var visible = Set(names(count: count, kept: durable).values)
        visible.formUnion(names(count: count, kept: durable.union(undecidedNames)).values)
        for index in undecidedNames {
            switch operations[index] {
            case let .create(_, inode), let .rename(_, _, inode): visible.insert(inode)
            default: break
            }
        }
        for inode in inodes.sorted() where visible.contains(inode) {
            for index in ((poisoned[inode] ?? []) + (pendingData[inode] ?? [])).sorted() {
                switch operations[index] {
                case let .write(_, offset, bytes):
                    for page in CrashStateModel.pages(offset: offset, count: bytes.count) {
                        choices.append(.page(index: index, page: page))
                    }
                case .truncate:
                    choices.append(.truncation(index: index))
                default:
                    break
                }
            }
            var distinct: [Int] = []
            for size in sizes[inode] ?? [] where !distinct.contains(size) { distinct.append(size) }
            if distinct.count > 1 || !(poisoned[inode] ?? []).isEmpty {
                choices.append(.size(inode: inode, sizes: distinct))
            } else {
                fixedSizes[inode] = distinct.first ?? 0
            }
        }
        return CrashPoint(count: count, durable: durable, choices: choices, fixedSizes: fixedSizes, marks: marks)
    }

    /// The names after the name operations among the first `count` that are in `kept`.
    private func names(count: Int, kept: Set<Int>) -> [String: Int] {
        var names = initialNames
        for index in 0..<count where kept.contains(index) {
            switch operations[index] {
            case let .create(name, inode):
                names[name] = inode
            case let .rename(from, to, inode):
                names[to] = inode
                if names[from] == inode { names[from] = nil }
            case let .unlink(name, inode):
                if names[name] == inode { names[name] = nil }
            default:
                break
            }
        }
        return names
    }

    /// The directory after a crash at `point` with `option[i]` taken for choice `i`:
    /// file name → content.
    func materialize(_ point: CrashPoint, options: [Int]) -> [String: [UInt8]] {
        var keptPages: [Int: Set<Int>] = [:]
        var kept = point.durable
        var chosenSize: [Int: Int] = [:]
        for (choice, option) in zip(point.choices, options) {
            switch choice {
            case let .name(index), let .truncation(index):
                if option == 1 { kept.insert(index) }
            case let .page(index, page):
                if option == 1 { keptPages[index, default: []].insert(page) }
            case let .size(inode, sizes):
                chosenSize[inode] = sizes[option]
            }
        }
        let names = self.names(count: point.count, kept: kept)
        var contents = initialContents
        for index in 0..<point.count {
            switch operations[index] {
            case let .write(inode, offset, bytes):
                var content = contents[inode] ?? []
                let whole = kept.contains(index)
                for page in CrashStateModel.pages(offset: offset, count: bytes.count) where whole || keptPages[index]?.contains(page) == true {
                    let start = max(offset, page * CrashStateModel.pageSize)
                    let end = min(offset + bytes.count, (page + 1) * CrashStateModel.pageSize)
                    if content.count < end { content += [UInt8](repeating: 0, count: end - content.count) }
                    content.replaceSubrange(start..<end, with: bytes[(start - offset)..<(end - offset)])
                }
                contents[inode] = content
            case let .truncate(inode, length):
                if kept.contains(index) { contents[inode] = resized(contents[inode] ?? [], to: length) }
            default:
                break
            }
        }
        var files: [String: [UInt8]] = [:]
        for (name, inode) in names {
            var content = contents[inode] ?? []
            if let size = chosenSize[inode] {
                content = resized(content, to: size)
            } else if let size = point.fixedSizes[inode] {
                content = resized(content, to: size)
            }
            files[name] = content
        }
        return files
    }

    private func resized(_ bytes: [UInt8], to size: Int) -> [UInt8] {
        if bytes.count >= size { return Array(bytes.prefix(size)) }
        return bytes + [UInt8](repeating: 0, count: size - bytes.count)
    }

    /// The option vectors to try at `point`: all of them, or a sample (see the type's comment).
    func optionVectors(_ point: CrashPoint, budget: Budget, seed: UInt64) -> [[Int]] {
        let count = point.stateCount
        let maxima = point.choices.map { $0.optionCount - 1 }
        if count <= budget.exhaustive {
            var result: [[Int]] = []
            var vector = [Int](repeating: 0, count: maxima.count)
            while true {
                result.append(vector)
                var position = 0
                while position < vector.count && vector[position] == maxima[position] {
                    vector[position] = 0
                    position += 1
                }
                if position == vector.count { return result }
                vector[position] += 1
            }
        }
        let none = [Int](repeating: 0, count: maxima.count)
        var result = [none, maxima]
        for position in maxima.indices {
            var flipped = none
            flipped[position] = maxima[position]
            result.append(flipped)
            flipped = maxima
            flipped[position] = 0
            result.append(flipped)
        }
        var generator = SplitMix(seed: seed)
        while result.count < budget.sampled {
            result.append(maxima.map { Int(generator.next() % UInt64($0 + 1)) })
        }
        return Array(result.prefix(max(budget.sampled, 2)))
    }
}

/// A small seeded generator, so that a sample can be reproduced.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@testable import CheckpointIO
import Foundation

/// A workload of the power-loss test: durable set-up, then recorded calls,
/// then a check of one crash state (a real directory) against the marks the
/// workload left before the crash point.
struct PowerLossWorkload {
    var name: String
    /// Runs with the live calls before recording starts; what it leaves is durable.
    var setup: (_ directory: String) throws -> Void
    /// The recorded part: must make every system call through `calls`.
    var run: (_ directory: String, _ calls: SystemCalls, _ recorder: RecordingFileSystem) throws -> Void
    /// The violated invariants of one crash state (empty: none).
    var check: (_ directory: String, _ marks: [WorkloadMark]) throws -> [String]
}

/// What exploring one workload's crash states found.
struct PowerLossOutcome: CustomStringConvertible {
    var workload: String
    var operations = 0
    var crashPoints = 0
    /// Crash points whose every state was enumerated.
    var exhaustivePoints = 0
    /// States taken (enumerated or sampled), and the distinct directory contents among them, each checked.
    var states = 0
    var distinctStates = 0
    var untrackedMutations = 0
    var violations: [String] = []

    var description: String {
        "\(workload): \(operations) calls, \(crashPoints) crash points (\(exhaustivePoints) enumerated in full), "
            + "\(states) crash states, \(distinctStates) distinct states checked, \(violations.count) violations"
    }
}

enum PowerLossHarness {
    /// CI takes a sample; `CKPT_POWERLOSS_FULL=1` (scripts/powerloss.sh) enumerates every
    /// crash point's states in full up to 2^16 of them, else takes 4096.
    static var budget: CrashStateModel.Budget {
        if ProcessInfo.processInfo.environment["CKPT_POWERLOSS_FULL"] == "1" {
            return CrashStateModel.Budget(exhaustive: 1 << 16, sampled: 4096)
        }
        return sampleBudget
    }

    /// What CI takes at each crash point: all states up to 16, else 12 (the two extremes, then single flips).
    static let sampleBudget = CrashStateModel.Budget(exhaustive: 16, sampled: 12)

    /// Runs `workload` recorded (through `wrap(recorder's calls)`; `base` is what the recorder calls),
    /// then checks its crash states.
    static func explore(_ workload: PowerLossWorkload, budget: CrashStateModel.Budget = budget,
                        base: SystemCalls = .live, wrap: (SystemCalls) -> SystemCalls = { $0 }) throws -> PowerLossOutcome {
        try withTemporaryDirectory { recorded in
            try workload.setup(recorded)
            let recorder = try RecordingFileSystem(root: recorded, base: base)
            try workload.run(recorded, wrap(recorder.calls), recorder)
            var outcome = try withReplayDirectory { replay in
                explore(recorder.model, name: workload.name, budget: budget, replay: replay, check: workload.check)
            }
            outcome.untrackedMutations = recorder.untrackedMutations
            return outcome
        }
    }

    /// A temporary directory for crash states, removed afterwards: in /dev/shm when
    /// there is one (thousands of small files are written and checked there), else in
    /// the temporary directory.
    static func withReplayDirectory<R>(_ body: (String) throws -> R) throws -> R {
        guard AtomicFile.isWritableDirectory("/dev/shm") else { return try withTemporaryDirectory(body) }
        var template = Array("/dev/shm/ckpt-powerloss-XXXXXX".utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { return try withTemporaryDirectory(body) }
        let directory = String(cString: created)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try body(directory)
    }

    /// Checks the crash states of `model` in `replay` (emptied and refilled for each).
    static func explore(_ model: CrashStateModel, name: String, budget: CrashStateModel.Budget, replay: String,
                        check: (String, [WorkloadMark]) throws -> [String]) -> PowerLossOutcome {
        var outcome = PowerLossOutcome(workload: name)
        outcome.operations = model.operations.filter { if case .mark = $0 { return false } else { return true } }.count
        var seen = Set<StateKey>()
        for count in model.crashPointCounts {
            let point = model.crashPoint(after: count)
            outcome.crashPoints += 1
            if point.stateCount <= budget.exhaustive { outcome.exhaustivePoints += 1 }
            let seed = UInt64(truncatingIfNeeded: name.utf8.reduce(5381) { ($0 &* 33) &+ Int($1) }) &+ UInt64(count)
            for options in model.optionVectors(point, budget: budget, seed: seed) {
                outcome.states += 1
                let files = model.materialize(point, options: options)
                guard seen.insert(StateKey(files, marks: point.marks.count)).inserted else { continue }
                outcome.distinctStates += 1
                var problems: [String]
                do {
                    try fill(replay, with: files)
                    problems = try check(replay, point.marks)
                } catch {
                    problems = ["the check threw: \(error)"]
                }
                for problem in problems where outcome.violations.count < 20 {
                    let last = count == 0 ? "before any call" : "after call \(count - 1) (\(model.operations[count - 1]))"
                    let files = files.keys.sorted().map { "\($0)=\(files[$0]!.count)B" }.joined(separator: " ")
                    outcome.violations.append("crash \(last): \(problem) [files: \(files)]")
                }
                if !problems.isEmpty && outcome.violations.count >= 20 { outcome.violations.append("…") }
            }
        }
        return outcome
    }

    /// Replaces the contents of `directory` with `files`.
    static func fill(_ directory: String, with files: [String: [UInt8]]) throws {
        for name in directoryListing(directory) { try FileManager.default.removeItem(atPath: directory + "/" + name) }
        for (name, bytes) in files { try writeBytes(directory + "/" + name, bytes) }
    }

    /// A directory's contents, hashed twice (128 bits), with the number of marks before the crash.
    struct StateKey: Hashable {
        var first: Int
        var second: Int
        var marks: Int

        init(_ files: [String: [UInt8]], marks: Int) {
            var first = Hasher(), second = Hasher()
            second.combine(0x5EED)
            for name in files.keys.sorted() {
                first.combine(name)
                second.combine(name)
                files[name]!.withUnsafeBytes { bytes in
                    first.combine(bytes: bytes)
                    second.combine(bytes: bytes)
                }
                first.combine(files[name]!.count)
                second.combine(files[name]!.count)
            }
            self.first = first.finalize()
            self.second = second.finalize()
            self.marks = marks
        }
    }
}

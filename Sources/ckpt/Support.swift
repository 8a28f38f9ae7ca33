import ArgumentParser
import CheckpointIO
import Foundation

/// `count` bytes scaled to the largest IEC unit (B, KiB, MiB, GiB, TiB) that keeps it at least 1.
private func scaledIEC(_ count: Int) -> (value: Double, unit: String) {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return (value, units[unit])
}

/// A size with two decimals (`86.72 MiB`); bytes exactly.
func formatBytes(_ count: Int) -> String {
    let (value, unit) = scaledIEC(count)
    return unit == "B" ? "\(count) B" : String(format2: value) + " " + unit
}

/// A size with one decimal, as `zstd -v` prints it (`86.7 MiB`).
func formatBytesShort(_ count: Int) -> String {
    let (value, unit) = scaledIEC(count)
    if unit == "B" { return "\(count) B" }
    let tenths = (value * 10).rounded()
    return "\(Int(tenths) / 10).\(Int(tenths) % 10) \(unit)"
}

/// Elapsed time: milliseconds below a second (`0.42 ms`, `12 ms`), seconds above (`2.35 s`), minutes above a minute.
func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "-" }
    if seconds < 0.01 { return String(format2: seconds * 1000) + " ms" }
    if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
    if seconds < 60 { return String(format2: seconds) + " s" }
    let whole = Int(seconds.rounded())
    return "\(whole / 60) min \(whole % 60) s"
}

/// A rate in IEC units to match the sizes (`850.3 MiB/s`, `2.1 GiB/s`); `-` without a measurable time.
func formatRate(bytes: Int, seconds: Double) -> String {
    guard seconds > 0, seconds.isFinite, bytes >= 0 else { return "-" }
    let perSecond = Double(bytes) / seconds
    let units = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"]
    var value = perSecond
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    let tenths = (value * 10).rounded()
    return "\(Int(tenths) / 10).\(Int(tenths) % 10) \(units[unit])"
}

/// `84.39% (86.7 MiB => 73.1 MiB)`: the stored size as a share of the raw size, as `zstd -v` says it.
func compressionSummary(raw: Int, stored: Int) -> String {
    let percent = raw > 0 ? String(format2: Double(stored) / Double(raw) * 100) + "%" : "-"
    return "\(percent) (\(formatBytesShort(raw)) => \(formatBytesShort(stored)))"
}

/// Prints an aligned table: the first `leftAligned` columns to the left, the others to the right.
func printTable(_ columns: [String], _ rows: [[String]], leftAligned: Int = 3, alsoLeftAligned: Set<Int> = []) {
    let widths = columns.indices.map { column in ([columns[column]] + rows.map { $0[column] }).map(\.count).max()! }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            let pad = String(repeating: " ", count: widths[index] - cell.count)
            return index < leftAligned || alsoLeftAligned.contains(index) ? cell + pad : pad + cell
        }.joined(separator: "  ").trailingSpacesRemoved
    }
    print(line(columns))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    rows.forEach { print(line($0)) }
}

extension String {
    /// nil for the empty string.
    var nonEmpty: String? { isEmpty ? nil : self }

    /// The string without trailing spaces (table lines end at their last cell).
    var trailingSpacesRemoved: String {
        var copy = self
        while copy.hasSuffix(" ") { copy.removeLast() }
        return copy
    }

    /// A number with two decimals, without Foundation.
    init(format2 value: Double) {
        guard value.isFinite, abs(value) < 1e15 else { self = value.isFinite ? "\(value)" : "-"; return }
        let scaled = (value * 100).rounded()
        let whole = Int(scaled / 100)
        let fraction = Int(abs(scaled).truncatingRemainder(dividingBy: 100))
        self = "\(value < 0 && whole == 0 ? "-" : "")\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

// MARK: Exit codes and errors

/// The exit statuses `ckpt --help` documents.
enum Exit {
    static let usage: Int32 = 64
    static let data: Int32 = 65
    static let io: Int32 = 74
}

/// Options every command has.
struct OutputOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "No progress bars.")
    var quiet = false

    @Flag(name: .shortAndLong, help: "More detail on errors.")
    var verbose = false
}

/// Writes a line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// The exit status for an error: I/O for system call failures and a lock
/// held by another writer, data for the rest.
func exitStatus(for error: CheckpointError) -> Int32 {
    switch error.code {
    case .system, .writerLocked: return Exit.io
    default: return Exit.data
    }
}

/// Runs a command body: a `CheckpointError` becomes one line on stderr (more
/// with `--verbose`) and the documented exit status.
func reportingErrors(_ output: OutputOptions, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as CheckpointError {
        var hint = ""
        if case .tornFile = error.code, let path = error.path {
            hint = "; `ckpt recover \(path)` rebuilds its index from the complete records (`ckpt verify \(path)` shows what it would keep)"
        }
        printError("ckpt: error: \(error)\(hint)")
        if output.verbose {
            printError("  code: \(error.code)")
            if let path = error.path { printError("  file: \(path)") }
            if let blob = error.blobName { printError("  blob: \(blob)") }
            if let offset = error.offset { printError("  offset: \(offset)") }
        }
        throw ExitCode(exitStatus(for: error))
    } catch let error as ExitCode {
        throw error
    } catch let error as ValidationError {
        throw usageError(error.message)
    } catch {
        // Foundation's file and process errors: the system said no.
        printError("ckpt: error: \(error.localizedDescription)")
        throw ExitCode(Exit.io)
    }
}

// MARK: Progress

/// A progress bar on stderr, drawn only when stderr is a terminal and not `--quiet`.
final class ProgressBar {
    let label: String
    let enabled: Bool
    private var lastDraw = ContinuousClock.now - .seconds(1)
    private var drawn = false

    init(_ label: String, output: OutputOptions) {
        self.label = label
        self.enabled = !output.quiet && isatty(2) == 1
    }

    /// Whether done/total are bytes (shown as sizes) or steps.
    var countsBytes = true

    private let start = ContinuousClock.now

    func update(_ done: Int, _ total: Int) {
        guard enabled, ContinuousClock.now - lastDraw > .milliseconds(100) || done >= total else { return }
        lastDraw = ContinuousClock.now
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        var counts = countsBytes ? "\(formatBytesShort(done))/\(formatBytesShort(total))" : "\(done)/\(total)"
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        if countsBytes && done > 0 && seconds > 0 {
            counts += ", \(formatRate(bytes: done, seconds: seconds))"
            if done < total { counts += ", ETA \(formatDuration(seconds * Double(total - done) / Double(done)))" }
        }
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(Int(fraction * 100))% \(counts)\u{1B}[K".utf8))
        drawn = true
    }

    func finish() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

// MARK: Parsing

/// Parses a byte size: a number with an optional unit K, M, G, T (powers of
/// 1024; also KiB, MiB…), or KB, MB, GB, TB (powers of 1000).
func parseSize(_ text: String) -> Int? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let digits = trimmed.prefix { $0.isNumber }
    guard !digits.isEmpty, let value = Int(digits) else { return nil }
    let unit = trimmed.dropFirst(digits.count).uppercased()
    let multipliers: [String: Int] = ["": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30,
                                      "T": 1 << 40, "TIB": 1 << 40, "KB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000, "TB": 1_000_000_000_000]
    guard let multiplier = multipliers[unit] else { return nil }
    let (result, overflow) = value.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : result
}

/// Prints a JSON value on stdout.
func printJSON(_ value: JSONValue) {
    print(value.text)
}

// MARK: Codecs, names, suggestions

/// Parses a codec the one way every subcommand accepts it: `NAME` or
/// `NAME-LEVEL` (`zstd`, `zstd-3`), optionally with `level` (`--level 3`).
/// Errors are usage errors that say what to do.
func parseCodec(_ text: String, level: Int?, help command: String) throws -> Compression {
    let parts = text.lowercased().split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
    let name = parts[0]
    guard let defaultLevel = Compression.defaultLevel(forName: name) else {
        let suggestion = closestNames(to: name, among: Compression.names, limit: 1).first.map { "; did you mean \($0)?" } ?? ""
        throw ValidationError("unknown codec '\(text)'\(suggestion) Codecs: \(codecList). See `ckpt help \(command)`.")
    }
    var chosen = level
    if parts.count == 2 {
        guard let embedded = Int(parts[1]) else { throw ValidationError("bad codec '\(text)': the level after '-' must be a number, e.g. \(name)-\(max(1, defaultLevel))") }
        if let level, level != embedded { throw ValidationError("'\(text)' and --level \(level) disagree: give the level once") }
        chosen = embedded
    }
    let id = UInt8(Compression.names.firstIndex(of: name)!)
    let levels = Compression.levels(forID: id)!
    if let chosen, levels == 0...0 {
        throw ValidationError("\(name) has no levels (\(chosen) given); levels apply to lz4hc (1...12), zlib (1...9) and zstd (1...19)")
    }
    if let chosen, !levels.contains(chosen) {
        throw ValidationError("\(name) level \(chosen) is outside \(levels.lowerBound)...\(levels.upperBound)")
    }
    return try Compression(id: id, level: chosen ?? defaultLevel)
}

/// The codecs with their default levels, for help texts and errors.
let codecList = "none, lz4, lz4hc (levels 1-12, default 9), zlib (1-9, default 6), zstd (1-19, default 1), planes (byte planes, for floats)"

/// The names of `candidates` closest to `name` (edit distance, at most a third of the name's length, or sharing its start).
func closestNames(to name: String, among candidates: [String], limit: Int = 3) -> [String] {
    let target = Array(name.lowercased().utf8)
    let scored = candidates.map { candidate -> (String, Int) in (candidate, editDistance(target, Array(candidate.lowercased().utf8))) }
    let threshold = max(2, target.count / 3)
    return scored.filter { $0.1 <= threshold || ($0.0.lowercased().hasPrefix(name.lowercased()) && !name.isEmpty) }
        .sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }
        .prefix(limit).map(\.0)
}

/// Levenshtein distance between two byte strings.
func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    if a.isEmpty { return b.count }
    var previous = Array(0...b.count)
    var current = previous
    for i in 1...a.count {
        current[0] = i
        for j in stride(from: 1, through: b.count, by: 1) {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

/// A usage error (exit 64) with one line on stderr, for checks made after the arguments parsed.
func usageError(_ message: String) -> ExitCode {
    printError("ckpt: error: \(message)")
    return ExitCode(Exit.usage)
}

/// Joins a directory and a file name for printing, without `//`.
func joinPath(_ directory: String, _ name: String) -> String {
    CheckpointNaming.join(directory, name)
}

/// `1 tensor`, `2 tensors`.
func plural(_ count: Int, _ noun: String, _ plural: String? = nil) -> String {
    "\(count) \(count == 1 ? noun : plural ?? noun + "s")"
}

/// Removes the temporaries of this process's writes in flight on SIGINT and SIGTERM,
/// says so in one line and exits 130 or 143.
func installInterruptHandling() {
    InterruptCleanup.install { signal, targets in
        let name = signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)"
        let what = targets.isEmpty ? "nothing unfinished was left" : "removed the unfinished " + targets.joined(separator: ", ") + " (its temporary and lock files)"
        let clearLine = isatty(2) == 1 ? "\r\u{1B}[K" : ""
        FileHandle.standardError.write(Data("\(clearLine)ckpt: interrupted by \(name): \(what)\n".utf8))
    }
}

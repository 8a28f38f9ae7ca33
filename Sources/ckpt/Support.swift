import ArgumentParser
import CheckpointIO
import Foundation

func formatBytes(_ count: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(count) B" : String(format2: value) + " " + units[unit]
}

/// Prints an aligned table: the first `leftAligned` columns to the left, the others to the right.
func printTable(_ columns: [String], _ rows: [[String]], leftAligned: Int = 3) {
    let widths = columns.indices.map { column in ([columns[column]] + rows.map { $0[column] }).map(\.count).max()! }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            let pad = String(repeating: " ", count: widths[index] - cell.count)
            return index < leftAligned ? cell + pad : pad + cell
        }.joined(separator: "  ")
    }
    print(line(columns))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    rows.forEach { print(line($0)) }
}

extension String {
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
        printError("ckpt: error: \(error)")
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
        throw error
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

    func update(_ done: Int, _ total: Int) {
        guard enabled, ContinuousClock.now - lastDraw > .milliseconds(100) || done >= total else { return }
        lastDraw = ContinuousClock.now
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let counts = countsBytes ? "\(formatBytes(done))/\(formatBytes(total))" : "\(done)/\(total)"
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

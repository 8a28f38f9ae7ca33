@testable import CheckpointIO
import Foundation
import Testing

/// Issue 18, points 4-12: no path reports success while doing nothing, fails
/// later than it should, or leaves files behind. Each test runs the built `ckpt`.
@Suite("ckpt: no silent success")
struct NoSilentSuccessCLITests {
    // MARK: Helpers

    /// A container `a` (F32, 1024 values) + `b` (BF16), written with the library.
    func makeTwoTensorContainer(_ path: String) throws {
        var generator = SyntheticData(seed: 4)
        let a = generator.float32Weights(count: 1024)
        let b = generator.bfloat16Weights(count: 1024)
        let writer = try ContainerWriter.create(at: path)
        try a.withUnsafeBytes { a in
            try b.withUnsafeBytes { b in
                try writer.write([BlobSource(name: "a", dtype: .float32, shape: [1024], bytes: a),
                                  BlobSource(name: "b", dtype: .bfloat16, shape: [1024], bytes: b)])
            }
        }
        try writer.commit()
    }

    /// A checkpoint directory as the managers write it: epochs 0...3 of node `trainer_0`.
    func makeCheckpointDirectory(_ dir: String, epochs: Int = 4) throws {
        let manager = try CheckpointManager(dbPrefix: dir, nodeName: "trainer_0", metadataHandler: DurableMetadataHandler(),
                                            workspace: Workspace(["w": Tensor(scalar: Int64(-1))]))
        try manager.setParams()
        try manager.initialize()
        for epoch in 0..<epochs {
            manager.workspace["w"] = Tensor(scalar: Int64(epoch))
            try manager.save(epoch: epoch)
            try manager.writeCheckpointMetadata(epoch: epoch, metric: Double(epoch) / 10)
        }
    }

    func names(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }
    func hidden(_ dir: String) -> [String] { names(dir).filter { $0.hasPrefix(".") || $0.hasSuffix(".lock") } }

    /// 16 MiB of fp32 weights in `big.ckpt`: slow enough to interrupt with zstd-19 on one thread.
    func makeBigInput(_ dir: String) throws {
        var generator = SyntheticData(seed: 77)
        let weights = generator.float32Weights(count: 4 << 20)
        let writer = try ContainerWriter.create(at: dir + "/big.ckpt")
        try weights.withUnsafeBytes { try writer.write([BlobSource(name: "w", dtype: .float32, shape: [4 << 20], bytes: $0)]) }
        try writer.commit()
    }

    /// Starts `ckpt ARGUMENTS` in `dir` and waits (at most 60 s) until a hidden temporary of `target` exists.
    func startAndWaitForTemporary(_ arguments: [String], target: String, in dir: String) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = productsDirectory().appendingPathComponent("ckpt")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: dir)
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while !names(dir).contains(where: { $0.hasPrefix("." + target + ".tmp.") }) && Date() < deadline && process.isRunning {
            usleep(20_000)
        }
        return (process, err)
    }

    // MARK: 4. Directories

    @Test func aDirectoryWithoutNpyFilesIsAnError() throws {
        try withTemporaryDirectory { dir in
            try FileManager.default.createDirectory(atPath: dir + "/some_model_folder", withIntermediateDirectories: false)
            try writeBytes(dir + "/some_model_folder/README.txt", Array("weights elsewhere\n".utf8))
            let convert = try ckpt("convert", "some_model_folder/", "x.ckpt", in: dir)
            #expect(convert.status == 65 && convert.stderr.contains("holds no .npy files"), "\(convert.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/x.ckpt"))
            let verify = try ckpt("verify", "some_model_folder", in: dir)
            #expect(verify.status == 65 && !verify.stdout.contains("OK"))
        }
    }

    @Test func aCheckpointDirectoryIsListedAndEveryNamedFileVerified() throws {
        try withTemporaryDirectory { dir in
            let run1 = dir + "/run1"
            try FileManager.default.createDirectory(atPath: run1, withIntermediateDirectories: false)
            try makeCheckpointDirectory(run1)
            let inspect = try ckpt("inspect", "run1/", in: dir)
            #expect(inspect.status == 0, "\(inspect.stderr)")
            #expect(inspect.stdout.contains("checkpoint directory") && inspect.stdout.contains("4 recorded, 4 complete"))
            #expect(inspect.stdout.contains("resume point:         epoch 3"))
            for epoch in 0...3 { #expect(inspect.stdout.contains("trainer_0.\(epoch)")) }

            let verify = try ckpt("verify", "run1/", in: dir)
            #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
            #expect(verify.stdout.contains("4 files checked"))
            #expect(verify.stdout.components(separatedBy: "OK       run1/trainer_0.").count == 5)

            // The shell's run1/*: the metadata file is checked as metadata, a stray lock is skipped.
            try writeBytes(run1 + "/trainer_0.4.lock", [])
            let star = try run(productsDirectory().appendingPathComponent("ckpt").path, ["verify"] + names(run1).map { "run1/" + $0 }, in: dir)
            #expect(star.status == 0, "\(star.stdout)\(star.stderr)")
            #expect(star.stdout.contains("checkpoint_metadata.json: checkpoint metadata") && star.stdout.contains("SKIPPED"))

            // Damage: epoch 3's file torn, epoch 1's missing; an unrecorded epoch 9 on disk.
            let newest = try fileBytes(run1 + "/trainer_0.3")
            try writeBytes(run1 + "/trainer_0.3", Array(newest.dropLast(10)))
            try FileManager.default.removeItem(atPath: run1 + "/trainer_0.1")
            try FileManager.default.copyItem(atPath: run1 + "/trainer_0.2", toPath: run1 + "/trainer_0.9")
            let damaged = try ckpt("inspect", "run1", in: dir)
            #expect(damaged.status == 0)
            #expect(damaged.stdout.contains("resume point:         epoch 2"))
            #expect(damaged.stdout.contains("trainer_0: missing") && damaged.stdout.contains("trainer_0: torn") && damaged.stdout.contains("unrecorded"))
            let failed = try ckpt("verify", "run1", in: dir)
            #expect(failed.status != 0 && failed.stdout.contains("DAMAGED") && failed.stdout.contains("TORN     run1/trainer_0.3"))
            #expect(failed.stderr.contains("trainer_0.1"))
            let json = try JSONValue.parse(Array(try ckpt("inspect", "run1", "--json", in: dir).stdout.utf8), what: "inspect")
            #expect(json["format"]?.stringValue == "checkpoint-directory" && json["resume_epoch"]?.intValue == 2)

            // Not something to convert as a whole.
            let convert = try ckpt("convert", "run1", "x.ckpt", in: dir)
            #expect(convert.status == 65 && convert.stderr.contains("checkpoint directory"))
        }
    }

    // MARK: 5. Interrupts and leftovers

    @Test(arguments: [(SIGINT, Int32(130)), (SIGTERM, Int32(143))])
    func anInterruptRemovesTheTemporaryAndTheLock(signal: Int32, status: Int32) throws {
        try withTemporaryDirectory { dir in
            try makeBigInput(dir)
            let (process, err) = try startAndWaitForTemporary(["convert", "big.ckpt", "out.ckpt", "--codec", "zstd-19", "--threads", "1"],
                                                              target: "out.ckpt", in: dir)
            #expect(process.isRunning, "the conversion ended before it could be interrupted")
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationStatus == status)
            #expect(stderr.contains("interrupted by \(signal == SIGINT ? "SIGINT" : "SIGTERM")") && stderr.contains("out.ckpt"))
            #expect(stderr.split(separator: "\n").count == 1, "\(stderr)")
            #expect(names(dir) == ["big.ckpt"], "\(names(dir))")
        }
    }

    @Test(arguments: [SIGINT, SIGKILL])
    func anInterruptedBenchLeavesNoScratchFiles(signal: Int32) throws {
        try withTemporaryDirectory { dir in
            let process = Process()
            process.executableURL = productsDirectory().appendingPathComponent("ckpt")
            process.arguments = ["bench", "--size", "64M", "--repetitions", "50", "--dir", dir, "--codec", "zstd"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(120)
            while !names(dir).contains(where: { $0.hasPrefix(".ckpt-bench.") && !$0.contains(".tmp.") && !$0.hasSuffix(".lock") })
                    && Date() < deadline && process.isRunning {
                usleep(20_000)
            }
            #expect(process.isRunning)
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
            if signal == SIGINT {
                #expect(process.terminationStatus == 130)
            } else {
                // Killed outright: its scratch files stay until the next benchmark in the directory.
                #expect(!names(dir).isEmpty)
                #expect(try ckpt("bench", "--size", "1M", "--repetitions", "1", "--dir", dir).status == 0)
            }
            #expect(names(dir).isEmpty, "\(names(dir))")
        }
    }

    @Test func theNextWriteRemovesWhatAKilledRunLeft() throws {
        try withTemporaryDirectory { dir in
            try makeBigInput(dir)
            let (process, _) = try startAndWaitForTemporary(["convert", "big.ckpt", "out.ckpt", "--codec", "zstd-19", "--threads", "1"],
                                                            target: "out.ckpt", in: dir)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(hidden(dir).contains { $0.hasPrefix(".out.ckpt.tmp.") } && hidden(dir).contains("out.ckpt.lock"), "\(names(dir))")
            // A temporary of a live process (this one) with the same shape is left alone.
            let live = ".other.ckpt.tmp.\(getpid()).abc"
            try writeBytes(dir + "/" + live, [1, 2, 3])
            let next = try ckpt("extract", "big.ckpt", "w", "-o", "w.npy", in: dir)
            #expect(next.status == 0, "\(next.stderr)")
            #expect(next.stdout.contains("removed 1 abandoned temporary"))
            #expect(hidden(dir) == [live], "\(names(dir))")
        }
    }

    @Test func aFailedNpyDirectoryOutputLeavesNothingHalfWritten() throws {
        try withTemporaryDirectory { dir in
            try makeTwoTensorContainer(dir + "/m.ckpt")
            // `a` converts, then `b` (BF16) cannot: nothing of the output may remain.
            let failed = try ckpt("convert", "m.ckpt", "arrays/", in: dir)
            #expect(failed.status == 65 && failed.stderr.contains("BF16"))
            #expect(names(dir) == ["m.ckpt"], "\(names(dir))")
            // Into an existing directory (with --force): its files stay as they were.
            try FileManager.default.createDirectory(atPath: dir + "/existing", withIntermediateDirectories: false)
            try writeBytes(dir + "/existing/keep.txt", [1])
            let merge = try ckpt("convert", "m.ckpt", "existing/", "--force", in: dir)
            #expect(merge.status == 65)
            #expect(names(dir + "/existing") == ["keep.txt"] && names(dir) == ["existing", "m.ckpt"])
            // A good one lands whole.
            #expect(try ckpt("extract", "m.ckpt", "a", "-o", "existing/", "--force", in: dir).status == 0)
            #expect(names(dir + "/existing") == ["a.npy", "keep.txt"])
        }
    }

    // MARK: 6. Options that do not apply

    @Test func optionsThatDoNotApplyAreRefused() throws {
        try withTemporaryDirectory { dir in
            try makeTwoTensorContainer(dir + "/m.ckpt")
            let path = productsDirectory().appendingPathComponent("ckpt").path
            for (arguments, reason) in [(["extract", "m.ckpt", "a", "-o", "a.npz", "--codec", "zstd"], "applies to container"),
                                        (["extract", "m.ckpt", "a", "-o", "a.npz", "--level", "3"], "applies to container"),
                                        (["convert", "m.ckpt", "m.safetensors", "--codec", "lz4", "--shuffle", "on"], "apply to container"),
                                        (["convert", "m.ckpt", "o.ckpt", "--shuffle", "on"], "--shuffle needs --codec"),
                                        (["convert", "m.ckpt", "o.ckpt", "--level", "3"], "--level needs --codec"),
                                        (["convert", "m.ckpt", "model.pt"], "pass --format")] {
                let result = try run(path, arguments, in: dir)
                #expect(result.status == 64, "\(arguments)")
                #expect(result.stderr.contains(reason), "\(arguments): \(result.stderr)")
            }
            #expect(names(dir) == ["m.ckpt"])
            // --format says what an unusual name holds.
            #expect(try ckpt("convert", "m.ckpt", "model.pt", "--format", "ckpt", in: dir).status == 0)
            #expect(try TensorFileFormat.detect(dir + "/model.pt") == .container)
            // An existing output is refused without --force, and stays as it was.
            try makeTwoTensorContainer(dir + "/o.ckpt")
            let before = try fileBytes(dir + "/o.ckpt")
            let refused = try ckpt("convert", "m.ckpt", "o.ckpt", "--codec", "zstd", in: dir)
            #expect(refused.status == 64 && refused.stderr.contains("exists; pass --force"))
            #expect(try fileBytes(dir + "/o.ckpt") == before)
            #expect(try ckpt("convert", "m.ckpt", "o.ckpt", "--codec", "zstd", "-f", in: dir).status == 0)
            #expect(try TensorFile.open(dir + "/o.ckpt").entries.allSatisfy { $0.codec == "zstd" })
            let recover = try ckpt("recover", "m.ckpt", "-o", "o.ckpt", in: dir)
            #expect(recover.status == 64)
            let help = try ckpt("help", "convert")
            #expect(help.stdout.contains("--force") && help.stdout.contains("--format") && help.stdout.contains("--no-sync"))
        }
    }

    // MARK: 7. One codec syntax

    @Test func everySubcommandAcceptsBothCodecSyntaxes() throws {
        try withTemporaryDirectory { dir in
            try makeTwoTensorContainer(dir + "/m.ckpt")
            #expect(try ckpt("convert", "m.ckpt", "dash.ckpt", "--codec", "zstd-3", in: dir).status == 0)
            #expect(try ckpt("convert", "m.ckpt", "flag.ckpt", "--codec", "zstd", "--level", "3", in: dir).status == 0)
            #expect(try ckpt("convert", "m.ckpt", "default.ckpt", "--codec", "zstd", in: dir).status == 0)
            #expect(try ContainerReader.open(dir + "/dash.ckpt").descriptor("a").compression == .zstd(level: 3))
            #expect(try ContainerReader.open(dir + "/flag.ckpt").descriptor("a").compression == .zstd(level: 3))
            #expect(try ContainerReader.open(dir + "/default.ckpt").descriptor("a").compression == .zstd(level: 1))
            let disagree = try ckpt("convert", "m.ckpt", "x.ckpt", "--codec", "zstd-3", "--level", "5", in: dir)
            #expect(disagree.status == 64 && disagree.stderr.contains("disagree"))
            for arguments in [["--codec", "zstd-3"], ["--codec", "zstd", "--level", "3"]] {
                let bench = try run(productsDirectory().appendingPathComponent("ckpt").path,
                                    ["bench", "--size", "1M", "--repetitions", "1", "--dir", dir, "--json"] + arguments)
                #expect(bench.status == 0, "\(arguments): \(bench.stderr)")
            }
            #expect(try ckpt("codecs", "--size-mib", "1", "--codecs", "zstd-3,zstd,lz4").status == 0)
            for command in ["convert", "extract", "bench"] {
                let help = try ckpt("help", command).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
                #expect(help.contains("zstd (1-19, default 1)"), "\(command): \(help)")
            }
        }
    }

    // MARK: 8. Numbers

    @Test func numbersPeopleCanRead() throws {
        try withTemporaryDirectory { dir in
            try makeTwoTensorContainer(dir + "/m.ckpt")
            let one = try ckpt("extract", "m.ckpt", "a", "-o", "a.ckpt", "--codec", "zstd", in: dir)
            #expect(one.status == 0)
            #expect(one.stdout.contains("1 tensor,") && !one.stdout.contains("1 tensors"))
            // zstd -v's summary, IEC rates with IEC sizes, milliseconds for a small file.
            #expect(one.stdout.contains("% (4.0 KiB => "), "\(one.stdout)")
            #expect(one.stdout.contains(" ms,") && !one.stdout.contains("GB/s") && !one.stdout.contains("0.00"), "\(one.stdout)")
            #expect(one.stdout.contains("iB/s"))
            // The progress bar (drawn only on a terminal: util-linux `script` provides one) shows the rate.
            if FileManager.default.isExecutableFile(atPath: "/usr/bin/script") {
                let command = "'\(productsDirectory().appendingPathComponent("ckpt").path)' convert m.ckpt bar.ckpt"
                let terminal = try run("/usr/bin/script", ["-qec", command, "/dev/null"], in: dir)
                let bar = terminal.stdout.components(separatedBy: "convert [").dropFirst().first?.components(separatedBy: "\u{1B}[K").first ?? ""
                #expect(bar.contains("100% ") && bar.contains("iB/s"), "\(terminal.stdout)")
            }
            let bench = try ckpt("bench", "--size", "1M", "--repetitions", "1", "--dir", dir + "/")
            #expect(bench.status == 0)
            let output = bench.stdout.replacingOccurrences(of: dir, with: "DIR")  // the test's own directory may hold a "//"
            #expect(output.contains("in DIR\n") && !output.contains("//") && !output.contains(" 0.00 "), "\(output)")
            #expect(!bench.stdout.contains("GB/s"))
        }
    }

    // MARK: 9. inspect

    @Test func inspectShowsSizeTotalsFilterStatsAndJSON() throws {
        try withTemporaryDirectory { dir in
            let nan = Float.nan.bitPattern, inf = Float.infinity.bitPattern
            let values: [UInt32] = [Float(1).bitPattern, Float(-3).bitPattern, nan, inf, Float(2).bitPattern]
            let writer = try ContainerWriter.create(at: dir + "/s.ckpt")
            try values.withUnsafeBytes { v in
                try writer.write([BlobSource(name: "model.layers.0.very_long_name_" + String(repeating: "x", count: 120), dtype: .float32, shape: [5], bytes: v),
                                  BlobSource(name: "model.norm", dtype: .float32, shape: [5], bytes: v),
                                  BlobSource(name: "ids", dtype: .int32, shape: [5], bytes: v)])
            }
            try writer.commit()
            let size = try #require(FileManager.default.attributesOfItem(atPath: dir + "/s.ckpt")[.size] as? Int)
            let human = try ckpt("inspect", "s.ckpt", in: dir)
            #expect(human.status == 0)
            #expect(human.stdout.contains("on disk") && human.stdout.contains("parameters: 15 (10 F32, 5 I32)"), "\(human.stdout)")
            #expect(human.stdout.split(separator: "\n").allSatisfy { $0.count <= 100 }, "\(human.stdout)")
            let filtered = try ckpt("inspect", "s.ckpt", "--filter", "model.*", in: dir)
            #expect(filtered.stdout.contains("2 matching 'model.*' (of 3)") && !filtered.stdout.contains("ids "))
            let stats = try ckpt("inspect", "s.ckpt", "--stats", "--filter", "model.norm", in: dir)
            // min -3, max 2, mean 0, std sqrt(14/3) over the 3 finite values; one NaN, one Inf.
            let row = try #require(stats.stdout.split(separator: "\n").last.map(String.init))
            let cells = row.split(separator: " ").map(String.init)
            #expect(cells.suffix(6) == ["-3", "2", "0", "2.16", "1", "1"], "\(row)")
            let json = try JSONValue.parse(Array(try ckpt("inspect", "s.ckpt", "--json", "--stats", in: dir).stdout.utf8), what: "inspect")
            #expect(json["version"] == .number("1") && json["path"]?.stringValue == "s.ckpt" && json["file_bytes"]?.intValue == size)
            #expect(json["totals"]?["parameters"]?.intValue == 15 && json["totals"]?["tensors"]?.intValue == 3)
            let reader = try ContainerReader.open(dir + "/s.ckpt")
            let norm = try #require(json["blobs"]?.arrayValue?.first { $0["name"]?.stringValue == "model.norm" })
            #expect(norm["crc32c"]?.stringValue == String(format: "%08X", try reader.descriptor("model.norm").rawCRC32C))
            #expect(norm["stats"]?["nan"]?.intValue == 1 && norm["stats"]?["inf"]?.intValue == 1)
            #expect(human.stdout.contains(String(format: "%08X", try reader.descriptor("model.norm").rawCRC32C)))
            let version = try ckpt("--version")
            #expect(version.status == 0 && version.stdout.hasPrefix("ckpt "))
        }
    }

    // MARK: 10. Errors that say what to do

    @Test func errorsSayWhatToDo() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt")
            let name = try ckpt("extract", "m.ckpt", "layer.wieght", "-o", "x.npz", in: dir)
            #expect(name.status == 64 && name.stderr.contains("did you mean 'layer.weight'") && name.stderr.contains("ckpt inspect m.ckpt"), "\(name.stderr)")
            let codec = try ckpt("convert", "m.ckpt", "x.ckpt", "--codec", "zstdd", in: dir)
            #expect(codec.status == 64 && codec.stderr.contains("did you mean zstd") && codec.stderr.contains("ckpt help convert"))
            let level = try ckpt("convert", "m.ckpt", "x.ckpt", "--codec", "zstd", "--level", "99", in: dir)
            #expect(level.status == 64 && level.stderr.contains("zstd level 99 is outside 1...19") && !level.stderr.contains("codec id"))
            let threads = try ckpt("convert", "m.ckpt", "x.ckpt", "--threads", "-1", in: dir)
            #expect(threads.status == 64 && threads.stderr.contains("must be ≥ 0") && !threads.stderr.contains("Missing value"))
            let missingDirectory = try ckpt("convert", "m.ckpt", "no/such/dir/x.ckpt", in: dir)
            #expect(missingDirectory.status == 74 && missingDirectory.stderr.contains("output directory 'no/such/dir' does not exist"))
            try writeBytes(dir + "/torn.ckpt", Array(try fileBytes(dir + "/m.ckpt").dropLast(3)))
            let torn = try ckpt("inspect", "torn.ckpt", in: dir)
            #expect(torn.status == 65 && torn.stderr.contains("ckpt recover torn.ckpt"), "\(torn.stderr)")
            #expect(try ckpt("codecs", "--codecs", "brotli").status == 64)
            #expect(try ckpt("codecs", "--size-mib", "0").status == 64)
            #expect(try ckpt("codecs", "--threads", "-2").status == 64)
            #expect(try ckpt("bench", "--repetitions", "-1").stderr.contains("at least 1"))
        }
    }

    @Test func libraryErrorsNameTheUsersPathNotTheTemporary() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/out.ckpt"
            let writer = try ContainerWriter.create(at: path)
            defer { writer.abort() }
            let bytes = [UInt8](repeating: 0, count: 8)
            let error = try #require(throws: CheckpointError.self) {
                try bytes.withUnsafeBytes { try writer.write([BlobSource(name: "w", dtype: .float32, shape: [10], bytes: $0)]) }
            }
            #expect(error.path == path, "\(error)")
            let conversion = try #require(throws: CheckpointError.self) {
                try bytes.withUnsafeBytes { try TensorConversion.write([BlobSource(name: "w", dtype: .float32, shape: [10], bytes: $0)], to: dir + "/o.safetensors") }
            }
            #expect(!(conversion.path ?? "").contains(".tmp."), "\(conversion)")
        }
    }

    // MARK: 11. bench

    @Test func benchWarmsUpAndReportsFirstRunApart() throws {
        try withTemporaryDirectory { dir in
            let human = try ckpt("bench", "--size", "1M", "--repetitions", "2", "--dir", dir)
            #expect(human.status == 0, "\(human.stderr)")
            #expect(human.stdout.contains("first run") && human.stdout.contains("warm-up"), "\(human.stdout)")
            let json = try JSONValue.parse(Array(try ckpt("bench", "--size", "1M", "--repetitions", "2", "--dir", dir, "--json").stdout.utf8), what: "bench")
            let save = try #require(json["results"]?.arrayValue?.first)
            #expect(save["first_seconds"]?.doubleValue != nil && save["seconds"]?.doubleValue != nil)
            #expect(json["warmup_repetitions"]?.intValue == 1)
            #expect(names(dir).isEmpty)
        }
    }

    // MARK: 12. Durable outputs

    /// The system calls of `ckpt ARGUMENTS`, or nil when strace cannot trace here.
    func trace(_ arguments: [String], in dir: String) throws -> [String]? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/strace") else { return nil }
        let result = try run("/usr/bin/strace", ["-f", "-o", dir + "/trace.txt", "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
                                                 productsDirectory().appendingPathComponent("ckpt").path] + arguments, in: dir)
        guard result.status == 0, let text = try? String(contentsOfFile: dir + "/trace.txt", encoding: .utf8) else { return nil }
        try FileManager.default.removeItem(atPath: dir + "/trace.txt")
        return text.split(separator: "\n").map(String.init)
    }

    /// True when the trace creates the temporary of `output` (for a directory: a file in it), syncs a file,
    /// renames the temporary to `output`, then syncs a directory.
    func syncsRenamesAndSyncsTheDirectory(_ lines: [String], output: String) -> Bool {
        func fd(_ line: String) -> String? { line.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespaces) } }
        guard let open = lines.firstIndex(where: { $0.contains("openat(") && $0.contains("." + output + ".tmp.") && $0.contains("O_CREAT") }),
              let sync = lines[open...].firstIndex(where: { $0.contains("fsync(") || $0.contains("fdatasync(") }),
              let rename = lines[sync...].firstIndex(where: { $0.contains("rename") && $0.contains("\"\(output)\"") }),
              let directory = lines[rename...].firstIndex(where: { $0.contains("O_DIRECTORY") && !$0.contains("O_NONBLOCK") }),
              let directoryFD = fd(lines[directory]) else { return false }
        return lines[directory...].contains { $0.contains("fsync(\(directoryFD))") }
    }

    @Test func cliOutputsAreDurableUnlessAskedNotToBe() throws {
        #expect(ConversionOptions().durability == .full)
        try withTemporaryDirectory { dir in
            try makeTwoTensorContainer(dir + "/m.ckpt")
            guard let convert = try trace(["convert", "m.ckpt", "c.ckpt"], in: dir) else {
                print("strace cannot trace here: the fsync order is not checked")
                return
            }
            #expect(syncsRenamesAndSyncsTheDirectory(convert, output: "c.ckpt"), "\(convert.joined(separator: "\n"))")
            let extract = try #require(try trace(["extract", "m.ckpt", "a", "-o", "a.safetensors"], in: dir))
            #expect(syncsRenamesAndSyncsTheDirectory(extract, output: "a.safetensors"))
            try writeBytes(dir + "/torn.ckpt", Array(try fileBytes(dir + "/m.ckpt").dropLast(5)))
            let recover = try #require(try trace(["recover", "torn.ckpt", "-o", "fixed.ckpt"], in: dir))
            #expect(syncsRenamesAndSyncsTheDirectory(recover, output: "fixed.ckpt"), "\(recover.joined(separator: "\n"))")
            #expect(try ckpt("verify", "fixed.ckpt", in: dir).status == 0)
            let npy = try #require(try trace(["extract", "m.ckpt", "a", "-o", "arrays/"], in: dir))
            #expect(syncsRenamesAndSyncsTheDirectory(npy, output: "arrays"), "\(npy.joined(separator: "\n"))")
            let scratch = try #require(try trace(["convert", "m.ckpt", "s.ckpt", "--no-sync"], in: dir))
            #expect(!scratch.contains { $0.contains("fsync(") || $0.contains("fdatasync(") })
            let printed = try ckpt("convert", "m.ckpt", "p.ckpt", in: dir)
            #expect(printed.stdout.contains("durable"))
            #expect(try ckpt("help", "convert").stdout.contains("--no-sync"))
        }
    }
}

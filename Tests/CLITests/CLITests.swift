@testable import CheckpointIO
import Foundation
import Testing

/// A container with a few kinds of blobs: fp32 weights (uncompressed), bf16 (zstd), a string tensor.
func makeContainer(_ path: String, commits: Int = 1) throws {
    var generator = SyntheticData(seed: 9)
    let weights = generator.float32Weights(count: 4096)
    let bf16 = generator.bfloat16Weights(count: 4096)
    let vocabulary = StringTensor.encode(["a", "bc"])
    let writer = try ContainerWriter.create(at: path)
    writer.metadata = ["epoch": "3"]
    try weights.withUnsafeBytes { w in
        try bf16.withUnsafeBytes { b in
            try vocabulary.withUnsafeBytes { v in
                try writer.write([
                    BlobSource(name: "layer.weight", dtype: .float32, shape: [64, 64], bytes: w),
                    BlobSource(name: "layer.bf16", dtype: .bfloat16, shape: [4096], bytes: b, encode: EncodeOptions(compression: .zstd(level: 3))),
                    BlobSource(name: "vocab", dtype: .string, shape: [2], bytes: v),
                ])
            }
        }
    }
    try writer.commit()
    for commit in 1..<commits {
        let appender = try ContainerWriter.append(to: path)
        try weights.withUnsafeBytes { w in
            try appender.write([BlobSource(name: "extra.\(commit)", dtype: .float32, shape: [4096], bytes: w)])
        }
        try appender.commit()
    }
}

@Suite("ckpt command line")
struct CLITests {
    @Test func helpDocumentsTheExitStatuses() throws {
        let result = try ckpt("--help")
        #expect(result.status == 0)
        for text in ["Exit status", "64", "65", "74", "inspect", "verify", "convert", "extract", "recover", "bench", "demo"] {
            #expect(result.stdout.contains(text), "\(text)")
        }
    }

    @Test func inspectHumanAndJSON() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt")
            let human = try ckpt("inspect", "m.ckpt", in: dir)
            #expect(human.status == 0)
            #expect(human.stdout.contains("ckpt (version 1)") && human.stdout.contains("epoch = 3"))
            #expect(human.stdout.contains("layer.bf16") && human.stdout.contains("zstd") && human.stdout.contains("BF16"))
            let json = try ckpt("inspect", "m.ckpt", "--json", in: dir)
            #expect(json.status == 0)
            let value = try JSONValue.parse(Array(json.stdout.utf8), what: "inspect output")
            #expect(value["format"]?.stringValue == "ckpt")
            #expect(value["version"] == .number("1"))
            #expect(value["metadata"]?["epoch"]?.stringValue == "3")
            let blobs = try #require(value["blobs"]?.arrayValue)
            #expect(blobs.count == 3)
            let weight = try #require(blobs.first { $0["name"]?.stringValue == "layer.weight" })
            #expect(weight["dtype"]?.stringValue == "F32")
            #expect(weight["shape"] == .array([.number("64"), .number("64")]))
            #expect(weight["codec"]?.stringValue == "none" && weight["filter"]?.stringValue == "none")
            #expect(weight["raw_bytes"]?.intValue == 16384 && weight["stored_bytes"]?.intValue == 16384)
            let reader = try ContainerReader.open(dir + "/m.ckpt")
            #expect(weight["crc32c"]?.stringValue == String(format: "%08X", try reader.descriptor("layer.weight").rawCRC32C))
            #expect(weight["offset"]?.intValue == (try reader.descriptor("layer.weight").payloadOffset))
        }
    }

    @Test func inspectErrorsHaveDistinctExitCodes() throws {
        try withTemporaryDirectory { dir in
            let missing = try ckpt("inspect", "nope.ckpt", in: dir)
            #expect(missing.status == 74)
            #expect(missing.stderr.hasPrefix("ckpt: error:") && missing.stderr.contains("nope.ckpt") && missing.stderr.split(separator: "\n").count == 1)
            try writeBytes(dir + "/text.ckpt", Array("hello, world\n".utf8))
            let notCheckpoint = try ckpt("inspect", "text.ckpt", in: dir)
            #expect(notCheckpoint.status == 65)
            #expect(notCheckpoint.stderr.contains("not a checkpoint"))
            let verbose = try ckpt("inspect", "text.ckpt", "--verbose", in: dir)
            #expect(verbose.stderr.contains("file: text.ckpt"))
            #expect(try ckpt("inspect", in: dir).status == 64)
        }
    }

    @Test func verifyReportsDamageByBlobAndChunk() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt")
            let ok = try ckpt("verify", "m.ckpt", in: dir)
            #expect(ok.status == 0 && ok.stdout.contains("OK") && ok.stdout.contains("3 blobs"))
            var bytes = try fileBytes(dir + "/m.ckpt")
            let offset = try ContainerReader.open(dir + "/m.ckpt").descriptor("layer.weight").payloadOffset
            bytes[offset + 100] ^= 0x10
            try writeBytes(dir + "/bad.ckpt", bytes)
            let bad = try ckpt("verify", "m.ckpt", "bad.ckpt", in: dir)
            #expect(bad.status == 65)
            #expect(bad.stdout.contains("DAMAGED  bad.ckpt: blob 'layer.weight', chunk 0: expected CRC32C 0x"))
            #expect(bad.stdout.contains(", actual 0x"))
            #expect(!bad.stdout.contains("blob 'layer.bf16'"))
            let json = try JSONValue.parse(Array(try ckpt("verify", "bad.ckpt", "--json", in: dir).stdout.utf8), what: "verify output")
            #expect(json["ok"] == .bool(false))
            let damaged = try #require(json["files"]?.arrayValue?.first?["damaged"]?.arrayValue?.first)
            #expect(damaged["blob"]?.stringValue == "layer.weight" && damaged["chunk"]?.intValue == 0)
            #expect(damaged["expected_crc32c"]?.intValue != damaged["actual_crc32c"]?.intValue)
            let missing = try ckpt("verify", "m.ckpt", "missing.ckpt", in: dir)
            #expect(missing.status == 74)
        }
    }

    @Test func verifyAndRecoverATornFile() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt", commits: 2)
            let bytes = try fileBytes(dir + "/m.ckpt")
            // Cut into the last trailer: the first commit survives; no trailer at the end.
            try writeBytes(dir + "/torn.ckpt", Array(bytes.dropLast(20)))
            let verify = try ckpt("verify", "torn.ckpt", in: dir)
            #expect(verify.status == 65)
            #expect(verify.stdout.contains("TORN") && verify.stdout.contains("recovery (`ckpt recover`) would keep 4 blobs"))
            let copy = try ckpt("recover", "torn.ckpt", "-o", "fixed.ckpt", in: dir)
            #expect(copy.status == 0, "\(copy.stderr)")
            #expect(copy.stdout.contains("4 blobs"))
            #expect(try fileBytes(dir + "/torn.ckpt") == Array(bytes.dropLast(20)))
            #expect(try ckpt("verify", "fixed.ckpt", in: dir).status == 0)
            #expect(try ckpt("recover", "torn.ckpt", in: dir).status == 0)
            #expect(try ckpt("verify", "torn.ckpt", in: dir).status == 0)
            try writeBytes(dir + "/x.safetensors", [2, 0, 0, 0, 0, 0, 0, 0, 0x7B, 0x7D])
            #expect(try ckpt("recover", "x.safetensors", in: dir).status == 65)
            #expect(try ckpt("recover", "none.ckpt", in: dir).status == 74)
        }
    }

    @Test func convertAndExtractBetweenFormats() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt")
            // bf16 and strings have no numpy dtype: a clear data error, nothing written.
            let npz = try ckpt("convert", "m.ckpt", "m.npz", in: dir)
            #expect(npz.status == 65 && npz.stderr.contains("numpy has no BF16"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/m.npz"))
            let extracted = try ckpt("extract", "m.ckpt", "layer.weight", "-o", "w.npz", in: dir)
            #expect(extracted.status == 0, "\(extracted.stderr)")
            #expect(try TensorFile.open(dir + "/w.npz").entries.map(\.name) == ["layer.weight"])
            #expect(try ckpt("extract", "m.ckpt", "no.such.blob", "-o", "x.npz", in: dir).status == 64)
            // Safetensors has no STRING: extract the others, then round-trip through every format.
            #expect(try ckpt("extract", "m.ckpt", "layer.weight", "layer.bf16", "-o", "m.safetensors", in: dir).status == 0)
            #expect(try ckpt("convert", "m.safetensors", "lz4.ckpt", "--codec", "lz4", "--chunk-size", "4K", in: dir).status == 0)
            let lz4 = try TensorFile.open(dir + "/lz4.ckpt")
            #expect(lz4.entries.allSatisfy { $0.codec == "lz4" })
            #expect(try ckpt("convert", "lz4.ckpt", "back.safetensors", in: dir).status == 0)
            #expect(try fileBytes(dir + "/back.safetensors") == fileBytes(dir + "/m.safetensors"))
            #expect(try ckpt("convert", "w.npz", "npys/", in: dir).status == 0)
            #expect(FileManager.default.fileExists(atPath: dir + "/npys/layer.weight.npy"))
            #expect(try ckpt("convert", "npys", "again.npz", in: dir).status == 0)
            #expect(try fileBytes(dir + "/again.npz") == fileBytes(dir + "/w.npz"))
            let original = try TensorFile.open(dir + "/m.ckpt")
            let roundTripped = try TensorFile.open(dir + "/again.npz")
            let a = try original.withUnsafeBytes(of: "layer.weight") { Array($0) }
            let b = try roundTripped.withUnsafeBytes(of: "layer.weight") { Array($0) }
            #expect(a == b)
        }
    }

    @Test func convertRejectsBadArgumentsAsUsageErrors() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt")
            for arguments in [["--codec", "brotli"], ["--codec", "lz4", "--level", "3"], ["--chunk-size", "12X"], ["--chunk-size", "17"],
                              ["--shuffle", "maybe"], ["--align", "3"], ["--codec", "zstd", "--level", "99"], ["--threads", "-1"]] {
                let result = try run(productsDirectory().appendingPathComponent("ckpt").path, ["convert", "m.ckpt", "o.ckpt"] + arguments, in: dir)
                #expect(result.status == 64, "\(arguments): \(result.stderr)")
            }
            #expect(try ckpt("convert", "missing.ckpt", "o.ckpt", in: dir).status == 74)
            #expect(!FileManager.default.fileExists(atPath: dir + "/o.ckpt"))
        }
    }

    @Test func moreErrorPathsHaveTheirExitCodes() throws {
        try withTemporaryDirectory { dir in
            try makeContainer(dir + "/m.ckpt", commits: 2)
            #expect(try ckpt("extract", "none.ckpt", "-o", "x.npz", in: dir).status == 74)
            #expect(try ckpt("bench", "--codec", "brotli").status == 64)
            try writeBytes(dir + "/text.bin", Array("not a tensor file".utf8))
            #expect(try ckpt("verify", "text.bin", in: dir).status == 65)
            #expect(try ckpt("convert", "text.bin", "o.ckpt", in: dir).status == 65)
            var bytes = try fileBytes(dir + "/m.ckpt")
            let offset = try ContainerReader.open(dir + "/m.ckpt").descriptor("layer.weight").payloadOffset
            bytes[offset] ^= 1
            try writeBytes(dir + "/bad.ckpt", bytes)
            let corrupt = try ckpt("convert", "bad.ckpt", "o.safetensors", in: dir)
            #expect(corrupt.status == 65 && corrupt.stderr.contains("layer.weight"))
            try writeBytes(dir + "/torn.ckpt", Array(try fileBytes(dir + "/m.ckpt").dropLast(3)))
            let torn = try ckpt("inspect", "torn.ckpt", in: dir)
            #expect(torn.status == 0 && torn.stdout.contains("warning:    torn file"))
            #expect(try ckpt("inspect", "--json", in: dir).status == 64)
            // npz: every damaged member is reported with both CRC-32s; the others still count as checked.
            #expect(try ckpt("extract", "m.ckpt", "layer.weight", "-o", "w.npz", in: dir).status == 0)
            var npz = try fileBytes(dir + "/w.npz")
            let member = try #require(TensorFile.open(dir + "/w.npz").entries.first?.offset)
            npz[member + 5] ^= 0x20
            try writeBytes(dir + "/bad.npz", npz)
            let verify = try ckpt("verify", "bad.npz", in: dir)
            #expect(verify.status == 65 && verify.stdout.contains("DAMAGED  bad.npz: blob 'layer.weight': expected CRC-32 0x"), "\(verify.stdout)")
        }
    }

    @Test func benchRunsAndReportsJSON() throws {
        try withTemporaryDirectory { dir in
            let result = try ckpt("bench", "--size", "4M", "--repetitions", "1", "--json", "--dir", dir)
            #expect(result.status == 0, "\(result.stderr)")
            let json = try JSONValue.parse(Array(result.stdout.utf8), what: "bench output")
            let results = try #require(json["results"]?.arrayValue)
            let names = results.compactMap { $0["name"]?.stringValue }
            #expect(names.contains("load + verify CRC32C"))
            #expect(results.allSatisfy { ($0["seconds"]?.doubleValue ?? 0) > 0 })
            #expect(try #require(results.first)["ratio"]?.doubleValue != nil)
            // CPU time per figure: a save spends some.
            #expect((results.first?["cpu_seconds"]?.doubleValue ?? 0) > 0)
            #expect(!names.contains("save (durable) vs uncompressed"))
            // With a codec: the durable save next to the same save uncompressed.
            let coded = try ckpt("bench", "--size", "4M", "--repetitions", "1", "--json", "--dir", dir, "--codec", "lz4")
            #expect(coded.status == 0, "\(coded.stderr)")
            let codedResults = try #require(JSONValue.parse(Array(coded.stdout.utf8), what: "bench output")["results"]?.arrayValue)
            let pair = try #require(codedResults.first { $0["name"]?.stringValue == "save (durable) vs uncompressed" })
            #expect(pair["floor"]?.stringValue == "ours uncompressed" && (pair["ratio"]?.doubleValue ?? 0) > 0)
            #expect(try ckpt("bench", "--size", "12Q").status == 64)
            #expect(try ckpt("bench", "--workload", dir + "/none.ckpt", "--dir", dir).status == 74)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        }
    }

    @Test func demoCrashesResumesAndChecksEveryByte() throws {
        try withTemporaryDirectory { dir in
            let result = try ckpt("demo", "--dir", dir, "--hidden", "64", "--layers", "2", "--epochs", "6")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("killed while writing trainer_0.4"))
            #expect(result.stdout.contains("newest complete epoch: 3"))
            #expect(result.stdout.contains("bit-exact with a recomputation"))
            #expect(result.stdout.contains("final state bit-exact: yes"))
        }
    }
}

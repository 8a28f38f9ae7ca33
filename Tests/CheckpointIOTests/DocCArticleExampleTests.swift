import CheckpointIO
import Foundation
import Testing

// The ```swift blocks of the DocC articles (Sources/CheckpointIO/CheckpointIO.docc),
// compiled and run. Each block is copied below between `// ARTICLE block N` and
// `// end of ARTICLE block N`, at column 0 and byte for byte, with two
// differences only: without its `import CheckpointIO` line and with `"/ckpt/`
// written `"\(ckpt)/`, where `ckpt` is a temporary directory.
// `theCodeBelowIsTheArticles` fails when an article and this file disagree,
// so an edit of either that breaks an example fails a test.

@Suite("DocC article examples")
struct DocCArticleExampleTests {
    static let catalog = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/CheckpointIO/CheckpointIO.docc")

    /// The articles with examples, and how many ```swift blocks each has.
    static let articles = ["GettingStarted.md": 1, "Caffe2Users.md": 1, "PerformanceTuning.md": 1]

    /// The ```swift blocks of a Markdown text.
    static func swiftBlocks(_ text: String) -> [String] {
        var blocks: [String] = [], current: [Substring]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```swift" {
                current = []
            } else if current != nil, line == "```" {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(line)
            }
        }
        return blocks
    }

    /// The lines between `// ARTICLE block N` and `// end of ARTICLE block N` in this file.
    static func copiedBlocks(_ text: String, article: String) -> [Int: String] {
        var blocks: [Int: String] = [:]
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let marker = "// \(article) block "
        for (index, line) in lines.enumerated() where line.hasPrefix(marker) {
            guard let number = Int(line.dropFirst(marker.count)),
                  let end = lines[index...].firstIndex(of: "// end of \(article) block \(number)") else { continue }
            blocks[number] = lines[(index + 1)..<end].joined(separator: "\n")
        }
        return blocks
    }

    @Test func theCodeBelowIsTheArticles() throws {
        let this = try String(contentsOfFile: #filePath, encoding: .utf8)
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.catalog.path).filter { $0.hasSuffix(".md") }
        for name in names {
            let blocks = Self.swiftBlocks(try String(contentsOf: Self.catalog.appendingPathComponent(name), encoding: .utf8))
            #expect(blocks.count == Self.articles[name] ?? 0, "\(name) has \(blocks.count) swift blocks; this file runs \(Self.articles[name] ?? 0): copy new ones below")
            let copies = Self.copiedBlocks(this, article: name)
            #expect(copies.keys.sorted() == blocks.indices.map { $0 + 1 })
            for (index, block) in blocks.enumerated() {
                let prefix = "import CheckpointIO\n\n"
                #expect(block.hasPrefix(prefix), "\(name) block \(index + 1) does not start with `import CheckpointIO` and a blank line")
                let expected = String(block.dropFirst(prefix.count)).replacingOccurrences(of: "\"/ckpt/", with: "\"\\(ckpt)/")
                #expect(copies[index + 1] == expected, "\(name) block \(index + 1) differs from its copy in DocCArticleExampleTests.swift")
            }
        }
        #expect(Set(Self.articles.keys).isSubset(of: Set(names)))
    }

    @Test func gettingStarted() throws {
        try withTemporaryDirectory { ckpt in
// GettingStarted.md block 1
let weights = [Float](repeating: 0.5, count: 1024 * 1024)
let writer = try ContainerWriter.create(at: "\(ckpt)/model.ckpt", options: WriterOptions(durability: .full))
writer.metadata["step"] = "1000"
try weights.withUnsafeBytes { bytes in
    try writer.write(name: "layers.0.weight", dtype: .float32, shape: [1024, 1024], bytes: bytes)
}
try writer.commit()  // the file appears complete under its name, or not at all

let reader = try ContainerReader.open("\(ckpt)/model.ckpt")
let copy = try reader.read("layers.0.weight")                                       // owned bytes, every CRC32C checked
let viewed = try reader.withUnsafeBytes(of: "layers.0.weight") { view in view.count }  // zero-copy view of the mapping
// end of GettingStarted.md block 1
            #expect(viewed == 1024 * 1024 * 4)
            #expect(copy == weights.withUnsafeBytes { Array($0) })
            #expect(reader.metadata["step"] == "1000")
            #expect(reader.names == ["layers.0.weight"])
        }
    }

    @Test func caffe2Users() throws {
        try withTemporaryDirectory { ckpt in
            func run() throws -> (Int, [Float]) {
// Caffe2Users.md block 1
let job = Job()
job.addInitStep(node: "trainer_0") { ws in ws["fc.w"] = try Tensor([Float](repeating: 0, count: 256)) }
job.addEpochStep(node: "trainer_0") { ws in
    try ws.update("fc.w") { w in w = try Tensor(try w.scalars(as: Float.self).map { $0 + 1 }) }
}
epochLimiter(job, numEpochs: 5, node: "trainer_0")

let manager = try CheckpointManager(dbPrefix: "\(ckpt)/run", nodeName: "trainer_0", metadataHandler: DurableMetadataHandler())
let lastEpoch = try JobRunner(job: job, checkpointManager: manager).train()  // 5; a second run resumes from epoch 5
// end of Caffe2Users.md block 1
                return (lastEpoch, try manager.workspace.fetchBlob("fc.w").scalars(as: Float.self))
            }
            let (first, weights) = try run()
            #expect(first == 5)
            #expect(weights == [Float](repeating: 5, count: 256))
            #expect(FileManager.default.fileExists(atPath: "\(ckpt)/run/trainer_0.5"))
            // A second run loads epoch 5 (not the init step's zeros) and trains one more epoch
            // before the limiter's stop condition, checked after each epoch, holds (Caffe2's epoch_limiter).
            let (second, resumed) = try run()
            #expect(second == 6)
            #expect(resumed == [Float](repeating: 6, count: 256))
        }
    }

    @Test func performanceTuning() throws {
        try withTemporaryDirectory { ckpt in
// PerformanceTuning.md block 1
// Smaller files for object storage or archives: the plane codec for floats, 1 MiB chunks.
let compressed = WriterOptions(encode: .recommended(), durability: .fileData)
// Or zstd level 1 on byte-shuffled chunks of 4 MiB, on two threads.
let zstd = WriterOptions(encode: EncodeOptions(compression: .zstd(level: 1), shuffle: .auto, chunkSizeInBytes: 4 << 20, threads: 2))
let writer = try ContainerWriter.create(at: "\(ckpt)/small.ckpt", options: compressed)
try writer.commit()

// A filesystem where mmap is slow (NFS, Lustre): read with pread into your own memory.
let reader = try ContainerReader.open("\(ckpt)/small.ckpt", options: ReaderOptions(mode: .pread, threads: 2))
// end of PerformanceTuning.md block 1
            #expect(reader.count == 0)
            #expect(compressed.encode.floatCompression == .planes && compressed.durability == .fileData)
            #expect(zstd.encode.compression == .zstd(level: 1) && zstd.encode.chunkSizeInBytes == 4 << 20)
            // The two options do what the article says: a float blob written with each decodes bit-exact.
            let values = (0..<300_000).map { Float(sin(Double($0) / 100)) }
            for (index, options) in [compressed, zstd].enumerated() {
                let path = "\(ckpt)/tuned-\(index).ckpt"
                let writer = try ContainerWriter.create(at: path, options: options)
                try values.withUnsafeBytes { try writer.write(name: "w", dtype: .float32, shape: [300_000], bytes: $0) }
                try writer.commit()
                let reader = try ContainerReader.open(path, options: ReaderOptions(mode: .pread, threads: 2))
                let descriptor = try reader.descriptor("w")
                #expect(descriptor.compression == (index == 0 ? .planes : .zstd(level: 1)))
                #expect(try reader.read("w") == values.withUnsafeBytes { Array($0) })
            }
        }
    }
}

import CheckpointIO
import Foundation
import Testing

/// Checkpoints of many small tensors (issue 16.3): the index the writer builds
/// for thousands of blobs lists them in byte-wise name order, finds each, and
/// reads each back, after a commit and after an append.
@Suite("Many small tensors")
struct SmallTensorTests {
    /// Names that sort differently as bytes than as Swift strings or by length:
    /// shared prefixes, the empty name, NFC and NFD spellings, multi-byte UTF-8.
    static func names(count: Int, seed: UInt64) -> [String] {
        var generator = SmallTensorNameGenerator(seed: seed)
        let pieces = ["layer", "layer.1", "layer.10", "é", "e\u{301}", "Ω", "🙂", "a", "A", "_", ".", "z"]
        var names = Set<String>(["", "layer.1", "layer.1.", "layer.10", "é", "e\u{301}"])
        while names.count < count {
            let parts = (0..<Int.random(in: 1...4, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }
            names.insert(parts.joined(separator: ".") + "\(Int.random(in: 0..<1000, using: &generator))")
        }
        return names.sorted().shuffled(using: &generator)  // sorted first: a Set's order differs from run to run
    }

    static func byteOrder(_ names: [String]) -> [String] {
        names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    static func payload(for name: String, index: Int) -> [UInt8] {
        (0..<(index % 97 + 1)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ name.utf8.count &+ index) }
    }

    @Test func thousandsOfBlobsAreListedInByteOrderAndReadBack() throws {
        try withTemporaryDirectory { directory in
            let path = "\(directory)/small.ckpt"
            let names = Self.names(count: 3_000, seed: 16)
            let payloads = names.enumerated().map { Self.payload(for: $1, index: $0) }
            let writer = try ContainerWriter.create(at: path)
            // One write call with every blob, as a training framework's save would (one arena).
            let arena = payloads.flatMap { $0 }
            try arena.withUnsafeBytes { arena in
                var offset = 0
                let sources = zip(names, payloads).map { name, bytes in
                    defer { offset += bytes.count }
                    return BlobSource(name: name, dtype: .uint8, shape: [bytes.count], bytes: UnsafeRawBufferPointer(rebasing: arena[offset..<(offset + bytes.count)]))
                }
                try writer.write(sources)
            }
            try writer.commit()

            let reader = try ContainerReader.open(path)
            #expect(reader.names == Self.byteOrder(names))
            #expect(reader.count == names.count)
            for (name, bytes) in zip(names, payloads) {
                #expect(reader.contains(name))
                #expect(try reader.read(name) == bytes, "blob '\(name)'")
            }
            #expect(!reader.contains("no such blob"))
        }
    }

    @Test func anAppendKeepsTheIndexInByteOrder() throws {
        try withTemporaryDirectory { directory in
            let path = "\(directory)/small.ckpt"
            let first = Self.names(count: 1_000, seed: 1)
            let writer = try ContainerWriter.create(at: path)
            for (index, name) in first.enumerated() {
                try Self.payload(for: name, index: index).withUnsafeBytes { bytes in
                    try writer.write(name: name, dtype: .uint8, shape: [bytes.count], bytes: bytes)
                }
            }
            try writer.commit()

            // Replace some, delete some, add new ones (with names interleaving the old ones).
            let added = Self.names(count: 500, seed: 2).filter { !first.contains($0) }
            let replaced = Array(first.prefix(100)), deleted = Array(first[100..<150])
            let appender = try ContainerWriter.append(to: path)
            for name in deleted { try appender.delete(name) }
            for (index, name) in (replaced + added).enumerated() {
                try Self.payload(for: name, index: index + 7).withUnsafeBytes { bytes in
                    try appender.write(name: name, dtype: .uint8, shape: [bytes.count], bytes: bytes)
                }
            }
            try appender.commit()

            let live = Set(first).subtracting(deleted).union(added)
            let reader = try ContainerReader.open(path)
            #expect(reader.generation == 2)
            #expect(reader.names == Self.byteOrder(Array(live)))
            for (index, name) in (replaced + added).enumerated() {
                #expect(try reader.read(name) == Self.payload(for: name, index: index + 7), "blob '\(name)'")
            }
            for (index, name) in first.enumerated().dropFirst(150) {
                #expect(try reader.read(name) == Self.payload(for: name, index: index), "blob '\(name)'")
            }
            for name in deleted { #expect(!reader.contains(name)) }
        }
    }
}

/// SplitMix64: a seeded generator, so a failure reproduces.
private struct SmallTensorNameGenerator: RandomNumberGenerator {
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

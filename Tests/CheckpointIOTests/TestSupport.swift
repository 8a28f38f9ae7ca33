@testable import CheckpointIO
import Foundation
import Testing

/// A temporary directory removed when the closure returns, whatever happens.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    // mkdtemp replaces the template's six trailing X characters.
    var template = Array((NSTemporaryDirectory() + "/ckpt-test-" + String(repeating: "X", count: 6)).utf8CString)
    guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw CheckpointError(.system(call: "mkdtemp", errno: errno))
    }
    let directory = String(cString: created)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    return try body(directory)
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

/// Blob contents kept alive for a write.
struct TestBlob {
    var name: String
    var dtype: DType
    var shape: Shape
    var bytes: [UInt8]
    var attributes: [String: String] = [:]
    var encode: EncodeOptions? = nil
}

/// Writes `blobs` into a new file at `path` and commits it.
func writeContainer(_ path: String, _ blobs: [TestBlob], metadata: [String: String] = [:], options: WriterOptions = WriterOptions()) throws {
    let writer = try ContainerWriter.create(at: path, options: options)
    writer.metadata = metadata
    try write(blobs, with: writer)
    try writer.commit()
}

/// Hands every blob to `writer` in one batch: their bytes are laid out in one
/// arena that stays alive for the call.
func write(_ blobs: [TestBlob], with writer: ContainerWriter) throws {
    let arena = blobs.flatMap(\.bytes)
    try arena.withUnsafeBytes { all in
        var offset = 0
        let sources = blobs.map { blob in
            defer { offset += blob.bytes.count }
            return BlobSource(name: blob.name, dtype: blob.dtype, shape: blob.shape,
                              bytes: UnsafeRawBufferPointer(rebasing: all[offset..<(offset + blob.bytes.count)]),
                              attributes: blob.attributes, encode: blob.encode)
        }
        try writer.write(sources)
    }
}

/// Random blobs of every dtype, ranks 0–6, empty tensors, and sizes from 1 byte up.
func randomBlobs(count: Int, seed: UInt64, maximumBytes: Int = 1 << 20) throws -> [TestBlob] {
    var rng = SyntheticData(seed: seed)
    let codecs: [Compression] = [.none, .lz4, .lz4hc(level: 3), .zlib(level: 1), .zstd(level: 3)]
    var blobs: [TestBlob] = []
    for index in 0..<count {
        let dtype = DType.allCases[Int(rng.next() % UInt64(DType.allCases.count))]
        let codec = codecs[Int(rng.next() % UInt64(codecs.count))]
        let rank = Int(rng.next() % 7)
        let target = index % 7 == 0 ? 0 : Int(rng.next() % UInt64(maximumBytes))
        var shape: Shape
        var bytes: [UInt8]
        if dtype == .string {
            let strings = (0..<Int(rng.next() % 20)).map { "s\($0)-\(rng.next() % 1000)" }
            shape = try Shape([strings.count])
            bytes = StringTensor.encode(strings)
        } else {
            // Elements: a multiple of 8 so that sub-byte dtypes fill whole bytes.
            let bits = dtype.bitsPerElement
            var elements = max(0, target * 8 / bits / 8 * 8)
            if index % 7 == 0 { elements = 0 }
            var dimensions = [Int](repeating: 1, count: rank)
            if rank == 0 { elements = 8 % bits == 0 ? 1 : 0 } else { dimensions[rank - 1] = elements }
            if rank == 0 && bits < 8 { shape = try Shape([0]) } else { shape = try Shape(dimensions) }
            let byteCount = try shape.byteCount(for: dtype)!
            bytes = rng.randomBytes(count: byteCount)
            for i in bytes.indices where rng.next() % 3 != 0 { bytes[i] &= 0x0F }  // compressible
        }
        blobs.append(TestBlob(name: "blob.\(index).\(dtype)", dtype: dtype, shape: shape, bytes: bytes,
                              attributes: index % 2 == 0 ? ["index": "\(index)"] : [:],
                              encode: EncodeOptions(compression: codec, chunkSizeInBytes: 1 << 16)))
    }
    return blobs
}

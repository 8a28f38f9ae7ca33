// safetensors / npy / npz / Caffe2 minidb reader fuzzer. The first byte picks the reader; the
// rest is the file. Any CheckpointError is fine; a crash, hang, leak or
// out-of-bounds access is a finding.
import CheckpointIO
import FuzzSupport

runFuzzer { data, count in
    guard count > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data! + 1, count: count - 1)
    switch data![0] % 5 {
    case 0:
        // safetensors header parsing in memory, then the whole file through TensorFile.
        if bytes.count >= 8 {
            let length = Int(min(bytes.load(as: UInt64.self), UInt64(bytes.count - 8)))
            _ = try? SafetensorsFile.parseHeader(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + length)]), dataLength: bytes.count - 8 - length)
        }
        let path = scratchFile(bytes, suffix: ".safetensors")
        if let file = try? TensorFile.open(path) {
            for entry in file.entries { _ = try? file.withUnsafeBytes(of: entry.name) { $0.count } }
        }
    case 1:
        _ = try? NumpyFormat.parseHeader(bytes)
        let path = scratchFile(bytes, suffix: ".npy")
        if let file = try? TensorFile.open(path) {
            for entry in file.entries { _ = try? file.withUnsafeBytes(of: entry.name) { $0.count } }
        }
    case 2:
        NpzArchive.maximumMemberSize = 64 << 20
        if let members = try? NpzArchive.members(of: bytes) {
            for member in members { _ = try? NpzArchive.contents(of: member, in: bytes) }
        }
    case 4:
        // Caffe2 minidb: every record, BlobProto and chunk, then every blob decoded.
        let path = scratchFile(bytes, suffix: ".minidb")
        if let file = try? MiniDBFile.open(path) {
            for entry in file.entries { _ = try? file.bytes(of: entry.name) }
        }
    default:
        let path = scratchFile(bytes, suffix: ".bin")
        if let file = try? TensorFile.open(path) {
            for entry in file.entries { _ = try? file.withUnsafeBytes(of: entry.name) { $0.count } }
        }
    }
    return 0
}

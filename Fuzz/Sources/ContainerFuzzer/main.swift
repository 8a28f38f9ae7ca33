// Container reader fuzzer: every input is a file to open, list, read (mmap and
// pread) and verify. Any CheckpointError is fine; a crash, hang, leak or
// out-of-bounds access is a finding.
import CheckpointIO
import FuzzSupport

runFuzzer { data, count in
    let bytes = UnsafeRawBufferPointer(start: data, count: count)
    let path = scratchFile(bytes, suffix: ".ckpt")
    for mode in [ReadMode.mmap, .pread] {
        var options = ReaderOptions(mode: mode, threads: 1)
        options.maximumRawSize = 64 << 20
        guard let reader = try? ContainerReader.open(path, options: options) else { continue }
        for name in reader.names {
            guard let descriptor = try? reader.descriptor(name), descriptor.rawSizeInBytes <= 64 << 20 else { continue }
            _ = try? reader.read(name)
            _ = try? reader.withUnsafeBytes(of: name, verify: true) { $0.count }
        }
        _ = reader.verify()
    }
    _ = try? ContainerRecovery.scan(path)
    return 0
}

import ArgumentParser
import CheckpointIO
import CheckpointS3
import Foundation

/// `ckpt s3-bench save FILE s3://…` / `ckpt s3-bench load s3://…`: one timed
/// checkpoint save (FILE's bytes as one blob, streamed into a multipart upload)
/// or load (open + read every blob, CRC32C verified) against the configured
/// S3 endpoint; prints one JSON line with wall and CPU seconds and peak memory.
/// scripts/bench-s3.py runs it beside boto3 on the same server and bytes.
struct S3Bench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "s3-bench", abstract: "Time one checkpoint save or load on S3 (for scripts/bench-s3.py).",
                                                    shouldDisplay: false)

    @Argument(help: "save or load.")
    var action: String

    @Argument(help: "save: the local file whose bytes are saved; load: the s3:// checkpoint.")
    var paths: [String]

    @Flag(help: "load: into memory touched before the timer starts (default: fresh memory).")
    var resident = false

    func run() throws {
        let storage = try S3Paths.storage()
        var usage = rusage()
        /// User and system CPU seconds of the whole process so far.
        func cpuSeconds() -> (user: Double, system: Double) {
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return (Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
                    Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6)
        }
        func maxRSS() -> Int {
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return usage.ru_maxrss * 1024
        }
        var bytes = 0
        var baseline = 0
        var mapping: UnsafeRawBufferPointer?
        defer { if let mapping { munmap(UnsafeMutableRawPointer(mutating: mapping.baseAddress), mapping.count) } }
        let start: ContinuousClock.Instant
        let cpuStart: (user: Double, system: Double)
        switch action {
        case "save":
            guard paths.count == 2, !resident else { throw usageError("s3-bench save FILE s3://BUCKET/KEY (--resident is for load)") }
            // The source is mapped from the page cache, every page mapped before the baseline
            // (MAP_POPULATE), so the peak shows the save's own memory; the save then reads it with
            // no system call (boto3's upload_file read()s the same page-cache file inside its timer).
            // This is a harness choice, not a client speed-up: reading the source into 1 GiB of
            // fresh anonymous memory instead made moto's CompleteMultipartUpload up to 2x slower,
            // because on this VM the pages moto then faulted in cost 3-4x more to clear (perf on
            // moto: same number of faults, 3-4x the clear_page samples).
            let fd = open(paths[0], O_RDONLY)
            guard fd >= 0 else { throw usageError("s3-bench: cannot open '\(paths[0])': \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var status = stat()
            guard fstat(fd, &status) == 0 else { throw usageError("s3-bench: cannot stat '\(paths[0])': \(String(cString: strerror(errno)))") }
            guard status.st_size > 0 else { throw usageError("s3-bench: '\(paths[0])' is empty: nothing to time") }
            bytes = Int(status.st_size)
            guard let mapped = mmap(nil, bytes, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0), mapped != MAP_FAILED else {
                throw usageError("s3-bench: cannot map '\(paths[0])': \(String(cString: strerror(errno)))")
            }
            mapping = UnsafeRawBufferPointer(start: mapped, count: bytes)
            baseline = maxRSS()
            start = .now
            cpuStart = cpuSeconds()
            let raw = mapping!
            try storage.writeCheckpoint([BlobSource(name: "data", dtype: .uint8, shape: [raw.count], bytes: raw)], metadata: [:],
                                        to: paths[1], format: .container, options: WriterOptions())
        case "load":
            guard paths.count == 1 else { throw usageError("s3-bench load [--resident] s3://BUCKET/KEY") }
            // Into plain page-aligned memory (4 KiB pages, like boto3's BytesIO): this measures the
            // client, not the destination's page policy (huge pages cost more to clear on some VMs).
            // Fresh by default (its first touch, ~0.3 s of kernel time per GiB here, is counted, as
            // boto3's BytesIO counts it); with --resident, touched before the timer starts, like
            // the parameters of a model that a resumed job restores into.
            var destinations: [String: UnsafeMutableRawBufferPointer] = [:]
            defer { for buffer in destinations.values { buffer.deallocate() } }
            func destination(_ name: String, _ size: Int) -> UnsafeMutableRawBufferPointer {
                if let buffer = destinations[name] { return buffer }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 4096)
                destinations[name] = buffer
                return buffer
            }
            // One untimed open in both modes: it warms the connection pool, as boto3's long-lived
            // client is warm, and gives the sizes of the resident destinations.
            let warmUp = try storage.openCheckpoint(paths[0], format: .container)
            if resident {
                for name in warmUp.blobNames {
                    let buffer = destination(name, try warmUp.blobInfo(name).byteCount)
                    for offset in stride(from: 0, to: buffer.count, by: 4096) { buffer[offset] = 1 }
                }
            }
            baseline = maxRSS()
            start = .now
            cpuStart = cpuSeconds()
            let reader = try storage.openCheckpoint(paths[0], format: .container)
            for name in reader.blobNames {
                let size = try reader.blobInfo(name).byteCount
                let buffer = destination(name, size)
                guard buffer.count >= size else { throw usageError("s3-bench: '\(name)' changed size while loading") }
                try reader.readBlob(name, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]))
                if !resident { destinations.removeValue(forKey: name)?.deallocate() }
                bytes += size
            }
        default:
            throw usageError("s3-bench: the action is save or load, not '\(action)'")
        }
        let elapsed = ContinuousClock.now - start
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let cpuEnd = cpuSeconds()
        let user = cpuEnd.user - cpuStart.user, system = cpuEnd.system - cpuStart.system
        print("{\"action\": \"\(action)\", \"bytes\": \(bytes), \"wall\": \(wall), \"cpu\": \(user + system), \"user\": \(user), \"system\": \(system), \"peakExtraBytes\": \(maxRSS() - baseline)}")
    }
}

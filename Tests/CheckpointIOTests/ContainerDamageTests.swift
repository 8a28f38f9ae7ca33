@testable import CheckpointIO
import Foundation
import Testing

/// Damaged, torn and interrupted files: every fault is detected or harmless,
/// and nothing that was committed is lost.
@Suite("Container damage, torn files, faults")
struct ContainerDamageTests {
    static func sampleBlobs() -> [TestBlob] {
        let floats = (0..<96).map { Float($0 % 7) * 0.5 }.withUnsafeBytes { Array($0) }
        return [
            TestBlob(name: "plain", dtype: .float32, shape: [4, 24], bytes: floats, attributes: ["k": "v"]),
            TestBlob(name: "lz4", dtype: .float32, shape: [96], bytes: floats, encode: EncodeOptions(compression: .lz4, chunkSizeInBytes: 128, skipIncompressible: false)),
            TestBlob(name: "zstd", dtype: .float32, shape: [96], bytes: floats, encode: EncodeOptions(compression: .zstd(level: 1), chunkSizeInBytes: 256)),
            TestBlob(name: "text", dtype: .string, shape: [2], bytes: StringTensor.encode(["alpha", "β"])),
        ]
    }

    /// Opens, reads every blob and verifies. Returns whether anything reported
    /// damage; records an issue if any read returned bytes that differ from the original.
    static func inspect(_ path: String, expecting blobs: [TestBlob], mode: ReadMode = .mmap) -> Bool {
        let reader: ContainerReader
        do { reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode)) } catch { return true }
        var detected = false
        for blob in blobs {
            do {
                let bytes = try reader.read(blob.name)
                if bytes != blob.bytes { Issue.record("\(blob.name) returned wrong bytes silently") }
            } catch { detected = true }
        }
        if reader.names != blobs.map(\.name).sorted() { detected = true }
        if reader.verify().contains(where: { $0.error != nil }) { detected = true }
        return detected
    }

    @Test("creating a file removes the temporaries killed writers of that file left, and no other, before it writes anything; a commit or an abort after it leaves only what it should",
          arguments: ["commit", "write, commit", "abort", "write, abort", "two writes, commit"])
    func createRemovesAbandonedTemporariesOfItsTarget(steps: String) throws {
        try withTemporaryDirectory { directory in
            // What a writer SIGKILLed inside `create` leaves: its temporary, and no lock holder.
            try writeFile(directory + "/.log.ckpt.tmp.2147483646.ab12", [1, 2, 3])
            try writeFile(directory + "/.log.ckpt.tmp.2147483645.cd34", [4])
            try writeFile(directory + "/.other.ckpt.tmp.2147483646.ab12", [5])
            let writer = try ContainerWriter.create(at: directory + "/log.ckpt")
            // Gone before the first byte of the new file (their space is free for it); this writer's own is there.
            let temporaries = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(".log.ckpt.tmp.") }
            #expect(temporaries.count == 1 && !temporaries.contains(".log.ckpt.tmp.2147483646.ab12")
                    && !temporaries.contains(".log.ckpt.tmp.2147483645.cd34"), "\(temporaries)")
            let writes = steps.hasPrefix("two") ? 2 : steps.hasPrefix("write") ? 1 : 0
            for index in 0..<writes {
                try write([TestBlob(name: "b\(index)", dtype: .uint8, shape: [2], bytes: [1, 2])], with: writer)
            }
            if steps.hasSuffix("abort") {
                writer.abort()
                let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                #expect(names == [".other.ckpt.tmp.2147483646.ab12"])
            } else {
                try writer.commit()
                let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                #expect(names == [".other.ckpt.tmp.2147483646.ab12", "log.ckpt"])
                #expect(try ContainerReader.open(directory + "/log.ckpt").names.count == writes)
            }
        }
    }

    @Test("every single-byte flip of a small file is detected by open, read or verify", arguments: [ReadMode.mmap, .pread])
    func singleByteFlips(mode: ReadMode) throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/f.ckpt"
            let blobs = Self.sampleBlobs()
            try writeContainer(path, blobs, metadata: ["epoch": "3"])
            let original = try readFile(path)
            #expect(!Self.inspect(path, expecting: blobs, mode: mode), "the undamaged file must read cleanly")
            var detected = 0
            let damaged = directory + "/d.ckpt"
            for position in original.indices {
                var bytes = original
                bytes[position] ^= 0x5A
                try writeFile(damaged, bytes)
                if Self.inspect(damaged, expecting: blobs, mode: mode) { detected += 1 } else { Issue.record("flip at \(position) went undetected") }
            }
            print("\(mode): \(detected) of \(original.count) single-byte flips detected")
            #expect(detected == original.count)
        }
    }

    @Test("truncation at every length: opens only complete commits; recovery keeps exactly the complete records")
    func truncations() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/t.ckpt"
            let blobs = Self.sampleBlobs()
            try writeContainer(path, blobs)
            let original = try readFile(path)
            let reader = try ContainerReader.open(path)
            // Record i is complete when the file reaches the end of its payload.
            let ends = try blobs.map { blob -> (String, Int) in
                let d = try reader.descriptor(blob.name)
                return (blob.name, d.payloadOffset + d.storedSizeInBytes)
            }
            let cut = directory + "/cut.ckpt"
            var opened = 0, repaired = 0
            for length in 0..<original.count {
                try writeFile(cut, Array(original.prefix(length)))
                // No complete commit is left: open must fail cleanly.
                #expect(throws: CheckpointError.self, "length \(length)") { try ContainerReader.open(cut) }
                let complete = ends.filter { $0.1 <= length }.map(\.0).sorted()
                guard length >= ContainerLayout.fileHeaderSize else {
                    #expect(throws: CheckpointError.self) { try ContainerRecovery.scan(cut) }
                    continue
                }
                let report = try ContainerRecovery.scan(cut)
                #expect(report.blobNames == complete, "length \(length)")
                _ = try ContainerRecovery.repair(cut)
                let recovered = try ContainerReader.open(cut)
                #expect(recovered.names == complete, "length \(length)")
                for name in complete {
                    #expect(try recovered.read(name) == blobs.first { $0.name == name }!.bytes)
                }
                repaired += 1
                opened += recovered.count
            }
            print("truncation sweep: \(original.count) lengths, \(repaired) repaired, \(opened) blobs recovered in all")
        }
    }

    @Test("a torn append leaves the previous commit readable at every length; the next append cuts the torn tail")
    func tornAppend() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/a.ckpt"
            let first = Self.sampleBlobs()
            try writeContainer(path, first, metadata: ["epoch": "1"])
            let committed = try readFile(path)
            let writer = try ContainerWriter.append(to: path)
            writer.metadata["epoch"] = "2"
            try write([TestBlob(name: "plain", dtype: .uint8, shape: [5], bytes: [1, 2, 3, 4, 5]),
                       TestBlob(name: "new", dtype: .int64, shape: [1], bytes: [8, 0, 0, 0, 0, 0, 0, 0])], with: writer)
            try writer.commit()
            let appended = try readFile(path)
            let torn = directory + "/torn.ckpt"
            for length in committed.count..<appended.count {
                try writeFile(torn, Array(appended.prefix(length)))
                let reader = try ContainerReader.open(torn)
                #expect(reader.generation == 1, "length \(length)")
                #expect(reader.tornBytes == length - committed.count)
                #expect(reader.metadata == ["epoch": "1"])
                #expect(try reader.read("plain") == first[0].bytes)
            }
            // An append to a torn file first cuts it back to its last commit.
            try writeFile(torn, Array(appended.prefix(appended.count - 10)))
            let again = try ContainerWriter.append(to: torn)
            try write([TestBlob(name: "late", dtype: .uint8, shape: [1], bytes: [42])], with: again)
            try again.commit()
            let reader = try ContainerReader.open(torn)
            #expect(reader.generation == 2 && reader.tornBytes == 0)
            #expect(reader.names == ["late", "lz4", "plain", "text", "zstd"])
            #expect(try reader.read("plain") == first[0].bytes)
            #expect(reader.verify().allSatisfy { $0.error == nil })
        }
    }

    /// System calls that fail the `failAt`-th call of `target` with `code` (or a short write / EINTR).
    final class FaultPlan: @unchecked Sendable {
        enum Fault { case errno(Int32), shortWrite, interrupt }
        let target: String
        let failAt: Int
        let fault: Fault
        var calls = 0
        init(target: String, failAt: Int, fault: Fault) {
            self.target = target
            self.failAt = failAt
            self.fault = fault
        }

        func hit(_ name: String) -> Bool {
            guard name == target else { return false }
            calls += 1
            return calls == failAt
        }

        var systemCalls: SystemCalls {
            var calls = SystemCalls.live
            let live = SystemCalls.live
            calls.pwritev = { fd, vectors, count, offset in
                guard self.hit("pwritev") else { return live.pwritev(fd, vectors, count, offset) }
                switch self.fault {
                case let .errno(code): errno = code; return -1
                case .interrupt: errno = EINTR; return -1
                case .shortWrite: return live.pwritev(fd, vectors, 1, offset) > 0 ? min(vectors[0].iov_len, max(1, vectors[0].iov_len / 2)) : -1
                }
            }
            calls.fdatasync = { fd in
                guard self.hit("fdatasync") else { return live.fdatasync(fd) }
                if case let .errno(code) = self.fault { errno = code } else { errno = EINTR }
                return -1
            }
            calls.rename = { from, to in
                guard self.hit("rename") else { return live.rename(from, to) }
                if case let .errno(code) = self.fault { errno = code } else { errno = EINTR }
                return -1
            }
            return calls
        }
    }

    @Test("a new file interrupted at any write, fdatasync or rename leaves the old file untouched and no temporary")
    func atomicCommitUnderFaults() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/m.ckpt"
            try writeContainer(path, [TestBlob(name: "old", dtype: .uint8, shape: [3], bytes: [1, 2, 3])])
            let before = try readFile(path)
            let blobs = Self.sampleBlobs()
            // Count the calls of a successful save, then fail each one in turn.
            let probe = FaultPlan(target: "pwritev", failAt: -1, fault: .errno(EIO))
            var options = WriterOptions(durability: .fileData)
            options.systemCalls = probe.systemCalls
            try writeContainer(directory + "/probe.ckpt", blobs, options: options)
            let writes = probe.calls
            #expect(writes >= 2)
            var cases: [(String, Int, FaultPlan.Fault)] = []
            for n in 1...writes {
                cases += [("pwritev", n, .errno(ENOSPC)), ("pwritev", n, .errno(EIO)), ("pwritev", n, .shortWrite), ("pwritev", n, .interrupt)]
            }
            cases += [("fdatasync", 1, .errno(EIO)), ("fdatasync", 1, .interrupt), ("rename", 1, .errno(EXDEV)), ("rename", 1, .interrupt)]
            for (target, n, fault) in cases {
                let plan = FaultPlan(target: target, failAt: n, fault: fault)
                var options = WriterOptions(durability: .fileData)
                options.systemCalls = plan.systemCalls
                let outcome: Result<Void, Error> = Result { try writeContainer(path, blobs, options: options) }
                let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".tmp.") }
                #expect(leftovers.isEmpty, "\(target) #\(n) \(fault): temporary left behind")
                switch (fault, outcome) {
                case (.interrupt, .success), (.shortWrite, .success):
                    // Retried transparently: the new file is complete.
                    #expect(!Self.inspect(path, expecting: blobs), "\(target) #\(n) \(fault)")
                    try writeFile(path, before)
                case (.errno, .failure(let error)):
                    #expect(error is CheckpointError, "\(target) #\(n)")
                    #expect(try readFile(path) == before, "\(target) #\(n) \(fault): the old file changed")
                default:
                    Issue.record("\(target) #\(n) \(fault): unexpected outcome \(outcome)")
                }
            }
        }
    }

    @Test("an append interrupted at any write is rolled back to the old bytes")
    func appendUnderFaults() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/a.ckpt"
            try writeContainer(path, Self.sampleBlobs())
            let before = try readFile(path)
            let extra = [TestBlob(name: "x", dtype: .uint8, shape: [1000], bytes: [UInt8](repeating: 3, count: 1000)),
                         TestBlob(name: "y", dtype: .float32, shape: [3000], bytes: [UInt8](repeating: 1, count: 12000),
                                  encode: EncodeOptions(compression: .zstd(level: 1)))]
            // Count the writes of a successful append (on a copy), then fail each one in turn.
            let copy = directory + "/copy.ckpt"
            try writeFile(copy, before)
            let probe = FaultPlan(target: "pwritev", failAt: -1, fault: .errno(EIO))
            var probeOptions = WriterOptions()
            probeOptions.systemCalls = probe.systemCalls
            let probeWriter = try ContainerWriter.append(to: copy, options: probeOptions)
            try write(extra, with: probeWriter)
            try probeWriter.commit()
            #expect(probe.calls >= 2)
            for n in 1...probe.calls {
                let plan = FaultPlan(target: "pwritev", failAt: n, fault: .errno(ENOSPC))
                var options = WriterOptions()
                options.systemCalls = plan.systemCalls
                let writer = try ContainerWriter.append(to: path, options: options)
                let outcome = Result { try write(extra, with: writer); try writer.commit() }
                if case .success = outcome { Issue.record("write #\(n) did not fail") }
                writer.abort()
                #expect(try readFile(path) == before, "write #\(n)")
            }
        }
    }
}

/// Regressions for an independent review's findings.
@Suite("Container review regressions")
struct ContainerReviewRegressionTests {
    static func put<T: FixedWidthInteger>(_ value: T, _ bytes: inout [UInt8], at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    @Test("a frame and index claiming another payload size than the blob header are caught before any copy")
    func payloadSizeMismatch() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/p.ckpt"
            try writeContainer(path, [TestBlob(name: "w", dtype: .uint8, shape: [16], bytes: [UInt8](repeating: 7, count: 16)),
                                      TestBlob(name: "x", dtype: .uint8, shape: [8192], bytes: [UInt8](repeating: 1, count: 8192))])
            let entry = try ContainerReader.open(path).descriptor("w")
            var bytes = try readFile(path)
            Self.put(UInt64(8), &bytes, at: entry.recordOffset + 16)
            let frameCRC = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[entry.recordOffset..<(entry.recordOffset + 28)])) }
            Self.put(frameCRC, &bytes, at: entry.recordOffset + 28)
            try writeFile(path, bytes)
            try ContainerCompatibilityTests.editIndex(path) { b, body in
                var stored = b
                Self.put(UInt64(8), &stored, at: body + 32 + 16)
                b = stored
            }
            for mode in [ReadMode.mmap, .pread] {
                let reader = try ContainerReader.open(path, options: ReaderOptions(mode: mode))
                #expect(throws: CheckpointError.self) { try reader.read("w", verify: false) }
                #expect(throws: CheckpointError.self) { try reader.read("w") }
            }
        }
    }

    @Test("an index raw size of 2^62 is refused before anything is allocated")
    func hugeIndexRawSize() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/h.ckpt"
            try writeFile(path, try readFile(ContainerGoldenTests.fixturePath))
            try ContainerCompatibilityTests.editIndex(path) { b, body in Self.put(UInt64(1) << 62, &b, at: body + 32 + 24) }
            let reader = try ContainerReader.open(path)
            #expect(throws: CheckpointError.self) { try reader.read("w") }
        }
    }

    @Test("an intact trailer copied past the end opens as a torn file (the previous commit)")
    func copiedTrailerAtEnd() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/c.ckpt"
            let fixture = try readFile(ContainerGoldenTests.fixturePath)
            try writeFile(path, fixture + fixture.suffix(64))
            let reader = try ContainerReader.open(path)
            #expect(reader.generation == 1 && reader.tornBytes == 64 && reader.names == ["w"])
            let writer = try ContainerWriter.append(to: path)
            try writer.commit()
            #expect(try ContainerReader.open(path).tornBytes == 0)
        }
    }

    @Test("an append with durability syncs its records and index before writing the trailer")
    func appendWriteBarrier() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/b.ckpt"
            try writeContainer(path, [TestBlob(name: "a", dtype: .uint8, shape: [1], bytes: [1])])
            final class Log: @unchecked Sendable { var calls: [String] = [] }
            let log = Log()
            var options = WriterOptions(durability: .fileData)
            let live = SystemCalls.live
            options.systemCalls.pwritev = { fd, v, c, o in log.calls.append("write"); return live.pwritev(fd, v, c, o) }
            options.systemCalls.fdatasync = { fd in log.calls.append("sync"); return live.fdatasync(fd) }
            let writer = try ContainerWriter.append(to: path, options: options)
            try write([TestBlob(name: "b", dtype: .uint8, shape: [3], bytes: [1, 2, 3])], with: writer)
            try writer.commit()
            // The records (written by write(_:)), the index, a sync; then the trailer alone, a sync.
            #expect(log.calls == ["write", "write", "sync", "write", "sync"])
            #expect(try ContainerReader.open(path).names == ["a", "b"])
        }
    }

    @Test("after a failed commit the writer refuses a retry; abort restores the old file")
    func noRetryAfterFailedCommit() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/r.ckpt"
            try writeContainer(path, [TestBlob(name: "a", dtype: .uint8, shape: [1], bytes: [1])])
            let before = try readFile(path)
            for inPlace in [false, true] {
                let plan = ContainerDamageTests.FaultPlan(target: "fdatasync", failAt: inPlace ? 2 : 1, fault: .errno(EIO))
                var options = WriterOptions(durability: .fileData)
                options.systemCalls = plan.systemCalls
                let writer = inPlace ? try ContainerWriter.append(to: path, options: options) : try ContainerWriter.create(at: path, options: options)
                try write([TestBlob(name: "b", dtype: .uint8, shape: [2], bytes: [5, 6])], with: writer)
                #expect(throws: CheckpointError.self) { try writer.commit() }
                let retry = try #require(throws: CheckpointError.self) { try writer.commit() }
                #expect(retry.code == .invalidField(field: "writer", reason: "an earlier write or commit failed; call abort()"))
                writer.abort()
                #expect(try readFile(path) == before, "in place: \(inPlace)")
            }
        }
    }
}

@Suite("Bit-level damage and hostile names")
struct BitFlipAndNameTests {
    /// Every single-bit flip of a small multi-blob file (compressed, raw and
    /// string blobs) is detected by open, read or verify.
    @Test func everySingleBitFlipIsDetected() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/f.ckpt"
            let blobs = ContainerDamageTests.sampleBlobs()
            try writeContainer(path, blobs, metadata: ["epoch": "3"])
            let original = try readFile(path)
            let fd = open(path, O_RDWR)
            #expect(fd >= 0)
            defer { close(fd) }
            var detected = 0
            for position in original.indices {
                for bit in 0..<8 {
                    var flipped = original[position] ^ UInt8(1 << bit)
                    _ = pwrite(fd, &flipped, 1, off_t(position))
                    if ContainerDamageTests.inspect(path, expecting: blobs) { detected += 1 } else { Issue.record("flip of bit \(bit) at \(position) went undetected") }
                }
                var restored = original[position]
                _ = pwrite(fd, &restored, 1, off_t(position))
            }
            print("bit-flip sweep: \(detected) of \(original.count * 8) single-bit flips detected")
            #expect(detected == original.count * 8)
        }
    }

    /// Names that are too long (1 MiB) or not UTF-8 are rejected with a clear error, never written or read.
    /// (The empty name is allowed, FORMAT.md §3.2; InteropRulesTests round-trips it.)
    @Test func hostileBlobNamesAreRejected() throws {
        try withTemporaryDirectory { directory in
            let bytes: [UInt8] = [1, 2, 3, 4]
            for name in [String(repeating: "n", count: 1 << 20)] {
                let writer = try ContainerWriter.create(at: directory + "/names.ckpt")
                #expect(throws: CheckpointError.self, "\(name.count)-byte name") {
                    try bytes.withUnsafeBytes { try writer.write([BlobSource(name: name, dtype: .uint8, shape: [4], bytes: $0)]) }
                }
                writer.abort()
            }
            #expect(!fileExists(directory + "/names.ckpt"))
            // A blob header whose name is not UTF-8 is refused when read.
            try writeContainer(directory + "/utf8.ckpt", [TestBlob(name: "abcd", dtype: .uint8, shape: [4], bytes: bytes)])
            var file = try readFile(directory + "/utf8.ckpt")
            let offset = try #require(file.indices.first { file[$0...].starts(with: Array("abcd".utf8)) })
            file[offset] = 0xFF
            try writeFile(directory + "/utf8.ckpt", file)
            #expect(throws: CheckpointError.self) {
                let reader = try ContainerReader.open(directory + "/utf8.ckpt")
                _ = try reader.read(reader.names.first ?? "abcd")
            }
        }
    }
}

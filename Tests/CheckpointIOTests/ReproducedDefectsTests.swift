@testable import CheckpointIO
import Foundation
import Testing

/// Regression tests for the defects of the adversarial review (issue 19),
/// each reproducing the review's steps through the public API.
@Suite("Reproduced defects")
struct ReproducedDefectsTests {
    // MARK: 1. Names compared by bytes, not by Swift's canonical equivalence

    /// Pairs of distinct byte strings that Swift's `String ==` may call equal,
    /// or that differ only in an invisible character.
    static let twinNames: [(String, String)] = [
        ("\u{E9}", "e\u{301}"),  // é NFC / NFD
        ("\u{C5}", "\u{212B}"),  // Å / ANGSTROM SIGN (a canonical singleton)
        ("\u{212B}", "A\u{30A}"),  // ANGSTROM SIGN / A + combining ring
        ("K", "\u{212A}"),  // K / KELVIN SIGN
        ("ab", "a\u{200D}b"),  // a zero-width joiner
        ("q\u{307}\u{323}", "q\u{323}\u{307}"),  // combining marks in the other (canonically reordered) order
    ]

    @Test("BlobName: equality, hashing and order follow the UTF-8 bytes")
    func blobNameIsByteWise() {
        for (a, b) in Self.twinNames {
            #expect(BlobName(a) != BlobName(b), "\(Array(a.utf8)) vs \(Array(b.utf8))")
            #expect(Set([BlobName(a), BlobName(b)]).count == 2)
            #expect((BlobName(a) < BlobName(b)) == a.utf8.lexicographicallyPrecedes(b.utf8))
        }
        #expect(BlobName("\u{E9}") == BlobName(String(decoding: [0xC3, 0xA9], as: UTF8.self)))
        #expect("\u{E9}" == "e\u{301}", "the premise: Swift's String calls these equal")
    }

    @Test("a container with NFC/NFD (and other twin) names keeps every blob apart")
    func containerKeepsTwins() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/twins.ckpt"
            let names = Self.twinNames.flatMap { [$0.0, $0.1] }
            let unique = Array(Set(names.map { BlobName($0) })).map(\.string)
            let blobs = unique.enumerated().map { index, name in
                TestBlob(name: name, dtype: .uint8, shape: [4], bytes: [UInt8](repeating: UInt8(index + 1), count: 4))
            }
            try writeContainer(path, blobs)
            let reader = try ContainerReader.open(path)
            #expect(reader.count == unique.count)
            for blob in blobs {
                #expect(reader.contains(blob.name))
                #expect(try reader.read(blob.name) == blob.bytes, "\(Array(blob.name.utf8))")
            }
            // Appends and deletions address the exact bytes too.
            let writer = try ContainerWriter.append(to: path)
            try writer.delete("e\u{301}")
            try writer.commit()
            let after = try ContainerReader.open(path)
            #expect(after.contains("\u{E9}"))
            #expect(!after.contains("e\u{301}"))
            #expect(try after.read("\u{E9}") == blobs.first { $0.name.hasSameBytes(as: "\u{E9}") }!.bytes)
        }
    }

    @Test("safetensors and TensorFile keep NFC and NFD tensors apart; a workspace does too")
    func safetensorsAndWorkspaceKeepTwins() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/nfc.safetensors"
            let nfc: [UInt8] = [1, 1, 1, 1], nfd: [UInt8] = [2, 2, 2, 2]
            try nfc.withUnsafeBytes { a in
                try nfd.withUnsafeBytes { b in
                    try SafetensorsFile.write([BlobSource(name: "\u{E9}", dtype: .uint8, shape: [4], bytes: a),
                                               BlobSource(name: "e\u{301}", dtype: .uint8, shape: [4], bytes: b)], to: path)
                }
            }
            let file = try SafetensorsFile.open(path)
            #expect(file.names.count == 2)
            #expect(try file.read("e\u{301}") == nfd)
            #expect(try file.read("\u{E9}") == nfc)
            let any = try TensorFile.open(path)
            #expect(any.entries.count == 2)
            #expect(try any.withUnsafeBytes(of: "e\u{301}") { Array($0) } == nfd)
            #expect(try any.withUnsafeBytes(of: "\u{E9}") { Array($0) } == nfc)

            let workspace = Workspace()
            workspace["\u{E9}"] = try Tensor([Float(1)])
            workspace["e\u{301}"] = try Tensor([Float(2)])
            #expect(workspace.count == 2)
            #expect(try workspace.blob("e\u{301}")?.scalars(as: Float.self) == [2])
        }
    }

    @Test("metadata keys that Swift would merge are refused with both keys named, never silently merged")
    func metadataTwinsAreRefused() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/meta.safetensors"
            let header = Array(#"{"__metadata__":{"\#u{E9}":"nfc","e\#u{301}":"nfd"},"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#.utf8)
            var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
            bytes += header + [7]
            try writeFile(path, bytes)
            do {
                _ = try SafetensorsFile.open(path)
                Issue.record("two canonically equivalent metadata keys were accepted")
            } catch let error as CheckpointError {
                #expect("\(error)".contains("canonically equivalent"), "\(error)")
                #expect(error.path == path)
            }
        }
    }

    // MARK: 4. Recovery keeps every intact blob of a committed file

    /// A committed file with blobs `a`, `b`, `c` (one compressed), and the offset of `a`'s payload.
    static func committedFile(_ path: String) throws -> (blobs: [TestBlob], payloadOfA: Int) {
        let blobs = [
            TestBlob(name: "a", dtype: .float32, shape: [256], bytes: (0..<1024).map { UInt8($0 % 251) }),
            TestBlob(name: "b", dtype: .int64, shape: [64], bytes: (0..<512).map { UInt8($0 % 13) }),
            TestBlob(name: "c", dtype: .float32, shape: [1024], bytes: [UInt8](repeating: 3, count: 4096), encode: EncodeOptions(compression: .zstd(level: 1))),
        ]
        try writeContainer(path, blobs, metadata: ["epoch": "7"])
        return (blobs, try ContainerReader.open(path).descriptor("a").payloadOffset)
    }

    @Test("repair of a committed file with one damaged payload keeps the intact blobs and names the lost one")
    func repairKeepsIntactBlobs() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/m.ckpt"
            let (blobs, payloadOfA) = try Self.committedFile(path)
            var bytes = try readFile(path)
            let committedLength = bytes.count
            bytes[payloadOfA + 10] ^= 0x40
            try writeFile(path, bytes)

            let checks = try ContainerReader.open(path).verify()
            #expect(checks.filter { $0.error != nil }.map(\.name) == ["a"])

            let scan = try ContainerRecovery.scan(path)
            #expect(scan.blobNames == ["b", "c"])
            #expect(scan.lostBlobs == ["a"])
            #expect(scan.damagedRecords.map(\.name) == ["a"])
            #expect(!scan.keepsEverything)

            let report = try ContainerRecovery.repair(path)
            #expect(report.blobNames == ["b", "c"])
            #expect(report.lostBlobs == ["a"])
            let reader = try ContainerReader.open(path)
            #expect(reader.names == ["b", "c"])
            #expect(reader.metadata == ["epoch": "7"])
            #expect(try reader.read("b") == blobs[1].bytes)
            #expect(try reader.read("c") == blobs[2].bytes)
            #expect(reader.verify().allSatisfy { $0.error == nil })
            // Nothing before the end of the old commit was cut or rewritten.
            let after = try readFile(path)
            #expect(after.count > committedLength)
            #expect(Array(after.prefix(committedLength)) == bytes)
        }
    }

    @Test("a damaged record in a torn append's tail never hides the committed version; later intact records are kept")
    func damagedTailRecord() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/t.ckpt"
            let (blobs, _) = try Self.committedFile(path)
            let committed = try readFile(path)
            let writer = try ContainerWriter.append(to: path)
            try write([TestBlob(name: "a", dtype: .uint8, shape: [8], bytes: [9, 9, 9, 9, 9, 9, 9, 9]),
                       TestBlob(name: "d", dtype: .uint8, shape: [3], bytes: [4, 5, 6])], with: writer)
            try writer.commit()
            var torn = try readFile(path)
            let reader = try ContainerReader.open(path)
            let newA = try reader.descriptor("a").payloadOffset
            torn[newA + 1] ^= 1  // the appended `a` is damaged
            torn.removeLast(40)  // and the append's trailer torn
            try writeFile(path, torn)

            let report = try ContainerRecovery.repair(path)
            #expect(report.damagedRecords.map(\.name) == ["a"])
            #expect(report.lostBlobs.isEmpty)
            #expect(report.blobNames == ["a", "b", "c", "d"])
            let repaired = try ContainerReader.open(path)
            #expect(try repaired.read("a") == blobs[0].bytes, "the committed `a`")
            #expect(try repaired.read("d") == [4, 5, 6])
            #expect(Array(try readFile(path).prefix(committed.count)) == committed)
        }
    }

    @Test("the flip sweep: repair after any single-byte flip never drops a blob whose bytes are intact")
    func repairSweep() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/s.ckpt"
            let (blobs, _) = try Self.committedFile(path)
            let original = try readFile(path)
            let descriptors = try ContainerReader.open(path).descriptors()
            let damaged = directory + "/d.ckpt"
            var repairs = 0
            for position in stride(from: 0, to: original.count, by: 7) {
                var bytes = original
                bytes[position] ^= 0x5A
                try writeFile(damaged, bytes)
                guard let report = try? ContainerRecovery.repair(damaged) else { continue }  // e.g. the file header
                repairs += 1
                let reader = try ContainerReader.open(damaged)
                for descriptor in descriptors {
                    let record = descriptor.recordOffset..<(descriptor.payloadOffset + descriptor.storedSizeInBytes)
                    let blob = blobs.first { $0.name == descriptor.name }!
                    if !record.contains(position) {
                        // Intact record: kept, bit-exact, whatever else was damaged (index, trailer, other records).
                        #expect(report.blobNames.contains(blob.name), "flip at \(position) dropped intact '\(blob.name)'")
                        if reader.contains(blob.name) { #expect(try reader.read(blob.name) == blob.bytes) }
                    } else if reader.contains(blob.name) {
                        #expect(try reader.read(blob.name) == blob.bytes, "flip at \(position): '\(blob.name)' kept but wrong")
                    }
                }
            }
            #expect(repairs > 0)
        }
    }

    // MARK: 5. Directory walks do not follow symbolic links to directories

    @Test("a .npy directory whose symlinks fan out is read at once, without following them")
    func symlinkFanOut() throws {
        try withTemporaryDirectory { directory in
            let root = directory + "/d0"
            for level in 0...30 {
                try FileManager.default.createDirectory(atPath: directory + "/d\(level)", withIntermediateDirectories: true)
            }
            for level in 0..<30 {
                for link in ["x", "y"] {
                    try FileManager.default.createSymbolicLink(atPath: directory + "/d\(level)/\(link)", withDestinationPath: directory + "/d\(level + 1)")
                }
            }
            // A real array at the root and at the leaf.
            let npy = try NumpyFormat.encodeHeader(dtype: .uint8, shape: [2]) + [5, 6]
            try writeFile(root + "/top.npy", npy)
            try writeFile(directory + "/d30/leaf.npy", npy)
            let start = Date()
            let file = try TensorFile.open(root)
            #expect(Date().timeIntervalSince(start) < 5)
            #expect(file.entries.map(\.name) == ["top"])
        }
    }

    // MARK: 7. Non-regular files are refused, never waited on

    /// Runs `body` with a FIFO at `path`; a watchdog opens its other end after
    /// 5 s, so that code that blocks on it fails the test instead of hanging it.
    static func withFIFO(_ path: String, _ body: () throws -> Void) throws {
        guard mkfifo(path, 0o644) == 0 else { throw CheckpointError(.system(call: "mkfifo", errno: errno)) }
        let done = DispatchSemaphore(value: 0)
        let watchdog = Thread {
            if done.wait(timeout: .now() + 5) == .timedOut {
                let fd = open(path, O_RDWR)
                if fd >= 0 { close(fd) }
            }
        }
        watchdog.start()
        defer { done.signal() }
        let start = Date()
        try body()
        #expect(Date().timeIntervalSince(start) < 4, "blocked on the FIFO")
    }

    @Test("a FIFO as a container, tensor file, checkpoint or metadata file is refused at once")
    func fifoIsRefused() throws {
        try withTemporaryDirectory { directory in
            try Self.withFIFO(directory + "/f.ckpt") {
                for open in [{ _ = try ContainerReader.open(directory + "/f.ckpt") },
                             { _ = try TensorFile.open(directory + "/f.ckpt") },
                             { _ = try ContainerRecovery.scan(directory + "/f.ckpt") },
                             { _ = try SafetensorsFile.open(directory + "/f.ckpt") }] {
                    do {
                        try open()
                        Issue.record("a FIFO was opened as a file")
                    } catch let error as CheckpointError {
                        #expect(error.code == .notRegularFile(kind: "a FIFO (named pipe)"), "\(error)")
                        #expect(error.path == directory + "/f.ckpt")
                    }
                }
            }
            // Inside a checkpoint prefix: a FIFO named like a node's file is no complete checkpoint,
            // and one named like the metadata file fails the metadata read with that reason.
            let prefix = directory + "/run"
            try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
            try Self.withFIFO(prefix + "/trainer_0.3") {
                let manager = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0")
                #expect(!manager.checkDBExists(epoch: 3))
            }
            try Self.withFIFO(prefix + "/" + DurableMetadataHandler.fileName) {
                let handler = DurableMetadataHandler()
                let manager = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: handler)
                try manager.setParams()
                do {
                    _ = try manager.getResumeFromEpochID()
                    Issue.record("a FIFO metadata file was read")
                } catch let error as CheckpointError {
                    #expect("\(error)".contains("not a regular file"), "\(error)")
                }
            }
        }
    }

    // MARK: Also checked: one capped allocation path for declared sizes

    @Test("every allocation sized by a file goes through one check with the 64 GiB cap")
    func declaredSizesAreCapped() throws {
        #expect(throws: CheckpointError.self) { _ = try TensorStorage(checkedByteCount: (64 << 30) + 1) }
        #expect(throws: CheckpointError.self) { _ = try TensorStorage(checkedByteCount: -1) }
        #expect(throws: CheckpointError.self) { _ = try TensorStorage(checkedByteCount: 4096, limit: 1024) }
        let small = try TensorStorage(checkedByteCount: 4096)
        #expect(small.count == 4096)
    }
}

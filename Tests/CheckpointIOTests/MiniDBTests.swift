@testable import CheckpointIO
import Foundation
import Testing

// Caffe2's minidb (issue 15): the protobuf wire codec, a golden file spelled
// out byte by byte from caffe2.proto and db.cc, round trips of every dtype
// Caffe2 has (chunked as Caffe2's serializer splits tensors), what other
// Caffe2 writers produce (unpacked fields, out-of-order chunks, fp16 as
// bytes, raw_data, std::string blobs, counters), and hostile input.

/// The bytes of a minidb of `blobs`, through the writer.
func miniDB(_ blobs: [TestBlob], blobList: [String]? = nil, chunk: Int = MiniDBFile.defaultChunkElementCount) throws -> [UInt8] {
    var sources: [BlobSource] = []
    var keep: [UnsafeMutableRawBufferPointer] = []
    defer { keep.forEach { $0.deallocate() } }
    for blob in blobs {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blob.bytes.count, alignment: 16)
        buffer.copyBytes(from: blob.bytes)
        keep.append(buffer)
        sources.append(BlobSource(name: blob.name, dtype: blob.dtype, shape: blob.shape, bytes: UnsafeRawBufferPointer(buffer)))
    }
    return try MiniDBFile.encode(sources, blobList: blobList, chunkElementCount: chunk)
}

func bytesOf<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

/// One minidb record.
func record(_ key: String, _ value: [UInt8]) -> [UInt8] {
    bytesOf([Int32(key.utf8.count).littleEndian, Int32(value.count).littleEndian]) + Array(key.utf8) + value
}

/// A BlobProto of type "Tensor" around `tensor`.
func tensorBlob(_ name: String, _ tensor: ProtobufWriter, type: String = "Tensor") -> [UInt8] {
    var blob = ProtobufWriter()
    blob.writeBytesField(1, Array(name.utf8))
    blob.writeBytesField(2, Array(type.utf8))
    blob.writeMessageField(3, tensor)
    return blob.bytes
}

/// Opens `bytes` as a minidb file in a temporary directory.
func withMiniDB<R>(_ bytes: [UInt8], _ body: (MiniDBFile, String) throws -> R) throws -> R {
    try withTemporaryDirectory { dir in
        let path = dir + "/x.minidb"
        try writeFile(path, bytes)
        return try body(try MiniDBFile.open(path), path)
    }
}

func openError(_ bytes: [UInt8]) throws -> CheckpointError? {
    try withTemporaryDirectory { dir in
        let path = dir + "/x.minidb"
        try writeFile(path, bytes)
        do throws(CheckpointError) { _ = try MiniDBFile.open(path) } catch { return error }
        return nil
    }
}

@Suite("minidb: protobuf wire format")
struct ProtobufWireTests {
    @Test func varintsRoundTripAtEveryLength() throws {
        let values: [UInt64] = [0, 1, 127, 128, 300, 16383, 16384, UInt64(UInt32.max), UInt64(Int64.max), UInt64.max, UInt64(bitPattern: -1), UInt64(bitPattern: Int64(Int32.min))]
        for value in values {
            var writer = ProtobufWriter()
            writer.writeVarint(value)
            #expect(writer.bytes.count == ProtobufWriter.varintSize(value))
            try writer.bytes.withUnsafeBytes { (buffer) throws in
                var reader = ProtobufReader(buffer, baseOffset: 0, what: "test")
                #expect(try reader.readVarint() == value)
                #expect(reader.isAtEnd)
            }
        }
        // Spelled out (protobuf.dev's examples): 150 = 96 01; -1 as int32 is ten bytes.
        var w = ProtobufWriter()
        w.writeVarint(150)
        #expect(w.bytes == [0x96, 0x01])
        var negative = ProtobufWriter()
        negative.writeVarintField(1, -1)
        #expect(negative.bytes == [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    }

    @Test func malformedVarintsAndTagsAreErrorsWithOffsets() throws {
        let cases: [([UInt8], String)] = [
            ([0x80, 0x80], "truncated"),
            ([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], "longer than 64 bits"),
            ([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], "longer than 64 bits"),
        ]
        for (bytes, expected) in cases {
            bytes.withUnsafeBytes { buffer in
                var reader = ProtobufReader(buffer, baseOffset: 100, what: "test")
                do throws(CheckpointError) { _ = try reader.readVarint(); Issue.record("no error for \(bytes)") } catch {
                    #expect("\(error)".contains(expected) && error.offset == 100, "\(error)")
                }
            }
        }
        // Wire types 3/4 (groups) and 6/7, field number 0.
        for tag: [UInt8] in [[0x0B], [0x0C], [0x0E], [0x0F], [0x00], [0x02]] {
            tag.withUnsafeBytes { buffer in
                var reader = ProtobufReader(buffer, baseOffset: 0, what: "test")
                #expect(throws: CheckpointError.self) { _ = try reader.readTag() }
            }
        }
        // A length beyond the buffer.
        ([0x0A, 0x05, 0x01] as [UInt8]).withUnsafeBytes { buffer in
            var reader = ProtobufReader(buffer, baseOffset: 0, what: "test")
            _ = try? reader.readTag()
            #expect(throws: CheckpointError.self) { _ = try reader.readLengthDelimited() }
        }
    }
}

@Suite("minidb: Caffe2's file format")
struct MiniDBTests {
    /// A float tensor "w" = [1, 2], as Caffe2's Save op writes it, spelled out.
    static let golden: [UInt8] = [
        0x04, 0x00, 0x00, 0x00,  // key length 4
        0x28, 0x00, 0x00, 0x00,  // value length 40
        0x77, 0x23, 0x25, 0x30,  // key "w#%0"
        0x0A, 0x01, 0x77,  // BlobProto.name (1) = "w"
        0x12, 0x06, 0x54, 0x65, 0x6E, 0x73, 0x6F, 0x72,  // BlobProto.type (2) = "Tensor"
        0x1A, 0x1B,  // BlobProto.tensor (3), 27 bytes:
        0x08, 0x02,  //   dims (1) = 2
        0x10, 0x01,  //   data_type (2) = FLOAT
        0x1A, 0x08, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40,  //   float_data (3), packed: 1.0, 2.0
        0x3A, 0x01, 0x77,  //   name (7) = "w"
        0x42, 0x02, 0x08, 0x00,  //   device_detail (8) = { device_type (1) = CPU }
        0x5A, 0x04, 0x08, 0x00, 0x10, 0x02,  //   segment (11) = { begin (1) = 0, end (2) = 2 }
    ]

    @Test func theGoldenFileIsWhatTheWriterWritesAndTheReaderReads() throws {
        let written = try miniDB([TestBlob(name: "w", dtype: .float32, shape: [2], bytes: bytesOf([Float(1), 2]))])
        #expect(written == Self.golden)
        try withMiniDB(Self.golden) { (file, _) throws in
            let entry = try file.entry("w")
            #expect(entry.dtype == .float32 && entry.shape == [2] && entry.recordCount == 1 && entry.caffe2Type == "Tensor" && entry.caffe2DataType == 1)
            #expect(try file.bytes(of: "w") == bytesOf([Float(1), 2]))
            #expect(file.storedBlobList == nil && file.fileMetadata.isEmpty)
        }
    }

    static let everyType: [TestBlob] = {
        let strings = ["", "hello", "grüße", "🙂", String(repeating: "x", count: 300)]
        return [
            TestBlob(name: "f32", dtype: .float32, shape: [2, 5], bytes: bytesOf((0..<10).map { Float($0) * -1.5 + 0.25 })),
            TestBlob(name: "f64", dtype: .float64, shape: [7], bytes: bytesOf([Double.pi, -0.0, .infinity, -.greatestFiniteMagnitude, 1e-300, 2, 3])),
            TestBlob(name: "i32", dtype: .int32, shape: [5], bytes: bytesOf([Int32.min, -1, 0, 1, Int32.max])),
            TestBlob(name: "i64", dtype: .int64, shape: [5], bytes: bytesOf([Int64.min, -1, 0, 1 << 40, Int64.max])),
            TestBlob(name: "bool", dtype: .bool, shape: [4], bytes: [1, 0, 0, 1]),
            TestBlob(name: "u8", dtype: .uint8, shape: [4], bytes: [0, 1, 128, 255]),
            TestBlob(name: "i8", dtype: .int8, shape: [4], bytes: [0x80, 0xFF, 0, 0x7F]),
            TestBlob(name: "u16", dtype: .uint16, shape: [3], bytes: bytesOf([UInt16(0), 300, .max])),
            TestBlob(name: "i16", dtype: .int16, shape: [3], bytes: bytesOf([Int16.min, -2, .max])),
            TestBlob(name: "f16", dtype: .float16, shape: [4], bytes: bytesOf([UInt16(0x3C00), 0xC000, 0x7BFF, 0xFFFF])),
            TestBlob(name: "str", dtype: .string, shape: [5], bytes: StringTensor.encode(strings)),
            TestBlob(name: "raw", dtype: .raw, shape: [5], bytes: [0, 0xFF, 0x80, 0x0A, 0x00]),
            TestBlob(name: "scalar", dtype: .int64, shape: [], bytes: bytesOf([Int64(42)])),
            TestBlob(name: "empty", dtype: .float32, shape: [0, 3], bytes: []),
            TestBlob(name: "dir/with spaces", dtype: .int32, shape: [1], bytes: bytesOf([Int32(9)])),
        ]
    }()

    @Test(arguments: [1, 3, 4, MiniDBFile.defaultChunkElementCount])
    func everyCaffe2TypeRoundTrips(chunk: Int) throws {
        let bytes = try miniDB(Self.everyType, chunk: chunk)
        try withMiniDB(bytes) { (file, _) throws in
            #expect(file.names == Self.everyType.map(\.name).sorted { BlobName($0) < BlobName($1) })
            for blob in Self.everyType {
                let entry = try file.entry(blob.name)
                #expect(entry.dtype == blob.dtype && entry.shape == blob.shape, "\(blob.name)")
                #expect(try file.bytes(of: blob.name) == blob.bytes, "\(blob.name)")
                let elements = blob.shape.elementCount
                #expect(entry.recordCount == (blob.dtype == .raw ? 1 : max(1, (elements + chunk - 1) / chunk)), "\(blob.name)")
            }
        }
    }

    /// Keys and segments as Caffe2's TensorSerializer makes them: NAME#%i, segment [i·chunk, min(n, (i+1)·chunk)).
    @Test func chunkedTensorsGetCaffe2sKeysAndSegments() throws {
        let bytes = try miniDB([TestBlob(name: "w", dtype: .int64, shape: [2, 5], bytes: bytesOf((0..<10).map { Int64($0) }))], chunk: 3)
        var keys: [String] = []
        var segments: [[Int64]] = []
        var offset = 0
        try bytes.withUnsafeBytes { (buffer) throws in
            while offset < buffer.count {
                let keyLength = Int(buffer.load(littleEndianAt: offset) as Int32), valueLength = Int(buffer.load(littleEndianAt: offset + 4) as Int32)
                keys.append(String(decoding: buffer[(offset + 8)..<(offset + 8 + keyLength)], as: UTF8.self))
                let valueStart = offset + 8 + keyLength
                let blob = try MiniDBFile.parseBlobProto(UnsafeRawBufferPointer(rebasing: buffer[valueStart..<(valueStart + valueLength)]), offset: valueStart, recordOffset: offset)
                #expect(blob.type == "Tensor" && blob.tensor?.dims == [2, 5])
                segments.append([blob.tensor!.segment!.begin, blob.tensor!.segment!.end])
                offset = valueStart + valueLength
            }
        }
        #expect(keys == ["w#%0", "w#%1", "w#%2", "w#%3"])
        #expect(segments == [[0, 3], [3, 6], [6, 9], [9, 10]])
    }

    /// What other writers (Python's protobuf, old Caffe2 builds) may produce: accepted.
    @Test func unpackedFieldsOutOfOrderChunksBytesAndRawData() throws {
        // w: 5 floats in two chunks, the second first; float_data unpacked in the first chunk.
        var c1 = ProtobufWriter()
        c1.writeVarintField(1, 5)
        c1.writeVarintField(2, 1)
        for v in [Float(3), 4] { c1.writeTag(3, .fixed32); c1.writeFixed32(v.bitPattern) }
        var s1 = ProtobufWriter(); s1.writeVarintField(1, 3); s1.writeVarintField(2, 5)
        c1.writeMessageField(11, s1)
        var c0 = ProtobufWriter()
        c0.writeBytesField(1, [0x05])  // dims packed
        c0.writeVarintField(2, 1)
        bytesOf([Float(0), 1, 2]).withUnsafeBytes { c0.writePackedFixed(3, littleEndianBytes: $0) }
        var s0 = ProtobufWriter(); s0.writeVarintField(1, 0); s0.writeVarintField(2, 3)
        c0.writeMessageField(11, s0)
        // h: fp16 in byte_data (caffe2_serialize_fp16_as_bytes), no segment.
        var h = ProtobufWriter()
        h.writeVarintField(1, 2); h.writeVarintField(2, 12)
        h.writeBytesField(5, bytesOf([UInt16(0x3C00), 0x4000]))
        // r: int32 in raw_data; n: a counter blob (a tensor under another type); s: a std::string blob.
        var r = ProtobufWriter()
        r.writeVarintField(1, 2); r.writeVarintField(2, 2)
        r.writeBytesField(13, bytesOf([Int32(-7), 8]))
        var n = ProtobufWriter()
        n.writeVarintField(1, 1); n.writeVarintField(2, 10); n.writePackedVarints(10, [12])
        var s = ProtobufWriter()
        s.writeBytesField(1, Array("s".utf8)); s.writeBytesField(2, Array("std::string".utf8)); s.writeBytesField(4, [0xC3, 0x28])
        let file = record("w#%1", tensorBlob("w", c1)) + record("h#%0", tensorBlob("h", h)) + record("w#%0", tensorBlob("w", c0))
            + record("r", tensorBlob("r", r)) + record("n", tensorBlob("n", n, type: "std::unique_ptr<Counter<int64_t>>")) + record("s", s.bytes)
        try withMiniDB(file) { (db, _) throws in
            #expect(try db.bytes(of: "w") == bytesOf([Float(0), 1, 2, 3, 4]))
            #expect(try db.entry("w").recordCount == 2)
            #expect(try db.entry("h").dtype == .float16 && db.bytes(of: "h") == bytesOf([UInt16(0x3C00), 0x4000]))
            #expect(try db.bytes(of: "r") == bytesOf([Int32(-7), 8]))
            #expect(try db.entry("n").caffe2Type == "std::unique_ptr<Counter<int64_t>>" && db.bytes(of: "n") == bytesOf([Int64(12)]))
            #expect(try db.entry("s").dtype == .raw && db.bytes(of: "s") == [0xC3, 0x28])
        }
    }

    @Test func theBlobListIsKeptAsCaffe2KeepsIt() throws {
        let bytes = try miniDB([TestBlob(name: "a", dtype: .int32, shape: [1], bytes: bytesOf([Int32(1)]))], blobList: ["a"])
        try withMiniDB(bytes) { (file, _) throws in
            #expect(file.names == ["a", "blob_names"])
            #expect(file.storedBlobList == ["a"])
            #expect(file.fileMetadata[CheckpointManager.blobListKey] == "[\"a\"]")
        }
    }

    @Test func whatCaffe2CannotHoldIsRefusedOnWrite() throws {
        for (blob, expected) in [
            (TestBlob(name: "b", dtype: .bfloat16, shape: [1], bytes: [0, 0]), "no TensorProto data type"),
            (TestBlob(name: "x#%1", dtype: .int32, shape: [1], bytes: [0, 0, 0, 0]), "'#%'"),
            (TestBlob(name: "", dtype: .int32, shape: [1], bytes: [0, 0, 0, 0]), "non-empty"),
        ] {
            #expect { _ = try miniDB([blob]) } throws: { "\($0)".contains(expected) }
        }
        let twice = TestBlob(name: "d", dtype: .int32, shape: [1], bytes: [0, 0, 0, 0])
        #expect { _ = try miniDB([twice, twice]) } throws: { "\($0)".contains("duplicate") }
    }

    // MARK: Hostile input

    static func tensorRecord(_ name: String = "t", key: String? = nil, dims: [Int64] = [4], dataType: Int64 = 2, values: [UInt64] = [1, 2, 3, 4],
                             segment: (Int64, Int64)? = nil, extra: (inout ProtobufWriter) -> Void = { _ in }) -> [UInt8] {
        var t = ProtobufWriter()
        for d in dims { t.writeVarintField(1, d) }
        t.writeVarintField(2, dataType)
        t.writePackedVarints(4, values)
        if let segment {
            var s = ProtobufWriter(); s.writeVarintField(1, segment.0); s.writeVarintField(2, segment.1)
            t.writeMessageField(11, s)
        }
        extra(&t)
        return record(key ?? name + "#%0", tensorBlob(name, t))
    }

    @Test func hostileFilesAreRefusedNamingTheProblem() throws {
        let cases: [([UInt8], String)] = [
            ([], "no record"),
            (bytesOf([Int32(-5), 4]) + [0, 0, 0, 0], "key length"),
            (bytesOf([Int32(1), 0]) + [0x61], "value length"),
            (bytesOf([Int32(1), Int32.max]) + [0x61, 0x0A], "truncated minidb record"),
            (bytesOf([Int32(2), 1]) + [0xC3, 0x28, 0x00], "not valid UTF-8"),
            (record("#%0", [0x0A, 0x00]), "names no blob"),
            (Self.tensorRecord(values: [1, 2, 3]), "elements, its segment"),
            (Self.tensorRecord(dataType: 14), "not a supported Caffe2 data type"),
            (Self.tensorRecord(dataType: 0, values: []), "not a supported Caffe2 data type"),
            (Self.tensorRecord(extra: { $0.writeVarintField(15, 1) }), "data_format"),
            (Self.tensorRecord(dims: [-4]), "negative dimension"),
            (Self.tensorRecord(dims: [1 << 40, 1 << 40]), "overflows"),
            (Self.tensorRecord(dims: [1 << 62], values: []), "segment"),
            (Self.tensorRecord(values: [1, 2], segment: (0, 2)), "are in no chunk"),
            (Self.tensorRecord(values: [1, 2], segment: (0, 2)) + Self.tensorRecord(key: "t#%1", values: [1, 2], segment: (1, 3)), "overlaps"),
            (Self.tensorRecord(values: [1, 2], segment: (0, 2)) + Self.tensorRecord(key: "t#%1", dims: [5], values: [1, 2], segment: (2, 4)), "differ from the first chunk"),
            (Self.tensorRecord(values: [1, 2, 3, 4, 5], segment: (2, 7)), "not inside"),
            (record("t", [0x0A, 0x01, 0x74, 0x12, 0x01, 0x58]), "neither a tensor nor content"),
            (record("t", [0x0B]), "wire type"),
            (record("t", [0x1A, 0x7F, 0x00]), "truncated"),
            (Self.tensorRecord(dataType: 4, values: [], extra: { $0.writeBytesField(6, [0x41]) }), "elements, its segment"),
        ]
        for (bytes, expected) in cases {
            let error = try openError(bytes)
            #expect(error != nil && "\(error!)".contains(expected), "expected '\(expected)', got \(error.map { "\($0)" } ?? "success")")
            #expect(error?.path?.hasSuffix("x.minidb") == true && (bytes.isEmpty || error?.offset != nil), "\(error.map { "\($0)" } ?? "")")
        }
        // A non-UTF-8 string element, with the blob named.
        var t = ProtobufWriter()
        t.writeVarintField(1, 1); t.writeVarintField(2, 4); t.writeBytesField(6, [0xFF, 0xFE])
        let error = try openError(record("names#%0", tensorBlob("names", t)))
        #expect(error?.blobName == "names" && "\(error!)".contains("UTF-8"))
    }

    /// Found by FormatFuzzer: a first record whose key runs past the end of
    /// the file made format detection read past its buffer. It is detected as
    /// a (truncated) minidb, and opening it says where.
    @Test func detectionOfAFileEndingInsideTheFirstKey() throws {
        let bytes: [UInt8] = [0x90, 0, 0, 0, 0, 0, 0x04, 0x01] + Array("w\u{12}{\"_metadata\":1}".utf8)
        try withTemporaryDirectory { dir in
            let path = dir + "/short.bin"
            try writeFile(path, bytes)
            #expect(try TensorFileFormat.detect(path) == .minidb)
            #expect { _ = try TensorFile.open(path) } throws: { error in
                let error = error as? CheckpointError
                return error?.path == path && error?.offset == 0 && "\(error!)".contains("truncated")
            }
            for length in 0...bytes.count {
                try writeFile(path, Array(bytes.prefix(length)))
                _ = try? TensorFileFormat.detect(path)
            }
        }
    }

    /// Truncation at every length and a flip of every byte: an error or a valid file, never a crash.
    @Test func truncatedAndFlippedFilesNeverCrash() throws {
        let good = try miniDB([0, 3, 9, 10, 11].map { Self.everyType[$0] }, chunk: 3)
        try withTemporaryDirectory { dir in
            let path = dir + "/x.minidb"
            for length in 0..<good.count {
                try writeFile(path, Array(good.prefix(length)))
                do throws(CheckpointError) {
                    let file = try MiniDBFile.open(path)
                    // Cut at a record boundary: fewer blobs or fewer chunks, never more.
                    #expect(file.entries.count <= 5)
                } catch {
                    #expect(error.path == path)
                }
            }
            var opened = 0
            for index in stride(from: 0, to: good.count, by: 1) {
                var bad = good
                bad[index] ^= 0x5A
                try writeFile(path, bad)
                guard let file = try? MiniDBFile.open(path) else { continue }
                opened += 1
                for entry in file.entries { _ = try? file.bytes(of: entry.name) }
            }
            // minidb has no checksums: some flips go unnoticed (in payloads), which is why inspect says so.
            #expect(opened > 0)
        }
    }
}

@testable import CheckpointIO
import Foundation
import Testing

private func parseJSON(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8), what: "test") }

@Suite("JSON")
struct JSONTests {
    @Test func parsesAndSerializesLikeSerdeJSON() throws {
        let value = try parseJSON(#" {"a": [1, -2.5e3, true, false, null], "b\u00e9\n": "x\"y\\z\ud83d\ude00", "c": {}} "#)
        #expect(value["a"] == .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]))
        #expect(value["bé\n"]?.stringValue == "x\"y\\z😀")
        #expect(value.text == #"{"a":[1,-2.5e3,true,false,null],"bé\n":"x\"y\\z😀","c":{}}"#)
        #expect(JSONValue.string("\u{1}\t").text == #""\u0001\t""#)
        #expect(try parseJSON("18446744073709551615") == .number("18446744073709551615"))
    }

    @Test func rejectsWhatRFC8259Rejects() {
        let bad = ["", "{", "[1,]", "{\"a\":1,}", "{\"a\":1 \"b\":2}", "01", "1.", "-", "+1", "'x'", "\"\u{1}\"", "\"\\x\"", "\"\\ud800\"",
                   "{\"a\":1,\"a\":2}", "nul", "[1] 2", String(repeating: "[", count: 128) + String(repeating: "]", count: 128)]
        for text in bad {
            #expect(throws: CheckpointError.self, "\(text.prefix(20))") { try parseJSON(text) }
        }
        #expect(throws: CheckpointError.self) { try JSONValue.parse([0x22, 0xFF, 0x22], what: "bad UTF-8") }
    }
}

/// A safetensors file from a header JSON text and a data section.
private func safetensorsBytes(header: String, data: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 8)
    let json = Array(header.utf8)
    out.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(json.count).littleEndian, as: UInt64.self) }
    return out + json + data
}

@Suite("safetensors")
struct SafetensorsTests {
    @Test func writesSaveFilesLayoutAndReadsItBack() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/m.safetensors"
            let a: [Float] = [1, 2, 3, 4], b: [UInt8] = [7, 8, 9], c: [Int64] = [-1]
            try a.withUnsafeBytes { aBytes in
                try b.withUnsafeBytes { bBytes in
                    try c.withUnsafeBytes { cBytes in
                        try SafetensorsFile.write([
                            BlobSource(name: "b", dtype: .uint8, shape: [3], bytes: bBytes),
                            BlobSource(name: "a", dtype: .float32, shape: [2, 2], bytes: aBytes),
                            BlobSource(name: "c", dtype: .int64, shape: [], bytes: cBytes),
                        ], metadata: ["format": "pt"], to: path)
                    }
                }
            }
            let bytes = try readFile(path)
            let headerLength = Int(bytes.withUnsafeBytes { $0.load(as: UInt64.self) })
            #expect((8 + headerLength) % 8 == 0)
            let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
            // Order of save_file: dtype rank descending (I64 > F32 > U8), then name; header padded with spaces.
            #expect(header.trimmingCharacters(in: .whitespaces) == #"{"__metadata__":{"format":"pt"},"c":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},"b":{"dtype":"U8","shape":[3],"data_offsets":[24,27]}}"#)
            let file = try SafetensorsFile.open(path)
            #expect(file.names == ["a", "b", "c"])
            #expect(file.metadata == ["format": "pt"])
            #expect(try file.read("a") == a.withUnsafeBytes { Array($0) })
            #expect(try file.entry("c").shape == [])
        }
    }

    @Test func rejectsEveryViolationOfTheReferenceRules() throws {
        let f32 = #"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#
        let cases: [(String, [UInt8])] = [
            ("short", [1, 2, 3]),
            ("length 2^63", [0, 0, 0, 0, 0, 0, 0, 0x80] + Array("{}".utf8)),
            ("length past end", [100, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)),
            ("not an object", safetensorsBytes(header: "[1]", data: [])),
            ("bad JSON", safetensorsBytes(header: #"{"a":"#, data: [])),
            ("duplicate name", safetensorsBytes(header: #"{"a":\#(f32),"a":\#(f32)}"#, data: [0, 0, 0, 0])),
            ("gap", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8))),
            ("overlap", safetensorsBytes(header: #"{"a":\#(f32),"b":\#(f32)}"#, data: [0, 0, 0, 0])),
            ("size mismatch", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])),
            ("trailing data", safetensorsBytes(header: #"{"a":\#(f32)}"#, data: [0, 0, 0, 0, 0])),
            ("unknown dtype", safetensorsBytes(header: #"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])),
            ("negative dim", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])),
            ("overflowing shape", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])),
            ("metadata not strings", safetensorsBytes(header: #"{"__metadata__":{"a":1}}"#, data: [])),
            ("offsets reversed", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0])),
        ]
        try withTemporaryDirectory { dir in
            for (name, bytes) in cases {
                let path = dir + "/\(name).safetensors"
                try writeFile(path, bytes)
                #expect(throws: CheckpointError.self, "\(name)") { try SafetensorsFile.open(path) }
            }
            try writeFile(dir + "/ok.safetensors", safetensorsBytes(header: #"{"a":\#(f32)}  "#, data: [0, 0, 0x80, 0x3F]))
            #expect(try SafetensorsFile.open(dir + "/ok.safetensors").read("a") == [0, 0, 0x80, 0x3F])
        }
    }
}

@Suite("npy and npz")
struct NumpyTests {
    @Test func npyHeadersAreNumpysAndParseBack() throws {
        let header = try NumpyFormat.encodeHeader(dtype: .float32, shape: [2, 3])
        #expect(header.count % 64 == 0)
        #expect(String(decoding: header[10...], as: UTF8.self).hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"))
        #expect(header.last == 0x0A)
        #expect(String(decoding: try NumpyFormat.encodeHeader(dtype: .int64, shape: [5]), as: UTF8.self).contains("'shape': (5,), }"))
        #expect(String(decoding: try NumpyFormat.encodeHeader(dtype: .bool, shape: []), as: UTF8.self).contains("'descr': '|b1', 'fortran_order': False, 'shape': (), }"))
        let data = header + [UInt8](repeating: 0, count: 24)
        let parsed = try data.withUnsafeBytes { try NumpyFormat.parseHeader($0) }
        #expect(parsed.dtype == .float32 && parsed.shape == [2, 3] && parsed.dataOffset == header.count && parsed.version == "1.0")
        #expect(throws: CheckpointError.self) { try NumpyFormat.encodeHeader(dtype: .bfloat16, shape: [1]) }
        #expect(throws: CheckpointError.self) { try NumpyFormat.encodeHeader(dtype: .f8E4M3, shape: [1]) }
    }

    @Test func hostileNpyHeadersAreRejected() {
        func npy(_ dict: String, data: Int = 0, version: UInt8 = 1) -> [UInt8] {
            let body = Array(dict.utf8)
            return NumpyFormat.magic + [version, 0, UInt8(body.count & 0xFF), UInt8(body.count >> 8)] + body + [UInt8](repeating: 0, count: data)
        }
        // (Big-endian and Fortran-order arrays are read since issue 20: InteropRulesTests.)
        let cases: [(String, [UInt8])] = [
            ("object", npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", data: 8)),
            ("structured", npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", data: 4)),
            ("short data", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data: 4)),
            ("long data", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: 8)),
            ("overflow", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 2), }")),
            ("missing key", npy("{'descr': '<f4', 'shape': (1,), }", data: 4)),
            ("extra key", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", data: 4)),
            ("duplicate key", npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: 4)),
            ("version 9", npy("{}", version: 9)),
            ("truncated", Array(NumpyFormat.magic.prefix(4))),
            ("not npy", [UInt8](repeating: 0x41, count: 64)),
        ]
        for (name, bytes) in cases {
            #expect(throws: CheckpointError.self, "\(name)") { try bytes.withUnsafeBytes { try NumpyFormat.parseHeader($0) } }
        }
    }

    @Test func npzRoundTripAndHostileArchives() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/a.npz"
            let values: [Int16] = [1, -2, 3]
            try values.withUnsafeBytes { bytes in
                try NpzArchive.write([BlobSource(name: "x", dtype: .int16, shape: [3], bytes: bytes),
                                      BlobSource(name: "dir/y", dtype: .int16, shape: [1, 3], bytes: bytes)], to: path)
            }
            let file = try TensorFile.open(path)
            #expect(file.format == .npz)
            #expect(file.entries.map(\.name) == ["dir/y", "x"])
            var out = [UInt8](repeating: 0, count: 6)
            try out.withUnsafeMutableBytes { try file.read("x", into: $0) }
            #expect(out == values.withUnsafeBytes { Array($0) })

            // Damage: a flipped data byte fails the member's CRC-32; truncation loses the directory.
            var bytes = try readFile(path)
            let good = bytes
            bytes[try #require(file.entry("x").offset) + 1] ^= 1
            try writeFile(path, bytes)
            #expect(throws: CheckpointError.self) { try TensorFile.open(path) }
            for length in [0, 10, good.count / 2, good.count - 1] {
                try writeFile(path, Array(good.prefix(length)))
                #expect(throws: CheckpointError.self, "truncated to \(length)") { try TensorFile.open(path) }
            }
        }
    }

    @Test func aZipBombIsRefusedBeforeInflating() throws {
        // One deflated member that claims 2^40 bytes from a few compressed bytes.
        let compressed: [UInt8] = [0x03, 0x00]  // an empty final deflate block
        let name = Array("bomb.npy".utf8)
        var zip: [UInt8] = []
        func u16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)] }
        func u32(_ v: Int) -> [UInt8] { u16(v & 0xFFFF) + u16(v >> 16 & 0xFFFF) }
        func u64(_ v: Int) -> [UInt8] { u32(v & 0xFFFF_FFFF) + u32(v >> 32) }
        zip += u32(0x0403_4B50) + u16(45) + u16(0) + u16(8) + u16(0) + u16(0) + u32(0) + u32(compressed.count) + u32(0) + u16(name.count) + u16(0) + name + compressed
        let central = zip.count
        let extra = u16(1) + u16(8) + u64(1 << 40)
        zip += u32(0x0201_4B50) + u16(45) + u16(45) + u16(0) + u16(8) + u16(0) + u16(0) + u32(0) + u32(compressed.count) + u32(0xFFFF_FFFF)
        zip += u16(name.count) + u16(extra.count) + u16(0) + u16(0) + u16(0) + u32(0) + u32(0) + name + extra
        let centralSize = zip.count - central
        zip += u32(0x0605_4B50) + u16(0) + u16(0) + u16(1) + u16(1) + u32(centralSize) + u32(central) + u16(0)
        try zip.withUnsafeBytes { bytes in
            let members = try NpzArchive.members(of: bytes)
            #expect(members.first?.uncompressedSize == 1 << 40)
            // 2^40 bytes: over the member size cap.
            #expect { try NpzArchive.contents(of: members[0], in: bytes) } throws: { error in
                if case .limitExceeded = (error as? CheckpointError)?.code { return true } else { return false }
            }
            // 1 GiB, under the cap, from 2 compressed bytes: more than deflate's 1032:1 can produce.
            var member = members[0]
            member.uncompressedSize = 1 << 30
            #expect { try NpzArchive.contents(of: member, in: bytes) } throws: { error in
                "\(error)".contains("more than deflate can produce")
            }
        }
    }

    @Test func rawDeflateChecksItsOutputSize() throws {
        // "hello" deflated (raw), from zlib.
        let stream: [UInt8] = [0xCB, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
        var out = [UInt8](repeating: 0, count: 5)
        try stream.withUnsafeBytes { input in try out.withUnsafeMutableBytes { try RawDeflate.inflate(input, into: $0) } }
        #expect(out == Array("hello".utf8))
        for size in [4, 6] {
            var wrong = [UInt8](repeating: 0, count: size)
            #expect(throws: CheckpointError.self) { try stream.withUnsafeBytes { input in try wrong.withUnsafeMutableBytes { try RawDeflate.inflate(input, into: $0) } } }
        }
        var five = [UInt8](repeating: 0, count: 5)
        #expect(throws: CheckpointError.self) { try Array(stream.prefix(4)).withUnsafeBytes { input in try five.withUnsafeMutableBytes { try RawDeflate.inflate(input, into: $0) } } }
        #expect(throws: CheckpointError.self) { try (stream + [0]).withUnsafeBytes { input in try five.withUnsafeMutableBytes { try RawDeflate.inflate(input, into: $0) } } }
        #expect(ZipCRC32.checksum(UnsafeRawBufferPointer(start: nil, count: 0)) == 0)
        #expect(Array("123456789".utf8).withUnsafeBytes { ZipCRC32.checksum($0) } == 0xCBF4_3926)
    }
}

@Suite("In-kernel copies")
struct CopyFileRangeTests {
    /// A 20 MiB tensor (above the streaming threshold) converted from safetensors: its payload goes by copy_file_range.
    @Test func conversionCopiesPayloadsInTheKernelBitExact() throws {
        try withTemporaryDirectory { dir in
            var generator = SyntheticData(seed: 4)
            let big = generator.randomBytes(count: 20 << 20 + 12)
            try big.withUnsafeBytes { bytes in
                try SafetensorsFile.write([BlobSource(name: "big", dtype: .uint8, shape: [bytes.count], bytes: bytes)], to: dir + "/in.safetensors")
            }
            let input = try TensorFile.open(dir + "/in.safetensors")
            let view = try input.borrow("big").bytes
            #expect(input.fileRange(of: "big", view: view)?.offset == Int64(try SafetensorsFile.open(dir + "/in.safetensors").dataOffset))
            try TensorConversion.convert(input, to: dir + "/out.ckpt")
            let reader = try ContainerReader.open(dir + "/out.ckpt")
            #expect(try reader.read("big") == big)
            #expect(reader.verify().allSatisfy { $0.error == nil })
        }
    }

    /// Where the kernel cannot copy (ENOSYS, EXDEV…), the payload is written from memory instead.
    @Test func fallsBackToWritingFromMemory() throws {
        try withTemporaryDirectory { dir in
            var generator = SyntheticData(seed: 5)
            let big = generator.randomBytes(count: 17 << 20)
            try writeFile(dir + "/source.bin", big)
            let source = try MappedFile(dir + "/source.bin")
            for code in [ENOSYS, EXDEV] {
                var options = WriterOptions()
                var calls = SystemCalls.live
                calls.copyFileRange = { _, _, _, _, _ in errno = code; return -1 }
                options.systemCalls = calls
                let writer = try ContainerWriter.create(at: dir + "/out.ckpt", options: options)
                var blob = BlobSource(name: "big", dtype: .uint8, shape: [big.count], bytes: source.bytes)
                blob.sourceFile = source.fileRange(of: source.bytes)
                try writer.write([blob])
                try writer.commit()
                #expect(try ContainerReader.open(dir + "/out.ckpt").read("big") == big, "errno \(code)")
            }
            // Any other failure is a write error naming the call.
            var calls = SystemCalls.live
            calls.copyFileRange = { _, _, _, _, _ in errno = EIO; return -1 }
            var options = WriterOptions()
            options.systemCalls = calls
            let writer = try ContainerWriter.create(at: dir + "/failed.ckpt", options: options)
            var blob = BlobSource(name: "big", dtype: .uint8, shape: [big.count], bytes: source.bytes)
            blob.sourceFile = source.fileRange(of: source.bytes)
            #expect { try writer.write([blob]) } throws: { error in
                if case .system("copy_file_range", EIO)? = (error as? CheckpointError)?.code { return true } else { return false }
            }
            writer.abort()
            #expect(!fileExists(dir + "/failed.ckpt"))
        }
    }
}

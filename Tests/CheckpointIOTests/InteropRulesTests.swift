@testable import CheckpointIO
import Foundation
import Testing

// Issue 20: accept what safetensors and numpy accept. One test per rule, on
// files spelled out byte by byte (PeerInteropTests runs the same rules
// against files the real Python packages write and read).

/// A safetensors file: the 8-byte little-endian length of `header`, `header`, `data`.
private func safetensorsFile(_ header: [UInt8], data: [UInt8] = []) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 8)
    out.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(header.count).littleEndian, as: UInt64.self) }
    return out + header + data
}

/// An `.npy` file (version 1.0) with the header dict `dict` as written, then `data`.
private func npyFile(_ dict: String, data: [UInt8]) -> [UInt8] {
    var body = Array(dict.utf8)
    body += [UInt8](repeating: 0x20, count: (64 - (10 + body.count + 1) % 64) % 64) + [0x0A]
    return NumpyFormat.magic + [1, 0, UInt8(body.count & 0xFF), UInt8(body.count >> 8)] + body + data
}

private func parseNpy(_ bytes: [UInt8]) throws -> NumpyFormat.Header {
    try bytes.withUnsafeBytes { try NumpyFormat.parseHeader($0) }
}

/// The error `body` throws, or nil.
private func thrownError(_ body: () throws -> Void) -> CheckpointError? {
    do { try body(); return nil } catch let error as CheckpointError { return error } catch { return nil }
}

/// All bytes of a tensor through TensorFile.
private func tensorBytes(_ file: TensorFile, _ name: String) throws -> [UInt8] {
    try file.withUnsafeBytes(of: name) { Array($0) }
}

@Suite("Interop rules (issue 20)")
struct InteropRulesTests {
    // MARK: 1. safetensors headers may start with whitespace

    @Test func safetensorsHeaderMayStartWithJSONWhitespace() throws {
        try withTemporaryDirectory { dir in
            // The reference's test_whitespace_leading_padded_header: length 6, "\t\n{}\r ".
            let empty = safetensorsFile([0x09, 0x0A, 0x7B, 0x7D, 0x0D, 0x20])
            #expect(empty == [6, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x0A, 0x7B, 0x7D, 0x0D, 0x20])
            try writeFile(dir + "/empty.safetensors", empty)
            #expect(try TensorFileFormat.detect(dir + "/empty.safetensors") == .safetensors)
            #expect(try TensorFile.open(dir + "/empty.safetensors").entries.isEmpty)
            // A space before a header with a tensor; and 5,000 bytes of padding before it (more than one detection read).
            let json = Array(#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#.utf8)
            for padding in [[0x20], [UInt8](repeating: 0x20, count: 5000) + [0x0A, 0x09, 0x0D]] {
                try writeFile(dir + "/a.safetensors", safetensorsFile(padding + json, data: [7, 9]))
                #expect(try TensorFileFormat.detect(dir + "/a.safetensors") == .safetensors)
                let file = try TensorFile.open(dir + "/a.safetensors")
                #expect(file.entries.map(\.name) == ["a"])
                #expect(try tensorBytes(file, "a") == [7, 9])
            }
            // Detection no longer depends on the first header byte: a broken header gets the JSON error, not "not a … file".
            try writeFile(dir + "/broken.safetensors", safetensorsFile(Array(" {\"a\":".utf8)))
            let broken = thrownError { _ = try TensorFile.open(dir + "/broken.safetensors") }
            #expect("\(broken.map { "\($0)" } ?? "")".contains("safetensors header"))
            #expect(broken?.path == dir + "/broken.safetensors")
            // Whitespace only, or something other than an object, is not safetensors.
            for (name, header) in [("blank", [UInt8](repeating: 0x20, count: 16)), ("array", Array(" [1]".utf8)), ("binary", [0x00, 0x7B, 0x7D])] {
                try writeFile(dir + "/\(name).bin", safetensorsFile(header))
                let error = thrownError { _ = try TensorFileFormat.detect(dir + "/\(name).bin") }
                #expect(error?.code == .invalidField(field: "format", reason: "not a checkpoint, safetensors, .npy, .npz or Caffe2 minidb file"), "\(name)")
            }
        }
    }

    // MARK: 2. the empty tensor name

    @Test func emptyTensorNameSurvivesEveryFormat() throws {
        try withTemporaryDirectory { dir in
            let values: [Float] = [1, 2, 3]
            try values.withUnsafeBytes { bytes in
                try SafetensorsFile.write([BlobSource(name: "", dtype: .float32, shape: [3], bytes: bytes)], to: dir + "/e.safetensors")
            }
            // Exactly what safetensors.numpy.save_file({"": np.arange(1, 4, dtype=np.float32)}) writes.
            let expectedHeader = Array(#"{"":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}  "#.utf8)
            #expect(try readFile(dir + "/e.safetensors") == safetensorsFile(expectedHeader, data: values.withUnsafeBytes { Array($0) }))
            let source = try TensorFile.open(dir + "/e.safetensors")
            #expect(source.entries.map(\.name) == [""])
            // Through our container (FORMAT.md §3.2: name_length 0) and npz (member ".npy"), back to safetensors.
            for output in ["e.ckpt", "e.npz", "e2.safetensors"] {
                try TensorConversion.convert(source, to: dir + "/" + output)
                let file = try TensorFile.open(dir + "/" + output)
                #expect(file.entries.map(\.name) == [""], "\(output)")
                #expect(try tensorBytes(file, "") == values.withUnsafeBytes { Array($0) }, "\(output)")
            }
            #expect(try readFile(dir + "/e2.safetensors") == readFile(dir + "/e.safetensors"))
            let reader = try ContainerReader.open(dir + "/e.ckpt")
            #expect(reader.names == [""])
            #expect(try reader.descriptor("").name == "")
            // Verification and the empty name beside others (sorted first, looked up by binary search).
            try writeContainer(dir + "/mixed.ckpt", [TestBlob(name: "b", dtype: .uint8, shape: [1], bytes: [2]),
                                                     TestBlob(name: "", dtype: .uint8, shape: [1], bytes: [1]),
                                                     TestBlob(name: "a", dtype: .uint8, shape: [1], bytes: [3])])
            let mixed = try ContainerReader.open(dir + "/mixed.ckpt")
            #expect(mixed.names == ["", "a", "b"])
            #expect(try mixed.read("") == [1] && mixed.read("a") == [3] && mixed.read("b") == [2])
            #expect(mixed.verify().allSatisfy { $0.error == nil })
            // A directory of .npy files cannot hold it (".npy" would be a hidden file): refused with the reason.
            let error = thrownError { try TensorConversion.convert(source, to: dir + "/arrays/") }
            #expect(error?.code == .invalidField(field: "name", reason: "cannot be a file name under the output directory"))
            #expect(error?.blobName == "")
        }
    }

    // MARK: 3. one-byte types written with '>'

    @Test func oneByteTypesIgnoreTheByteOrder() throws {
        for (descr, dtype) in [(">u1", DType.uint8), (">b1", .bool), (">i1", .int8), (">?", .bool), (">B", .uint8), (">b", .int8), ("|u1", .uint8)] {
            let header = try parseNpy(npyFile("{'descr': '\(descr)', 'fortran_order': False, 'shape': (3,), }", data: [1, 0, 0xFF]))
            #expect(header.dtype == dtype, "\(descr)")
            #expect(!header.isBigEndian && !header.needsConversion && header.conversion == nil, "\(descr)")
        }
    }

    // MARK: 4. big-endian and Fortran-order arrays

    @Test func bigEndianElementsAreByteSwapped() throws {
        let cases: [(String, DType, [UInt8], [UInt8])] = [
            (">u2", .uint16, [0x01, 0x02], [0x02, 0x01]),
            (">i2", .int16, [0xFF, 0xFE], [0xFE, 0xFF]),
            (">f2", .float16, [0x3C, 0x00], [0x00, 0x3C]),
            (">u4", .uint32, [1, 2, 3, 4], [4, 3, 2, 1]),
            (">i4", .int32, [1, 2, 3, 4], [4, 3, 2, 1]),
            (">f4", .float32, [0x3F, 0x80, 0, 0], [0, 0, 0x80, 0x3F]),
            (">u8", .uint64, [1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]),
            (">i8", .int64, [1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]),
            (">f8", .float64, [0x3F, 0xF0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0xF0, 0x3F]),
            // Complex: real and imaginary parts each swapped, kept in order.
            (">c8", .complex64, [1, 2, 3, 4, 5, 6, 7, 8], [4, 3, 2, 1, 8, 7, 6, 5]),
            (">c16", .complex128, Array(1...16), Array((1...8).reversed()) + Array((9...16).reversed())),
        ]
        for (descr, dtype, stored, expected) in cases {
            let file = npyFile("{'descr': '\(descr)', 'fortran_order': False, 'shape': (), }", data: stored)
            let header = try parseNpy(file)
            #expect(header.dtype == dtype && header.isBigEndian && header.needsConversion && header.conversion == "byteswap", "\(descr)")
            var out = [UInt8](repeating: 0, count: expected.count)
            stored.withUnsafeBytes { s in out.withUnsafeMutableBytes { NumpyFormat.convertToLittleEndianCOrder(s, header: header, into: $0) } }
            #expect(out == expected, "\(descr)")
        }
    }

    @Test func fortranOrderIsCopiedIntoCOrder() throws {
        // A 2×3 int16 array [[0,1,2],[3,4,5]] in Fortran order is stored column by column: 0 3 1 4 2 5.
        let stored: [Int16] = [0, 3, 1, 4, 2, 5]
        let header = try parseNpy(npyFile("{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3), }", data: stored.withUnsafeBytes { Array($0) }))
        #expect(header.isFortranOrder && header.needsConversion && header.conversion == "transpose")
        var out = [Int16](repeating: -1, count: 6)
        stored.withUnsafeBytes { s in out.withUnsafeMutableBytes { NumpyFormat.convertToLittleEndianCOrder(s, header: header, into: $0) } }
        #expect(out == [0, 1, 2, 3, 4, 5])
        // Fortran order with at most one dimension above 1 is C order: viewed in place.
        for shape in ["(6,)", "(1, 6)", "(6, 1, 1)", "()", "(0, 3)"] {
            let count = shape == "(0, 3)" ? 0 : shape == "()" ? 1 : 6
            let h = try parseNpy(npyFile("{'descr': '<i2', 'fortran_order': True, 'shape': \(shape), }", data: [UInt8](repeating: 0, count: 2 * count)))
            #expect(!h.needsConversion, "\(shape)")
        }
    }

    /// Seeded property test: random shapes of rank 2…5, element sizes 1…16, big- and little-endian, against a direct index computation.
    @Test func fortranAndByteOrderConversionMatchesIndexArithmetic() throws {
        var rng = SplitMix64(seed: 20)
        let descrs: [(String, Int, Int)] = [("<u1", 1, 1), (">i2", 2, 2), ("<f4", 4, 4), (">f4", 4, 4), (">i8", 8, 8), (">c8", 8, 4), (">c16", 16, 8), ("<c16", 16, 16)]
        for round in 0..<200 {
            let (descr, elementSize, wordSize) = descrs[Int(rng.next() % UInt64(descrs.count))]
            let rank = 2 + Int(rng.next() % 4)
            let dims = (0..<rank).map { _ in 1 + Int(rng.next() % 5) }
            let count = dims.reduce(1, *)
            let stored = (0..<(count * elementSize)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let fortran = rng.next() % 2 == 0
            let shape = "(" + dims.map(String.init).joined(separator: ", ") + ")"
            let header = try parseNpy(npyFile("{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shape), }", data: stored))
            var out = [UInt8](repeating: 0, count: stored.count)
            stored.withUnsafeBytes { s in out.withUnsafeMutableBytes { NumpyFormat.convertToLittleEndianCOrder(s, header: header, into: $0) } }
            // C-order element c has index (i0…): its Fortran position is Σ i_k · Π_{j<k} d_j.
            var expected = [UInt8](repeating: 0, count: stored.count)
            for c in 0..<count {
                var rest = c, index = [Int](repeating: 0, count: rank)
                for k in stride(from: rank - 1, through: 0, by: -1) { index[k] = rest % dims[k]; rest /= dims[k] }
                var f = 0, scale = 1
                for k in 0..<rank { f += index[k] * scale; scale *= dims[k] }
                let from = fortran ? f : c
                var element = Array(stored[(from * elementSize)..<((from + 1) * elementSize)])
                if descr.hasPrefix(">") {
                    element = stride(from: 0, to: elementSize, by: wordSize).flatMap { element[$0..<($0 + wordSize)].reversed() }
                }
                expected.replaceSubrange((c * elementSize)..<((c + 1) * elementSize), with: element)
            }
            #expect(out == expected, "round \(round): \(descr) \(shape) fortran \(fortran)")
        }
    }

    @Test func convertedArraysReadThroughEveryNumpyContainer() throws {
        try withTemporaryDirectory { dir in
            // [[1, 2, 3], [4, 5, 6]] as big-endian u2 in Fortran order: columns, each element high byte first.
            let stored: [UInt8] = [0, 1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6]
            let expected: [UInt16] = [1, 2, 3, 4, 5, 6]
            let npy = npyFile("{'descr': '>u2', 'fortran_order': True, 'shape': (2, 3), }", data: stored)
            try writeFile(dir + "/w.npy", npy)
            try FileManager.default.createDirectory(atPath: dir + "/arrays/sub", withIntermediateDirectories: true)
            try writeFile(dir + "/arrays/sub/w.npy", npy)
            for (path, name) in [("w.npy", "w"), ("arrays", "sub/w")] {
                let file = try TensorFile.open(dir + "/" + path)
                let entry = try file.entry(name)
                #expect(entry.dtype == .uint16 && entry.shape == [2, 3] && entry.filter == "byteswap+transpose", "\(path)")
                #expect(file.notes == ["'\(name)' is stored big-endian and in Fortran order: converted to little-endian C order when read (byteswap+transpose), never viewed in place"])
                #expect(try tensorBytes(file, name) == expected.withUnsafeBytes { Array($0) }, "\(path)")
                var copy = [UInt16](repeating: 0, count: 6)
                try copy.withUnsafeMutableBytes { try file.read(name, into: $0) }
                #expect(copy == expected)
                // Converted to every output format: the little-endian C-order values.
                for output in ["out.ckpt", "out.safetensors", "out.npz", "out.npy"] {
                    try TensorConversion.convert(file, to: dir + "/" + output)
                    let back = try TensorFile.open(dir + "/" + output)
                    #expect(try tensorBytes(back, back.entries[0].name) == expected.withUnsafeBytes { Array($0) }, "\(path) -> \(output)")
                    #expect(back.notes.isEmpty && back.entries[0].filter != "byteswap+transpose")
                }
            }
        }
    }

    // MARK: 6. a shape written as (4) is the integer 4

    @Test func shapeMustBeATuple() throws {
        let error = thrownError { _ = try parseNpy(npyFile("{'descr': '<u1', 'fortran_order': False, 'shape': (4), }", data: [1, 2, 3, 4])) }
        guard case let .invalidField(field, reason)? = error?.code else { Issue.record("expected invalidField, got \(String(describing: error))"); return }
        #expect(field == "npy header")
        #expect(reason.contains("shape (4) is the integer 4, not a tuple") && reason.contains("shape is not valid: 4"))
        for (shape, dims) in [("(4,)", [4]), ("( 4 , )", [4]), ("(2, 2)", [2, 2]), ("(2, 2,)", [2, 2]), ("()", [])] as [(String, [Int])] {
            let count = dims.reduce(1, *)
            let header = try parseNpy(npyFile("{'descr': '<u1', 'fortran_order': False, 'shape': \(shape), }", data: [UInt8](repeating: 0, count: count)))
            #expect(header.shape.dimensions == dims, "\(shape)")
        }
        #expect(throws: CheckpointError.self) { try parseNpy(npyFile("{'descr': '<u1', 'fortran_order': False, 'shape': (,), }", data: [])) }
    }

    // MARK: 7. huge dimensions of empty tensors; JSON nesting

    @Test func dimensionAbove2To63IsRefusedWithTheReason() throws {
        let header = Array(#"{"a":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#.utf8)
        let error = thrownError { _ = try header.withUnsafeBytes { try SafetensorsFile.parseHeader($0, dataLength: 0) } }
        #expect(error?.blobName == "a")
        #expect(error?.code == .invalidField(field: "shape", reason: "dimension 18446744073709551615 is larger than 2^63−1, the largest dimension this package (and numpy) can represent, even in a tensor with no elements"))
        // 2^63−1 itself, beside a 0, is an empty tensor we represent.
        let largest = Array(#"{"a":{"dtype":"U8","shape":[0,9223372036854775807],"data_offsets":[0,0]}}"#.utf8)
        let parsed = try largest.withUnsafeBytes { try SafetensorsFile.parseHeader($0, dataLength: 0) }
        #expect(parsed.entries.first?.shape == [0, Int.max])
    }

    @Test func jsonNestingLimitIsSerdeJSONs() throws {
        // serde_json (the reference's parser) allows 127 open arrays/objects and refuses the 128th.
        #expect(JSONValue.maximumDepth == 127)
        func header(extraDepth: Int) -> [UInt8] {
            Array(("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":" + String(repeating: "[", count: extraDepth)
                   + String(repeating: "]", count: extraDepth) + "}}").utf8)
        }
        // 2 objects + 125 arrays = 127: accepted, the unknown field ignored, as the reference does.
        let accepted = try header(extraDepth: 125).withUnsafeBytes { try SafetensorsFile.parseHeader($0, dataLength: 1) }
        #expect(accepted.entries.map(\.name) == ["a"])
        let refused = thrownError { _ = try header(extraDepth: 126).withUnsafeBytes { try SafetensorsFile.parseHeader($0, dataLength: 1) } }
        guard case let .invalidField(_, reason)? = refused?.code else { Issue.record("expected invalidField, got \(String(describing: refused))"); return }
        #expect(reason.hasPrefix("arrays and objects nested deeper than 127"))
        // Scalars do not count.
        #expect(try JSONValue.parse(Array((String(repeating: "[", count: 127) + "1" + String(repeating: "]", count: 127)).utf8), what: "t") != .null)
    }
}

/// A small deterministic generator for seeded property tests.
private struct SplitMix64 {
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

@testable import CheckpointIO
import Foundation
import Testing

/// Issue 20, measured against the peers: every rule on files the real Python
/// `safetensors` and `numpy` write (or, where they cannot, files spelled out
/// byte by byte in Python), read by the references (`safe_open`,
/// `numpy.load`) and by `ckpt inspect` / `ckpt convert`, with the tensors
/// compared by the references. Skipped, with the reason, without Python.
@Suite("Peer interop (issue 20)", .enabled(if: python != nil, "python3 with numpy and safetensors is not installed: pip install safetensors numpy"))
struct PeerInteropTests {
    /// Helpers every script starts with.
    static let prelude = """
        import numpy as np, struct, zipfile, io, os, json
        from safetensors import safe_open
        from safetensors.numpy import save_file, load_file

        def st_file(path, header, data=b""):
            '''A safetensors file: 8-byte little-endian length, header bytes, data.'''
            open(path, "wb").write(struct.pack("<Q", len(header)) + header + data)

        def npy_bytes(header, data):
            '''An .npy (1.0) with the header dict exactly as given.'''
            hb = header.encode("latin1")
            hb += b" " * ((64 - (10 + len(hb) + 1) % 64) % 64) + b"\\n"
            return b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(hb)) + hb + data

        def load_any(path):
            '''The tensors of a file as the reference reads them (npz: the array members only).'''
            if path.endswith(".safetensors"):
                with safe_open(path, framework="numpy") as f:
                    return {k: f.get_tensor(k) for k in f.keys()}
            if path.endswith(".npy"):
                return {"": np.load(path)}
            with np.load(path) as z:
                items = {k: z[k] for k in z.files}
            return {k: v for k, v in items.items() if isinstance(v, np.ndarray)}

        def same(reference, ours, label):
            '''Same names, shapes, kinds, values; ours little-endian C order, byte for byte numpy's own conversion.'''
            assert sorted(reference) == sorted(ours), (label, sorted(reference), sorted(ours))
            for k in reference:
                a, b = np.asarray(reference[k]), np.asarray(ours[k])
                assert a.shape == b.shape and a.dtype.kind == b.dtype.kind and a.dtype.itemsize == b.dtype.itemsize, (label, k, a.dtype, a.shape, b.dtype, b.shape)
                assert b.dtype.byteorder in "<|=", (label, k, b.dtype)
                assert np.array_equal(a, b), (label, k)
                assert np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes() == b.tobytes(), (label, k)
        """

    /// Runs `script` after the prelude in `dir`.
    @discardableResult
    static func python(_ script: String, in dir: String) throws -> String {
        try runPython(prelude + "\n" + script, in: dir)
    }

    /// `ckpt ARGS…`, expecting success.
    @discardableResult
    static func ckptOK(_ arguments: String..., in dir: String) throws -> Run {
        let result = try run(productsDirectory().appendingPathComponent("ckpt").path, arguments, in: dir)
        #expect(result.status == 0, "ckpt \(arguments.joined(separator: " ")): \(result.stderr)")
        return result
    }

    /// `ckpt inspect FILE --json`, parsed.
    static func inspectJSON(_ file: String, in dir: String) throws -> JSONValue {
        let result = try ckptOK("inspect", file, "--json", in: dir)
        return try JSONValue.parse(Array(result.stdout.utf8), what: "inspect output")
    }

    // MARK: 1

    @Test func safetensorsHeadersStartingWithWhitespace() throws {
        try withTemporaryDirectory { dir in
            try Self.python("""
                st_file("lead.safetensors", bytes([0x09, 0x0A, 0x7B, 0x7D, 0x0D, 0x20]))  # test_whitespace_leading_padded_header
                st_file("space.safetensors", b' {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"\\x07\\x09")
                body = b'{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"I16","shape":[1],"data_offsets":[8,10]}}'
                st_file("padded.safetensors", b"\\n\\t " * 700 + body + b" \\r\\n", np.array([1.5, -2], dtype="<f4").tobytes() + b"\\x01\\x80")
                for name in ["lead", "space", "padded"]:
                    load_any(name + ".safetensors")  # the reference reads them all
                """, in: dir)
            for name in ["lead", "space", "padded"] {
                let json = try Self.inspectJSON("\(name).safetensors", in: dir)
                #expect(json["format"] == .string("safetensors"), "\(name)")
                try Self.ckptOK("convert", "\(name).safetensors", "\(name).out.npz", in: dir)
                try Self.ckptOK("convert", "\(name).safetensors", "\(name).out.safetensors", in: dir)
            }
            try Self.python("""
                for name in ["lead", "space", "padded"]:
                    reference = load_any(name + ".safetensors")
                    same(reference, load_any(name + ".out.npz"), name + " npz")
                    same(reference, load_any(name + ".out.safetensors"), name + " safetensors")
                assert len(load_any("padded.safetensors")) == 2
                """, in: dir)
        }
    }

    // MARK: 2

    @Test func emptyTensorNameLikeTheReference() throws {
        try withTemporaryDirectory { dir in
            try Self.python("""
                save_file({"": np.arange(6, dtype=np.float32).reshape(2, 3), "w": np.ones(2, dtype=np.int64)}, "e.safetensors", metadata={"k": "v"})
                np.savez("e.npz", **{"": np.arange(3, dtype=np.int16)})
                """, in: dir)
            let json = try Self.inspectJSON("e.safetensors", in: dir)
            #expect(json["blobs"]?.arrayValue?.map { $0["name"] } == [.string(""), .string("w")])
            try Self.ckptOK("convert", "e.safetensors", "e.ckpt", in: dir)
            try Self.ckptOK("convert", "e.ckpt", "back.safetensors", in: dir)
            try Self.ckptOK("convert", "e.safetensors", "e.out.npz", in: dir)
            try Self.ckptOK("convert", "e.npz", "n.out.safetensors", in: dir)
            try Self.ckptOK("extract", "e.ckpt", "", "-o", "only.safetensors", in: dir)
            // safetensors -> container -> safetensors: save_file's bytes.
            #expect(try fileBytes(dir + "/back.safetensors") == fileBytes(dir + "/e.safetensors"))
            try Self.python("""
                reference = load_any("e.safetensors")
                same(reference, load_any("back.safetensors"), "back")
                same(reference, load_any("e.out.npz"), "npz")
                same(load_any("e.npz"), load_any("n.out.safetensors"), "from npz")
                same({"": reference[""]}, load_any("only.safetensors"), "extract")
                """, in: dir)
        }
    }

    // MARK: 3

    @Test func oneByteTypesWrittenBigEndian() throws {
        try withTemporaryDirectory { dir in
            // numpy writes '|u1' itself, so these headers are spelled out; numpy reads them.
            try Self.python("""
                for descr, data in [(">u1", b"\\x01\\x02\\xff"), (">b1", b"\\x01\\x00\\x01"), (">i1", b"\\x01\\x80\\xff")]:
                    name = "x" + descr[1:]
                    open(name + ".npy", "wb").write(npy_bytes("{'descr': '%s', 'fortran_order': False, 'shape': (3,), }" % descr, data))
                    assert np.load(name + ".npy").dtype.itemsize == 1
                """, in: dir)
            for name in ["xu1", "xb1", "xi1"] {
                let json = try Self.inspectJSON("\(name).npy", in: dir)
                #expect(json["blobs"]?.arrayValue?.first?["filter"] == .null, "\(name): nothing to convert")
                try Self.ckptOK("convert", "\(name).npy", "\(name).out.npz", in: dir)
                try Self.ckptOK("convert", "\(name).npy", "\(name).out.safetensors", in: dir)
            }
            try Self.python("""
                for name in ["xu1", "xb1", "xi1"]:
                    reference = {name: np.load(name + ".npy")}
                    same(reference, load_any(name + ".out.npz"), name)
                    same(reference, load_any(name + ".out.safetensors"), name)
                """, in: dir)
        }
    }

    // MARK: 4

    /// Every numeric dtype, big-endian, Fortran order and both, as np.save, np.savez and np.savez_compressed write them.
    @Test func bigEndianAndFortranOrderArraysOfEveryNumericDtype() throws {
        try withTemporaryDirectory { dir in
            let names = try Self.python("""
                rng = np.random.default_rng(20)
                arrays = {}
                for code in ["u1", "i1", "u2", "i2", "f2", "u4", "i4", "f4", "u8", "i8", "f8", "c8", "c16"]:
                    dt = np.dtype("<" + code)
                    base = np.frombuffer(rng.integers(0, 256, size=60 * dt.itemsize, dtype=np.uint8).tobytes(), dtype=dt).reshape(3, 4, 5)
                    if dt.kind in "fc":
                        base = np.nan_to_num(base, nan=1.0, posinf=2.0, neginf=-2.0)
                    arrays[code + "_be"] = base.astype(dt.newbyteorder(">"))
                    arrays[code + "_f"] = np.asfortranarray(base)
                    arrays[code + "_bef"] = np.asfortranarray(base.astype(dt.newbyteorder(">")))
                    arrays[code + "_t"] = np.ascontiguousarray(base[:, :, 0]).T  # np.save writes fortran_order True for it
                os.mkdir("arrays")
                for k, v in arrays.items():
                    np.save(os.path.join("arrays", k + ".npy"), v)
                np.save("single.npy", arrays["f4_bef"])
                np.savez("all.npz", **arrays)
                np.savez_compressed("allz.npz", **arrays)
                header = open("arrays/f4_bef.npy", "rb").read(128)
                assert b"'>f4'" in header and b"'fortran_order': True" in header, header
                print(" ".join(sorted(arrays)))
                """, in: dir).split(separator: " ").map { String($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            #expect(names.count == 52)
            // inspect: the conversion each array needs, and that none is viewed in place.
            let json = try Self.inspectJSON("all.npz", in: dir)
            let filters = Dictionary(uniqueKeysWithValues: try #require(json["blobs"]?.arrayValue).map { ($0["name"]?.stringValue ?? "", $0["filter"]) })
            for name in names {
                let oneByte = name.hasPrefix("u1") || name.hasPrefix("i1")
                let expected: JSONValue
                if name.hasSuffix("_be") { expected = oneByte ? .null : .string("byteswap") }
                else if name.hasSuffix("_bef") { expected = .string(oneByte ? "transpose" : "byteswap+transpose") }
                else { expected = .string("transpose") }
                #expect(filters[name] == expected, "\(name)")
            }
            let notes = try #require(json["notes"]?.arrayValue)
            #expect(notes.count == names.count - 2)  // all but u1_be and i1_be
            #expect(notes.contains(.string("'f4_bef' is stored big-endian and in Fortran order: converted to little-endian C order when read (byteswap+transpose), never viewed in place")))
            let human = try Self.ckptOK("inspect", "single.npy", in: dir)
            #expect(human.stdout.contains("note:     'single' is stored big-endian and in Fortran order") && human.stdout.contains("byteswap+transpose"), "\(human.stdout)")
            // convert: every container of arrays, into npz, our container and back, .npy; safetensors for what it can hold.
            try Self.ckptOK("convert", "all.npz", "all.out.npz", in: dir)
            try Self.ckptOK("convert", "allz.npz", "allz.out.npz", in: dir)
            try Self.ckptOK("convert", "arrays", "dir.out.npz", in: dir)
            try Self.ckptOK("convert", "allz.npz", "all.ckpt", "--codec", "zstd", in: dir)
            try Self.ckptOK("convert", "all.ckpt", "ckpt.out.npz", in: dir)
            try Self.ckptOK("convert", "arrays", "outdir/", in: dir)
            try Self.ckptOK("convert", "single.npy", "single.out.npy", in: dir)
            let verbose = try Self.ckptOK("convert", "single.npy", "single.out.safetensors", "--verbose", in: dir)
            #expect(verbose.stderr.contains("ckpt: note: 'single' is stored big-endian"), "\(verbose.stderr)")
            try Self.ckptOK("extract", "all.npz", "f4_be", "f8_bef", "i2_f", "u8_t", "-o", "sub.safetensors", in: dir)
            try Self.python("""
                reference = load_any("all.npz")
                for out in ["all.out.npz", "allz.out.npz", "dir.out.npz", "ckpt.out.npz"]:
                    same(reference, load_any(out), out)
                same(reference, {k: np.load(os.path.join("outdir", k + ".npy")) for k in reference}, "outdir")
                same(load_any("single.npy"), load_any("single.out.npy"), "npy")
                same({"single": np.load("single.npy")}, load_any("single.out.safetensors"), "npy -> safetensors")
                same({k: reference[k] for k in ["f4_be", "f8_bef", "i2_f", "u8_t"]}, load_any("sub.safetensors"), "safetensors")
                """, in: dir)
            // Structured, string, datetime and object arrays stay refused with their messages.
            try Self.python("""
                np.save("structured.npy", np.zeros(2, dtype=[("a", "<f4")]))
                np.save("text.npy", np.array(["ab", "c"]))
                np.save("dates.npy", np.array(["2026-01-01"], dtype="datetime64[D]"))
                np.save("objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
                """, in: dir)
            for (file, message) in [("structured", "structured dtypes are not supported"), ("text", "'<U2'"), ("dates", "'<M8[D]'"), ("objects", "'|O'")] {
                let result = try ckpt("inspect", "\(file).npy", in: dir)
                #expect(result.status == 65 && result.stderr.contains(message), "\(file): \(result.stderr)")
            }
        }
    }

    // MARK: 5

    @Test func npzMembersThatAreNotArraysAreSkipped() throws {
        try withTemporaryDirectory { dir in
            try Self.python("""
                def npy(a):
                    f = io.BytesIO(); np.save(f, a); return f.getvalue()
                with zipfile.ZipFile("mixed.npz", "w") as z:
                    z.writestr("README.txt", "what these arrays are", compress_type=zipfile.ZIP_DEFLATED)
                    z.writestr("sub/", b"")
                    z.writestr("x.npy", npy(np.arange(4, dtype=np.float32)))
                    z.writestr("sub/y.npy", npy(np.arange(6, dtype=">i4").reshape(2, 3).T), compress_type=zipfile.ZIP_DEFLATED)
                    z.writestr("blob.bin", b"\\x00" * 100, compress_type=zipfile.ZIP_BZIP2)
                with np.load("mixed.npz") as f:
                    assert sorted(f.files) == ["README.txt", "blob.bin", "sub/", "sub/y", "x"], f.files
                    assert f["README.txt"] == b"what these arrays are"
                # A bzip2 .npy member: numpy reads it, ckpt refuses it on purpose.
                with zipfile.ZipFile("bzip2.npz", "w") as z:
                    z.writestr("x.npy", npy(np.arange(4, dtype=np.float32)), compress_type=zipfile.ZIP_BZIP2)
                np.load("bzip2.npz")["x"]
                """, in: dir)
            let json = try Self.inspectJSON("mixed.npz", in: dir)
            #expect(json["blobs"]?.arrayValue?.map { $0["name"] } == [.string("sub/y"), .string("x")])
            #expect(json["notes"]?.arrayValue?.compactMap(\.stringValue) == [
                "skipped 'README.txt': not an .npy array (numpy.load returns it as bytes)",
                "skipped 'sub/': a directory entry, not an .npy array",
                "skipped 'blob.bin': not an .npy array (numpy.load returns it as bytes)",
                "'sub/y' is stored big-endian and in Fortran order: converted to little-endian C order when read (byteswap+transpose), never viewed in place",
            ])
            let human = try Self.ckptOK("inspect", "mixed.npz", in: dir)
            #expect(human.stdout.contains("note:     skipped 'README.txt'") && !human.stdout.contains("truncated"), "\(human.stdout)")
            let convert = try Self.ckptOK("convert", "mixed.npz", "mixed.out.npz", "--verbose", in: dir)
            #expect(convert.stderr.contains("ckpt: note: skipped 'sub/'"), "\(convert.stderr)")
            let quiet = try Self.ckptOK("convert", "mixed.npz", "quiet.npz", in: dir)
            #expect(!quiet.stderr.contains("note"))
            let verify = try Self.ckptOK("verify", "mixed.npz", in: dir)
            #expect(!verify.stdout.contains("README"), "\(verify.stdout)")
            try Self.python("""
                same(load_any("mixed.npz"), load_any("mixed.out.npz"), "mixed")
                """, in: dir)
            let bzip2 = try ckpt("inspect", "bzip2.npz", in: dir)
            #expect(bzip2.status == 65 && bzip2.stderr.contains("member 'x.npy' uses compression method 12 (only stored and deflate are supported)"), "\(bzip2.stderr)")
        }
    }

    // MARK: 6

    @Test func shapeWrittenAsAnIntegerIsRefusedLikeNumpy() throws {
        try withTemporaryDirectory { dir in
            try Self.python("""
                open("int.npy", "wb").write(npy_bytes("{'descr': '<u1', 'fortran_order': False, 'shape': (4), }", b"\\x01\\x02\\x03\\x04"))
                open("tuple.npy", "wb").write(npy_bytes("{'descr': '<u1', 'fortran_order': False, 'shape': (4,), }", b"\\x01\\x02\\x03\\x04"))
                try:
                    np.load("int.npy")
                    raise SystemExit("numpy accepted shape (4)")
                except ValueError as e:
                    assert "shape is not valid: 4" in str(e), e
                np.load("tuple.npy")
                """, in: dir)
            let refused = try ckpt("inspect", "int.npy", in: dir)
            #expect(refused.status == 65 && refused.stderr.contains("shape (4) is the integer 4, not a tuple") && refused.stderr.contains("int.npy"), "\(refused.stderr)")
            #expect(try ckpt("convert", "int.npy", "int.npz", in: dir).status == 65)
            try Self.ckptOK("convert", "tuple.npy", "tuple.npz", in: dir)
            try Self.python(#"same({"tuple": np.load("tuple.npy")}, load_any("tuple.npz"), "tuple")"#, in: dir)
        }
    }

    // MARK: 7

    @Test func hugeDimensionsAndJSONNestingDecisions() throws {
        try withTemporaryDirectory { dir in
            let out = try Self.python("""
                st_file("huge.safetensors", b'{"a":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}')
                with safe_open("huge.safetensors", framework="numpy") as f:
                    print(f.get_slice("a").get_shape())  # the reference lists it...
                    try:
                        f.get_tensor("a")
                        raise SystemExit("numpy made the array")
                    except SystemExit:
                        raise
                    except Exception as e:
                        print("numpy:", e)  # ...but numpy cannot make it
                def nested(depth):
                    return b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":' + b"[" * depth + b"]" * depth + b"}}"
                st_file("deep125.safetensors", nested(125), b"\\x05")
                st_file("deep126.safetensors", nested(126), b"\\x05")
                assert load_any("deep125.safetensors")["a"][0] == 5
                try:
                    load_any("deep126.safetensors")
                    raise SystemExit("the reference accepted 128 levels")
                except SystemExit:
                    raise
                except Exception as e:
                    assert "recursion limit" in str(e), e
                """, in: dir)
            #expect(out.contains("18446744073709551615") && out.contains("numpy:"), "\(out)")
            let huge = try ckpt("inspect", "huge.safetensors", in: dir)
            #expect(huge.status == 65 && huge.stderr.contains("larger than 2^63−1") && huge.stderr.contains("blob 'a'"), "\(huge.stderr)")
            try Self.ckptOK("convert", "deep125.safetensors", "deep125.npz", in: dir)
            try Self.python(#"same(load_any("deep125.safetensors"), load_any("deep125.npz"), "deep")"#, in: dir)
            let deep = try ckpt("inspect", "deep126.safetensors", in: dir)
            #expect(deep.status == 65 && deep.stderr.contains("nested deeper than 127"), "\(deep.stderr)")
        }
    }

    // MARK: Deliberate refusals

    /// What the references accept and ckpt refuses on purpose (README, Interop): each with a message that says why.
    @Test func deliberateRefusalsSayWhy() throws {
        try withTemporaryDirectory { dir in
            try Self.python("""
                t = b'{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
                st_file("dup.safetensors", b'{"a":' + t + b',"a":' + t + b'}', b"\\x05")
                assert load_any("dup.safetensors")["a"][0] == 5  # the reference keeps the last one
                import warnings; warnings.simplefilter("ignore")
                f = io.BytesIO(); np.save(f, np.arange(2)); member = f.getvalue()
                with zipfile.ZipFile("dup.npz", "w") as z:
                    z.writestr("x.npy", member); z.writestr("x.npy", member)
                with zipfile.ZipFile("lzma.npz", "w") as z:
                    z.writestr("x.npy", member, compress_type=zipfile.ZIP_LZMA)
                assert list(np.load("dup.npz").files) == ["x", "x"] and np.load("lzma.npz")["x"][1] == 1
                """, in: dir)
            for (file, message) in [("dup.safetensors", "duplicate member name \"a\""), ("dup.npz", "duplicate member name 'x.npy'"),
                                    ("lzma.npz", "compression method 14")] {
                let result = try ckpt("inspect", file, in: dir)
                #expect(result.status == 65 && result.stderr.contains(message), "\(file): \(result.stderr)")
            }
        }
    }
}

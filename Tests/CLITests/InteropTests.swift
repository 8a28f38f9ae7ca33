@testable import CheckpointIO
import Foundation
import Testing

/// Interop with the real Python packages (`pip install safetensors numpy`;
/// `.ci/run` installs them). Without them these tests are skipped, and the
/// skip is reported with its reason.
@Suite("Python interop", .enabled(if: python != nil, "python3 with numpy and safetensors is not installed: pip install safetensors numpy"))
struct InteropTests {
    /// Tensors of every dtype the numpy binding of safetensors has, odd shapes included.
    static let pythonTensors = """
        import numpy as np
        rng = np.random.default_rng(7)
        tensors = {
            "weights.f32": rng.standard_normal((3, 5)).astype(np.float32),
            "weights.f64": rng.standard_normal(7),
            "half": rng.standard_normal((2, 2)).astype(np.float16),
            "complex": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
            "ids.i64": np.arange(-5, 5, dtype=np.int64),
            "ids.u64": np.arange(4, dtype=np.uint64) * (2**63 // 3),
            "i32": np.arange(6, dtype=np.int32).reshape(1, 2, 3), "u32": np.arange(3, dtype=np.uint32),
            "i16": np.arange(4, dtype=np.int16), "u16": np.arange(4, dtype=np.uint16),
            "i8": np.arange(-3, 3, dtype=np.int8), "u8": np.arange(9, dtype=np.uint8).reshape(3, 3),
            "mask": np.array([True, False, True]),
            "scalar": np.array(3.5, dtype=np.float32),
            "empty": np.zeros((0, 4), dtype=np.float32),
            "a/b.c": np.ones(2, dtype=np.float32),
        }
        """

    @Test func ourSafetensorsAreByteIdenticalToSaveFile() throws {
        try withTemporaryDirectory { dir in
            try runPython(Self.pythonTensors + "\n" + """
                from safetensors.numpy import save_file
                save_file(tensors, "python.safetensors", metadata={"format": "np"})
                save_file(tensors, "nometa.safetensors")
                """, in: dir)
            for name in ["python", "nometa"] {
                // Python's file -> our container -> our safetensors: the same bytes.
                let toContainer = try ckpt("convert", "\(name).safetensors", "\(name).ckpt", in: dir)
                #expect(toContainer.status == 0, "\(toContainer.stderr)")
                let back = try ckpt("convert", "\(name).ckpt", "\(name).ours.safetensors", in: dir)
                #expect(back.status == 0, "\(back.stderr)")
                #expect(try fileBytes(dir + "/\(name).ours.safetensors") == fileBytes(dir + "/\(name).safetensors"), "\(name)")
            }
            // The library writer directly, from tensors read through TensorFile.
            let file = try TensorFile.open(dir + "/python.safetensors")
            let sources = try file.entries.map { entry in
                BlobSource(name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes: try file.borrow(entry.name).bytes)
            }
            try withExtendedLifetime(file) {
                try SafetensorsFile.write(sources, metadata: ["format": "np"], to: dir + "/direct.safetensors")
            }
            #expect(try fileBytes(dir + "/direct.safetensors") == fileBytes(dir + "/python.safetensors"))
        }
    }

    @Test func manyMetadataKeysDifferOnlyInPythonsHashOrder() throws {
        try withTemporaryDirectory { dir in
            try runPython(Self.pythonTensors + "\n" + """
                from safetensors.numpy import save_file
                save_file(tensors, "python.safetensors", metadata={"zz": "1", "aa": "2", "mm": "3"})
                """, in: dir)
            #expect(try ckpt("convert", "python.safetensors", "ours.safetensors", in: dir).status == 0)
            let result = try runPython("""
                import json
                def parts(path):
                    data = open(path, "rb").read()
                    n = int.from_bytes(data[:8], "little")
                    return json.loads(data[8:8 + n]), data[8 + n:], n
                a, b = parts("python.safetensors"), parts("ours.safetensors")
                print(a[0] == b[0], a[1] == b[1], a[2] == b[2])
                """, in: dir)
            #expect(result.trimmingCharacters(in: .whitespacesAndNewlines) == "True True True")
        }
    }

    @Test func pythonReadsWhatCkptWrites() throws {
        try withTemporaryDirectory { dir in
            try runPython(Self.pythonTensors + "\n" + """
                np.savez("source.npz", **{k.replace("/", "_"): v for k, v in tensors.items()})
                """, in: dir)
            for output in ["out.safetensors", "out.npz", "out/"] {
                let result = try ckpt("convert", "source.npz", output, in: dir)
                #expect(result.status == 0, "\(output): \(result.stderr)")
            }
            let check = try runPython(Self.pythonTensors + "\n" + """
                import os
                from safetensors.numpy import load_file
                expected = {k.replace("/", "_"): v for k, v in tensors.items()}
                def same(got):
                    return sorted(got) == sorted(expected) and all(got[k].dtype == expected[k].dtype and got[k].shape == expected[k].shape and np.array_equal(got[k], expected[k]) for k in expected)
                st = load_file("out.safetensors")
                npz = dict(np.load("out.npz"))
                npy = {f[:-4]: np.load(os.path.join("out", f)) for f in os.listdir("out") if f.endswith(".npy")}
                print(same(st), same(npz), same(npy), sorted(os.listdir("out")) == sorted(k + ".npy" for k in expected))
                """, in: dir)
            #expect(check.trimmingCharacters(in: .whitespacesAndNewlines) == "True True True True")
        }
    }

    @Test func ckptReadsWhatPythonWritesExactly() throws {
        try withTemporaryDirectory { dir in
            try runPython(Self.pythonTensors + "\n" + """
                import os
                flat = {k.replace("/", "_"): v for k, v in tensors.items()}
                np.savez("stored.npz", **flat)
                np.savez_compressed("deflated.npz", **flat)
                os.mkdir("raw")
                for k, v in flat.items():
                    open(os.path.join("raw", k), "wb").write(np.ascontiguousarray(v).tobytes())
                    np.save(k + ".npy", v)
                np.save("fortran_vector.npy", np.asfortranarray(np.arange(5, dtype=np.float32)))
                np.save("big_endian.npy", np.arange(3, dtype=">f4"))
                """, in: dir)
            let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/raw")
            for archive in ["stored.npz", "deflated.npz"] {
                let file = try TensorFile.open(dir + "/" + archive)
                #expect(file.entries.map(\.name).sorted() == names.sorted(), "\(archive)")
                for name in names {
                    let bytes = try file.withUnsafeBytes(of: name) { Array($0) }
                    #expect(bytes == (try fileBytes(dir + "/raw/" + name)), "\(archive) \(name)")
                }
            }
            for name in names {
                let file = try TensorFile.open(dir + "/\(name).npy")
                #expect(try file.withUnsafeBytes(of: name) { Array($0) } == (try fileBytes(dir + "/raw/" + name)), "\(name).npy")
            }
            // Deflated members are inflated when read: damage to one is found then, and only for it.
            let deflated = try TensorFile.open(dir + "/deflated.npz")
            let victim = try #require(deflated.entries.first { $0.name == "weights.f64" })
            var bytes = try fileBytes(dir + "/deflated.npz")
            bytes[try #require(victim.offset) + (victim.storedBytes ?? 0) - 6] ^= 0xFF
            try writeBytes(dir + "/damaged.npz", bytes)
            let damaged = try TensorFile.open(dir + "/damaged.npz")
            #expect(throws: CheckpointError.self) { try damaged.withUnsafeBytes(of: "weights.f64") { $0.count } }
            #expect(try damaged.withUnsafeBytes(of: "i32") { Array($0) } == (try fileBytes(dir + "/raw/i32")))
            let verify = try ckpt("verify", "damaged.npz", in: dir)
            #expect(verify.status == 65 && verify.stdout.contains("blob 'weights.f64'") && !verify.stdout.contains("blob 'i32'"), "\(verify.stdout)")
            #expect(try TensorFile.open(dir + "/fortran_vector.npy").entries.first?.shape == [5])
            // Big-endian arrays are read (byte-swapped) since issue 20; PeerInteropTests covers every dtype.
            let bigEndian = try ckpt("inspect", "big_endian.npy", in: dir)
            #expect(bigEndian.status == 0 && bigEndian.stdout.contains("byteswap"), "\(bigEndian.stderr)")
        }
    }
}

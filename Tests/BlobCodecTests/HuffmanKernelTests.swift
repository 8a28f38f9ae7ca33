import BlobCodec
import CCheckpointKernels
import Testing

/// The Huffman kernels of the plane codec (FORMAT.md §3.10) on their own: the
/// histograms, the code lengths, and the coder's variants (baseline x86-64 and BMI2,
/// each one symbol or two symbols a lookup), each checked against a plain bit-by-bit
/// reader written from the spec.
@Suite("Huffman kernels", .serialized)  // the variant switch is process-wide
struct HuffmanKernelTests {
    /// Byte strings that stress the coder's fast paths: exponent-like (few short codes, so
    /// three symbols per table lookup in the decoder's 11-bit window), two symbols (every code
    /// 1 bit), every byte value (long codes), a skewed alphabet that forces the 11-bit limit,
    /// a run of one value broken by a single other byte, FP8-like bytes (5–9-bit codes,
    /// the decoder's 12-bit window, where two codes often fill it exactly), and quarters
    /// that code to very different lengths (the first exponent-like, the rest every byte
    /// value: the decoder's four-stream rounds stop early and one stream at a time goes on).
    static func inputs(length: Int, rng: inout SyntheticData) -> [(String, [UInt8])] {
        var exponent = [UInt8](repeating: 0, count: length)
        var two = exponent, all = exponent, limited = exponent, fp8 = exponent
        for i in 0..<length {
            let r = rng.next()
            // A peaked distribution around 0x78, like the top byte of normal(0, 0.02) weights.
            exponent[i] = 0x78 &+ UInt8(truncatingIfNeeded: (r & 3) &+ ((r >> 2) & 1) &- ((r >> 3) & 3))
            two[i] = r & 1 == 0 ? 0x10 : 0x11
            all[i] = UInt8(truncatingIfNeeded: r >> 8)
            // Geometric: symbol k with probability ~2^-(k+1), so a plain Huffman code would
            // want lengths far beyond 11 for the rare ones.
            limited[i] = UInt8(min(40, (r | 1 << 63).trailingZeroBitCount))
            // E4M3 of normal(0, 0.02): random sign and mantissa, exponent field mostly 0...3.
            let e: UInt8 = switch (r >> 16) & 255 { case 0..<60: 0; case 60..<115: 1; case 115..<188: 2; case 188..<244: 3; case 244..<254: 4; default: 5 }
            fp8[i] = UInt8(truncatingIfNeeded: r >> 24) & 0x87 | e << 3
        }
        var run = [UInt8](repeating: 0x3C, count: length)
        if length > 1 { run[length / 2] = 0x3D }
        let mixed = Array(exponent[..<((length + 3) / 4)]) + all[((length + 3) / 4)...]
        return [("exponent", exponent), ("two symbols", two), ("all bytes", all), ("length-limited", limited), ("run", run), ("fp8", fp8),
                ("mixed quarters", mixed)]
    }

    /// Decodes one Huffman body the slow way: canonical codes from the lengths, bits read
    /// LSB first, each code MSB first, four streams of ceil(n/4) symbols (FORMAT.md §3.10).
    static func referenceDecode(_ body: [UInt8], length: Int) -> [UInt8]? {
        guard body.count >= 2 else { return nil }
        let first = Int(body[0]), last = Int(body[1])
        guard first <= last else { return nil }
        let tableBytes = 2 + (last - first + 2) / 2
        guard body.count >= tableBytes + 16 else { return nil }
        var lengths = [Int](repeating: 0, count: 256)
        for j in 0...(last - first) { lengths[first + j] = Int(body[2 + j / 2] >> (4 * UInt8(j & 1))) & 15 }
        guard lengths.allSatisfy({ $0 <= 11 }) else { return nil }
        var count = [Int](repeating: 0, count: 12)
        for s in 0..<256 where lengths[s] > 0 { count[lengths[s]] += 1 }
        var next = [Int](repeating: 0, count: 13)
        var code = 0
        for bits in 1...11 { code = (code + count[bits - 1]) << 1; next[bits] = code }
        var codeOf = [Int: (symbol: UInt8, length: Int)]()  // key: length << 16 | code
        for s in 0..<256 where lengths[s] > 0 {
            codeOf[lengths[s] << 16 | next[lengths[s]]] = (UInt8(s), lengths[s])
            next[lengths[s]] += 1
        }
        var sizes = [Int]()
        for k in 0..<4 {
            let at = tableBytes + 4 * k
            sizes.append(Int(body[at]) | Int(body[at + 1]) << 8 | Int(body[at + 2]) << 16 | Int(body[at + 3]) << 24)
        }
        var start = tableBytes + 16
        let quarter = (length + 3) / 4
        var out = [UInt8]()
        for k in 0..<4 {
            let symbols = max(0, min(length, (k + 1) * quarter) - min(length, k * quarter))
            guard sizes[k] <= body.count - start else { return nil }
            let stream = Array(body[start..<(start + sizes[k])])
            start += sizes[k]
            var bit = 0
            for _ in 0..<symbols {
                var value = 0, bits = 0
                while true {
                    guard bit < stream.count * 8, bits < 11 else { return nil }
                    value = value << 1 | Int(stream[bit / 8] >> UInt8(bit % 8)) & 1
                    bit += 1
                    bits += 1
                    if let hit = codeOf[bits << 16 | value] { out.append(hit.symbol); break }
                }
            }
            guard (stream.count * 8 - bit) < 8 else { return nil }
        }
        return start == body.count ? out : nil
    }

    /// Encodes `input` as one Huffman body with the kernel, in the variant `bmi2` selects, one
    /// symbol a lookup (`pairs` 0), with the pair table where it pays (1, the default) or
    /// always (2).
    static func encode(_ input: [UInt8], bmi2: Int32, pairs: Int32 = 0) -> [UInt8]? {
        var quarters = [UInt32](repeating: 0, count: 4 * 256)
        input.withUnsafeBytes { ckk_histogram_quarters(&quarters, $0.baseAddress, $0.count) }
        var counts = [UInt32](repeating: 0, count: 256)
        for s in 0..<256 { counts[s] = quarters[s] + quarters[256 + s] + quarters[512 + s] + quarters[768 + s] }
        var lengths = [UInt8](repeating: 0, count: 256)
        guard ckk_huffman_lengths(&lengths, counts) >= 2 else { return nil }
        var body = [UInt8](repeating: 0, count: 2 * input.count + 256)
        _ = ckk_huffman_set_bmi2(bmi2)
        let setting = ckk_huffman_set_pairs(pairs)
        defer { _ = ckk_huffman_set_pairs(1) }
        precondition(setting == pairs)
        // The pair table starts as garbage: only the entries of symbols used may be read.
        var table = [UInt32](repeating: 0xDEAD_BEEF, count: Int(CKK_HUFFMAN_PAIR_ENTRIES))
        let size = input.withUnsafeBytes { source in
            table.withUnsafeMutableBufferPointer {
                ckk_huffman_encode(&body, body.count, source.baseAddress, source.count, quarters, lengths, pairs == 0 ? nil : $0.baseAddress)
            }
        }
        return size > 0 ? Array(body[..<size]) : nil
    }

    static func decode(_ body: [UInt8], length: Int, bmi2: Int32) -> (Int32, [UInt8]) {
        var out = [UInt8](repeating: 0, count: length)
        var consumed = 0
        _ = ckk_huffman_set_bmi2(bmi2)
        let status = out.withUnsafeMutableBytes { dst in
            ckk_huffman_decode(dst.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1)!, length, body, body.count, &consumed)
        }
        // A body with bytes after its last stream is not one Huffman body.
        if status == 0 && consumed != body.count { return (-100, []) }
        return (status, status == 0 ? out : [])
    }

    @Test("both coder variants write the same bytes, a spec reader decodes them, both decoders agree",
          arguments: [Array(1...130), [255, 256, 257, 1000, 4096, 65_535, 262_144]])
    func variantsAgreeWithTheSpec(lengths: [Int]) {
        let hasBMI2 = ckk_huffman_set_bmi2(1) == 1
        defer { _ = ckk_huffman_set_bmi2(1) }
        var rng = SyntheticData(seed: 0x4855_4646)
        for length in lengths {
            for (kind, input) in Self.inputs(length: length, rng: &rng) {
                guard let baseline = Self.encode(input, bmi2: 0) else {
                    // Only one distinct byte: no Huffman code; nothing to compare.
                    #expect(Set(input).count < 2, "\(kind) \(length): the coder refused an input with two or more symbols")
                    continue
                }
                let fast = Self.encode(input, bmi2: 1)
                #expect(fast == baseline, "\(kind) \(length): the BMI2 coder wrote other bytes")
                for (bmi2, pairs): (Int32, Int32) in [(0, 2), (1, 2), (1, 1)] {
                    #expect(Self.encode(input, bmi2: bmi2, pairs: pairs) == baseline,
                            "\(kind) \(length): the pair coder (BMI2 \(bmi2), pairs \(pairs)) wrote other bytes")
                }
                #expect(Self.referenceDecode(baseline, length: length) == input, "\(kind) \(length): the spec reader disagrees")
                for variant: Int32 in [0, 1] {
                    let (status, decoded) = Self.decode(baseline, length: length, bmi2: variant)
                    #expect(status == 0 && decoded == input, "\(kind) \(length): decoder variant \(variant) status \(status)")
                }
            }
        }
        if !hasBMI2 { #expect(ckk_huffman_set_bmi2(1) == 0) }
    }

    @Test("a damaged or truncated body: each decoder variant rejects it, or decodes what the spec reader decodes",
          arguments: ["exponent", "fp8", "all bytes", "mixed quarters"])
    func damagedBodies(kind: String) {
        var rng = SyntheticData(seed: 77)
        // 20,000 bytes: long enough for the decoder's 12-bit window (16 KiB and up) with the
        // long-code alphabets. Every byte of the table and stream sizes and the first streams'
        // starts is damaged, then every 29th byte (the spec reader is slow).
        let input = Self.inputs(length: 20_000, rng: &rng).first { $0.0 == kind }!.1
        guard let body = Self.encode(input, bmi2: 0) else { Issue.record("no body"); return }
        defer { _ = ckk_huffman_set_bmi2(1) }
        var rejected = 0
        func check(_ damaged: [UInt8], _ what: String) {
            let reference = Self.referenceDecode(damaged, length: input.count)
            for variant: Int32 in [0, 1] {
                let (status, decoded) = Self.decode(damaged, length: input.count, bmi2: variant)
                // Accepted: exactly the bytes a reader that follows the spec bit by bit gets.
                if status == 0 { #expect(reference == decoded, "\(what), variant \(variant): accepted, but the spec reader disagrees") }
                // What that reader rejects, the kernel rejects (the reader is the more lenient one:
                // it skips the completeness check of the code lengths).
                if reference == nil { #expect(status != 0, "\(what), variant \(variant): the spec reader rejects it") }
                if status != 0 { rejected += 1 }
            }
        }
        for at in Array(0..<min(400, body.count)) + Array(stride(from: 400, to: body.count, by: 29)) {
            var damaged = body
            damaged[at] ^= 0x5A
            check(damaged, "byte \(at) flipped")
        }
        for cut in [0, 1, 2, 10, body.count / 2, body.count - 1] { check(Array(body[..<cut]), "cut at \(cut)") }
        #expect(rejected > 0)
    }

    /// Code lengths of the build before the radix sort (commit 84af07b), for counts with many
    /// ties: the encoder's output depends on how ties are ordered, so it must not change.
    @Test("code lengths for tie-heavy counts are exactly the earlier writer's")
    func codeLengthsGolden() {
        var ties = [UInt32](repeating: 0, count: 256)
        for s in 10..<20 { ties[s] = 5 }
        ties[3] = 9
        ties[250] = 9
        ties[128] = 100
        var limited = [UInt32](repeating: 0, count: 256)
        for s in 0..<40 { limited[(s * 37) % 256] = 1 << UInt32(20 - s / 2) }
        let expected: [([UInt32], String)] = [
            (ties, "3:4 10:5 11:5 12:5 13:5 14:5 15:5 16:5 17:5 18:4 19:4 128:1 250:4"),
            (limited, "0:2 3:5 6:11 9:11 12:11 15:11 37:2 40:6 43:11 46:11 49:11 52:11 74:3 77:6 80:11 83:11 86:11 89:11 111:3 114:7 "
                + "117:11 120:11 123:11 126:11 148:4 151:7 154:11 157:11 160:11 163:11 185:4 188:10 191:11 194:11 197:11 222:5 225:9 "
                + "228:11 231:11 234:11"),
        ]
        for (counts, golden) in expected {
            var lengths = [UInt8](repeating: 0, count: 256)
            _ = ckk_huffman_lengths(&lengths, counts)
            let text = (0..<256).filter { counts[$0] > 0 }.map { "\($0):\(lengths[$0])" }.joined(separator: " ")
            #expect(text == golden)
        }
    }

    /// Inputs for the histograms: spread (scalar path), peaked (the AVX-512 path where the CPU
    /// has it: 90% of six values, or a few values only, or one value for over 255 blocks of 64
    /// bytes, which fills each byte lane to exactly 255 before it is emptied).
    static func histogramInputs(length: Int, rng: inout SyntheticData) -> [(String, [UInt8])] {
        let random = rng.randomBytes(count: length)
        let peaked = random.enumerated().map { i, b in b < 230 ? [0x78, 0x79, 0x77, 0x7A, 0x76, 0x00][Int(b) % 6] : UInt8(truncatingIfNeeded: i &* 31) }
        return [
            ("spread", random.map { $0 % 3 == 0 ? 0x7F : $0 }),
            ("peaked", peaked),
            ("three values", random.map { [0x10, 0xFF, 0x00][Int($0) % 3] }),
            ("one value", [UInt8](repeating: 0xC3, count: length)),
        ]
    }

    @Test("histograms count every byte: whole, by quarters, and sampled blocks (scalar and vector paths)",
          arguments: [Int32(0), 1])
    func histograms(vector: Int32) {
        // Without AVX-512 BW and VBMI2 the vector case runs the scalar path again (and says so).
        let path = ckk_histogram_set_vector(vector) == 1 ? "vector" : "scalar"
        defer { _ = ckk_histogram_set_vector(1) }
        var rng = SyntheticData(seed: 5)
        for length in Array(0...40) + [255, 4096, 4097, 4160, 70_001, 64 * 255 + 63, 64 * 1000 + 17, 262_144] {
            for (kind, bytes) in Self.histogramInputs(length: length, rng: &rng) {
                var expected = [UInt32](repeating: 0, count: 256)
                for b in bytes { expected[Int(b)] += 1 }
                var counts = [UInt32](repeating: 0, count: 256)
                bytes.withUnsafeBytes { ckk_histogram(&counts, $0.baseAddress, $0.count) }
                #expect(counts == expected, "\(path): \(kind) length \(length)")
                var quarters = [UInt32](repeating: 0, count: 1024)
                bytes.withUnsafeBytes { ckk_histogram_quarters(&quarters, $0.baseAddress, $0.count) }
                let q = (length + 3) / 4
                for k in 0..<4 {
                    var part = [UInt32](repeating: 0, count: 256)
                    for b in bytes[min(length, k * q)..<min(length, (k + 1) * q)] { part[Int(b)] += 1 }
                    #expect(Array(quarters[(256 * k)..<(256 * k + 256)]) == part, "\(path): \(kind) length \(length), quarter \(k)")
                }
                for (block, stride) in [(1, 1), (256, 4096), (16, 48), (100, 100)] {
                    var sampledExpected = [UInt32](repeating: 0, count: 256)
                    var sampledBytes = 0
                    var at = 0
                    while at + block <= length {
                        for b in bytes[at..<(at + block)] { sampledExpected[Int(b)] += 1 }
                        sampledBytes += block
                        at += stride
                    }
                    var sampled = [UInt32](repeating: 0, count: 256)
                    let n = bytes.withUnsafeBytes { ckk_histogram_sample(&sampled, $0.baseAddress, $0.count, block, stride) }
                    #expect(n == sampledBytes && sampled == sampledExpected, "\(kind) length \(length), block \(block), stride \(stride)")
                }
            }
        }
    }

    @Test("code lengths: a complete code of at most 11 bits, never longer for a more frequent symbol, for counts up to 2^32 - 1")
    func codeLengths() {
        var rng = SyntheticData(seed: 11)
        let shapes: [(String, (Int) -> UInt32)] = [
            ("uniform", { _ in 1000 }),
            ("random small", { _ in UInt32(rng.next() % 50) }),
            ("random wide", { _ in UInt32(truncatingIfNeeded: rng.next()) >> UInt32(rng.next() % 32) }),
            ("huge", { s in s % 2 == 0 ? UInt32.max - UInt32(s) : UInt32(s) }),
            ("geometric", { s in s < 32 ? UInt32(1) << UInt32(31 - s) : 0 }),
        ]
        for (name, count) in shapes {
            for used in [2, 3, 17, 200, 256] {
                var counts = [UInt32](repeating: 0, count: 256)
                for s in 0..<used { counts[(s * 97 + 13) % 256] = max(1, count(s)) }
                var lengths = [UInt8](repeating: 0, count: 256)
                let symbols = Int(ckk_huffman_lengths(&lengths, counts))
                #expect(symbols == counts.filter { $0 > 0 }.count, "\(name) \(used)")
                var kraft = 0
                for s in 0..<256 {
                    #expect((counts[s] == 0) == (lengths[s] == 0), "\(name) \(used): symbol \(s)")
                    if lengths[s] > 0 { kraft += 1 << (11 - Int(lengths[s])) }
                    #expect(lengths[s] <= 11)
                }
                #expect(kraft == 2048, "\(name) \(used): the code is not complete")
                for a in 0..<256 where counts[a] > 0 {
                    for b in 0..<256 where counts[b] > counts[a] {
                        #expect(lengths[b] <= lengths[a], "\(name) \(used): symbol \(b) (count \(counts[b])) longer than \(a) (count \(counts[a]))")
                    }
                }
            }
        }
    }
}

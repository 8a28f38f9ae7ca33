/*
 * Canonical Huffman coding of bytes, as specified in FORMAT.md §3.10
 * ("Codec: byte planes"): code lengths 1...11, codes assigned canonically as in
 * deflate (RFC 1951 §3.2.2), packed least significant bit first with each code
 * starting at its most significant bit (as deflate packs Huffman codes), the
 * symbols split into four streams coded independently so that the decoder can
 * run four lookups at once.
 *
 * Pure computation on caller-owned memory (the encoder's pair table too); no allocation.
 */
#include "CCheckpointKernels.h"

#include <string.h>

#define MAX_LENGTH CKK_HUFFMAN_MAX_LENGTH
#define TABLE_SIZE (1u << MAX_LENGTH)
/* The shortest segment decoded with the 12-bit lookup window (see ckk_huffman_decode). */
#define WIDE_WINDOW_MINIMUM (16u << 10)

static inline uint64_t load64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void store64le(uint8_t *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* One 32-bit store in little-endian order (a single instruction where the CPU is little-endian). */
static inline void store32le_word(uint8_t *p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

static inline void store32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t load32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- CPU variants ----
 * The hot loops are compiled twice from one body: as baseline x86-64 and with BMI2 (shlx/shrx
 * shift by a register without the CL dance: measured ~15% faster Huffman encode on AMD Zen 1),
 * chosen at run time. Same source, same results; ckk_huffman_set_bmi2 switches for tests. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__clang__) || defined(__GNUC__))
#define CKK_VARIANTS(name, params, args)                                                   \
    static void name##_generic params { name##_body args; }                                \
    __attribute__((target("bmi2"))) static void name##_bmi2 params { name##_body args; }
static int bmi2_setting = -1; /* -1: not yet looked at; 0: off; 1: on */
static int use_bmi2(void) {
    int setting = __atomic_load_n(&bmi2_setting, __ATOMIC_RELAXED);
    if (setting < 0) {
        /* First use: only replaces "not yet looked at", never a choice a caller made meanwhile. */
        int detected = __builtin_cpu_supports("bmi2") ? 1 : 0;
        int expected = -1;
        __atomic_compare_exchange_n(&bmi2_setting, &expected, detected, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        setting = __atomic_load_n(&bmi2_setting, __ATOMIC_RELAXED);
    }
    return setting;
}
int ckk_huffman_set_bmi2(int enable) {
    int available = __builtin_cpu_supports("bmi2") ? 1 : 0;
    if (enable >= 0) __atomic_store_n(&bmi2_setting, enable && available ? 1 : 0, __ATOMIC_RELAXED);
    return use_bmi2();
}
#else
#define CKK_VARIANTS(name, params, args)                                                   \
    static void name##_generic params { name##_body args; }                                \
    static void name##_bmi2 params { name##_body args; }
static int use_bmi2(void) { return 0; }
int ckk_huffman_set_bmi2(int enable) { (void)enable; return 0; }
#endif

/* ---- Histogram: four sub-tables so consecutive equal bytes do not serialise on one counter. ---- */

/* Adds the bytes of `p` to four sub-tables, one per byte lane of each 32-bit quarter of a
 * 16-byte step: runs of one value (common in an exponent plane) then spread over four
 * counters, and a long step keeps the loop's own work small next to its increments.
 * (Measured on trained MiniLM exponent planes: 2.4 GB/s against 1.2 for one 32-bit load a
 * step, 2.0 for eight sub-tables.) */
static void tally(uint32_t c[4][256], const uint8_t *p, size_t length) {
    size_t i = 0;
    for (; i + 16 <= length; i += 16) {
        uint64_t v = load64le(p + i), w = load64le(p + i + 8);
        c[0][v & 0xFF]++; c[1][(v >> 8) & 0xFF]++; c[2][(v >> 16) & 0xFF]++; c[3][(v >> 24) & 0xFF]++;
        c[0][(v >> 32) & 0xFF]++; c[1][(v >> 40) & 0xFF]++; c[2][(v >> 48) & 0xFF]++; c[3][v >> 56]++;
        c[0][w & 0xFF]++; c[1][(w >> 8) & 0xFF]++; c[2][(w >> 16) & 0xFF]++; c[3][(w >> 24) & 0xFF]++;
        c[0][(w >> 32) & 0xFF]++; c[1][(w >> 40) & 0xFF]++; c[2][(w >> 48) & 0xFF]++; c[3][w >> 56]++;
    }
    for (; i < length; i++) c[i & 3][p[i]]++;
}

/* ---- Histogram of peaked bytes: AVX-512 compares for the most common values ----
 * An exponent plane is a few values most of the time (on trained MiniLM weights the 8 most
 * common cover 98% or more of it). Their counts are taken 64 bytes at a time: one compare per
 * value gives a mask, a masked add counts it in 64 byte lanes (emptied into the totals every
 * 255 blocks, before a lane can wrap), and the bytes that are none of them are compressed out
 * into a small buffer that the scalar tally counts. Exact counts, the same as tally's:
 * 8.7-9.7 GB/s against 3.7 for the quarter histograms of 256 KiB segments of the bf16
 * MiniLM exponent plane, sampling included (measured). Where the values are not peaked
 * (whole FP8 bytes: ~18% covered) the scalar tally is used, after the sample (~3% slower). */
#define PEAK_VALUES 8
#define PEAK_MINIMUM 4096u           /* shorter inputs: the scalar tally */
#define PEAK_PROBES 16u              /* 64-byte blocks sampled to choose the values */
#define PEAK_COVERAGE_PERCENT 85u    /* of the sampled bytes, for the vector path */
#define PEAK_REST_BUFFER 4096u

#if (defined(__x86_64__)) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define CKK_PEAK_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi2,popcnt")))
static int peak_setting = -1; /* -1: not yet looked at; 0: off; 1: on */
static int peak_available(void) {
    int setting = __atomic_load_n(&peak_setting, __ATOMIC_RELAXED);
    if (setting < 0) {
        int detected = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("popcnt");
        int expected = -1;
        __atomic_compare_exchange_n(&peak_setting, &expected, detected ? 1 : 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        setting = __atomic_load_n(&peak_setting, __ATOMIC_RELAXED);
    }
    return setting;
}
int ckk_histogram_set_vector(int enable) {
    if (enable >= 0) {
        __atomic_store_n(&peak_setting, -1, __ATOMIC_RELAXED);
        int available = peak_available();
        __atomic_store_n(&peak_setting, enable && available ? 1 : 0, __ATOMIC_RELAXED);
    }
    return peak_available();
}

CKK_PEAK_TARGET static void tally_peaked(uint32_t c[4][256], const uint8_t *p, size_t length, const uint8_t values[PEAK_VALUES]) {
    __m512i value[PEAK_VALUES], lanes[PEAK_VALUES];
    uint64_t totals[PEAK_VALUES] = {0};
    for (int j = 0; j < PEAK_VALUES; j++) {
        value[j] = _mm512_set1_epi8((char)values[j]);
        lanes[j] = _mm512_setzero_si512();
    }
    const __m512i one = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
    uint8_t rest[PEAK_REST_BUFFER + 64];
    size_t kept = 0, i = 0;
    unsigned blocks = 0;
    for (; i + 64 <= length; i += 64) {
        __m512i v = _mm512_loadu_si512(p + i);
        __mmask64 others = ~(__mmask64)0;
        for (int j = 0; j < PEAK_VALUES; j++) {
            __mmask64 hit = _mm512_cmpeq_epi8_mask(v, value[j]);
            lanes[j] = _mm512_mask_add_epi8(lanes[j], hit, lanes[j], one);
            others &= ~hit;
        }
        _mm512_storeu_si512(rest + kept, _mm512_maskz_compress_epi8(others, v));
        kept += (size_t)__builtin_popcountll(others);
        if (kept > PEAK_REST_BUFFER - 64) {
            tally(c, rest, kept);
            kept = 0;
        }
        if (++blocks == 255) {
            blocks = 0;
            for (int j = 0; j < PEAK_VALUES; j++) {
                totals[j] += (uint64_t)_mm512_reduce_add_epi64(_mm512_sad_epu8(lanes[j], zero));
                lanes[j] = zero;
            }
        }
    }
    for (int j = 0; j < PEAK_VALUES; j++) totals[j] += (uint64_t)_mm512_reduce_add_epi64(_mm512_sad_epu8(lanes[j], zero));
    tally(c, rest, kept);
    tally(c, p + i, length - i);
    for (int j = 0; j < PEAK_VALUES; j++) c[0][values[j]] += (uint32_t)totals[j];
}

/* Whether `p` looks peaked, from 16 blocks of 64 bytes spread over it, and if so its most
 * common values (descending count; ties and absent values in value order, all distinct). The
 * sample only picks the values: every byte is counted exactly either way. */
static int choose_peaks(const uint8_t *p, size_t length, uint8_t values[PEAK_VALUES]) {
    if (length < PEAK_MINIMUM || !peak_available()) return 0;
    uint32_t count[256] = {0};
    size_t stride = length / PEAK_PROBES / 64 * 64;
    for (unsigned k = 0; k < PEAK_PROBES; k++)
        for (unsigned i = 0; i < 64; i++) count[p[k * stride + i]]++;
    uint32_t top[PEAK_VALUES];
    for (int j = 0; j < PEAK_VALUES; j++) { values[j] = (uint8_t)j; top[j] = count[j]; }
    for (int j = 1; j < PEAK_VALUES; j++)
        for (int k = j; k > 0 && top[k] > top[k - 1]; k--) {
            uint32_t t = top[k]; top[k] = top[k - 1]; top[k - 1] = t;
            uint8_t v = values[k]; values[k] = values[k - 1]; values[k - 1] = v;
        }
    for (int s = PEAK_VALUES; s < 256; s++) {
        if (count[s] <= top[PEAK_VALUES - 1]) continue;
        int k = PEAK_VALUES - 1;
        for (; k > 0 && count[s] > top[k - 1]; k--) { top[k] = top[k - 1]; values[k] = values[k - 1]; }
        top[k] = count[s];
        values[k] = (uint8_t)s;
    }
    uint32_t covered = 0;
    for (int j = 0; j < PEAK_VALUES; j++) covered += top[j];
    return covered * 100 >= PEAK_COVERAGE_PERCENT * PEAK_PROBES * 64;
}

static void tally_with(uint32_t c[4][256], const uint8_t *p, size_t length, int peaked, const uint8_t values[PEAK_VALUES]) {
    if (peaked && length >= 64) tally_peaked(c, p, length, values);
    else tally(c, p, length);
}
#else
int ckk_histogram_set_vector(int enable) { (void)enable; return 0; }
static int choose_peaks(const uint8_t *p, size_t length, uint8_t values[PEAK_VALUES]) { (void)p; (void)length; (void)values; return 0; }
static void tally_with(uint32_t c[4][256], const uint8_t *p, size_t length, int peaked, const uint8_t values[PEAK_VALUES]) {
    (void)peaked; (void)values;
    tally(c, p, length);
}
#endif

/* Counts `length` bytes of `p` into `counts`, by the path `peaked` chose. */
static void histogram_with(uint32_t counts[256], const uint8_t *p, size_t length, int peaked, const uint8_t values[PEAK_VALUES]) {
    uint32_t c[4][256];
    memset(c, 0, sizeof c);
    tally_with(c, p, length, peaked, values);
    for (int s = 0; s < 256; s++) counts[s] = c[0][s] + c[1][s] + c[2][s] + c[3][s];
}

void ckk_histogram(uint32_t counts[256], const void *data, size_t length) {
    uint8_t values[PEAK_VALUES];
    histogram_with(counts, data, length, choose_peaks(data, length, values), values);
}

size_t ckk_histogram_sample(uint32_t counts[256], const void *data, size_t length, size_t block, size_t stride) {
    uint32_t c[4][256];
    memset(c, 0, sizeof c);
    const uint8_t *p = data;
    size_t sampled = 0;
    if (block > 0 && stride >= block) {
        for (size_t at = 0; at + block <= length; at += stride) {
            tally(c, p + at, block);
            sampled += block;
        }
    }
    for (int s = 0; s < 256; s++) counts[s] = c[0][s] + c[1][s] + c[2][s] + c[3][s];
    return sampled;
}

/* ---- Code lengths ---- */

/* Sorts the n symbols (given in increasing order) by count, stably, so ties stay in symbol
 * order: an LSD radix sort over the count's bytes, only as many passes as the largest count
 * needs (a region's sample can have all 256 symbols, where an insertion sort cost ~30 µs). */
static void sort_by_count(int symbols[256], int n, const uint32_t counts[256]) {
    uint32_t largest = 0;
    for (int i = 0; i < n; i++) largest |= counts[symbols[i]];
    int other[256];
    int *from = symbols, *to = other;
    for (int shift = 0; shift < 32 && (largest >> shift) != 0; shift += 8) {
        int start[257] = {0};
        for (int i = 0; i < n; i++) start[((counts[from[i]] >> shift) & 0xFF) + 1]++;
        for (int d = 0; d < 256; d++) start[d + 1] += start[d];
        for (int i = 0; i < n; i++) to[start[(counts[from[i]] >> shift) & 0xFF]++] = from[i];
        int *swap = from; from = to; to = swap;
    }
    if (from != symbols) memcpy(symbols, from, (size_t)n * sizeof *symbols);
}

int ckk_huffman_lengths(uint8_t lengths[256], const uint32_t counts[256]) {
    int symbols[256];
    int n = 0;
    memset(lengths, 0, 256);
    for (int s = 0; s < 256; s++)
        if (counts[s]) symbols[n++] = s;
    if (n < 2) return n;
    /* Leaves in ascending (count, symbol) order: deterministic on every platform. */
    sort_by_count(symbols, n, counts);
    /* Two-queue Huffman: leaves 0..n-1, internal nodes n..2n-2 created in ascending weight order. */
    uint64_t weight[512];
    int parent[512];
    for (int i = 0; i < n; i++) weight[i] = counts[symbols[i]];
    int leaf = 0, inner = n;
    for (int node = n; node < 2 * n - 1; node++) {
        int pick[2];
        for (int t = 0; t < 2; t++) {
            if (leaf < n && (inner >= node || weight[leaf] <= weight[inner])) pick[t] = leaf++;
            else pick[t] = inner++;
        }
        weight[node] = weight[pick[0]] + weight[pick[1]];
        parent[pick[0]] = parent[pick[1]] = node;
    }
    int depth[512];
    depth[2 * n - 2] = 0;
    for (int node = 2 * n - 3; node >= 0; node--) depth[node] = depth[parent[node]] + 1;

    /* Limit to MAX_LENGTH. Kraft sum in units of 2^-MAX_LENGTH must end exactly at TABLE_SIZE. */
    int len[256];
    uint32_t kraft = 0;
    for (int i = 0; i < n; i++) {
        len[i] = depth[i] > MAX_LENGTH ? MAX_LENGTH : depth[i];
        kraft += 1u << (MAX_LENGTH - len[i]);
    }
    while (kraft > TABLE_SIZE) {
        /* Lengthen the least frequent symbol among the longest ones still below the limit. */
        int best = -1;
        for (int i = 0; i < n; i++)
            if (len[i] < MAX_LENGTH && (best < 0 || len[i] > len[best])) best = i;
        kraft -= 1u << (MAX_LENGTH - len[best] - 1);
        len[best]++;
    }
    while (kraft < TABLE_SIZE) {
        /* Shorten the most frequent symbol whose shortening still fits. */
        int best = -1;
        for (int i = n - 1; i >= 0; i--)
            if (len[i] > 1 && (1u << (MAX_LENGTH - len[i])) <= TABLE_SIZE - kraft) { best = i; break; }
        if (best < 0) break; /* cannot happen: a longest code can always be shortened */
        kraft += 1u << (MAX_LENGTH - len[best]);
        len[best]--;
    }
    for (int i = 0; i < n; i++) lengths[symbols[i]] = (uint8_t)len[i];
    return n;
}

/* ---- Canonical codes (RFC 1951 §3.2.2), bit-reversed for LSB-first packing ---- */

/* Fills codes[s] (reversed) for every symbol with a length. Returns 0 when the
 * lengths form a complete prefix code of lengths 1...MAX_LENGTH, -1 otherwise. */
static int canonical_codes(uint16_t codes[256], const uint8_t lengths[256]) {
    uint32_t count[MAX_LENGTH + 1] = {0};
    uint32_t kraft = 0;
    for (int s = 0; s < 256; s++) {
        if (lengths[s] > MAX_LENGTH) return -1;
        if (lengths[s]) {
            count[lengths[s]]++;
            kraft += 1u << (MAX_LENGTH - lengths[s]);
        }
    }
    if (kraft != TABLE_SIZE) return -1;
    uint32_t next[MAX_LENGTH + 2];
    uint32_t code = 0;
    count[0] = 0;
    for (int bits = 1; bits <= MAX_LENGTH; bits++) {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    for (int s = 0; s < 256; s++) {
        int l = lengths[s];
        codes[s] = 0;
        if (!l) continue;
        uint32_t c = next[l]++, r = 0;
        for (int b = 0; b < l; b++) r |= ((c >> b) & 1u) << (l - 1 - b);
        codes[s] = (uint16_t)r;
    }
    return 0;
}

int ckk_huffman_codes(uint16_t codes[256], const uint8_t lengths[256]) {
    return canonical_codes(codes, lengths);
}

/* ---- Encode ---- */

#define CKK_PUT(buf, bits, s)                            \
    do {                                                 \
        uint32_t e_ = table[(s)];                        \
        buf |= (uint64_t)(e_ >> 4) << bits;              \
        bits += e_ & 15;                                 \
    } while (0)
#define CKK_FLUSH(out, buf, bits)                        \
    do {                                                 \
        store64le(out, buf);                             \
        out += bits >> 3;                                \
        buf >>= bits & ~7u;                              \
        bits &= 7;                                       \
    } while (0)

/* Codes `count` symbols into a stream at `out`; returns its end (a partial last byte counts). */
static uint8_t *encode_stream(uint8_t *out, const uint8_t *src, size_t count, const uint32_t table[256]) {
    uint64_t buf = 0;
    unsigned bits = 0;
    size_t i = 0;
    for (; i + 5 <= count; i += 5) {
        /* 7 pending bits + 5 codes of at most 11 bits fit a 64-bit buffer. */
        CKK_PUT(buf, bits, src[i]); CKK_PUT(buf, bits, src[i + 1]); CKK_PUT(buf, bits, src[i + 2]);
        CKK_PUT(buf, bits, src[i + 3]); CKK_PUT(buf, bits, src[i + 4]);
        CKK_FLUSH(out, buf, bits);
    }
    for (; i < count; i++) CKK_PUT(buf, bits, src[i]);
    store64le(out, buf);
    return out + ((bits + 7) >> 3);
}

/* Codes what is left of each of the four streams from symbol `i` on, one symbol at a time
 * (the tails are under a few symbols, except where the last stream is shorter than the
 * others), and sets each stream's end. */
static inline __attribute__((always_inline)) void finish_four(uint64_t bufs[4], unsigned bits[4], uint8_t *o[4],
                                                              const uint8_t *s[4], size_t i, size_t quarter, size_t lastCount,
                                                              const uint32_t table[256], uint8_t *ends[4]) {
    for (int k = 0; k < 4; k++) {
        size_t count = k < 3 ? quarter : lastCount;
        uint64_t buf = bufs[k];
        unsigned nb = bits[k];
        uint8_t *out = o[k];
        size_t j = i;
        for (; j + 5 <= count; j += 5) {
            CKK_PUT(buf, nb, s[k][j]); CKK_PUT(buf, nb, s[k][j + 1]); CKK_PUT(buf, nb, s[k][j + 2]);
            CKK_PUT(buf, nb, s[k][j + 3]); CKK_PUT(buf, nb, s[k][j + 4]);
            CKK_FLUSH(out, buf, nb);
        }
        for (; j < count; j++) CKK_PUT(buf, nb, s[k][j]);
        store64le(out, buf);
        ends[k] = out + ((nb + 7) >> 3);
    }
}

/* ---- Encode, two symbols a lookup ----
 * The same streams, bit for bit, coded a pair of symbols at a time: entry b << 8 | a of
 * the pair table's first half (65,536 entries) holds code(a) followed by code(b) (at most
 * 22 bits), and the same entry of its second half their summed length, so the 16-bit
 * little-endian load of the two indexes both directly (two halves rather than one packed
 * entry: the shift takes the code straight from memory). The lengths are 32-bit entries
 * (the add takes them from memory too) for alphabets of at most PAIR_WIDE_SYMBOLS
 * symbols, else bytes at the start of the second half, which keep the entries used in
 * the first-level cache: exponent planes (19-28 symbols a segment) ~1.15× faster than
 * unpacking one entry, whole FP8 bytes (56-114) ~1.1× (measured on trained MiniLM). Only the
 * entries of symbols used are filled or read. Half the lookups and shifts of the
 * one-symbol loop: measured 1.5× faster on trained MiniLM exponent planes (bf16, fp32),
 * 1.35× on whole FP8 bytes. Filling the table costs one entry per pair of symbols used,
 * so it is built only where that is small next to the segment. */
#define PAIR_HALF (CKK_HUFFMAN_PAIR_ENTRIES / 2)
#define PAIR_WIDE_SYMBOLS 48
#define CKK_PUT_PAIR(buf, bits, p)                       \
    do {                                                 \
        uint32_t i_ = load16le(p);                       \
        buf |= (uint64_t)pairs[i_] << bits;              \
        bits += narrow ? ((const uint8_t *)(pairs + PAIR_HALF))[i_] : pairs[PAIR_HALF + i_]; \
    } while (0)

static inline uint16_t load16le(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

/* Four streams of `quarter` symbols each (the last maybe fewer), coded side by side into four
 * separate buffers so that the four bit accumulators do not wait on each other: one symbol
 * a lookup, or with `paired` (a constant where this is inlined) two from `pairs`, whose
 * lengths are bytes when `narrow` (a constant too). */
static inline __attribute__((always_inline)) void encode_four_streams(uint8_t *outs[4], const uint8_t *src, size_t quarter, size_t lastCount,
                                                                      const uint32_t table[256], const uint32_t *pairs, int paired,
                                                                      int narrow, uint8_t *ends[4]) {
    uint64_t b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    unsigned n0 = 0, n1 = 0, n2 = 0, n3 = 0;
    uint8_t *o0 = outs[0], *o1 = outs[1], *o2 = outs[2], *o3 = outs[3];
    const uint8_t *s0 = src, *s1 = src + quarter, *s2 = src + 2 * quarter, *s3 = src + 3 * quarter;
    size_t i = 0;
    if (paired) {
        /* 7 pending bits + 2 pairs of at most 22 bits fit a 64-bit buffer. */
        for (; i + 4 <= lastCount; i += 4) {
            CKK_PUT_PAIR(b0, n0, s0 + i); CKK_PUT_PAIR(b1, n1, s1 + i);
            CKK_PUT_PAIR(b2, n2, s2 + i); CKK_PUT_PAIR(b3, n3, s3 + i);
            CKK_PUT_PAIR(b0, n0, s0 + i + 2); CKK_PUT_PAIR(b1, n1, s1 + i + 2);
            CKK_PUT_PAIR(b2, n2, s2 + i + 2); CKK_PUT_PAIR(b3, n3, s3 + i + 2);
            CKK_FLUSH(o0, b0, n0); CKK_FLUSH(o1, b1, n1); CKK_FLUSH(o2, b2, n2); CKK_FLUSH(o3, b3, n3);
        }
    } else {
        /* 7 pending bits + 5 codes of at most 11 bits fit a 64-bit buffer. */
        for (; i + 5 <= lastCount; i += 5) {
            for (int j = 0; j < 5; j++) {
                CKK_PUT(b0, n0, s0[i + j]); CKK_PUT(b1, n1, s1[i + j]);
                CKK_PUT(b2, n2, s2[i + j]); CKK_PUT(b3, n3, s3[i + j]);
            }
            CKK_FLUSH(o0, b0, n0); CKK_FLUSH(o1, b1, n1); CKK_FLUSH(o2, b2, n2); CKK_FLUSH(o3, b3, n3);
        }
    }
    uint64_t bufs[4] = {b0, b1, b2, b3};
    unsigned bits[4] = {n0, n1, n2, n3};
    uint8_t *o[4] = {o0, o1, o2, o3};
    const uint8_t *s[4] = {s0, s1, s2, s3};
    finish_four(bufs, bits, o, s, i, quarter, lastCount, table, ends);
}
#undef CKK_PUT_PAIR

static inline __attribute__((always_inline)) void encode_four_body(uint8_t *outs[4], const uint8_t *src, size_t quarter, size_t lastCount,
                                                                   const uint32_t table[256], uint8_t *ends[4]) {
    encode_four_streams(outs, src, quarter, lastCount, table, NULL, 0, 0, ends);
}

CKK_VARIANTS(encode_four, (uint8_t *outs[4], const uint8_t *src, size_t quarter, size_t lastCount,
                            const uint32_t table[256], uint8_t *ends[4]),
             (outs, src, quarter, lastCount, table, ends))

/* The pair coder with 32-bit lengths (`name`) or byte lengths (`name`8), each in both variants. */
#define CKK_PAIR_CODER(name, narrow)                                                                              \
    static inline __attribute__((always_inline)) void name##_body(uint8_t *outs[4], const uint8_t *src, size_t quarter, \
                                                                  size_t lastCount, const uint32_t table[256],        \
                                                                  const uint32_t *pairs, uint8_t *ends[4]) {          \
        encode_four_streams(outs, src, quarter, lastCount, table, pairs, 1, narrow, ends);                           \
    }                                                                                                                 \
    CKK_VARIANTS(name, (uint8_t *outs[4], const uint8_t *src, size_t quarter, size_t lastCount,                       \
                        const uint32_t table[256], const uint32_t *pairs, uint8_t *ends[4]),                          \
                 (outs, src, quarter, lastCount, table, pairs, ends))
CKK_PAIR_CODER(encode_four_pairs, 0)
CKK_PAIR_CODER(encode_four_pairs8, 1)
#undef CKK_PAIR_CODER

static int pairs_setting = 1; /* 0: never; 1: the pair table where it pays; 2: always (tests) */
int ckk_huffman_set_pairs(int setting) {
    if (setting >= 0 && setting <= 2) __atomic_store_n(&pairs_setting, setting, __ATOMIC_RELAXED);
    return __atomic_load_n(&pairs_setting, __ATOMIC_RELAXED);
}

/* Fills the pair table's entries for every two symbols used (the others are never read):
 * returns 0 when that would cost too much next to coding `length` symbols one at a time,
 * else 1 with 32-bit lengths or 2 with byte lengths (see CKK_PUT_PAIR). */
static int build_pairs(uint32_t *pairs, const uint16_t codes[256], const uint8_t lengths[256], int minSymbol, int maxSymbol,
                       size_t length, int always) {
    int used[256], n = 0;
    for (int s = minSymbol; s <= maxSymbol; s++) if (lengths[s]) used[n++] = s;
    /* An entry costs about what coding 3 symbols one at a time saves by pairing (measured):
     * pair only where the table is at most half the saving. */
    if (!always && (size_t)n * (size_t)n * 6 >= length) return 0;
    int narrow = n > PAIR_WIDE_SYMBOLS;
    uint8_t *narrowLengths = (uint8_t *)(pairs + PAIR_HALF);
    for (int j = 0; j < n; j++) {
        int b = used[j];
        uint32_t codeB = codes[b], lengthB = lengths[b];
        uint32_t *row = pairs + ((size_t)b << 8);
        for (int i = 0; i < n; i++) {
            int a = used[i];
            uint32_t lengthA = lengths[a];
            row[a] = (uint32_t)codes[a] | codeB << lengthA;
            if (narrow) narrowLengths[((size_t)b << 8) + (size_t)a] = (uint8_t)(lengthA + lengthB);
            else row[PAIR_HALF + a] = lengthA + lengthB;
        }
    }
    return narrow ? 2 : 1;
}

void ckk_histogram_quarters(uint32_t *counts, const void *data, size_t length) {
    const uint8_t *p = data;
    size_t quarter = (length + 3) / 4;
    uint8_t values[PEAK_VALUES];
    int peaked = choose_peaks(p, length, values); /* once for the four */
    for (int k = 0; k < 4; k++) {
        size_t first = quarter * k < length ? quarter * k : length;
        size_t end = quarter * (k + 1) < length ? quarter * (k + 1) : length;
        histogram_with(counts + 256 * k, p + first, end - first, peaked, values);
    }
}

size_t ckk_huffman_encode(uint8_t *dst, size_t capacity, const void *src, size_t length,
                          const uint32_t *counts, const uint8_t lengths[256], uint32_t *pairs) {
    uint16_t codes[256];
    if (canonical_codes(codes, lengths) != 0) return 0;
    int minSymbol = 256, maxSymbol = 0;
    for (int s = 0; s < 256; s++) {
        if ((counts[s] | counts[256 + s] | counts[512 + s] | counts[768 + s]) && !lengths[s]) return 0; /* not these counts' lengths */
        if (lengths[s]) { maxSymbol = s; if (minSymbol == 256) minSymbol = s; }
    }
    const uint8_t *in = src;
    size_t tableBytes = 2 + (size_t)(maxSymbol - minSymbol + 2) / 2;
    size_t header = tableBytes + 16;
    /* Exact stream sizes; each stream is coded 8 bytes after the previous one's end
     * (its writer stores 8 bytes at a time) and the gaps are closed afterwards. */
    size_t sizes[4], total = header;
    for (int k = 0; k < 4; k++) {
        uint64_t bits = 0;
        for (int s = minSymbol; s <= maxSymbol; s++) bits += (uint64_t)counts[256 * k + s] * lengths[s];
        sizes[k] = (size_t)((bits + 7) / 8);
        total += sizes[k] + 8;
    }
    if (total > capacity) return 0;
    uint8_t *p = dst;
    *p++ = (uint8_t)minSymbol;
    *p++ = (uint8_t)maxSymbol;
    for (int s = minSymbol; s <= maxSymbol; s += 2) *p++ = (uint8_t)(lengths[s] | (s + 1 <= maxSymbol ? lengths[s + 1] << 4 : 0));
    for (int k = 0; k < 4; k++) { store32le(p, (uint32_t)sizes[k]); p += 4; }
    uint32_t table[256];
    for (int s = 0; s < 256; s++) table[s] = (uint32_t)codes[s] << 4 | lengths[s];
    size_t quarter = (length + 3) / 4;
    size_t lastCount = length - (quarter * 3 < length ? quarter * 3 : length);
    uint8_t *outs[4], *ends[4];
    outs[0] = p;
    for (int k = 1; k < 4; k++) outs[k] = outs[k - 1] + sizes[k - 1] + 8;
    if (quarter * 3 <= length) {
        int setting = __atomic_load_n(&pairs_setting, __ATOMIC_RELAXED);
        int built = pairs && setting ? build_pairs(pairs, codes, lengths, minSymbol, maxSymbol, length, setting == 2) : 0;
        if (built == 2) {
            if (use_bmi2()) encode_four_pairs8_bmi2(outs, in, quarter, lastCount, table, pairs, ends);
            else encode_four_pairs8_generic(outs, in, quarter, lastCount, table, pairs, ends);
        } else if (built == 1) {
            if (use_bmi2()) encode_four_pairs_bmi2(outs, in, quarter, lastCount, table, pairs, ends);
            else encode_four_pairs_generic(outs, in, quarter, lastCount, table, pairs, ends);
        } else if (use_bmi2()) {
            encode_four_bmi2(outs, in, quarter, lastCount, table, ends);
        } else {
            encode_four_generic(outs, in, quarter, lastCount, table, ends);
        }
    } else {
        for (int k = 0; k < 4; k++) {
            size_t first = quarter * k < length ? quarter * k : length;
            size_t end = quarter * (k + 1) < length ? quarter * (k + 1) : length;
            ends[k] = encode_stream(outs[k], in + first, end - first, table);
        }
    }
    for (int k = 0; k < 4; k++) {
        if ((size_t)(ends[k] - outs[k]) != sizes[k]) return 0; /* cannot happen: sizes are exact */
        memmove(p, outs[k], sizes[k]);
        p += sizes[k];
    }
    return (size_t)(p - dst);
}

/* ---- Decode ---- */

typedef struct {
    uint64_t buf;
    unsigned bits;
    const uint8_t *p;
    const uint8_t *end;
} bit_reader;

static inline void refill_fast(bit_reader *r) {
    r->buf |= load64le(r->p) << r->bits;
    r->p += (63 - r->bits) >> 3;
    r->bits |= 56;
}

static inline void refill_safe(bit_reader *r) {
    if (r->end - r->p >= 8) { refill_fast(r); return; }
    while (r->bits <= 56 && r->p < r->end) {
        r->buf |= (uint64_t)*r->p++ << r->bits;
        r->bits += 8;
    }
}

/* The decoder's fast rounds: four streams, up to three symbols per lookup, for as many
 * rounds as every stream can take without bounds checks; they leave each reader and output
 * pointer where the checked tail continues. A lookup looks at `window` bits (11 or 12) and
 * emits every whole code inside them; a refill leaves at least 56 bits, so a round of
 * `lookups` lookups (5 of 11 bits: 44 + 11 ≤ 56; 4 of 12 bits: 36 + 12 ≤ 56) always has
 * the window's bits loaded. Short codes (the exponent planes, ~2.7 bits) fit three per
 * 11 bits and gain most from five lookups a refill; 6-bit codes (whole FP8 bytes) fit two
 * per 12 bits but only one per 11, which makes the wider window ~1.3× faster there.
 * An entry (see ckk_huffman_decode) keeps its bit count in its low 6 bits, so the shift
 * takes the entry itself (a 64-bit shift uses only those bits): one step less on each
 * stream's chain of dependent operations. Inside the rounds a stream's buffer carries a
 * marker, a 1 just above its valid bits and zeros beyond, so that no bit count is kept:
 * the refill finds the count from the leading zeros. Three values a stream (buffer, input,
 * output) instead of five (with a bit count and the sum of the entries that update it)
 * keep the four streams in registers (~1.05× faster). The marker never shifts out: a
 * refill leaves at least 56 bits, an entry consumes at most the window, and a round at
 * most 55 bits. */
#define CKK_GET3(k)                                                  \
    do {                                                             \
        uint32_t x = multi[b##k & mask];                             \
        b##k >>= x & 63;                                             \
        store32le_word(o##k, x >> 6);                                \
        o##k += x >> 30;                                             \
    } while (0)
#define CKK_REFILL(k)                                                \
    do {                                                             \
        unsigned z_ = (unsigned)__builtin_clzll(b##k);               \
        unsigned v_ = 63 ^ z_; /* valid bits: the marker's position */ \
        b##k = (b##k & ~((uint64_t)1 << v_)) | load64le(p##k) << v_; \
        p##k += z_ >> 3;                                             \
        v_ |= 56;                                                    \
        b##k = (b##k & (((uint64_t)1 << v_) - 1)) | (uint64_t)1 << v_; \
    } while (0)
/* A reader's buffer and bit count (at most 63) to a marked buffer, and back. */
#define CKK_ENTER(k, r) uint64_t b##k = ((r).buf & (((uint64_t)1 << (r).bits) - 1)) | (uint64_t)1 << (r).bits
#define CKK_LEAVE(k, r)                                              \
    do {                                                             \
        unsigned v_ = 63 ^ (unsigned)__builtin_clzll(b##k);          \
        (r).bits = v_;                                               \
        (r).buf = b##k ^ (uint64_t)1 << v_;                          \
    } while (0)
static inline __attribute__((always_inline)) void decode_rounds_body(bit_reader r[4], uint8_t *o[4], uint8_t *const e[4],
                                                                     const uint32_t *multi, unsigned window, unsigned lookups) {
    const uint64_t mask = ((uint64_t)1 << window) - 1;
    /* A round reads at most 7 new bytes of a stream (8 loaded), advances at most 3 output
     * bytes per lookup and writes at most one more (each lookup stores four bytes; those past
     * its count are rewritten by the next lookup or the tail). */
    const size_t advance = 3 * (size_t)lookups, written = advance + 1;
    for (;;) {
        size_t rounds = SIZE_MAX;
        for (int k = 0; k < 4; k++) {
            size_t outLeft = (size_t)(e[k] - o[k]), inLeft = (size_t)(r[k].end - r[k].p);
            size_t byOut = outLeft < written ? 0 : (outLeft - written) / advance + 1;
            size_t byIn = inLeft < 8 ? 0 : (inLeft - 8) / 7 + 1;
            if (byOut < rounds) rounds = byOut;
            if (byIn < rounds) rounds = byIn;
        }
        if (rounds == 0) break;
        CKK_ENTER(0, r[0]); CKK_ENTER(1, r[1]); CKK_ENTER(2, r[2]); CKK_ENTER(3, r[3]);
        const uint8_t *p0 = r[0].p, *p1 = r[1].p, *p2 = r[2].p, *p3 = r[3].p;
        uint8_t *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3];
        for (; rounds > 0; rounds--) {
            CKK_REFILL(0); CKK_REFILL(1); CKK_REFILL(2); CKK_REFILL(3);
            CKK_GET3(0); CKK_GET3(1); CKK_GET3(2); CKK_GET3(3);
            CKK_GET3(0); CKK_GET3(1); CKK_GET3(2); CKK_GET3(3);
            CKK_GET3(0); CKK_GET3(1); CKK_GET3(2); CKK_GET3(3);
            CKK_GET3(0); CKK_GET3(1); CKK_GET3(2); CKK_GET3(3);
            if (lookups == 5) { CKK_GET3(0); CKK_GET3(1); CKK_GET3(2); CKK_GET3(3); }
        }
        CKK_LEAVE(0, r[0]); CKK_LEAVE(1, r[1]); CKK_LEAVE(2, r[2]); CKK_LEAVE(3, r[3]);
        r[0].p = p0; r[1].p = p1; r[2].p = p2; r[3].p = p3;
        o[0] = o0; o[1] = o1; o[2] = o2; o[3] = o3;
    }
}

/* One stream's fast rounds, for what the four-stream rounds left of it. They stop when the
 * first stream runs out, and the quarters of a segment often code to different lengths
 * (different tensors): on trained FP8 weights 1.4% of the symbols were left, which the
 * checked tail decodes several times slower, one code a lookup. */
static inline __attribute__((always_inline)) void decode_one_body(bit_reader *r, uint8_t **o, uint8_t *e,
                                                                  const uint32_t *multi, unsigned window, unsigned lookups) {
    const uint64_t mask = ((uint64_t)1 << window) - 1;
    const size_t advance = 3 * (size_t)lookups, written = advance + 1;
    for (;;) {
        size_t outLeft = (size_t)(e - *o), inLeft = (size_t)(r->end - r->p);
        size_t rounds = outLeft < written ? 0 : (outLeft - written) / advance + 1;
        size_t byIn = inLeft < 8 ? 0 : (inLeft - 8) / 7 + 1;
        if (byIn < rounds) rounds = byIn;
        if (rounds == 0) break;
        CKK_ENTER(0, *r);
        const uint8_t *p0 = r->p;
        uint8_t *o0 = *o;
        for (; rounds > 0; rounds--) {
            CKK_REFILL(0);
            for (unsigned l = 0; l < lookups; l++) CKK_GET3(0);
        }
        CKK_LEAVE(0, *r);
        r->p = p0; *o = o0;
    }
}
#undef CKK_GET3
#undef CKK_REFILL
#undef CKK_ENTER
#undef CKK_LEAVE

static inline __attribute__((always_inline)) void decode_rounds11_body(bit_reader r[4], uint8_t *o[4], uint8_t *const e[4],
                                                                       const uint32_t *multi) {
    decode_rounds_body(r, o, e, multi, 11, 5);
    for (int k = 0; k < 4; k++) decode_one_body(&r[k], &o[k], e[k], multi, 11, 5);
}
static inline __attribute__((always_inline)) void decode_rounds12_body(bit_reader r[4], uint8_t *o[4], uint8_t *const e[4],
                                                                       const uint32_t *multi) {
    decode_rounds_body(r, o, e, multi, 12, 4);
    for (int k = 0; k < 4; k++) decode_one_body(&r[k], &o[k], e[k], multi, 12, 4);
}
CKK_VARIANTS(decode_rounds11, (bit_reader r[4], uint8_t *o[4], uint8_t *const e[4], const uint32_t *multi), (r, o, e, multi))
CKK_VARIANTS(decode_rounds12, (bit_reader r[4], uint8_t *o[4], uint8_t *const e[4], const uint32_t *multi), (r, o, e, multi))

int ckk_huffman_decode(void *dst, size_t length, const uint8_t *src, size_t srcLength, size_t *consumed) {
    if (srcLength < 2) return CKK_ERR_TRUNCATED;
    int minSymbol = src[0], maxSymbol = src[1];
    if (minSymbol > maxSymbol) return CKK_ERR_BAD_TABLE;
    int span = maxSymbol - minSymbol + 1;
    size_t tableBytes = 2 + (size_t)(span + 1) / 2;
    size_t header = tableBytes + 16;
    if (srcLength < header) return CKK_ERR_TRUNCATED;
    uint8_t lengths[256] = {0};
    for (int j = 0; j < span; j++) lengths[minSymbol + j] = (src[2 + j / 2] >> (4 * (j & 1))) & 15;
    if ((span & 1) && (src[2 + span / 2] >> 4) != 0) return CKK_ERR_BAD_TABLE;
    if (lengths[minSymbol] == 0 || lengths[maxSymbol] == 0) return CKK_ERR_BAD_TABLE;
    uint16_t codes[256];
    if (canonical_codes(codes, lengths) != 0) return CKK_ERR_BAD_TABLE;
    uint16_t table[TABLE_SIZE];
    for (int s = minSymbol; s <= maxSymbol; s++) {
        unsigned l = lengths[s];
        if (!l) continue;
        for (uint32_t fill = codes[s]; fill < TABLE_SIZE; fill += 1u << l) table[fill] = (uint16_t)(s << 4 | l);
    }
    bit_reader r[4];
    const uint8_t *p = src + header;
    size_t available = srcLength - header;
    for (int k = 0; k < 4; k++) {
        size_t size = load32le(src + tableBytes + 4 * k);
        if (size > available) return CKK_ERR_TRUNCATED;
        r[k].buf = 0; r[k].bits = 0; r[k].p = p; r[k].end = p + size;
        p += size;
        available -= size;
    }
    *consumed = (size_t)(p - src);
    uint8_t *out = dst;
    size_t quarter = (length + 3) / 4;
    uint8_t *o[4], *e[4];
    for (int k = 0; k < 4; k++) {
        o[k] = out + (quarter * k < length ? quarter * k : length);
        e[k] = out + (quarter * (k + 1) < length ? quarter * (k + 1) : length);
    }
    /* The lookup window: 12 bits when the code's own expected length (each length weighted by
     * 2^-length, the probability the code implies) is over 4 bits and the segment is long
     * enough to repay the larger table (16 KiB: below that, building 4096 entries instead of
     * 2048 costs more than the wider window saves), else 11 (see the rounds).
     * Then up to three symbols per lookup, as many whole codes as fit in the window:
     * entry = total bits | sym1 << 6 | sym2 << 14 | sym3 << 22 | count << 30 (the symbol
     * fields past the count hold anything: the rounds store four bytes a lookup, advance by
     * the count, and the next lookup or the tail rewrites the rest). */
    uint32_t expected = 0; /* in units of 2^-MAX_LENGTH bits */
    for (int s = minSymbol; s <= maxSymbol; s++)
        if (lengths[s]) expected += (uint32_t)lengths[s] << (MAX_LENGTH - lengths[s]);
    unsigned window = expected > 4 * TABLE_SIZE && length >= WIDE_WINDOW_MINIMUM ? MAX_LENGTH + 1 : MAX_LENGTH;
    uint32_t multi[2 * TABLE_SIZE];
    for (uint32_t index = 0; index < 1u << window; index++) {
        uint32_t first = table[index & (TABLE_SIZE - 1)], l1 = first & 15;
        uint32_t entry = l1 | (first >> 4) << 6 | 1u << 30;
        uint32_t second = table[(index >> l1) & (TABLE_SIZE - 1)], l2 = second & 15;
        if (l1 + l2 <= window) {
            entry = (l1 + l2) | (first >> 4) << 6 | (second >> 4) << 14 | 2u << 30;
            uint32_t third = table[(index >> (l1 + l2)) & (TABLE_SIZE - 1)], l3 = third & 15;
            if (l1 + l2 + l3 <= window) entry = (l1 + l2 + l3) | (entry & 0x3FFFC0u) | (third >> 4) << 22 | 3u << 30;
        }
        multi[index] = entry;
    }
    /* The fast rounds, then each stream's tail one code at a time with every check. */
    if (window == MAX_LENGTH) {
        if (use_bmi2()) decode_rounds11_bmi2(r, o, e, multi);
        else decode_rounds11_generic(r, o, e, multi);
    } else {
        if (use_bmi2()) decode_rounds12_bmi2(r, o, e, multi);
        else decode_rounds12_generic(r, o, e, multi);
    }
    for (int k = 0; k < 4; k++) {
        for (uint8_t *q = o[k]; q < e[k]; q++) {
            if (r[k].bits < MAX_LENGTH) refill_safe(&r[k]);
            uint32_t x = table[r[k].buf & (TABLE_SIZE - 1)];
            if ((x & 15) > r[k].bits) return CKK_ERR_CORRUPT_STREAM; /* the stream ended inside a code */
            *q = (uint8_t)(x >> 4);
            r[k].buf >>= x & 15;
            r[k].bits -= x & 15;
        }
        /* Exactly the stream's bytes: everything consumed but fewer than 8 padding bits. */
        if (r[k].p != r[k].end || r[k].bits > 7) return CKK_ERR_CORRUPT_STREAM;
    }
    return 0;
}

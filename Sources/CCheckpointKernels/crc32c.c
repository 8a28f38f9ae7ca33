/*
 * CRC32C: a portable slicing-by-8 path and an SSE4.2 path that runs several
 * independent `crc32` streams over adjacent blocks and joins them with
 * precomputed "shift by a block of zeros" tables. The instruction has a
 * latency of 3 cycles and a throughput of 1 per cycle, so three streams keep
 * it busy on cached data (~29 GB/s measured here); on data streaming from
 * memory, six streams reach ~18 GB/s where three reach ~14.5 GB/s (more
 * independent sequential streams for the hardware prefetchers).
 *
 * Two carry-less multiply (PCLMULQDQ) folding paths join them: a 512-bit one
 * (AVX-512 VPCLMULQDQ, used whenever the CPU has it) and a 128-bit one for CPUs
 * whose `crc32` instruction is slow. AMD Zen 1 and 2 issue `crc32` once every
 * 3 cycles, so the streams top out at ~2.7 bytes per cycle (~5.5 GB/s on the
 * project's Zen 1 machines) while 128-bit folding reaches ~4 (~9.5 GB/s). No
 * CPU table says which is faster, so the first checksum measures both on a
 * 16 KiB buffer and keeps the faster (choose_path): every path computes the
 * same value, so the choice only changes speed. On CPUs without AVX-512
 * folding, CKPT_CRC32C=sse42 (or clmul) in the environment skips the
 * measurement and forces a path.
 */
#include "CCheckpointKernels.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include <nmmintrin.h>
#define CKK_X86 1
#endif

#define CKK_POLY 0x82F63B78u

/* Block sizes: six streams of CKK_LONG bytes for big buffers, then three
 * streams of CKK_SHORT bytes so that mid-sized buffers still overlap. */
#define CKK_LONG 4096
#define CKK_SHORT 256

static uint32_t slice_table[8][256];
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];
/* x2n_table[k] = x^(2^k) mod P. The Castagnoli polynomial is not irreducible
 * (x^(2^32) = x^2, not x, mod P), so zlib's trick of cycling a 32-entry table
 * would be wrong here: keep one entry per power actually used. */
#define CKK_X2N_ENTRIES 67
static uint32_t x2n_table[CKK_X2N_ENTRIES];
static int hardware_available;
static int fold_available; /* AVX-512 + VPCLMULQDQ carry-less multiply folding */
static int clmul_available;  /* PCLMULQDQ + SSE4.2: the 128-bit folding path can run */
static int clmul_chosen;     /* ... and measured faster than the crc32 streams on this CPU */
static void choose_path(void);
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Folding constants: lane halves are multiplied by x^(D+31) and x^(D-33)
 * (see fold_constants) to move 128 bits of message D bits further on. */
static uint64_t fold_2048[2], fold_512[2], fold_384[2], fold_256[2], fold_128[2];

/* a * b modulo the polynomial, both in reflected bit order (bit 31 = x^0). */
static uint32_t multiply_mod_poly(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
        if (a & m) {
            product ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        b = (b & 1) ? (b >> 1) ^ CKK_POLY : b >> 1;
    }
    return product;
}

/* x^(n * 2^k) modulo the polynomial, for any 64-bit n and k <= 3. */
static uint32_t x_pow(uint64_t n, unsigned k) {
    uint32_t result = 1u << 31;
    while (n) {
        if (n & 1) result = multiply_mod_poly(x2n_table[k], result);
        n >>= 1;
        k++;
    }
    return result;
}

/* x^(8 * byteCount) modulo the polynomial. */
static uint32_t x_pow_8n(uint64_t byteCount) { return x_pow(byteCount, 3); }

/* x^bits modulo the polynomial. */
static uint32_t x_pow_bits(uint64_t bits) { return x_pow(bits, 0); }

/* Constants that move a 128-bit lane D bits forward. A lane loaded from
 * memory holds the message's higher-degree coefficients in its low quadword
 * (reflected order). Its low quadword H stands for H·x^64, its high quadword L
 * for L; moved D bits on they become H·x^(64+D) and L·x^D. A carry-less
 * product of a reflected 64-bit value with a reflected 32-bit constant lands
 * 33 bits below the lane position it represents, hence x^(D+31) and x^(D-33). */
static void fold_constants(uint64_t constants[2], uint64_t distanceBits) {
    constants[0] = x_pow_bits(distanceBits + 31);
    constants[1] = x_pow_bits(distanceBits - 33);
}

static void fill_shift_table(uint32_t table[4][256], uint64_t byteCount) {
    uint32_t op = x_pow_8n(byteCount);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++)
            table[k][b] = multiply_mod_poly(op, b << (8 * k));
}

static void init_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ CKK_POLY : c >> 1;
        slice_table[0][i] = c;
    }
    for (int k = 1; k < 8; k++)
        for (uint32_t i = 0; i < 256; i++)
            slice_table[k][i] = (slice_table[k - 1][i] >> 8) ^ slice_table[0][slice_table[k - 1][i] & 0xFF];

    uint32_t p = 1u << 30; /* x^1 */
    x2n_table[0] = p;
    for (int k = 1; k < CKK_X2N_ENTRIES; k++) x2n_table[k] = p = multiply_mod_poly(p, p);

    fill_shift_table(shift_long, CKK_LONG);
    fill_shift_table(shift_short, CKK_SHORT);
    fold_constants(fold_2048, 2048);
    fold_constants(fold_512, 512);
    fold_constants(fold_384, 384);
    fold_constants(fold_256, 256);
    fold_constants(fold_128, 128);
#if CKK_X86
    __builtin_cpu_init();
    hardware_available = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    fold_available = hardware_available && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul");
    clmul_available = hardware_available && __builtin_cpu_supports("pclmul");
    choose_path();
#endif
}

static inline void ensure_init(void) { pthread_once(&init_once, init_tables); }

static inline uint32_t load32_le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t apply_shift(const uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xFF] ^ table[1][(crc >> 8) & 0xFF] ^ table[2][(crc >> 16) & 0xFF] ^ table[3][crc >> 24];
}

static uint32_t portable_raw(uint32_t c, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo = load32_le(p) ^ c;
        uint32_t hi = load32_le(p + 4);
        c = slice_table[7][lo & 0xFF] ^ slice_table[6][(lo >> 8) & 0xFF] ^
            slice_table[5][(lo >> 16) & 0xFF] ^ slice_table[4][lo >> 24] ^
            slice_table[3][hi & 0xFF] ^ slice_table[2][(hi >> 8) & 0xFF] ^
            slice_table[1][(hi >> 16) & 0xFF] ^ slice_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = slice_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

uint32_t ckk_crc32c_extend_portable(uint32_t crc, const void *data, size_t length) {
    ensure_init();
    return ~portable_raw(~crc, (const uint8_t *)data, length);
}

#if CKK_X86
__attribute__((target("sse4.2")))
static uint32_t hardware_raw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 6 * (size_t)CKK_LONG) {
        uint64_t c0 = c, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0;
        const uint8_t *end = p + CKK_LONG;
        do {
            uint64_t w0, w1, w2, w3, w4, w5;
            memcpy(&w0, p, 8);
            memcpy(&w1, p + CKK_LONG, 8);
            memcpy(&w2, p + 2 * CKK_LONG, 8);
            memcpy(&w3, p + 3 * CKK_LONG, 8);
            memcpy(&w4, p + 4 * CKK_LONG, 8);
            memcpy(&w5, p + 5 * CKK_LONG, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
            c3 = _mm_crc32_u64(c3, w3);
            c4 = _mm_crc32_u64(c4, w4);
            c5 = _mm_crc32_u64(c5, w5);
            p += 8;
        } while (p < end);
        c = apply_shift(shift_long, (uint32_t)c0) ^ (uint32_t)c1;
        c = apply_shift(shift_long, (uint32_t)c) ^ (uint32_t)c2;
        c = apply_shift(shift_long, (uint32_t)c) ^ (uint32_t)c3;
        c = apply_shift(shift_long, (uint32_t)c) ^ (uint32_t)c4;
        c = apply_shift(shift_long, (uint32_t)c) ^ (uint32_t)c5;
        p += 5 * (size_t)CKK_LONG;
        n -= 6 * (size_t)CKK_LONG;
    }
    while (n >= 3 * (size_t)CKK_SHORT) {
        uint64_t c0 = c, c1 = 0, c2 = 0;
        const uint8_t *end = p + CKK_SHORT;
        do {
            uint64_t w0, w1, w2;
            memcpy(&w0, p, 8);
            memcpy(&w1, p + CKK_SHORT, 8);
            memcpy(&w2, p + 2 * CKK_SHORT, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
            p += 8;
        } while (p < end);
        c = apply_shift(shift_short, (uint32_t)c0) ^ (uint32_t)c1;
        c = apply_shift(shift_short, (uint32_t)c) ^ (uint32_t)c2;
        p += 2 * (size_t)CKK_SHORT;
        n -= 3 * (size_t)CKK_SHORT;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}

#define CKK_CLMUL_TARGET __attribute__((target("pclmul,sse4.2")))

/* x (one 128-bit lane) folded forward onto `next` with constants k. */
CKK_CLMUL_TARGET static inline __m128i clmul_fold(__m128i x, __m128i k, __m128i next) {
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next);
}

/* Four consecutive 128-bit lanes (lowest address first) reduced to the CRC
 * register value they stand for: the first three folded onto the last, whose
 * 16 bytes the crc32 instruction then finishes (everything before is zeros). */
CKK_CLMUL_TARGET static inline uint32_t reduce_lanes(__m128i x0, __m128i x1, __m128i x2, __m128i x3) {
    __m128i v = clmul_fold(x0, _mm_set_epi64x((long long)fold_384[1], (long long)fold_384[0]), x3);
    v = clmul_fold(x1, _mm_set_epi64x((long long)fold_256[1], (long long)fold_256[0]), v);
    v = clmul_fold(x2, _mm_set_epi64x((long long)fold_128[1], (long long)fold_128[0]), v);
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(v));
    return (uint32_t)_mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(v, 1));
}

#define CKK_FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

/* x folded forward onto `next`: clmul(low halves) ^ clmul(high halves) ^ next, per 128-bit lane. */
CKK_FOLD_TARGET static inline __m512i fold512(__m512i x, __m512i k, __m512i next) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), next, 0x96);
}

/* Carry-less multiply folding over 256-byte blocks (four 512-bit accumulators),
 * reduced to one 128-bit lane that the crc32 instruction finishes; the tail
 * goes to hardware_raw. Requires n >= 256. Register in and out (not inverted). */
CKK_FOLD_TARGET static uint32_t fold_raw(uint32_t crc, const uint8_t *p, size_t n) {
    __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64);
    __m512i x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
    /* A starting register value is the same as XORing it into the first 4 message bytes
     * (zero-extended: a plain cast would leave the upper lanes undefined). */
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    p += 256;
    n -= 256;
    const __m512i k2048 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_2048[1], (long long)fold_2048[0]));
    while (n >= 256) {
        x0 = fold512(x0, k2048, _mm512_loadu_si512(p));
        x1 = fold512(x1, k2048, _mm512_loadu_si512(p + 64));
        x2 = fold512(x2, k2048, _mm512_loadu_si512(p + 128));
        x3 = fold512(x3, k2048, _mm512_loadu_si512(p + 192));
        p += 256;
        n -= 256;
    }
    const __m512i k512 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_512[1], (long long)fold_512[0]));
    x1 = fold512(x0, k512, x1);
    x2 = fold512(x1, k512, x2);
    x3 = fold512(x2, k512, x3);
    while (n >= 64) {
        x3 = fold512(x3, k512, _mm512_loadu_si512(p));
        p += 64;
        n -= 64;
    }
    return hardware_raw(reduce_lanes(_mm512_extracti32x4_epi32(x3, 0), _mm512_extracti32x4_epi32(x3, 1),
                                     _mm512_extracti32x4_epi32(x3, 2), _mm512_extracti32x4_epi32(x3, 3)), p, n);
}

/* The same folding with 128-bit PCLMULQDQ over 64-byte blocks (four lane
 * accumulators), for CPUs whose crc32 instruction is slow (AMD Zen 1 and 2
 * issue one every 3 cycles, ~2.7 bytes per cycle; the carry-less multiplies
 * run ~4). The tail goes to hardware_raw. Requires n >= 64. Register in and out. */
CKK_CLMUL_TARGET static uint32_t clmul_raw(uint32_t crc, const uint8_t *p, size_t n) {
    __m128i x0 = _mm_loadu_si128((const __m128i *)p), x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32)), x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)crc));
    p += 64;
    n -= 64;
    const __m128i k512 = _mm_set_epi64x((long long)fold_512[1], (long long)fold_512[0]);
    while (n >= 64) {
        x0 = clmul_fold(x0, k512, _mm_loadu_si128((const __m128i *)p));
        x1 = clmul_fold(x1, k512, _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = clmul_fold(x2, k512, _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = clmul_fold(x3, k512, _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    return hardware_raw(reduce_lanes(x0, x1, x2, x3), p, n);
}
#endif

/* Below this length the folding path's setup costs more than it saves. */
#define CKK_FOLD_MINIMUM 1024
/* Below this length the 128-bit folding path's setup and reduction cost more than they save. */
#define CKK_CLMUL_MINIMUM 256

#if CKK_X86
static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
#endif

/* Runs once, from init_tables: without AVX-512 folding, measures the crc32
 * streams against 128-bit folding on 16 KiB (after a warm-up, the best of
 * seven alternating runs each) and chooses folding only when it is clearly
 * (15%) faster, so that a noisy measurement keeps the streams. ~100 us. */
static void choose_path(void) {
#if CKK_X86
    if (fold_available || !clmul_available) return;
    /* CKPT_CRC32C=sse42 or =clmul skips the measurement (same-run comparisons). */
    const char *forced = getenv("CKPT_CRC32C");
    if (forced && strcmp(forced, "sse42") == 0) return;
    if (forced && strcmp(forced, "clmul") == 0) {
        clmul_chosen = 1;
        return;
    }
    static uint8_t buffer[16384];
    memset(buffer, 0x5A, sizeof buffer);
    volatile uint32_t sink = hardware_raw(0, buffer, sizeof buffer) ^ clmul_raw(0, buffer, sizeof buffer);
    double streams = 1e9, folding = 1e9;
    for (int run = 0; run < 7; run++) {
        double start = seconds_now();
        sink ^= hardware_raw((uint32_t)run, buffer, sizeof buffer);
        double middle = seconds_now();
        sink ^= clmul_raw((uint32_t)run, buffer, sizeof buffer);
        double end = seconds_now();
        if (middle - start < streams) streams = middle - start;
        if (end - middle < folding) folding = end - middle;
    }
    (void)sink;
    clmul_chosen = folding < 0.85 * streams;
#endif
}

uint32_t ckk_crc32c_extend_sse42(uint32_t crc, const void *data, size_t length) {
    ensure_init();
#if CKK_X86
    if (hardware_available) return ~hardware_raw(~crc, (const uint8_t *)data, length);
#endif
    return ~portable_raw(~crc, (const uint8_t *)data, length);
}

uint32_t ckk_crc32c_extend_hardware(uint32_t crc, const void *data, size_t length) {
    ensure_init();
#if CKK_X86
    if (fold_available && length >= CKK_FOLD_MINIMUM) return ~fold_raw(~crc, (const uint8_t *)data, length);
    if (clmul_chosen && length >= CKK_CLMUL_MINIMUM) return ~clmul_raw(~crc, (const uint8_t *)data, length);
    if (hardware_available) return ~hardware_raw(~crc, (const uint8_t *)data, length);
#endif
    return ~portable_raw(~crc, (const uint8_t *)data, length);
}

uint32_t ckk_crc32c_extend(uint32_t crc, const void *data, size_t length) {
    return ckk_crc32c_extend_hardware(crc, data, length);
}

int ckk_crc32c_hardware_available(void) {
    ensure_init();
    return hardware_available;
}

int ckk_crc32c_folding_available(void) {
    ensure_init();
    return fold_available;
}

uint32_t ckk_crc32c_extend_clmul(uint32_t crc, const void *data, size_t length) {
    ensure_init();
#if CKK_X86
    if (clmul_available && length >= 64) return ~clmul_raw(~crc, (const uint8_t *)data, length);
    if (hardware_available) return ~hardware_raw(~crc, (const uint8_t *)data, length);
#endif
    return ~portable_raw(~crc, (const uint8_t *)data, length);
}

int ckk_crc32c_clmul_available(void) {
    ensure_init();
    return clmul_available;
}

int ckk_crc32c_clmul_chosen(void) {
    ensure_init();
    return clmul_chosen;
}

uint32_t ckk_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2) {
    /* 0 * x^n = 0: combining onto a zero CRC (the usual start of a fold) needs no powers. */
    if (crc1 == 0) return crc2;
    ensure_init();
    return multiply_mod_poly(x_pow_8n(length2), crc1) ^ crc2;
}

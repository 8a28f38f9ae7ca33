/*
 * Byte shuffle / unshuffle. The SIMD path handles element sizes 2, 4, 8 and 16
 * sixteen elements at a time with SSE2 (part of the x86-64 baseline, so no
 * detection is needed): log2(size) rounds of "split even and odd bytes" turn
 * 16 elements into one 16-byte vector per byte position. Unshuffle runs the
 * inverse rounds (interleave). Other sizes, the tail of fewer than sixteen
 * elements, and non-x86 CPUs use the scalar loops.
 */
#include "CCheckpointKernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#define CKK_SSE2 1
#endif

static void shuffle_scalar_range(uint8_t *dst, const uint8_t *src, size_t count, size_t size, size_t first, size_t end) {
    for (size_t i = first; i < end; i++)
        for (size_t k = 0; k < size; k++)
            dst[k * count + i] = src[i * size + k];
}

static void unshuffle_scalar_range(uint8_t *dst, const uint8_t *src, size_t count, size_t size, size_t first, size_t end) {
    for (size_t i = first; i < end; i++)
        for (size_t k = 0; k < size; k++)
            dst[i * size + k] = src[k * count + i];
}

void ckk_shuffle_scalar(void *dst, const void *src, size_t length, size_t size) {
    if (size <= 1) { memcpy(dst, src, length); return; }
    size_t count = length / size;
    shuffle_scalar_range(dst, src, count, size, 0, count);
    memcpy((uint8_t *)dst + count * size, (const uint8_t *)src + count * size, length - count * size);
}

void ckk_unshuffle_scalar(void *dst, const void *src, size_t length, size_t size) {
    if (size <= 1) { memcpy(dst, src, length); return; }
    size_t count = length / size;
    unshuffle_scalar_range(dst, src, count, size, 0, count);
    memcpy((uint8_t *)dst + count * size, (const uint8_t *)src + count * size, length - count * size);
}

#if CKK_SSE2
/* One round: vectors (v[2j], v[2j+1]) -> even bytes into v'[j], odd bytes into v'[S/2 + j]. */
#define CKK_SPLIT_ROUND(S)                                                                        \
    do {                                                                                          \
        __m128i t[S];                                                                             \
        for (int j = 0; j < (S) / 2; j++) {                                                       \
            __m128i a = v[2 * j], b = v[2 * j + 1];                                               \
            t[j] = _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low));                \
            t[(S) / 2 + j] = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));        \
        }                                                                                         \
        for (int j = 0; j < (S); j++) v[j] = t[j];                                                \
    } while (0)

/* The inverse round: v'[2j] and v'[2j+1] interleave v[j] (even bytes) with v[S/2 + j] (odd bytes). */
#define CKK_JOIN_ROUND(S)                                                                         \
    do {                                                                                          \
        __m128i t[S];                                                                             \
        for (int j = 0; j < (S) / 2; j++) {                                                       \
            t[2 * j] = _mm_unpacklo_epi8(v[j], v[(S) / 2 + j]);                                   \
            t[2 * j + 1] = _mm_unpackhi_epi8(v[j], v[(S) / 2 + j]);                               \
        }                                                                                         \
        for (int j = 0; j < (S); j++) v[j] = t[j];                                                \
    } while (0)

/* Elements [first, end) of `count`; `first` is a multiple of 16. */
#define CKK_DEFINE_SIMD(S, ROUNDS)                                                                \
    static void shuffle_simd_##S(uint8_t *dst, const uint8_t *src, size_t count, size_t first, size_t end) { \
        const __m128i low = _mm_set1_epi16(0x00FF);                                               \
        size_t blocks = end / 16;                                                                 \
        for (size_t blk = first / 16; blk < blocks; blk++) {                                      \
            __m128i v[S];                                                                         \
            const uint8_t *s = src + blk * 16 * (S);                                              \
            for (int j = 0; j < (S); j++) v[j] = _mm_loadu_si128((const __m128i *)(s + 16 * j));  \
            for (int r = 0; r < (ROUNDS); r++) CKK_SPLIT_ROUND(S);                                \
            for (int k = 0; k < (S); k++)                                                         \
                _mm_storeu_si128((__m128i *)(dst + k * count + blk * 16), v[k]);                  \
        }                                                                                         \
        shuffle_scalar_range(dst, src, count, (S), blocks * 16 > first ? blocks * 16 : first, end); \
    }                                                                                             \
    static void unshuffle_simd_##S(uint8_t *dst, const uint8_t *src, size_t count, size_t first, size_t end) { \
        size_t blocks = end / 16;                                                                 \
        for (size_t blk = first / 16; blk < blocks; blk++) {                                      \
            __m128i v[S];                                                                         \
            for (int k = 0; k < (S); k++)                                                         \
                v[k] = _mm_loadu_si128((const __m128i *)(src + k * count + blk * 16));            \
            for (int r = 0; r < (ROUNDS); r++) CKK_JOIN_ROUND(S);                                 \
            uint8_t *d = dst + blk * 16 * (S);                                                    \
            for (int j = 0; j < (S); j++) _mm_storeu_si128((__m128i *)(d + 16 * j), v[j]);        \
        }                                                                                         \
        unshuffle_scalar_range(dst, src, count, (S), blocks * 16 > first ? blocks * 16 : first, end); \
    }

CKK_DEFINE_SIMD(2, 1)
CKK_DEFINE_SIMD(4, 2)
CKK_DEFINE_SIMD(8, 3)
CKK_DEFINE_SIMD(16, 4)
#endif

/* Shuffles (or unshuffles) elements [first, end) of a buffer of `count` whole elements. */
static void shuffle_range(uint8_t *dst, const uint8_t *src, size_t count, size_t size, size_t first, size_t end, int inverse) {
#if CKK_SSE2
    switch (size) {
    case 2: inverse ? unshuffle_simd_2(dst, src, count, first, end) : shuffle_simd_2(dst, src, count, first, end); return;
    case 4: inverse ? unshuffle_simd_4(dst, src, count, first, end) : shuffle_simd_4(dst, src, count, first, end); return;
    case 8: inverse ? unshuffle_simd_8(dst, src, count, first, end) : shuffle_simd_8(dst, src, count, first, end); return;
    case 16: inverse ? unshuffle_simd_16(dst, src, count, first, end) : shuffle_simd_16(dst, src, count, first, end); return;
    default: break;
    }
#endif
    if (inverse) unshuffle_scalar_range(dst, src, count, size, first, end);
    else shuffle_scalar_range(dst, src, count, size, first, end);
}

void ckk_shuffle(void *dst, const void *src, size_t length, size_t size) {
    if (size <= 1) { memcpy(dst, src, length); return; }
    size_t count = length / size;
    shuffle_range(dst, src, count, size, 0, count, 0);
    memcpy((uint8_t *)dst + count * size, (const uint8_t *)src + count * size, length - count * size);
}

void ckk_unshuffle(void *dst, const void *src, size_t length, size_t size) {
    if (size <= 1) { memcpy(dst, src, length); return; }
    size_t count = length / size;
    shuffle_range(dst, src, count, size, 0, count, 1);
    memcpy((uint8_t *)dst + count * size, (const uint8_t *)src + count * size, length - count * size);
}

/* Elements per fused step: 1024 elements of up to 16 bytes stay in L1/L2
 * between the CRC pass and the shuffle pass. A multiple of 16 (the SIMD block). */
#define CKK_FUSED_ELEMENTS 1024

uint32_t ckk_shuffle_crc32c(void *dst, const void *src, size_t length, size_t size, uint32_t crc) {
    if (size <= 1) {
        memcpy(dst, src, length);
        return ckk_crc32c_extend(crc, src, length);
    }
    const uint8_t *s = src;
    size_t count = length / size;
    for (size_t first = 0; first < count; first += CKK_FUSED_ELEMENTS) {
        size_t end = first + CKK_FUSED_ELEMENTS < count ? first + CKK_FUSED_ELEMENTS : count;
        crc = ckk_crc32c_extend(crc, s + first * size, (end - first) * size);
        shuffle_range(dst, s, count, size, first, end, 0);
    }
    size_t tail = length - count * size;
    memcpy((uint8_t *)dst + count * size, s + count * size, tail);
    return ckk_crc32c_extend(crc, s + count * size, tail);
}

uint32_t ckk_unshuffle_crc32c(void *dst, const void *src, size_t length, size_t size, uint32_t crc) {
    if (size <= 1) {
        memcpy(dst, src, length);
        return ckk_crc32c_extend(crc, dst, length);
    }
    uint8_t *d = dst;
    size_t count = length / size;
    for (size_t first = 0; first < count; first += CKK_FUSED_ELEMENTS) {
        size_t end = first + CKK_FUSED_ELEMENTS < count ? first + CKK_FUSED_ELEMENTS : count;
        shuffle_range(d, src, count, size, first, end, 1);
        crc = ckk_crc32c_extend(crc, d + first * size, (end - first) * size);
    }
    size_t tail = length - count * size;
    memcpy(d + count * size, (const uint8_t *)src + count * size, tail);
    return ckk_crc32c_extend(crc, d + count * size, tail);
}

/* ---- Plane split / join, optionally with the one-bit rotation of filter 2 ----
 *
 * Split: byte k of element i (after rotating the element, read as a
 * little-endian integer, left by one bit when `rotate`) goes to planes[k][i].
 * Join is the inverse. Plane pointers are independent, so a decoder can join
 * planes that live in different buffers (stored bytes, scratch) straight into
 * the caller's memory.
 */

static inline uint64_t element_load(const uint8_t *p, size_t size) {
    uint64_t v = 0;
    for (size_t k = 0; k < size; k++) v |= (uint64_t)p[k] << (8 * k);
    return v;
}

static inline uint64_t rotl_bits(uint64_t v, size_t bits) {
    uint64_t mask = bits == 64 ? ~0ull : ((1ull << bits) - 1);
    return ((v << 1) | (v >> (bits - 1))) & mask;
}

static inline uint64_t rotr_bits(uint64_t v, size_t bits) {
    uint64_t mask = bits == 64 ? ~0ull : ((1ull << bits) - 1);
    return ((v >> 1) | (v << (bits - 1))) & mask;
}

static void split_scalar_range(uint8_t *const planes[], const uint8_t *src, size_t size, int rotate, size_t first, size_t end) {
    for (size_t i = first; i < end; i++) {
        if (rotate) {
            uint64_t v = rotl_bits(element_load(src + i * size, size), 8 * size);
            for (size_t k = 0; k < size; k++) planes[k][i] = (uint8_t)(v >> (8 * k));
        } else {
            for (size_t k = 0; k < size; k++) planes[k][i] = src[i * size + k];
        }
    }
}

static void join_scalar_range(uint8_t *dst, const uint8_t *const planes[], size_t size, int rotate, size_t first, size_t end) {
    for (size_t i = first; i < end; i++) {
        if (rotate) {
            uint64_t v = 0;
            for (size_t k = 0; k < size; k++) v |= (uint64_t)planes[k][i] << (8 * k);
            v = rotr_bits(v, 8 * size);
            for (size_t k = 0; k < size; k++) dst[i * size + k] = (uint8_t)(v >> (8 * k));
        } else {
            for (size_t k = 0; k < size; k++) dst[i * size + k] = planes[k][i];
        }
    }
}

#if CKK_SSE2
static inline __m128i rotl1_vec(__m128i x, int size) {
    switch (size) {
    case 2: return _mm_or_si128(_mm_slli_epi16(x, 1), _mm_srli_epi16(x, 15));
    case 4: return _mm_or_si128(_mm_slli_epi32(x, 1), _mm_srli_epi32(x, 31));
    default: return _mm_or_si128(_mm_slli_epi64(x, 1), _mm_srli_epi64(x, 63));
    }
}

static inline __m128i rotr1_vec(__m128i x, int size) {
    switch (size) {
    case 2: return _mm_or_si128(_mm_srli_epi16(x, 1), _mm_slli_epi16(x, 15));
    case 4: return _mm_or_si128(_mm_srli_epi32(x, 1), _mm_slli_epi32(x, 31));
    default: return _mm_or_si128(_mm_srli_epi64(x, 1), _mm_slli_epi64(x, 63));
    }
}

#define CKK_DEFINE_PLANES_SIMD(S, ROUNDS)                                                         \
    static void split_simd_##S(uint8_t *const planes[], const uint8_t *src, int rotate, size_t first, size_t end) { \
        const __m128i low = _mm_set1_epi16(0x00FF);                                               \
        size_t blocks = end / 16;                                                                 \
        for (size_t blk = first / 16; blk < blocks; blk++) {                                      \
            __m128i v[S];                                                                         \
            const uint8_t *s = src + blk * 16 * (S);                                              \
            for (int j = 0; j < (S); j++) v[j] = _mm_loadu_si128((const __m128i *)(s + 16 * j));  \
            if (rotate) for (int j = 0; j < (S); j++) v[j] = rotl1_vec(v[j], (S));                \
            for (int r = 0; r < (ROUNDS); r++) CKK_SPLIT_ROUND(S);                                \
            for (int k = 0; k < (S); k++) _mm_storeu_si128((__m128i *)(planes[k] + blk * 16), v[k]); \
        }                                                                                         \
        split_scalar_range(planes, src, (S), rotate, blocks * 16 > first ? blocks * 16 : first, end); \
    }                                                                                             \
    static void join_simd_##S(uint8_t *dst, const uint8_t *const planes[], int rotate, size_t first, size_t end) { \
        size_t blocks = end / 16;                                                                 \
        for (size_t blk = first / 16; blk < blocks; blk++) {                                      \
            __m128i v[S];                                                                         \
            for (int k = 0; k < (S); k++) v[k] = _mm_loadu_si128((const __m128i *)(planes[k] + blk * 16)); \
            for (int r = 0; r < (ROUNDS); r++) CKK_JOIN_ROUND(S);                                 \
            if (rotate) for (int j = 0; j < (S); j++) v[j] = rotr1_vec(v[j], (S));                \
            uint8_t *d = dst + blk * 16 * (S);                                                    \
            for (int j = 0; j < (S); j++) _mm_storeu_si128((__m128i *)(d + 16 * j), v[j]);        \
        }                                                                                         \
        join_scalar_range(dst, planes, (S), rotate, blocks * 16 > first ? blocks * 16 : first, end); \
    }

CKK_DEFINE_PLANES_SIMD(2, 1)
CKK_DEFINE_PLANES_SIMD(4, 2)
CKK_DEFINE_PLANES_SIMD(8, 3)
#endif

static void split_range(uint8_t *const planes[], const uint8_t *src, size_t size, int rotate, size_t first, size_t end) {
#if CKK_SSE2
    switch (size) {
    case 2: split_simd_2(planes, src, rotate, first, end); return;
    case 4: split_simd_4(planes, src, rotate, first, end); return;
    case 8: split_simd_8(planes, src, rotate, first, end); return;
    default: break;
    }
#endif
    split_scalar_range(planes, src, size, rotate, first, end);
}

static void join_range(uint8_t *dst, const uint8_t *const planes[], size_t size, int rotate, size_t first, size_t end) {
#if CKK_SSE2
    switch (size) {
    case 2: join_simd_2(dst, planes, rotate, first, end); return;
    case 4: join_simd_4(dst, planes, rotate, first, end); return;
    case 8: join_simd_8(dst, planes, rotate, first, end); return;
    default: break;
    }
#endif
    join_scalar_range(dst, planes, size, rotate, first, end);
}

uint32_t ckk_split_planes_crc32c(uint8_t *const planes[], const void *src, size_t count, size_t size, int rotate, uint32_t crc) {
    const uint8_t *s = src;
    if (size == 1) {
        memcpy(planes[0], s, count);
        return ckk_crc32c_extend(crc, s, count);
    }
    for (size_t first = 0; first < count; first += CKK_FUSED_ELEMENTS) {
        size_t end = first + CKK_FUSED_ELEMENTS < count ? first + CKK_FUSED_ELEMENTS : count;
        crc = ckk_crc32c_extend(crc, s + first * size, (end - first) * size);
        split_range(planes, s, size, rotate, first, end);
    }
    return crc;
}

uint32_t ckk_join_planes_crc32c(void *dst, const uint8_t *const planes[], size_t count, size_t size, int rotate, uint32_t crc, int checksum) {
    uint8_t *d = dst;
    if (size == 1) {
        memcpy(d, planes[0], count);
        return checksum ? ckk_crc32c_extend(crc, d, count) : 0;
    }
    for (size_t first = 0; first < count; first += CKK_FUSED_ELEMENTS) {
        size_t end = first + CKK_FUSED_ELEMENTS < count ? first + CKK_FUSED_ELEMENTS : count;
        join_range(d, planes, size, rotate, first, end);
        if (checksum) crc = ckk_crc32c_extend(crc, d + first * size, (end - first) * size);
    }
    return checksum ? crc : 0;
}

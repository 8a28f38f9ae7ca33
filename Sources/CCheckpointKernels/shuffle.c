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

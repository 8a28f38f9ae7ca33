/*
 * A copy into memory that will not be read again soon: non-temporal stores.
 *
 * Pure computation on caller-owned memory; no allocation.
 */
#include "CCheckpointKernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>

void ckk_copy_streaming(void *dst, const void *src, size_t length) {
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (length < CKK_COPY_STREAMING_MINIMUM) {
        memcpy(d, s, length);
        return;
    }
    /* Up to the destination's next 64-byte line with an ordinary copy, then whole lines
     * with streaming stores (SSE2: every x86-64 CPU has them), then the tail. */
    size_t head = (64 - ((uintptr_t)d & 63)) & 63;
    memcpy(d, s, head);
    d += head;
    s += head;
    length -= head;
    size_t body = length & ~(size_t)63;
    for (size_t i = 0; i < body; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    /* Streaming stores are weakly ordered: make them visible before anything after the call. */
    _mm_sfence();
    memcpy(d + body, s + body, length - body);
}

#else

void ckk_copy_streaming(void *dst, const void *src, size_t length) { memcpy(dst, src, length); }

#endif

/*
 * Hot kernels for the checkpoint engine: CRC32C and byte shuffle.
 *
 * Everything here is pure computation over caller-owned memory: no allocation,
 * no I/O, thread-safe. The fastest implementation the CPU supports is chosen at
 * run time (cpuid), never by a build flag.
 */
#ifndef CCHECKPOINT_KERNELS_H
#define CCHECKPOINT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF) ----
 *
 * All functions take and return *finished* CRC values, so
 *   ckk_crc32c_extend(ckk_crc32c_extend(0, a, n), b, m) == CRC32C(a || b)
 * and ckk_crc32c_extend(0, "123456789", 9) == 0xE3069283.
 */

/** Extends `crc` over `length` bytes with the fastest path this CPU has. */
uint32_t ckk_crc32c_extend(uint32_t crc, const void *data, size_t length);

/** The portable path (slicing-by-8 tables); same results on every CPU. */
uint32_t ckk_crc32c_extend_portable(uint32_t crc, const void *data, size_t length);

/** The best hardware path: carry-less multiply folding (AVX-512 VPCLMULQDQ)
 *  for buffers of 1 KiB and more when the CPU has it, else the SSE4.2 path;
 *  the portable path on CPUs with neither. */
uint32_t ckk_crc32c_extend_hardware(uint32_t crc, const void *data, size_t length);

/** The SSE4.2 path alone (interleaved `crc32` streams); portable without SSE4.2. */
uint32_t ckk_crc32c_extend_sse42(uint32_t crc, const void *data, size_t length);

/** 1 when the SSE4.2 `crc32` instruction is used, 0 otherwise. */
int ckk_crc32c_hardware_available(void);

/** 1 when the AVX-512 VPCLMULQDQ folding path is used for large buffers. */
int ckk_crc32c_folding_available(void);

/** CRC32C(A || B) from crc1 = CRC32C(A), crc2 = CRC32C(B) and length2 = |B|.
 *  O(log length2); touches no data. */
uint32_t ckk_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2);

/* ---- Byte shuffle (HDF5 / Blosc "shuffle") ----
 *
 * With n = length / elementSize whole elements, shuffle writes byte k of
 * element i to dst[k * n + i]; the length % elementSize trailing bytes are
 * copied unchanged to the end. unshuffle is the exact inverse. elementSize is
 * 1...16 (1 is a plain copy). src and dst must not overlap.
 */
void ckk_shuffle(void *dst, const void *src, size_t length, size_t elementSize);
void ckk_unshuffle(void *dst, const void *src, size_t length, size_t elementSize);

/** ckk_shuffle fused with the CRC32C of `src`: returns ckk_crc32c_extend(crc, src, length).
 *  Works in cache-sized steps so the source is read from memory once. */
uint32_t ckk_shuffle_crc32c(void *dst, const void *src, size_t length, size_t elementSize, uint32_t crc);

/** ckk_unshuffle fused with the CRC32C of the output: returns ckk_crc32c_extend(crc, dst, length). */
uint32_t ckk_unshuffle_crc32c(void *dst, const void *src, size_t length, size_t elementSize, uint32_t crc);

/** The scalar reference implementations, for tests. */
void ckk_shuffle_scalar(void *dst, const void *src, size_t length, size_t elementSize);
void ckk_unshuffle_scalar(void *dst, const void *src, size_t length, size_t elementSize);

/** The number of CPUs this process may run on (its affinity mask), at least 1. */
int ckk_available_cpus(void);

#ifdef __cplusplus
}
#endif

#endif

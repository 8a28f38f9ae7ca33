/*
 * Hot kernels for the checkpoint engine: CRC32C, byte shuffle, byte planes and
 * Huffman coding, and a streaming copy.
 *
 * Everything here is pure computation over caller-owned memory: no allocation,
 * no I/O, thread-safe. Where a kernel has several implementations, the fastest
 * the CPU supports is chosen at run time (cpuid), never by a build flag.
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
 *  for buffers of 1 KiB and more when the CPU has it; else 128-bit PCLMULQDQ
 *  folding for buffers of 256 bytes and more when a start-up measurement found
 *  it faster than the `crc32` instruction (AMD Zen 1/2); else the SSE4.2 path;
 *  the portable path on CPUs with neither. */
uint32_t ckk_crc32c_extend_hardware(uint32_t crc, const void *data, size_t length);

/** The SSE4.2 path alone (interleaved `crc32` streams); portable without SSE4.2. */
uint32_t ckk_crc32c_extend_sse42(uint32_t crc, const void *data, size_t length);

/** 1 when the SSE4.2 `crc32` instruction is used, 0 otherwise. */
int ckk_crc32c_hardware_available(void);

/** 1 when the AVX-512 VPCLMULQDQ folding path is used for large buffers. */
int ckk_crc32c_folding_available(void);

/** The 128-bit PCLMULQDQ folding path alone for 64 bytes and more (the SSE4.2
 *  path below that, or without PCLMULQDQ; portable without SSE4.2). */
uint32_t ckk_crc32c_extend_clmul(uint32_t crc, const void *data, size_t length);

/** 1 when the CPU has PCLMULQDQ and SSE4.2 (ckk_crc32c_extend_clmul folds). */
int ckk_crc32c_clmul_available(void);

/** 1 when ckk_crc32c_extend_hardware uses 128-bit folding (measured faster here). */
int ckk_crc32c_clmul_chosen(void);

/* ---- Copy ---- */

/** Copies below this many bytes are ordinary ones. */
#define CKK_COPY_STREAMING_MINIMUM 4096

/** memcpy(dst, src, length) for destinations that will not be read again soon (a
 *  download into a large tensor): whole 64-byte lines of `dst` are written with
 *  non-temporal stores, which skip reading each line into the cache before
 *  overwriting it, then fenced. Ordinary memcpy below CKK_COPY_STREAMING_MINIMUM
 *  bytes and off x86-64. The ranges must not overlap. */
void ckk_copy_streaming(void *dst, const void *src, size_t length);

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

/* ---- Plane split / join (filters 1 and 2 of FORMAT.md §3.4, §3.4.1) ----
 *
 * Split: byte k of element i of `src` (count elements of `size` bytes, 1...16)
 * goes to planes[k][i]; with `rotate` (size 2, 4 or 8 only) each element, read
 * as a little-endian integer, is first rotated left by one bit, moving the
 * sign bit of a float next to its mantissa. Returns ckk_crc32c_extend(crc, src, count*size).
 * Join is the inverse, writing dst; returns the CRC32C of dst extended from
 * `crc` when `checksum` is non-zero, else 0. Plane buffers must not overlap dst.
 */
uint32_t ckk_split_planes_crc32c(uint8_t *const planes[], const void *src, size_t count, size_t size, int rotate, uint32_t crc);
uint32_t ckk_join_planes_crc32c(void *dst, const uint8_t *const planes[], size_t count, size_t size, int rotate, uint32_t crc, int checksum);

/* ---- Canonical Huffman coding of bytes (FORMAT.md §3.10) ---- */

#define CKK_HUFFMAN_MAX_LENGTH 11

/* Errors of the decoders (negative). */
#define CKK_ERR_TRUNCATED (-1)      /* a segment or stream extends past the stored bytes */
#define CKK_ERR_BAD_SEGMENT (-2)    /* unknown segment kind, zero length, over-long repeat */
#define CKK_ERR_LENGTH (-3)         /* segments do not decode to exactly the chunk's length */
#define CKK_ERR_BAD_TABLE (-4)      /* code lengths that are not a complete prefix code of 1...11 bits */
#define CKK_ERR_CORRUPT_STREAM (-5) /* a Huffman stream that does not end exactly at its last code */

/** Whether the Huffman coder's BMI2 variant is in use (1) or the baseline one (0). `enable`
 *  1 selects BMI2 where the CPU has it, 0 the baseline, -1 only asks. Both give the same bytes;
 *  for tests and same-run comparisons. */
int ckk_huffman_set_bmi2(int enable);

/** Counts each byte value of `data`. */
void ckk_histogram(uint32_t counts[256], const void *data, size_t length);

/** Whether ckk_histogram counts peaked data (a few values most of the time) with its AVX-512
 *  path (1) or always with the scalar one (0). `enable` 1 selects the vector path where the CPU
 *  has it (AVX-512 F, BW, VBMI2), 0 the scalar one, -1 only asks. Both give the same counts;
 *  for tests and same-run comparisons. */
int ckk_histogram_set_vector(int enable);

/** The histogram of a sample of `data`: the `block` bytes at every multiple of `stride`
 *  (`stride` ≥ `block` > 0) whose block lies whole inside `length`. Returns the bytes sampled. */
size_t ckk_histogram_sample(uint32_t counts[256], const void *data, size_t length, size_t block, size_t stride);

/** Code lengths (0 = unused, else 1...11) of a length-limited Huffman code for
 *  `counts`, deterministic on every platform. Returns the number of symbols
 *  used; when fewer than 2, `lengths` is all zero. */
int ckk_huffman_lengths(uint8_t lengths[256], const uint32_t counts[256]);

/** The canonical codes of `lengths`, bit-reversed (the order they are written in).
 *  Returns 0, or -1 when the lengths are not a complete prefix code of 1...11 bits. */
int ckk_huffman_codes(uint16_t codes[256], const uint8_t lengths[256]);

/** The histograms of the four quarters of `data` (quarter = ceil(length / 4) bytes, the
 *  last quarter maybe shorter), the four streams of a Huffman segment: 4 × 256
 *  counts, quarter k's count of byte s at counts[256 * k + s]. */
void ckk_histogram_quarters(uint32_t *counts, const void *data, size_t length);

/** Entries (uint32_t) of the Huffman encoder's pair table: 512 KiB (the codes of every two
 *  symbols, then their lengths; only the entries of symbols used are touched). */
#define CKK_HUFFMAN_PAIR_ENTRIES 131072

/** Writes the body of a Huffman segment (table, four stream sizes, four streams)
 *  for `length` bytes whose quarter histograms (as ckk_histogram_quarters) are `counts`. Returns the bytes
 *  written, or 0 when they (plus 8 bytes of slack per stream) exceed `capacity`.
 *  `pairs`, when not NULL, is the caller's workspace of CKK_HUFFMAN_PAIR_ENTRIES entries
 *  for coding two symbols a lookup where the segment is long enough to pay for filling it
 *  (same bytes either way; NULL codes one symbol at a time). */
size_t ckk_huffman_encode(uint8_t *dst, size_t capacity, const void *src, size_t length,
                          const uint32_t *counts, const uint8_t lengths[256], uint32_t *pairs);

/** When ckk_huffman_encode uses its pair table: 1 where it pays (the default), 0 never,
 *  2 always (tests: short inputs too). `setting` 0...2 sets it, -1 only asks; returns the
 *  setting in force. Every setting gives the same bytes; for tests and same-run comparisons. */
int ckk_huffman_set_pairs(int setting);

/** Decodes the body of a Huffman segment into exactly `length` bytes, reading at
 *  most `srcLength` bytes and setting `*consumed`. Returns 0 or a CKK_ERR_ code.
 *  Never reads or writes outside the given buffers, whatever the input. */
int ckk_huffman_decode(void *dst, size_t length, const uint8_t *src, size_t srcLength, size_t *consumed);

/* ---- The byte-plane codec (codec 5, FORMAT.md §3.10) ---- */

#define CKK_PLANES_MAX_ELEMENT 16
#define CKK_PLANES_MAX_REPEAT (1u << 20)

#define CKK_PLANES_SLACK 64

/** Encodes one chunk of `length` raw bytes: the filter (element `size` 1...16,
 *  1 meaning none; `rotate` for filter 2) and then the plane segments into
 *  `dst`, which has `capacity` writable bytes, at least `length + CKK_PLANES_SLACK`
 *  (the Huffman writer stores 8 bytes at a time). `scratch` holds `length`
 *  bytes; `pairs` is NULL or CKK_HUFFMAN_PAIR_ENTRIES entries of workspace for the
 *  Huffman encoder (faster, same bytes). Sets *rawCRC to the CRC32C of `src`. Returns
 *  the stored size, or 0 when it would not be smaller than `length` (the chunk is then stored raw). */
size_t ckk_planes_encode(uint8_t *dst, size_t capacity, const void *src, size_t length, size_t size, int rotate,
                         uint8_t *scratch, uint32_t *pairs, uint32_t *rawCRC);

/** Whether ckk_planes_encode splits the planes below the top one straight into their place
 *  in `dst` (1, the default: no copy when they are stored raw) or into `scratch` (0). `enable`
 *  1 or 0 sets it, -1 only asks. Both give the same bytes; for tests and same-run comparisons. */
int ckk_planes_set_in_place(int enable);

/** Decodes one stored chunk into exactly `length` bytes at `dst`, undoing the
 *  filter; `scratch` holds `length` bytes (unused without a filter). When
 *  `checksum`, sets *rawCRC to the CRC32C of the output. Returns 0 or a CKK_ERR_ code. */
int ckk_planes_decode(void *dst, size_t length, const uint8_t *src, size_t srcLength, size_t size, int rotate,
                      uint8_t *scratch, uint32_t *rawCRC, int checksum);

/** The number of CPUs this process may run on (its affinity mask), at least 1. */
int ckk_available_cpus(void);

/** Starts writing back the dirty page-cache pages of `fd` in [offset, offset + length) without
 *  waiting for them (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`): a durable save's final
 *  fdatasync then finds most of the file already on its way to the disk. No durability promise
 *  of its own. Returns 0, or -1 with errno; 0 and nothing done where the call does not exist. */
int ckk_start_writeback(int fd, int64_t offset, int64_t length);

/** Writes back and waits for the dirty data of the file system holding `fd`
 *  (syncfs; sync elsewhere): for benchmarks that must start from a quiet disk. Returns 0, or -1 with errno. */
int ckk_sync_file_system(int fd);

#ifdef __cplusplus
}
#endif

#endif

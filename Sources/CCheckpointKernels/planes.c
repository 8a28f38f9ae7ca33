/*
 * The byte-plane codec (FORMAT.md §3.10): a chunk's filtered bytes are cut into
 * regions (one per byte plane, then the trailing bytes), and each region is
 * written as segments: raw, a repeated byte, or canonical Huffman.
 *
 * Encode reads the caller's chunk once (split into planes fused with its
 * CRC32C); decode joins the planes straight into the caller's memory, reading
 * raw planes in place from the stored bytes (fused with the CRC32C of the
 * output). Scratch: one chunk-sized buffer per thread, owned by the caller.
 */
#include "CCheckpointKernels.h"

#include <string.h>

#define KIND_RAW 0
#define KIND_REPEAT 1
#define KIND_HUFFMAN 2
#define SEGMENT_HEADER 5

static inline void store32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t load32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Bits the Huffman code of `counts` would spend (0 when fewer than two symbols occur). */
static uint64_t coded_bits(const uint32_t counts[256], uint8_t lengths[256]) {
    if (ckk_huffman_lengths(lengths, counts) < 2) return 0;
    uint64_t bits = 0;
    for (int s = 0; s < 256; s++) bits += (uint64_t)counts[s] * lengths[s];
    return bits;
}

/* A region is worth coding only when it saves at least 1/CKK_PLANES_MIN_SAVING of its size:
 * below that, the decode time of a Huffman pass costs more than the bytes are worth. */
#define MIN_SAVING_SHIFT 5
#define SAMPLE_THRESHOLD (64u << 10)
#define SAMPLE_BLOCK 256u
#define SAMPLE_STRIDE 4096u

/* Huffman segments cover at most this many bytes of a plane: each gets its own
 * code, so the code follows the data (measured on trained MiniLM weights with
 * 4 MiB chunks: bf16 1.4953 with one code per plane, 1.5032 with 256 KiB pieces;
 * fp32 1.2119 and 1.2205). */
#define PIECE_SIZE (256u << 10)

static size_t encode_raw(uint8_t *dst, size_t capacity, const uint8_t *region, size_t n) {
    if (SEGMENT_HEADER + n > capacity) return SIZE_MAX;
    dst[0] = KIND_RAW;
    store32le(dst + 1, (uint32_t)n);
    if (dst + SEGMENT_HEADER != region) memcpy(dst + SEGMENT_HEADER, region, n); /* else split there already */
    return SEGMENT_HEADER + n;
}

/* Writes one piece of a region as repeat, Huffman or raw segments. */
static size_t encode_piece(uint8_t *dst, size_t capacity, const uint8_t *region, size_t n, uint32_t *pairs);

/* Whether a region of `n` bytes is written as one raw segment without a look at its
 * pieces: a cheap look first, 1/16 of the region in 256-byte blocks spread over it, says
 * coding would not pay (a decoder then joins it in place). Regions under SAMPLE_THRESHOLD
 * are never decided this way. */
static int sampled_raw(const uint8_t *region, size_t n) {
    if (n < SAMPLE_THRESHOLD) return 0;
    uint32_t counts[256];
    uint8_t lengths[256];
    size_t sampled = ckk_histogram_sample(counts, region, n, SAMPLE_BLOCK, SAMPLE_STRIDE);
    uint64_t bits = coded_bits(counts, lengths);
    return bits > 0 && bits > 8 * (uint64_t)(sampled - (sampled >> MIN_SAVING_SHIFT));
}

/* Writes a region as pieces of at most PIECE_SIZE, each as repeat, Huffman or raw segments. */
static size_t encode_pieces(uint8_t *dst, size_t capacity, const uint8_t *region, size_t n, uint32_t *pairs) {
    size_t pieces = (n + PIECE_SIZE - 1) / PIECE_SIZE;
    size_t written = 0;
    for (size_t i = 0; i < pieces; i++) {
        /* Equal pieces (the first ones one byte longer), so no piece is a small remainder. */
        size_t first = n / pieces * i + (i < n % pieces ? i : n % pieces);
        size_t length = n / pieces + (i < n % pieces ? 1 : 0);
        size_t w = encode_piece(dst + written, capacity - written, region + first, length, pairs);
        if (w == SIZE_MAX) return SIZE_MAX;
        written += w;
    }
    return written;
}

/* Writes one region as segments. Returns bytes written, or SIZE_MAX when it does not fit. */
static size_t encode_region(uint8_t *dst, size_t capacity, const uint8_t *region, size_t n, uint32_t *pairs) {
    if (n == 0) return 0;
    if (sampled_raw(region, n)) return encode_raw(dst, capacity, region, n);
    return encode_pieces(dst, capacity, region, n, pairs);
}

static size_t encode_piece(uint8_t *dst, size_t capacity, const uint8_t *region, size_t n, uint32_t *pairs) {
    uint32_t counts[256];
    uint8_t lengths[256];
    uint32_t quarters[4 * 256];
    ckk_histogram_quarters(quarters, region, n);
    for (int s = 0; s < 256; s++) counts[s] = quarters[s] + quarters[256 + s] + quarters[512 + s] + quarters[768 + s];
    int used = 0, symbol = 0;
    for (int s = 0; s < 256; s++) if (counts[s]) { used++; symbol = s; }
    if (used == 1) {
        size_t written = 0;
        for (size_t at = 0; at < n; at += CKK_PLANES_MAX_REPEAT) {
            size_t len = n - at < CKK_PLANES_MAX_REPEAT ? n - at : CKK_PLANES_MAX_REPEAT;
            if (written + SEGMENT_HEADER + 1 > capacity) return SIZE_MAX;
            dst[written] = KIND_REPEAT;
            store32le(dst + written + 1, (uint32_t)len);
            dst[written + SEGMENT_HEADER] = (uint8_t)symbol;
            written += SEGMENT_HEADER + 1;
        }
        return written;
    }
    {
        uint64_t bits = coded_bits(counts, lengths);
        int minSymbol = 256, maxSymbol = 0;
        for (int s = 0; s < 256; s++) if (lengths[s]) { maxSymbol = s; if (minSymbol == 256) minSymbol = s; }
        size_t total = SEGMENT_HEADER + 2 + (size_t)(maxSymbol - minSymbol + 2) / 2 + 16 + (size_t)((bits + 7) / 8) + 4;
        if (total <= n - (n >> MIN_SAVING_SHIFT) && total + 32 <= capacity) {
            size_t coded = ckk_huffman_encode(dst + SEGMENT_HEADER, capacity - SEGMENT_HEADER, region, n, quarters, lengths, pairs);
            if (coded > 0) {
                dst[0] = KIND_HUFFMAN;
                store32le(dst + 1, (uint32_t)n);
                return SEGMENT_HEADER + coded;
            }
        }
    }
    return encode_raw(dst, capacity, region, n);
}

static int in_place_setting = 1;
int ckk_planes_set_in_place(int enable) {
    if (enable >= 0) __atomic_store_n(&in_place_setting, enable ? 1 : 0, __ATOMIC_RELAXED);
    return __atomic_load_n(&in_place_setting, __ATOMIC_RELAXED);
}

/* Planes split straight into their place in `dst`, on the bet that they are stored raw:
 * the low planes of floats are noise (measured: every plane below the exponent's of trained
 * MiniLM weights), and a raw plane that lies where its segment's bytes go costs no copy.
 * Plane k goes to k * (header + count) + header, where it lands if planes 0...k-1 were all
 * raw. The bet is checked plane by plane, in order, with the encoder's own decision
 * (sampled_raw); at the first plane it loses, that plane and the later ones are moved to
 * `scratch` before anything is written over them, and encoding goes on from there as
 * usual. Same bytes either way. All planes but the last (the exponent's, usually coded). */
static size_t in_place_planes(size_t capacity, size_t size, size_t count) {
    if (size < 2 || count < SAMPLE_THRESHOLD || !__atomic_load_n(&in_place_setting, __ATOMIC_RELAXED)) return 0;
    if ((size - 1) * (SEGMENT_HEADER + count) > capacity) return 0;
    return size - 1;
}

size_t ckk_planes_encode(uint8_t *dst, size_t capacity, const void *src, size_t length, size_t size, int rotate,
                         uint8_t *scratch, uint32_t *pairs, uint32_t *rawCRC) {
    const uint8_t *s = src;
    size_t count = size > 1 ? length / size : length;
    size_t planes = size > 1 ? size : 1;
    const uint8_t *regions[CKK_PLANES_MAX_ELEMENT + 1];
    size_t sizes[CKK_PLANES_MAX_ELEMENT + 1];
    size_t inPlace = in_place_planes(capacity, size, count);
    if (size > 1) {
        uint8_t *targets[CKK_PLANES_MAX_ELEMENT];
        for (size_t k = 0; k < size; k++)
            targets[k] = k < inPlace ? dst + k * (SEGMENT_HEADER + count) + SEGMENT_HEADER : scratch + k * count;
        uint32_t crc = ckk_split_planes_crc32c(targets, s, count, size, rotate, 0);
        size_t tail = length - count * size;
        *rawCRC = ckk_crc32c_extend(crc, s + count * size, tail);
        for (size_t k = 0; k < size; k++) { regions[k] = targets[k]; sizes[k] = count; }
        regions[size] = s + count * size;
        sizes[size] = tail;
    } else {
        *rawCRC = ckk_crc32c_extend(0, s, length);
        regions[0] = s;
        sizes[0] = length;
        sizes[1] = 0;
        regions[1] = s + length;
    }
    size_t written = 0;
    for (size_t r = 0; r <= planes; r++) {
        size_t n;
        if (r >= inPlace) {
            n = encode_region(dst + written, capacity - written, regions[r], sizes[r], pairs);
        } else if (sampled_raw(regions[r], sizes[r])) {
            n = encode_raw(dst + written, capacity - written, regions[r], sizes[r]); /* no copy: it is there */
        } else {
            /* Lost the bet: this plane and the later ones in dst go to scratch first, and this
             * one is coded in pieces (encode_region's own sample would say what this one did). */
            for (size_t k = r; k < inPlace; k++) {
                memcpy(scratch + k * count, regions[k], count);
                regions[k] = scratch + k * count;
            }
            inPlace = r;
            n = encode_pieces(dst + written, capacity - written, regions[r], sizes[r], pairs);
        }
        if (n == SIZE_MAX) return 0;
        written += n;
        if (written >= length) return 0; /* already no smaller than raw: give up early */
    }
    return written < length ? written : 0;
}

int ckk_planes_decode(void *dst, size_t length, const uint8_t *src, size_t srcLength, size_t size, int rotate,
                      uint8_t *scratch, uint32_t *rawCRC, int checksum) {
    uint8_t *out = dst;
    size_t count = size > 1 ? length / size : length;
    size_t planes = size > 1 ? size : 1;
    /* Without a filter the filtered bytes are the raw bytes: decode straight into dst. */
    uint8_t *target = size > 1 ? scratch : out;
    const uint8_t *inPlace[CKK_PLANES_MAX_ELEMENT + 1] = {0};
    size_t at = 0, in = 0;
    /* Unfiltered, the checksum follows each segment while its bytes are still in cache. */
    uint32_t crc = 0;
    while (in < srcLength) {
        if (srcLength - in < SEGMENT_HEADER) return CKK_ERR_TRUNCATED;
        uint8_t kind = src[in];
        size_t len = load32le(src + in + 1);
        in += SEGMENT_HEADER;
        if (len == 0) return CKK_ERR_BAD_SEGMENT;
        if (len > length - at) return CKK_ERR_LENGTH;
        switch (kind) {
        case KIND_RAW: {
            if (srcLength - in < len) return CKK_ERR_TRUNCATED;
            /* A raw segment that is exactly one region is read in place by the join. */
            size_t region = size > 1 ? (at < count * size ? at / count : size) : 0;
            size_t regionStart = region < planes ? region * count : count * planes;
            size_t regionLength = region < planes ? count : length - count * planes;
            if (size > 1 && at == regionStart && len == regionLength) inPlace[region] = src + in;
            else memcpy(target + at, src + in, len);
            in += len;
            break;
        }
        case KIND_REPEAT:
            if (len > CKK_PLANES_MAX_REPEAT) return CKK_ERR_BAD_SEGMENT;
            if (srcLength - in < 1) return CKK_ERR_TRUNCATED;
            memset(target + at, src[in], len);
            in += 1;
            break;
        case KIND_HUFFMAN: {
            size_t consumed = 0;
            int status = ckk_huffman_decode(target + at, len, src + in, srcLength - in, &consumed);
            if (status != 0) return status;
            in += consumed;
            break;
        }
        default:
            return CKK_ERR_BAD_SEGMENT;
        }
        if (size <= 1 && checksum) crc = ckk_crc32c_extend(crc, out + at, len);
        at += len;
    }
    if (at != length) return CKK_ERR_LENGTH;
    if (size <= 1) {
        *rawCRC = crc;
        return 0;
    }
    const uint8_t *sources[CKK_PLANES_MAX_ELEMENT];
    for (size_t k = 0; k < size; k++) sources[k] = inPlace[k] ? inPlace[k] : scratch + k * count;
    crc = ckk_join_planes_crc32c(out, sources, count, size, rotate, 0, checksum);
    size_t tail = length - count * size;
    const uint8_t *tailSource = inPlace[size] ? inPlace[size] : scratch + count * size;
    memcpy(out + count * size, tailSource, tail);
    *rawCRC = checksum ? ckk_crc32c_extend(crc, out + count * size, tail) : 0;
    return 0;
}

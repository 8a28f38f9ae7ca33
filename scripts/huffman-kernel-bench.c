/*
 * The plane codec's Huffman kernels alone, on real bytes: the top byte plane of a
 * safetensors file's elements as the codec's filter 2 makes it (each element rotated left
 * by one bit: the 8 exponent bits of fp32/bf16, 5 exponent and 3 mantissa bits of fp16),
 * or whole FP8 bytes, cut into 256 KiB segments as the codec cuts a plane, each coded
 * with its own code (a segment of one value is copied, as the codec would repeat it).
 * Prints the best of several passes, in ns per byte of the plane:
 *   encode: quarter histograms + code lengths + pair table + coding;
 *   decode: table building + decoding (checked bit-exact against the input).
 * No threads, no file I/O in the timed part: for comparing kernel changes in one run.
 *
 *   clang -O2 -ISources/CCheckpointKernels/include -o /tmp/huffman-kernel-bench \
 *       scripts/huffman-kernel-bench.c Sources/CCheckpointKernels/huffman.c
 *   /tmp/huffman-kernel-bench weights-bf16.safetensors 2   # element size 2: the exponent plane
 *   /tmp/huffman-kernel-bench weights-fp8.safetensors 1    # whole FP8 bytes
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "CCheckpointKernels.h"

#define SEGMENT (256u << 10)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 3 || atoi(argv[2]) < 1 || atoi(argv[2]) > 8) {
        fprintf(stderr, "usage: %s FILE.safetensors ELEMENT_SIZE (1...8)\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long fileSize = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *file = malloc((size_t)fileSize);
    if (!file || fread(file, 1, (size_t)fileSize, f) != (size_t)fileSize) { fprintf(stderr, "%s: cannot read\n", argv[1]); return 1; }
    fclose(f);
    uint64_t headerLength;
    memcpy(&headerLength, file, 8);
    if (fileSize < 8 || headerLength > (uint64_t)fileSize - 8) { fprintf(stderr, "%s: not a safetensors file\n", argv[1]); return 1; }
    const uint8_t *data = file + 8 + headerLength;
    size_t size = (size_t)atoi(argv[2]), count = ((size_t)fileSize - 8 - headerLength) / size;
    if (count == 0) { fprintf(stderr, "%s: no data\n", argv[1]); return 1; }
    uint8_t *plane = malloc(count), *decoded = malloc(count);
    for (size_t i = 0; i < count; i++) {
        /* The element as a little-endian integer, rotated left by one bit; its top byte. */
        uint64_t v = 0;
        memcpy(&v, data + i * size, size);
        unsigned bits = 8 * (unsigned)size;
        if (size > 1) v = (v << 1 | v >> (bits - 1)) & (bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1);
        plane[i] = (uint8_t)(v >> (bits - 8));
    }

    size_t segments = (count + SEGMENT - 1) / SEGMENT;
    uint8_t *encoded = malloc(2 * count + segments * 1024);
    size_t *offsets = malloc(segments * sizeof(size_t)), *sizes = malloc(segments * sizeof(size_t));
    uint32_t *pairs = malloc(CKK_HUFFMAN_PAIR_ENTRIES * sizeof(uint32_t));
    double bestEncode = 1e30, bestDecode = 1e30;
    size_t total = 0;
    for (int pass = 0; pass < 7; pass++) {
        double start = now();
        total = 0;
        for (size_t i = 0; i < segments; i++) {
            size_t at = i * SEGMENT, n = count - at < SEGMENT ? count - at : SEGMENT;
            uint32_t quarters[4 * 256], counts[256];
            uint8_t lengths[256];
            ckk_histogram_quarters(quarters, plane + at, n);
            for (int s = 0; s < 256; s++) counts[s] = quarters[s] + quarters[256 + s] + quarters[512 + s] + quarters[768 + s];
            size_t written = 0;
            if (ckk_huffman_lengths(lengths, counts) < 2) {
                encoded[total] = plane[at];  /* one value: a repeat segment's byte */
                written = 1;
            } else {
                written = ckk_huffman_encode(encoded + total, 2 * n + 1024, plane + at, n, quarters, lengths, pairs);
                if (written == 0) { fprintf(stderr, "segment %zu: the coder failed\n", i); return 1; }
            }
            offsets[i] = total;
            sizes[i] = written;
            total += written;
        }
        double elapsed = now() - start;
        if (elapsed < bestEncode) bestEncode = elapsed;
    }
    for (int pass = 0; pass < 15; pass++) {
        memset(decoded, 0, count);
        double start = now();
        for (size_t i = 0; i < segments; i++) {
            size_t at = i * SEGMENT, n = count - at < SEGMENT ? count - at : SEGMENT, consumed;
            if (sizes[i] == 1) { memset(decoded + at, encoded[offsets[i]], n); continue; }
            int status = ckk_huffman_decode(decoded + at, n, encoded + offsets[i], sizes[i], &consumed);
            if (status != 0 || consumed != sizes[i]) { fprintf(stderr, "segment %zu: decode failed (%d)\n", i, status); return 1; }
        }
        double elapsed = now() - start;
        if (elapsed < bestDecode) bestDecode = elapsed;
        if (memcmp(decoded, plane, count) != 0) { fprintf(stderr, "decoded bytes differ\n"); return 1; }
    }
    printf("%zu bytes in %zu segments, ratio %.4f\n", count, segments, (double)count / (double)total);
    printf("encode %.3f ns/B (%.2f GB/s), decode %.3f ns/B (%.2f GB/s), bit-exact\n",
           bestEncode * 1e9 / (double)count, (double)count / bestEncode / 1e9,
           bestDecode * 1e9 / (double)count, (double)count / bestDecode / 1e9);
    return 0;
}

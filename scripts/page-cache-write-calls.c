/*
 * Page-cache writes: does the size (and so the alignment) of each write call matter?
 * Not part of CI. Build and run:
 *
 *     cc -O2 -o /tmp/page-cache-write-calls scripts/page-cache-write-calls.c
 *     /tmp/page-cache-write-calls [DIR] [REPETITIONS] [CALL_BYTES ...]
 *
 * Writes the same 623 MiB (the small-tensor workload's size) into a new file in DIR
 * (default /tmp) with pwrite calls of 16 MiB and of each CALL_BYTES (default 11000000,
 * 10997760, 10485760: not 4 KiB-aligned, 4 KiB- but not 2 MiB-aligned, 2 MiB-aligned),
 * alternating, each run after unlink + syncfs like `ckpt bench`, and prints each run and
 * the medians. On this project's VMs (Zen 5, six runs of 9 to 15 repetitions), the
 * 11,000,000-byte calls took 1.1 to 2.6 times as long as the 16 MiB calls (median ~1.6),
 * the 4 KiB-aligned ones 1.0 to 1.5 times, the 10 MiB ones as long; the runs are bimodal
 * (MACHINE-NOTES: page-cache writes), so run it more than once. See WritePipeline.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double write_file(const char *path, const char *directory, const char *data, size_t total, size_t call) {
    unlink(path);
    int dir = open(directory, O_RDONLY | O_DIRECTORY);
    if (dir < 0 || syncfs(dir) != 0) { perror(directory); exit(1); }
    close(dir);
    double start = now();
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) { perror(path); exit(1); }
    for (size_t offset = 0; offset < total; offset += call) {
        size_t n = total - offset < call ? total - offset : call;
        if (pwrite(fd, data + offset, n, (off_t)offset) != (ssize_t)n) { perror("pwrite"); exit(1); }
    }
    close(fd);
    return now() - start;
}

int main(int argc, char **argv) {
    const char *directory = argc > 1 ? argv[1] : "/tmp";
    int repetitions = argc > 2 ? atoi(argv[2]) : 9;
    if (repetitions < 1 || repetitions > 99) repetitions = 9;
    size_t calls[8] = {16u << 20, 11000000, 10997760, 10485760};
    int count = 4;
    if (argc > 3) {
        count = 1;
        for (int i = 3; i < argc && count < 8; i++) calls[count++] = strtoull(argv[i], NULL, 10);
    }
    size_t total = 623u << 20;
    char *data = malloc(total);
    if (!data) return 1;
    memset(data, 7, total);
    char path[4096];
    snprintf(path, sizeof path, "%s/.page-cache-write-calls.%d", directory, (int)getpid());
    write_file(path, directory, data, total, calls[0]);  /* warm-up: fresh memory, not measured */
    double times[8][100];
    for (int r = 0; r < repetitions; r++) {
        for (int c = 0; c < count; c++) {
            times[c][r] = write_file(path, directory, data, total, calls[c]);
            printf("%s%zu B: %.0f ms", c ? "  " : "", calls[c], times[c][r] * 1e3);
        }
        printf("\n");
        fflush(stdout);
    }
    unlink(path);
    for (int c = 0; c < count; c++) qsort(times[c], repetitions, sizeof(double), compare);
    double base = times[0][repetitions / 2];
    for (int c = 0; c < count; c++) {
        double median = times[c][repetitions / 2];
        printf("median %zu-byte calls: %.0f ms (16 MiB calls / these: %.2f)\n", calls[c], median * 1e3, base / median);
    }
    return 0;
}

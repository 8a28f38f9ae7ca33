/*
 * Page-cache writes: does it matter which CPU writes, after a file was deleted on another?
 * Not part of CI. Build and run:
 *
 *     cc -O2 -pthread -o /tmp/page-cache-write-threads scripts/page-cache-write-threads.c
 *     /tmp/page-cache-write-threads [DIR] [REPETITIONS]
 *
 * Each run deletes the previous run's file and calls syncfs on CPU 0, like `ckpt bench`
 * before every save, then writes the same 625 MiB (the small-tensor workload's size) in
 * 16 MiB pwrite calls into a new file in DIR (default /tmp), from one of three threads:
 *
 *   same thread   the thread that deleted the file (CPU 0);
 *   same CPU      another thread, pinned to CPU 0;
 *   other CPU     another thread, pinned to CPU 1.
 *
 * The three alternate, and the program prints every run and the medians. On this
 * project's 2-vCPU VMs (Zen 5, Linux 6.18) the "other CPU" writes were the slow ones:
 * in two runs of 15, medians 126.5 and 123.1 ms from a thread on the deleting CPU
 * against 169.7 and 135.1 ms from the other CPU, whose slowest took 758 and 945 ms
 * (the same CPU's, 145 and 143 ms). The kernel keeps pages a CPU
 * frees on that CPU's own free lists for a while, and on these VMs pages that have gone
 * back to the host are slow to touch again (MACHINE-NOTES: page-cache writes). That is
 * why WritePipeline.producing runs a save's writes on the thread that called it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOTAL ((size_t)625 << 20)
#define CALL ((size_t)16 << 20)

static const char *data;
static char path[4096];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) { perror("sched_setaffinity"); exit(1); }
}

static void write_all(void) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) { perror(path); exit(1); }
    for (size_t offset = 0; offset < TOTAL; offset += CALL) {
        size_t n = TOTAL - offset < CALL ? TOTAL - offset : CALL;
        if (pwrite(fd, data + offset, n, (off_t)offset) != (ssize_t)n) { perror("pwrite"); exit(1); }
    }
    close(fd);
}

static void *writer(void *cpu) {
    pin(*(int *)cpu);
    write_all();
    return NULL;
}

/* mode 0: this thread; 1: a thread on CPU 0; 2: a thread on CPU 1. Seconds of the write. */
static double run(const char *directory, int mode) {
    unlink(path);
    int dir = open(directory, O_RDONLY | O_DIRECTORY);
    if (dir < 0 || syncfs(dir) != 0) { perror(directory); exit(1); }
    close(dir);
    double start = now();
    if (mode == 0) {
        write_all();
    } else {
        int cpu = mode == 1 ? 0 : 1;
        pthread_t thread;
        if (pthread_create(&thread, NULL, writer, &cpu) != 0) { perror("pthread_create"); exit(1); }
        pthread_join(thread, NULL);
    }
    return now() - start;
}

int main(int argc, char **argv) {
    const char *directory = argc > 1 ? argv[1] : "/tmp";
    int repetitions = argc > 2 ? atoi(argv[2]) : 15;
    if (repetitions < 1 || repetitions > 1000) { fprintf(stderr, "repetitions: 1 to 1000\n"); return 2; }
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) { fprintf(stderr, "needs two CPUs\n"); return 2; }
    snprintf(path, sizeof path, "%s/page-cache-write-threads.%d", directory, (int)getpid());
    char *bytes = malloc(TOTAL);
    if (!bytes) { perror("malloc"); return 1; }
    for (size_t i = 0; i < TOTAL; i++) bytes[i] = (char)((i * 2654435761u) >> 13);
    data = bytes;
    pin(0);

    static const char *names[3] = {"same thread", "same CPU", "other CPU"};
    double *seconds[3];
    for (int mode = 0; mode < 3; mode++) {
        seconds[mode] = calloc((size_t)repetitions, sizeof(double));
        run(directory, mode);  // warm-up, not counted
    }
    for (int r = 0; r < repetitions; r++) {
        printf("run %2d:", r + 1);
        for (int k = 0; k < 3; k++) {
            int mode = (r + k) % 3;  // rotate the order
            seconds[mode][r] = run(directory, mode);
        }
        for (int mode = 0; mode < 3; mode++) printf("  %s %.1f ms", names[mode], seconds[mode][r] * 1e3);
        printf("\n");
    }
    for (int mode = 0; mode < 3; mode++) {
        qsort(seconds[mode], (size_t)repetitions, sizeof(double), compare);
        printf("%-12s median %.1f ms, min %.1f, max %.1f\n", names[mode], seconds[mode][repetitions / 2] * 1e3,
               seconds[mode][0] * 1e3, seconds[mode][repetitions - 1] * 1e3);
    }
    unlink(path);
    return 0;
}

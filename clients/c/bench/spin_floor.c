/* spin-floor: the round-trip floor of two processes ping-ponging a counter on a shared 8-byte
 * word (no semaphores, no codec). Prints {"p50_us": ..., "p99_us": ..., "iterations": N}. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100000, warmup = 1000;
    /* word 0: the pinger's counter; word 8 (its own cache line): the ponger's answer */
    uint64_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED || n < 1) return 1;
    pid_t child = fork();
    if (child == 0) {
        for (uint64_t s = 1; s <= (uint64_t)(n + warmup); s++) {
            while (__atomic_load_n(&w[0], __ATOMIC_ACQUIRE) != s) cpu_relax();
            __atomic_store_n(&w[8], s, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    double *lat = malloc((size_t)n * sizeof *lat);
    for (uint64_t s = 1; s <= (uint64_t)(n + warmup); s++) {
        double t0 = now_us();
        __atomic_store_n(&w[0], s, __ATOMIC_RELEASE);
        while (__atomic_load_n(&w[8], __ATOMIC_ACQUIRE) != s) cpu_relax();
        if (s > (uint64_t)warmup) lat[s - 1 - (uint64_t)warmup] = now_us() - t0;
    }
    waitpid(child, NULL, 0);
    qsort(lat, (size_t)n, sizeof *lat, by_value);
    printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"iterations\": %d}\n", lat[(int)(0.5 * (n - 1) + 0.5)],
           lat[(int)(0.99 * (n - 1) + 0.5)], n);
    free(lat);
    return 0;
}

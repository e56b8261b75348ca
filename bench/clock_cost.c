/* clock_cost.c -- benchmark: nanoseconds per read of each apiprof clock; prints a table and one JSON line.
 *
 * Build and run from the repository root (bench/clock_cost.py does this):
 *   mkdir -p build && gcc -O2 -std=c11 -D_GNU_SOURCE -Isrc/core bench/clock_cost.c \
 *       src/core/ap_clock.c src/core/ap_err.c -lpthread -o build/clock_cost && build/clock_cost
 * Options: --rounds N (default 7). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap_clock.h"

#define MAX_ROUNDS 101

typedef uint64_t (*clock_fn)(void);

/* ap_clock_now_ns is static inline: wrap it so every clock is called the same
 * way (the wrapper costs about a nanosecond, the same for all rows). */
static uint64_t now_ns(void) {
    return ap_clock_now_ns();
}

static const struct {
    const char *name;
    clock_fn fn;
    unsigned reads;   /* per round */
} clocks[] = {
    {"ap_clock_now_ns", now_ns, 2000000},
    {"ap_clock_mono_ns", ap_clock_mono_ns, 2000000},
    {"ap_clock_thread_cpu_ns", ap_clock_thread_cpu_ns, 200000},
    {"ap_clock_process_cpu_ns", ap_clock_process_cpu_ns, 200000},
};
#define NCLOCKS (sizeof clocks / sizeof clocks[0])

static volatile uint64_t sink;

static double ns_per_read(clock_fn fn, unsigned reads) {
    uint64_t acc = 0;
    uint64_t t0 = ap_clock_mono_ns();
    for (unsigned i = 0; i < reads; i++)
        acc += fn();
    uint64_t t1 = ap_clock_mono_ns();
    sink = acc;
    return (double)(t1 - t0) / reads;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rounds = 7;
    if (argc == 3 && strcmp(argv[1], "--rounds") == 0)
        rounds = atoi(argv[2]);
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "clock_cost: --rounds must be 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    ap_clock_init();
    static double r[NCLOCKS][MAX_ROUNDS];
    /* Interleave the clocks round by round, so that a noisy moment of a shared
     * machine hurts all of them alike. */
    for (int k = 0; k < rounds; k++)
        for (size_t c = 0; c < NCLOCKS; c++)
            r[c][k] = ns_per_read(clocks[c].fn, clocks[c].reads);

    printf("clock source: %s, %d rounds\n", ap_clock_source(), rounds);
    printf("%-26s %10s %10s %10s\n", "clock", "min ns", "median ns", "max ns");
    char json[2048];
    int off = snprintf(json, sizeof json,
                       "{\"bench\":\"clock_cost\",\"source\":\"%s\",\"rounds\":%d,\"ns_per_read\":{",
                       ap_clock_source(), rounds);
    for (size_t c = 0; c < NCLOCKS; c++) {
        qsort(r[c], (size_t)rounds, sizeof r[c][0], cmp_double);
        double min = r[c][0], med = r[c][rounds / 2], max = r[c][rounds - 1];
        printf("%-26s %10.1f %10.1f %10.1f\n", clocks[c].name, min, med, max);
        off += snprintf(json + off, sizeof json - (size_t)off,
                        "%s\"%s\":{\"min\":%.1f,\"median\":%.1f,\"max\":%.1f}", c ? "," : "",
                        clocks[c].name, min, med, max);
    }
    printf("%s}}\n", json);
    return 0;
}

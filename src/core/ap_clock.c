/* ap_clock.c -- selection and calibration of the apiprof wall clock (TSC or CLOCK_MONOTONIC). */
#include "ap_clock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* Written only inside clock_setup(), under pthread_once. */
ap_clock_state ap_clock_state_g;

static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static uint64_t read_clock(clockid_t id) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ap_clock_mono_ns(void) {
    return read_clock(CLOCK_MONOTONIC);
}

uint64_t ap_clock_thread_cpu_ns(void) {
    return read_clock(CLOCK_THREAD_CPUTIME_ID);
}

uint64_t ap_clock_process_cpu_ns(void) {
    return read_clock(CLOCK_PROCESS_CPUTIME_ID);
}

const char *ap_clock_source(void) {
    int s = atomic_load_explicit(&ap_clock_state_g.source, memory_order_acquire);
    return s == AP_CLOCK_TSC ? "tsc" : "monotonic";
}

#if defined(__x86_64__)

/* Calibration parameters: two windows of this length must agree within
 * CALIB_MAX_PPM, and the frequency must be plausible. */
#define CALIB_WINDOW_NS 8000000u
#define CALIB_MAX_PPM 200.0
#define CALIB_MIN_HZ 1e8
#define CALIB_MAX_HZ 1e11

typedef struct { uint64_t tsc, ns; } clock_pair;

/* Does the CPU (or the kernel, speaking for it) promise a TSC that ticks at a
 * constant rate in every P/C-state? */
static int tsc_is_invariant(void) {
    unsigned a, b, c, d;
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000007u &&
        __get_cpuid(0x80000007u, &a, &b, &c, &d) && (d & (1u << 8)))
        return 1;
    /* Hypervisors often hide the CPUID bit while Linux still knows. */
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        found = strstr(line, " constant_tsc") != NULL && strstr(line, " nonstop_tsc") != NULL;
        break;
    }
    fclose(f);
    return found;
}

/* Read the TSC and CLOCK_MONOTONIC as close together as we can: keep the
 * attempt whose TSC bracket around clock_gettime is the shortest, so that a
 * preemption in the middle does not skew the pair. */
static clock_pair sample_pair(void) {
    clock_pair best = {0, 0};
    uint64_t best_gap = UINT64_MAX;
    for (int i = 0; i < 16; i++) {
        uint64_t t1 = __builtin_ia32_rdtsc();
        uint64_t ns = ap_clock_mono_ns();
        uint64_t t2 = __builtin_ia32_rdtsc();
        if (t2 > t1 && t2 - t1 < best_gap) {
            best_gap = t2 - t1;
            best.tsc = t1 + (t2 - t1) / 2;
            best.ns = ns;
        }
    }
    return best;
}

static clock_pair pair_after(uint64_t ns) {
    struct timespec ts = {0, (long)ns};
    nanosleep(&ts, NULL);
    return sample_pair();
}

static double pair_hz(clock_pair a, clock_pair b) {
    if (b.ns <= a.ns || b.tsc <= a.tsc)
        return 0.0;
    return (double)(b.tsc - a.tsc) * 1e9 / (double)(b.ns - a.ns);
}

/* Calibrate the TSC; 0 and the state filled (source untouched) on success,
 * -1 when the TSC can't be trusted. */
static int tsc_calibrate(ap_clock_state *st) {
    clock_pair p0 = sample_pair();
    clock_pair p1 = pair_after(CALIB_WINDOW_NS);
    clock_pair p2 = pair_after(CALIB_WINDOW_NS);
    double hz1 = pair_hz(p0, p1), hz2 = pair_hz(p1, p2);
    if (hz1 < CALIB_MIN_HZ || hz1 > CALIB_MAX_HZ || hz2 < CALIB_MIN_HZ || hz2 > CALIB_MAX_HZ)
        return -1;
    double ppm = (hz1 > hz2 ? hz1 - hz2 : hz2 - hz1) / hz1 * 1e6;
    if (ppm > CALIB_MAX_PPM)
        return -1;
    /* Anchor at the first pair: by the time anyone reads the TSC it is ~16 ms
     * in the past, far more than any skew between cores, so tsc - tsc0 can't
     * go negative. */
    __extension__ typedef unsigned __int128 u128;
    st->shift = 32;
    st->mult = (uint64_t)(((u128)(p2.ns - p0.ns) << st->shift) / (p2.tsc - p0.tsc));
    st->tsc0 = p0.tsc;
    st->ns0 = p0.ns;
    return st->mult != 0 ? 0 : -1;
}

#endif /* __x86_64__ */

static void clock_setup(void) {
    const char *env = getenv("APIPROF_CLOCK");
    if (env != NULL && strcmp(env, "monotonic") == 0)
        return;
#if defined(__x86_64__)
    if (!tsc_is_invariant() || tsc_calibrate(&ap_clock_state_g) != 0)
        return;
    atomic_store_explicit(&ap_clock_state_g.source, AP_CLOCK_TSC, memory_order_release);
#endif
}

void ap_clock_init(void) {
    pthread_once(&clock_once, clock_setup);
}

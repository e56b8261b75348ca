/* ap_clock.h -- clocks of the apiprof core: a calibrated TSC wall clock, CLOCK_MONOTONIC, CPU clocks. */
#ifndef AP_CLOCK_H
#define AP_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* Which source ap_clock_now_ns() reads; see ap_clock_source(). */
enum { AP_CLOCK_MONOTONIC = 0, AP_CLOCK_TSC = 1 };

/* The state written once by ap_clock_init() and read on the hot path.  Read
 * it only through ap_clock_now_ns().  The fields are filled before `source` is
 * stored with release order; readers load `source` with acquire order, so a
 * thread that sees AP_CLOCK_TSC also sees the calibration. */
typedef struct ap_clock_state {
    _Atomic int source;   /* AP_CLOCK_MONOTONIC until a TSC calibration succeeds */
    uint32_t shift;       /* ns = ns0 + (((tsc - tsc0) * mult) >> shift) */
    uint64_t mult;
    uint64_t tsc0;        /* TSC and CLOCK_MONOTONIC read together at calibration */
    uint64_t ns0;
} ap_clock_state;

extern ap_clock_state ap_clock_state_g;

/* Pick and calibrate the clock behind ap_clock_now_ns().  Idempotent and
 * thread-safe (pthread_once); the first call takes ~15 ms.  The TSC is chosen
 * only on x86_64, when the CPU reports an invariant TSC (CPUID 0x80000007
 * EDX bit 8, or the constant_tsc and nonstop_tsc flags of /proc/cpuinfo),
 * when two calibration windows against CLOCK_MONOTONIC agree, and when the
 * environment variable APIPROF_CLOCK is not "monotonic".  Otherwise
 * CLOCK_MONOTONIC is used.  Can't fail. */
void ap_clock_init(void);

/* CLOCK_MONOTONIC in nanoseconds (vDSO, ~25 ns).  Can't fail (returns 0 if
 * the kernel refuses, which Linux never does). */
uint64_t ap_clock_mono_ns(void);

/* CLOCK_THREAD_CPUTIME_ID in nanoseconds: CPU time of the calling thread.
 * A system call (~0.5 us): not for every event.  Can't fail (0 on refusal). */
uint64_t ap_clock_thread_cpu_ns(void);

/* CLOCK_PROCESS_CPUTIME_ID in nanoseconds.  Can't fail (0 on refusal). */
uint64_t ap_clock_process_cpu_ns(void);

/* "tsc" or "monotonic": the source ap_clock_now_ns() currently reads
 * ("monotonic" before ap_clock_init()).  A static string.  Can't fail. */
const char *ap_clock_source(void);

/* The fastest monotonic clock, in nanoseconds.  With the TSC: rdtsc scaled by
 * the calibrated mult/shift and anchored to CLOCK_MONOTONIC, so values are
 * comparable with ap_clock_mono_ns() within a few microseconds near
 * calibration; they then drift apart only as fast as NTP slews
 * CLOCK_MONOTONIC (at most 500 ppm), so use it for durations.  Before
 * ap_clock_init(), and when the TSC is not chosen, it is CLOCK_MONOTONIC.
 * No lock, no allocation, no system call.  Can't fail. */
static inline uint64_t ap_clock_now_ns(void) {
#if defined(__x86_64__)
    const ap_clock_state *c = &ap_clock_state_g;
    if (atomic_load_explicit(&ap_clock_state_g.source, memory_order_acquire) == AP_CLOCK_TSC) {
        __extension__ typedef unsigned __int128 u128;
        uint64_t d = __builtin_ia32_rdtsc() - c->tsc0;
        return c->ns0 + (uint64_t)(((u128)d * c->mult) >> c->shift);
    }
#endif
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif /* AP_CLOCK_H */

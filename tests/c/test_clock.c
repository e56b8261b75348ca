/* test_clock.c -- unit tests of ap_clock: monotonicity, agreement with CLOCK_MONOTONIC, CPU clocks. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ap_clock.h"
#include "ap_test.h"

static void sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static uint64_t absdiff(uint64_t a, uint64_t b) {
    return a > b ? a - b : b - a;
}

AP_TEST(clock_init_source) {
    ap_clock_init();
    const char *s = ap_clock_source();
    AP_CHECK(strcmp(s, "tsc") == 0 || strcmp(s, "monotonic") == 0);
    ap_clock_init();                       /* idempotent */
    AP_CHECK(strcmp(ap_clock_source(), s) == 0);
}

/* Run this binary again with APIPROF_CLOCK=monotonic: it must not pick the TSC. */
AP_TEST(clock_env_forces_monotonic) {
    char exe[PATH_MAX], cmd[PATH_MAX + 64], out[64] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (!AP_CHECK(n > 0))
        return;
    exe[n] = '\0';
    snprintf(cmd, sizeof cmd, "APIPROF_CLOCK=monotonic '%s' --print-clock-source", exe);
    FILE *p = popen(cmd, "r");
    if (!AP_CHECK(p != NULL))
        return;
    AP_CHECK(fgets(out, sizeof out, p) != NULL);
    AP_CHECK(pclose(p) == 0);
    AP_CHECK_MSG(strcmp(out, "monotonic\n") == 0, "child reported %s", out);
}

AP_TEST(clock_monotonic) {
    ap_clock_init();
    uint64_t prev = ap_clock_now_ns(), prev_mono = ap_clock_mono_ns();
    int backwards = 0, backwards_mono = 0;
    for (int i = 0; i < 200000; i++) {
        uint64_t t = ap_clock_now_ns(), m = ap_clock_mono_ns();
        backwards += t < prev;
        backwards_mono += m < prev_mono;
        prev = t;
        prev_mono = m;
    }
    AP_CHECK_EQ_U64(backwards, 0);
    AP_CHECK_EQ_U64(backwards_mono, 0);
    AP_CHECK(ap_clock_now_ns() >= prev);
}

AP_TEST(clock_agrees_with_monotonic) {
    ap_clock_init();
    uint64_t m0 = ap_clock_mono_ns(), t0 = ap_clock_now_ns();
    sleep_ns(20000000u);
    uint64_t t1 = ap_clock_now_ns(), m1 = ap_clock_mono_ns();
    AP_CHECK_MSG(absdiff(t0, m0) < 1000000u, "now %llu vs mono %llu", (unsigned long long)t0,
                 (unsigned long long)m0);
    AP_CHECK_MSG(absdiff(t1, m1) < 1000000u, "now %llu vs mono %llu", (unsigned long long)t1,
                 (unsigned long long)m1);
    AP_CHECK(m1 - m0 >= 20000000u);
    AP_CHECK(t1 - t0 >= 19000000u);
    AP_CHECK_MSG(absdiff(t1 - t0, m1 - m0) < 1000000u, "elapsed now %llu vs mono %llu",
                 (unsigned long long)(t1 - t0), (unsigned long long)(m1 - m0));
}

AP_TEST(clock_thread_cpu_busy) {
    uint64_t c0 = ap_clock_thread_cpu_ns(), p0 = ap_clock_process_cpu_ns();
    uint64_t w0 = ap_clock_mono_ns();
    volatile uint64_t sink = 0;
    /* Spin until 20 ms of CPU have been used, giving up after 5 s of wall
     * time (a shared machine may not schedule us). */
    while (ap_clock_thread_cpu_ns() - c0 < 20000000u && ap_clock_mono_ns() - w0 < 5000000000u)
        for (int i = 0; i < 10000; i++)
            sink += (uint64_t)i * 7;
    (void)sink;   /* GCC 16 warns of a volatile that is only written */
    uint64_t dc = ap_clock_thread_cpu_ns() - c0, dp = ap_clock_process_cpu_ns() - p0;
    AP_CHECK_MSG(dc >= 20000000u, "thread CPU advanced only %llu ns", (unsigned long long)dc);
    AP_CHECK_MSG(dp + 1000000u >= dc, "process CPU %llu < thread CPU %llu",
                 (unsigned long long)dp, (unsigned long long)dc);
    AP_CHECK(ap_clock_mono_ns() - w0 >= dc / 2);
}

AP_TEST(clock_thread_cpu_sleep) {
    uint64_t c0 = ap_clock_thread_cpu_ns(), w0 = ap_clock_mono_ns();
    sleep_ns(20000000u);
    uint64_t dc = ap_clock_thread_cpu_ns() - c0, dw = ap_clock_mono_ns() - w0;
    AP_CHECK(dw >= 20000000u);
    AP_CHECK_MSG(dc < 3000000u, "thread CPU advanced %llu ns while sleeping",
                 (unsigned long long)dc);
}

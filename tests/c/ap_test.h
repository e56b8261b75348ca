/* ap_test.h -- a tiny unit-test harness for the apiprof core: test definitions and checks that continue on failure. */
#ifndef AP_TEST_H
#define AP_TEST_H

#include <stdint.h>
#include <stdio.h>

/* Define a test:  AP_TEST(hist_merge) { ... }  defines void ap_test_hist_merge(void).
 * Every test must also be listed once in AP_TEST_LIST in test_main.c. */
#define AP_TEST(name) void ap_test_##name(void)

/* Failed checks so far, over all tests; defined in test_main.c. */
extern unsigned long ap_test_failures;

/* Record one failed check with its location; returns 0. */
int ap_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 if a == b, else records a failure showing both expressions and values. */
int ap_test_eq_u64(const char *file, int line, const char *ea, const char *eb, uint64_t a,
                   uint64_t b);

/* Each check evaluates to 1 when it holds and 0 when it failed, so a test can
 * stop early with `if (!AP_CHECK(p != NULL)) return;`. */
#define AP_CHECK(cond) \
    ((cond) ? 1 : ap_test_fail(__FILE__, __LINE__, "check failed: %s", #cond))

#define AP_CHECK_EQ_U64(a, b) \
    ap_test_eq_u64(__FILE__, __LINE__, #a, #b, (uint64_t)(a), (uint64_t)(b))

#define AP_CHECK_MSG(cond, ...) ((cond) ? 1 : ap_test_fail(__FILE__, __LINE__, __VA_ARGS__))

/* Deterministic pseudo-random numbers for tests (splitmix64). */
static inline uint64_t ap_test_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

#endif /* AP_TEST_H */

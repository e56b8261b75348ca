/* test_hist.c -- unit tests of ap_hist: bucket layout, percentiles against exact sorts, merge, encoding. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_hist.h"
#include "ap_test.h"

#define NVALUES 100000

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double rand_unit(uint64_t *s) {
    return ((double)(ap_test_rand(s) >> 11) + 0.5) / 9007199254740992.0;   /* (0, 1) */
}

/* Fill v with NVALUES values of distribution d; returns its name. */
static const char *fill(uint64_t *v, int d, uint64_t *s) {
    for (size_t i = 0; i < NVALUES; i++) {
        switch (d) {
        case 0: v[i] = ap_test_rand(s) % 1000000000u; break;
        case 1: {   /* log-normal around 1 ms, sigma 2 */
            double z = sqrt(-2.0 * log(rand_unit(s))) * cos(2.0 * M_PI * rand_unit(s));
            v[i] = (uint64_t)exp(log(1e6) + 2.0 * z);
            break;
        }
        case 2: v[i] = 123456789; break;
        case 3: v[i] = ap_test_rand(s) % 300; break;
        case 4: v[i] = ((uint64_t)1 << 44) + ap_test_rand(s) % ((uint64_t)1 << 44); break;
        default: v[i] = ap_test_rand(s) >> (19 + ap_test_rand(s) % 45); break;   /* 0..2^45 */
        }
    }
    static const char *names[] = {"uniform", "lognormal", "constant", "small", "2^44+", "scales"};
    return names[d];
}

static ap_hist *hist_of(const uint64_t *v, size_t n) {
    ap_hist *h = ap_hist_new();
    if (h != NULL)
        for (size_t i = 0; i < n; i++)
            ap_hist_record(h, v[i]);
    return h;
}

static int hist_equal(const ap_hist *a, const ap_hist *b) {
    return memcmp(a, b, sizeof *a) == 0;
}

AP_TEST(hist_bucket_layout) {
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++) {
        uint64_t lo = ap_hist_bucket_low(i), hi = ap_hist_bucket_high(i);
        if (!AP_CHECK(lo <= hi) || !AP_CHECK_EQ_U64(ap_hist_bucket_index(lo), i) ||
            !AP_CHECK_EQ_U64(ap_hist_bucket_index(hi), i))
            return;
        if (i + 1 < AP_HIST_BUCKETS && !AP_CHECK_EQ_U64(ap_hist_bucket_low(i + 1), hi + 1))
            return;
        if (i < 128)
            AP_CHECK_EQ_U64(lo, hi);
        else if (!AP_CHECK((double)(hi - lo + 1) / (double)lo <= 1.0 / 128))
            return;
    }
    AP_CHECK_EQ_U64(ap_hist_bucket_high(AP_HIST_BUCKETS - 1), ((uint64_t)1 << 45) - 1);
    AP_CHECK(ap_hist_bucket_index((uint64_t)1 << 44) < AP_HIST_BUCKETS - 1);
    AP_CHECK_EQ_U64(ap_hist_bucket_index(UINT64_MAX), AP_HIST_BUCKETS - 1);
    AP_CHECK_EQ_U64(ap_hist_bucket_index(0), 0);
}

AP_TEST(hist_empty) {
    ap_hist h;
    ap_hist_init(&h);
    AP_CHECK_EQ_U64(ap_hist_count(&h), 0);
    AP_CHECK_EQ_U64(ap_hist_min(&h), 0);
    AP_CHECK_EQ_U64(ap_hist_max(&h), 0);
    AP_CHECK_EQ_U64(ap_hist_sum(&h), 0);
    AP_CHECK(ap_hist_mean(&h) == 0.0);
    AP_CHECK_EQ_U64(ap_hist_percentile(&h, 50), 0);
    AP_CHECK_EQ_U64(ap_hist_percentile(&h, 100), 0);
    AP_CHECK_EQ_U64(h.min, UINT64_MAX);
}

AP_TEST(hist_percentiles) {
    static const double ps[] = {0, 0.001, 0.1, 1, 5, 10, 25, 33.3, 50, 66, 75, 90, 95,
                                99, 99.9, 99.99, 99.999, 100};
    uint64_t *v = malloc(NVALUES * sizeof *v), s = 42;
    if (!AP_CHECK(v != NULL))
        return;
    for (int d = 0; d < 6; d++) {
        const char *name = fill(v, d, &s);
        ap_hist *h = hist_of(v, NVALUES);
        if (!AP_CHECK(h != NULL))
            break;
        uint64_t sum = 0;
        for (size_t i = 0; i < NVALUES; i++)
            sum += v[i];
        qsort(v, NVALUES, sizeof *v, cmp_u64);
        AP_CHECK_EQ_U64(ap_hist_count(h), NVALUES);
        AP_CHECK_EQ_U64(ap_hist_sum(h), sum);
        AP_CHECK_EQ_U64(ap_hist_min(h), v[0]);
        AP_CHECK_EQ_U64(ap_hist_max(h), v[NVALUES - 1]);
        AP_CHECK_EQ_U64(ap_hist_percentile(h, 0), v[0]);
        AP_CHECK_EQ_U64(ap_hist_percentile(h, 100), v[NVALUES - 1]);
        for (size_t j = 0; j < sizeof ps / sizeof ps[0]; j++) {
            double r = ceil(ps[j] / 100.0 * NVALUES);
            size_t rank = r < 1 ? 1 : (size_t)r;
            uint64_t exact = v[rank - 1], got = ap_hist_percentile(h, ps[j]);
            double err = exact ? fabs((double)got - (double)exact) / (double)exact : (double)got;
            /* Documented bound: half a bucket, 1/256 of the value (< 1%). */
            AP_CHECK_MSG(err <= 1.0 / 256, "%s p%g: got %llu, exact %llu", name, ps[j],
                         (unsigned long long)got, (unsigned long long)exact);
            if (exact < 256)   /* unit-width buckets: exact */
                AP_CHECK_EQ_U64(got, exact);
        }
        ap_hist_free(h);
    }
    free(v);
}

AP_TEST(hist_clamp) {
    ap_hist h;
    ap_hist_init(&h);
    uint64_t big = UINT64_MAX / 3, huge = UINT64_MAX - 5;
    ap_hist_record(&h, big);
    ap_hist_record(&h, huge);
    ap_hist_record(&h, 7);
    AP_CHECK_EQ_U64(h.counts[AP_HIST_BUCKETS - 1], 2);
    AP_CHECK_EQ_U64(ap_hist_min(&h), 7);
    AP_CHECK_EQ_U64(ap_hist_max(&h), huge);
    AP_CHECK_EQ_U64(ap_hist_sum(&h), big + huge + 7);   /* modulo 2^64 */
    AP_CHECK_EQ_U64(ap_hist_percentile(&h, 100), huge);
    AP_CHECK_EQ_U64(ap_hist_percentile(&h, 10), 7);
    uint64_t p50 = ap_hist_percentile(&h, 50);
    AP_CHECK(p50 >= ap_hist_bucket_low(AP_HIST_BUCKETS - 1) && p50 <= huge);
}

AP_TEST(hist_record_n) {
    ap_hist a, b;
    ap_hist_init(&a);
    ap_hist_init(&b);
    ap_hist_record_n(&a, 1000, 5);
    ap_hist_record_n(&a, 999999, 0);
    for (int i = 0; i < 5; i++)
        ap_hist_record(&b, 1000);
    AP_CHECK(hist_equal(&a, &b));
    AP_CHECK_EQ_U64(ap_hist_max(&a), 1000);
    AP_CHECK(ap_hist_mean(&a) == 1000.0);
    ap_hist_reset(&a);
    AP_CHECK_EQ_U64(ap_hist_count(&a), 0);
    AP_CHECK_EQ_U64(a.min, UINT64_MAX);
}

AP_TEST(hist_merge) {
    uint64_t *v = malloc(NVALUES * sizeof *v), s = 7;
    if (!AP_CHECK(v != NULL))
        return;
    fill(v, 1, &s);
    ap_hist *whole = hist_of(v, NVALUES), *lo = hist_of(v, NVALUES / 3),
            *hi = hist_of(v + NVALUES / 3, NVALUES - NVALUES / 3);
    ap_hist *empty = ap_hist_new();
    if (AP_CHECK(whole && lo && hi && empty)) {
        ap_hist_merge(lo, empty);
        ap_hist_merge(lo, hi);
        AP_CHECK(hist_equal(lo, whole));
        ap_hist_merge(empty, whole);
        AP_CHECK(hist_equal(empty, whole));
        ap_hist_merge(lo, lo);
        AP_CHECK_EQ_U64(ap_hist_count(lo), 2 * NVALUES);
    }
    ap_hist_free(whole);
    ap_hist_free(lo);
    ap_hist_free(hi);
    ap_hist_free(empty);
    free(v);
}

/* Encode h into a malloc'd buffer of exactly the right size. */
static uint8_t *encode(const ap_hist *h, size_t *len) {
    *len = ap_hist_encoded_size(h);
    uint8_t *buf = malloc(*len);
    if (buf != NULL && ap_hist_encode(h, buf, *len) != *len) {
        free(buf);
        return NULL;
    }
    return buf;
}

AP_TEST(hist_roundtrip) {
    uint64_t *v = malloc(NVALUES * sizeof *v), s = 9;
    ap_hist *h = ap_hist_new(), *back = ap_hist_new();
    if (AP_CHECK(v && h && back)) {
        for (int d = -1; d < 6; d++) {
            ap_hist_reset(h);
            if (d >= 0) {
                fill(v, d, &s);
                for (size_t i = 0; i < NVALUES; i++)
                    ap_hist_record(h, v[i]);
            }
            if (d == 5)
                ap_hist_record(h, UINT64_MAX);
            size_t len;
            uint8_t *buf = encode(h, &len);
            if (!AP_CHECK(buf != NULL))
                break;
            if (d == -1)
                AP_CHECK_EQ_U64(len, 15);
            AP_CHECK(ap_hist_decode(back, buf, len) == 0);
            AP_CHECK(hist_equal(h, back));
            ap_err_clear();
            AP_CHECK_EQ_U64(ap_hist_encode(h, buf, len - 1), 0);
            AP_CHECK_EQ_U64(ap_err_code(), AP_ERANGE);
            free(buf);
        }
    }
    free(v);
    ap_hist_free(h);
    ap_hist_free(back);
}

/* A small but varied histogram, so that the exhaustive tests stay fast. */
static ap_hist *sample_hist(void) {
    ap_hist *h = ap_hist_new();
    uint64_t s = 3;
    if (h != NULL)
        for (int i = 0; i < 300; i++)
            ap_hist_record(h, ap_test_rand(&s) >> (ap_test_rand(&s) % 64));
    return h;
}

AP_TEST(hist_decode_truncations) {
    ap_hist *h = sample_hist(), *out = ap_hist_new(), *before = ap_hist_new();
    size_t len = 0;
    uint8_t *buf = h ? encode(h, &len) : NULL;
    if (AP_CHECK(buf && out && before)) {
        ap_hist_init(out);
        ap_hist_record(out, 5);
        *before = *out;
        AP_CHECK(ap_hist_decode(out, NULL, 0) == -1);
        for (size_t n = 0; n < len; n++) {
            uint8_t *copy = malloc(n ? n : 1);   /* exact size: ASan sees over-reads */
            memcpy(copy, buf, n);
            ap_err_clear();
            int rc = ap_hist_decode(out, copy, n);
            free(copy);
            if (!AP_CHECK_MSG(rc == -1, "truncation to %zu of %zu bytes accepted", n, len) ||
                !AP_CHECK_EQ_U64(ap_err_code(), AP_ECORRUPT) || !AP_CHECK(hist_equal(out, before)))
                break;
        }
        /* One trailing byte is rejected too. */
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, buf, len);
        longer[len] = 0;
        AP_CHECK(ap_hist_decode(out, longer, len + 1) == -1);
        free(longer);
    }
    free(buf);
    ap_hist_free(h);
    ap_hist_free(out);
    ap_hist_free(before);
}

AP_TEST(hist_decode_rejects) {
    static const struct {
        int ok;
        size_t len;
        uint8_t b[16];
    } cases[] = {
        {1, 8, {1, 1, 5, 5, 5, 1, 5, 1}},                      /* one value 5 */
        {1, 15, {1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 0}},
        {0, 8, {2, 1, 5, 5, 5, 1, 5, 1}},                      /* version */
        {0, 8, {1, 1, 5, 5, 5, 1, 5, 0}},                      /* zero bucket count */
        {0, 10, {1, 1, 5, 5, 6, 2, 5, 1, 0, 0}},               /* zero count, else consistent */
        {0, 9, {1, 1, 5, 5, 5, 1, 0xff, 0x03, 1}},             /* min not in the first bucket (511) */
        {0, 10, {1, 1, 5, 5, 5, 1, 0xff, 0xff, 0x03, 1}},      /* index out of range */
        {0, 8, {1, 1, 5, 6, 6, 1, 5, 1}},                      /* min not in the bucket */
        {0, 8, {1, 2, 5, 5, 5, 1, 5, 1}},                      /* counts do not add up */
        {0, 10, {1, 2, 5, 5, 5, 2, 5, 1, 0, 1}},               /* max not in the last bucket */
        {0, 9, {1, 1, 5, 5, 5, 1, 5, 1, 0}},                   /* trailing byte */
        {0, 6, {1, 0, 0, 5, 0, 0}},                            /* empty with a min */
        {0, 6, {1, 1, 5, 9, 5, 0}},                            /* count without buckets */
        /* a varint whose 10th byte carries bits past 2^64 */
        {0, 15, {1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0}},
    };
    ap_hist h;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ap_err_clear();
        int rc = ap_hist_decode(&h, cases[i].b, cases[i].len);
        AP_CHECK_MSG(rc == (cases[i].ok ? 0 : -1), "case %zu: rc %d", i, rc);
        if (!cases[i].ok)
            AP_CHECK_EQ_U64(ap_err_code(), AP_ECORRUPT);
    }
    AP_CHECK(ap_hist_decode(&h, cases[0].b, cases[0].len) == 0);
    AP_CHECK_EQ_U64(ap_hist_count(&h), 1);
    AP_CHECK_EQ_U64(h.counts[5], 1);
    AP_CHECK_EQ_U64(ap_hist_percentile(&h, 50), 5);
}

/* Whatever decode accepts must be a consistent histogram. */
static int hist_consistent(const ap_hist *h) {
    uint64_t total = 0;
    size_t first = AP_HIST_BUCKETS, last = 0;
    for (size_t i = 0; i < AP_HIST_BUCKETS; i++) {
        if (h->counts[i] == 0)
            continue;
        total += h->counts[i];
        if (first == AP_HIST_BUCKETS)
            first = i;
        last = i;
    }
    if (total != h->count)
        return 0;
    if (h->count == 0)
        return h->min == UINT64_MAX && h->max == 0;
    return h->min <= h->max && ap_hist_bucket_index(h->min) == first &&
           ap_hist_bucket_index(h->max) == last;
}

AP_TEST(hist_decode_mutations) {
    ap_hist *h = sample_hist(), *out = ap_hist_new(), *again = ap_hist_new();
    size_t len = 0;
    uint8_t *buf = h ? encode(h, &len) : NULL;
    uint64_t s = 11;
    unsigned accepted = 0;
    if (AP_CHECK(buf && out && again)) {
        for (int iter = 0; iter < 5000; iter++) {
            size_t n = len;
            if (iter % 5 == 4)   /* sometimes drop the tail as well */
                n = 1 + ap_test_rand(&s) % len;
            uint8_t *m = malloc(n);
            memcpy(m, buf, n);
            int flips = 1 + (int)(ap_test_rand(&s) % 3);
            for (int f = 0; f < flips; f++) {
                size_t at = ap_test_rand(&s) % n;
                m[at] = iter % 2 ? (uint8_t)ap_test_rand(&s) : m[at] ^ (uint8_t)(1u << (ap_test_rand(&s) % 8));
            }
            if (ap_hist_decode(out, m, n) == 0) {
                accepted++;
                if (!AP_CHECK_MSG(hist_consistent(out), "iteration %d: inconsistent", iter))
                    iter = 5000;
                size_t elen;
                uint8_t *e = encode(out, &elen);
                AP_CHECK(e != NULL && ap_hist_decode(again, e, elen) == 0 && hist_equal(out, again));
                free(e);
            } else {
                AP_CHECK_EQ_U64(ap_err_code(), AP_ECORRUPT);
            }
            free(m);
        }
        /* Pure noise. */
        for (int iter = 0; iter < 2000; iter++) {
            size_t n = 1 + ap_test_rand(&s) % 64;
            uint8_t *m = malloc(n);
            for (size_t i = 0; i < n; i++)
                m[i] = (uint8_t)ap_test_rand(&s);
            m[0] = AP_HIST_VERSION;
            if (ap_hist_decode(out, m, n) == 0)
                AP_CHECK(hist_consistent(out));
            free(m);
        }
    }
    AP_CHECK(accepted < 5000);   /* the checks reject most damage */
    free(buf);
    ap_hist_free(h);
    ap_hist_free(out);
    ap_hist_free(again);
}

AP_TEST(hist_alloc) {
    ap_hist *h = ap_hist_new();
    if (!AP_CHECK(h != NULL))
        return;
    AP_CHECK_EQ_U64(ap_hist_count(h), 0);
    AP_CHECK_EQ_U64(h->min, UINT64_MAX);
    ap_hist_free(h);
    ap_hist_free(NULL);
}

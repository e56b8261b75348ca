/* test_map.c -- unit tests of ap_map against a naive reference, and of ap_hash_bytes. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_map.h"
#include "ap_test.h"

#define POOL 6000
#define OPS 1000000

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Index of key in the sorted pool, or -1. */
static long pool_index(const uint64_t *pool, size_t n, uint64_t key) {
    const uint64_t *p = bsearch(&key, pool, n, sizeof *pool, cmp_u64);
    return p ? (long)(p - pool) : -1;
}

/* Every key of the map is in the reference with the same value, exactly once,
 * and the sizes agree. */
static int map_matches(const ap_map *m, const uint64_t *pool, size_t n, const uint64_t *val,
                       const unsigned char *present) {
    static unsigned char seen[POOL];
    memset(seen, 0, sizeof seen);
    size_t expected = 0, visited = 0;
    for (size_t i = 0; i < n; i++)
        expected += present[i];
    uint64_t k, v;
    for (size_t pos = 0; (pos = ap_map_next(m, pos, &k, &v)) != 0;) {
        long i = pool_index(pool, n, k);
        if (!AP_CHECK(i >= 0) || !AP_CHECK(present[i]) || !AP_CHECK(!seen[i]) ||
            !AP_CHECK_EQ_U64(v, val[i]))
            return 0;
        seen[i] = 1;
        visited++;
    }
    return AP_CHECK_EQ_U64(visited, expected) && AP_CHECK_EQ_U64(ap_map_size(m), expected);
}

AP_TEST(map_reference) {
    static uint64_t pool[POOL], val[POOL];
    static unsigned char present[POOL];
    uint64_t s = 5;
    size_t n = 0;
    pool[n++] = 0;
    pool[n++] = UINT64_MAX;
    pool[n++] = 1;
    for (uint64_t i = 1; i <= 1000; i++)   /* same low bits: stresses the mixer */
        pool[n++] = i << 32;
    while (n < POOL)
        pool[n++] = ap_test_rand(&s);
    qsort(pool, n, sizeof *pool, cmp_u64);
    size_t u = 1;
    for (size_t i = 1; i < n; i++)
        if (pool[i] != pool[u - 1])
            pool[u++] = pool[i];
    n = u;
    memset(present, 0, sizeof present);

    ap_map m;
    if (!AP_CHECK(ap_map_init(&m, 0) == 0))
        return;
    for (long op = 0; op < OPS; op++) {
        /* Bias towards a hot subset so that removals and re-inserts interleave. */
        size_t i = (size_t)(ap_test_rand(&s) % (op & 1 ? n : 300));
        uint64_t key = pool[i], x = ap_test_rand(&s);
        int ok = 1;
        switch (x % 4) {
        case 0:
            ok = AP_CHECK(ap_map_put(&m, key, x) == 0);
            present[i] = 1;
            val[i] = x;
            break;
        case 1: {
            uint64_t *p = ap_map_get(&m, key);
            ok = present[i] ? AP_CHECK(p != NULL && *p == val[i]) : AP_CHECK(p == NULL);
            break;
        }
        case 2:
            ok = AP_CHECK_EQ_U64(ap_map_remove(&m, key), present[i]);
            present[i] = 0;
            break;
        default: {
            int ins = -1;
            uint64_t *p = ap_map_upsert(&m, key, x, &ins);
            ok = AP_CHECK(p != NULL) && AP_CHECK_EQ_U64(ins, !present[i]) &&
                 AP_CHECK_EQ_U64(*p, present[i] ? val[i] : x);
            if (ok) {
                *p += 1;
                val[i] = *p;
                present[i] = 1;
            }
            break;
        }
        }
        if (!ok || (op % 100000 == 99999 && !map_matches(&m, pool, n, val, present))) {
            ap_test_fail(__FILE__, __LINE__, "diverged at operation %ld", op);
            break;
        }
    }
    AP_CHECK(map_matches(&m, pool, n, val, present));
    AP_CHECK(m.used <= m.cap * 7 / 10);
    ap_map_free(&m);
}

AP_TEST(map_growth) {
    ap_map m = {0};   /* a zeroed map is a valid empty map */
    const uint64_t N = 200000;
    int ok = 1;
    for (uint64_t i = 0; i < N && ok; i++)
        ok = AP_CHECK(ap_map_put(&m, i * 4096, i) == 0);
    AP_CHECK_EQ_U64(ap_map_size(&m), N);
    AP_CHECK((m.cap & (m.cap - 1)) == 0);
    AP_CHECK(m.used * 10 <= m.cap * 7);
    size_t missing = 0;
    for (uint64_t i = 0; i < N; i++) {
        uint64_t *p = ap_map_get(&m, i * 4096);
        missing += p == NULL || *p != i;
    }
    AP_CHECK_EQ_U64(missing, 0);
    for (uint64_t i = 0; i < N; i += 2)
        AP_CHECK_EQ_U64(ap_map_remove(&m, i * 4096), 1);
    AP_CHECK_EQ_U64(ap_map_size(&m), N / 2);
    size_t wrong = 0;
    for (uint64_t i = 0; i < N; i++)
        wrong += (ap_map_get(&m, i * 4096) != NULL) != (i % 2 == 1);
    AP_CHECK_EQ_U64(wrong, 0);
    ap_map_free(&m);
}

AP_TEST(map_iteration) {
    ap_map m;
    if (!AP_CHECK(ap_map_init(&m, 16) == 0))
        return;
    uint64_t k, v;
    AP_CHECK_EQ_U64(ap_map_next(&m, 0, &k, &v), 0);
    static unsigned char seen[1002];
    memset(seen, 0, sizeof seen);
    for (uint64_t i = 1; i <= 1000; i++)
        ap_map_put(&m, i * 0x9e3779b9u, i);
    ap_map_put(&m, 0, 1001);
    ap_map_put(&m, UINT64_MAX, 0);
    size_t visits = 0, bad = 0, last = 0;
    for (size_t pos = 0; (pos = ap_map_next(&m, pos, &k, &v)) != 0;) {
        bad += pos <= last;
        last = pos;
        visits++;
        uint64_t idx = k == UINT64_MAX ? 1002 : v;
        uint64_t want = idx == 1002 ? UINT64_MAX : idx == 1001 ? 0 : idx * 0x9e3779b9u;
        if (idx > 1002 || k != want || (idx < 1002 && seen[idx - 1]++)) {
            bad++;
            continue;
        }
    }
    AP_CHECK_EQ_U64(visits, 1002);
    AP_CHECK_EQ_U64(bad, 0);
    AP_CHECK(ap_map_next(&m, last, NULL, NULL) == 0);
    AP_CHECK(ap_map_next(&m, last + 5, &k, &v) == 0);
    ap_map_free(&m);
}

AP_TEST(map_clear_free) {
    ap_map m;
    AP_CHECK(ap_map_init(&m, 100) == 0);
    size_t cap = m.cap;
    for (uint64_t i = 0; i < 50; i++)
        ap_map_put(&m, i, i);
    ap_map_clear(&m);
    AP_CHECK_EQ_U64(ap_map_size(&m), 0);
    AP_CHECK_EQ_U64(m.cap, cap);
    AP_CHECK(ap_map_get(&m, 0) == NULL && ap_map_get(&m, 7) == NULL);
    AP_CHECK_EQ_U64(ap_map_next(&m, 0, NULL, NULL), 0);
    AP_CHECK_EQ_U64(ap_map_remove(&m, 0), 0);
    ap_map_free(&m);
    AP_CHECK(ap_map_get(&m, 3) == NULL);
    AP_CHECK_EQ_U64(ap_map_remove(&m, 3), 0);
    AP_CHECK(ap_map_put(&m, 3, 4) == 0 && *ap_map_get(&m, 3) == 4);
    ap_map_free(&m);
    ap_err_clear();
    AP_CHECK(ap_map_init(&m, SIZE_MAX) == -1);
    AP_CHECK_EQ_U64(ap_err_code(), AP_ENOMEM);
    ap_map_free(&m);
}

AP_TEST(map_hint) {
    ap_map m;
    AP_CHECK(ap_map_init(&m, 1000) == 0);
    size_t cap = m.cap;
    AP_CHECK(cap >= 1000 * 10 / 7);
    for (uint64_t i = 1; i <= 1000; i++)
        ap_map_put(&m, i, i);
    AP_CHECK_EQ_U64(m.cap, cap);   /* no rehash within the hint */
    ap_map_put(&m, 1001, 0);
    ap_map_free(&m);
}

AP_TEST(hash_bytes) {
    /* Distinct for zero runs of every length, and for every one-bit flip. */
    enum { NH = 65 + 256 };
    static uint64_t h[NH];
    unsigned char zeros[64] = {0}, buf[33];
    size_t n = 0;
    for (size_t len = 0; len <= 64; len++)
        h[n++] = ap_hash_bytes(len ? zeros : NULL, len);
    memset(buf, 0x11, sizeof buf);
    for (size_t bit = 0; bit < 256; bit++) {
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        h[n++] = ap_hash_bytes(buf, 32);
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    qsort(h, n, sizeof *h, cmp_u64);
    size_t dups = 0;
    for (size_t i = 1; i < n; i++)
        dups += h[i] == h[i - 1];
    AP_CHECK_EQ_U64(dups, 0);
    /* Deterministic and independent of alignment. */
    AP_CHECK_EQ_U64(ap_hash_bytes("apiprof:route", 13), ap_hash_bytes("apiprof:route", 13));
    memcpy(buf + 1, "apiprof:route", 13);
    AP_CHECK_EQ_U64(ap_hash_bytes(buf + 1, 13), ap_hash_bytes("apiprof:route", 13));
    AP_CHECK(ap_hash_bytes("a", 1) != ap_hash_bytes("b", 1));
    /* Low bits spread: consecutive short keys fill a 1024-slot table well. */
    static unsigned char used[1024];
    memset(used, 0, sizeof used);
    size_t distinct = 0;
    for (uint32_t i = 0; i < 1024; i++) {
        size_t b = (size_t)(ap_hash_bytes(&i, sizeof i) & 1023);
        distinct += !used[b];
        used[b] = 1;
    }
    AP_CHECK(distinct > 600);   /* random would give ~647 */
}

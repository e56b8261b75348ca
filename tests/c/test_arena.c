/* test_arena.c -- unit tests of ap_arena: alignment, oversized requests, reset and free. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ap_arena.h"
#include "ap_err.h"
#include "ap_test.h"

#define NALLOC 20000

AP_TEST(arena_alignment) {
    ap_arena a;
    ap_arena_init(&a, 4096);
    static unsigned char *ptrs[NALLOC];
    static size_t sizes[NALLOC];
    uint64_t s = 1;
    for (size_t i = 0; i < NALLOC; i++) {
        sizes[i] = ap_test_rand(&s) % 300;
        ptrs[i] = ap_arena_alloc(&a, sizes[i]);
        if (!AP_CHECK(ptrs[i] != NULL) || !AP_CHECK(((uintptr_t)ptrs[i] & 15) == 0))
            break;
        memset(ptrs[i], (int)(i & 0xff), sizes[i]);
    }
    /* No allocation overlaps another: every fill survived. */
    size_t bad = 0;
    for (size_t i = 0; i < NALLOC && ptrs[i] != NULL; i++)
        for (size_t j = 0; j < sizes[i]; j++)
            bad += ptrs[i][j] != (unsigned char)(i & 0xff);
    AP_CHECK_EQ_U64(bad, 0);
    void *z1 = ap_arena_alloc(&a, 0), *z2 = ap_arena_alloc(&a, 0);
    AP_CHECK(z1 != NULL && z2 != NULL && z1 != z2);
    ap_arena_free(&a);
}

AP_TEST(arena_big) {
    ap_arena a;
    ap_arena_init(&a, 4096);
    char *s1 = ap_arena_alloc(&a, 32);
    size_t before = ap_arena_bytes(&a);
    char *big = ap_arena_alloc(&a, 1 << 20);
    if (!AP_CHECK(s1 != NULL && big != NULL))
        return;
    AP_CHECK(((uintptr_t)big & 15) == 0);
    memset(big, 0xab, 1 << 20);
    AP_CHECK(ap_arena_bytes(&a) >= before + (1 << 20));
    /* The regular chunk keeps serving small requests after the big one. */
    char *s2 = ap_arena_alloc(&a, 32);
    AP_CHECK(s2 == s1 + 32);
    /* A request that fits is served from the current chunk whatever its
     * size; one over a quarter chunk that does not fit gets its own chunk. */
    char *q1 = ap_arena_alloc(&a, 2048);
    AP_CHECK(q1 == s2 + 32);
    char *q2 = ap_arena_alloc(&a, 2048);
    AP_CHECK(q2 != NULL && q2 != q1 + 2048);
    char *s3 = ap_arena_alloc(&a, 16);
    AP_CHECK(s3 == q1 + 2048);
    ap_arena_free(&a);
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), 0);
}

AP_TEST(arena_reset) {
    ap_arena a;
    ap_arena_init(&a, 1000);   /* rounded up to 1008 */
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), 0);
    char *first = ap_arena_alloc(&a, 100);
    size_t one_chunk = ap_arena_bytes(&a);
    AP_CHECK(one_chunk >= 1008);
    for (int i = 0; i < 1000; i++)
        AP_CHECK(ap_arena_alloc(&a, (size_t)(i % 200)) != NULL);
    AP_CHECK(ap_arena_alloc(&a, 100000) != NULL);
    AP_CHECK(ap_arena_bytes(&a) > 50 * one_chunk);
    ap_arena_reset(&a);
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), one_chunk);
    AP_CHECK(ap_arena_alloc(&a, 8) == first);
    ap_arena_reset(&a);
    ap_arena_reset(&a);
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), one_chunk);
    ap_arena_free(&a);
    /* An arena whose first chunk is oversized still resets cleanly. */
    ap_arena_init(&a, 1024);
    AP_CHECK(ap_arena_alloc(&a, 5000) != NULL);
    ap_arena_reset(&a);
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), 0);
    AP_CHECK(ap_arena_alloc(&a, 10) != NULL);
    ap_arena_free(&a);
}

AP_TEST(arena_strings) {
    ap_arena a;
    ap_arena_init(&a, 0);
    char *dirty = ap_arena_alloc(&a, 64);
    if (!AP_CHECK(dirty != NULL))
        return;
    memset(dirty, 0x5a, 64);
    ap_arena_reset(&a);
    unsigned char *z = ap_arena_calloc(&a, 64);   /* reuses the dirty bytes */
    AP_CHECK((void *)z == (void *)dirty);
    size_t nonzero = 0;
    for (int i = 0; i < 64; i++)
        nonzero += z[i] != 0;
    AP_CHECK_EQ_U64(nonzero, 0);
    const char src[] = {'a', 'b', '\0', 'c', 'd'};
    char *d = ap_arena_strdup(&a, src, sizeof src);
    AP_CHECK(d != NULL && memcmp(d, src, sizeof src) == 0 && d[sizeof src] == '\0');
    char *h = ap_arena_strdup(&a, "hello world", 5);
    AP_CHECK(h != NULL && strcmp(h, "hello") == 0);
    char *e = ap_arena_strdup(&a, NULL, 0);
    AP_CHECK(e != NULL && e[0] == '\0');
    ap_arena_free(&a);
}

AP_TEST(arena_free_enomem) {
    ap_arena a;
    ap_arena_init(&a, 256);
    ap_err_clear();
    AP_CHECK(ap_arena_alloc(&a, SIZE_MAX) == NULL);
    AP_CHECK_EQ_U64(ap_err_code(), AP_ENOMEM);
    ap_err_clear();
    AP_CHECK(ap_arena_alloc(&a, SIZE_MAX - 20) == NULL);
    AP_CHECK_EQ_U64(ap_err_code(), AP_ENOMEM);
    ap_err_clear();
    AP_CHECK(ap_arena_strdup(&a, "x", SIZE_MAX) == NULL);
    AP_CHECK_EQ_U64(ap_err_code(), AP_ENOMEM);
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), 0);
    AP_CHECK(ap_arena_alloc(&a, 10) != NULL);
    ap_arena_free(&a);
    AP_CHECK_EQ_U64(ap_arena_bytes(&a), 0);
    AP_CHECK(ap_arena_alloc(&a, 10) != NULL);   /* usable after free */
    ap_arena_free(&a);
}

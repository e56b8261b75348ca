/* test_routes.c -- unit tests of ap_routes: keys, overflow, reset, encoding and exact merge. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_routes.h"
#include "ap_test.h"
#include "ap_wait.h"

#define S(str) (str), strlen(str)

AP_TEST(routes_keys) {
    ap_routes *t = ap_routes_new(16);
    if (!AP_CHECK(t != NULL))
        return;
    ap_route_stat *a = ap_routes_get(t, S("/items/{id}"), S("GET"), 2);
    ap_route_stat *b = ap_routes_get(t, S("/items/{id}"), S("POST"), 2);
    ap_route_stat *c = ap_routes_get(t, S("/items/{id}"), S("GET"), 5);
    ap_route_stat *a2 = ap_routes_get(t, S("/items/{id}"), S("GET"), 2);
    AP_CHECK(a != NULL && b != NULL && c != NULL);
    AP_CHECK(a == a2 && a != b && a != c && b != c);
    AP_CHECK_EQ_U64(ap_routes_size(t), 3);
    AP_CHECK(strcmp(a->route, "/items/{id}") == 0 && strcmp(b->method, "POST") == 0);
    AP_CHECK_EQ_U64(c->status_class, 5);
    AP_CHECK(ap_routes_get(t, S("/x"), S("GET"), 9)->status_class == 5);
    ap_route_stat *empty = ap_routes_get(t, NULL, 0, NULL, 0, 0);
    AP_CHECK(empty != NULL && empty->route_len == 0 && empty->method[0] == '\0');
    AP_CHECK(ap_routes_get(t, NULL, 0, NULL, 0, 0) == empty);
    char long_route[AP_ROUTES_ROUTE_MAX + 50];
    memset(long_route, 'r', sizeof long_route);
    ap_route_stat *l = ap_routes_get(t, long_route, sizeof long_route, S("VERYLONGMETHODNAME!!"), 2);
    AP_CHECK_EQ_U64(l->route_len, AP_ROUTES_ROUTE_MAX);
    AP_CHECK_EQ_U64(strlen(l->method), AP_ROUTES_METHOD_MAX);
    AP_CHECK(ap_routes_get(t, long_route, AP_ROUTES_ROUTE_MAX, S("VERYLONGMETHODNAME"), 2) == l);

    ap_routes_record(a, 1000, 300, 12, 0);
    ap_routes_record(a, 3000, 100, 8, 1);
    AP_CHECK_EQ_U64(a->wall.count, 2);
    AP_CHECK_EQ_U64(a->wall.sum, 4000);
    AP_CHECK_EQ_U64(a->errors, 1);
    AP_CHECK_EQ_U64(a->cpu_ns, 400);
    AP_CHECK_EQ_U64(a->bytes_out, 20);
    ap_routes_reset(t);
    AP_CHECK_EQ_U64(a->wall.count, 0);
    AP_CHECK_EQ_U64(a->errors + a->cpu_ns + a->bytes_out, 0);
    AP_CHECK(ap_routes_get(t, S("/items/{id}"), S("GET"), 2) == a);
    ap_routes_free(t);
    ap_routes_free(NULL);
    ap_err_clear();
    AP_CHECK(ap_routes_new(0) == NULL && ap_err_code() == AP_EINVAL);
}

AP_TEST(routes_overflow) {
    ap_routes *t = ap_routes_new(3);
    if (!AP_CHECK(t != NULL))
        return;
    char name[32];
    ap_route_stat *first[3];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "/r%d", i);
        first[i] = ap_routes_get(t, S(name), S("GET"), 2);
    }
    ap_route_stat *o2 = ap_routes_get(t, S("/r3"), S("GET"), 2);
    ap_route_stat *o2b = ap_routes_get(t, S("/r4"), S("PUT"), 2);
    ap_route_stat *o4 = ap_routes_get(t, S("/r5"), S("GET"), 4);
    AP_CHECK(o2 == o2b && o2 != o4);
    AP_CHECK(strcmp(o2->route, AP_ROUTES_OVERFLOW) == 0 && strcmp(o2->method, "*") == 0);
    AP_CHECK_EQ_U64(o4->status_class, 4);
    for (int i = 0; i < 3; i++) {   /* known keys are still found */
        snprintf(name, sizeof name, "/r%d", i);
        AP_CHECK(ap_routes_get(t, S(name), S("GET"), 2) == first[i]);
    }
    AP_CHECK_EQ_U64(ap_routes_size(t), 5);
    ap_routes_free(t);
}

/* A table with a known content: 40 keys, key k recording k+1 requests. */
static ap_routes *sample_table(uint64_t seed) {
    ap_routes *t = ap_routes_new(100);
    char name[32];
    for (unsigned k = 0; k < 40; k++) {
        snprintf(name, sizeof name, "/route/%u/{x}", k % 20);
        ap_route_stat *s = ap_routes_get(t, S(name), k < 20 ? "GET" : "POST", k < 20 ? 3 : 4,
                                         k % 6);
        for (unsigned j = 0; j <= k; j++)
            ap_routes_record(s, ap_test_rand(&seed) % 100000000u, j, 100 + j, j % 3 == 0);
        if (k % 3 == 0) {
            uint64_t w[AP_WAIT_COUNT] = {0};
            w[AP_WAIT_NETWORK] = 10 * k + seed % 7;
            w[AP_WAIT_SLEEP] = k;
            ap_routes_add_waits(s, w, AP_WAIT_COUNT);
        }
        if (k % 4 == 0) {
            ap_routes_add_memory(s, 1000 * k + 7, 10 * k);
            ap_routes_free_memory(s, k);
        }
        if (k % 5 == 1)
            ap_routes_add_stalls(s, k, 60000000u * k, 60000000u + (seed % 1000), NULL);
    }
    return t;
}

static uint8_t *encode(const ap_routes *t, size_t *len) {
    *len = ap_routes_encoded_size(t);
    uint8_t *buf = malloc(*len);
    size_t w = ap_routes_encode(t, buf, *len);
    AP_CHECK_EQ_U64(w, *len);
    return buf;
}

AP_TEST(routes_roundtrip_merge) {
    ap_routes *a = sample_table(1), *b = sample_table(2);
    size_t la, lb;
    uint8_t *ea = encode(a, &la), *eb = encode(b, &lb);
    AP_CHECK(ap_routes_encode(a, ea, la - 1) == 0 && ap_err_code() == AP_ERANGE);
    ap_routes *m = ap_routes_new(100);
    AP_CHECK(ap_routes_merge_encoded(m, ea, la) == 0);
    AP_CHECK(ap_routes_merge_encoded(m, eb, lb) == 0);
    AP_CHECK_EQ_U64(ap_routes_size(m), 40);
    for (size_t i = 0; i < ap_routes_size(a); i++) {
        const ap_route_stat *x = ap_routes_at(a, i), *y = ap_routes_at(b, i);
        ap_route_stat *z = ap_routes_get(m, x->route, x->route_len, x->method, strlen(x->method),
                                         x->status_class);
        ap_hist want = x->wall;
        ap_hist_merge(&want, &y->wall);
        AP_CHECK(memcmp(&want, &z->wall, sizeof want) == 0);
        AP_CHECK_EQ_U64(z->errors, x->errors + y->errors);
        AP_CHECK_EQ_U64(z->cpu_ns, x->cpu_ns + y->cpu_ns);
        AP_CHECK_EQ_U64(z->bytes_out, x->bytes_out + y->bytes_out);
        AP_CHECK_EQ_U64(z->waited, x->waited + y->waited);
        for (unsigned k = 0; k < AP_ROUTES_WAITS; k++)
            AP_CHECK_EQ_U64(z->wait_ns[k], x->wait_ns[k] + y->wait_ns[k]);
        AP_CHECK_EQ_U64(z->mem_requests, x->mem_requests + y->mem_requests);
        AP_CHECK_EQ_U64(z->alloc_bytes, x->alloc_bytes + y->alloc_bytes);
        AP_CHECK_EQ_U64(z->retained_bytes, x->retained_bytes + y->retained_bytes);
        AP_CHECK_EQ_U64(z->live_bytes, x->live_bytes + y->live_bytes);
        AP_CHECK_EQ_U64(z->retained_max, x->retained_max > y->retained_max ? x->retained_max
                                                                              : y->retained_max);
        AP_CHECK_EQ_U64(z->stalls, x->stalls + y->stalls);
        AP_CHECK_EQ_U64(z->stall_ns, x->stall_ns + y->stall_ns);
        AP_CHECK_EQ_U64(z->stall_max_ns, x->stall_max_ns > y->stall_max_ns ? x->stall_max_ns
                                                                              : y->stall_max_ns);
    }
    /* the memory of one request: what it kept is live until freed, never below zero */
    const ap_route_stat *k0 = ap_routes_at(m, 0);
    AP_CHECK_EQ_U64(k0->mem_requests, 2);
    AP_CHECK_EQ_U64(k0->alloc_bytes, 7 + 7);
    AP_CHECK_EQ_U64(k0->retained_bytes + k0->live_bytes, 0);
    ap_route_stat *k4 = ap_routes_get(a, S("/route/4/{x}"), S("GET"), 4);
    AP_CHECK(k4 == ap_routes_at(a, 4));
    AP_CHECK_EQ_U64(k4->retained_bytes, 40);
    AP_CHECK_EQ_U64(k4->live_bytes, 36);
    AP_CHECK_EQ_U64(k4->retained_max, 40);
    ap_routes_add_memory(k4, 10, 5);
    ap_routes_add_memory(k4, 100, 50);
    AP_CHECK_EQ_U64(k4->retained_max, 50);
    AP_CHECK_EQ_U64(k4->live_bytes, 36 + 5 + 50);
    ap_routes_free_memory(k4, 100);
    AP_CHECK_EQ_U64(k4->live_bytes, 0);
    /* a reset table encodes no entries */
    ap_routes_reset(a);
    size_t le;
    uint8_t *ee = encode(a, &le);
    AP_CHECK_EQ_U64(le, 9);
    AP_CHECK(ap_routes_merge_encoded(m, ee, le) == 0);
    AP_CHECK_EQ_U64(ap_routes_size(m), 40);
    free(ee);
    free(ea);
    free(eb);
    ap_routes_free(a);
    ap_routes_free(b);
    ap_routes_free(m);
}

AP_TEST(routes_decode_rejects) {
    ap_routes *a = sample_table(3);
    size_t len;
    uint8_t *buf = encode(a, &len);
    ap_routes *m = ap_routes_new(100);
    /* every truncation fails cleanly and leaves the table untouched */
    for (size_t cut = 0; cut < len; cut++) {
        ap_err_clear();
        if (!AP_CHECK(ap_routes_merge_encoded(m, buf, cut) == -1) ||
            !AP_CHECK_EQ_U64(ap_err_code(), AP_ECORRUPT))
            break;
    }
    AP_CHECK_EQ_U64(ap_routes_size(m), 0);
    AP_CHECK(ap_routes_merge_encoded(m, NULL, 0) == -1);
    /* trailing byte, bad magic, bad version */
    uint8_t *big = malloc(len + 1);
    memcpy(big, buf, len);
    big[len] = 0;
    AP_CHECK(ap_routes_merge_encoded(m, big, len + 1) == -1);
    big[0] = 'X';
    AP_CHECK(ap_routes_merge_encoded(m, big, len) == -1);
    memcpy(big, buf, len);
    big[4] = AP_ROUTES_VERSION + 1;
    AP_CHECK(ap_routes_merge_encoded(m, big, len) == -1);
    big[4] = 0;
    AP_CHECK(ap_routes_merge_encoded(m, big, len) == -1);
    /* random single-byte mutations never crash; accepted ones keep errors <= count */
    uint64_t seed = 99;
    for (int i = 0; i < 3000; i++) {
        memcpy(big, buf, len);
        big[ap_test_rand(&seed) % len] ^= (uint8_t)(1 + ap_test_rand(&seed) % 255);
        ap_routes *x = ap_routes_new(100);
        if (ap_routes_merge_encoded(x, big, len) == 0) {
            for (size_t j = 0; j < ap_routes_size(x); j++) {
                AP_CHECK(ap_routes_at(x, j)->errors <= ap_routes_at(x, j)->wall.count);
                AP_CHECK(ap_routes_at(x, j)->mem_requests <= ap_routes_at(x, j)->wall.count);
            }
        } else {
            AP_CHECK_EQ_U64(ap_routes_size(x), 0);
        }
        ap_routes_free(x);
    }
    free(big);
    free(buf);
    ap_routes_free(a);
    ap_routes_free(m);
}

/* Versions 1 (before waits) and 2 (before memory) are still read; a wait kind a reader
 * does not know is dropped. */
AP_TEST(routes_reads_version_1_and_unknown_kinds) {
    ap_routes *a = ap_routes_new(4);
    ap_route_stat *s = ap_routes_get(a, S("/v"), S("GET"), 2);
    ap_routes_record(s, 5000, 100, 7, 0);
    uint64_t w[AP_WAIT_COUNT] = {0};
    w[AP_WAIT_DATABASE] = 900;
    ap_routes_add_waits(s, w, AP_WAIT_COUNT);
    ap_routes_add_memory(s, 4096, 512);
    uint64_t b1[AP_ROUTES_STALL_BUCKETS] = {0}, b2[AP_ROUTES_STALL_BUCKETS] = {0};
    b1[ap_routes_stall_bucket(100000000u)]++;   /* <= 100 ms: bucket 3 */
    b1[ap_routes_stall_bucket(50000000u)]++;    /* <= 50 ms: bucket 2 */
    b2[ap_routes_stall_bucket(70000000u)]++;
    AP_CHECK_EQ_U64(ap_routes_stall_bucket(100000000u), 3);
    AP_CHECK_EQ_U64(ap_routes_stall_bucket(50000001u), 3);
    AP_CHECK_EQ_U64(ap_routes_stall_bucket(0), 0);
    AP_CHECK_EQ_U64(ap_routes_stall_bucket(UINT64_MAX), AP_ROUTES_STALL_BUCKETS - 1);
    ap_routes_add_stalls(s, 2, 150000000u, 100000000u, b1);
    ap_routes_add_stalls(s, 1, 70000000u, 70000000u, b2);
    size_t len;
    uint8_t *buf = encode(a, &len);
    /* the stall delays and sites are the last 3 x 8 + 1 bytes (no site), the stall
     * durations the 1 + 10 x 8 bytes
     * before, the memory and stalls the 8 x 8 before, the waits the 8 + 1 + (1 + 8 + 8)
     * before those: strip them for version-4, -3, -2 and -1 copies */
    len -= 3 * 8 + 1;
    size_t blen = 1 + AP_ROUTES_STALL_BUCKETS * 8, mlen = 8 * 8 + blen;
    size_t wlen = 8 + 1 + 1 + strlen("database") + 8;
    uint8_t *v1 = malloc(len);
    memcpy(v1, buf, len - mlen - wlen);
    v1[4] = 1;
    ap_routes *m = ap_routes_new(4);
    AP_CHECK(ap_routes_merge_encoded(m, v1, len - mlen - wlen) == 0);
    const ap_route_stat *r = ap_routes_at(m, 0);
    AP_CHECK_EQ_U64(r->wall.count, 1);
    AP_CHECK_EQ_U64(r->waited + r->wait_ns[AP_WAIT_DATABASE], 0);
    memcpy(v1, buf, len - mlen);
    v1[4] = 2;
    AP_CHECK(ap_routes_merge_encoded(m, v1, len - mlen) == 0);
    AP_CHECK_EQ_U64(r->waited, 1);
    AP_CHECK_EQ_U64(r->mem_requests + r->alloc_bytes + r->stalls, 0);
    buf[4] = 4;   /* version 4: no stall sites */
    AP_CHECK(ap_routes_merge_encoded(m, buf, len) == 0);
    AP_CHECK_EQ_U64(r->waited, 2);
    AP_CHECK_EQ_U64(r->wait_ns[AP_WAIT_DATABASE], 1800);
    AP_CHECK_EQ_U64(r->mem_requests, 1);
    AP_CHECK_EQ_U64(r->alloc_bytes, 4096);
    AP_CHECK_EQ_U64(r->retained_bytes, 512);
    AP_CHECK_EQ_U64(r->live_bytes, 512);
    AP_CHECK_EQ_U64(r->retained_max, 512);
    AP_CHECK_EQ_U64(r->stalls, 3);
    AP_CHECK_EQ_U64(r->stall_ns, 220000000u);
    AP_CHECK_EQ_U64(r->stall_max_ns, 100000000u);
    AP_CHECK_EQ_U64(r->stall_buckets[2], 1);
    AP_CHECK_EQ_U64(r->stall_buckets[3], 2);
    /* version 3: stalls without durations; merged with version 4, the durations of those
     * that have them, and so when written again */
    memcpy(v1, buf, len - blen);
    v1[4] = 3;
    ap_routes *m3 = ap_routes_new(4);
    AP_CHECK(ap_routes_merge_encoded(m3, v1, len - blen) == 0);
    const ap_route_stat *r3 = ap_routes_at(m3, 0);
    AP_CHECK_EQ_U64(r3->stalls, 3);
    AP_CHECK_EQ_U64(r3->stall_buckets[2] + r3->stall_buckets[3], 0);
    AP_CHECK(ap_routes_merge_encoded(m3, buf, len) == 0);
    AP_CHECK_EQ_U64(r3->stalls, 6);
    AP_CHECK_EQ_U64(r3->stall_buckets[2], 1);
    AP_CHECK_EQ_U64(r3->stall_buckets[3], 2);
    size_t len3;
    uint8_t *again = encode(m3, &len3);
    ap_routes *m4 = ap_routes_new(4);
    AP_CHECK(ap_routes_merge_encoded(m4, again, len3) == 0);
    AP_CHECK_EQ_U64(ap_routes_at(m4, 0)->stalls, 6);
    AP_CHECK_EQ_U64(ap_routes_at(m4, 0)->stall_buckets[3], 2);
    /* more durations than stalls, or another bucket count: corrupt, nothing merged */
    memcpy(v1, buf, len);
    v1[len - 8] = 2;   /* the open bucket: 2 more stalls than there are */
    AP_CHECK(ap_routes_merge_encoded(m4, v1, len) == -1 && ap_err_code() == AP_ECORRUPT);
    memcpy(v1, buf, len);
    v1[len - blen] = AP_ROUTES_STALL_BUCKETS - 1;
    AP_CHECK(ap_routes_merge_encoded(m4, v1, len) == -1 && ap_err_code() == AP_ECORRUPT);
    AP_CHECK_EQ_U64(ap_routes_at(m4, 0)->stalls, 6);
    AP_CHECK_EQ_U64(ap_routes_at(m4, 0)->stall_sites[0].stalls, 0);
    free(again);
    ap_routes_free(m3);
    ap_routes_free(m4);
    /* rename the kind to one nobody knows: read, and dropped */
    uint8_t *name = NULL;
    for (size_t i = 0; i + 8 <= len && name == NULL; i++)
        if (memcmp(buf + i, "database", 8) == 0)
            name = buf + i;
    if (AP_CHECK(name != NULL)) {
        memcpy(name, "datab4se", 8);
        AP_CHECK(ap_routes_merge_encoded(m, buf, len) == 0);
        AP_CHECK_EQ_U64(r->waited, 3);
        AP_CHECK_EQ_U64(r->wait_ns[AP_WAIT_DATABASE], 1800);
        AP_CHECK_EQ_U64(r->wall.count, 4);
    }
    ap_routes_reset(m);
    AP_CHECK_EQ_U64(r->waited + r->wait_ns[AP_WAIT_DATABASE], 0);
    AP_CHECK_EQ_U64(r->mem_requests + r->alloc_bytes + r->retained_bytes + r->live_bytes, 0);
    AP_CHECK_EQ_U64(r->stalls + r->stall_ns + r->stall_max_ns, 0);
    AP_CHECK_EQ_U64(r->stall_buckets[2] + r->stall_buckets[3], 0);
    free(v1);
    free(buf);
    ap_routes_free(a);
    ap_routes_free(m);
}

/* Stall sites: counted per site, the three with the most time kept in order, merged by
 * text across tables, written and read back (version 5), and checked when read. */
AP_TEST(routes_stall_sites) {
    ap_routes *a = ap_routes_new(4);
    ap_route_stat *s = ap_routes_get(a, S("/block"), S("GET"), 2);
    ap_routes_record(s, 500000000u, 100, 7, 0);
    ap_routes_add_stalls(s, 7, 1000, 300, NULL);
    ap_routes_add_stall_site(s, S("a\tapp.py\t12\troute > a"), 2, 400, 300);
    ap_routes_add_stall_site(s, S("b\tapp.py\t20\troute > b"), 1, 100, 100);
    ap_routes_add_stall_site(s, S("c\tapp.py\t30\troute > c"), 1, 50, 50);
    ap_routes_add_stall_site(s, S("a\tapp.py\t12\troute > a"), 1, 150, 150);
    AP_CHECK(strcmp(s->stall_sites[0].text, "a\tapp.py\t12\troute > a") == 0);
    AP_CHECK_EQ_U64(s->stall_sites[0].stalls, 3);
    AP_CHECK_EQ_U64(s->stall_sites[0].ns, 550);
    AP_CHECK_EQ_U64(s->stall_sites[0].max_ns, 300);
    AP_CHECK_EQ_U64(s->stall_sites[2].ns, 50);
    ap_routes_add_stall_site(s, S("d"), 1, 40, 40);     /* less than the least: not kept */
    AP_CHECK(strcmp(s->stall_sites[2].text, "c\tapp.py\t30\troute > c") == 0);
    ap_routes_add_stall_site(s, S("e"), 1, 200, 200);   /* more: pushes c out */
    AP_CHECK(strcmp(s->stall_sites[1].text, "e") == 0);
    AP_CHECK(strcmp(s->stall_sites[2].text, "b\tapp.py\t20\troute > b") == 0);
    ap_routes_add_stall_site(s, S(""), 1, 999, 999);    /* no text, no stalls: nothing */
    ap_routes_add_stall_site(s, S("f"), 0, 999, 999);
    AP_CHECK_EQ_U64(s->stall_sites[0].ns, 550);
    char longer[AP_ROUTES_SITE_MAX + 20];
    memset(longer, 'x', sizeof longer);
    ap_route_stat *s2 = ap_routes_get(a, S("/other"), S("GET"), 2);
    ap_routes_record(s2, 1000, 1, 1, 0);
    ap_routes_add_stalls(s2, 1, 60, 60, NULL);
    ap_routes_add_stall_site(s2, longer, sizeof longer, 1, 60, 60);
    AP_CHECK_EQ_U64(s2->stall_sites[0].len, AP_ROUTES_SITE_MAX);
    /* what the stalls cost the others, and what held this key's requests up */
    ap_routes_add_stall_delays(s, 3000, 0);
    ap_routes_add_stall_delays(s2, 0, 55);
    AP_CHECK_EQ_U64(s->stall_cost_ns, 3000);
    AP_CHECK_EQ_U64(s->delayed + s2->delayed, 1);
    AP_CHECK_EQ_U64(s2->delayed_ns, 55);
    /* round trip and merge: twice the counts, the same order */
    size_t len;
    uint8_t *buf = encode(a, &len);
    ap_routes *m = ap_routes_new(4);
    AP_CHECK(ap_routes_merge_encoded(m, buf, len) == 0);
    AP_CHECK(ap_routes_merge_encoded(m, buf, len) == 0);
    const ap_route_stat *r = ap_routes_at(m, 0), *r2 = ap_routes_at(m, 1);
    AP_CHECK_EQ_U64(r->stalls, 14);
    AP_CHECK_EQ_U64(r->stall_sites[0].stalls, 6);
    AP_CHECK_EQ_U64(r->stall_sites[0].ns, 1100);
    AP_CHECK_EQ_U64(r->stall_sites[0].max_ns, 300);
    AP_CHECK(strcmp(r->stall_sites[1].text, "e") == 0);
    AP_CHECK_EQ_U64(r->stall_sites[2].stalls, 2);
    AP_CHECK_EQ_U64(r2->stall_sites[0].len, AP_ROUTES_SITE_MAX);
    AP_CHECK(memcmp(r2->stall_sites[0].text, longer, AP_ROUTES_SITE_MAX) == 0);
    AP_CHECK_EQ_U64(r->stall_cost_ns, 6000);
    AP_CHECK_EQ_U64(r2->delayed, 2);
    AP_CHECK_EQ_U64(r2->delayed_ns, 110);
    /* a file claiming more stalls at its sites than stalls: corrupt, nothing merged; a
     * site of no text: corrupt */
    uint8_t *bad = malloc(len);
    memcpy(bad, buf, len);
    uint8_t *at = NULL;
    for (size_t i = 0; i + 3 <= len && at == NULL; i++)
        if (memcmp(bad + i, "a\tapp", 5) == 0)
            at = bad + i;
    if (AP_CHECK(at != NULL)) {
        uint8_t *count = at - 2 - 3 * 8;   /* the site's stalls: u64 before ns, max, len */
        AP_CHECK_EQ_U64(count[0], 3);
        count[0] = 9;
        AP_CHECK(ap_routes_merge_encoded(m, bad, len) == -1 && ap_err_code() == AP_ECORRUPT);
        count[0] = 3;
        at[-2] = at[-1] = 0;   /* text_len 0 */
        AP_CHECK(ap_routes_merge_encoded(m, bad, len) == -1 && ap_err_code() == AP_ECORRUPT);
        memcpy(bad, buf, len);
        uint8_t *delayed = count - 1 - 2 * 8;   /* before nsites: cost, delayed, delayed_ns */
        AP_CHECK_EQ_U64(delayed[0], 0);
        delayed[0] = 2;   /* two of its one request */
        AP_CHECK(ap_routes_merge_encoded(m, bad, len) == -1 && ap_err_code() == AP_ECORRUPT);
    }
    AP_CHECK_EQ_U64(ap_routes_at(m, 0)->stalls, 14);
    ap_routes_reset(a);
    AP_CHECK_EQ_U64(s->stall_sites[0].stalls + s->stall_sites[0].len, 0);
    free(bad);
    free(buf);
    ap_routes_free(a);
    ap_routes_free(m);
}

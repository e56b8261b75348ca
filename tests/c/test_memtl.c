/* test_memtl.c -- memory over time in the model: points kept, copied by merges, saved in the native file, exported as JSON and drawn as an escaped chart. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_memtl.h"
#include "ap_prof.h"
#include "ap_sbuf.h"
#include "ap_test.h"

#define MIB (1024u * 1024u)

/* Six points, 100 ms apart, in two phases (the second named with markup);
 * the heap is unknown at the first point; the largest RSS step is the 4th
 * (+30 MiB), the largest heap step the 3rd (+20 MiB). */
static ap_prof *timeline(void) {
    ap_prof *p = ap_prof_new();
    if (p == NULL)
        return NULL;
    ap_str_id warm = ap_prof_intern(p, "warm", 4), load = ap_prof_intern(p, "<load&>", 7);
    static const uint64_t rss[] = {10, 12, 20, 50, 55, 54}, heap[] = {0, 1, 21, 30, 35, 33};
    for (size_t i = 0; i < 6; i++) {
        ap_mem_point pt = {1000000000u + i * 100000000u, rss[i] * MIB,
                           i == 0 ? AP_MEMTL_NO_HEAP : heap[i] * MIB, i < 3 ? warm : load};
        if (ap_prof_mem_add(p, &pt) != 0) {
            ap_prof_free(p);
            return NULL;
        }
    }
    return p;
}

static int same_points(const ap_prof *p, const ap_prof *q) {
    if (ap_prof_nmem(p) != ap_prof_nmem(q) || ap_prof_mem_dropped(p) != ap_prof_mem_dropped(q))
        return 0;
    for (size_t i = 0; i < ap_prof_nmem(p); i++) {
        const ap_mem_point *a = ap_prof_mem_at(p, i), *b = ap_prof_mem_at(q, i);
        if (a->t_ns != b->t_ns || a->rss_bytes != b->rss_bytes || a->heap_bytes != b->heap_bytes ||
            strcmp(ap_prof_str(p, a->phase), ap_prof_str(q, b->phase)) != 0)
            return 0;
    }
    return 1;
}

AP_TEST(memtl_model_file_and_merge) {
    ap_prof *p = timeline();
    if (!AP_CHECK(p != NULL))
        return;
    AP_CHECK_EQ_U64(ap_prof_nmem(p), 6);
    uint64_t bytes;
    AP_CHECK_EQ_U64(ap_memtl_largest_growth(p, 0, &bytes), 3);
    AP_CHECK_EQ_U64(bytes, 30 * MIB);
    AP_CHECK_EQ_U64(ap_memtl_largest_growth(p, 1, &bytes), 2);   /* not from the unknown first */
    AP_CHECK_EQ_U64(bytes, 20 * MIB);
    char path[] = "/tmp/ap_test_memtl_XXXXXX";
    int fd = mkstemp(path);
    if (!AP_CHECK(fd >= 0))
        return;
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    int trunc = -1;
    ap_prof *q = ap_prof_read(path, &trunc);
    unlink(path);
    if (AP_CHECK(q != NULL)) {
        AP_CHECK_EQ_U64(trunc, 0);
        AP_CHECK(same_points(p, q));
        ap_prof_free(q);
    }
    ap_prof *m = ap_prof_merge(p, NULL, NULL);
    if (AP_CHECK(m != NULL)) {
        AP_CHECK(same_points(p, m));
        ap_prof_free(m);
    }
    ap_prof *e = ap_prof_new();   /* no points: no growth, no chart */
    if (AP_CHECK(e != NULL)) {
        ap_sbuf sb = {0};
        ap_memtl_svg(e, &sb);
        AP_CHECK_EQ_U64(sb.len, 0);
        AP_CHECK_EQ_U64(ap_memtl_largest_growth(e, 0, &bytes), 0);
        ap_prof_free(e);
    }
    ap_prof_free(p);
}

/* A damaged MEMT payload is refused: cut anywhere, or a phase naming a
 * string the profile does not have. */
AP_TEST(memtl_decode_rejects) {
    ap_prof *p = timeline();
    if (!AP_CHECK(p != NULL))
        return;
    ap_sbuf b = {0};
    ap_memtl_encode(p, &b);
    ap_prof *q = ap_prof_new();
    if (AP_CHECK(q != NULL && !b.failed)) {
        AP_CHECK(ap_memtl_decode(q, (const uint8_t *)b.data, (const uint8_t *)b.data + b.len) ==
                     -1 &&
                 ap_err_code() == AP_ECORRUPT);
        for (size_t cut = 0; cut < b.len; cut++) {
            ap_prof *r = timeline();
            if (r == NULL)
                break;
            int rc = ap_memtl_decode(r, (const uint8_t *)b.data, (const uint8_t *)b.data + cut);
            AP_CHECK_MSG(rc == -1, "a payload cut at %zu bytes was accepted", cut);
            ap_prof_free(r);
        }
        ap_prof_free(q);
    }
    ap_sbuf_free(&b);
    ap_prof_free(p);
}

AP_TEST(memtl_json_and_chart) {
    ap_prof *p = timeline();
    if (!AP_CHECK(p != NULL))
        return;
    ap_sbuf js = {0};
    ap_memtl_json(p, &js);
    ap_sbuf_putc(&js, '\0');
    if (AP_CHECK(!js.failed)) {
        AP_CHECK(strstr(js.data, "{\"t_ns\": 1000000000, \"rss_bytes\": 10485760, "
                                 "\"heap_bytes\": null, \"phase\": \"warm\"}") != NULL);
        AP_CHECK(strstr(js.data, "\"heap_bytes\": 34603008, \"phase\": \"\\u003cload&>\"}") != NULL);
    }
    ap_sbuf svg = {0};
    ap_memtl_svg(p, &svg);
    ap_sbuf_putc(&svg, '\0');
    if (AP_CHECK(!svg.failed)) {
        AP_CHECK(strstr(svg.data, "&lt;load&amp;&gt;") != NULL);   /* the phase name, escaped */
        AP_CHECK(strstr(svg.data, "<load&>") == NULL);
        AP_CHECK(strstr(svg.data, "class=\"mt-phase0\"") != NULL);
        AP_CHECK(strstr(svg.data, "class=\"mt-phase1\"") != NULL);
        AP_CHECK(strstr(svg.data, "data-growth=\"rss\"") != NULL);
        AP_CHECK(strstr(svg.data, "data-growth=\"heap\"") != NULL);
        AP_CHECK(strstr(svg.data, "largest RSS growth: +30.0 MiB in 100 ms at 0.30 s") != NULL);
        AP_CHECK(strstr(svg.data, "largest heap growth: +20.0 MiB in 100 ms at 0.20 s") != NULL);
        AP_CHECK(strstr(svg.data, "RSS (peak 55.0 MiB)") != NULL);
    }
    ap_sbuf_free(&js);
    ap_sbuf_free(&svg);
    ap_prof_free(p);
}

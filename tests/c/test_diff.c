/* test_diff.c -- unit tests of ap_diff: functions and call paths matched across line shifts and recursion, new and vanished functions, per-request scaling, escaping in every view. */
#include <stdlib.h>
#include <string.h>

#include "ap_diff.h"
#include "ap_err.h"
#include "ap_report.h"
#include "ap_test.h"

static ap_frame_id fn(ap_prof *p, const char *q, const char *file, unsigned line) {
    ap_frame f = {ap_prof_intern(p, q, strlen(q)), ap_prof_intern(p, q, strlen(q)),
                  ap_prof_intern(p, file, strlen(file)), line, 0, AP_FRAME_PYTHON};
    return ap_prof_frame_intern(p, &f);
}

/* A node of path frames[0..n) below the root of t, with calls and self time
 * (totals are set by set_totals). */
static ap_node *path(ap_tree *t, const ap_frame_id *frames, size_t n, uint64_t calls,
                     uint64_t self) {
    ap_node *node = ap_tree_root(t);
    for (size_t i = 0; i < n; i++)
        node = ap_tree_child(t, node, frames[i]);
    node->m[AP_M_CALLS] = calls;
    node->m[AP_M_SELF_NS] = self;
    return node;
}

/* total = self + children's totals, for every node (ids are top-down). */
static void set_totals(ap_prof *p) {
    for (size_t k = 0; k < ap_prof_ntrees(p); k++) {
        ap_tree *t = ap_prof_tree_at(p, k);
        size_t n = ap_tree_nnodes(t);
        for (size_t i = n; i-- > 0;) {
            ap_node *node = (ap_node *)ap_tree_node(t, (ap_node_id)i);
            node->m[AP_M_TOTAL_NS] += node->m[AP_M_SELF_NS];
            if (i > 0)
                ((ap_node *)ap_tree_node(t, node->parent))->m[AP_M_TOTAL_NS] += node->m[AP_M_TOTAL_NS];
        }
    }
    ap_prof_finish(p);
}

static const ap_diff_row *row_of(const ap_diff *d, const char *q) {
    for (size_t i = 0; i < d->nrows; i++)
        if (strcmp(d->rows[i].qualname, q) == 0)
            return &d->rows[i];
    return NULL;
}

/* A: main -> handler (line 10) -> helper (line 30); B: the same code two
 * lines further down, helper 300 ns slower. */
AP_TEST(diff_matches_across_line_shifts) {
    ap_prof *a = ap_prof_new(), *b = ap_prof_new();
    ap_prof *ps[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        ap_prof *p = ps[s];
        ap_tree *t = ap_prof_tree_new(p, NULL, 0);
        ap_frame_id f[3] = {fn(p, "main", "/app/main.py", 1 + 2 * s),
                            fn(p, "handler", "/app/main.py", 10 + 2 * s),
                            fn(p, "helper", "/app/util.py", 30 + 2 * s)};
        path(t, f, 1, 1, 100);
        path(t, f, 2, 4, 200);
        path(t, f, 3, 4, s ? 700 : 400);
        set_totals(p);
    }
    ap_diff d;
    AP_CHECK(ap_diff_build(a, b, NULL, &d) == 0);
    AP_CHECK_EQ_U64(d.nrows, 3);
    AP_CHECK_EQ_U64(d.nmatched, 3);
    AP_CHECK_EQ_U64(d.per_request, 0);
    AP_CHECK_EQ_U64(d.key, AP_M_SELF_NS);
    AP_CHECK(strcmp(d.rows[0].qualname, "helper") == 0);   /* the largest change first */
    AP_CHECK(d.rows[0].in_a && d.rows[0].in_b);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].a[AP_M_SELF_NS], 400);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].b[AP_M_SELF_NS], 700);
    AP_CHECK_EQ_U64((uint64_t)row_of(&d, "main")->b[AP_M_TOTAL_NS], 1000);
    AP_CHECK_EQ_U64((uint64_t)row_of(&d, "main")->a[AP_M_TOTAL_NS], 700);
    ap_diff_free(&d);
    /* Every path of B has its counterpart in A. */
    const ap_tree *ta = ap_prof_tree_at(a, 0), *tb = ap_prof_tree_at(b, 0);
    ap_node_id *m = ap_diff_match_paths(a, ta, b, tb);
    AP_CHECK(m != NULL);
    for (size_t i = 0; m != NULL && i < ap_tree_nnodes(tb); i++)
        AP_CHECK_MSG(m[i] != AP_NONE &&
                         strcmp(ap_prof_frame_qualname(a, ap_tree_node(ta, m[i])->frame),
                                ap_prof_frame_qualname(b, ap_tree_node(tb, (ap_node_id)i)->frame)) == 0,
                     "node %zu unmatched", i);
    free(m);
    ap_prof_free(a);
    ap_prof_free(b);
}

/* Recursion: A runs f three levels deep, B four; paths match level by level,
 * the fourth level of B has no counterpart; f's calls add up over levels. */
AP_TEST(diff_matches_recursion_by_level) {
    ap_prof *a = ap_prof_new(), *b = ap_prof_new();
    ap_prof *ps[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        ap_prof *p = ps[s];
        ap_tree *t = ap_prof_tree_new(p, NULL, 0);
        ap_frame_id f = fn(p, "f", "/app/rec.py", 5), chain[4] = {f, f, f, f};
        for (size_t depth = 1; depth <= (size_t)(3 + s); depth++)
            path(t, chain, depth, 1, 10);
        set_totals(p);
    }
    const ap_tree *ta = ap_prof_tree_at(a, 0), *tb = ap_prof_tree_at(b, 0);
    ap_node_id *m = ap_diff_match_paths(a, ta, b, tb);
    AP_CHECK(m != NULL && ap_tree_nnodes(tb) == 5);
    if (m != NULL) {
        for (ap_node_id i = 0; i < 4; i++)
            AP_CHECK_EQ_U64(m[i], i);   /* both trees were built top-down: ids are depths */
        AP_CHECK_EQ_U64(m[4], AP_NONE);
    }
    free(m);
    ap_diff d;
    AP_CHECK(ap_diff_build(a, b, NULL, &d) == 0);
    AP_CHECK_EQ_U64(d.nrows, 1);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].a[AP_M_CALLS], 3);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].b[AP_M_CALLS], 4);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].a[AP_M_TOTAL_NS], 30);   /* outermost level only */
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].b[AP_M_TOTAL_NS], 40);
    ap_diff_free(&d);
    ap_prof_free(a);
    ap_prof_free(b);
}

/* A calls old(), B calls new() instead; a function of the same name in
 * another file is another function.  Profiles with nothing in common are
 * refused. */
AP_TEST(diff_new_and_vanished) {
    ap_prof *a = ap_prof_new(), *b = ap_prof_new();
    ap_tree *t = ap_prof_tree_new(a, NULL, 0);
    ap_frame_id fa[2] = {fn(a, "main", "/app/m.py", 1), fn(a, "old", "/app/m.py", 9)};
    path(t, fa, 1, 1, 5);
    path(t, fa, 2, 1, 50);
    set_totals(a);
    t = ap_prof_tree_new(b, NULL, 0);
    ap_frame_id fb[2] = {fn(b, "main", "/app/m.py", 1), fn(b, "new", "/app/m.py", 9)};
    ap_frame_id other[2] = {fb[0], fn(b, "old", "/app/other.py", 9)};
    path(t, fb, 1, 1, 5);
    path(t, fb, 2, 1, 80);
    path(t, other, 2, 1, 1);
    set_totals(b);
    ap_diff d;
    AP_CHECK(ap_diff_build(a, b, NULL, &d) == 0);
    AP_CHECK_EQ_U64(d.nrows, 4);
    AP_CHECK_EQ_U64(d.nmatched, 1);
    AP_CHECK(strcmp(d.rows[0].qualname, "new") == 0 && d.rows[0].in_b && !d.rows[0].in_a);
    AP_CHECK(strcmp(d.rows[1].qualname, "old") == 0 && d.rows[1].in_a && !d.rows[1].in_b);
    AP_CHECK(strcmp(d.rows[1].file, "/app/m.py") == 0);
    AP_CHECK_EQ_U64((uint64_t)d.rows[1].a[AP_M_SELF_NS], 50);
    AP_CHECK_EQ_U64((uint64_t)d.rows[1].b[AP_M_SELF_NS], 0);
    ap_diff_free(&d);
    ap_prof *c = ap_prof_new();
    t = ap_prof_tree_new(c, NULL, 0);
    ap_frame_id fc[1] = {fn(c, "unrelated", "/x.py", 1)};
    path(t, fc, 1, 1, 5);
    set_totals(c);
    AP_CHECK(ap_diff_build(a, c, NULL, &d) == -1 && ap_err_code() == AP_ENOTFOUND);
    AP_CHECK(d.rows == NULL && d.nrows == 0);
    ap_prof_free(a);
    ap_prof_free(b);
    ap_prof_free(c);
}

/* Route trees count requests: figures are per request by default, in total
 * when asked, and per request is refused when a side has no requests. */
AP_TEST(diff_per_request) {
    ap_prof *a = ap_prof_new(), *b = ap_prof_new();
    ap_prof *ps[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        ap_prof *p = ps[s];
        ap_label l = {ap_prof_intern(p, "route", 5), ap_prof_intern(p, "GET /x", 6)};
        ap_tree *t = ap_prof_tree_new(p, &l, 1);
        ap_tree_root(t)->m[AP_M_CALLS] = s ? 20 : 10;   /* requests */
        ap_frame_id f[1] = {fn(p, "handler", "/app/h.py", 3)};
        path(t, f, 1, s ? 20 : 10, s ? 4000 : 1000);   /* 100 ns a request, then 200 */
        set_totals(p);
    }
    AP_CHECK_EQ_U64(ap_diff_requests(a), 10);
    ap_diff d;
    AP_CHECK(ap_diff_build(a, b, NULL, &d) == 0);
    AP_CHECK_EQ_U64(d.per_request, 1);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].a[AP_M_SELF_NS], 100);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].b[AP_M_SELF_NS], 200);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].b[AP_M_CALLS], 1);
    ap_diff_free(&d);
    ap_diff_opts o = {.per = AP_DIFF_PER_TOTAL};
    AP_CHECK(ap_diff_build(a, b, &o, &d) == 0);
    AP_CHECK_EQ_U64(d.per_request, 0);
    AP_CHECK_EQ_U64((uint64_t)d.rows[0].b[AP_M_SELF_NS], 4000);
    ap_diff_free(&d);
    o = (ap_diff_opts){.metric = "cpu"};
    AP_CHECK(ap_diff_build(a, b, &o, &d) == -1 && ap_err_code() == AP_EINVAL);
    o = (ap_diff_opts){.metric = "nonsense"};
    AP_CHECK(ap_diff_build(a, b, &o, &d) == -1 && ap_err_code() == AP_EINVAL);
    ap_prof *c = ap_prof_new();
    ap_tree *t = ap_prof_tree_new(c, NULL, 0);
    ap_frame_id f[1] = {fn(c, "handler", "/app/h.py", 3)};
    path(t, f, 1, 1, 5);
    set_totals(c);
    o = (ap_diff_opts){.per = AP_DIFF_PER_REQUEST};
    AP_CHECK(ap_diff_build(a, c, &o, &d) == -1 && ap_err_code() == AP_EINVAL);
    AP_CHECK(ap_diff_build(a, c, NULL, &d) == 0 && d.per_request == 0);
    ap_diff_free(&d);
    ap_prof_free(a);
    ap_prof_free(b);
    ap_prof_free(c);
}

/* A hostile name appears escaped in every view. */
AP_TEST(diff_views_escape_names) {
    static const char hostile[] = "<script>alert(\"x\")</script>&]]>";
    ap_prof *a = ap_prof_new(), *b = ap_prof_new();
    ap_prof *ps[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        ap_prof *p = ps[s];
        ap_tree *t = ap_prof_tree_new(p, NULL, 0);
        ap_frame_id f[2] = {fn(p, "main", "/app/m.py", 1), fn(p, hostile, "/app/<m>.py", 2)};
        path(t, f, 1, 1, 5);
        path(t, f, 2, 1, s ? 90 : 30);
        set_totals(p);
    }
    static const char *const formats[] = {"json", "svg", "html"};
    for (size_t i = 0; i < 3; i++) {
        ap_sbuf out = {0};
        AP_CHECK(ap_diff_write(a, b, formats[i], NULL, &out) == 0);
        ap_sbuf_putc(&out, '\0');
        AP_CHECK_MSG(!out.failed && strstr(out.data, "<script>alert") == NULL,
                     "%s: the name is not escaped", formats[i]);
        AP_CHECK_MSG(!out.failed && strstr(out.data, "alert") != NULL, "%s: no name", formats[i]);
        ap_sbuf_free(&out);
    }
    ap_sbuf out = {0};
    AP_CHECK(ap_diff_write(a, b, "pdf", NULL, &out) == -1 && ap_err_code() == AP_EINVAL);
    ap_sbuf_free(&out);
    ap_prof_free(a);
    ap_prof_free(b);
}

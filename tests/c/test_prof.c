/* test_prof.c -- unit tests of the profile model: interning, trees, function table, native file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_sbuf.h"
#include "ap_test.h"

static ap_frame_id py_frame(ap_prof *p, const char *name, unsigned line) {
    ap_frame f = {ap_prof_intern(p, name, strlen(name)), ap_prof_intern(p, name, strlen(name)),
                  ap_prof_intern(p, "/x.py", 5), line, 0, AP_FRAME_PYTHON};
    return ap_prof_frame_intern(p, &f);
}

/* Push a call path below root and add calls/self/total at its end. */
static ap_node *path(ap_prof *p, ap_tree *t, const ap_frame_id *frames, size_t n, uint64_t calls,
                     uint64_t self, uint64_t total) {
    (void)p;
    ap_node *node = ap_tree_root(t);
    for (size_t i = 0; i < n; i++)
        node = ap_tree_child(t, node, frames[i]);
    node->m[AP_M_CALLS] += calls;
    node->m[AP_M_SELF_NS] += self;
    node->m[AP_M_TOTAL_NS] += total;
    return node;
}

AP_TEST(prof_intern) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return;
    AP_CHECK_EQ_U64(ap_prof_intern(p, "", 0), 0);
    ap_str_id a = ap_prof_intern(p, "abc", 3), b = ap_prof_intern(p, "abcd", 3);
    AP_CHECK_EQ_U64(a, b);
    AP_CHECK(strcmp(ap_prof_str(p, a), "abc") == 0);
    AP_CHECK(strcmp(ap_prof_str(p, 9999), "") == 0);
    ap_frame_id f1 = py_frame(p, "f", 3), f2 = py_frame(p, "f", 3), g = py_frame(p, "g", 3);
    AP_CHECK_EQ_U64(f1, f2);
    AP_CHECK(f1 != g && f1 != 0);
    ap_frame line = *ap_prof_frame(p, f1);
    line.lineno = 7;
    ap_frame_id fl = ap_prof_frame_intern(p, &line);
    AP_CHECK(fl != f1);
    AP_CHECK_EQ_U64(ap_prof_func_frame(p, fl), f1);
    for (int i = 0; i < 5000; i++) {   /* many strings: the index grows */
        char s[32];
        int n = snprintf(s, sizeof s, "s%d", i);
        ap_str_id id = ap_prof_intern(p, s, (size_t)n);
        if (!AP_CHECK(strcmp(ap_prof_str(p, id), s) == 0))
            break;
    }
    AP_CHECK_EQ_U64(ap_prof_intern(p, "abc", 3), a);
    ap_prof_free(p);
}

/* main -> fib -> fib -> fib (recursion), main -> g -> fib: cumtime once. */
static ap_prof *recursive_profile(void) {
    ap_prof *p = ap_prof_new();
    ap_frame_id main_ = py_frame(p, "main", 1), fib = py_frame(p, "fib", 10), g = py_frame(p, "g", 20);
    ap_label l = {ap_prof_intern(p, "thread", 6), ap_prof_intern(p, "MainThread", 10)};
    ap_tree *t = ap_prof_tree_new(p, &l, 1);
    ap_frame_id a[] = {main_, fib, fib, fib};
    path(p, t, a, 1, 1, 10, 1000);
    path(p, t, a, 2, 1, 100, 600);
    path(p, t, a, 3, 2, 200, 500);
    path(p, t, a, 4, 4, 300, 300);
    ap_frame_id b[] = {main_, g, fib};
    path(p, t, b, 2, 1, 50, 340);
    path(p, t, b, 3, 3, 290, 290);
    ap_prof_meta_set(p, "clock", "wall");
    return p;
}

static const ap_func_row *row_named(ap_prof *p, const ap_functab *ft, const char *name) {
    for (size_t i = 0; i < ft->nrows; i++)
        if (strcmp(ap_prof_str(p, ap_prof_frame(p, ft->rows[i].frame)->name), name) == 0)
            return &ft->rows[i];
    return NULL;
}

AP_TEST(prof_functab_recursion) {
    ap_prof *p = recursive_profile();
    if (!AP_CHECK(p != NULL))
        return;
    ap_functab ft;
    if (!AP_CHECK(ap_functab_build(p, NULL, NULL, &ft) == 0))
        return;
    AP_CHECK_EQ_U64(ft.nrows, 3);
    const ap_func_row *fib = row_named(p, &ft, "fib"), *main_ = row_named(p, &ft, "main");
    if (!AP_CHECK(fib != NULL && main_ != NULL))
        return;
    AP_CHECK_EQ_U64(fib->calls, 1 + 2 + 4 + 3);
    AP_CHECK_EQ_U64(fib->prim_calls, 1 + 3);
    AP_CHECK_EQ_U64(fib->self_ns, 100 + 200 + 300 + 290);
    AP_CHECK_EQ_U64(fib->total_ns, 600 + 290);   /* outermost occurrences only */
    AP_CHECK_EQ_U64(main_->total_ns, 1000);
    AP_CHECK(&ft.rows[0] == main_);              /* sorted by total */
    /* fib's callers: main (1 call), fib (6 calls, 2 primitive), g (3). */
    AP_CHECK_EQ_U64(fib->ncallers, 3);
    for (uint32_t i = 0; i < fib->ncallers; i++) {
        const ap_func_edge *e = &ft.edges_in[fib->callers_first + i];
        const char *caller = ap_prof_str(p, ap_prof_frame(p, ft.rows[e->caller].frame)->name);
        AP_CHECK(&ft.rows[e->callee] == fib);
        if (strcmp(caller, "fib") == 0) {
            AP_CHECK_EQ_U64(e->calls, 6);
            AP_CHECK_EQ_U64(e->prim_calls, 2);
            AP_CHECK_EQ_U64(e->total_ns, 500);
            AP_CHECK_EQ_U64(e->self_ns, 500);
            AP_CHECK_EQ_U64(e->incl[AP_M_SELF_NS], 200 + 300);   /* outermost pair's subtree */
            AP_CHECK_EQ_U64(e->incl[AP_M_CALLS], 2 + 4);
        } else if (strcmp(caller, "main") == 0) {
            AP_CHECK_EQ_U64(e->calls, 1);
            AP_CHECK_EQ_U64(e->total_ns, 600);
        } else {
            AP_CHECK(strcmp(caller, "g") == 0);
            AP_CHECK_EQ_U64(e->calls, 3);
        }
    }
    AP_CHECK_EQ_U64(main_->ncallers, 0);
    AP_CHECK_EQ_U64(main_->ncallees, 2);
    /* Inclusive sums of any metric, counted once per recursion: fib's two
     * outermost subtrees, main's whole tree (sums of self, not the recorded
     * totals). */
    AP_CHECK_EQ_U64(fib->incl[AP_M_SELF_NS], 100 + 200 + 300 + 290);
    AP_CHECK_EQ_U64(fib->incl[AP_M_CALLS], 1 + 2 + 4 + 3);
    AP_CHECK_EQ_U64(main_->incl[AP_M_SELF_NS], 10 + 100 + 200 + 300 + 50 + 290);
    AP_CHECK_EQ_U64(main_->incl[AP_M_TOTAL_NS], 1000 + 600 + 500 + 300 + 340 + 290);
    ap_functab_free(&ft);
    AP_CHECK(ap_prof_finish(p) == 0);
    const ap_tree *t = ap_prof_tree_at(p, 0);
    uint64_t prim = 0;
    for (size_t i = 0; i < ap_tree_nnodes(t); i++)
        prim += ap_tree_node(t, (ap_node_id)i)->m[AP_M_PRIM_CALLS];
    AP_CHECK_EQ_U64(prim, 1 + 1 + 1 + 3);   /* main, fib under main, g, fib under g */
    ap_prof_free(p);
}

AP_TEST(prof_merge_threads) {
    ap_prof *p = ap_prof_new();
    ap_frame_id f = py_frame(p, "work", 5);
    ap_str_id key = ap_prof_intern(p, "thread", 6);
    for (int i = 0; i < 4; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "T%d", i);
        ap_label l = {key, ap_prof_intern(p, name, (size_t)n)};
        ap_tree *t = ap_prof_tree_new(p, &l, 1);
        path(p, t, &f, 1, 1, 10, 10);
    }
    ap_prof *m = ap_prof_merge(p, NULL, NULL);
    if (!AP_CHECK(m != NULL))
        return;
    AP_CHECK_EQ_U64(ap_prof_ntrees(m), 1);
    const ap_tree *t = ap_prof_tree_at(m, 0);
    AP_CHECK_EQ_U64(ap_tree_nnodes(t), 2);
    AP_CHECK_EQ_U64(ap_tree_node(t, 1)->m[AP_M_CALLS], 4);
    AP_CHECK_EQ_U64(ap_tree_nlabels(t), 0);   /* the threads differ */
    ap_functab ft;
    AP_CHECK(ap_functab_build(p, NULL, NULL, &ft) == 0);
    AP_CHECK_EQ_U64(ft.nrows, 1);
    AP_CHECK_EQ_U64(ft.rows[0].calls, 4);
    ap_functab_free(&ft);
    ap_prof_free(m);
    ap_prof_free(p);
}

static int keep_phase(const ap_tree *t, void *arg) {
    const ap_label *want = arg;
    return ap_tree_label_get(t, want->key) == want->val;
}

/* Two threads, each with a cold and a warm tree: selecting phase=warm keeps
 * both warm trees whole (labels, ids, metrics) and nothing else. */
AP_TEST(prof_select_by_label) {
    ap_prof *p = ap_prof_new();
    ap_frame_id fr[2] = {py_frame(p, "handler", 5), py_frame(p, "hot", 9)};
    ap_str_id k_phase = ap_prof_intern(p, "phase", 5), k_thread = ap_prof_intern(p, "thread", 6);
    ap_str_id cold = ap_prof_intern(p, "cold", 4), warm = ap_prof_intern(p, "warm", 4);
    for (int i = 0; i < 4; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "T%d", i / 2);
        ap_label l[2] = {{k_thread, ap_prof_intern(p, name, (size_t)n)},
                         {k_phase, i % 2 ? warm : cold}};
        ap_tree *t = ap_prof_tree_new(p, l, 2);
        path(p, t, fr, 1, 1, 5, 50);
        path(p, t, fr, 2, (uint64_t)(i % 2 ? 7 : 3), 40, 40);
    }
    ap_label want = {k_phase, warm};
    ap_prof *s = ap_prof_select(p, keep_phase, &want);
    if (!AP_CHECK(s != NULL))
        return;
    AP_CHECK_EQ_U64(ap_prof_ntrees(s), 2);
    for (size_t i = 0; i < ap_prof_ntrees(s); i++) {
        const ap_tree *t = ap_prof_tree_at(s, i), *orig = ap_prof_tree_at(p, 2 * i + 1);
        AP_CHECK_EQ_U64(ap_tree_label_get(t, k_phase), warm);
        AP_CHECK_EQ_U64(ap_tree_label_get(t, k_thread), ap_tree_label_get(orig, k_thread));
        AP_CHECK_EQ_U64(ap_tree_nnodes(t), ap_tree_nnodes(orig));
        for (ap_node_id id = 0; id < ap_tree_nnodes(t); id++) {
            AP_CHECK_EQ_U64(ap_tree_node(t, id)->frame, ap_tree_node(orig, id)->frame);
            AP_CHECK_EQ_U64(ap_tree_node(t, id)->m[AP_M_CALLS], ap_tree_node(orig, id)->m[AP_M_CALLS]);
        }
    }
    ap_functab ft;
    AP_CHECK(ap_functab_build(s, NULL, NULL, &ft) == 0);
    for (size_t i = 0; i < ft.nrows; i++)
        if (ft.rows[i].frame == fr[1])
            AP_CHECK_EQ_U64(ft.rows[i].calls, 14);
    ap_functab_free(&ft);
    ap_prof_free(s);
    want.val = ap_prof_intern(p, "none", 4);
    s = ap_prof_select(p, keep_phase, &want);
    AP_CHECK(s != NULL && ap_prof_ntrees(s) == 0);
    ap_prof_free(s);
    ap_prof_free(p);
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

AP_TEST(prof_file_roundtrip) {
    ap_prof *p = recursive_profile();
    char path[] = "/tmp/ap_test_prof_XXXXXX";
    int fd = mkstemp(path);
    if (!AP_CHECK(fd >= 0))
        return;
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    int trunc = -1;
    ap_prof *q = ap_prof_read(path, &trunc);
    if (!AP_CHECK(q != NULL)) {
        fprintf(stderr, "%s\n", ap_err_msg());
        return;
    }
    AP_CHECK_EQ_U64(trunc, 0);
    AP_CHECK(strcmp(ap_prof_meta_get(q, "clock"), "wall") == 0);
    AP_CHECK_EQ_U64(ap_prof_nframes(q), ap_prof_nframes(p));
    AP_CHECK_EQ_U64(ap_prof_ntrees(q), 1);
    const ap_tree *a = ap_prof_tree_at(p, 0), *b = ap_prof_tree_at(q, 0);
    AP_CHECK_EQ_U64(ap_tree_nnodes(a), ap_tree_nnodes(b));
    for (size_t i = 0; i < ap_tree_nnodes(a); i++) {
        const ap_node *x = ap_tree_node(a, (ap_node_id)i), *y = ap_tree_node(b, (ap_node_id)i);
        AP_CHECK_EQ_U64(x->frame, y->frame);
        AP_CHECK_EQ_U64(x->parent, y->parent);
        AP_CHECK(memcmp(x->m, y->m, sizeof x->m) == 0);
    }
    AP_CHECK_EQ_U64(ap_tree_nlabels(b), 1);
    /* Every prefix: either rejected cleanly or read as truncated. */
    size_t len;
    uint8_t *bytes = slurp(path, &len);
    size_t readable = 0;
    for (size_t cut = 0; bytes && cut < len; cut++) {
        int t = 0;
        ap_prof *r = ap_prof_read_mem(bytes, cut, &t);
        if (r != NULL) {
            AP_CHECK(t == 1);
            readable++;
            ap_prof_free(r);
        } else {
            AP_CHECK(ap_err_code() == AP_ECORRUPT);
        }
    }
    AP_CHECK(readable > 0);
    /* A flipped byte in the tree chunk: the earlier chunks survive. */
    if (bytes && len > 40) {
        bytes[len - 20] ^= 0x55;
        int t = 0;
        ap_prof *r = ap_prof_read_mem(bytes, len, &t);
        AP_CHECK(r != NULL && t == 1);
        if (r)
            AP_CHECK_EQ_U64(ap_prof_ntrees(r), 0);
        ap_prof_free(r);
    }
    free(bytes);
    AP_CHECK(ap_prof_read("/nonexistent/x", NULL) == NULL && ap_err_code() == AP_EIO);
    AP_CHECK(ap_prof_read_mem((const uint8_t *)"hello world, not a profile", 26, NULL) == NULL);
    AP_CHECK(ap_err_code() == AP_ECORRUPT);
    unlink(path);
    ap_prof_free(q);
    ap_prof_free(p);
}

AP_TEST(prof_exports) {
    ap_prof *p = recursive_profile();
    FILE *f = tmpfile();
    if (!AP_CHECK(f != NULL))
        return;
    AP_CHECK(ap_prof_write_json(p, f) == 0);
    long n = ftell(f);
    AP_CHECK(n > 100);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    AP_CHECK(fread(s, 1, (size_t)n, f) == (size_t)n);
    AP_CHECK(strstr(s, "\"name\": \"fib\"") != NULL);
    AP_CHECK(strstr(s, "\"primitive_calls\": 4") != NULL);
    free(s);
    fclose(f);
    f = tmpfile();
    AP_CHECK(ap_prof_write_pstats(p, f) == 0);
    rewind(f);
    AP_CHECK(fgetc(f) == '{');
    fclose(f);
    ap_prof_free(p);
}

/* A line profile: root -> f (2 calls) -> lines 4 (hits 2) and 5 (hits 6), and
 * root -> g -> f: line nodes refine their function and are not calls. */
AP_TEST(prof_line_nodes) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return;
    ap_frame_id f = py_frame(p, "f", 3), g = py_frame(p, "g", 10);
    ap_frame lf = *ap_prof_frame(p, f);
    lf.lineno = 4;
    ap_frame_id l4 = ap_prof_frame_intern(p, &lf);
    lf.lineno = 5;
    ap_frame_id l5 = ap_prof_frame_intern(p, &lf);
    ap_tree *t = ap_prof_tree_new(p, NULL, 0);
    ap_node *fn = path(p, t, &f, 1, 2, 10, 310);
    ap_node *n4 = path(p, t, (ap_frame_id[]){f, l4}, 2, 0, 100, 100);
    ap_node *n5 = path(p, t, (ap_frame_id[]){f, l5}, 2, 0, 200, 200);
    n4->m[AP_M_HITS] = 2;
    n5->m[AP_M_HITS] = 6;
    n5->m[AP_M_AWAIT_NS] = 50;
    fn->m[AP_M_AWAIT_NS] = 50;
    path(p, t, &g, 1, 1, 5, 5);
    ap_node *n5b = path(p, t, (ap_frame_id[]){g, f, l5}, 3, 0, 7, 7);
    n5b->m[AP_M_HITS] = 1;
    if (!AP_CHECK(ap_prof_finish(p) == 0))
        return;
    ap_functab ft;
    if (!AP_CHECK(ap_functab_build(p, NULL, NULL, &ft) == 0))
        return;
    int seen = 0;
    for (size_t i = 0; i < ft.nrows; i++) {
        const ap_func_row *r = &ft.rows[i];
        if (r->frame == f) {
            seen++;
            AP_CHECK_EQ_U64(r->calls, 2);          /* the g -> f node has no call */
            AP_CHECK_EQ_U64(r->prim_calls, 2);
            AP_CHECK_EQ_U64(r->self_ns, 10 + 100 + 200 + 7);
            AP_CHECK_EQ_U64(r->total_ns, 310);
            AP_CHECK_EQ_U64(r->await_ns, 50);
            AP_CHECK_EQ_U64(r->ncallers, 1);       /* g; no f -> f edge from lines */
            AP_CHECK_EQ_U64(r->ncallees, 0);
        }
    }
    AP_CHECK_EQ_U64(seen, 1);
    ap_functab_free(&ft);
    char path_buf[] = "/tmp/ap_test_lines_XXXXXX";
    int fd = mkstemp(path_buf);
    if (!AP_CHECK(fd >= 0))
        return;
    close(fd);
    AP_CHECK(ap_prof_write(p, path_buf) == 0);
    ap_prof *q = ap_prof_read(path_buf, NULL);
    unlink(path_buf);
    if (!AP_CHECK(q != NULL))
        return;
    ap_line_row *rows;
    size_t n;
    if (!AP_CHECK(ap_lines_build(q, &rows, &n) == 0))
        return;
    if (AP_CHECK_EQ_U64(n, 2)) {
        AP_CHECK_EQ_U64(ap_prof_frame(q, rows[0].frame)->lineno, 4);
        AP_CHECK_EQ_U64(rows[0].hits, 2);
        AP_CHECK_EQ_U64(rows[0].time_ns, 100);
        AP_CHECK_EQ_U64(ap_prof_frame(q, rows[1].frame)->lineno, 5);
        AP_CHECK_EQ_U64(rows[1].hits, 7);
        AP_CHECK_EQ_U64(rows[1].time_ns, 207);
        AP_CHECK_EQ_U64(rows[1].await_ns, 50);
        AP_CHECK_EQ_U64(rows[1].func, f);
    }
    free(rows);
    ap_prof_free(q);
    ap_prof_free(p);
}

/* The event ring keeps the newest `capacity` events in order, counts the
 * overwritten ones, and survives the native file. */
AP_TEST(prof_event_ring) {
    ap_prof *p = recursive_profile();
    if (!AP_CHECK(p != NULL))
        return;
    ap_event e = {0, 1, 1, 0};
    ap_prof_event_add(p, &e);   /* no ring yet: ignored */
    AP_CHECK_EQ_U64(ap_prof_nevents(p), 0);
    AP_CHECK(ap_prof_events_enable(p, 0) == -1 && ap_err_code() == AP_EINVAL);
    AP_CHECK(ap_prof_events_enable(p, 4) == 0);
    for (uint64_t i = 0; i < 7; i++) {
        ap_event x = {1000 - i * 100, 10 + i, (ap_frame_id)(1 + i % 3), 0};
        ap_prof_event_add(p, &x);
    }
    AP_CHECK_EQ_U64(ap_prof_nevents(p), 4);
    AP_CHECK_EQ_U64(ap_prof_events_dropped(p), 3);
    AP_CHECK_EQ_U64(ap_prof_event_at(p, 0)->dur_ns, 13);
    AP_CHECK_EQ_U64(ap_prof_event_at(p, 3)->start_ns, 400);
    char path[] = "/tmp/ap_test_events_XXXXXX";
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
        AP_CHECK_EQ_U64(ap_prof_events_capacity(q), 4);
        AP_CHECK_EQ_U64(ap_prof_nevents(q), 4);
        AP_CHECK_EQ_U64(ap_prof_events_dropped(q), 3);
        for (size_t i = 0; i < 4; i++) {
            AP_CHECK_EQ_U64(ap_prof_event_at(q, i)->start_ns, ap_prof_event_at(p, i)->start_ns);
            AP_CHECK_EQ_U64(ap_prof_event_at(q, i)->dur_ns, ap_prof_event_at(p, i)->dur_ns);
            AP_CHECK_EQ_U64(ap_prof_event_at(q, i)->frame, ap_prof_event_at(p, i)->frame);
        }
        ap_prof_free(q);
    }
    ap_prof_free(p);
}

/* The JSON export reads back into the same model: exporting it again gives the
 * same document; every prefix and a document of another kind are refused
 * cleanly. */
AP_TEST(prof_json_roundtrip) {
    ap_prof *p = recursive_profile();
    ap_sbuf a = {0}, b = {0};
    if (!AP_CHECK(p != NULL && ap_report_write_buf(p, "json", NULL, &a) == 0))
        return;
    int t = -1;
    ap_prof *q = ap_prof_read_mem((const uint8_t *)a.data, a.len, &t);
    if (!AP_CHECK(q != NULL)) {
        fprintf(stderr, "%s\n", ap_err_msg());
        return;
    }
    AP_CHECK_EQ_U64(t, 0);
    AP_CHECK(ap_report_write_buf(q, "json", NULL, &b) == 0);
    AP_CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    AP_CHECK_EQ_U64(ap_prof_ntrees(q), ap_prof_ntrees(p));
    /* Every prefix short of the closing brace (the document ends with "}\n"). */
    AP_CHECK(a.len > 2 && a.data[a.len - 1] == '\n' && a.data[a.len - 2] == '}');
    for (size_t cut = 0; cut + 2 < a.len; cut++) {
        ap_prof *r = ap_prof_read_mem((const uint8_t *)a.data, cut, NULL);
        AP_CHECK_MSG(r == NULL && ap_err_code() == AP_ECORRUPT, "prefix %zu read", cut);
        ap_prof_free(r);
    }
    static const char *const others[] = {
        "{}", "{\"format\": \"other\", \"frames\": [], \"threads\": []}", "[1]",
        "{\"format\": \"apiprof\", \"version\": 2, \"frames\": [{}], \"threads\": []}",
        "{\"format\": \"apiprof\", \"frames\": [{}], \"threads\": [{\"nodes\": "
        "[{\"parent\": -1, \"frame\": 0}, {\"parent\": 0, \"frame\": 9}]}]}",
        "{\"format\": \"apiprof\", \"frames\": [{}], \"threads\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        ap_prof *r = ap_prof_read_mem((const uint8_t *)others[i], strlen(others[i]), NULL);
        AP_CHECK_MSG(r == NULL && ap_err_code() == AP_ECORRUPT, "document %zu read", i);
        ap_prof_free(r);
    }
    ap_sbuf_free(&a);
    ap_sbuf_free(&b);
    ap_prof_free(q);
    ap_prof_free(p);
}

/* Route latency: recorded per route, written as RLAT, read back exactly, kept by
 * merge and select, added together when a reader meets a route twice, and lost
 * only with its chunk in a file cut short (the trees before it stay). */
AP_TEST(prof_route_latency) {
    ap_prof *p = recursive_profile();
    if (!AP_CHECK(p != NULL))
        return;
    ap_str_id a = ap_prof_intern(p, "GET /a", 6), b = ap_prof_intern(p, "GET /b", 6);
    ap_hist *ha = ap_prof_latency(p, a), *hb = ap_prof_latency(p, b);
    if (!AP_CHECK(ha != NULL && hb != NULL && ap_prof_latency(p, a) == ha))
        return;
    for (uint64_t i = 1; i <= 100; i++)
        ap_hist_record(ha, i * 1000000u);   /* 1..100 ms */
    ap_hist_record(hb, 7);
    AP_CHECK_EQ_U64(ap_prof_nlatency(p), 2);
    AP_CHECK(ap_prof_latency_get(p, ap_prof_intern(p, "GET /c", 6)) == NULL);
    char path[] = "/tmp/ap_test_lat_XXXXXX";
    int fd = mkstemp(path);
    if (!AP_CHECK(fd >= 0))
        return;
    close(fd);
    AP_CHECK(ap_prof_write(p, path) == 0);
    ap_prof *q = ap_prof_read(path, NULL);
    if (AP_CHECK(q != NULL)) {
        const ap_hist *qa = ap_prof_latency_get(q, a);
        AP_CHECK(qa != NULL && memcmp(qa, ha, sizeof *qa) == 0);
        AP_CHECK(ap_prof_latency_get(q, b) != NULL && ap_hist_count(ap_prof_latency_get(q, b)) == 1);
        ap_prof *m = ap_prof_merge(q, NULL, NULL);
        AP_CHECK(m != NULL && memcmp(ap_prof_latency_get(m, a), ha, sizeof *ha) == 0);
        AP_CHECK(m != NULL && ap_prof_latency_merge(m, q) == 0);   /* twice the counts */
        AP_CHECK(m != NULL && ap_hist_count(ap_prof_latency_get(m, a)) == 200);
        ap_prof_free(m);
        m = ap_prof_select(q, NULL, NULL);
        AP_CHECK(m != NULL && ap_prof_nlatency(m) == 2);
        ap_prof_free(m);
    }
    ap_prof_free(q);
    /* The JSON export carries the histograms; its reader takes them back. */
    FILE *f = tmpfile();
    if (AP_CHECK(f != NULL) && AP_CHECK(ap_prof_write_json(p, f) == 0)) {
        long n = ftell(f);
        rewind(f);
        uint8_t *s = malloc((size_t)n);
        AP_CHECK(fread(s, 1, (size_t)n, f) == (size_t)n);
        ap_prof *j = ap_json_read(s, (size_t)n);
        /* recursive_profile has no route trees: the routes are written for their
         * histograms alone. */
        AP_CHECK(j != NULL && ap_prof_nlatency(j) == 2);
        if (j != NULL) {
            ap_str_id ja = ap_prof_intern(j, "GET /a", 6);
            AP_CHECK(ap_prof_latency_get(j, ja) != NULL &&
                     memcmp(ap_prof_latency_get(j, ja), ha, sizeof *ha) == 0);
        }
        ap_prof_free(j);
        free(s);
    }
    if (f != NULL)
        fclose(f);
    /* Every prefix reads as truncated or is refused; a reader that stops before
     * RLAT keeps the trees. */
    size_t len;
    uint8_t *bytes = slurp(path, &len);
    for (size_t cut = 16; bytes && cut < len; cut++) {
        int t = 0;
        ap_prof *r = ap_prof_read_mem(bytes, cut, &t);
        if (r != NULL) {
            AP_CHECK(t == 1);
            AP_CHECK(ap_prof_nlatency(r) == 0 || ap_prof_ntrees(r) == 1);
            ap_prof_free(r);
        }
    }
    free(bytes);
    unlink(path);
    ap_prof_free(p);
}

/* ap_prof_absorb: another profile's trees join as trees of their own, with one more
 * label, their frames, routes and queries re-interned (src interns in another order). */
AP_TEST(prof_absorb) {
    ap_prof *dst = ap_prof_new(), *src = ap_prof_new();
    if (!AP_CHECK(dst != NULL && src != NULL))
        return;
    ap_frame_id d_hot = py_frame(dst, "hot", 9);
    ap_tree *dt = ap_prof_tree_new(dst, NULL, 0);
    path(dst, dt, &d_hot, 1, 2, 10, 10);
    ap_str_id s_route = ap_prof_intern(src, "GET /a", 6);
    ap_frame_id s_fr[2] = {py_frame(src, "handler", 5), py_frame(src, "hot", 9)};
    ap_str_id k_thread = ap_prof_intern(src, "thread", 6), main = ap_prof_intern(src, "Main", 4);
    ap_label l = {k_thread, main};
    for (int i = 0; i < 2; i++)
        path(src, ap_prof_tree_new(src, &l, 1), s_fr, 2, 3, 20, 20);
    ap_hist_record(ap_prof_latency(src, s_route), 5000);
    AP_CHECK(ap_prof_query_add(src, AP_QUERY_HTTP, ap_prof_intern(src, "SELECT 1", 8), s_route,
                               s_fr[0], 7, 100, 1, 1) == 0);
    AP_CHECK(ap_prof_absorb(dst, src, "pid", "42") == 0);
    AP_CHECK(ap_prof_absorb(dst, src, "pid", "43") == 0);
    AP_CHECK_EQ_U64(ap_prof_ntrees(dst), 5);
    ap_str_id k_pid = ap_prof_intern(dst, "pid", 3), v42 = ap_prof_intern(dst, "42", 2);
    const ap_tree *t = ap_prof_tree_at(dst, 1);
    AP_CHECK_EQ_U64(ap_tree_label_get(t, k_pid), v42);
    AP_CHECK_EQ_U64(ap_tree_label_get(t, ap_prof_intern(dst, "thread", 6)),
                    ap_prof_intern(dst, "Main", 4));
    AP_CHECK_EQ_U64(ap_tree_label_get(ap_prof_tree_at(dst, 0), k_pid), AP_NONE);
    AP_CHECK_EQ_U64(ap_tree_nnodes(t), 3);
    /* The absorbed "hot" is dst's own frame: one function with every call. */
    ap_functab ft;
    AP_CHECK(ap_functab_build(dst, NULL, NULL, &ft) == 0);
    for (size_t i = 0; i < ft.nrows; i++)
        if (ft.rows[i].frame == d_hot)
            AP_CHECK_EQ_U64(ft.rows[i].calls, 2 + 4 * 3);
    ap_functab_free(&ft);
    ap_str_id d_route = ap_prof_intern(dst, "GET /a", 6);
    AP_CHECK(ap_prof_latency_get(dst, d_route) != NULL &&
             ap_hist_count(ap_prof_latency_get(dst, d_route)) == 2);
    if (AP_CHECK(ap_prof_nqueries(dst) == 1)) {
        const ap_query *q = ap_prof_query_at(dst, 0);
        AP_CHECK_EQ_U64(q->count, 2);
        AP_CHECK_EQ_U64(q->route, d_route);
        AP_CHECK_EQ_U64(q->kind, AP_QUERY_HTTP);   /* the kind travels with the record */
        AP_CHECK(strcmp(ap_prof_str(dst, q->statement), "SELECT 1") == 0);
        AP_CHECK(strcmp(ap_prof_frame_qualname(dst, q->site), "handler") == 0);
    }
    AP_CHECK(ap_prof_label_all(dst, "pid", "7") == 0);
    AP_CHECK_EQ_U64(ap_tree_label_get(ap_prof_tree_at(dst, 3), k_pid), ap_prof_intern(dst, "7", 1));
    ap_prof_free(src);
    ap_prof_free(dst);
}

/* ap_prof_query_add: each (kind, statement, route, site, line) is one record,
 * found again among many (an index, not a scan); counts and the most runs in
 * one request stay each record's own. */
AP_TEST(prof_queries_many_shapes) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return;
    enum { SHAPES = 3000 };
    ap_str_id route = ap_prof_intern(p, "GET /a", 6);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < SHAPES; i++) {
            char sql[64];
            int n = snprintf(sql, sizeof sql, "SELECT * FROM t%d WHERE id = ?", i % 1000);
            ap_str_id stmt = ap_prof_intern(p, sql, (size_t)n);
            /* shapes 0-999 in request 1; the same statements from another line: new shapes */
            AP_CHECK(ap_prof_query_add(p, i % 2 ? AP_QUERY_HTTP : AP_QUERY_STATEMENT, stmt, route,
                                       0, (uint32_t)(i / 1000), 10, 1,
                                       (uint64_t)(round + 1)) == 0);
        }
    AP_CHECK_EQ_U64(ap_prof_nqueries(p), SHAPES);
    for (size_t i = 0; i < ap_prof_nqueries(p); i++) {
        const ap_query *q = ap_prof_query_at(p, i);
        AP_CHECK_EQ_U64(q->count, 3);
        AP_CHECK_EQ_U64(q->total_ns, 30);
        AP_CHECK_EQ_U64(q->requests, 3);
        AP_CHECK_EQ_U64(q->max_per_request, 1);
        AP_CHECK_EQ_U64(q->kind, i % 2 ? AP_QUERY_HTTP : AP_QUERY_STATEMENT);
        AP_CHECK_EQ_U64(q->line, i / 1000);
    }
    ap_prof_free(p);
}

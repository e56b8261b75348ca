/* test_metric.c -- the metric catalogue, and the per-node CPU split (cpu_ns self, cpu_total_ns inclusive) through the function table and the writers. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_metric.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_test.h"
#include "ap_wait.h"

AP_TEST(metric_catalogue) {
    for (unsigned m = 0; m < AP_M_COUNT; m++) {
        const ap_metric_info *mi = ap_metric_get(m);
        if (!AP_CHECK_MSG(mi != NULL && mi->name != NULL && mi->unit != NULL && mi->label != NULL,
                          "metric %u has no entry", m))
            continue;
        AP_CHECK_EQ_U64(ap_metric_by_name(mi->name), m);
        AP_CHECK(strcmp(ap_metric_name(m), mi->name) == 0);
        if (mi->view != NULL)
            AP_CHECK_EQ_U64(ap_metric_by_view(mi->view), m);
    }
    AP_CHECK(ap_metric_get(AP_M_COUNT) == NULL && ap_metric_name(AP_M_COUNT) == NULL);
    AP_CHECK_EQ_U64(ap_metric_by_name("nope"), AP_M_COUNT);
    AP_CHECK_EQ_U64(ap_metric_by_view("wall"), AP_M_SELF_NS);
    AP_CHECK_EQ_U64(ap_metric_get(AP_M_TOTAL_NS)->sum, AP_SUM_OUTERMOST);
    AP_CHECK_EQ_U64(ap_metric_get(AP_M_CPU_TOTAL_NS)->sum, AP_SUM_OUTERMOST);
    AP_CHECK_EQ_U64(ap_metric_get(AP_M_CPU_NS)->sum, AP_SUM_ALL);
}

/* Every wait kind has a name, an inclusive metric of its own, and the
 * lookups agree. */
AP_TEST(metric_wait_kinds) {
    for (unsigned k = 0; k < AP_WAIT_COUNT; k++) {
        unsigned m = ap_wait_metric(k);
        if (!AP_CHECK_MSG(m < AP_M_COUNT && ap_wait_name(k) != NULL, "wait kind %u", k))
            continue;
        AP_CHECK_EQ_U64(ap_wait_of_metric(m), k);
        AP_CHECK_EQ_U64(ap_wait_by_name(ap_wait_name(k)), k);
        AP_CHECK_EQ_U64(ap_metric_get(m)->sum, AP_SUM_OUTERMOST);
        for (unsigned j = 0; j < k; j++)
            AP_CHECK(ap_wait_metric(j) != m);
    }
    AP_CHECK_EQ_U64(ap_wait_of_metric(AP_M_SELF_NS), AP_WAIT_COUNT);
    AP_CHECK_EQ_U64(ap_wait_by_name("nope"), AP_WAIT_COUNT);
    AP_CHECK(ap_wait_name(AP_WAIT_COUNT) == NULL);
    AP_CHECK_EQ_U64(ap_wait_metric(AP_WAIT_COUNT), AP_M_COUNT);
}

/* One node down the path frames[0..n-1] of t with the given CPU split. */
static void cpu_node(ap_tree *t, const ap_frame_id *frames, size_t n, uint64_t self,
                     uint64_t total) {
    ap_node *node = ap_tree_root(t);
    for (size_t i = 0; i < n && node != NULL; i++)
        node = ap_tree_child(t, node, frames[i]);
    if (!AP_CHECK(node != NULL))
        return;
    node->m[AP_M_CALLS] += 1;
    node->m[AP_M_SELF_NS] += self;
    node->m[AP_M_TOTAL_NS] += total;
    node->m[AP_M_CPU_NS] += self;
    node->m[AP_M_CPU_TOTAL_NS] += total;
}

/* main -> fib -> fib (recursion): cpu total is counted once per recursion,
 * cpu self over every node, and both reach the JSON export and pprof. */
AP_TEST(metric_cpu_split) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return;
    const char *file = "/app.py";
    ap_str_id fs = ap_prof_intern(p, file, strlen(file));
    ap_frame mf = {ap_prof_intern(p, "main", 4), ap_prof_intern(p, "main", 4), fs, 1, 0,
                   AP_FRAME_PYTHON};
    ap_frame ff = {ap_prof_intern(p, "fib", 3), ap_prof_intern(p, "fib", 3), fs, 10, 0,
                   AP_FRAME_PYTHON};
    ap_frame_id path[] = {ap_prof_frame_intern(p, &mf), ap_prof_frame_intern(p, &ff),
                          ap_prof_frame_intern(p, &ff)};
    ap_tree *t = ap_prof_tree_new(p, NULL, 0);
    if (!AP_CHECK(t != NULL))
        goto out;
    cpu_node(t, path, 1, 100, 1000);
    cpu_node(t, path, 2, 300, 900);
    cpu_node(t, path, 3, 600, 600);
    ap_functab ft;
    if (!AP_CHECK(ap_prof_finish(p) == 0 && ap_functab_build(p, NULL, NULL, &ft) == 0))
        goto out;
    const ap_func_row *fib = NULL;
    for (size_t i = 0; i < ft.nrows; i++)
        if (ft.rows[i].frame == path[1])
            fib = &ft.rows[i];
    if (AP_CHECK(fib != NULL)) {
        AP_CHECK_EQ_U64(fib->m[AP_M_CPU_NS], 300 + 600);
        AP_CHECK_EQ_U64(fib->m[AP_M_CPU_TOTAL_NS], 900);   /* the outer fib only */
        AP_CHECK_EQ_U64(fib->m[AP_M_TOTAL_NS], fib->total_ns);
    }
    ap_functab_free(&ft);
    ap_sbuf json = {0};
    AP_CHECK(ap_report_write_buf(p, "json", NULL, &json) == 0);
    ap_sbuf_putc(&json, '\0');
    AP_CHECK(!json.failed && strstr(json.data, "\"cpu_total_ns\": 900") != NULL);
    AP_CHECK(!json.failed && strstr(json.data, "\"cpu_total_ns\": 600") != NULL);
    ap_sbuf_free(&json);
    ap_report_opts o = {.metric = "cpu"};
    ap_sbuf pp = {0};
    AP_CHECK(ap_report_write_buf(p, "pprof", &o, &pp) == 0 && pp.len > 20);
    ap_sbuf_free(&pp);
out:
    ap_prof_free(p);
}

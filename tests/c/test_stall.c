/* test_stall.c -- event-loop stalls in the model: kept, copied by merges, saved in the native file, exported, and turned into findings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_findings.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_sbuf.h"
#include "ap_stall.h"
#include "ap_test.h"

static ap_frame_id frame(ap_prof *p, const char *qual, const char *file, uint32_t line,
                         uint32_t kind) {
    ap_frame f = {ap_prof_intern(p, qual, strlen(qual)), ap_prof_intern(p, qual, strlen(qual)),
                  ap_prof_intern(p, file, strlen(file)), line, 0, kind};
    return ap_prof_frame_intern(p, &f);
}

static ap_str_id str(ap_prof *p, const char *s) {
    return ap_prof_intern(p, s, strlen(s));
}

/* A profile with three stalls: two at the same line of one route, one in an
 * import (a cold start), and a tree so that it is a whole profile. */
static ap_prof *stalled_profile(void) {
    ap_prof *p = ap_prof_new();
    if (p == NULL)
        return NULL;
    ap_frame_id route = frame(p, "blocking", "/app/main.py", 30, AP_FRAME_PYTHON);
    ap_frame_id helper = frame(p, "pause_loop", "/app/main.py", 20, AP_FRAME_PYTHON);
    ap_frame_id sleep = frame(p, "time.sleep", "~", 0, AP_FRAME_BUILTIN);
    ap_frame_id imp = frame(p, "_find_and_load", "<frozen importlib._bootstrap>", 1165,
                            AP_FRAME_PYTHON);
    ap_label l = {str(p, "thread"), str(p, "MainThread")};
    ap_tree *t = ap_prof_tree_new(p, &l, 1);
    if (t == NULL)
        goto err;
    ap_node *n = ap_tree_child(t, ap_tree_root(t), route);
    if (n == NULL)
        goto err;
    n->m[AP_M_CALLS] = 2;
    n->m[AP_M_TOTAL_NS] = n->m[AP_M_SELF_NS] = 300000000;
    ap_frame_id stack[] = {route, helper, sleep};
    ap_stall a = {1000, 150000000, helper, 21, str(p, "MainThread"), str(p, "GET /blocking"), 0, 0, 0,
                  140000000};
    ap_stall b = a;
    b.start_ns = 500000000;
    b.dur_ns = 160000000;
    ap_stall c = {2000, 90000000, imp, 1165, a.thread, 0, str(p, "Task-1"), 0, 0, 0};
    if (ap_prof_stall_add(p, &a, stack, 3) != 0 || ap_prof_stall_add(p, &b, stack, 3) != 0 ||
        ap_prof_stall_add(p, &c, &imp, 1) != 0)
        goto err;
    return p;
err:
    ap_prof_free(p);
    return NULL;
}

static int same_stalls(const ap_prof *p, const ap_prof *q) {
    if (ap_prof_nstalls(p) != ap_prof_nstalls(q))
        return 0;
    for (size_t i = 0; i < ap_prof_nstalls(p); i++) {
        const ap_stall *a = ap_prof_stall_at(p, i), *b = ap_prof_stall_at(q, i);
        if (a->start_ns != b->start_ns || a->dur_ns != b->dur_ns || a->func != b->func ||
            a->line != b->line || a->thread != b->thread || a->route != b->route ||
            a->task != b->task || a->nstack != b->nstack || a->cpu_ns != b->cpu_ns ||
            memcmp(ap_prof_stall_stack(p, a), ap_prof_stall_stack(q, b),
                   a->nstack * sizeof(ap_frame_id)) != 0)
            return 0;
    }
    return 1;
}

/* Stalls survive the native file and merges; a stack deeper than the limit
 * keeps its innermost frames. */
AP_TEST(stall_model_and_file) {
    ap_prof *p = stalled_profile();
    if (!AP_CHECK(p != NULL))
        return;
    AP_CHECK_EQ_U64(ap_prof_nstalls(p), 3);
    AP_CHECK_EQ_U64(ap_prof_stall_at(p, 1)->start_ns, 500000000);
    AP_CHECK_EQ_U64(ap_prof_stall_at(p, 1)->cpu_ns, 140000000);   /* known... */
    AP_CHECK_EQ_U64(ap_prof_stall_at(p, 2)->cpu_ns, 0);           /* ...and unknown */
    char path[] = "/tmp/ap_test_stalls_XXXXXX";
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
        AP_CHECK(same_stalls(p, q));
        ap_prof_free(q);
    }
    ap_prof *m = ap_prof_merge(p, NULL, NULL);
    if (AP_CHECK(m != NULL)) {
        AP_CHECK(same_stalls(p, m));
        ap_prof_free(m);
    }
    ap_frame_id deep[AP_STALL_STACK_MAX + 5];
    for (size_t i = 0; i < AP_STALL_STACK_MAX + 5; i++)
        deep[i] = (ap_frame_id)(1 + i % 3);
    deep[AP_STALL_STACK_MAX + 4] = 4;
    ap_stall s = {1, 2, 1, 0, 0, 0, 0, 0, 0, 0};
    AP_CHECK(ap_prof_stall_add(p, &s, deep, AP_STALL_STACK_MAX + 5) == 0);
    const ap_stall *last = ap_prof_stall_at(p, 3);
    AP_CHECK_EQ_U64(last->nstack, AP_STALL_STACK_MAX);
    AP_CHECK_EQ_U64(ap_prof_stall_stack(p, last)[AP_STALL_STACK_MAX - 1], 4);
    ap_prof_free(p);
}

/* A damaged STLS payload is refused, not read: a stall naming a frame the
 * profile does not have. */
AP_TEST(stall_decode_rejects) {
    ap_prof *p = stalled_profile();
    if (!AP_CHECK(p != NULL))
        return;
    ap_sbuf b = {0};
    ap_stall_encode(p, &b);
    ap_prof *q = ap_prof_new();
    if (AP_CHECK(q != NULL && !b.failed)) {
        /* q has no frames but the root: every stall names a missing one */
        AP_CHECK(ap_stall_decode(q, (const uint8_t *)b.data, (const uint8_t *)b.data + b.len) ==
                     -1 &&
                 ap_err_code() == AP_ECORRUPT);
        for (size_t cut = 0; cut < b.len; cut++) {
            ap_prof *r = stalled_profile();
            if (r == NULL)
                break;
            int rc = ap_stall_decode(r, (const uint8_t *)b.data, (const uint8_t *)b.data + cut);
            AP_CHECK_MSG(rc == -1, "a payload cut at %zu bytes was accepted", cut);
            ap_prof_free(r);
        }
    }
    ap_prof_free(q);
    ap_sbuf_free(&b);
    ap_prof_free(p);
}

/* The JSON export lists every stall; the findings group the stalls of a
 * line into one and leave the import (a cold start) out. */
AP_TEST(stall_json_and_finding) {
    ap_prof *p = stalled_profile();
    ap_sbuf out = {0};
    if (!AP_CHECK(p != NULL && ap_report_write_buf(p, "json", NULL, &out) == 0))
        return;
    ap_sbuf_putc(&out, '\0');
    AP_CHECK(strstr(out.data, "\"stalls\": [") != NULL);
    AP_CHECK(strstr(out.data, "{\"start_ns\": 500000000, \"duration_ns\": 160000000, "
                              "\"function\": \"pause_loop\", \"file\": \"/app/main.py\", "
                              "\"line\": 21, \"stack\": [1, 2, 3], \"route\": \"GET /blocking\", "
                              "\"task\": null, \"thread\": \"MainThread\", "
                              "\"cpu_ns\": 140000000}") != NULL);
    AP_CHECK(strstr(out.data, "\"thread\": \"MainThread\", \"cpu_ns\": null}") != NULL);
    ap_sbuf_free(&out);
    /* A stall that happened once, at another line of the same function. */
    const ap_stall *first = ap_prof_stall_at(p, 0);
    ap_stall once = *first;
    once.start_ns = 900000000;
    once.dur_ns = 70000000;
    once.line = 25;
    ap_frame_id stack[3];
    memcpy(stack, ap_prof_stall_stack(p, first), sizeof stack);
    AP_CHECK(ap_prof_stall_add(p, &once, stack, 3) == 0);
    ap_finding *fs;
    size_t n;
    if (!AP_CHECK(ap_findings_build(p, NULL, NULL, &fs, &n) == 0)) {
        ap_prof_free(p);
        return;
    }
    size_t stalls = 0;
    for (size_t i = 0; i < n; i++) {
        if (fs[i].kind != AP_FK_LOOP_STALL)
            continue;
        stalls++;
        if (fs[i].line == 25) {   /* once: listed, as information */
            AP_CHECK_EQ_U64(fs[i].count, 1);
            AP_CHECK_EQ_U64(fs[i].severity, AP_SEV_INFO);
            AP_CHECK(strstr(fs[i].message, "(once: it may be a hiccup") != NULL);
            AP_CHECK(stalls == 2);   /* after the one that repeats */
            continue;
        }
        AP_CHECK_EQ_U64(fs[i].count, 2);
        AP_CHECK_EQ_U64(fs[i].severity, AP_SEV_HIGH);   /* it repeats */
        AP_CHECK_EQ_U64(fs[i].value, 310000000);
        AP_CHECK_EQ_U64(fs[i].line, 21);
        AP_CHECK(strcmp(ap_prof_str(p, fs[i].route), "GET /blocking") == 0);
        AP_CHECK_MSG(strstr(fs[i].message, "up to 160 ms") != NULL &&
                         strstr(fs[i].message, "app/main.py:21 (time.sleep)") != NULL,
                     "message: %s", fs[i].message);
    }
    AP_CHECK_EQ_U64(stalls, 2);
    free(fs);
    ap_prof_free(p);
}

/* Stalls whose loop thread ran for a small part of them in Python code: one
 * loop_starved finding (the GIL or a core), not a stall of the code at that line;
 * a blocking C call off the CPU stays a loop_stall that says it waited. */
AP_TEST(stall_off_the_cpu) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return;
    ap_frame_id route = frame(p, "items", "/app/main.py", 30, AP_FRAME_PYTHON);
    ap_frame_id notify = frame(p, "Condition.notify", "/usr/lib/python3.14/threading.py", 400,
                               AP_FRAME_PYTHON);
    ap_frame_id send = frame(p, "Cycle.send", "/venv/uvicorn/protocols/h11.py", 500,
                             AP_FRAME_PYTHON);
    ap_frame_id sleep = frame(p, "time.sleep", "~", 0, AP_FRAME_BUILTIN);
    ap_str_id thread = str(p, "MainThread"), r = str(p, "GET /items");
    ap_frame_id at_notify[] = {route, notify}, at_send[] = {route, send},
                at_sleep[] = {route, sleep};
    struct { const ap_frame_id *stack; ap_frame_id func; uint32_t line; uint64_t dur, cpu; } in[] = {
        {at_notify, notify, 409, 100000000, 10000000},
        {at_notify, notify, 409, 100000000, 10000000},
        {at_send, send, 520, 60000000, 1000000},
        {at_sleep, route, 33, 100000000, 100000},     /* time.sleep: a blocking call */
        {at_sleep, route, 33, 100000000, 100000},
        {at_notify, notify, 409, 100000000, 90000000}, /* on the CPU: slow code */
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        ap_stall s = {1000 + i * 200000000, in[i].dur, in[i].func, in[i].line, thread, r, 0, 0, 0,
                      in[i].cpu};
        AP_CHECK(ap_prof_stall_add(p, &s, in[i].stack, 2) == 0);
    }
    ap_finding *fs;
    size_t n;
    if (!AP_CHECK(ap_findings_build(p, NULL, NULL, &fs, &n) == 0)) {
        ap_prof_free(p);
        return;
    }
    size_t starved = 0, stalls = 0;
    for (size_t i = 0; i < n; i++) {
        if (fs[i].kind == AP_FK_LOOP_STARVED) {
            starved++;
            AP_CHECK_EQ_U64(fs[i].count, 3);
            AP_CHECK_EQ_U64(fs[i].value, 260000000);
            AP_CHECK_EQ_U64(fs[i].severity, AP_SEV_HIGH);
            AP_CHECK_EQ_U64(fs[i].line, 409);
            AP_CHECK_MSG(strstr(fs[i].message, "the event loop stalled 3 times (up to 100 ms, "
                                               "260 ms in all) while its thread ran for only 8% "
                                               "of that time: it waited for the GIL") != NULL &&
                             strstr(fs[i].message, "most often Condition.notify at "
                                                   "python3.14/threading.py:409") != NULL,
                         "message: %s", fs[i].message);
        } else if (fs[i].kind == AP_FK_LOOP_STALL) {
            stalls++;
            int waited = strstr(fs[i].message, "the rest it waited, in the call") != NULL;
            AP_CHECK_MSG(fs[i].line == 33 ? waited && fs[i].count == 2
                                          : fs[i].line == 409 && fs[i].count == 1 && !waited,
                         "message: %s", fs[i].message);
        }
    }
    AP_CHECK_EQ_U64(starved, 1);
    AP_CHECK_EQ_U64(stalls, 2);
    free(fs);
    ap_prof_free(p);
}

/* Lock waits: a route's waits at the app's line are contention (high when repeated);
 * a pool worker's wait in threading.py outside any request is it waiting for work. */
AP_TEST(lock_contention_skips_pool_machinery) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return;
    ap_frame_id reserve = frame(p, "reserve", "/app/main.py", 10, AP_FRAME_PYTHON);
    ap_frame_id app_wait = frame(p, "<lock wait>", "/app/main.py", 12, AP_FRAME_OTHER);
    ap_frame_id restore = frame(p, "Condition._acquire_restore",
                                "/usr/lib/python3.14/threading.py", 320, AP_FRAME_PYTHON);
    ap_frame_id pool_wait = frame(p, "<lock wait>", "/usr/lib/python3.14/threading.py", 326,
                                  AP_FRAME_OTHER);
    ap_label in_route[] = {{str(p, "thread"), str(p, "w1")}, {str(p, "route"), str(p, "POST /r")}};
    ap_label idle[] = {{str(p, "thread"), str(p, "w2")}};
    ap_tree *a = ap_prof_tree_new(p, in_route, 2), *b = ap_prof_tree_new(p, idle, 1);
    if (!AP_CHECK(a != NULL && b != NULL)) {
        ap_prof_free(p);
        return;
    }
    ap_node *f1 = ap_tree_child(a, ap_tree_root(a), reserve);
    ap_node *w1 = f1 ? ap_tree_child(a, f1, app_wait) : NULL;
    ap_node *f2 = ap_tree_child(b, ap_tree_root(b), restore);
    ap_node *w2 = f2 ? ap_tree_child(b, f2, pool_wait) : NULL;
    if (!AP_CHECK(w1 != NULL && w2 != NULL)) {
        ap_prof_free(p);
        return;
    }
    f1->m[AP_M_CALLS] = 4;
    f1->m[AP_M_TOTAL_NS] = 60000000;
    w1->m[AP_M_CALLS] = 3;
    w1->m[AP_M_TOTAL_NS] = w1->m[AP_M_SELF_NS] = 30000000;
    f2->m[AP_M_CALLS] = 9;
    f2->m[AP_M_TOTAL_NS] = 900000000;
    w2->m[AP_M_CALLS] = 9;
    w2->m[AP_M_TOTAL_NS] = w2->m[AP_M_SELF_NS] = 900000000;
    ap_finding *fs;
    size_t n;
    if (!AP_CHECK(ap_findings_build(p, NULL, NULL, &fs, &n) == 0)) {
        ap_prof_free(p);
        return;
    }
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (fs[i].kind != AP_FK_LOCK_CONTENTION)
            continue;
        found++;
        AP_CHECK(strcmp(ap_prof_str(p, fs[i].route), "POST /r") == 0);
        AP_CHECK_EQ_U64(fs[i].line, 12);
        AP_CHECK_EQ_U64(fs[i].count, 3);
        AP_CHECK_EQ_U64(fs[i].severity, AP_SEV_HIGH);
        AP_CHECK_MSG(strstr(fs[i].message, "(3 waits, 10 ms each)") != NULL, "message: %s",
                     fs[i].message);
    }
    AP_CHECK_EQ_U64(found, 1);
    free(fs);
    ap_prof_free(p);
}

/* test_timeline.c -- unit tests of the timeline: lanes by thread, nesting of spans, their wait kinds, the cap of the HTML report's spans. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap_prof.h"
#include "ap_test.h"
#include "ap_timeline.h"
#include "ap_wait.h"

static ap_str_id s_(ap_prof *p, const char *s) {
    return ap_prof_intern(p, s, strlen(s));
}

static ap_frame_id fr(ap_prof *p, const char *qual, const char *file, unsigned kind) {
    ap_frame f = {s_(p, qual), s_(p, qual), s_(p, file), 1, 0, kind};
    return ap_prof_frame_intern(p, &f);
}

static void ev(ap_prof *p, uint64_t start, uint64_t dur, ap_frame_id f, uint32_t tree) {
    ap_event e = {start, dur, f, tree};
    ap_prof_event_add(p, &e);
}

/* The loop thread (thread_id 1) and its route tree are one lane, a pool
 * worker (2) another, a tree without thread labels a third, a tree with no
 * events none.  Spans are added as the tracer closes them: children first. */
AP_TEST(timeline_lanes_nesting_and_kinds) {
    ap_prof *p = ap_prof_new();
    AP_CHECK(ap_prof_events_enable(p, 64) == 0);
    ap_label loop[] = {{s_(p, "thread_id"), s_(p, "1")}, {s_(p, "thread"), s_(p, "MainThread")}};
    ap_label route[] = {loop[0], loop[1], {s_(p, "route"), s_(p, "GET /x")}};
    ap_label pool[] = {{s_(p, "thread_id"), s_(p, "2")}, {s_(p, "thread"), s_(p, "worker")}};
    ap_label bare[] = {{s_(p, "phase"), s_(p, "warm")}};
    ap_prof_tree_new(p, loop, 2);    /* tree 0 */
    ap_prof_tree_new(p, route, 3);   /* tree 1 */
    ap_prof_tree_new(p, pool, 2);    /* tree 2, no events */
    ap_prof_tree_new(p, pool, 2);    /* tree 3 (same thread as 2) */
    ap_prof_tree_new(p, bare, 1);    /* tree 4 */
    ap_frame_id run = fr(p, "BaseEventLoop._run_once", "/usr/lib/python3.12/asyncio/base_events.py",
                         AP_FRAME_PYTHON);
    ap_frame_id poll = fr(p, "select.epoll.poll", "~", AP_FRAME_METHOD);
    ap_frame_id handler = fr(p, "handler", "/srv/app.py", AP_FRAME_PYTHON);
    ap_frame_id sleep = fr(p, "time.sleep", "~", AP_FRAME_BUILTIN);
    ap_frame_id lockw = fr(p, "<lock wait>", "/srv/app.py", AP_FRAME_OTHER);
    ap_frame_id work = fr(p, "work", "/srv/app.py", AP_FRAME_PYTHON);
    ev(p, 1010, 5, poll, 0);
    ev(p, 1020, 30, sleep, 1);
    ev(p, 1018, 40, handler, 1);
    ev(p, 1000, 100, run, 0);
    ev(p, 1100, 10, lockw, 3);
    ev(p, 1100, 30, work, 3);   /* same start, longer: the parent */
    ev(p, 990, 5, work, 4);
    ap_timeline tl;
    if (!AP_CHECK(ap_timeline_build(p, &tl) == 0))
        return;
    AP_CHECK_EQ_U64(tl.nspans, 7);
    AP_CHECK_EQ_U64(tl.nlanes, 3);
    AP_CHECK_EQ_U64(tl.t0, 990);
    AP_CHECK_EQ_U64(tl.lane_tree[0], 0);
    AP_CHECK_EQ_U64(tl.lane_tree[1], 2);   /* the thread's first tree, though it has no events */
    AP_CHECK_EQ_U64(tl.lane_tree[2], 4);
    /* lane 0 in order: run (0), poll (1, under run), handler (1), sleep (2) */
    const ap_tl_span *s = tl.spans;
    AP_CHECK(s[0].frame == run && s[0].lane == 0 && s[0].depth == 0 && s[0].parent == AP_NONE);
    AP_CHECK(s[0].start_ns == 10 && s[0].dur_ns == 100);
    AP_CHECK(s[1].frame == poll && s[1].depth == 1 && s[1].parent == 0);
    AP_CHECK(s[2].frame == handler && s[2].depth == 1 && s[2].parent == 0 && s[2].tree == 1);
    AP_CHECK(s[3].frame == sleep && s[3].depth == 2 && s[3].parent == 2);
    AP_CHECK(s[4].frame == work && s[4].lane == 1 && s[4].depth == 0);
    AP_CHECK(s[5].frame == lockw && s[5].lane == 1 && s[5].depth == 1 && s[5].parent == 4);
    AP_CHECK(s[6].frame == work && s[6].lane == 2 && s[6].start_ns == 0);
    AP_CHECK_EQ_U64(s[0].kind, AP_WAIT_COUNT);   /* Python steps ran */
    AP_CHECK_EQ_U64(s[1].kind, AP_WAIT_IDLE);    /* the selector with nothing to do */
    AP_CHECK_EQ_U64(s[3].kind, AP_WAIT_SLEEP);
    AP_CHECK_EQ_U64(s[5].kind, AP_WAIT_LOCK);    /* the tracer's `with lock:` wait */

    /* The page's JSON: capped at the 3 longest spans (100, 40, 30, 30: a tie
     * at the cut keeps the first in lane order), the request's outermost span
     * carries its route. */
    ap_sbuf out = {0};
    ap_timeline_json(p, &tl, 3, &out);
    ap_sbuf_putc(&out, '\0');
    AP_CHECK(!out.failed);
    AP_CHECK_MSG(strstr(out.data, "\"spans\":7,\"shown\":3,\"cut_ns\":30,") != NULL, "%s", out.data);
    AP_CHECK_MSG(strstr(out.data, "\"d\":[100,40,30]") != NULL, "%s", out.data);
    char want[64];
    snprintf(want, sizeof want, "\"r\":[0,%u,0]", s_(p, "GET /x"));
    AP_CHECK_MSG(strstr(out.data, want) != NULL, "%s", out.data);
    AP_CHECK(strstr(out.data, "{\"name\":\"MainThread\",\"id\":\"1\"") != NULL);
    AP_CHECK(strstr(out.data, "{\"name\":\"phase=warm\",\"id\":\"\"") != NULL);
    ap_sbuf_free(&out);
    ap_timeline_free(&tl);

    /* A profile without events has an empty timeline, as has one whose events
     * name no tree of it. */
    ap_prof *q = ap_prof_new();
    AP_CHECK(ap_timeline_build(q, &tl) == 0 && tl.nspans == 0 && tl.nlanes == 0);
    AP_CHECK(ap_prof_events_enable(q, 4) == 0);
    ev(q, 1, 2, 0, 7);
    AP_CHECK(ap_timeline_build(q, &tl) == 0 && tl.nspans == 0 && tl.nlanes == 0 && tl.spans == NULL);
    ap_timeline_free(&tl);
    ap_prof_free(q);
    ap_prof_free(p);
}

/* test_findings.c -- unit tests of the findings: classes of frames and nodes, blocking calls, waits, hot functions, request counts. */
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_findings.h"
#include "ap_prof.h"
#include "ap_test.h"

static ap_str_id s_(ap_prof *p, const char *s) {
    return ap_prof_intern(p, s, strlen(s));
}

static ap_frame_id fr(ap_prof *p, const char *qual, const char *file, unsigned line,
                      unsigned kind) {
    const char *dot = strrchr(qual, '.');
    ap_frame f = {s_(p, dot ? dot + 1 : qual), s_(p, qual), s_(p, file), line, 0, kind};
    return ap_prof_frame_intern(p, &f);
}

/* A node at the end of path with calls, self, total, await. */
static ap_node *at(ap_tree *t, const ap_frame_id *path, size_t n, uint64_t calls, uint64_t self,
                   uint64_t total, uint64_t await) {
    ap_node *node = ap_tree_root(t);
    for (size_t i = 0; i < n; i++)
        node = ap_tree_child(t, node, path[i]);
    node->m[AP_M_CALLS] += calls;
    node->m[AP_M_SELF_NS] += self;
    node->m[AP_M_TOTAL_NS] += total;
    node->m[AP_M_AWAIT_NS] += await;
    return node;
}

#define LIB "/venv/lib/python3.12/site-packages/"
#define MS 1000000u

/* An app on an event loop thread (thread_id 1) and a pool worker (2):
 *   loop, own tree: run_once -> select.epoll.poll (idle, 900 ms)
 *   POST /login (loop): app.__call__ (lib) -> login (user, coroutine) ->
 *       hash_password (user) -> _hashlib.pbkdf2_hmac (C, 3 x 50 ms)
 *   GET /ship (loop): ship (user) -> AsyncClient.get (lib) -> wait (lib) awaiting 400 ms
 *   GET /slow (worker): Context.run (C, root) -> slow_ep (user) -> helper (user) -> json.dumps (C)
 *   worker, own tree: WorkerThread.run -> Queue.get -> lock.acquire (idle 2 s) */
static ap_prof *app_profile(void) {
    ap_prof *p = ap_prof_new();
    ap_str_id tid = s_(p, "thread_id"), route = s_(p, "route");
    ap_label loop = {tid, s_(p, "1")}, worker = {tid, s_(p, "2")};
    ap_frame_id run_once = fr(p, "BaseEventLoop._run_once",
                              "/usr/lib/python3.12/asyncio/base_events.py", 1, AP_FRAME_PYTHON);
    ap_frame_id poll = fr(p, "select.epoll.poll", "~", 0, AP_FRAME_METHOD);
    ap_frame_id app = fr(p, "FastAPI.__call__", LIB "fastapi/applications.py", 10, AP_FRAME_PYTHON);
    ap_frame_id login = fr(p, "login", "/srv/app/main.py", 40, AP_FRAME_PYTHON);
    ap_frame_id hashpw = fr(p, "hash_password", "/srv/app/db.py", 12, AP_FRAME_PYTHON);
    ap_frame_id pbkdf2 = fr(p, "_hashlib.pbkdf2_hmac", "~", 0, AP_FRAME_BUILTIN);
    ap_frame_id ship = fr(p, "ship", "/srv/app/main.py", 60, AP_FRAME_PYTHON);
    ap_frame_id get = fr(p, "AsyncClient.get", LIB "httpx/_client.py", 100, AP_FRAME_PYTHON);
    ap_frame_id wait = fr(p, "Stream.wait", LIB "httpx/_stream.py", 5, AP_FRAME_PYTHON);
    ap_frame_id ctxrun = fr(p, "_contextvars.Context.run", "~", 0, AP_FRAME_METHOD);
    ap_frame_id slow = fr(p, "slow_ep", "/srv/app/main.py", 80, AP_FRAME_PYTHON);
    ap_frame_id helper = fr(p, "helper", "/srv/app/main.py", 90, AP_FRAME_PYTHON);
    ap_frame_id dumps = fr(p, "json.dumps", "~", 0, AP_FRAME_BUILTIN);
    ap_frame_id wrun =
        fr(p, "WorkerThread.run", LIB "anyio/_backends/_asyncio.py", 1, AP_FRAME_PYTHON);
    ap_frame_id qget = fr(p, "Queue.get", "/usr/lib/python3.12/queue.py", 1, AP_FRAME_PYTHON);
    ap_frame_id acq = fr(p, "_thread.lock.acquire", "~", 0, AP_FRAME_METHOD);

    ap_tree *own = ap_prof_tree_new(p, &loop, 1);
    at(own, (ap_frame_id[]){run_once}, 1, 100, 5 * MS, 905 * MS, 0);
    at(own, (ap_frame_id[]){run_once, poll}, 2, 100, 900 * MS, 900 * MS, 0);

    ap_label l_login[2] = {loop, {route, s_(p, "POST /login")}};
    ap_tree *t = ap_prof_tree_new(p, l_login, 2);
    ap_tree_root(t)->m[AP_M_CALLS] = 3; /* 3 requests */
    at(t, (ap_frame_id[]){app}, 1, 3, 1 * MS, 152 * MS, 0);
    at(t, (ap_frame_id[]){app, login}, 2, 3, 1 * MS, 151 * MS, 0);
    at(t, (ap_frame_id[]){app, login, hashpw}, 3, 3, 0, 150 * MS, 0);
    at(t, (ap_frame_id[]){app, login, hashpw, pbkdf2}, 4, 3, 150 * MS, 150 * MS, 0);

    ap_label l_ship[2] = {loop, {route, s_(p, "GET /ship")}};
    t = ap_prof_tree_new(p, l_ship, 2);
    ap_tree_root(t)->m[AP_M_CALLS] = 4;
    at(t, (ap_frame_id[]){app}, 1, 4, 1 * MS, 4 * MS, 400 * MS);
    at(t, (ap_frame_id[]){app, ship}, 2, 4, 1 * MS, 3 * MS, 400 * MS);
    at(t, (ap_frame_id[]){app, ship, get}, 3, 4, 1 * MS, 2 * MS, 400 * MS);
    at(t, (ap_frame_id[]){app, ship, get, wait}, 4, 4, 1 * MS, 1 * MS, 400 * MS);

    ap_label l_slow[2] = {worker, {route, s_(p, "GET /slow")}};
    t = ap_prof_tree_new(p, l_slow, 2);
    ap_tree_root(t)->m[AP_M_CALLS] = 2;
    at(t, (ap_frame_id[]){ctxrun}, 1, 2, 0, 300 * MS, 0);
    at(t, (ap_frame_id[]){ctxrun, slow}, 2, 2, 10 * MS, 300 * MS, 0);
    at(t, (ap_frame_id[]){ctxrun, slow, helper}, 3, 2, 40 * MS, 290 * MS, 0);
    at(t, (ap_frame_id[]){ctxrun, slow, helper, dumps}, 4, 2, 250 * MS, 250 * MS, 0);

    ap_tree *wt = ap_prof_tree_new(p, &worker, 1);
    at(wt, (ap_frame_id[]){wrun}, 1, 1, 0, 2000 * MS, 0);
    at(wt, (ap_frame_id[]){wrun, qget}, 2, 5, 0, 2000 * MS, 0);
    at(wt, (ap_frame_id[]){wrun, qget, acq}, 3, 5, 2000 * MS, 2000 * MS, 0);
    ap_prof_meta_set(p, "clock", "wall");
    return p;
}

static const ap_finding *find(const ap_finding *fs, size_t n, unsigned kind, const char *route,
                              const ap_prof *p) {
    for (size_t i = 0; i < n; i++)
        if (fs[i].kind == kind &&
            (route == NULL || strcmp(ap_prof_str(p, fs[i].route), route) == 0))
            return &fs[i];
    return NULL;
}

static const char *qual(const ap_prof *p, ap_frame_id f) {
    return ap_prof_str(p, ap_prof_frame(p, f)->qualname);
}

AP_TEST(findings_classes) {
    ap_prof *p = app_profile();
    ap_classes c;
    if (!AP_CHECK(p != NULL && ap_classes_build(p, &c) == 0))
        return;
    AP_CHECK_EQ_U64(c.idle_ns, 900 * MS + 2000 * MS); /* the selector and the queue wait */
    /* POST /login tree: app is library, login user, pbkdf2 (C, called by the app) user. */
    AP_CHECK_EQ_U64(c.node_library[1][1], 1);
    AP_CHECK_EQ_U64(c.node_library[1][2], 0);
    AP_CHECK_EQ_U64(c.node_library[1][4], 0);
    /* GET /slow on the worker: Context.run at the root is nobody's code. */
    AP_CHECK_EQ_U64(c.node_library[3][1], 1);
    AP_CHECK_EQ_U64(c.node_idle[4][3], 1); /* lock.acquire under Queue.get */
    AP_CHECK_EQ_U64(c.node_idle[4][1], 0);
    ap_classes_free(&c);
    ap_prof_free(p);
}

/* Code a library generates at run time (dataclass __init__, SQLAlchemy's
 * wrappers: files like "<string>") belongs to whoever called it: library
 * work under the library, the app's under the app; at a root it is the
 * app's (python -c).  Such a frame is never the app's own function. */
AP_TEST(findings_classes_of_generated_code) {
    ap_prof *p = ap_prof_new();
    ap_frame_id lib = fr(p, "Session.execute", LIB "sqlalchemy/orm/session.py", 5, AP_FRAME_PYTHON);
    ap_frame_id gen = fr(p, "_go", "<sqlalchemy generated _go() wrapper>", 1, AP_FRAME_PYTHON);
    ap_frame_id init = fr(p, "__create_fn__.<locals>.__init__", "<string>", 2, AP_FRAME_PYTHON);
    ap_frame_id user = fr(p, "read_items", "/srv/app/items.py", 13, AP_FRAME_PYTHON);
    ap_frame_id wref = fr(p, "weakref.ReferenceType.__new__", "~", 0, AP_FRAME_BUILTIN);
    ap_tree *t = ap_prof_tree_new(p, NULL, 0);
    at(t, (ap_frame_id[]){user, lib, gen, wref}, 4, 1, 1, 1, 0);     /* nodes 1-4 */
    at(t, (ap_frame_id[]){user, init}, 2, 1, 1, 1, 0);               /* node 5 */
    at(t, (ap_frame_id[]){init}, 1, 1, 1, 1, 0);                     /* node 6 */
    ap_classes c;
    if (!AP_CHECK(ap_classes_build(p, &c) == 0))
        return;
    AP_CHECK_EQ_U64(c.node_library[0][1], 0);
    AP_CHECK_EQ_U64(c.node_library[0][2], 1);
    AP_CHECK_EQ_U64(c.node_library[0][3], 1); /* generated, under the library */
    AP_CHECK_EQ_U64(c.node_library[0][4], 1); /* and the C call it made */
    AP_CHECK_EQ_U64(c.node_library[0][5], 0); /* generated, called by the app */
    AP_CHECK_EQ_U64(c.node_library[0][6], 0); /* generated, at a root */
    AP_CHECK_EQ_U64(c.frame_library[gen], 1);
    AP_CHECK_EQ_U64(c.frame_library[user], 0);
    ap_classes_free(&c);
    ap_prof_free(p);
}

AP_TEST(findings_of_an_app) {
    ap_prof *p = app_profile();
    ap_finding *fs;
    size_t n;
    if (!AP_CHECK(p != NULL && ap_findings_build(p, NULL, NULL, &fs, &n) == 0))
        return;
    /* The blocking call: pbkdf2, on the loop thread, 50 ms per call, by hash_password. */
    const ap_finding *b = find(fs, n, AP_FK_BLOCKING_CALL, "POST /login", p);
    if (AP_CHECK(b != NULL)) {
        AP_CHECK(strcmp(qual(p, b->frame), "_hashlib.pbkdf2_hmac") == 0);
        AP_CHECK_EQ_U64(b->count, 3);
        AP_CHECK_EQ_U64(b->value, 150 * MS);
        AP_CHECK(strstr(b->message, "called from hash_password") != NULL);
    }
    /* Nothing on a worker thread blocks the loop, nothing else on the loop is long. */
    size_t nblock = 0;
    for (size_t i = 0; i < n; i++)
        nblock += fs[i].kind == AP_FK_BLOCKING_CALL;
    AP_CHECK_EQ_U64(nblock, 1);
    /* GET /slow: the hot function is helper (its own 40 ms + json.dumps' 250 ms),
     * 290 of the route's 300 ms, mostly in json.dumps; path slow_ep -> helper. */
    const ap_finding *h = find(fs, n, AP_FK_HOT_FUNCTION, "GET /slow", p);
    if (AP_CHECK(h != NULL)) {
        AP_CHECK(strcmp(qual(p, h->frame), "helper") == 0);
        AP_CHECK_EQ_U64(h->value, 290 * MS);
        AP_CHECK_EQ_U64(h->count, 2);
        AP_CHECK_EQ_U64(h->npath, 2);
        AP_CHECK(strstr(h->message, "mostly in json.dumps") != NULL);
    }
    /* GET /ship waits 400 ms on AsyncClient.get, called from ship. */
    const ap_finding *w = find(fs, n, AP_FK_AWAIT_BOUND, "GET /ship", p);
    if (AP_CHECK(w != NULL)) {
        AP_CHECK(strcmp(qual(p, w->frame), "AsyncClient.get") == 0);
        AP_CHECK_EQ_U64(w->value, 400 * MS);
        AP_CHECK(strstr(w->message, "called from ship") != NULL);
    }
    /* Slow routes by work: /slow (300 ms) first; requests counted from the roots. */
    const ap_finding *s = find(fs, n, AP_FK_SLOW_ROUTE, NULL, p);
    if (AP_CHECK(s != NULL)) {
        AP_CHECK(strcmp(ap_prof_str(p, s->route), "GET /slow") == 0);
        AP_CHECK_EQ_U64(s->count, 2);
    }
    /* Idle: last, info. */
    AP_CHECK(fs[n - 1].kind == AP_FK_IDLE && fs[n - 1].severity == AP_SEV_INFO);
    AP_CHECK_EQ_U64(fs[n - 1].value, 2900 * MS);
    for (size_t i = 1; i < n; i++) /* ranked */
        AP_CHECK(fs[i - 1].severity >= fs[i].severity);
    /* What is found about a slow route (GET /ship is 1% of the work: info) follows
     * the route's own finding and is no more severe than it. */
    for (size_t i = 0; i < n; i++) {
        if (fs[i].kind != AP_FK_HOT_FUNCTION && fs[i].kind != AP_FK_HOT_LINE &&
            fs[i].kind != AP_FK_LIBRARY_WORK)
            continue;
        size_t j = 0;
        while (j < i && !(fs[j].kind == AP_FK_SLOW_ROUTE && fs[j].route == fs[i].route))
            j++;
        AP_CHECK_MSG(j < i && fs[j].severity >= fs[i].severity, "finding %zu before its route", i);
    }
    const ap_finding *ship = find(fs, n, AP_FK_HOT_FUNCTION, "GET /ship", p);
    if (AP_CHECK(ship != NULL))
        AP_CHECK_EQ_U64(ship->severity, AP_SEV_INFO);
    free(fs);
    /* The route table. */
    ap_route_row *rows;
    size_t nr;
    if (AP_CHECK(ap_findings_routes(p, &rows, &nr) == 0)) {
        AP_CHECK_EQ_U64(nr, 3);
        AP_CHECK(strcmp(ap_prof_str(p, rows[0].route), "GET /slow") == 0);
        AP_CHECK_EQ_U64(rows[0].work_ns, 300 * MS);
        for (size_t i = 0; i < nr; i++)
            if (strcmp(ap_prof_str(p, rows[i].route), "GET /ship") == 0) {
                AP_CHECK_EQ_U64(rows[i].wait_ns, 400 * MS);
                AP_CHECK_EQ_U64(rows[i].requests, 4);
            }
        free(rows);
    }
    ap_prof_free(p);
}

AP_TEST(findings_none_for_an_empty_profile) {
    ap_prof *p = ap_prof_new();
    ap_finding *fs = (ap_finding *)1;
    size_t n = 9;
    if (AP_CHECK(p != NULL && ap_findings_build(p, NULL, NULL, &fs, &n) == 0)) {
        AP_CHECK_EQ_U64(n, 0);
        AP_CHECK(fs == NULL);
    }
    ap_prof_free(p);
}

/* A line profile of the same program gives the hot function its hot line. */
AP_TEST(findings_hot_line_from_a_line_profile) {
    ap_prof *p = app_profile(), *lp = ap_prof_new();
    if (!AP_CHECK(p != NULL && lp != NULL))
        return;
    ap_frame_id fn = fr(lp, "helper", "/srv/app/main.py", 90, AP_FRAME_PYTHON);
    ap_frame l91 = *ap_prof_frame(lp, fn), l92 = l91;
    l91.lineno = 91;
    l92.lineno = 92;
    ap_frame_id f91 = ap_prof_frame_intern(lp, &l91), f92 = ap_prof_frame_intern(lp, &l92);
    ap_tree *t = ap_prof_tree_new(lp, NULL, 0);
    at(t, (ap_frame_id[]){fn}, 1, 2, 1 * MS, 100 * MS, 0);
    at(t, (ap_frame_id[]){fn, f91}, 2, 0, 10 * MS, 10 * MS, 0);
    at(t, (ap_frame_id[]){fn, f92}, 2, 0, 89 * MS, 89 * MS, 0);
    ap_finding *fs;
    size_t n;
    if (AP_CHECK(ap_findings_build(p, lp, NULL, &fs, &n) == 0)) {
        const ap_finding *h = find(fs, n, AP_FK_HOT_LINE, "GET /slow", p);
        if (AP_CHECK(h != NULL)) {
            AP_CHECK_EQ_U64(h->line, 92);
            AP_CHECK_EQ_U64(h->value, 89 * MS);
            AP_CHECK(strcmp(qual(p, h->frame), "helper") == 0);
            AP_CHECK(strstr(h->message, "line 92 of helper") != NULL);
            /* ranked right after the hot function it is in */
            const ap_finding *fn = find(fs, n, AP_FK_HOT_FUNCTION, "GET /slow", p);
            AP_CHECK(fn != NULL && h == fn + 1);
        }
        free(fs);
    }
    ap_prof_free(lp);
    ap_prof_free(p);
}

/* The slowest route by p95: said in its slow route finding when it has one
 * (GET /ship here: one of the 3 routes, each a slow route), never twice. */
AP_TEST(findings_slowest_by_p95) {
    ap_prof *p = app_profile();
    if (!AP_CHECK(p != NULL))
        return;
    ap_hist *ship = ap_prof_latency(p, s_(p, "GET /ship")), *slow = ap_prof_latency(p, s_(p, "GET /slow"));
    if (!AP_CHECK(ship != NULL && slow != NULL))
        return;
    for (int i = 0; i < 4; i++)
        ap_hist_record(ship, 101 * MS);
    ap_hist_record(slow, 150 * MS);
    ap_hist_record(slow, 150 * MS);
    ap_finding *fs;
    size_t n;
    if (!AP_CHECK(ap_findings_build(p, NULL, NULL, &fs, &n) == 0))
        return;
    AP_CHECK(find(fs, n, AP_FK_SLOW_LATENCY, NULL, p) == NULL);
    const ap_finding *s = find(fs, n, AP_FK_SLOW_ROUTE, "GET /slow", p);
    if (AP_CHECK(s != NULL))
        AP_CHECK(strstr(s->message, "the slowest route by p95 latency: 150 ms") != NULL);
    size_t said = 0;
    for (size_t i = 0; i < n; i++)
        said += strstr(fs[i].message, "p95") != NULL;
    AP_CHECK_EQ_U64(said, 1);
    free(fs);
    /* The route table carries the histograms. */
    ap_route_row *rows;
    size_t nr;
    if (AP_CHECK(ap_findings_routes(p, &rows, &nr) == 0)) {
        for (size_t i = 0; i < nr; i++)
            if (strcmp(ap_prof_str(p, rows[i].route), "GET /ship") == 0)
                AP_CHECK(rows[i].latency == ship);
            else if (strcmp(ap_prof_str(p, rows[i].route), "POST /login") == 0)
                AP_CHECK(rows[i].latency == NULL);
        free(rows);
    }
    ap_prof_free(p);
}

/* A route with little work but the slowest p95: a finding of its own, said once. */
AP_TEST(findings_slowest_by_p95_alone) {
    ap_prof *p = app_profile();
    if (!AP_CHECK(p != NULL))
        return;
    ap_label l = {s_(p, "route"), s_(p, "GET /tiny")};
    ap_tree *t = ap_prof_tree_new(p, &l, 1);
    if (!AP_CHECK(t != NULL))
        return;
    ap_tree_root(t)->m[AP_M_CALLS] = 3;
    at(t, (ap_frame_id[]){fr(p, "tiny", "/srv/app/main.py", 300, AP_FRAME_PYTHON)}, 1, 3, 1 * MS,
       1 * MS, 0);
    ap_hist *tiny = ap_prof_latency(p, s_(p, "GET /tiny")), *slow = ap_prof_latency(p, s_(p, "GET /slow"));
    if (!AP_CHECK(tiny != NULL && slow != NULL))
        return;
    for (int i = 0; i < 3; i++)
        ap_hist_record(tiny, 900 * MS);
    ap_hist_record(slow, 150 * MS);
    ap_finding *fs;
    size_t n;
    if (!AP_CHECK(ap_findings_build(p, NULL, NULL, &fs, &n) == 0))
        return;
    AP_CHECK(find(fs, n, AP_FK_SLOW_ROUTE, "GET /tiny", p) == NULL);
    const ap_finding *s = find(fs, n, AP_FK_SLOW_LATENCY, NULL, p);
    if (AP_CHECK(s != NULL)) {
        AP_CHECK(strcmp(ap_prof_str(p, s->route), "GET /tiny") == 0);
        AP_CHECK_EQ_U64(s->count, 3);
        AP_CHECK(s->value >= 900 * MS - 900 * MS / 256 && s->value <= 900 * MS + 900 * MS / 256);
        AP_CHECK(strstr(s->message, "next is GET /slow, p95 150 ms") != NULL);
    }
    size_t said = 0;
    for (size_t i = 0; i < n; i++)
        said += strstr(fs[i].message, "p95") != NULL;
    AP_CHECK_EQ_U64(said, 1);
    free(fs);
    ap_prof_free(p);
}

/* A leak suspect: a route's tree holding 400 KiB alive over 100 requests.  In full
 * mode that is a suspect; in sampled mode at 512 KiB (under three intervals: one or two
 * sampled blocks) it is noise, and at 64 KiB (six intervals) a suspect again. */
static size_t leaks_found(const char *mode, const char *rate) {
    ap_prof *p = ap_prof_new();
    if (!AP_CHECK(p != NULL))
        return 0;
    ap_label l = {s_(p, "route"), s_(p, "POST /ingest")};
    ap_tree *t = ap_prof_tree_new(p, &l, 1);
    ap_node *n = t ? at(t, (ap_frame_id[]){fr(p, "ingest", "/srv/app/main.py", 10,
                                                AP_FRAME_PYTHON)}, 1, 100, MS, MS, 0)
                   : NULL;
    size_t found = 0;
    if (AP_CHECK(n != NULL) && AP_CHECK(ap_prof_meta_set(p, "memory", mode) == 0) &&
        (rate == NULL || AP_CHECK(ap_prof_meta_set(p, "memory_rate", rate) == 0))) {
        ap_tree_root(t)->m[AP_M_CALLS] = 100;
        n->m[AP_M_LIVE_BYTES] = 400 * 1024;
        ap_finding *fs;
        size_t nf;
        if (AP_CHECK(ap_findings_build(p, NULL, NULL, &fs, &nf) == 0)) {
            found = find(fs, nf, AP_FK_LEAK_SUSPECT, "POST /ingest", p) != NULL;
            free(fs);
        }
    }
    ap_prof_free(p);
    return found;
}

AP_TEST(findings_leak_suspect_needs_samples_in_sampled_mode) {
    AP_CHECK_EQ_U64(leaks_found("full", NULL), 1);
    AP_CHECK_EQ_U64(leaks_found("sampled", "524288"), 0);
    AP_CHECK_EQ_U64(leaks_found("sampled", "65536"), 1);
}

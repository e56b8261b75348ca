/* ap_findings.c -- the findings of a profile and the classes of its frames and nodes (user, library, idle). */
#include "ap_findings.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap_diff.h"
#include "ap_err.h"
#include "ap_hist.h"
#include "ap_map.h"
#include "ap_report.h"
#include "ap_wait.h"
#include "ap_stall.h"

/* ---- kinds ------------------------------------------------------------------------ */

static const ap_finding_kind_info kinds[AP_FK_COUNT] = {
    [AP_FK_SLOW_ROUTE] = {"slow_route", "slow route",
                          "a route with at least 10% of all request work, or among the 3 with "
                          "the most"},
    [AP_FK_SLOW_LATENCY] = {"slow_latency", "slowest route by p95",
                            "the route whose requests have the highest p95 latency, when two "
                            "routes or more have latency figures; said in the slow route "
                            "finding instead when that route is one"},
    [AP_FK_HOT_FUNCTION] = {"hot_function", "hot function",
                            "the user function that, with what it calls outside user code, "
                            "takes most of a slow route's work"},
    [AP_FK_HOT_LINE] = {"hot_line", "hot line",
                        "the line of the hot function with the most time (line profiles)"},
    [AP_FK_BLOCKING_CALL] = {"blocking_call", "blocking call",
                             "a call that runs 20 ms or more per call (over 2 calls or more) "
                             "without awaiting on the event loop's thread, inside a request"},
    [AP_FK_AWAIT_BOUND] = {"await_bound", "waiting",
                           "a route that spends at least half of its time, or 20 ms per "
                           "request, awaiting calls outside the app"},
    [AP_FK_LIBRARY_WORK] = {"library_work", "library work",
                            "a slow route whose hot function has less than half of its work "
                            "and whose work is mostly library code: where it goes"},
    [AP_FK_REPEATED_QUERY] = {"repeated_query", "N+1 queries",
                              "a route that runs a database call 10 times or more per request, "
                              "and the function of the app that makes most of them"},
    [AP_FK_POOL_HOPS] = {"pool_hops", "thread-pool hops",
                         "a route that hands work to the thread pool 10 times or more per "
                         "request (each hop costs a thread switch and two wake-ups)"},
    [AP_FK_LOOP_STALL] = {"loop_stall", "event-loop stall",
                          "steps of the event loop (a callback or a task step) that ran at "
                          "least the stall threshold (50 ms by default) without awaiting, "
                          "grouped by the line where the time went"},
    [AP_FK_LOCK_CONTENTION] = {"lock_contention", "lock contention",
                               "time spent waiting to acquire a lock (`with lock:`, "
                               "lock.acquire()) at one line, 10 ms or more in all, off the CPU"},
    [AP_FK_IDLE] = {"idle", "idle time",
                    "recorded time that was idle waiting, left out of the views by default"},
    [AP_FK_LEAK_SUSPECT] = {"leak_suspect", "leak suspect",
                            "a route whose requests allocated 256 KiB or more, and 256 bytes or "
                            "more per request, that was still alive when the profile ended "
                            "(memory profiles), and the app's function and line that allocated "
                            "most of it"},
    [AP_FK_LOOP_STARVED] = {"loop_starved", "event loop starved",
                            "event-loop stalls during which the loop's thread ran for under "
                            "half of the time while in Python code (no blocking call): it "
                            "waited for the GIL that other threads held, or for a core"},
    [AP_FK_N_PLUS_ONE] = {"n_plus_one", "N+1 query",
                          "one statement (literals aside) run 5 times or more in one request "
                          "from the same line of the app (captured queries)"},
    [AP_FK_REPEATED_CALL] = {"repeated_call", "repeated outgoing call",
                             "one outgoing HTTP call (method, host, path) made 5 times or more "
                             "in one request from the same line of the app (captured calls)"},
    [AP_FK_REGRESSION] = {"regression", "regression",
                          "a route whose median latency (else work per request) is 25% and "
                          "1 ms or more above a baseline profile's (apiprof report --baseline), "
                          "with the function whose own time per request grew most"},
    [AP_FK_GIL_CONTENTION] = {"gil_contention", "GIL contention",
                              "a function that waited 10 ms or more in all for the GIL while "
                              "other threads ran Python code (profiles with cpu=True)"},
    [AP_FK_POOL_QUEUEING] = {"pool_queueing", "thread pool full",
                             "a route whose calls into the thread pool (sync routes and "
                             "dependencies, run_in_threadpool) waited 10 ms or more in all for "
                             "a free thread: every thread of the pool was busy"},
};

const ap_finding_kind_info *ap_finding_kind_get(unsigned k) {
    return k < AP_FK_COUNT ? &kinds[k] : NULL;
}

const char *ap_finding_severity_name(unsigned severity) {
    return severity >= AP_SEV_HIGH ? "high" : severity == AP_SEV_MEDIUM ? "medium" : "info";
}

/* ---- classes ---------------------------------------------------------------------- */

void ap_classes_free(ap_classes *c) {
    for (size_t t = 0; t < c->ntrees; t++) {
        if (c->node_library != NULL)
            free(c->node_library[t]);
        if (c->node_idle != NULL)
            free(c->node_idle[t]);
        if (c->node_wait != NULL)
            free(c->node_wait[t]);
    }
    free(c->node_library);
    free(c->node_idle);
    free(c->node_wait);
    free(c->frame_library);
    memset(c, 0, sizeof *c);
}

int ap_classes_build(const ap_prof *p, ap_classes *c) {
    memset(c, 0, sizeof *c);
    size_t nf = ap_prof_nframes(p), nt = ap_prof_ntrees(p);
    c->frame_library = calloc(nf ? nf : 1, 1);
    c->node_library = calloc(nt ? nt : 1, sizeof *c->node_library);
    c->node_idle = calloc(nt ? nt : 1, sizeof *c->node_idle);
    c->node_wait = calloc(nt ? nt : 1, sizeof *c->node_wait);
    if (c->frame_library == NULL || c->node_library == NULL || c->node_idle == NULL ||
        c->node_wait == NULL)
        goto oom;
    c->nframes = nf;
    c->ntrees = nt;
    for (size_t f = 1; f < nf; f++) {
        const ap_frame *fr = ap_prof_frame(p, (ap_frame_id)f);
        const char *file = ap_prof_str(p, fr->file);
        c->frame_library[f] = fr->kind == AP_FRAME_PYTHON &&
                              (ap_wait_library_file(file) || ap_wait_generated_file(file));
    }
    for (size_t t = 0; t < nt; t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        size_t n = ap_tree_nnodes(tree);
        uint8_t *lib = calloc(n, 1), *idle = calloc(n, 1), *wait = calloc(n, 1);
        c->node_library[t] = lib;
        c->node_idle[t] = idle;
        c->node_wait[t] = wait;
        if (lib == NULL || idle == NULL || wait == NULL)
            goto oom;
        if (ap_wait_node_kinds(p, tree, wait) != 0) {
            ap_classes_free(c);
            return -1;
        }
        for (size_t i = 1; i < n; i++) {
            const ap_node *node = ap_tree_node(tree, (ap_node_id)i);
            const ap_frame *fr = ap_prof_frame(p, node->frame);
            ap_node_id up = node->parent;
            if (fr->kind != AP_FRAME_PYTHON) /* a C function: its caller's class;
                                                at a root, nobody's code */
                lib[i] = up == 0 || lib[up];
            else if (ap_wait_generated_file(ap_prof_str(p, fr->file))) /* at a root: python -c */
                lib[i] = up != 0 && lib[up];
            else
                lib[i] = c->frame_library[node->frame];
            idle[i] = idle[up] || wait[i] == AP_WAIT_IDLE;
            c->wall_ns += node->m[AP_M_SELF_NS];
            if (idle[i])
                c->idle_ns += node->m[AP_M_SELF_NS];
        }
    }
    return 0;
oom:
    ap_classes_free(c);
    ap_err_set(AP_ENOMEM, "findings: out of memory");
    return -1;
}

/* ---- helpers ------------------------------------------------------------------------ */

/* A duration for a sentence, as every view writes one (ap_report_fmt_value):
 * "850 ns", "12.3 us", "4.56 ms", "1.2 s". */
static const char *dur(char *buf, size_t n, double ns) {
    ap_sbuf sb = {0};
    ap_report_fmt_value(&sb, AP_VM_WALL, ns > 0 ? (uint64_t)ns : 0);
    snprintf(buf, n, "%.*s", sb.failed ? 1 : (int)sb.len, sb.failed ? "?" : sb.data);
    ap_sbuf_free(&sb);
    return buf;
}

/* A byte count for a sentence, as the views write one: "3.1 MB". */
static const char *bytes_str(char *buf, size_t n, uint64_t v) {
    ap_sbuf sb = {0};
    ap_report_fmt_value(&sb, AP_VM_MEMORY, v);
    snprintf(buf, n, "%.*s", sb.failed ? 1 : (int)sb.len, sb.failed ? "?" : sb.data);
    ap_sbuf_free(&sb);
    return buf;
}

/* The last two components of a path (enough to recognise a file).  Can't fail. */
static const char *short_path(const char *file) {
    const char *tail = file + strlen(file);
    for (int slashes = 0; tail > file && slashes < 2;)
        if (*--tail == '/' && ++slashes == 2)
            tail++;
    return tail;
}

/* "name (file:line)" of a frame for a sentence; C functions by name only. */
static const char *where(const ap_prof *p, ap_frame_id f, char *buf, size_t n) {
    const ap_frame *fr = ap_prof_frame(p, f);
    const char *q = ap_prof_frame_qualname(p, f);
    if (fr == NULL || fr->kind != AP_FRAME_PYTHON) {
        snprintf(buf, n, "%s", q);
        return buf;
    }
    snprintf(buf, n, "%s (%s:%u)", q, short_path(ap_prof_str(p, fr->file)),
             fr->lineno ? fr->lineno : fr->line);
    return buf;
}

typedef struct fvec {
    ap_finding *items;
    size_t n, cap;
} fvec;

static ap_finding *fnew(fvec *v, unsigned kind, unsigned severity) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 16;
        ap_finding *items = realloc(v->items, nc * sizeof *items);
        if (items == NULL) {
            ap_err_set(AP_ENOMEM, "findings: out of memory");
            return NULL;
        }
        v->items = items;
        v->cap = nc;
    }
    ap_finding *f = &v->items[v->n++];
    memset(f, 0, sizeof *f);
    f->rank = UINT64_MAX; /* fnew's callers set value; rank() reads value then */
    f->kind = kind;
    f->severity = severity;
    f->unit = "nanoseconds";
    return f;
}


static void say(ap_finding *f, const char *fmt, ...) AP_PRINTF_LIKE(2, 3);
static void say(ap_finding *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
}

/* ---- per route ------------------------------------------------------------------------ */

typedef struct route_acc {
    ap_str_id route; /* 0: the whole profile (no route labels) */
    uint64_t work;   /* self time of non-idle nodes in its trees */
    uint64_t requests;
    unsigned severity; /* its slow-route finding's; the cap of the findings about it */
} route_acc;

static int by_work(const void *a, const void *b) {
    const route_acc *x = a, *y = b;
    if (x->work != y->work)
        return x->work > y->work ? -1 : 1;
    return x->route < y->route ? -1 : x->route > y->route;
}

typedef struct ctx {
    ap_prof *p;
    ap_classes cls;
    ap_str_id k_route, k_thread_id;
    ap_frame_id *func;    /* frame -> function-level frame */
    const ap_prof *lines; /* a line profile of the same program, or NULL */
    fvec out;
} ctx;

/* A finding about slow route r (its hot function, line, library work): no
 * more severe than the route's own finding, and listed right after it. */
static ap_finding *about_route(ctx *c, const route_acc *r, unsigned kind, unsigned severity) {
    ap_finding *f = fnew(&c->out, kind, r->route != 0 && severity > r->severity ? r->severity
                                                                               : severity);
    if (f != NULL && r->route != 0)
        f->rank = r->work;
    return f;
}

static ap_str_id find_str(const ap_prof *p, const char *s) {
    for (size_t i = 1; i < ap_prof_nstrs(p); i++)
        if (strcmp(ap_prof_str(p, (ap_str_id)i), s) == 0)
            return (ap_str_id)i;
    return AP_NONE;
}

/* Whether tree t belongs to route r (r == 0: every tree, the whole profile). */
static int in_route(const ctx *c, const ap_tree *t, ap_str_id r) {
    return r == 0 || (c->k_route != AP_NONE && ap_tree_label_get(t, c->k_route) == r);
}

static int user_node(const ctx *c, size_t t, const ap_node *n) {
    const ap_frame *fr = ap_prof_frame(c->p, n->frame);
    return n->id != 0 && fr->kind == AP_FRAME_PYTHON && !c->cls.node_library[t][n->id];
}

uint64_t ap_findings_route_requests(const ap_prof *p, ap_str_id route) {
    ap_str_id k = find_str(p, "route");
    uint64_t n = 0;
    for (size_t t = 0; k != AP_NONE && t < ap_prof_ntrees(p); t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        if (ap_tree_label_get(tree, k) == route)
            n += ap_tree_node(tree, 0)->m[AP_M_CALLS];
    }
    return n;
}

/* Every non-idle node of route r's trees that some user frame owns (the
 * node itself when it is user code, else its nearest user ancestor),
 * with the owner's function frame.  0, or -1 with AP_ENOMEM. */
typedef int (*owned_fn)(ctx *c, const ap_tree *tree, const ap_node *node, ap_frame_id owner,
                        void *arg);

static int walk_owned(ctx *c, ap_str_id route, owned_fn visit, void *arg) {
    ap_node_id *owner = NULL;
    size_t cap = 0;
    for (size_t t = 0; t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        if (!in_route(c, tree, route))
            continue;
        size_t n = ap_tree_nnodes(tree);
        if (n > cap) {
            ap_node_id *o = realloc(owner, n * sizeof *o);
            if (o == NULL) {
                free(owner);
                ap_err_set(AP_ENOMEM, "findings: out of memory");
                return -1;
            }
            owner = o;
            cap = n;
        }
        owner[0] = 0;
        for (size_t i = 1; i < n; i++) {
            const ap_node *node = ap_tree_node(tree, (ap_node_id)i);
            owner[i] = user_node(c, t, node) ? (ap_node_id)i : owner[node->parent];
            if (c->cls.node_idle[t][i] || owner[i] == 0)
                continue;
            if (visit(c, tree, node, c->func[ap_tree_node(tree, owner[i])->frame], arg) != 0) {
                free(owner);
                return -1;
            }
        }
    }
    free(owner);
    return 0;
}

static int add_to(ap_map *m, uint64_t key, uint64_t v) {
    int ins;
    uint64_t *slot = ap_map_upsert(m, key, 0, &ins);
    if (slot == NULL) {
        ap_err_set(AP_ENOMEM, "findings: out of memory");
        return -1;
    }
    *slot += v;
    return 0;
}

/* The largest value of m (ties: the smallest key), skipping key `except`. */
static uint64_t map_max(const ap_map *m, uint64_t except, uint64_t *key_out, uint64_t *sum_out) {
    uint64_t key, val, best = 0, bkey = 0, sum = 0;
    for (size_t pos = 0; (pos = ap_map_next(m, pos, &key, &val)) != 0;) {
        sum += val;
        if (key != except && (val > best || (val == best && key < bkey))) {
            best = val;
            bkey = key;
        }
    }
    *key_out = bkey;
    if (sum_out != NULL)
        *sum_out = sum;
    return best;
}

static int resp_visit(ctx *c, const ap_tree *tree, const ap_node *node, ap_frame_id owner,
                      void *arg) {
    (void)c;
    (void)tree;
    return add_to(arg, owner, node->m[AP_M_SELF_NS]);
}

typedef struct region {
    ap_frame_id fn;
    ap_map sub;   /* frame -> self time in fn's region (fn's own nodes included) */
    ap_map lines; /* line frame of fn -> self time */
    const ap_tree *tree;
    const ap_node *heaviest; /* fn's node with the most total time */
} region;

static int region_visit(ctx *c, const ap_tree *tree, const ap_node *node, ap_frame_id owner,
                        void *arg) {
    region *g = arg;
    if (owner != g->fn)
        return 0;
    const ap_frame *fr = ap_prof_frame(c->p, node->frame);
    int line = fr->lineno != 0 && c->func[node->frame] == g->fn;
    if (add_to(line ? &g->lines : &g->sub, node->frame, node->m[AP_M_SELF_NS]) != 0)
        return -1;
    if (node->frame == g->fn &&
        (g->heaviest == NULL || node->m[AP_M_TOTAL_NS] > g->heaviest->m[AP_M_TOTAL_NS])) {
        g->heaviest = node;
        g->tree = tree;
    }
    return 0;
}

/* Where a route's work goes when it is not under the app's functions: the
 * library frames (by function) with the most self time, top three. */
static int library_work(ctx *c, const route_acc *r) {
    ap_map lib = {0};
    uint64_t total = 0;
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        if (!in_route(c, tree, r->route))
            continue;
        for (size_t i = 1; rc == 0 && i < ap_tree_nnodes(tree); i++) {
            const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
            if (c->cls.node_idle[t][i] || !c->cls.node_library[t][i] ||
                (c->cls.node_wait[t][i] < AP_WAIT_COUNT &&
                 ap_prof_frame(c->p, n->frame)->kind != AP_FRAME_PYTHON))
                continue; /* a C call that waits (psycopg's wait_c) is not library work */
            total += n->m[AP_M_SELF_NS];
            rc = add_to(&lib, c->func[n->frame], n->m[AP_M_SELF_NS]);
        }
    }
    if (rc == 0 && total > 0 && (double)total >= 0.5 * (double)r->work) {
        ap_finding *f = about_route(c, r, AP_FK_LIBRARY_WORK, AP_SEV_MEDIUM);
        if (f == NULL) {
            rc = -1;
        } else {
            char d1[32], list[360] = "", w[256];
            size_t len = 0;
            for (int k = 0; k < 3; k++) {
                uint64_t key, v = map_max(&lib, UINT64_MAX, &key, NULL);
                if (v == 0)
                    break;
                int wn = snprintf(list + len, sizeof list - len, "%s%s %.0f%%", k ? ", " : "",
                                  where(c->p, (ap_frame_id)key, w, sizeof w),
                                  100.0 * (double)v / (double)r->work);
                if (wn < 0 || (size_t)wn >= sizeof list - len)
                    break;
                len += (size_t)wn;
                if (k == 0) {
                    f->frame = (ap_frame_id)key;
                    f->value = v;
                }
                *ap_map_get(&lib, key) = 0;
            }
            f->route = r->route;
            f->count = r->requests;
            f->share = (double)total / (double)r->work;
            say(f, "%.0f%% of %s's work (%s) is in library code, most in %s", 100.0 * f->share,
                r->route ? ap_prof_str(c->p, r->route) : "the profile",
                dur(d1, sizeof d1, (double)total), list);
        }
    }
    ap_map_free(&lib);
    return rc;
}

/* A qualname up to its first ".<locals>": a nested function's outermost
 * named function, the unit a line profiler targets.  Length of that part. */
static size_t outer_len(const char *q) {
    const char *l = strstr(q, ".<locals>");
    return l != NULL ? (size_t)(l - q) : strlen(q);
}

/* Self time per line (key: line number) of fn's function in the line
 * profile lp: line-level frames with fn's file whose qualname is fn's outer
 * named function.  0, or -1 with AP_ENOMEM. */
static int lines_of(const ap_prof *p, ap_frame_id fn, const ap_prof *lp, ap_map *out) {
    const ap_frame *f = ap_prof_frame(p, fn);
    const char *q = ap_prof_str(p, f->qualname), *file = ap_prof_str(p, f->file);
    size_t qn = outer_len(q);
    size_t nf = ap_prof_nframes(lp);
    uint8_t *match = calloc(nf ? nf : 1, 1);
    if (match == NULL)
        return ap_err_set(AP_ENOMEM, "findings: out of memory");
    for (size_t i = 1; i < nf; i++) {
        const ap_frame *lf = ap_prof_frame(lp, (ap_frame_id)i);
        const char *lq = ap_prof_str(lp, lf->qualname);
        match[i] = lf->lineno != 0 && strcmp(ap_prof_str(lp, lf->file), file) == 0 &&
                   strlen(lq) == qn && strncmp(lq, q, qn) == 0;
    }
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(lp); t++) {
        const ap_tree *tree = ap_prof_tree_at(lp, t);
        for (size_t i = 1; rc == 0 && i < ap_tree_nnodes(tree); i++) {
            const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
            if (match[n->frame])
                rc = add_to(out, ap_prof_frame(lp, n->frame)->lineno, n->m[AP_M_SELF_NS]);
        }
    }
    free(match);
    return rc;
}

/* ---- calls repeated per request ------------------------------------------------------ */

/* Hand-offs to the thread pool. */
static const char *const hop_calls[] = {
    "AsyncIOBackend.run_sync_in_worker_thread",
    "run_sync_in_worker_thread",
    "BaseEventLoop.run_in_executor",
};

static int is_hop_call(const ap_prof *p, ap_frame_id f) {
    const char *q = ap_prof_frame_qualname(p, f);
    for (size_t i = 0; i < sizeof hop_calls / sizeof hop_calls[0]; i++)
        if (strcmp(q, hop_calls[i]) == 0)
            return 1;
    return 0;
}

/* Route r: calls per request of the frames is_call names (outermost matches
 * only, an ORM call and the driver call under it count once) and the app's
 * function that made most of them.  Database statements are the rows of the
 * wait table marked so (ap_wait_statement). */
static int repeated(ctx *c, const route_acc *r, int (*is_call)(const ap_prof *, ap_frame_id),
                    unsigned kind) {
    if (r->requests == 0 || r->route == 0)
        return 0;
    ap_map by_caller = {0}, frame_of = {0}, user_calls = {0}, loop_of = {0};
    uint64_t total = 0;
    int rc = 0;
    /* Calls of each of the app's functions in the route: the one repeated per
     * request is the highest above a call that runs 2 times or more per request. */
    for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        if (!in_route(c, tree, r->route))
            continue;
        for (size_t i = 1; rc == 0 && i < ap_tree_nnodes(tree); i++) {
            const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
            if (user_node(c, t, n))
                rc = add_to(&user_calls, c->func[n->frame], n->m[AP_M_CALLS]);
        }
    }
    for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        if (!in_route(c, tree, r->route))
            continue;
        for (size_t i = 1; rc == 0 && i < ap_tree_nnodes(tree); i++) {
            const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
            if (n->m[AP_M_CALLS] == 0 || !is_call(c->p, n->frame))
                continue;
            const ap_node *u = ap_tree_node(tree, n->parent);
            int nested = 0;
            for (const ap_node *a = u; a->id != 0 && !nested; a = ap_tree_node(tree, a->parent))
                nested = is_call(c->p, a->frame);
            if (nested)
                continue;
            while (u->id != 0 && !user_node(c, t, u))
                u = ap_tree_node(tree, u->parent);
            /* Up through the app's functions called 2+ times per request. */
            const ap_node *loop = NULL;
            for (const ap_node *a = u; a->id != 0; a = ap_tree_node(tree, a->parent)) {
                if (!user_node(c, t, a))
                    continue;
                const uint64_t *k = ap_map_get(&user_calls, c->func[a->frame]);
                if (k != NULL && *k >= 2 * r->requests) {
                    u = a;
                } else {
                    loop = a;
                    break;
                }
            }
            total += n->m[AP_M_CALLS];
            uint64_t key = u->id ? c->func[u->frame] : 0;
            int ins;
            uint64_t *f = ap_map_upsert(&frame_of, key, n->frame, &ins);
            uint64_t *l =
                ap_map_upsert(&loop_of, key, loop != NULL ? c->func[loop->frame] : 0, &ins);
            if (f == NULL || l == NULL || add_to(&by_caller, key, n->m[AP_M_CALLS]) != 0)
                rc = -1;
        }
    }
    uint64_t caller = 0;
    uint64_t most = rc == 0 ? map_max(&by_caller, UINT64_MAX, &caller, NULL) : 0;
    if (rc == 0 && total >= AP_FINDING_REPEAT_PER_REQ * r->requests && most > 0) {
        ap_finding *f =
            fnew(&c->out, kind, kind == AP_FK_REPEATED_QUERY ? AP_SEV_HIGH : AP_SEV_MEDIUM);
        if (f == NULL) {
            rc = -1;
        } else {
            char w[256], w2[256], from[800] = "";
            ap_frame_id callee = (ap_frame_id)*ap_map_get(&frame_of, caller);
            f->route = r->route;
            f->frame = caller ? (ap_frame_id)caller : callee;
            f->value = total;
            f->unit = "calls";
            f->count = r->requests;
            f->share = total ? (double)most / (double)total : 0;
            ap_frame_id loop = (ap_frame_id)*ap_map_get(&loop_of, caller);
            const uint64_t *k = caller ? ap_map_get(&user_calls, caller) : NULL;
            char w3[256], by[400] = "";
            if (k != NULL && loop != 0 && *k >= 2 * r->requests)
                snprintf(by, sizeof by, ", called %.1f times per request by %s",
                         (double)*k / (double)r->requests, where(c->p, loop, w3, sizeof w3));
            if (caller != 0)
                snprintf(from, sizeof from, "; %.0f%% of them from %s%s", 100.0 * f->share,
                         where(c->p, (ap_frame_id)caller, w2, sizeof w2), by);
            if (kind == AP_FK_REPEATED_QUERY)
                say(f,
                    "%s runs %.1f database calls per request (%s, %llu over %llu requests)%s: "
                    "the same query once per item (N+1) is the usual cause",
                    ap_prof_str(c->p, r->route), (double)total / (double)r->requests,
                    where(c->p, callee, w, sizeof w), (unsigned long long)total,
                    (unsigned long long)r->requests, from);
            else
                say(f,
                    "%s hands work to the thread pool %.1f times per request (%s, %llu over "
                    "%llu requests)%s",
                    ap_prof_str(c->p, r->route), (double)total / (double)r->requests,
                    where(c->p, callee, w, sizeof w), (unsigned long long)total,
                    (unsigned long long)r->requests, from);
        }
    }
    ap_map_free(&by_caller);
    ap_map_free(&frame_of);
    ap_map_free(&user_calls);
    ap_map_free(&loop_of);
    return rc;
}

/* 1 when p holds captured database statements (not only outgoing calls). */
static int has_statements(const ap_prof *p) {
    for (size_t i = 0; i < ap_prof_nqueries(p); i++)
        if (ap_prof_query_at(p, i)->kind == AP_QUERY_STATEMENT)
            return 1;
    return 0;
}

/* N+1 from captured queries: a statement shape run AP_QUERY_N_PLUS_ONE
 * times or more in one request from one line. */
static int n_plus_one(ctx *c) {
    for (size_t i = 0; i < ap_prof_nqueries(c->p); i++) {
        const ap_query *q = ap_prof_query_at(c->p, i);
        if (q->max_per_request < AP_QUERY_N_PLUS_ONE)
            continue;
        int http = q->kind == AP_QUERY_HTTP;
        ap_finding *f = fnew(&c->out, http ? AP_FK_REPEATED_CALL : AP_FK_N_PLUS_ONE,
                             http ? AP_SEV_MEDIUM : AP_SEV_HIGH);
        if (f == NULL)
            return -1;
        char w[256], d1[32], stmt[161];
        const char *text = ap_prof_str(c->p, q->statement);
        snprintf(stmt, sizeof stmt, "%.150s%s", text, strlen(text) > 150 ? "..." : "");
        f->route = q->route;
        f->frame = q->site;
        f->line = q->line;
        f->value = q->total_ns;
        f->count = q->count;
        f->share = q->requests ? (double)q->count / (double)q->requests : 0;
        const ap_frame *fr = ap_prof_frame(c->p, q->site);
        if (http) {
            say(f,
                "%s makes the same outgoing call up to %llu times in one request (%llu times "
                "over %llu requests, %s in total) from %s, line %u: \"%s\"; one batched call, "
                "concurrent calls or a cache replace them",
                q->route ? ap_prof_str(c->p, q->route) : "the program",
                (unsigned long long)q->max_per_request, (unsigned long long)q->count,
                (unsigned long long)q->requests, dur(d1, sizeof d1, (double)q->total_ns),
                q->site && fr != NULL ? where(c->p, q->site, w, sizeof w) : "an unknown place",
                q->line, stmt);
            continue;
        }
        say(f,
            "%s runs the same query up to %llu times in one request (%llu times over %llu "
            "requests, %s in total) from %s, line %u: \"%s\"; one query for all the items "
            "(a join or IN) replaces them",
            q->route ? ap_prof_str(c->p, q->route) : "the program",
            (unsigned long long)q->max_per_request, (unsigned long long)q->count,
            (unsigned long long)q->requests, dur(d1, sizeof d1, (double)q->total_ns),
            q->site && fr != NULL ? where(c->p, q->site, w, sizeof w) : "an unknown place",
            q->line, stmt);
    }
    return 0;
}

/* "of GET /x's work" or "of the profile's work". */
static const char *scope_of(const ap_prof *p, ap_str_id route, char *buf, size_t n) {
    if (route != 0)
        snprintf(buf, n, "of %s's work", ap_prof_str(p, route));
    else
        snprintf(buf, n, "of the profile's work");
    return buf;
}

/* The hot function of route r, its biggest callee outside user code, the
 * user frames above it, and its hot line when the profile has lines. */
static int hot_function(ctx *c, const route_acc *r) {
    ap_prof *p = c->p;
    ap_map resp = {0};
    if (walk_owned(c, r->route, resp_visit, &resp) != 0) {
        ap_map_free(&resp);
        return -1;
    }
    uint64_t fn_key;
    uint64_t best_ns = map_max(&resp, UINT64_MAX, &fn_key, NULL);
    ap_map_free(&resp);
    if (r->work > 0 && (double)best_ns < 0.5 * (double)r->work && library_work(c, r) != 0)
        return -1;
    if (best_ns == 0 || r->work == 0)
        return 0;
    region g = {.fn = (ap_frame_id)fn_key};
    int rc = walk_owned(c, r->route, region_visit, &g);
    uint64_t top_key = 0, line_key = 0, lines_total = 0;
    uint64_t top_ns = rc == 0 ? map_max(&g.sub, g.fn, &top_key, NULL) : 0;
    uint64_t line_ns = rc == 0 ? map_max(&g.lines, UINT64_MAX, &line_key, &lines_total) : 0;
    int line_no = line_key ? (int)ap_prof_frame(p, (ap_frame_id)line_key)->lineno : 0;
    const char *line_src = "";
    ap_map_free(&g.sub);
    ap_map_free(&g.lines);
    if (rc != 0)
        return -1;
    if (line_key == 0 && c->lines != NULL) { /* from the line profile of the same program */
        ap_map by_line = {0};
        if (lines_of(c->p, g.fn, c->lines, &by_line) != 0)
            return -1;
        uint64_t no;
        line_ns = map_max(&by_line, UINT64_MAX, &no, &lines_total);
        ap_map_free(&by_line);
        line_no = (int)no;
        line_key = line_ns > 0 ? g.fn : 0;
        line_src = " (line profile)";
    }
    double share = (double)best_ns / (double)r->work;
    ap_finding *f = about_route(c, r, AP_FK_HOT_FUNCTION, share >= 0.5 ? AP_SEV_HIGH : AP_SEV_MEDIUM);
    if (f == NULL)
        return -1;
    f->route = r->route;
    f->frame = g.fn;
    f->value = best_ns;
    f->share = share;
    f->count = r->requests;
    if (g.heaviest != NULL) { /* the hot path: user frames from the top down to fn */
        ap_frame_id rev[AP_FINDING_PATH];
        size_t k = 0;
        for (const ap_node *nd = g.heaviest; nd->id != 0 && k < AP_FINDING_PATH;
             nd = ap_tree_node(g.tree, nd->parent)) {
            const ap_frame *fr = ap_prof_frame(p, nd->frame);
            if (fr->kind == AP_FRAME_PYTHON && fr->lineno == 0 && !c->cls.frame_library[nd->frame])
                rev[k++] = nd->frame;
        }
        for (size_t i = 0; i < k; i++)
            f->path[i] = rev[k - 1 - i];
        f->npath = k;
    }
    char w[256], tw[256], d1[32], d2[32], scope[300], per[64] = "", most[320] = "";
    if (r->requests > 0 && r->route != 0)
        snprintf(per, sizeof per, ", %s per request",
                 dur(d2, sizeof d2, (double)best_ns / (double)r->requests));
    if (top_key != 0 && (double)top_ns >= 0.5 * (double)best_ns)
        snprintf(most, sizeof most, "; mostly in %s (%.0f%%)",
                 where(p, (ap_frame_id)top_key, tw, sizeof tw),
                 100.0 * (double)top_ns / (double)best_ns);
    say(f, "%s and what it calls outside your code take %.0f%% %s: %s%s%s",
        where(p, g.fn, w, sizeof w), 100.0 * share, scope_of(p, r->route, scope, sizeof scope),
        dur(d1, sizeof d1, (double)best_ns), per, most);
    if (line_key != 0 && lines_total > 0) {
        double ls = (double)line_ns / (double)lines_total;
        ap_finding *h = fnew(&c->out, AP_FK_HOT_LINE, ls >= 0.5 ? AP_SEV_HIGH : AP_SEV_MEDIUM);
        if (h == NULL)
            return -1;
        h->route = r->route;
        h->frame = (ap_frame_id)line_key;
        h->line = (uint32_t)line_no;
        h->value = line_ns;
        h->rank = f->rank != UINT64_MAX ? f->rank : best_ns; /* with its function */
        h->severity = f->severity;
        h->share = ls;
        say(h, "line %u of %s takes %.0f%% of the function's time: %s%s", h->line,
            where(p, g.fn, w, sizeof w), 100.0 * ls, dur(d1, sizeof d1, (double)line_ns), line_src);
    }
    return 0;
}

/* ---- leak suspects (memory profiles) ------------------------------------------------
 * Only route trees count: they hold request work alone, so import-time and
 * start-up allocations (the thread trees) never make a route a suspect.  A
 * route's retained bytes are the live bytes of all nodes of its trees; the
 * site named is the user function owning most of them (its own lines and
 * the library calls under it) and that function's line with the most. */

typedef struct leak_acc {
    ap_map by_fn;    /* owner function frame -> live bytes */
    ap_map by_line;  /* line frame of a user function -> live bytes */
} leak_acc;

static int leak_visit(ctx *c, const ap_tree *tree, const ap_node *node, ap_frame_id owner,
                      void *arg) {
    (void)tree;
    leak_acc *a = arg;
    uint64_t live = node->m[AP_M_LIVE_BYTES];
    if (live == 0)
        return 0;
    if (add_to(&a->by_fn, owner, live) != 0)
        return -1;
    if (c->func[node->frame] != node->frame && c->func[node->frame] == owner)
        return add_to(&a->by_line, node->frame, live);
    return 0;
}

/* In sampled memory each sampled block weighs about the sampling interval at
 * least, so one or two blocks alive are noise, not a route's habit: the
 * live bytes must reach AP_FINDING_LEAK_SAMPLES intervals (0 in full mode). */
static uint64_t sampled_floor(const ap_prof *p) {
    const char *mode = ap_prof_meta_get(p, "memory");
    const char *rate = ap_prof_meta_get(p, "memory_rate");
    if (mode == NULL || strcmp(mode, "sampled") != 0 || rate == NULL)
        return 0;
    return AP_FINDING_LEAK_SAMPLES * strtoull(rate, NULL, 10);
}

static int leak_suspect(ctx *c, const route_acc *r) {
    ap_prof *p = c->p;
    uint64_t live = 0;
    for (size_t t = 0; t < ap_prof_ntrees(p); t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        if (!in_route(c, tree, r->route))
            continue;
        for (size_t i = 1; i < ap_tree_nnodes(tree); i++)
            live += ap_tree_node(tree, (ap_node_id)i)->m[AP_M_LIVE_BYTES];
    }
    if (live < AP_FINDING_LEAK_BYTES || r->requests == 0 ||
        live / r->requests < AP_FINDING_LEAK_PER_REQ || live < sampled_floor(p))
        return 0;
    leak_acc a = {{0}, {0}};
    if (walk_owned(c, r->route, leak_visit, &a) != 0) {
        ap_map_free(&a.by_fn);
        ap_map_free(&a.by_line);
        return -1;
    }
    uint64_t fn = 0, line = 0, line_bytes = 0, key, val;
    uint64_t fn_bytes = map_max(&a.by_fn, UINT64_MAX, &fn, NULL);
    for (size_t pos = 0; fn_bytes > 0 && (pos = ap_map_next(&a.by_line, pos, &key, &val)) != 0;)
        if (c->func[key] == fn && (val > line_bytes || (val == line_bytes && key < line))) {
            line = key;
            line_bytes = val;
        }
    ap_map_free(&a.by_fn);
    ap_map_free(&a.by_line);
    ap_finding *f = fnew(&c->out, AP_FK_LEAK_SUSPECT,
                         live >= 16 * (uint64_t)AP_FINDING_LEAK_BYTES ? AP_SEV_HIGH
                                                                        : AP_SEV_MEDIUM);
    if (f == NULL)
        return -1;
    f->route = r->route;
    f->value = live;
    f->unit = "bytes";
    f->count = r->requests;
    f->share = fn_bytes > 0 ? (double)fn_bytes / (double)live : 0.0;
    f->frame = line != 0 ? (ap_frame_id)line : (ap_frame_id)fn;
    f->line = line != 0 ? ap_prof_frame(p, (ap_frame_id)line)->lineno : 0;
    char b1[32], b2[32], w[256], site[400] = "";
    if (fn_bytes > 0 && line != 0)
        snprintf(site, sizeof site, "; %.0f%% of it under %s, line %u allocating the most",
                 100.0 * f->share, where(p, (ap_frame_id)fn, w, sizeof w), f->line);
    else if (fn_bytes > 0)
        snprintf(site, sizeof site, "; %.0f%% of it under %s", 100.0 * f->share,
                 where(p, (ap_frame_id)fn, w, sizeof w));
    say(f,
        "%s: %s allocated by its %llu requests was still alive at the end (%s per request): "
        "memory kept across requests%s",
        ap_prof_str(p, r->route), bytes_str(b1, sizeof b1, live), (unsigned long long)r->requests,
        bytes_str(b2, sizeof b2, live / r->requests), site);
    return 0;
}

/* ---- blocking calls on the event loop -------------------------------------------- */

/* The threads (thread_id labels) that ran an event loop: a tree of theirs
 * holds the loop's own frames (asyncio's BaseEventLoop._run_once, uvloop's
 * Loop.run_forever / run_until_complete) or a coroutine that was suspended
 * (await time: only a loop resumes coroutines). */
static int loop_threads(ctx *c, ap_map *threads) {
    ap_str_id k = c->k_thread_id;
    for (size_t t = 0; k != AP_NONE && t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        ap_str_id tid = ap_tree_label_get(tree, k);
        if (tid == AP_NONE)
            continue;
        for (size_t i = 1; i < ap_tree_nnodes(tree); i++) {
            const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
            const char *q = ap_prof_frame_qualname(c->p, n->frame);
            if (n->m[AP_M_AWAIT_NS] > 0 || strcmp(q, "BaseEventLoop._run_once") == 0 ||
                strstr(q, "Loop.run_forever") != NULL ||
                strstr(q, "Loop.run_until_complete") != NULL) {
                if (ap_map_put(threads, tid, 1) != 0) {
                    ap_err_set(AP_ENOMEM, "findings: out of memory");
                    return -1;
                }
                break;
            }
        }
    }
    return 0;
}

static int blocks(const ap_node *n) {
    return n->m[AP_M_CALLS] > 0 && n->m[AP_M_AWAIT_NS] == 0 &&
           n->m[AP_M_TOTAL_NS] / n->m[AP_M_CALLS] >= AP_FINDING_BLOCK_NS;
}

/* An import on the loop (a node inside the import system) is a cold start, a
 * first request, not a call that blocks every time. */
static int in_import(const ap_prof *p, const ap_tree *tree, const ap_node *n) {
    for (; n->id != 0; n = ap_tree_node(tree, n->parent)) {
        const ap_frame *fr = ap_prof_frame(p, n->frame);
        if (fr->kind == AP_FRAME_PYTHON &&
            strncmp(ap_prof_str(p, fr->file), "<frozen importlib", 17) == 0)
            return 1;
    }
    return 0;
}

static int blocking_calls(ctx *c, const route_acc *routes, size_t nroutes) {
    ap_map threads = {0};
    if (loop_threads(c, &threads) != 0)
        return -1;
    int rc = 0;
    for (size_t ri = 0; rc == 0 && ri < nroutes; ri++) {
        ap_str_id route = routes[ri].route;
        if (route == 0)
            continue;
        ap_map total = {0}, calls = {0}, caller = {0}; /* keyed by frame */
        for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(c->p); t++) {
            const ap_tree *tree = ap_prof_tree_at(c->p, t);
            ap_str_id tid =
                c->k_thread_id != AP_NONE ? ap_tree_label_get(tree, c->k_thread_id) : AP_NONE;
            if (!in_route(c, tree, route) || tid == AP_NONE || ap_map_get(&threads, tid) == NULL)
                continue;
            for (size_t i = 1; rc == 0 && i < ap_tree_nnodes(tree); i++) {
                const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
                if (c->cls.node_idle[t][i] || !blocks(n))
                    continue;
                int deeper = 0;
                for (const ap_node *ch = ap_node_first_child(n); ch && !deeper;
                     ch = ap_node_next_sibling(ch))
                    deeper = blocks(ch);
                if (deeper || in_import(c->p, tree, n))
                    continue;
                /* The user frame that made the call (the node itself if user code). */
                const ap_node *u = n;
                while (u->id != 0 && !user_node(c, t, u))
                    u = ap_tree_node(tree, u->parent);
                ap_frame_id key = c->func[n->frame];
                int ins;
                uint64_t *cl =
                    ap_map_upsert(&caller, key, u->id != 0 ? c->func[u->frame] : 0, &ins);
                if (add_to(&total, key, n->m[AP_M_TOTAL_NS]) != 0 ||
                    add_to(&calls, key, n->m[AP_M_CALLS]) != 0 || cl == NULL)
                    rc = -1;
            }
        }
        uint64_t key, val;
        for (size_t pos = 0; rc == 0 && (pos = ap_map_next(&total, pos, &key, &val)) != 0;) {
            uint64_t ncalls = *ap_map_get(&calls, key), from = *ap_map_get(&caller, key);
            if (ncalls < AP_FINDING_BLOCK_CALLS)
                continue; /* once: a cold start or a hiccup, not a pattern */
            ap_finding *f = fnew(&c->out, AP_FK_BLOCKING_CALL, AP_SEV_HIGH);
            if (f == NULL) {
                rc = -1;
                break;
            }
            f->route = route;
            f->frame = (ap_frame_id)key;
            f->value = val;
            f->count = ncalls;
            f->share = routes[ri].work ? (double)val / (double)routes[ri].work : 0;
            char w[256], w2[256], d1[32], d2[32], by[300] = "";
            if (from != 0 && from != key)
                snprintf(by, sizeof by, ", called from %s,",
                         where(c->p, (ap_frame_id)from, w2, sizeof w2));
            say(f,
                "%s blocks the event loop: %s%s runs %s per call without awaiting (%llu calls, %s "
                "in total); no other request progresses meanwhile",
                ap_prof_str(c->p, route), where(c->p, (ap_frame_id)key, w, sizeof w), by,
                dur(d1, sizeof d1, (double)val / (double)ncalls), (unsigned long long)ncalls,
                dur(d2, sizeof d2, (double)val));
        }
        ap_map_free(&total);
        ap_map_free(&calls);
        ap_map_free(&caller);
    }
    ap_map_free(&threads);
    return rc;
}

/* ---- event-loop stalls ------------------------------------------------------------- */

/* A stall inside the import system is a cold start (a first request
 * importing a module), not something the app does every time. */
static int stall_in_import(const ap_prof *p, const ap_stall *s) {
    const ap_frame_id *st = ap_prof_stall_stack(p, s);
    for (uint32_t k = 0; k < s->nstack; k++) {
        const ap_frame *fr = ap_prof_frame(p, st[k]);
        if (fr->kind == AP_FRAME_PYTHON &&
            strncmp(ap_prof_str(p, fr->file), "<frozen importlib", 17) == 0)
            return 1;
    }
    return 0;
}

/* A stall whose loop thread ran for under half of it while its culprit was Python
 * code (no C call under it that could block): the thread waited for the GIL or a
 * core, the code at that line was not slow. */
static int stall_starved(const ap_prof *p, const ap_stall *s) {
    if (s->cpu_ns == 0 || s->cpu_ns * 2 >= s->dur_ns || s->nstack == 0)
        return 0;
    const ap_frame *leaf = ap_prof_frame(p, ap_prof_stall_stack(p, s)[s->nstack - 1]);
    return leaf->kind == AP_FRAME_PYTHON;
}

/* One finding for the starved stalls (marked done): how many, the longest, the total,
 * the loop thread's share of the CPU, and the line most of them ended up at. */
static int loop_starved(ctx *c, uint8_t *done) {
    size_t n = ap_prof_nstalls(c->p);
    uint64_t count = 0, total = 0, cpu = 0, longest = 0, at_ns = 0;
    const ap_stall *at = NULL;
    ap_map by_line = {0};
    for (size_t i = 0; i < n; i++) {
        const ap_stall *s = ap_prof_stall_at(c->p, i);
        if (done[i] || !stall_starved(c->p, s))
            continue;
        done[i] = 1;
        count++;
        total += s->dur_ns;
        cpu += s->cpu_ns;
        longest = s->dur_ns > longest ? s->dur_ns : longest;
        uint64_t key = (uint64_t)s->func << 32 | s->line;
        if (add_to(&by_line, key, s->dur_ns) != 0) {
            ap_map_free(&by_line);
            return -1;
        }
        uint64_t sum = *ap_map_get(&by_line, key);
        if (sum > at_ns || (sum == at_ns && at != NULL && key < ((uint64_t)at->func << 32 | at->line))) {
            at_ns = sum;
            at = s;
        }
    }
    ap_map_free(&by_line);
    if (count == 0)
        return 0;
    ap_finding *f = fnew(&c->out, AP_FK_LOOP_STARVED, count > 1 ? AP_SEV_HIGH : AP_SEV_INFO);
    if (f == NULL)
        return -1;
    f->value = total;
    f->count = count;
    f->frame = at->func;
    f->line = at->line;
    f->share = total ? (double)cpu / (double)total : 0;
    const ap_frame *fr = ap_prof_frame(c->p, at->func);
    char d1[32], d2[32];
    say(f,
        "the event loop stalled %llu time%s (up to %s, %s in all) while its thread ran for only "
        "%.0f%% of that time: it waited for the GIL, which other threads held (the thread "
        "pool's sync routes and dependencies, CPU work in threads), or for a core; not the "
        "code it was in (most often %s at %s:%u). Fewer threads holding the GIL (async "
        "routes and drivers, a smaller thread pool, CPU work in processes) shorten it",
        (unsigned long long)count, count == 1 ? "" : "s", dur(d1, sizeof d1, (double)longest),
        dur(d2, sizeof d2, (double)total), 100.0 * f->share, ap_prof_str(c->p, fr->qualname),
        short_path(ap_prof_str(c->p, fr->file)), at->line ? at->line : fr->line);
    return 0;
}

/* One finding per (route, function, line) of the recorded stalls, cold
 * starts and starved stalls left out: how many, the longest, the total, and
 * the call path of the longest. */
static int loop_stalls(ctx *c) {
    size_t n = ap_prof_nstalls(c->p);
    uint8_t *done = n ? calloc(n, 1) : NULL;
    if (n > 0 && done == NULL)
        return ap_err_set(AP_ENOMEM, "findings: out of memory");
    for (size_t i = 0; i < n; i++)
        done[i] = (uint8_t)stall_in_import(c->p, ap_prof_stall_at(c->p, i));
    if (loop_starved(c, done) != 0) {
        free(done);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        const ap_stall *s = ap_prof_stall_at(c->p, i), *longest = s;
        uint64_t count = 0, total = 0, cpu = 0, cpu_of = 0;   /* CPU of the stalls that know it */
        for (size_t j = i; j < n; j++) {
            const ap_stall *o = ap_prof_stall_at(c->p, j);
            if (done[j] || o->route != s->route || o->func != s->func || o->line != s->line)
                continue;
            done[j] = 1;
            count++;
            total += o->dur_ns;
            if (o->cpu_ns != 0) {
                cpu += o->cpu_ns;
                cpu_of += o->dur_ns;
            }
            if (o->dur_ns > longest->dur_ns)
                longest = o;
        }
        /* Once is a hiccup as often as a pattern (a first request, the machine pausing
         * the process, a collection): listed, below the ones that repeat. */
        ap_finding *f = fnew(&c->out, AP_FK_LOOP_STALL, count > 1 ? AP_SEV_HIGH : AP_SEV_INFO);
        if (f == NULL) {
            free(done);
            return -1;
        }
        f->route = s->route;
        f->frame = s->func;
        f->line = s->line;
        f->value = total;
        f->count = count;
        const ap_frame_id *st = ap_prof_stall_stack(c->p, longest);
        for (uint32_t k = 0; k < longest->nstack && f->npath < AP_FINDING_PATH; k++)
            if (!c->cls.frame_library[st[k]])
                f->path[f->npath++] = st[k];
        const ap_frame *fr = ap_prof_frame(c->p, s->func);
        const ap_frame *leaf = longest->nstack ? ap_prof_frame(c->p, st[longest->nstack - 1]) : NULL;
        char d1[32], d2[32], call[200] = "", oncpu[200] = "";
        if (leaf != NULL && leaf->kind != AP_FRAME_PYTHON)
            snprintf(call, sizeof call, " (%s)", ap_prof_str(c->p, leaf->qualname));
        /* Off the CPU for most of it: the loop was not running that code. */
        if (cpu_of > 0 && cpu * 2 < cpu_of)
            snprintf(oncpu, sizeof oncpu,
                     "; the loop's thread ran for only %.0f%% of it: the rest it waited, %s",
                     100.0 * (double)cpu / (double)cpu_of,
                     call[0] ? "in the call, for the GIL or for a core"
                             : "for the GIL (other threads held it) or for a core");
        const char *tail = short_path(ap_prof_str(c->p, fr->file));
        say(f,
            "%s%sthe event loop stalled %llu time%s, for up to %s (%s in all), in %s at "
            "%s:%u%s; no other request progressed meanwhile%s%s",
            s->route ? ap_prof_str(c->p, s->route) : "", s->route ? ": " : "",
            (unsigned long long)count, count == 1 ? "" : "s",
            dur(d1, sizeof d1, (double)longest->dur_ns), dur(d2, sizeof d2, (double)total),
            ap_prof_str(c->p, fr->qualname), tail, s->line ? s->line : fr->line, call, oncpu,
            count > 1 ? "" : " (once: it may be a hiccup rather than a pattern)");
    }
    free(done);
    return 0;
}

/* ---- lock contention ---------------------------------------------------------------- */

/* The tracer records a contended acquisition of a timed lock as a call of a
 * "<lock wait>" frame (file and line: the acquiring line) under the
 * acquiring function.  One finding per (route, line) with 10 ms or more. */
typedef struct lock_acc {
    ap_str_id route;
    ap_frame_id wait, func;
    uint64_t ns, count;
    size_t tree;        /* the last tree seen, plus 1 */
    uint64_t trees_ns;  /* time of the trees (threads) it was seen in: top nodes' totals */
    ap_frame_id inner;  /* by_app: a library function the waits happened in, 0: none */
} lock_acc;

/* threading.py and queue.py: the locks of Condition, Event and Queue, where the
 * workers of a thread pool wait for their next job. */
static int pool_machinery(const char *file) {
    const char *tail = short_path(file), *slash = strchr(tail, '/');
    const char *base = slash ? slash + 1 : tail;
    return strcmp(base, "threading.py") == 0 || strcmp(base, "queue.py") == 0;
}

/* The nodes of synthetic frame `name` ("<lock wait>", "<gil wait>": a wait
 * a producer measured) of every tree, summed per (route, frame) into *out
 * (*n rows, each with the function that waited); pool workers' waits outside
 * any request are skipped when skip_pool.  With by_app, per (route, function of
 * the app's code that the wait was under: the nearest one up from the waiting
 * function, which may be a library's, kept as inner).  0; -1 with AP_ENOMEM. */
static int synthetic_waits(ctx *c, const char *name, int skip_pool, int by_app, lock_acc **out,
                           size_t *n) {
    lock_acc *acc = NULL;
    size_t cap = 0;
    *n = 0;
    for (size_t t = 0; t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        ap_str_id route = c->k_route != AP_NONE ? ap_tree_label_get(tree, c->k_route) : AP_NONE;
        if (route == AP_NONE)
            route = 0;
        for (size_t i = 1; i < ap_tree_nnodes(tree); i++) {
            const ap_node *nd = ap_tree_node(tree, (ap_node_id)i);
            const ap_frame *fr = ap_prof_frame(c->p, nd->frame);
            if (fr->kind != AP_FRAME_OTHER || strcmp(ap_prof_frame_qualname(c->p, nd->frame), name) != 0)
                continue;
            if (skip_pool && route == 0 && pool_machinery(ap_prof_str(c->p, fr->file)))
                continue;   /* a pool's worker waiting for work: idle, not contention */
            const ap_node *parent = ap_tree_node(tree, nd->parent);
            ap_frame_id key = nd->frame, func = 0, inner = 0;
            if (parent != NULL && parent->id != 0)
                func = c->func[parent->frame];
            if (by_app && func != 0) {
                const ap_node *a = parent;
                while (a != NULL && a->id != 0 &&
                       (ap_prof_frame(c->p, a->frame)->kind != AP_FRAME_PYTHON ||
                        c->cls.frame_library[a->frame]))
                    a = ap_tree_node(tree, a->parent);
                if (a != NULL && a->id != 0 && c->func[a->frame] != func) {
                    inner = func;
                    func = c->func[a->frame];
                }
                key = func;
            }
            size_t k = 0;
            while (k < *n && (acc[k].route != route || acc[k].wait != key))
                k++;
            if (k == *n) {
                if (*n == cap) {
                    size_t nc = cap ? 2 * cap : 8;
                    lock_acc *x = realloc(acc, nc * sizeof *x);
                    if (x == NULL) {
                        free(acc);
                        return ap_err_set(AP_ENOMEM, "findings: out of memory");
                    }
                    acc = x;
                    cap = nc;
                }
                acc[(*n)++] = (lock_acc){route, key, 0, 0, 0, 0, 0, 0};
            }
            if (acc[k].tree != t + 1) {
                acc[k].tree = t + 1;
                for (const ap_node *top = ap_node_first_child(ap_tree_node(tree, 0)); top != NULL;
                     top = ap_node_next_sibling(top))
                    acc[k].trees_ns += top->m[AP_M_TOTAL_NS];
            }
            if (func != 0)
                acc[k].func = func;
            if (inner != 0)
                acc[k].inner = inner;
            acc[k].ns += nd->m[AP_M_TOTAL_NS];
            acc[k].count += nd->m[AP_M_CALLS];
        }
    }
    *out = acc;
    return 0;
}

static int lock_contention(ctx *c) {
    lock_acc *acc = NULL;
    size_t n = 0;
    int rc = synthetic_waits(c, "<lock wait>", 1, 0, &acc, &n);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        if (acc[k].ns < AP_FINDING_LOCK_MIN_NS)
            continue;
        /* One wait is information (as one stall is): a pattern needs a repeat. */
        ap_finding *f = fnew(&c->out, AP_FK_LOCK_CONTENTION,
                             acc[k].count > 1 ? AP_SEV_HIGH : AP_SEV_INFO);
        if (f == NULL) {
            rc = -1;
            break;
        }
        const ap_frame *w = ap_prof_frame(c->p, acc[k].wait);
        f->route = acc[k].route;
        f->frame = acc[k].func;
        f->line = w->line;
        f->value = acc[k].ns;
        f->count = acc[k].count;
        const char *tail = short_path(ap_prof_str(c->p, w->file));
        char d1[32], d2[32];
        say(f,
            "%s%s%s waited %s to acquire a lock at %s:%u (%llu wait%s, %s each), off the CPU: "
            "%s",
            acc[k].route ? ap_prof_str(c->p, acc[k].route) : "", acc[k].route ? ": " : "",
            acc[k].func ? ap_prof_frame_qualname(c->p, acc[k].func) : "the code", dur(d1, sizeof d1, (double)acc[k].ns),
            tail, w->line, (unsigned long long)acc[k].count, acc[k].count == 1 ? "" : "s",
            dur(d2, sizeof d2, (double)acc[k].ns / (double)(acc[k].count ? acc[k].count : 1)),
            acc[k].count > 1 ? "the requests queue on that lock" : "once, which may be a hiccup");
    }
    free(acc);
    return rc;
}

/* ---- GIL contention -------------------------------------------------------------------
 * The tracer's GIL waits (cpu=True) are nodes of "<gil wait>" under the
 * function that waited.  One finding per (route, function) with 10 ms or more;
 * its share is of the time of the threads it waited in (their trees' top
 * nodes): high when a quarter or more, over more than one wait. */
static int gil_contention(ctx *c) {
    lock_acc *acc = NULL;
    size_t n = 0;
    int rc = synthetic_waits(c, "<gil wait>", 0, 1, &acc, &n);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        if (acc[k].ns < AP_FINDING_LOCK_MIN_NS)
            continue;
        double share = acc[k].trees_ns ? (double)acc[k].ns / (double)acc[k].trees_ns : 0.0;
        ap_finding *f = fnew(&c->out, AP_FK_GIL_CONTENTION,
                             acc[k].count <= 1 ? AP_SEV_INFO
                             : share >= AP_FINDING_GIL_SHARE ? AP_SEV_HIGH : AP_SEV_MEDIUM);
        if (f == NULL) {
            rc = -1;
            break;
        }
        const ap_frame *w = ap_prof_frame(c->p, acc[k].func ? acc[k].func : acc[k].wait);
        f->route = acc[k].route;
        f->frame = acc[k].func;
        f->value = acc[k].ns;
        f->share = share;
        f->count = acc[k].count;
        char d1[32], d2[32], in[160] = "";
        if (acc[k].inner)
            snprintf(in, sizeof in, " (in library code it called, such as %s)",
                     ap_prof_frame_qualname(c->p, acc[k].inner));
        say(f,
            "%s%s%s (%s:%u) waited %s for the GIL%s, %.0f%% of its threads' time, %llu wait%s "
            "of %s each: other threads were running Python code, and only one thread runs it "
            "at a time; CPU-bound Python in threads does not run in parallel (a process pool "
            "does, or C code that releases the GIL)",
            acc[k].route ? ap_prof_str(c->p, acc[k].route) : "", acc[k].route ? ": " : "",
            acc[k].func ? ap_prof_frame_qualname(c->p, acc[k].func) : "the code",
            short_path(ap_prof_str(c->p, w->file)), w->line, dur(d1, sizeof d1, (double)acc[k].ns),
            in, 100.0 * share, (unsigned long long)acc[k].count, acc[k].count == 1 ? "" : "s",
            dur(d2, sizeof d2, (double)acc[k].ns / (double)(acc[k].count ? acc[k].count : 1)));
    }
    free(acc);
    return rc;
}

/* ---- routes that mostly wait --------------------------------------------------------- */

/* Frames that hand work to a thread pool: awaiting them is waiting for the
 * request's own work in another thread (which the views show there), not
 * for something outside. */
static const char *const pool_hops[] = {
    "run_sync_in_worker_thread",
    "run_sync",
    "run_in_threadpool",
    "BaseEventLoop.run_in_executor",
    "to_thread",
    "iterate_in_threadpool",
    /* ...or to tasks of its own, whose trees show their work */
    "TaskGroup.__aexit__",
    "gather",
    "wait",
    "wait_for",
    "create_collapsing_task_group",
    /* ...or through the app's router: the wait belongs to the handler below
     * (a middleware of the app awaiting the app is not waiting on the outside) */
    "Route.handle",
    "APIRoute.handle",
    "Mount.handle",
    "Router.__call__",
    "APIRouter.__call__",
};

static int is_pool_hop(const ap_prof *p, ap_frame_id f) {
    const char *q = ap_prof_frame_qualname(p, f);
    for (size_t i = 0; i < sizeof pool_hops / sizeof pool_hops[0]; i++)
        if (strcmp(q, pool_hops[i]) == 0)
            return 1;
    return 0;
}

/* What a route waits on: each "sink" (a node suspended in await itself, not
 * mostly through a child) is charged to the call the nearest user frame
 * above it made (the frame below that user frame on the path: the
 * AsyncClient.get of a handler), unless the path hands work to a thread
 * pool. */
static int route_waits(ctx *c, ap_str_id route, ap_map *waits, ap_map *from) {
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        if (!in_route(c, tree, route))
            continue;
        for (size_t i = 1; rc == 0 && i < ap_tree_nnodes(tree); i++) {
            const ap_node *n = ap_tree_node(tree, (ap_node_id)i);
            uint64_t aw = n->m[AP_M_AWAIT_NS], below = 0;
            if (aw == 0 || c->cls.node_idle[t][i])
                continue;
            for (const ap_node *ch = ap_node_first_child(n); ch; ch = ap_node_next_sibling(ch))
                below += ch->m[AP_M_AWAIT_NS];
            if (2 * below >= aw)
                continue; /* not a sink: most of its wait is a child's */
            const ap_node *call = n, *u = n;
            int hop = is_pool_hop(c->p, c->func[n->frame]);
            while (u->id != 0 && !user_node(c, t, u)) {
                call = u;
                u = ap_tree_node(tree, u->parent);
                hop |= is_pool_hop(c->p, c->func[u->frame]);
            }
            if (u->id == 0 || hop)
                continue;
            ap_frame_id key = c->func[call->frame];
            int ins;
            uint64_t *f = ap_map_upsert(from, key, c->func[u->frame], &ins);
            if (f == NULL || add_to(waits, key, aw - below) != 0)
                rc = -1;
        }
    }
    if (rc != 0)
        ap_err_set(AP_ENOMEM, "findings: out of memory");
    return rc;
}

/* Route r's waits by kind, waits[AP_WAIT_COUNT]: each kind's metric summed over the top
 * nodes of its trees (added to waits). */
static void route_wait_kinds(const ctx *c, ap_str_id route, uint64_t *waits) {
    for (size_t t = 0; t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        if (!in_route(c, tree, route))
            continue;
        for (size_t i = 1; i < ap_tree_nnodes(tree); i++) {
            const ap_node *nd = ap_tree_node(tree, (ap_node_id)i);
            if (nd->parent == 0)
                for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                    waits[k] += nd->m[ap_wait_metric(k)];
        }
    }
}

/* A route whose calls waited for a free thread of the pool (the thread_pool wait kind:
 * anyio's limiter had no token left). */
static int pool_queueing(ctx *c, const route_acc *r) {
    uint64_t waits[AP_WAIT_COUNT] = {0};
    route_wait_kinds(c, r->route, waits);
    uint64_t q = waits[AP_WAIT_THREAD_POOL];
    if (q < AP_FINDING_WAIT_MIN_NS)
        return 0;
    const ap_hist *lat = r->route ? ap_prof_latency_get(c->p, r->route) : NULL;
    double share = lat != NULL && ap_hist_sum(lat) > 0 ? (double)q / (double)ap_hist_sum(lat) : 0;
    ap_finding *f = fnew(&c->out, AP_FK_POOL_QUEUEING, share >= 0.25 ? AP_SEV_HIGH : AP_SEV_MEDIUM);
    if (f == NULL)
        return -1;
    f->route = r->route;
    f->value = q;
    f->count = r->requests;
    f->share = share;
    char d1[32], d2[32], per[96] = "", of[64] = "";
    if (r->requests > 0)
        snprintf(per, sizeof per, ", %s per request",
                 dur(d2, sizeof d2, (double)q / (double)r->requests));
    if (share > 0)
        snprintf(of, sizeof of, ", %.0f%% of its latency", 100.0 * share);
    say(f, "%s waited %s for a free thread of the thread pool%s%s: every thread was busy "
           "(anyio's pool has 40 by default: anyio.to_thread.current_default_thread_limiter()"
           ".total_tokens), or make the blocking calls async",
        r->route ? ap_prof_str(c->p, r->route) : "the program", dur(d1, sizeof d1, (double)q), per,
        of);
    return 0;
}

static int await_bound(ctx *c, const route_acc *r) {
    ap_map waits = {0}, from = {0}; /* the call -> await time, -> its user caller */
    int rc = route_waits(c, r->route, &waits, &from);
    uint64_t key = 0, sum = 0;
    uint64_t top = rc == 0 ? map_max(&waits, UINT64_MAX, &key, &sum) : 0;
    int mostly = (double)sum >= AP_FINDING_WAIT_SHARE * (double)(sum + r->work);
    int long_per_request = r->requests > 0 && sum / r->requests >= AP_FINDING_WAIT_PER_REQ_NS;
    if (rc == 0 && sum >= AP_FINDING_WAIT_MIN_NS && (mostly || long_per_request) && top > 0) {
        ap_finding *f = fnew(&c->out, AP_FK_AWAIT_BOUND, AP_SEV_MEDIUM);
        if (f == NULL) {
            rc = -1;
        } else {
            f->route = r->route;
            f->frame = (ap_frame_id)key;
            f->value = top;
            f->count = r->requests;
            f->share = (double)sum / (double)(sum + r->work);
            char w[256], w2[256], d1[32], d2[32], per[64] = "", what[300];
            ap_frame_id caller = (ap_frame_id)*ap_map_get(&from, key);
            if (r->requests > 0)
                snprintf(per, sizeof per, ", %s per request",
                         dur(d2, sizeof d2, (double)top / (double)r->requests));
            if (caller == key)
                snprintf(what, sizeof what, "suspended in %s", where(c->p, caller, w2, sizeof w2));
            else
                snprintf(what, sizeof what, "awaiting %s, called from %s",
                         where(c->p, (ap_frame_id)key, w, sizeof w),
                         where(c->p, caller, w2, sizeof w2));
            say(f, "%s spends %.0f%% of its time waiting: %s %s%s",
                r->route ? ap_prof_str(c->p, r->route) : "the program", 100.0 * f->share,
                dur(d1, sizeof d1, (double)top), what, per);
        }
    }
    ap_map_free(&waits);
    ap_map_free(&from);
    return rc;
}

/* ---- the whole -------------------------------------------------------------------------- */

static int rank(const void *a, const void *b) {
    const ap_finding *x = a, *y = b;
    if ((x->kind == AP_FK_IDLE) != (y->kind == AP_FK_IDLE)) /* a note on the views, last */
        return x->kind == AP_FK_IDLE ? 1 : -1;
    if (x->severity != y->severity)
        return x->severity > y->severity ? -1 : 1;
    uint64_t rx = x->rank != UINT64_MAX ? x->rank : x->value;
    uint64_t ry = y->rank != UINT64_MAX ? y->rank : y->value;
    if (rx != ry)
        return rx > ry ? -1 : 1;
    if (x->route != y->route)
        return x->route < y->route ? -1 : 1;
    return x->kind < y->kind ? -1 : x->kind > y->kind;
}

static int collect_routes(ctx *c, route_acc **out, size_t *n) {
    ap_map index = {0}; /* route string -> slot */
    route_acc *acc = NULL;
    size_t na = 0;
    for (size_t t = 0; t < ap_prof_ntrees(c->p); t++) {
        const ap_tree *tree = ap_prof_tree_at(c->p, t);
        ap_str_id r = c->k_route != AP_NONE ? ap_tree_label_get(tree, c->k_route) : AP_NONE;
        if (r == AP_NONE)
            continue;
        int ins;
        uint64_t *slot = ap_map_upsert(&index, r, na, &ins);
        if (slot == NULL)
            goto oom;
        if (ins) {
            route_acc *g = realloc(acc, (na + 1) * sizeof *g);
            if (g == NULL)
                goto oom;
            acc = g;
            acc[na++] = (route_acc){r, 0, 0, AP_SEV_HIGH};
        }
        route_acc *a = &acc[*slot];
        a->requests += ap_tree_node(tree, 0)->m[AP_M_CALLS];
        for (size_t i = 1; i < ap_tree_nnodes(tree); i++)
            if (!c->cls.node_idle[t][i])
                a->work += ap_tree_node(tree, (ap_node_id)i)->m[AP_M_SELF_NS];
    }
    ap_map_free(&index);
    if (acc != NULL)
        qsort(acc, na, sizeof *acc, by_work);
    *out = acc;
    *n = na;
    return 0;
oom:
    ap_map_free(&index);
    free(acc);
    ap_err_set(AP_ENOMEM, "findings: out of memory");
    return -1;
}

static int ctx_init(ctx *c, ap_prof *p);

/* The route with the highest p95 latency, when two routes or more have a
 * latency histogram: said in its slow route finding when it has one (one
 * route, one finding), else a finding of its own.  0 / -1 with AP_ENOMEM. */
static int slow_latency(ctx *c, const route_acc *routes, size_t nroutes) {
    const ap_hist *top = NULL, *next = NULL;
    ap_str_id top_route = 0, next_route = 0;
    size_t with = 0;
    for (size_t i = 0; i < nroutes; i++) {
        const ap_hist *h = ap_prof_latency_get(c->p, routes[i].route);
        if (h == NULL || ap_hist_count(h) == 0)
            continue;
        with++;
        uint64_t p95 = ap_hist_percentile(h, 95);
        if (top == NULL || p95 > ap_hist_percentile(top, 95)) {
            next = top;
            next_route = top_route;
            top = h;
            top_route = routes[i].route;
        } else if (next == NULL || p95 > ap_hist_percentile(next, 95)) {
            next = h;
            next_route = routes[i].route;
        }
    }
    if (with < 2)
        return 0;
    char p50[32], p95[32], p99[32], n95[32];
    dur(p50, sizeof p50, (double)ap_hist_percentile(top, 50));
    dur(p95, sizeof p95, (double)ap_hist_percentile(top, 95));
    dur(p99, sizeof p99, (double)ap_hist_percentile(top, 99));
    dur(n95, sizeof n95, (double)ap_hist_percentile(next, 95));
    for (size_t i = 0; i < c->out.n; i++) {
        ap_finding *f = &c->out.items[i];
        if (f->kind != AP_FK_SLOW_ROUTE || f->route != top_route)
            continue;
        size_t len = strlen(f->message);
        snprintf(f->message + len, sizeof f->message - len,
                 "; the slowest route by p95 latency: %s (p50 %s, p99 %s; next %s, %s)", p95,
                 p50, p99, ap_prof_str(c->p, next_route), n95);
        return 0;
    }
    ap_finding *f = fnew(&c->out, AP_FK_SLOW_LATENCY, AP_SEV_MEDIUM);
    if (f == NULL)
        return -1;
    f->route = top_route;
    f->value = ap_hist_percentile(top, 95);
    f->count = ap_hist_count(top);
    say(f,
        "%s is the slowest route by p95 latency: %s over %llu requests (p50 %s, p99 %s); "
        "next is %s, p95 %s",
        ap_prof_str(c->p, top_route), p95, (unsigned long long)ap_hist_count(top), p50, p99,
        ap_prof_str(c->p, next_route), n95);
    return 0;
}

/* ---- regressions against a baseline profile ------------------------------------ */

/* The trees of route (a string of p) in p, as a finished profile; NULL with the error set. */
static ap_prof *route_trees(ap_prof *p, const char *route) {
    ap_selector s = {0};
    if (ap_selector_add(p, &s, "route", route) != 0)
        return NULL;
    ap_prof *sel = ap_prof_select(p, ap_selector_keep, &s);
    if (sel != NULL && ap_prof_finish(sel) != 0) {
        ap_prof_free(sel);
        return NULL;
    }
    return sel;
}

/* The function-level frame of p with this qualname and file, or 0. */
static ap_frame_id function_named(const ctx *c, const char *qualname, const char *file) {
    for (size_t f = 1; f < ap_prof_nframes(c->p); f++) {
        const ap_frame *fr = ap_prof_frame(c->p, (ap_frame_id)f);
        if (c->func[f] == (ap_frame_id)f && strcmp(ap_prof_frame_qualname(c->p, (ap_frame_id)f), qualname) == 0 &&
            strcmp(ap_prof_str(c->p, fr->file), file) == 0)
            return (ap_frame_id)f;
    }
    return 0;
}

/* One finding: route row b of p against row a of base. */
static int regression(ctx *c, ap_prof *base, const ap_route_row *a, const ap_route_row *b) {
    double va, vb;
    const char *what;
    if (a->latency != NULL && b->latency != NULL && ap_hist_count(a->latency) > 0 &&
        ap_hist_count(b->latency) > 0) {
        va = (double)ap_hist_percentile(a->latency, 50.0);
        vb = (double)ap_hist_percentile(b->latency, 50.0);
        what = "median latency";
    } else {
        va = (double)a->work_ns / (double)a->requests;
        vb = (double)b->work_ns / (double)b->requests;
        what = "work per request";
    }
    if (vb - va < AP_FINDING_REGRESS_MIN_NS || vb < va * (1.0 + AP_FINDING_REGRESS_SHARE))
        return 0;
    const char *name = ap_prof_str(c->p, b->route);
    ap_prof *sa = route_trees(base, name), *sb = sa != NULL ? route_trees(c->p, name) : NULL;
    if (sb == NULL) {
        ap_prof_free(sa);
        return -1;
    }
    ap_diff d;
    ap_diff_opts o = {.per = AP_DIFF_PER_REQUEST};
    char grew[600] = "", d1[32], d2[32], d3[32];
    ap_frame_id frame = 0;
    if (ap_diff_build(sa, sb, &o, &d) == 0) {
        for (size_t i = 0; i < d.nrows; i++) {
            const ap_diff_row *r = &d.rows[i];
            if (r->b[d.key] <= r->a[d.key])
                continue;
            frame = function_named(c, r->qualname, r->file);
            snprintf(grew, sizeof grew, "; grew most: %s (%s), its own time %s more per request",
                     r->qualname, r->file[0] == '~' ? "a C function" : short_path(r->file),
                     dur(d3, sizeof d3, r->b[d.key] - r->a[d.key]));
            break;
        }
        ap_diff_free(&d);
    } else if (ap_err_code() == AP_ENOMEM) {
        ap_prof_free(sa);
        ap_prof_free(sb);
        return -1;
    }
    ap_prof_free(sa);
    ap_prof_free(sb);
    ap_finding *f = fnew(&c->out, AP_FK_REGRESSION, vb >= 2.0 * va ? AP_SEV_HIGH : AP_SEV_MEDIUM);
    if (f == NULL)
        return -1;
    f->route = b->route;
    f->frame = frame;
    f->value = (uint64_t)(vb - va);
    f->unit = "nanoseconds";
    f->share = va > 0 ? vb / va - 1.0 : 0.0;
    f->count = b->requests;
    /* Latency that grew more than the route's own work: the rest is waiting, often
     * for what other routes hold (pool threads, the GIL, the database). */
    char d0[32], d4[32], rest[200] = "";
    double work_grew = (double)b->work_ns / (double)b->requests -
                       (double)a->work_ns / (double)a->requests;
    if (what[0] == 'm' && work_grew < 0.5 * (vb - va))
        snprintf(rest, sizeof rest,
                 "; its own work grew by %s per request only: the rest is waiting (for a "
                 "thread, the GIL or the database, which other routes may be holding)",
                 dur(d4, sizeof d4, work_grew > 0 ? work_grew : 0));
    say(f, "%s: %s %s, %s more than the baseline's %s (+%.0f%%)%s%s", name, what,
        dur(d0, sizeof d0, vb), dur(d1, sizeof d1, vb - va), dur(d2, sizeof d2, va),
        100.0 * f->share, grew, rest);
    return 0;
}

static int regressions(ctx *c, ap_prof *base) {
    ap_route_row *ra = NULL, *rb = NULL;
    size_t na = 0, nb = 0;
    int rc = ap_findings_routes(base, &ra, &na);
    if (rc == 0)
        rc = ap_findings_routes(c->p, &rb, &nb);
    for (size_t i = 0; rc == 0 && i < nb; i++) {
        if (rb[i].requests == 0)
            continue;
        const char *name = ap_prof_str(c->p, rb[i].route);
        for (size_t j = 0; j < na; j++)
            if (ra[j].requests > 0 && strcmp(ap_prof_str(base, ra[j].route), name) == 0) {
                rc = regression(c, base, &ra[j], &rb[i]);
                break;
            }
    }
    free(ra);
    free(rb);
    return rc;
}

int ap_findings_build(ap_prof *p, const ap_prof *lines, ap_prof *baseline, ap_finding **out,
                      size_t *n) {
    *out = NULL;
    *n = 0;
    ctx c;
    route_acc *routes = NULL;
    size_t nroutes = 0;
    if (ctx_init(&c, p) != 0)
        return -1;
    c.lines = lines;
    if (collect_routes(&c, &routes, &nroutes) != 0)
        goto err;
    uint64_t all = 0;
    for (size_t i = 0; i < nroutes; i++)
        all += routes[i].work;
    for (size_t i = 0; i < nroutes && all > 0; i++) {
        double share = (double)routes[i].work / (double)all;
        if (routes[i].work == 0 || (i >= AP_FINDING_SLOW_ROUTES && share < AP_FINDING_SLOW_SHARE))
            continue;
        routes[i].severity = share >= 0.25                    ? AP_SEV_HIGH
                             : share >= AP_FINDING_SLOW_SHARE ? AP_SEV_MEDIUM
                                                              : AP_SEV_INFO;
        ap_finding *f = fnew(&c.out, AP_FK_SLOW_ROUTE, routes[i].severity);
        if (f == NULL)
            goto err;
        f->route = routes[i].route;
        f->value = routes[i].work;
        f->share = share;
        f->count = routes[i].requests;
        char d1[32], d2[32], per[96] = "";
        if (routes[i].requests > 0)
            snprintf(per, sizeof per, " over %llu requests (%s each)",
                     (unsigned long long)routes[i].requests,
                     dur(d2, sizeof d2, (double)routes[i].work / (double)routes[i].requests));
        say(f, "%s: %s of work%s, %.0f%% of all request work", ap_prof_str(p, routes[i].route),
            dur(d1, sizeof d1, (double)routes[i].work), per, 100.0 * share);
        if (hot_function(&c, &routes[i]) != 0)
            goto err;
    }
    if (slow_latency(&c, routes, nroutes) != 0)
        goto err;
    if (nroutes == 0) { /* no request labels: the whole profile as one */
        route_acc whole = {0, 0, 0, AP_SEV_HIGH};
        for (size_t t = 0; t < c.cls.ntrees; t++) {
            const ap_tree *tree = ap_prof_tree_at(p, t);
            for (size_t i = 1; i < ap_tree_nnodes(tree); i++)
                if (!c.cls.node_idle[t][i])
                    whole.work += ap_tree_node(tree, (ap_node_id)i)->m[AP_M_SELF_NS];
        }
        if (hot_function(&c, &whole) != 0 || await_bound(&c, &whole) != 0)
            goto err;
    }
    if (blocking_calls(&c, routes, nroutes) != 0 || n_plus_one(&c) != 0 || loop_stalls(&c) != 0 ||
        lock_contention(&c) != 0 || gil_contention(&c) != 0 || (baseline != NULL && regressions(&c, baseline) != 0))
        goto err;
    for (size_t i = 0; i < nroutes; i++)
        if (await_bound(&c, &routes[i]) != 0 || pool_queueing(&c, &routes[i]) != 0 ||
            (!has_statements(p) &&
             repeated(&c, &routes[i], ap_wait_statement, AP_FK_REPEATED_QUERY) != 0) ||
            repeated(&c, &routes[i], is_hop_call, AP_FK_POOL_HOPS) != 0 ||
            leak_suspect(&c, &routes[i]) != 0)
            goto err;
    if (c.cls.idle_ns > 0 && c.cls.wall_ns > 0) {
        ap_finding *f = fnew(&c.out, AP_FK_IDLE, AP_SEV_INFO);
        if (f == NULL)
            goto err;
        f->value = c.cls.idle_ns;
        f->share = (double)c.cls.idle_ns / (double)c.cls.wall_ns;
        char d1[32], d2[32];
        say(f,
            "%s of the %s recorded on all threads (%.0f%%) was idle: thread-pool workers "
            "waiting for work and the event loop waiting for I/O; the views leave it out by "
            "default",
            dur(d1, sizeof d1, (double)c.cls.idle_ns), dur(d2, sizeof d2, (double)c.cls.wall_ns),
            100.0 * f->share);
    }
    if (c.out.n > 0)
        qsort(c.out.items, c.out.n, sizeof *c.out.items, rank);
    *out = c.out.items;
    *n = c.out.n;
    free(routes);
    free(c.func);
    ap_classes_free(&c.cls);
    return 0;
err:
    free(routes);
    free(c.func);
    free(c.out.items);
    ap_classes_free(&c.cls);
    return -1;
}

/* ---- writers ------------------------------------------------------------------------- */

int ap_findings_json(ap_prof *p, const ap_prof *lines, ap_prof *baseline, ap_sbuf *out) {
    ap_finding *fs;
    size_t n;
    if (ap_findings_build(p, lines, baseline, &fs, &n) != 0)
        return -1;
    ap_sbuf_putc(out, '[');
    for (size_t i = 0; i < n; i++) {
        const ap_finding *f = &fs[i];
        const ap_frame *fr = ap_prof_frame(p, f->frame);
        ap_sbuf_printf(out,
                       "%s{\"kind\": \"%s\", \"title\": \"%s\", \"severity\": \"%s\", \"route\": ",
                       i ? ",\n  " : "\n  ", kinds[f->kind].name, kinds[f->kind].title,
                       ap_finding_severity_name(f->severity));
        if (f->route != 0)
            ap_sbuf_json_str(out, ap_prof_str(p, f->route));
        else
            ap_sbuf_puts(out, "null");
        ap_sbuf_puts(out, ", \"function\": ");
        if (f->frame != 0)
            ap_sbuf_json_str(out, ap_prof_frame_qualname(p, f->frame));
        else
            ap_sbuf_puts(out, "null");
        ap_sbuf_puts(out, ", \"file\": ");
        if (f->frame != 0 && fr->kind == AP_FRAME_PYTHON)
            ap_sbuf_json_str(out, ap_prof_str(p, fr->file));
        else
            ap_sbuf_puts(out, "null");
        ap_sbuf_printf(out,
                       ", \"line\": %u, \"value\": %llu, \"unit\": \"%s\", \"share\": %.4f, "
                       "\"count\": %llu, \"path\": [",
                       f->frame != 0 ? (f->line ? f->line : fr->line) : 0,
                       (unsigned long long)f->value, f->unit, f->share,
                       (unsigned long long)f->count);
        for (size_t k = 0; k < f->npath; k++) {
            ap_sbuf_puts(out, k ? ", " : "");
            ap_sbuf_json_str(out, ap_prof_frame_qualname(p, f->path[k]));
        }
        ap_sbuf_puts(out, "], \"message\": ");
        ap_sbuf_json_str(out, f->message);
        ap_sbuf_putc(out, '}');
    }
    ap_sbuf_puts(out, n ? "\n]" : "]");
    free(fs);
    return out->failed ? -1 : 0;
}

/* ---- the route table ---------------------------------------------------------------------- */

static int ctx_init(ctx *c, ap_prof *p) {
    memset(c, 0, sizeof *c);
    c->p = p;
    size_t nf0 = ap_prof_nframes(p);
    for (size_t f = 1; f < nf0; f++)
        if (ap_prof_func_frame(p, (ap_frame_id)f) == AP_NONE)
            return -1;
    size_t nf = ap_prof_nframes(p);
    c->func = malloc(nf * sizeof *c->func);
    if (c->func == NULL)
        return ap_err_set(AP_ENOMEM, "findings: out of memory");
    c->func[0] = 0;
    for (size_t f = 1; f < nf; f++)
        c->func[f] = ap_prof_func_frame(p, (ap_frame_id)f);
    c->k_route = find_str(p, "route");
    c->k_thread_id = find_str(p, "thread_id");
    if (ap_classes_build(p, &c->cls) != 0) {
        free(c->func);
        return -1;
    }
    return 0;
}

int ap_findings_routes(ap_prof *p, ap_route_row **out, size_t *n) {
    *out = NULL;
    *n = 0;
    ctx c;
    route_acc *routes = NULL;
    size_t nr = 0;
    if (ctx_init(&c, p) != 0)
        return -1;
    int rc = collect_routes(&c, &routes, &nr);
    ap_route_row *rows = rc == 0 ? calloc(nr ? nr : 1, sizeof *rows) : NULL;
    if (rc == 0 && rows == NULL)
        rc = ap_err_set(AP_ENOMEM, "findings: out of memory");
    for (size_t i = 0; rc == 0 && i < nr; i++) {
        ap_map waits = {0}, from = {0};
        rc = route_waits(&c, routes[i].route, &waits, &from);
        uint64_t key, sum = 0;
        if (rc == 0)
            map_max(&waits, UINT64_MAX, &key, &sum);
        ap_map_free(&waits);
        ap_map_free(&from);
        memset(&rows[i], 0, sizeof rows[i]);
        rows[i].route = routes[i].route;
        rows[i].requests = routes[i].requests;
        rows[i].work_ns = routes[i].work;
        rows[i].wait_ns = sum;
        rows[i].running_ns = routes[i].work;
        rows[i].latency = ap_prof_latency_get(p, routes[i].route);
        if (rc == 0)
            route_wait_kinds(&c, routes[i].route, rows[i].waits);
        for (size_t t = 0; rc == 0 && t < ap_prof_ntrees(p); t++) {
            const ap_tree *tree = ap_prof_tree_at(p, t);
            if (!in_route(&c, tree, routes[i].route))
                continue;
            for (size_t k = 1; k < ap_tree_nnodes(tree); k++) {
                const ap_node *nd = ap_tree_node(tree, (ap_node_id)k);
                if (c.cls.node_idle[t][k])
                    continue;
                rows[i].cpu_ns += nd->m[AP_M_CPU_NS];
                if (c.cls.node_wait[t][k] < AP_WAIT_COUNT &&
                    ap_prof_frame(p, nd->frame)->kind != AP_FRAME_PYTHON &&
                    rows[i].running_ns >= nd->m[AP_M_SELF_NS])
                    rows[i].running_ns -= nd->m[AP_M_SELF_NS];
            }
        }
    }
    free(routes);
    free(c.func);
    ap_classes_free(&c.cls);
    if (rc != 0) {
        free(rows);
        return -1;
    }
    *out = rows;
    *n = nr;
    return 0;
}

/* One route of the JSON route table; h may be NULL.  0 / -1 with AP_ENOMEM. */
static int route_json(const ap_prof *p, const ap_route_row *r, const ap_hist *h, int first,
                      ap_sbuf *out) {
    ap_sbuf_puts(out, first ? "{\"route\":" : ",{\"route\":");
    ap_sbuf_json_str(out, ap_prof_str(p, r->route));
    ap_sbuf_printf(out, ",\"requests\":%llu,\"work_ns\":%llu,\"cpu_ns\":%llu,\"wait_ns\":%llu",
                   (unsigned long long)r->requests, (unsigned long long)r->work_ns,
                   (unsigned long long)r->cpu_ns, (unsigned long long)r->wait_ns);
    ap_sbuf_printf(out, ",\"running_ns\":%llu,\"waits\":{", (unsigned long long)r->running_ns);
    for (unsigned w = 0, first = 1; w < AP_WAIT_COUNT; w++) {
        if (r->waits[w] == 0)
            continue;
        ap_sbuf_printf(out, "%s\"%s\":%llu", first ? "" : ",", ap_wait_name(w),
                       (unsigned long long)r->waits[w]);
        first = 0;
    }
    ap_sbuf_putc(out, '}');
    if (h != NULL) {
        ap_sbuf_printf(out, ",\"latency\":{\"count\":%llu,\"p50_ns\":%llu,\"p95_ns\":%llu,"
                       "\"p99_ns\":%llu,\"max_ns\":%llu,\"histogram\":\"",
                       (unsigned long long)ap_hist_count(h),
                       (unsigned long long)ap_hist_percentile(h, 50),
                       (unsigned long long)ap_hist_percentile(h, 95),
                       (unsigned long long)ap_hist_percentile(h, 99),
                       (unsigned long long)ap_hist_max(h));
        size_t len = ap_hist_encoded_size(h);
        uint8_t *enc = malloc(len);
        if (enc == NULL)
            return ap_err_set(AP_ENOMEM, "findings: out of memory");
        ap_hist_encode(h, enc, len);
        for (size_t k = 0; k < len; k++)
            ap_sbuf_printf(out, "%02x", enc[k]);
        free(enc);
        ap_sbuf_puts(out, "\"}");
    }
    ap_sbuf_putc(out, '}');
    return 0;
}

int ap_findings_routes_json(ap_prof *p, ap_sbuf *out) {
    ap_route_row *rows;
    size_t n;
    if (ap_findings_routes(p, &rows, &n) != 0)
        return -1;
    ap_map seen = {0};
    int rc = 0;
    ap_sbuf_putc(out, '[');
    for (size_t i = 0; rc == 0 && i < n; i++)
        if ((rc = route_json(p, &rows[i], rows[i].latency, i == 0, out)) == 0 &&
            ap_map_put(&seen, rows[i].route, 1) != 0)
            rc = -1;
    /* Histograms of routes without work in the trees: kept, so the export stays lossless. */
    for (size_t i = 0; rc == 0 && i < ap_prof_nlatency(p); i++) {
        ap_route_row r = {0};
        const ap_hist *h = ap_prof_latency_at(p, i, &r.route);
        if (ap_map_get(&seen, r.route) == NULL)
            rc = route_json(p, &r, h, n++ == 0, out);
    }
    ap_sbuf_putc(out, ']');
    ap_map_free(&seen);
    free(rows);
    return rc != 0 || out->failed ? -1 : 0;
}

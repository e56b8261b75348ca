/* ap_findings.h -- what a profile says, written down: ranked findings (slow routes, their hot function and line, blocking calls on the event loop, routes that mostly wait) and the frame classes they and the views use (user code, library code, idle waiting). */
#ifndef AP_FINDINGS_H
#define AP_FINDINGS_H

#include <stddef.h>
#include <stdint.h>

#include "ap_prof.h"
#include "ap_sbuf.h"
#include "ap_wait.h"

/* ---- frame classes ------------------------------------------------------------
 * Library code: a Python frame whose file is under site-packages or
 * dist-packages, in the standard library (a ".../lib/pythonX.Y/" directory),
 * or frozen ("<frozen ...>"); a C function is library code when it is called
 * from library code or from no Python frame (hashlib.pbkdf2_hmac called by
 * the app is the app's work, called by a library it is the library's).
 * Code generated at run time (a Python frame whose file is "<string>",
 * "<sqlalchemy generated ...>", any "<...>" but frozen) is its caller's
 * work like a C function (the app's at a root), and its frame counts as
 * library code in frame_library (never the app's own function).
 * Everything else is user code.
 *
 * Idle: a node that waits for work to arrive, not for work it asked for: the
 * wait rules (ap_wait.h, one table for every wait kind) give it the kind
 * idle: the event loop's selector call (select.epoll.poll, ...) and a
 * thread-pool worker waiting on its queue (Queue.get under anyio's
 * WorkerThread.run, SimpleQueue.get under concurrent.futures' _worker).
 * The node's whole subtree is idle. */

typedef struct ap_classes {
    size_t nframes;
    uint8_t *frame_library; /* per frame: 1 for a library or generated Python frame */
    size_t ntrees;
    uint8_t **node_library; /* per tree, per node: 1 for library work (rule above) */
    uint8_t **node_idle;    /* per tree, per node: 1 when idle */
    uint8_t **node_wait;    /* per tree, per node: the kind of its own wait
                               (ap_wait_node_kinds), AP_WAIT_COUNT for none */
    uint64_t idle_ns;       /* AP_M_SELF_NS of idle nodes, all trees */
    uint64_t wall_ns;       /* AP_M_SELF_NS of all nodes, all trees */
} ap_classes;

/* Classify the frames and nodes of p.  Release with ap_classes_free().
 * Returns 0; on error -1 with AP_ENOMEM (or AP_EINVAL: a malformed wait rule)
 * and c empty. */
int ap_classes_build(const ap_prof *p, ap_classes *c);

/* Release c's arrays; c is left empty.  Can't fail. */
void ap_classes_free(ap_classes *c);

/* ---- findings -------------------------------------------------------------------
 * The finding kinds are a table (ap_findings.c) that producers to come
 * extend (an N+1 query, lock contention, a leak suspect, a regression). */

typedef enum ap_finding_kind {
    AP_FK_SLOW_ROUTE = 0, /* a route with a large share of all request work */
    AP_FK_SLOW_LATENCY,   /* the route with the slowest p95 request latency */
    AP_FK_HOT_FUNCTION,   /* the user function responsible for most of a route's work */
    AP_FK_HOT_LINE,       /* the line of that function with the most time (line profiles) */
    AP_FK_BLOCKING_CALL,  /* a call that holds the event loop for long in an async route */
    AP_FK_AWAIT_BOUND,    /* a route whose time is mostly waiting, and on what */
    AP_FK_LIBRARY_WORK,   /* a slow route whose work is mostly in library code, and where */
    AP_FK_REPEATED_QUERY, /* N+1: a request runs a database call many times, from one place */
    AP_FK_POOL_HOPS,      /* a request hands work to the thread pool many times */
    AP_FK_LOOP_STALL,     /* recorded event-loop stalls, grouped by the line that made them */
    AP_FK_LOCK_CONTENTION, /* requests wait to acquire a lock, at a line */
    AP_FK_IDLE,           /* how much recorded time was idle waiting (hidden by default) */
    AP_FK_LEAK_SUSPECT,   /* a route whose requests leave allocations alive, and where */
    AP_FK_N_PLUS_ONE,     /* one statement shape run >= AP_QUERY_N_PLUS_ONE times in one
                             request from one line (captured queries; replaces
                             repeated_query when the profile has them) */
    AP_FK_LOOP_STARVED,   /* stalls the loop's thread spent off the CPU in Python code:
                             waiting for the GIL (or a core), not slow code */
    AP_FK_REPEATED_CALL,  /* one outgoing HTTP call (method, host, path) made
                             >= AP_QUERY_N_PLUS_ONE times in one request from one line */
    AP_FK_REGRESSION,     /* a route slower than in a baseline profile, and what grew most */
    AP_FK_POOL_QUEUEING,  /* a route's calls waited for a free thread of the pool */
    AP_FK_GIL_CONTENTION, /* a function waited for the GIL while other threads ran */
    AP_FK_COUNT
} ap_finding_kind;

/* Severities, highest first in the ranking. */
#define AP_SEV_INFO 1u
#define AP_SEV_MEDIUM 2u
#define AP_SEV_HIGH 3u

typedef struct ap_finding_kind_info {
    const char *name;  /* JSON "kind" ("slow_route") */
    const char *title; /* heading in text and HTML ("slow route") */
    const char *doc;   /* one sentence: when it is reported */
} ap_finding_kind_info;

/* The entry of kind k, or NULL for k >= AP_FK_COUNT.  Can't fail. */
const ap_finding_kind_info *ap_finding_kind_get(unsigned k);

/* Severity name: "high", "medium", "info".  Can't fail. */
const char *ap_finding_severity_name(unsigned severity);

#define AP_FINDING_MSG 480
#define AP_FINDING_PATH 12

/* One finding: a sentence with its numbers and what it points at. */
typedef struct ap_finding {
    unsigned kind;     /* ap_finding_kind */
    unsigned severity; /* AP_SEV_* */
    ap_str_id route;   /* the route ("GET /items/{id}"), 0 when none */
    ap_frame_id frame; /* the function (function-level frame) or line, 0 when none */
    uint32_t line;     /* the line meant (a hot line), else 0 */
    uint64_t value;    /* the finding's figure, in unit */
    const char *unit;  /* "nanoseconds" or "calls" (static) */
    double share;      /* value's share of what `message` says it is a share of */
    uint64_t count;    /* requests or calls behind value, 0 when unknown */
    uint64_t rank;     /* what it ranks by after severity: value, but a hot line
                          ranks with (just after) its hot function */
    ap_frame_id path[AP_FINDING_PATH]; /* hot path: user frames from the route's top */
    size_t npath;
    char message[AP_FINDING_MSG];
} ap_finding;

/* Thresholds (documented in docs/report.md). */
#define AP_FINDING_SLOW_SHARE 0.10    /* a route with >= 10% of request work... */
#define AP_FINDING_SLOW_ROUTES 3      /* ...or among the 3 with the most */
#define AP_FINDING_BLOCK_NS 20000000u /* a call on the loop of >= 20 ms on average... */
#define AP_FINDING_BLOCK_CALLS                                                                     \
    2                                        /* ...over at least 2 calls blocks it (one slow call  \
                                                is a cold start or a hiccup, not a pattern) */
#define AP_FINDING_WAIT_SHARE 0.5            /* a route waiting >= half of its time... */
#define AP_FINDING_WAIT_MIN_NS 10000000u     /* ...for >= 10 ms in total, */
#define AP_FINDING_WAIT_PER_REQ_NS 20000000u /* or waiting >= 20 ms per request */
#define AP_FINDING_LOCK_MIN_NS 10000000u   /* lock (and GIL) waits of >= 10 ms in all at one line */
#define AP_FINDING_GIL_SHARE 0.25            /* GIL waits of >= 25% of the threads' time: high */
#define AP_FINDING_REPEAT_PER_REQ 10         /* >= 10 database calls (or pool hops) per request */
#define AP_FINDING_LEAK_BYTES 262144u        /* a route whose requests left >= 256 KiB alive... */
#define AP_FINDING_LEAK_PER_REQ 256u         /* ...and >= 256 bytes per request served */
#define AP_FINDING_LEAK_SAMPLES 3u           /* sampled memory: >= 3 sampling intervals */
#define AP_FINDING_REGRESS_SHARE 0.25        /* a route >= 25% slower than the baseline... */
#define AP_FINDING_REGRESS_MIN_NS 1000000u   /* ...and >= 1 ms slower per request */

/* The findings of p (finished, may intern function-level frames), ranked:
 * severity, then value, highest first; the idle note last.  lines (may be
 * NULL) is a line profile of the same program (apiprof investigate's second
 * pass): a hot function without line data in p gets its hot line from there
 * (matched by file and qualname, a nested function by its outermost named
 * one).  baseline (may be NULL; finished, may intern) is a profile of the
 * program before a change: each route of both whose median latency (else
 * work per request) grew by AP_FINDING_REGRESS_SHARE and
 * AP_FINDING_REGRESS_MIN_NS is a regression, with the function whose own
 * time per request grew most in that route (ap_diff).  *out is malloc'd
 * (free() it; NULL when *n is 0).  Returns 0; on error -1 with AP_ENOMEM (or
 * AP_EFULL from interning) and *out NULL, *n 0. */
int ap_findings_build(ap_prof *p, const ap_prof *lines, ap_prof *baseline, ap_finding **out,
                      size_t *n);

/* The requests a route's trees count (their roots' AP_M_CALLS: the tracer
 * counts a request in the tree where its route label was set), summed over
 * the trees labelled route=route.  Can't fail. */
uint64_t ap_findings_route_requests(const ap_prof *p, ap_str_id route);

/* The route table: per route (by work, largest first) its requests
 * (ap_findings_route_requests), work (self time of its non-idle nodes:
 * running on threads), cpu_ns (AP_M_CPU_NS of those nodes, 0 without a CPU
 * split) and wait_ns (the time it awaited outside calls, as the waiting
 * finding counts it: not its thread-pool hops), running_ns and the time of
 * each wait kind (the route's split, ap_wait.h).  *out is malloc'd.
 * Returns 0; -1 with AP_ENOMEM. */
typedef struct ap_route_row {
    ap_str_id route;
    uint64_t requests, work_ns, cpu_ns, wait_ns;
    const ap_hist *latency; /* the route's request latency (ap_prof_latency), NULL if none */
    uint64_t running_ns;             /* work_ns less the blocking calls that waited (a
                                        C call the wait rules name: sqlite3, a socket) */
    uint64_t waits[AP_WAIT_COUNT];   /* per wait kind (ap_wait.h), blocking and awaited:
                                        the kind's metric summed over the top nodes */
} ap_route_row;
int ap_findings_routes(ap_prof *p, ap_route_row **out, size_t *n);

/* The route table as a JSON array (the "routes" of the JSON export and the
 * HTML page): route, requests, work_ns, cpu_ns, wait_ns and, for a route
 * with a latency histogram, "latency": {count, p50_ns, p95_ns, p99_ns,
 * max_ns, histogram (the hex of its ap_hist encoding)}.  Appended to out.
 * Returns 0; -1 with AP_ENOMEM. */
int ap_findings_routes_json(ap_prof *p, ap_sbuf *out);

/* The findings as a JSON array (the "findings" of the JSON export and the
 * HTML page): kind, severity, route, function, file, line, value, unit,
 * share, count, path (function names), message.  Appended to out.  Returns
 * 0; -1 with the error set (as ap_findings_build). */
int ap_findings_json(ap_prof *p, const ap_prof *lines, ap_prof *baseline, ap_sbuf *out);

#endif /* AP_FINDINGS_H */

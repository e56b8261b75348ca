/* ap_wait.h -- wait kinds: the one list of reasons a thread or a coroutine waits instead of running, and the metric that holds each. */
#ifndef AP_WAIT_H
#define AP_WAIT_H

#include <stddef.h>
#include <stdint.h>

#include "ap_prof.h"

/* A wait is time under a node that was not spent running Python or C code
 * on the CPU, for a known reason: in a blocking call (a C call such as
 * socket.recv or lock.acquire, or a line such as `with lock:`) or suspended
 * in an await.  Each kind has one inclusive node metric (ap_metric.h,
 * AP_M_WAIT_*_NS, summed like total_ns): the value on a node is the time
 * under it spent waiting for that kind, so a function's row and a route's
 * split read the same numbers.  The JSON export groups them per function as
 * "waits": {name: ns}.
 *
 * Who fills them: the rules of ap_wait.c, from what the time was spent in,
 * when a profile is finished.  A producer that measures a wait no frame shows
 * (the tracer's `with lock:` and GIL waits) records it as a node of a
 * synthetic frame ("<lock wait>", "<gil wait>") that a row names, so every
 * writer shows all kinds alike.  Adding a kind:
 * append it here, give it a metric in ap_metric.h and a row in ap_wait.c. */
typedef enum ap_wait_kind {
    AP_WAIT_NETWORK = 0, /* sockets, streams, HTTP clients */
    AP_WAIT_DATABASE,    /* database drivers */
    AP_WAIT_FILE,        /* file reads and writes */
    AP_WAIT_SLEEP,       /* time.sleep, asyncio.sleep */
    AP_WAIT_SUBPROCESS,  /* waiting for a child process */
    AP_WAIT_LOCK,        /* acquiring a lock, condition, semaphore or event */
    AP_WAIT_GIL,         /* runnable, waiting for the GIL */
    AP_WAIT_THREAD_POOL, /* queued for a free thread-pool worker */
    AP_WAIT_IDLE,        /* a pool worker or selector with nothing to do */
    AP_WAIT_COUNT
} ap_wait_kind;

/* The kind's name as users see it ("network", "thread_pool", ...); NULL
 * for k >= AP_WAIT_COUNT.  Can't fail. */
const char *ap_wait_name(unsigned k);

/* The node metric (ap_metric) that holds kind k, or AP_M_COUNT for
 * k >= AP_WAIT_COUNT.  Can't fail. */
unsigned ap_wait_metric(unsigned k);

/* The kind whose metric is m, or AP_WAIT_COUNT when m holds no wait kind.
 * Can't fail. */
unsigned ap_wait_of_metric(unsigned m);

/* The kind called name, or AP_WAIT_COUNT.  Can't fail. */
unsigned ap_wait_by_name(const char *name);

/* ---- the rules: what a wait was, from what its time was spent in ----------------
 * One table (ap_wait.c, listed in docs/waits.md) of rows
 *
 *     kind   frame pattern   [file fragment]   [parent pattern]   call | within
 *     [statement]
 *
 * A pattern is a qualname ("time.sleep", "sqlite3.Cursor.execute") where '*'
 * stands for any run of characters; the file fragment must occur in the
 * frame's file ("/psycopg/", "asyncio/tasks.py"); the parent pattern must
 * match the qualname of the node's parent.
 *
 * Waits: a C call whose own frame matches a row (its self time: sqlite3,
 * socket, file, sleep, select, lock.acquire ...), and an await sink, a
 * coroutine frame's own suspended time (AP_M_AWAIT_NS less its children's:
 * the innermost frame of an await chain).  A Python frame's self time is
 * never a wait.  The kind: walk from the waiting node up to the first
 * frame of the app's code (not a library file, ap_wait_library_file) or the
 * root; the innermost "within" row on that path decides (psycopg's frames
 * make its selector call a database wait, anyio's worker queue makes the
 * lock under it idle) for awaits and for C calls of the generic kinds
 * network, lock and idle (a file read, a sleep, a database or subprocess
 * call means itself wherever it is made); else the "call" row (the C call
 * itself, or for an await the first frame of the chain a row names: anyio's
 * SocketStream.receive above the Event.wait it suspends in).  An await that
 * no row names stays unclassified: it is in await_ns and no kind.
 *
 * User rows come first: the environment variable APIPROF_WAIT_RULES, read
 * when a profiler stops and kept in the profile's metadata ("wait_rules"),
 * so a saved profile is classified alike wherever it is read.  Its syntax:
 * rows separated by ';', each KIND ':' ['within:'] PATTERN ['@' FILE]
 * ['<' PARENT], e.g. "database:within:*@/mydriver/;network:rpc.Client.call". */

/* Rows of the table (built-in ones are static; user ones point into a
 * parsed copy of the metadata string). */
typedef struct ap_wait_rule {
    unsigned kind;      /* ap_wait_kind; AP_WAIT_COUNT: the frame waits for no kind */
    unsigned within;    /* 1: decides the kind of waits below the frame */
    const char *frame;  /* qualname pattern */
    const char *file;   /* fragment of the frame's file, NULL: any */
    const char *parent; /* qualname pattern of the parent, NULL: any */
    unsigned statement; /* 1: a call that runs one database statement (what the
                           N+1 finding counts, ap_findings.c) */
    unsigned hidden;    /* 1: a Python function whose own time is a wait in a C
                           call the tracer cannot see (a Cython function such as
                           psycopg's wait_c under Python 3.11's profiler) */
} ap_wait_rule;

/* The built-in rows and their count.  Can't fail. */
const ap_wait_rule *ap_wait_rules(size_t *n);

/* 1 when a built-in row marked statement names frame f (by qualname and
 * file; its parent is not asked).  Can't fail. */
int ap_wait_statement(const ap_prof *p, ap_frame_id f);

/* 1 when '*'-pattern pat matches s.  Can't fail. */
int ap_wait_match(const char *pat, const char *s);

/* 1 when file is library code: under site-packages or dist-packages, in the
 * standard library (".../lib/python3.X/") or frozen.  Can't fail. */
int ap_wait_library_file(const char *file);

/* 1 when file names code made at run time ("<string>", "<sqlalchemy
 * generated ...>", "<attrs generated ...>"; not "<frozen ...>", which is
 * library): nobody's line, the work of whoever called it.  Can't fail. */
int ap_wait_generated_file(const char *file);

/* Per node of tree t of p, the kind of its own wait (see above), or
 * AP_WAIT_COUNT: kinds[] has ap_tree_nnodes(t) entries.  A node that a row
 * names itself gets the kind even with no time (a Python frame such as
 * anyio's Queue.get under its worker: ap_findings marks its subtree idle).
 * Returns 0; -1 with AP_EINVAL (a malformed "wait_rules" entry) or
 * AP_ENOMEM. */
int ap_wait_node_kinds(const ap_prof *p, const ap_tree *t, uint8_t *kinds);

/* The same rules for a timeline's spans (ap_timeline.c), which nest instead
 * of forming a tree: span i ran frame[i] inside span parent[i] (an index
 * below n, AP_NONE for none; following parents must end).  kinds[i] is the
 * kind the rules give the own time of a node with the same call path: a C
 * call's (or a producer's synthetic frame's, "<lock wait>") whole span, or
 * AP_WAIT_COUNT.  A Python frame's span is one step that ran (its awaits are
 * the gaps between steps), so it is AP_WAIT_COUNT unless a hidden row names
 * it.  Returns 0; -1 as ap_wait_node_kinds. */
int ap_wait_span_kinds(const ap_prof *p, const ap_frame_id *frame, const uint32_t *parent,
                       size_t n, uint8_t *kinds);

/* Fill the wait kinds' metrics of every node of p from the rules: each
 * wait's time on its node and every ancestor below the root (inclusive);
 * the metrics are recomputed from nothing, so calling it again gives the
 * same values.  Producers of waits that frames cannot show write a node of a
 * synthetic frame ("<lock wait>", "<gil wait>"; AP_FRAME_OTHER) whose self
 * time is the wait; the table names it.  Called by ap_prof_finish().  Returns 0; -1
 * as ap_wait_node_kinds. */
int ap_wait_classify(ap_prof *p);

#endif

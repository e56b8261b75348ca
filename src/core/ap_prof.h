/* ap_prof.h -- the profile model: calling-context trees of interned frames with a metric vector, labels, the function table. */
#ifndef AP_PROF_H
#define AP_PROF_H

/* One model for every producer (tracer, line tracer, samplers, memory
 * tracker, file reader) and every view (text/JSON/pstats reports, flame
 * graphs, pprof, callgrind, ...).
 *
 *   ap_prof            a profile: strings, frames, metadata, and a list of trees
 *    +- strings         interned UTF-8 strings, ids 0.. (id 0 is always "")
 *    +- frames          interned (name, qualname, file, first line, line, kind)
 *    +- trees           one calling-context tree per label set: a producer keeps
 *                       one tree per thread (and, later, per task / route /
 *                       request); readers merge them (ap_prof_merge) or walk
 *                       them one by one
 *        +- nodes       (parent, frame, metric vector); node 0 is the root,
 *                       a synthetic node whose frame is AP_FRAME_ROOT; a
 *                       parent always has a smaller id than its children
 *
 * Thread safety: none inside.  A profile has one writer at a time; the
 * extension serialises its writers with the GIL.  Readers must not run
 * concurrently with a writer.
 *
 * Errors follow ap_err.h: 0 / -1 or pointer / NULL with the thread-local
 * error set; "can't fail" is said where it holds. */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ap_arena.h"
#include "ap_hist.h"
#include "ap_map.h"
#include "ap_metric.h"

/* ---- metrics ----------------------------------------------------------------
 * The node metric vector m[AP_M_COUNT] is described by the catalogue in
 * ap_metric.h (names, units, how each sums, which views show it). */

/* ---- strings and frames --------------------------------------------------- */

typedef uint32_t ap_str_id;     /* index into the profile's strings; 0 is "" */
typedef uint32_t ap_frame_id;   /* index into the profile's frames; 0 is the root frame */
typedef uint32_t ap_node_id;    /* index into a tree's nodes; 0 is the root */
#define AP_NONE UINT32_MAX      /* "no node" (the parent of a root) */

typedef enum ap_frame_kind {
    AP_FRAME_ROOT = 0,      /* the synthetic root of every tree (frame id 0) */
    AP_FRAME_PYTHON = 1,    /* a Python function: file and first line are known */
    AP_FRAME_BUILTIN = 2,   /* a C function of a module: qualname "time.sleep", file "~" */
    AP_FRAME_METHOD = 3,    /* a C method of a type: qualname "list.append", file "~" */
    AP_FRAME_OTHER = 4      /* a synthetic frame a producer adds (e.g. "<await>") */
} ap_frame_kind;

/* The kind's name in exports: "root", "python", "builtin", "method",
 * "other" (also for unknown values).  Can't fail. */
const char *ap_frame_kind_name(uint32_t kind);

/* A frame.  Two frames are the same (same id) when every field is equal.
 * lineno is 0 for a whole function; a line-level producer uses frames whose
 * lineno is the line (same name/qualname/file/line otherwise), so the
 * function of any frame is found by ap_prof_func_frame().
 *
 * Line-level nodes (the line profiler's) are children of their function's
 * node and refine it: AP_M_HITS is how many times the line started,
 * AP_M_SELF_NS = AP_M_TOTAL_NS the time from the line's start to the next
 * line event of the same frame (callees included: they are not separate
 * nodes), AP_M_AWAIT_NS the time the frame was suspended at that line.  The
 * function node carries calls, total (running time, suspensions excluded),
 * await, and as self the part of its total charged to no line (from the
 * call to the first line event).  So a function node's total is its self
 * plus its line nodes' totals, as for callee nodes. */
typedef struct ap_frame {
    ap_str_id name;       /* function name ("fib", "sleep") */
    ap_str_id qualname;   /* qualified name ("Shop.get", "time.sleep") */
    ap_str_id file;       /* file path; "~" for C functions */
    uint32_t line;        /* first line of the function, 0 if unknown */
    uint32_t lineno;      /* the line inside the function, 0 for function level */
    uint32_t kind;        /* ap_frame_kind */
} ap_frame;

/* ---- nodes and trees ------------------------------------------------------
 * Nodes live in an arena (stable addresses) and are also indexed by id.
 * Fields marked "internal" are for the producer's fast child lookup. */
typedef struct ap_node {
    ap_node_id id;                 /* index in its tree; 0 is the root */
    ap_node_id parent;             /* parent id; AP_NONE for the root */
    ap_frame_id frame;
    uint32_t nchildren;
    struct ap_node *up;            /* internal: parent pointer */
    struct ap_node *first_child;   /* internal: children, most recent first */
    struct ap_node *next_sibling;  /* internal */
    struct ap_node *mru;           /* internal: child found by the last lookup */
    uint64_t m[AP_M_COUNT];        /* metrics, indexed by ap_metric */
} ap_node;

/* A label of a tree: key and value are string ids.  Well-known keys:
 * "thread" (thread name), "thread_id", "task", "route", "request". */
typedef struct ap_label {
    ap_str_id key, val;
} ap_label;

/* Whether s (n bytes) is asyncio's default name of a task ("Task-" and digits), which
 * is no "task" label: only names given by the app are.  Can't fail. */
int ap_task_name_is_default(const char *s, size_t n);

typedef struct ap_prof ap_prof;   /* opaque */
typedef struct ap_tree ap_tree;   /* opaque: use the accessors below */

/* ---- profile lifetime ------------------------------------------------------ */

/* A new empty profile: strings {""}, frames {root}, no tree, no metadata.
 * Release it with ap_prof_free().  On error, NULL is returned with AP_ENOMEM. */
ap_prof *ap_prof_new(void);

/* Release the profile and everything in it; NULL is ignored.  Can't fail. */
void ap_prof_free(ap_prof *p);

/* ---- writing (producers) ----------------------------------------------------- */

/* Intern the len bytes at s (UTF-8, may be unterminated).  Returns the id
 * (equal strings get equal ids); on error AP_NONE with AP_ENOMEM, or AP_EFULL
 * when the profile holds 2^32 - 1 strings already. */
ap_str_id ap_prof_intern(ap_prof *p, const char *s, size_t len);

/* Intern a frame (all string ids must come from this profile).  Returns its
 * id; on error AP_NONE with AP_ENOMEM, or AP_EFULL when the profile holds
 * 2^32 - 1 frames already. */
ap_frame_id ap_prof_frame_intern(ap_prof *p, const ap_frame *f);

/* Set metadata key to val (both NUL-terminated UTF-8; an existing key is
 * overwritten).  Well-known keys: "clock" ("wall" | "cpu"), "python",
 * "argv", "started", "stopped" (Unix times in ns), "tool".  Returns 0; on
 * error -1 with AP_ENOMEM. */
int ap_prof_meta_set(ap_prof *p, const char *key, const char *val);

/* A new tree with the given labels (copied) and only a root node.  The tree
 * is owned by p and lives until ap_prof_free().  On error, NULL with
 * AP_ENOMEM. */
ap_tree *ap_prof_tree_new(ap_prof *p, const ap_label *labels, size_t nlabels);

/* Add or replace the label key of tree t.  Returns 0; -1 with AP_ENOMEM. */
int ap_tree_label_set(ap_tree *t, ap_str_id key, ap_str_id val);

/* The root node of t.  Can't fail. */
ap_node *ap_tree_root(ap_tree *t);

/* The child of parent (a node of t) for frame, created with zero metrics if
 * absent.  The lookup is O(1) when the same child is asked for twice in a
 * row and a short list walk otherwise; creating a node allocates from the
 * tree's arena.  On error, NULL with AP_ENOMEM, or AP_EFULL when the tree
 * holds 2^32 - 1 nodes already. */
ap_node *ap_tree_child(ap_tree *t, ap_node *parent, ap_frame_id frame);

/* As ap_tree_child(), but the common case inline: the child returned by
 * the previous lookup on parent.  Can't fail when it returns non-NULL. */
static inline ap_node *ap_tree_child_fast(ap_tree *t, ap_node *parent, ap_frame_id frame) {
    ap_node *c = parent->mru;
    if (c != NULL && c->frame == frame)
        return c;
    return ap_tree_child(t, parent, frame);
}

/* Derive the metrics that follow from the others: AP_M_PRIM_CALLS of every
 * node of every tree (calls of nodes with no ancestor of the same function,
 * see ap_prof_func_frame(); 0 for the others) and the wait kinds the rules
 * decide (ap_wait_classify).  Call after the producers stop and before
 * reading or writing; calling it again gives the same values.  Returns 0;
 * -1 with AP_ENOMEM, or AP_EINVAL for a malformed "wait_rules" entry. */
int ap_prof_finish(ap_prof *p);

/* ---- reading ------------------------------------------------------------------ */

/* Strings: the NUL-terminated string of id ("" for an unknown id), and the
 * number of strings.  Can't fail. */
const char *ap_prof_str(const ap_prof *p, ap_str_id id);
size_t ap_prof_nstrs(const ap_prof *p);

/* Frames: the frame of id (NULL for an unknown id) and the number of frames.
 * Can't fail. */
const ap_frame *ap_prof_frame(const ap_prof *p, ap_frame_id id);

/* The frame's qualname, or its name when it has none; "" for an unknown id.
 * Can't fail. */
const char *ap_prof_frame_qualname(const ap_prof *p, ap_frame_id id);
size_t ap_prof_nframes(const ap_prof *p);

/* The function-level frame of frame id: the same frame with lineno 0,
 * interned if needed.  Returns its id; on error AP_NONE with AP_ENOMEM or
 * AP_EFULL (as ap_prof_frame_intern). */
ap_frame_id ap_prof_func_frame(ap_prof *p, ap_frame_id id);

/* Metadata: the value of key or NULL; the number of entries and the i-th
 * (i < ap_prof_nmeta) key and value.  Can't fail. */
const char *ap_prof_meta_get(const ap_prof *p, const char *key);
size_t ap_prof_nmeta(const ap_prof *p);
void ap_prof_meta_at(const ap_prof *p, size_t i, const char **key, const char **val);

/* Trees: how many, and the i-th (i < ap_prof_ntrees), in creation order.
 * Can't fail. */
size_t ap_prof_ntrees(const ap_prof *p);
ap_tree *ap_prof_tree_at(const ap_prof *p, size_t i);

/* Labels of a tree: how many, the i-th, and the value of a key (AP_NONE if
 * the tree has no such label).  Can't fail. */
size_t ap_tree_nlabels(const ap_tree *t);
ap_label ap_tree_label_at(const ap_tree *t, size_t i);
ap_str_id ap_tree_label_get(const ap_tree *t, ap_str_id key);

/* Nodes of a tree: how many (root included), and node id (NULL when out of
 * range).  Ids are dense and a parent's id is smaller than its children's,
 * so `for (id = 0; id < n; id++)` visits parents before children.  Can't
 * fail. */
size_t ap_tree_nnodes(const ap_tree *t);
const ap_node *ap_tree_node(const ap_tree *t, ap_node_id id);

/* Children of a node: first child and next sibling (NULL at the end), in no
 * particular order.  Can't fail. */
const ap_node *ap_node_first_child(const ap_node *n);
const ap_node *ap_node_next_sibling(const ap_node *n);

/* A new profile with the same strings, frames and metadata and one tree:
 * the sum of the trees of p for which keep(tree, arg) returns non-zero (all
 * trees when keep is NULL), nodes matched by their frame paths.  The merged
 * tree keeps the labels that all kept trees share.  On error, NULL with
 * AP_ENOMEM or AP_EFULL (as ap_tree_child). */
ap_prof *ap_prof_merge(const ap_prof *p, int (*keep)(const ap_tree *t, void *arg), void *arg);

/* A new profile with the same strings, frames and metadata and a copy of
 * each tree of p for which keep(tree, arg) returns non-zero (all trees when
 * keep is NULL), labels included, in the same order: a selection, e.g. the
 * trees labelled phase=warm.  Node ids and metrics are those of p.  On
 * error, NULL with AP_ENOMEM. */
ap_prof *ap_prof_select(const ap_prof *p, int (*keep)(const ap_tree *t, void *arg), void *arg);

/* Add every tree of src to dst as a tree of its own, with src's labels and
 * key=val (when key is not NULL), its strings and frames interned in dst;
 * src's route latency histograms and queries are summed into dst's.  Its
 * stalls, timeline and metadata are not taken.  One profile of several
 * processes is built so (apiprof run's workers, label "pid").  0, or -1 with
 * AP_ENOMEM or AP_EFULL (dst then holds part of src). */
int ap_prof_absorb(ap_prof *dst, const ap_prof *src, const char *key, const char *val);

/* Set key=val on every tree of p (replacing a value of key).  0, or -1 with
 * AP_ENOMEM. */
int ap_prof_label_all(ap_prof *p, const char *key, const char *val);

/* ---- selecting trees by label ----------------------------------------------
 * The one label selector: every label filter (report --route, --thread,
 * --task, --phase; Profile.select) is a set of key=value pairs that a tree
 * must all carry.  A zeroed ap_selector selects every tree. */
#define AP_SELECT_MAX 8

typedef struct ap_selector {
    size_t n;
    ap_str_id key[AP_SELECT_MAX], val[AP_SELECT_MAX];
} ap_selector;

/* Require label key=val (interned into p).  Returns 0; on error -1 with
 * AP_EINVAL (more than AP_SELECT_MAX pairs), AP_ENOMEM or AP_EFULL. */
int ap_selector_add(ap_prof *p, ap_selector *s, const char *key, const char *val);

/* The keep() function of ap_prof_merge(), ap_prof_select() and
 * ap_functab_build() for a selector (arg: the ap_selector of that profile):
 * 1 when tree t carries every pair.  Can't fail. */
int ap_selector_keep(const ap_tree *t, void *arg);

/* ---- function table (pstats semantics) -------------------------------------
 * One row per function (function-level frame), summed over the trees for
 * which keep() holds (all when NULL):
 *   calls            sum of AP_M_CALLS over the function's nodes
 *   prim_calls       calls of nodes with no ancestor of the same function
 *   self_ns          sum of AP_M_SELF_NS (pstats tottime)
 *   total_ns         sum of AP_M_TOTAL_NS over nodes with no ancestor of the
 *                    same function: recursion counted once (pstats cumtime)
 *   await_ns         AP_M_AWAIT_NS, counted once like total_ns
 *   m[]              every metric summed as its catalogue entry says
 *                    (ap_metric_info.sum): over all nodes, or once per
 *                    recursion like total_ns
 *   incl[]           every metric's inclusive value (its sum over the node's
 *                    subtree), counted once per recursion like total_ns: the
 *                    "total" of any metric read as a per-node cost
 * A line-level node under a node of its own function (line profiles) is not
 * a call: it adds its self time and its memory metrics (alloc_bytes,
 * alloc_count, live_bytes, peak_bytes) to the function's self_ns and m[] and
 * nothing else, no edge, no recursion level.
 * Edges (caller -> callee, from a node's parent to the node) carry calls,
 * prim_calls (no ancestor pair with the same caller and callee above),
 * self_ns (callee's self time under this caller), total_ns (callee's
 * total, counted at the outermost occurrence of the pair), as cProfile's
 * per-caller figures, and incl[] (every metric's inclusive value, counted
 * as total_ns is).  Calls from the root have no edge. */
typedef struct ap_func_row {
    ap_frame_id frame;       /* function-level frame */
    uint64_t calls, prim_calls, self_ns, total_ns, await_ns;
    uint64_t m[AP_M_COUNT];
    uint64_t incl[AP_M_COUNT];
    uint32_t callers_first, ncallers;   /* range in ap_functab.edges_in */
    uint32_t callees_first, ncallees;   /* range in ap_functab.edges_out */
} ap_func_row;

typedef struct ap_func_edge {
    uint32_t caller, callee;   /* row indices */
    uint64_t calls, prim_calls, self_ns, total_ns;
    uint64_t incl[AP_M_COUNT];
} ap_func_edge;

typedef struct ap_functab {
    ap_func_row *rows;
    size_t nrows;
    ap_func_edge *edges_in;    /* edges sorted by callee: a row's callers */
    ap_func_edge *edges_out;   /* the same edges sorted by caller: its callees */
    size_t nedges;
} ap_functab;

/* Build the function table of p (which may intern function-level frames).
 * Rows are sorted by total_ns descending, then frame id.  Release with
 * ap_functab_free().  Returns 0; on error -1 with AP_ENOMEM or AP_EFULL
 * (interning a function-level frame) and *ft empty. */
int ap_functab_build(ap_prof *p, int (*keep)(const ap_tree *t, void *arg), void *arg,
                     ap_functab *ft);

/* Release the table's arrays; ft is left empty.  Can't fail. */
void ap_functab_free(ap_functab *ft);

/* ---- line table ----------------------------------------------------------------
 * One row per line-level frame found in the trees, all trees summed: hits
 * (AP_M_HITS), time_ns (AP_M_SELF_NS), await_ns (AP_M_AWAIT_NS), and the
 * memory metrics of the allocation hook (alloc_bytes, alloc_count,
 * live_bytes, peak_bytes, freed_bytes: AP_M_ALLOC_BYTES ...).  Rows are sorted by file,
 * function first line, qualname, then line. */
typedef struct ap_line_row {
    ap_frame_id frame;     /* line-level frame (lineno != 0) */
    ap_frame_id func;      /* its function-level frame */
    uint64_t hits, time_ns, await_ns;
    uint64_t alloc_bytes, alloc_count, live_bytes, peak_bytes, freed_bytes;
} ap_line_row;

/* Build the line table of p (which may intern function-level frames) into
 * *rows (malloc'd; free() it) and *n.  Returns 0; on error -1 with
 * AP_ENOMEM and *rows NULL, *n 0. */
int ap_lines_build(ap_prof *p, ap_line_row **rows, size_t *n);

/* ---- event timeline (optional) ----------------------------------------------
 * A bounded ring of completed spans for timeline views (Chrome trace /
 * Perfetto).  The tree aggregates; the ring keeps the order of the last
 * `capacity` spans, overwriting the oldest when full (counted as dropped).
 * A profile has no ring until ap_prof_events_enable(); views that need a
 * timeline must refuse to run without one rather than invent it. */
typedef struct ap_event {
    uint64_t start_ns;   /* when the span began, on the profile's clock */
    uint64_t dur_ns;     /* how long it lasted */
    ap_frame_id frame;   /* what ran */
    uint32_t tree;       /* index of the tree (thread / task) it ran on */
} ap_event;

/* Give p a ring of capacity (> 0) events, replacing any previous ring and
 * its events.  Returns 0; on error -1 with AP_EINVAL or AP_ENOMEM. */
int ap_prof_events_enable(ap_prof *p, size_t capacity);

/* Append e to the ring, overwriting the oldest event when it is full.
 * O(1), no allocation.  Does nothing when p has no ring.  Can't fail. */
void ap_prof_event_add(ap_prof *p, const ap_event *e);

/* The ring: its capacity (0 when there is none), how many events it holds,
 * the i-th oldest (i < ap_prof_nevents), and how many were overwritten.
 * Can't fail. */
size_t ap_prof_events_capacity(const ap_prof *p);
size_t ap_prof_nevents(const ap_prof *p);
const ap_event *ap_prof_event_at(const ap_prof *p, size_t i);
uint64_t ap_prof_events_dropped(const ap_prof *p);

/* ---- route latency ---------------------------------------------------------------
 * Per route label value (a string id such as "GET /items/{item_id}"), a
 * histogram of its requests' latency in wall nanoseconds, from the request's
 * start (its route label set) to the end of the app's response: what the
 * tracer's route labels measure (apiprof._labels).  Kept in order of first
 * use; stored in the native file as the RLAT chunk.  At most
 * AP_PROF_LATENCY_MAX routes (about 40 KB each). */
#define AP_PROF_LATENCY_MAX 4096

/* The histogram of route in p, made empty on first use.  On error NULL with
 * AP_ENOMEM or AP_EFULL (AP_PROF_LATENCY_MAX routes already). */
ap_hist *ap_prof_latency(ap_prof *p, ap_str_id route);

/* The histogram of route, NULL when p has none.  Can't fail. */
const ap_hist *ap_prof_latency_get(const ap_prof *p, ap_str_id route);

/* The number of routes with a histogram and the i-th (i < that number):
 * its histogram, its route in *route.  Can't fail. */
size_t ap_prof_nlatency(const ap_prof *p);
const ap_hist *ap_prof_latency_at(const ap_prof *p, size_t i, ap_str_id *route);

/* Add every histogram of src to dst's of the same route (dst's strings must
 * hold src's with the same ids, as after ap_prof_merge).  Returns 0; on
 * error -1 as ap_prof_latency(). */
int ap_prof_latency_merge(ap_prof *dst, const ap_prof *src);
/* ---- database queries and outgoing calls ------------------------------------------
 * One record per (kind, normalised statement, route, calling site): the
 * statements and outgoing HTTP calls a query producer saw (docs/waits.md,
 * "Queries").  Records stay in the order they were first seen; there are
 * few shapes, so lookups are a scan. */
enum {
    AP_QUERY_STATEMENT = 0, /* a database statement */
    AP_QUERY_HTTP,          /* an outgoing HTTP call: "METHOD host/path-template status" */
    AP_QUERY_KINDS
};

/* The kind's name ("statement", "http"), NULL for k >= AP_QUERY_KINDS.
 * Can't fail. */
const char *ap_query_kind_name(unsigned k);

typedef struct ap_query {
    ap_str_id statement;      /* normalised text (ap_query_normalise) */
    ap_str_id route;          /* route label value, 0 outside a request */
    ap_frame_id site;         /* function-level frame of the app's code that ran it, 0 */
    uint32_t line;            /* the line in it, 0 when unknown */
    uint64_t count;           /* times it ran */
    uint64_t total_ns;        /* wall time of those runs */
    uint64_t rows;            /* rows the driver reported (0 when it does not) */
    uint64_t requests;        /* requests it ran in (0 outside requests) */
    uint64_t max_per_request; /* most runs in one request */
    uint64_t last_request;    /* producer's bookkeeping: the request of the last run */
    uint64_t in_request;      /* ...and how many runs it had so far */
    uint32_t kind;            /* AP_QUERY_STATEMENT or AP_QUERY_HTTP */
} ap_query;

/* A shape run this many times in one request from one site is an N+1. */
#define AP_QUERY_N_PLUS_ONE 5

/* Record one run of statement (already interned; see ap_query_normalise)
 * of kind (AP_QUERY_*) from site/line in route, taking ns, reporting rows,
 * in request (a serial, 0 for none).  Returns 0; -1 with AP_ENOMEM. */
int ap_prof_query_add(ap_prof *p, unsigned kind, ap_str_id statement, ap_str_id route,
                      ap_frame_id site, uint32_t line, uint64_t ns, uint64_t rows,
                      uint64_t request);

/* Add a whole record (readers, merges): summed into an equal key.  Returns
 * 0; -1 with AP_ENOMEM. */
int ap_prof_query_put(ap_prof *p, const ap_query *q);

/* The records as the members of a JSON array (the JSON export's and the HTML
 * page's "queries", docs/format.md), appended to out.  Can't fail (out
 * records a failed allocation). */
struct ap_sbuf;
void ap_prof_queries_json(const ap_prof *p, struct ap_sbuf *out);

/* The records: how many and the i-th.  Can't fail. */
size_t ap_prof_nqueries(const ap_prof *p);
const ap_query *ap_prof_query_at(const ap_prof *p, size_t i);

/* Write the normalised form of the n bytes of sql into out (cap bytes,
 * NUL-terminated, cut at cap - 1): string and number literals become '?',
 * runs of white space one space, a list of placeholders "(?, ?, ?)" one
 * "(?)", leading and trailing space dropped.  Returns the length written.
 * Can't fail. */
size_t ap_query_normalise(const char *sql, size_t n, char *out, size_t cap);

/* ---- files ---------------------------------------------------------------------
 * The native file (docs/format.md): a header and self-delimiting chunks,
 * each with a CRC, ending with an END chunk.  A reader keeps everything up
 * to the last complete chunk of a file cut short. */
#define AP_PROF_MAGIC "APIPROF\0"
#define AP_PROF_VERSION 1

/* Write p to path (created or truncated), chunk by chunk, each flushed to
 * the file before the next one is built.  Returns 0; on error -1 with AP_EIO
 * (message with the path and strerror) or AP_ENOMEM; what was written up to
 * the failing chunk stays readable. */
int ap_prof_write(const ap_prof *p, const char *path);

/* Largest native file read (docs/format.md): 4 GiB. */
#define AP_PROF_FILE_MAX ((uint64_t)4 << 30)

/* Read a native file: a regular file (a FIFO or device is refused, not read) of at
 * most AP_PROF_FILE_MAX bytes.  *truncated (if not NULL) is set to 1 when the file
 * ended before its END chunk or a chunk was damaged (everything before it
 * is returned), else 0.  On error, NULL with AP_EIO (cannot open or read, not a
 * regular file, over the limit),
 * AP_ECORRUPT (not an apiprof file, unsupported version, or not even the
 * first chunk is complete) or AP_ENOMEM.  Any input is safe. */
ap_prof *ap_prof_read(const char *path, int *truncated);

/* The same from memory: len bytes at buf.  Both also read the JSON export
 * (ap_json_read) when that is what they are given. */
ap_prof *ap_prof_read_mem(const uint8_t *buf, size_t len, int *truncated);

/* 1 when buf looks like a JSON document (its first non-blank byte is '{'),
 * else 0.  Can't fail. */
int ap_json_is_export(const uint8_t *buf, size_t len);

/* The profile of a JSON export (docs/format.md, "JSON export"): its meta,
 * frames, trees and queries, the same model the native file holds (the derived
 * "functions" and "lines" are skipped; the export has no event timeline).
 * Members may come in any order; unknown members and metrics are skipped.
 * On error NULL with AP_ECORRUPT (not JSON, not apiprof's export, an
 * unsupported version, a node referring to a missing parent or frame) or
 * AP_ENOMEM.  Any input is safe (ap_json_read.c). */
ap_prof *ap_json_read(const uint8_t *buf, size_t len);

/* The JSON document of docs/format.md ("functions" with callers and
 * callees, "lines", "threads" with their trees, "frames", "meta") and the
 * pstats file (marshal of the dict pstats.Stats loads; times in seconds),
 * written to out: the "json" and "pstats" formats of ap_report_write()
 * (ap_report.h), whose writers live in ap_prof_file.c.  Return 0; on error
 * -1 with AP_EIO or AP_ENOMEM. */
int ap_prof_write_json(ap_prof *p, FILE *out);
int ap_prof_write_pstats(ap_prof *p, FILE *out);

#endif /* AP_PROF_H */

/* labels.h -- route and task labels of the function tracer: which tree an event is recorded into, chosen by the current contextvars context and asyncio task. */
#ifndef APEXT_LABELS_H
#define APEXT_LABELS_H

/* A tracer with labels records the work of a thread into several trees: its
 * own (labels thread_id, thread, phase) and, for work done while the
 * current context carries a route label or runs inside a named asyncio
 * task, a tree with the same labels plus route=<route> and/or task=<name>.
 *
 *   route   the value of a ContextVar (a str) set by the ASGI layer before it
 *           calls the app (apiprof._labels): a request's task, the tasks it
 *           starts and its thread-pool calls (which copy the context) carry it.
 *   task    the name of the asyncio task running now, when it was named
 *           (asyncio's default names "Task-<n>" are not labels: one per task
 *           would make one tree per task).
 * Each key admits at most APEXT_LABELS_MAX_VALUES distinct values per
 * tracer; later ones are recorded under the value "<other>", so the number
 * of trees stays bounded (threads x routes x task names).
 *
 * The values are read on a cache miss only: per thread, the last verdict is
 * kept with the thread state's context object, its context_ver (bumped at
 * every Context.run enter and exit, i.e. about once per task step) and a
 * global epoch that apext_labels_touch() bumps (ContextVar.set changes
 * neither of the others).  A hit costs four compares.
 *
 * The var may also hold a "paused" mark: events in such a context are not
 * recorded at all (the ASGI layer matches the request's route with the
 * app's own router code, which is not the app's work).
 *
 * Errors: the hooks never raise; a failure (no memory) is returned as NULL
 * and the caller notes it.  Everything runs under the GIL. */

#include "session.h"

#define APEXT_LABELS_MAX_VALUES 256

/* A map from tree to its index in the profile (ap_event.tree, label tree
 * keys).  Trees are only appended, so it is filled lazily.  A zero-filled
 * struct is empty and valid. */
typedef struct apext_treeix {
    ap_map map;       /* ap_tree* -> index */
    size_t indexed;   /* trees [0, indexed) are in map */
} apext_treeix;

/* The index of tree in p, or AP_NONE (not p's, or out of memory).  Can't
 * fail otherwise. */
uint32_t apext_treeix_get(apext_treeix *ix, const ap_prof *p, const ap_tree *tree);
void apext_treeix_free(apext_treeix *ix);

typedef struct apext_labels {
    int on;
    int tasks;            /* label named asyncio tasks */
    PyObject *var;        /* ContextVar holding the route label; strong */
    PyObject *paused;     /* the value of var that stops recording; strong */
    PyObject *get_loop;   /* asyncio._get_running_loop; strong, NULL without tasks */
    PyObject *cur_task;   /* asyncio.current_task; strong, NULL without tasks */
    ap_prof *prof;        /* the tracer's; borrowed */
    ap_str_id k_route, k_task, other;
    ap_map routes, task_names;   /* admitted values: str id -> 1 */
    ap_map sets;          /* route << 32 | task -> dense set number */
    ap_map trees;         /* own tree index << 32 | set number -> ap_tree* */
    size_t nlabelled;     /* label trees made: none, and every node is in its thread's tree */
    apext_treeix ix;
} apext_labels;

/* What a thread's current context labels, and the tree chosen for it. */
typedef struct apext_label_cache {
    const PyThreadState *ts;
    const PyObject *ctx;        /* ts->context */
    uint64_t ver;               /* ts->context_ver */
    uint64_t epoch;             /* apext_labels_epoch */
    const apext_labels *owner;
    int paused;
    ap_str_id route, task;      /* AP_NONE: none */
    const ap_tree *own;         /* the thread tree tree was chosen for */
    ap_tree *tree;
} apext_label_cache;

extern APEXT_TLS apext_label_cache apext_labels_tls;
extern uint64_t apext_labels_epoch;

/* Set up l for a tracer over p.  arg is None (no labels) or a (var, paused)
 * tuple; tasks asks for task labels.  0, or -1 with an exception. */
int apext_labels_init(apext_labels *l, ap_prof *p, PyObject *arg, int tasks);
/* A new run starts: forget every thread's cached verdict.  Can't fail. */
void apext_labels_start(apext_labels *l);
/* The phase changes: label trees made from now on copy the thread trees'
 * new labels (a thread tree relabelled in place keeps its pointer, so the
 * label trees made from it are forgotten, not reused).  Can't fail. */
void apext_labels_phase(apext_labels *l);
/* Give every label tree the labels its thread's tree gained after the label
 * tree was made (a thread is named after its first frames run).  0, or -1
 * with an ap_err (out of memory). */
int apext_labels_sync(apext_labels *l);
int apext_labels_traverse(apext_labels *l, visitproc visit, void *arg);
void apext_labels_clear(apext_labels *l);   /* references only */
void apext_labels_free(apext_labels *l);    /* maps */

/* Slow paths of the inline functions below. */
void apext_labels_refresh(apext_labels *l, PyThreadState *ts, apext_label_cache *c);
ap_tree *apext_labels_choose(apext_labels *l, ap_tree *own, apext_label_cache *c);

/* Whether the current event is recorded (0 in a paused context); brings
 * the thread's cache up to date for apext_labels_parent(). */
static inline int apext_labels_recorded(apext_labels *l) {
    PyThreadState *ts = apext_compat_tstate();
    apext_label_cache *c = &apext_labels_tls;
    if (c->ctx != ts->context || c->ver != ts->context_ver || c->epoch != apext_labels_epoch ||
        c->ts != ts || c->owner != l)
        apext_labels_refresh(l, ts, c);
    return !c->paused;
}

/* Where a frame entered now goes: *tree (in: the thread's own tree own; out:
 * the tree of the current labels) and the returned parent: top (the stack
 * top's node) when it is in that tree, else the tree's root, so that work
 * under another label than the caller's starts a new root path.  NULL when
 * a tree can't be made (no memory).  Call after apext_labels_recorded() in
 * the same event. */
static inline ap_node *apext_labels_parent(apext_labels *l, ap_tree **tree, ap_node *top) {
    apext_label_cache *c = &apext_labels_tls;
    if (c->route == AP_NONE && c->task == AP_NONE)
        return l->nlabelled == 0 || ap_tree_node(*tree, top->id) == top ? top : ap_tree_root(*tree);
    ap_tree *t = c->own == *tree && c->tree != NULL ? c->tree : apext_labels_choose(l, *tree, c);
    if (t == NULL)
        return NULL;
    *tree = t;
    return ap_tree_node(t, top->id) == top ? top : ap_tree_root(t);
}

/* The tree node n (of the thread whose own tree is own) was entered in: the
 * calling thread's current label tree if n is one of its nodes, else own.
 * Can't fail. */
static inline ap_tree *apext_labels_tree_of(const apext_labels *l, ap_tree *own, const ap_node *n) {
    const apext_label_cache *c = &apext_labels_tls;
    if (l->on && c->owner == l && c->own == own && c->tree != NULL &&
        ap_tree_node(c->tree, n->id) == n)
        return c->tree;
    return own;
}

/* Count one request in the running tracer's tree for the calling thread and
 * its current labels (the root's AP_M_CALLS: requests started in that
 * tree), when a tracer with labels runs and the current context has a
 * route.  Implemented by tracer.c.  Can't fail (a failure is noted in the
 * session). */
void apext_tracer_count_request(void);

/* Record ns, the latency of a request that ends now, in the running
 * tracer's histogram of the current context's route (ap_prof_latency), when
 * a tracer with labels runs and the context has a route.  Implemented by
 * tracer.c.  Can't fail (a failure is noted in the session). */
void apext_tracer_route_latency(uint64_t ns);

/* Module functions (label_set, label_request, route_latency). */
extern PyMethodDef apext_labels_methods[];

#endif /* APEXT_LABELS_H */

/* stack.h -- per-thread state of a session: thread states, the shadow stack of tree nodes, phase switches; what every producer reads and writes. */
#ifndef APEXT_STACK_H
#define APEXT_STACK_H

#include "code.h"
#include "session.h"

#include <stddef.h>

#include "ap_prof.h"

/* ---- concurrency contract -----------------------------------------------------------
 * Everything in this header, session.h and code.h is protected by the GIL:
 * hooks run with it held, so thread states, trees and records have one
 * writer at a time and need no lock.  Code that runs without the GIL (an
 * allocator hook of the PYMEM_DOMAIN_RAW domain, a sampler thread, a
 * signal handler) must not call anything declared here nor read a thread
 * state, a tree or a profile: another thread holding the GIL may be moving
 * that thread's stack to another tree (apext_stack_relabel) or closing it
 * (stop).  Such code writes raw facts (sizes, addresses, clock readings,
 * frame pointers it read itself) into a buffer of its own OS thread: one
 * writer, no lock, bounded, dropping (and counting) what does not fit.  The
 * producer merges that buffer into its thread state's tree under the GIL:
 * at its next event on that thread, at a phase switch and at stop().  A
 * sampler thread that is not the sampled thread publishes its samples the
 * same way, through a single-producer ring that a GIL holder drains.
 * Allocator hooks of the MEM and OBJ domains run with the GIL held and may
 * use this header directly (behind a thread-local reentrancy guard, since
 * the tree allocates). */

#define APEXT_STACK_SEARCH 16   /* how deep an exit looks for its frame */

/* One entry of a shadow stack.  A producer whose entries need more fields
 * starts its own entry type with this one (session frame_size says how big
 * an entry is); entry 0 is always the tree's root. */
typedef struct apext_frame {
    ap_node *node;        /* the frame's node in the thread's tree */
    uint64_t t0;          /* clock when pushed or resumed */
    uint64_t child;       /* time accounted below it while on the stack (callees) */
    const void *key;      /* what its exit event names: code object or PyMethodDef */
} apext_frame;

/* The state of one OS thread in one session.  Made at the thread's first
 * event, kept (with its tree) across stop() and start() of the session;
 * owned by the session. */
typedef struct apext_thread {
    ap_tree *tree;        /* where the thread's work goes now */
    char *stack;          /* depth entries of esize bytes; [0] is the root of tree */
    size_t depth, cap, esize;
    unsigned long ident;  /* PyThread_get_thread_ident() */
    uint64_t serial;      /* apext_stack_serial() of its thread */
    int named;            /* the tree has its "thread" label */
    void *ext;            /* the producer's per-thread data, freed by ops->thread_free */
    uint64_t cpu_wall;    /* the tracer with cpu=True: the wall clock and thread CPU clock */
    uint64_t cpu_at;      /* of its last CPU reading (its GIL waits), cpu_wall 0: none yet */
    struct apext_thread *next;
} apext_thread;

/* The calling thread's state per producer, valid while gen equals
 * apext_session_generation[producer].  Written by the thread itself. */
typedef struct apext_stack_tls {
    uint64_t gen;
    apext_thread *thread;
} apext_stack_tls;

extern __attribute__((visibility("hidden"))) APEXT_TLS apext_stack_tls
    apext_stack_tls_slots[APEXT_NPRODUCERS];

/* A number given to the calling OS thread at its first use, never reused
 * (thread idents are).  Can't fail. */
uint64_t apext_stack_serial(void);

/* The calling thread's state in s (made at its first event: tree labelled
 * thread_id, thread (when threading knows the name) and phase (when set);
 * a thread seen in an earlier run of s gets its old tree back, its stack
 * emptied).  NULL on error, with the failure noted in s. */
apext_thread *apext_stack_thread_new(apext_session *s);

/* The same, for the hot path: the thread-local pointer when current.  p must
 * be s->producer (a constant at each call site). */
static inline apext_thread *apext_stack_thread(apext_session *s, apext_producer p) {
    apext_stack_tls *c = &apext_stack_tls_slots[p];
    if (c->gen == apext_session_generation[p] && c->thread != NULL)
        return c->thread;
    return apext_stack_thread_new(s);
}

/* Label the tree of ts with its thread's name if threading knows it yet
 * (threads register after their first frames run, so producers retry on
 * new nodes).  Can't fail. */
void apext_stack_name(apext_session *s, apext_thread *ts);

/* Entry i of ts (0 is the root).  Can't fail. */
static inline apext_frame *apext_stack_at(const apext_thread *ts, size_t i) {
    return (apext_frame *)(ts->stack + i * ts->esize);
}

/* The node the calling thread's work is charged to now (the root when no
 * frame is open).  For producers that attribute to the running frame (an
 * allocation hook).  Can't fail. */
static inline ap_node *apext_stack_top_node(const apext_thread *ts) {
    return apext_stack_at(ts, ts->depth - 1)->node;
}

/* Double the capacity of ts's stack.  0, or -1 with the failure noted in s. */
int apext_stack_grow(apext_session *s, apext_thread *ts);

/* A new top entry of ts (uninitialised), or NULL with the failure noted. */
static inline apext_frame *apext_stack_push_slot(apext_session *s, apext_thread *ts) {
    if (ts->depth == ts->cap && apext_stack_grow(s, ts) != 0)
        return NULL;
    return apext_stack_at(ts, ts->depth++);
}

/* The index of the entry of key among the top APEXT_STACK_SEARCH entries
 * (top first), or 0 if none.  Can't fail. */
static inline size_t apext_stack_find(const apext_thread *ts, const void *key) {
    size_t d = ts->depth;
    for (size_t i = d - 1; i >= 1 && d - i <= APEXT_STACK_SEARCH; i--)
        if (apext_stack_at(ts, i)->key == key)
            return i;
    return 0;
}

/* ---- calling-context stacks ---------------------------------------------------------
 * The function tracer's stack: each entry's node is the child of the entry
 * below it.  Every push and pop of it goes through apext_stack_enter() and
 * apext_stack_pop_top() (exits, phase switches and stop() included; only
 * stop() in CPU mode drops other threads' frames without closing them): the
 * place for anything that follows them (a timeline of enter and exit
 * events). */

/* Push the frame of key under the top entry of ts at clock now, adding
 * calls to its node's call count.  Returns the node, or NULL with the
 * failure noted in s. */
static inline ap_node *apext_stack_enter_at(apext_session *s, apext_thread *ts, ap_tree *tree,
                                            ap_node *parent, ap_frame_id frame, const void *key,
                                            uint64_t now, uint64_t calls);
static inline ap_node *apext_stack_enter(apext_session *s, apext_thread *ts, ap_frame_id frame,
                                         const void *key, uint64_t now, uint64_t calls) {
    return apext_stack_enter_at(s, ts, ts->tree, apext_stack_at(ts, ts->depth - 1)->node, frame,
                                key, now, calls);
}

/* The same with the node's tree and parent chosen by the caller (a producer
 * that puts work under other labels than the thread's: the parent is the
 * top's node, or the root of another tree for a new root path). */
static inline ap_node *apext_stack_enter_at(apext_session *s, apext_thread *ts, ap_tree *tree,
                                            ap_node *parent, ap_frame_id frame, const void *key,
                                            uint64_t now, uint64_t calls) {
    if (ts->depth == ts->cap && apext_stack_grow(s, ts) != 0)
        return NULL;
    ap_node *n = ap_tree_child_fast(tree, parent, frame);
    if (n == NULL) {
        apext_session_fail(s, "tree");
        return NULL;
    }
    if (!ts->named && calls && n->m[AP_M_CALLS] == 0)
        apext_stack_name(s, ts);   /* on new nodes only */
    n->m[AP_M_CALLS] += calls;
    apext_frame *e = apext_stack_at(ts, ts->depth++);
    e->node = n;
    e->t0 = now;
    e->child = 0;
    e->key = key;
    return n;
}

/* Close the top entry of ts at clock now: total += elapsed, self +=
 * elapsed minus callees, and the elapsed time goes to the caller's
 * callees.  ts->depth must be > 1.  Can't fail. */
static inline void apext_stack_pop_top(apext_thread *ts, uint64_t now) {
    apext_frame *e = apext_stack_at(ts, --ts->depth);
    uint64_t el = now >= e->t0 ? now - e->t0 : 0;
    e->node->m[AP_M_TOTAL_NS] += el;
    e->node->m[AP_M_SELF_NS] += el > e->child ? el - e->child : 0;
    apext_stack_at(ts, ts->depth - 1)->child += el;
}

/* Pop the frame of key: the top one normally (apext_stack_exit_with: each
 * popped entry through pop, the producer's close_top, e.g. one that records
 * a timeline span first); frames above it (whose exit
 * was not seen) are closed too.  A frame that is not on the stack (entered
 * before start(), or filtered out) is ignored.  Returns the popped node or
 * NULL.  Can't fail. */
static inline ap_node *apext_stack_exit_with(apext_thread *ts, const void *key, uint64_t now,
                                             void (*pop)(apext_thread *, uint64_t)) {
    size_t d = ts->depth;
    size_t i = d > 1 && apext_stack_at(ts, d - 1)->key == key ? d - 1 : apext_stack_find(ts, key);
    if (i == 0)
        return NULL;
    ap_node *n = apext_stack_at(ts, i)->node;
    while (ts->depth > i)
        pop(ts, now);
    return n;
}

static inline ap_node *apext_stack_exit(apext_thread *ts, const void *key, uint64_t now) {
    return apext_stack_exit_with(ts, key, now, apext_stack_pop_top);
}

/* Close every open frame of every thread of s (stop()) with ops->close_top
 * at the current time of s's clock.  Other threads' CPU clocks can't be read
 * from here: in CPU mode their frames are dropped without time.  Can't
 * fail. */
void apext_stack_flush(apext_session *s);

/* ---- which tree a thread's work goes to -------------------------------------------
 * A thread's tree is chosen when its state is made (apext_stack_thread_new:
 * the session's labels) and changed only here.  A producer that labels work
 * by something that changes while the thread runs (a phase; a route or a
 * task) moves the thread with apext_stack_relabel. */

/* Move ts to a tree with its current labels but key=val (for calling-context
 * stacks).  The frames open on its stack continue in the new tree under the
 * same call path, with no call counted there: a call belongs to the tree it
 * started in.  In wall-clock mode (and for the calling thread in CPU mode)
 * they are closed in the old tree at now_wall and reopened then, so each
 * tree gets the time spent in it; another thread's CPU clock can't be read,
 * so in CPU mode its open frames carry their time so far into the new tree.
 * A tree that holds nothing yet is relabelled instead.  0, or -1 with an
 * ap_err (the stack then ends at the last frame that could be moved). */
int apext_stack_relabel(apext_session *s, apext_thread *ts, ap_str_id key, ap_str_id val,
                        uint64_t now_wall);

/* New trees of s get phase=phase, and every thread known so far moves to one
 * (apext_stack_relabel).  0, or -1 with the failure noted in s. */
int apext_stack_set_phase(apext_session *s, ap_str_id phase);

/* Free every thread state of s.  Can't fail. */
void apext_stack_free(apext_session *s);

#endif /* APEXT_STACK_H */

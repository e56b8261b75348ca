/* stack.c -- per-thread state of a session: making thread states, naming them, growing stacks, closing them at stop, moving them between trees. */
#include "stack.h"

#include <string.h>

#include "ap_clock.h"
#include "ap_err.h"

#define STACK_INITIAL 128

APEXT_TLS apext_stack_tls apext_stack_tls_slots[APEXT_NPRODUCERS];

static _Thread_local uint64_t tls_serial;
static uint64_t next_serial = 1;   /* protected by the GIL */

uint64_t apext_stack_serial(void) {
    if (tls_serial == 0)
        tls_serial = next_serial++;
    return tls_serial;
}

void apext_stack_name(apext_session *s, apext_thread *ts) {
    if (ts->named || s->threads_dict == NULL)
        return;
    AP_SAVE_EXC(exc);
    PyObject *k = PyLong_FromUnsignedLong(ts->ident);
    PyObject *thread = k ? PyDict_GetItemWithError(s->threads_dict, k) : NULL;
    PyObject *name = thread ? PyObject_GetAttrString(thread, "_name") : NULL;
    if (name != NULL && PyUnicode_Check(name)) {
        ap_str_id v = apext_session_intern(s->prof, name);
        ts->named = v != AP_NONE && ap_tree_label_set(ts->tree, s->k_thread, v) == 0;
    }
    Py_XDECREF(name);
    Py_XDECREF(k);
    PyErr_Clear();
    AP_RESTORE_EXC(exc);
}

/* A new state for the calling thread with its tree and an empty stack;
 * NULL with an ap_err. */
static apext_thread *thread_make(apext_session *s, unsigned long ident, uint64_t serial) {
    apext_thread *ts = PyMem_RawCalloc(1, sizeof *ts);
    if (ts == NULL) {
        ap_err_set(AP_ENOMEM, "out of memory");
        return NULL;
    }
    char id[32];
    int n = snprintf(id, sizeof id, "%lu", ident);
    ap_label l[2] = {{s->k_thread_id, ap_prof_intern(s->prof, id, (size_t)n)},
                     {s->k_phase, s->phase}};
    ts->tree = l[0].val == AP_NONE ? NULL
                                   : ap_prof_tree_new(s->prof, l, s->phase == AP_NONE ? 1 : 2);
    ts->esize = s->frame_size;
    ts->stack = PyMem_RawMalloc(STACK_INITIAL * ts->esize);
    if (ts->tree == NULL || ts->stack == NULL) {
        PyMem_RawFree(ts->stack);
        PyMem_RawFree(ts);
        ap_err_set(AP_ENOMEM, "out of memory");
        return NULL;
    }
    ts->cap = STACK_INITIAL;
    ts->ident = ident;
    ts->serial = serial;
    ts->next = s->threads;
    s->threads = ts;
    return ts;
}

apext_thread *apext_stack_thread_new(apext_session *s) {
    uint64_t serial = apext_stack_serial();
    apext_thread *ts = s->threads;
    while (ts != NULL && ts->serial != serial)
        ts = ts->next;   /* a thread seen in an earlier start(): same tree */
    if (ts == NULL && (ts = thread_make(s, PyThread_get_thread_ident(), serial)) == NULL) {
        apext_session_fail(s, "thread state");
        return NULL;
    }
    ts->depth = 1;
    apext_frame *root = apext_stack_at(ts, 0);
    root->node = ap_tree_root(ts->tree);
    root->t0 = 0;
    root->child = 0;
    root->key = NULL;
    apext_stack_name(s, ts);
    apext_stack_tls_slots[s->producer].thread = ts;
    apext_stack_tls_slots[s->producer].gen = apext_session_generation[s->producer];
    return ts;
}

/* A new block, a copy, then the old block freed: never a realloc, because an
 * allocation hook (memory.c) reads this stack while the allocation is made. */
int apext_stack_grow(apext_session *s, apext_thread *ts) {
    char *st = PyMem_RawMalloc(2 * ts->cap * ts->esize);
    if (st == NULL) {
        ap_err_set(AP_ENOMEM, "out of memory");
        apext_session_fail(s, "stack");
        return -1;
    }
    memcpy(st, ts->stack, ts->cap * ts->esize);
    char *old = ts->stack;
    ts->stack = st;
    ts->cap *= 2;
    PyMem_RawFree(old);
    return 0;
}

/* Whether ts is the calling thread's state in the current run of s. */
static int is_current(const apext_session *s, const apext_thread *ts) {
    const apext_stack_tls *c = &apext_stack_tls_slots[s->producer];
    return c->thread == ts && c->gen == apext_session_generation[s->producer];
}

void apext_stack_flush(apext_session *s) {
    void (*close)(apext_thread *, uint64_t) =
        s->ops->close_top != NULL ? s->ops->close_top : apext_stack_pop_top;
    uint64_t now_wall = ap_clock_now_ns();
    for (apext_thread *ts = s->threads; ts != NULL; ts = ts->next) {
        uint64_t now = s->cpu_clock ? (is_current(s, ts) ? ap_clock_thread_cpu_ns() : 0) : now_wall;
        while (ts->depth > 1) {
            if (now == 0)
                ts->depth--;
            else
                close(ts, now);
        }
    }
}

int apext_stack_relabel(apext_session *s, apext_thread *ts, ap_str_id key, ap_str_id val,
                        uint64_t now_wall) {
    ap_tree *old = ts->tree;
    if (ap_tree_label_get(old, key) == val)
        return 0;
    if (ap_tree_nnodes(old) == 1 && (!s->running || ts->depth <= 1))
        return ap_tree_label_set(old, key, val);
    ap_tree *nt = ap_prof_tree_new(s->prof, NULL, 0);
    if (nt == NULL)
        return -1;
    for (size_t i = 0; i < ap_tree_nlabels(old); i++) {
        ap_label l = ap_tree_label_at(old, i);
        if (l.key != key && ap_tree_label_set(nt, l.key, l.val) != 0)
            return -1;
    }
    if (ap_tree_label_set(nt, key, val) != 0)
        return -1;
    ts->tree = nt;
    apext_stack_at(ts, 0)->node = ap_tree_root(nt);
    if (!s->running)
        return 0;
    size_t depth = ts->depth;
    int split = !s->cpu_clock || is_current(s, ts);
    uint64_t now = s->cpu_clock ? (split ? ap_clock_thread_cpu_ns() : 0) : now_wall;
    void (*close)(apext_thread *, uint64_t) =
        s->ops->close_top != NULL ? s->ops->close_top : apext_stack_pop_top;
    if (split)
        while (ts->depth > 1)
            close(ts, now);
    apext_stack_at(ts, 0)->child = 0;
    if (split && s->ops->reopen != NULL)
        s->ops->reopen(ts, apext_stack_at(ts, 0));
    for (size_t i = 1; i < depth; i++) {
        apext_frame *e = apext_stack_at(ts, i);
        ap_node *n = ap_tree_child(nt, apext_stack_at(ts, i - 1)->node, e->node->frame);
        if (n == NULL) {
            ts->depth = i;
            return -1;
        }
        e->node = n;
        if (split) {
            e->t0 = now;
            e->child = 0;
            if (s->ops->reopen != NULL)
                s->ops->reopen(ts, e);
        }
    }
    ts->depth = depth;
    return 0;
}

int apext_stack_set_phase(apext_session *s, ap_str_id phase) {
    s->phase = phase;
    uint64_t now = ap_clock_now_ns();
    for (apext_thread *ts = s->threads; ts != NULL; ts = ts->next) {
        if (apext_stack_relabel(s, ts, s->k_phase, phase, now) != 0) {
            apext_session_fail(s, "phase");
            return -1;
        }
    }
    return 0;
}

void apext_stack_free(apext_session *s) {
    for (apext_thread *ts = s->threads; ts != NULL;) {
        apext_thread *next = ts->next;
        if (ts->ext != NULL && s->ops->thread_free != NULL)
            s->ops->thread_free(ts->ext);
        PyMem_RawFree(ts->stack);
        PyMem_RawFree(ts);
        ts = next;
    }
    s->threads = NULL;
}

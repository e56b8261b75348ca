/* lines.c -- apiprof._core.LineTracer: the line profiler (3.12+: sys.monitoring LINE set on the target code objects only; 3.11: a C trace function) feeding ap_prof trees of function and line nodes.
 *
 * Targets are code objects given in advance (add_code).  Everything that can
 * be decided about a target is decided then, outside the hooks: its record
 * in its co_extra record (target number, function frame, the
 * frame of every line of the code).  A hook reads that record, checks that
 * it belongs to the running LineTracer, and otherwise returns at once.
 *
 * On 3.12+ the events LINE, PY_START, PY_RESUME, PY_RETURN and PY_YIELD are
 * local events of the target code objects (sys.monitoring.set_local_events),
 * under a tool id of the line profiler's own, so no other code of the
 * process is instrumented and the function tracer (another tool id) can run
 * at the same time.  PY_UNWIND and PY_THROW cannot be local: they are global
 * and return at once for other code.  On 3.11 the C trace function of every
 * thread (threads started later included, through threading.settrace) sees
 * every event of the process and returns after one co_extra read for code
 * that is not a target; the function tracer uses the profile function, a
 * different slot, so both can run together there too.
 *
 * Per thread: a tree root -> function node -> line nodes, and a stack of the
 * target frames running.  Per line event: one clock read, the time since
 * the previous line event of the same frame is added to the line that was
 * running (so a line's time includes the functions it called, as
 * line_profiler counts it), and the new line gets a hit.  Line nodes are
 * found through an array per (thread, target) indexed by line number: no
 * hashing, no allocation once a line has been seen.  A yield or return
 * charges the running line; for coroutines and async generators the time
 * until the resume is await time of the line that was suspended (and of the
 * function), and the frame resumes on that line (3.12+ sends no LINE event
 * for it).
 *
 * The session, thread states, shadow stack, per-code records and hook
 * installation are the framework's (session.h, stack.h, code.h,
 * install.h); this file holds what only the line profiler does.
 * Everything here is protected by the GIL; one LineTracer runs at a time.
 * Hooks never raise: failures are noted (apext_session_fail) and reported
 * by stop(). */
#include "install.h"
#include "memory.h"
#include "stack.h"

#include <string.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_map.h"
#include "ap_prof.h"

#define PRODUCER APEXT_PRODUCER_LINES

/* ---- per-code record ------------------------------------------------------------ */

typedef struct line_rec {
    apext_code_info info;      /* function frame, kinds; info.serial: the LineTracer's */
    uint32_t index;            /* target number in that LineTracer */
    int first;                 /* smallest line of the code */
    int nlines;                /* lines first .. first + nlines - 1 */
    ap_frame_id *line_frames;  /* frame of each line; AP_NONE where the code has none */
    int *statement;            /* first line of each line's statement (0: the line itself),
                                  or NULL when the source could not be read */
} line_rec;

static void line_rec_free(void *p) {
    line_rec *r = p;
    if (r == NULL)
        return;
    PyMem_RawFree(r->line_frames);
    PyMem_RawFree(r->statement);
    apext_code_info_clear(&r->info);
    PyMem_RawFree(r);
}

/* ---- per-thread state ---------------------------------------------------------------- */

/* A shadow-stack entry: base.node is the function node, base.key the code,
 * base.child the time charged to lines since base.t0. */
typedef struct lframe {
    apext_frame base;
    const line_rec *rec;
    ap_node **nodes;     /* [0] the function node, [1 + line - first] line nodes */
    ap_node *line;       /* the line running, NULL before the first line event */
    int lineno;          /* its number: the first line of the statement running */
    int in_rest;         /* the last line event was on a later line of that statement */
    uint64_t t_line;     /* the running line started (or the frame resumed) */
} lframe;

/* Entry i of ts's stack, whose entries are lframes (the session's
 * frame_size): the constant stride keeps the per-line path as short as a
 * private array. */
static inline lframe *lframe_at(const apext_thread *ts, size_t i) {
    return (lframe *)ts->stack + i;
}

/* apext_thread.ext: the node array of each target in the thread. */
typedef struct line_nodes {
    ap_node ***arr;      /* per target number: node array (see lframe.nodes), or NULL */
    size_t cap;
} line_nodes;

static void line_nodes_free(void *p) {
    line_nodes *ln = p;
    for (size_t i = 0; i < ln->cap; i++)
        PyMem_RawFree(ln->arr[i]);
    PyMem_RawFree(ln->arr);
    PyMem_RawFree(ln);
}

typedef struct LineTracerObject {
    PyObject_HEAD
    apext_session sess;   /* profile, thread states, failure note (as in apext_object) */
    PyObject *codes;      /* list of target code objects; index = target number */
    ap_map susp_line;     /* frame key -> line running at a generator's suspension */
} LineTracerObject;

_Static_assert(offsetof(LineTracerObject, sess) == offsetof(apext_object, sess),
               "starts as apext_object");

static inline LineTracerObject *running_lines(void) {
    return (LineTracerObject *)apext_session_running[PRODUCER];
}

/* ---- records (outside the hooks) --------------------------------------------------------- */

/* The Python exception for a failed ap_err call; returns -1. */
static int raise_ap_err(void) {
    if (ap_err_code() == AP_ENOMEM)
        PyErr_NoMemory();
    else
        PyErr_Format(PyExc_RuntimeError, "apiprof: %s", ap_err_msg());
    return -1;
}

/* rec->statement from apiprof._lines.statement_starts(code), the first
 * line of the statement of each later line of a statement spanning several
 * (read from the source, which only Python parses).  Without it (no source,
 * a failure) lines count as the events come.  Can't fail. */
static void rec_statements(line_rec *rec, PyObject *code) {
    PyObject *mod = PyImport_ImportModule("apiprof._lines");
    PyObject *starts = mod ? PyObject_CallMethod(mod, "statement_starts", "O", code) : NULL;
    Py_XDECREF(mod);
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    if (starts != NULL && PyDict_Check(starts) && PyDict_GET_SIZE(starts) > 0 &&
        (rec->statement = PyMem_RawCalloc((size_t)rec->nlines, sizeof *rec->statement)) != NULL) {
        while (PyDict_Next(starts, &pos, &key, &val)) {
            long line = PyLong_AsLong(key), first = PyLong_AsLong(val);
            if (line >= rec->first && line < rec->first + rec->nlines && first > 0 && first < line)
                rec->statement[line - rec->first] = (int)first;
        }
    }
    Py_XDECREF(starts);
    PyErr_Clear();
}

/* A new record of code with its lines (from co_lines()); NULL with a Python
 * exception set. */
static line_rec *rec_make(PyObject *code) {
    PyCodeObject *co = (PyCodeObject *)code;
    line_rec *rec = PyMem_RawCalloc(1, sizeof *rec);
    if (rec == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    /* (start, end, line) triples */
    PyObject *it = PyObject_CallMethod(code, "co_lines", NULL);
    PyObject *seq = it ? PySequence_List(it) : NULL;
    Py_XDECREF(it);
    if (seq == NULL) {
        line_rec_free(rec);
        return NULL;
    }
    int lo = co->co_firstlineno, hi = co->co_firstlineno;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(seq); i++) {
        PyObject *triple = PyList_GET_ITEM(seq, i);
        PyObject *ln = PyTuple_Check(triple) && PyTuple_GET_SIZE(triple) == 3
                           ? PyTuple_GET_ITEM(triple, 2) : Py_None;
        if (ln == Py_None)
            continue;
        long l = PyLong_AsLong(ln);
        if (l <= 0)
            continue;
        lo = l < lo ? (int)l : lo;
        hi = l > hi ? (int)l : hi;
    }
    rec->first = lo;
    rec->nlines = hi - lo + 1;
    rec->line_frames = PyMem_RawMalloc((size_t)rec->nlines * sizeof *rec->line_frames);
    if (rec->line_frames == NULL) {
        Py_DECREF(seq);
        line_rec_free(rec);
        PyErr_NoMemory();
        return NULL;
    }
    for (int i = 0; i < rec->nlines; i++)
        rec->line_frames[i] = AP_NONE;
    /* Mark the lines that exist with 0 until frames are interned. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(seq); i++) {
        PyObject *triple = PyList_GET_ITEM(seq, i);
        PyObject *ln = PyTuple_Check(triple) && PyTuple_GET_SIZE(triple) == 3
                           ? PyTuple_GET_ITEM(triple, 2) : Py_None;
        long l = ln == Py_None ? 0 : PyLong_AsLong(ln);
        if (l >= lo && l <= hi)
            rec->line_frames[l - lo] = 0;
    }
    Py_DECREF(seq);
    PyErr_Clear();
    rec_statements(rec, code);
    return rec;
}

/* Fill the record of target code for t (number index).  0, or -1 with a
 * Python exception set. */
static int rec_fill(LineTracerObject *t, PyObject *code, uint32_t index) {
    PyCodeObject *co = (PyCodeObject *)code;
    line_rec *rec = apext_code_get(code, PRODUCER);
    int fresh = rec == NULL;
    if (fresh && (rec = rec_make(code)) == NULL)
        return -1;
    int ok = apext_code_info_fill(&rec->info, &t->sess, co) == 0;
    for (int i = 0; ok && i < rec->nlines; i++)
        if (rec->line_frames[i] != AP_NONE)
            ok = (rec->line_frames[i] = apext_code_frame(t->sess.prof, co, rec->first + i)) !=
                 AP_NONE;
    if (ok && fresh)
        ok = apext_code_set(code, PRODUCER, rec) == 0;
    if (!ok) {
        rec->info.serial = 0;
        if (fresh)
            line_rec_free(rec);
        return raise_ap_err();
    }
    rec->index = index;
    return 0;
}

/* ---- per-thread nodes ------------------------------------------------------------------- */

/* The node array of target rec in thread ts, made at the target's first
 * event in the thread.  NULL on error (ap_err set). */
static ap_node **target_nodes(apext_thread *ts, const line_rec *rec) {
    line_nodes *ln = ts->ext;
    if (ln != NULL && rec->index < ln->cap && ln->arr[rec->index] != NULL)
        return ln->arr[rec->index];
    if (ln == NULL && (ln = ts->ext = PyMem_RawCalloc(1, sizeof *ln)) == NULL) {
        ap_err_set(AP_ENOMEM, "out of memory");
        return NULL;
    }
    if (rec->index >= ln->cap) {
        size_t cap = ln->cap ? ln->cap : 8;
        while (cap <= rec->index)
            cap *= 2;
        ap_node ***n = PyMem_RawRealloc(ln->arr, cap * sizeof *n);
        if (n == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            return NULL;
        }
        memset(n + ln->cap, 0, (cap - ln->cap) * sizeof *n);
        ln->arr = n;
        ln->cap = cap;
    }
    ap_node **arr = PyMem_RawCalloc((size_t)rec->nlines + 1, sizeof *arr);
    if (arr == NULL) {
        ap_err_set(AP_ENOMEM, "out of memory");
        return NULL;
    }
    arr[0] = ap_tree_child(ts->tree, ap_tree_root(ts->tree), rec->info.frame);
    if (arr[0] == NULL) {
        PyMem_RawFree(arr);
        return NULL;
    }
    ln->arr[rec->index] = arr;
    return arr;
}

/* The node of line lineno of frame e, made at its first hit; NULL when the
 * code has no such line or on error (ap_err set). */
static inline ap_node *line_node(apext_thread *ts, lframe *e, int lineno) {
    int i = lineno - e->rec->first;
    if (i < 0 || i >= e->rec->nlines || e->rec->line_frames[i] == AP_NONE)
        return NULL;
    ap_node *n = e->nodes[1 + i];
    if (n == NULL)
        n = e->nodes[1 + i] = ap_tree_child(ts->tree, e->nodes[0], e->rec->line_frames[i]);
    return n;
}

/* ---- events ------------------------------------------------------------------------------ */

/* Charge the time since the running line started to it. */
static inline void charge(lframe *e, uint64_t now) {
    if (e->line != NULL && now > e->t_line) {
        uint64_t d = now - e->t_line;
        e->line->m[AP_M_SELF_NS] += d;
        e->line->m[AP_M_TOTAL_NS] += d;
        e->base.child += d;
    }
    e->t_line = now;
}

/* Close the top frame of ts at now: the running line is charged, the
 * function gets the elapsed time as total and the part no line got as
 * self. */
static inline void close_top(apext_thread *ts, uint64_t now) {
    lframe *e = lframe_at(ts, --ts->depth);
    charge(e, now);
    uint64_t el = now > e->base.t0 ? now - e->base.t0 : 0;
    e->base.node->m[AP_M_TOTAL_NS] += el;
    e->base.node->m[AP_M_SELF_NS] += el > e->base.child ? el - e->base.child : 0;
}

/* Where a generator-like frame suspended: its line, and for coroutines its
 * await time, go back to the resumed frame e. */
static void resume(LineTracerObject *t, apext_thread *ts, lframe *e, uint64_t key, uint64_t now) {
    uint64_t *line = ap_map_get(&t->susp_line, key);
    if (line != NULL) {
        e->lineno = (int)*line;
        e->in_rest = 0;
        e->line = e->lineno ? line_node(ts, e, e->lineno) : NULL;
        ap_map_remove(&t->susp_line, key);
    }
    uint64_t *since = ap_map_get(&t->sess.suspended, key);
    if (since != NULL) {
        uint64_t w = now > *since ? now - *since : 0;
        ap_map_remove(&t->sess.suspended, key);
        e->base.node->m[AP_M_AWAIT_NS] += w;
        if (e->line != NULL)
            e->line->m[AP_M_AWAIT_NS] += w;
    }
}

/* A target frame starts (start = 1) or resumes (start = 0).  Returns the
 * pushed frame or NULL (failure noted). */
static lframe *on_start(LineTracerObject *t, apext_thread *ts, const line_rec *rec,
                        const void *code, const void *fkey, int start, uint64_t now) {
    ap_node **nodes = target_nodes(ts, rec);
    if (nodes == NULL) {
        apext_session_fail(&t->sess, "tree");
        return NULL;
    }
    lframe *e = (lframe *)apext_stack_push_slot(&t->sess, ts);
    if (e == NULL)
        return NULL;
    if (!ts->named && nodes[0]->m[AP_M_CALLS] == 0)   /* threads register late: retry on new nodes */
        apext_stack_name(&t->sess, ts);
    e->base.node = nodes[0];
    e->base.key = code;
    e->base.t0 = e->t_line = now;
    e->base.child = 0;
    e->rec = rec;
    e->nodes = nodes;
    e->line = NULL;
    e->lineno = 0;
    e->in_rest = 0;
    if (start)
        nodes[0]->m[AP_M_CALLS]++;
    if (!rec->info.genlike)
        return e;
    uint64_t key = (uint64_t)(uintptr_t)fkey;
    if (start) {   /* a new frame may reuse the address of a finished one */
        ap_map_remove(&t->susp_line, key);
        ap_map_remove(&t->sess.suspended, key);
    } else {
        resume(t, ts, e, key, now);
    }
    return e;
}

/* The frame of code on ts's stack (frames above it, whose exit was not
 * seen, are closed), or NULL if it is not among the top APEXT_STACK_SEARCH. */
static inline lframe *find_frame(apext_thread *ts, const void *code, uint64_t now) {
    size_t d = ts->depth;
    if (d > 1 && lframe_at(ts, d - 1)->base.key == code)
        return lframe_at(ts, d - 1);
    size_t i = apext_stack_find(ts, code);
    if (i == 0)
        return NULL;
    while (ts->depth > i + 1)
        close_top(ts, now);
    return lframe_at(ts, i);
}

static inline void on_line_event(LineTracerObject *t, const line_rec *rec, const void *code,
                                 const void *fkey, int lineno, uint64_t now) {
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    lframe *e = find_frame(ts, code, now);
    if (e == NULL) {   /* a frame that was running when start() was called */
        e = on_start(t, ts, rec, code, fkey, 0, now);
        if (e == NULL)
            return;
    }
    charge(e, now);
    /* A hit is an execution of a statement: the events of its later lines,
     * and those of its first line in between (3.11 and 3.12 send them when a
     * call's arguments on later lines are done), go to the statement's first
     * line without a hit; a jump back to the first line from elsewhere (a
     * loop) is a hit. */
    int first = lineno;
    if (rec->statement != NULL && lineno >= rec->first && lineno < rec->first + rec->nlines &&
        rec->statement[lineno - rec->first] != 0)
        first = rec->statement[lineno - rec->first];
    int again = e->lineno == first && (first != lineno || e->in_rest);
    e->in_rest = first != lineno;
    lineno = first;
    ap_node *n = line_node(ts, e, lineno);
    if (n == NULL && lineno >= rec->first && lineno < rec->first + rec->nlines &&
        rec->line_frames[lineno - rec->first] != AP_NONE)
        apext_session_fail(&t->sess, "tree");
    if (n != NULL && !again)
        n->m[AP_M_HITS]++;
    e->line = n;
    e->lineno = lineno;
}

/* A target frame starts or resumes (see on_start). */
static inline void on_enter(LineTracerObject *t, const line_rec *rec, const void *code,
                            const void *fkey, int start, uint64_t now) {
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts != NULL)
        on_start(t, ts, rec, code, fkey, start, now);
}

/* A target frame returns or unwinds (yield = 0) or suspends (yield = 1). */
static inline void on_leave(LineTracerObject *t, const line_rec *rec, const void *code,
                            const void *fkey, int yield, uint64_t now) {
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    lframe *e = find_frame(ts, code, now);
    if (e == NULL)
        return;
    int lineno = e->lineno;
    close_top(ts, now);
    if (yield && rec->info.genlike) {
        uint64_t key = (uint64_t)(uintptr_t)fkey;
        if (ap_map_put(&t->susp_line, key, (uint64_t)lineno) != 0 ||
            (rec->info.awaits && ap_map_put(&t->sess.suspended, key, now) != 0))
            apext_session_fail(&t->sess, "suspension map");
    }
}

ap_node *apext_lines_charge_node(PyObject *tracer) {
    if (apext_session_running[PRODUCER] != tracer)
        return NULL;
    const apext_stack_tls *c = &apext_stack_tls_slots[PRODUCER];
    if (c->gen != apext_session_generation[PRODUCER] || c->thread == NULL || c->thread->depth < 2)
        return NULL;
    const lframe *e = lframe_at(c->thread, c->thread->depth - 1);
    return e->line != NULL ? e->line : e->base.node;
}

int apext_lines_add(PyObject *tracer, unsigned k1, uint64_t v1, unsigned k2, uint64_t v2) {
    if (apext_session_running[PRODUCER] != tracer)
        return 0;
    const apext_stack_tls *c = &apext_stack_tls_slots[PRODUCER];
    if (c->gen != apext_session_generation[PRODUCER] || c->thread == NULL || c->thread->depth < 2)
        return 0;
    for (size_t i = c->thread->depth; i-- > 1;) {
        const lframe *e = lframe_at(c->thread, i);
        ap_node *n = e->line != NULL ? e->line : e->base.node;
        n->m[k1] += v1;
        if (k2 < AP_M_COUNT)
            n->m[k2] += v2;
    }
    return 1;
}

/* The running tracer's record of code, or NULL when code is not one of its
 * targets. */
static inline const line_rec *target_rec(LineTracerObject *t, PyObject *code) {
    const line_rec *rec = apext_code_get(code, PRODUCER);
    return rec != NULL && rec->info.serial == t->sess.serial ? rec : NULL;
}

#if AP_MONITORING
/* ---- 3.12+: sys.monitoring, local events on the targets ------------------------------------ */

enum { EV_START, EV_RESUME, EV_RETURN, EV_YIELD, EV_UNWIND, EV_THROW };

static PyObject *mon_event(PyObject *const *a, Py_ssize_t n, int ev) {
    LineTracerObject *t = running_lines();
    if (t == NULL || n < 1)
        Py_RETURN_NONE;
    const line_rec *rec = target_rec(t, a[0]);
    if (rec == NULL)
        Py_RETURN_NONE;
    uint64_t now = ap_clock_now_ns();
    const void *fkey = rec->info.genlike ? apext_compat_iframe() : NULL;
    if (ev == EV_START || ev == EV_RESUME || ev == EV_THROW)
        on_enter(t, rec, a[0], fkey, ev == EV_START, now);
    else
        on_leave(t, rec, a[0], fkey, ev == EV_YIELD, now);
    Py_RETURN_NONE;
}

/* LINE: (code, line_number) */
static PyObject *cb_line(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    LineTracerObject *t = running_lines();
    if (t == NULL || n < 2)
        Py_RETURN_NONE;
    const line_rec *rec = target_rec(t, a[0]);
    if (rec == NULL)
        Py_RETURN_NONE;
    uint64_t now = ap_clock_now_ns();
    long lineno = PyLong_AsLong(a[1]);
    if (lineno == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    on_line_event(t, rec, a[0], rec->info.genlike ? apext_compat_iframe() : NULL, (int)lineno,
                  now);
    Py_RETURN_NONE;
}

/* One callback per event kind, all through mon_event(). */
#define CALLBACK(name, ev)                                                      \
    static PyObject *name(PyObject *m, PyObject *const *a, Py_ssize_t n) {      \
        (void)m;                                                                \
        return mon_event(a, n, ev);                                             \
    }
CALLBACK(cb_start, EV_START)
CALLBACK(cb_resume, EV_RESUME)
CALLBACK(cb_return, EV_RETURN)
CALLBACK(cb_yield, EV_YIELD)
CALLBACK(cb_unwind, EV_UNWIND)
CALLBACK(cb_throw, EV_THROW)
#undef CALLBACK

/* PY_UNWIND and PY_THROW cannot be local events. */
static apext_event lines_events[] = {
    APEXT_EVENT("LINE", cb_line, APEXT_EV_LOCAL),
    APEXT_EVENT("PY_START", cb_start, APEXT_EV_LOCAL),
    APEXT_EVENT("PY_RESUME", cb_resume, APEXT_EV_LOCAL),
    APEXT_EVENT("PY_RETURN", cb_return, APEXT_EV_LOCAL),
    APEXT_EVENT("PY_YIELD", cb_yield, APEXT_EV_LOCAL),
    APEXT_EVENT("PY_UNWIND", cb_unwind, 0),
    APEXT_EVENT("PY_THROW", cb_throw, 0),
};

#else
/* ---- 3.11: the C trace function of every thread ---------------------------------------------- */

static int trace_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    LineTracerObject *t = running_lines();
    if (t == NULL || (PyObject *)t != obj)
        return 0;
    PyCodeObject *co = PyFrame_GetCode(frame);
    const line_rec *rec = target_rec(t, (PyObject *)co);
    Py_DECREF(co);   /* the frame keeps it alive */
    if (rec == NULL)
        return 0;
    uint64_t now = ap_clock_now_ns();
    if (what == PyTrace_LINE)
        on_line_event(t, rec, co, frame, PyFrame_GetLineNumber(frame), now);
    else if (what == PyTrace_CALL)
        on_enter(t, rec, co, frame, apext_code_is_start(&rec->info, frame), now);
    else if (what == PyTrace_RETURN)
        on_leave(t, rec, co, frame, apext_code_is_yield(&rec->info, frame, arg), now);
    return 0;
}
#endif

static apext_hooks lines_hooks =
    APEXT_HOOKS(PRODUCER, "apiprof lines", lines_events, APEXT_LEGACY_TRACE, trace_hook);

/* ---- session operations ------------------------------------------------------------------- */

static int lines_traverse(PyObject *owner, visitproc visit, void *arg) {
    Py_VISIT(((LineTracerObject *)owner)->codes);
    return 0;
}

static void lines_clear(PyObject *owner) {
    LineTracerObject *t = (LineTracerObject *)owner;
    t->sess.targets = NULL;
    Py_CLEAR(t->codes);
}

static void lines_dealloc(PyObject *owner) {
    ap_map_free(&((LineTracerObject *)owner)->susp_line);
}

/* Fill every target's record before the hooks see them. */
static int lines_prepare(PyObject *owner) {
    LineTracerObject *t = (LineTracerObject *)owner;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(t->codes); i++)
        if (rec_fill(t, PyList_GET_ITEM(t->codes, i), (uint32_t)i) < 0)
            return -1;
    return 0;
}

static void lines_stopped(PyObject *owner) {
    ap_map_clear(&((LineTracerObject *)owner)->susp_line);
}

static const apext_session_ops lines_ops = {
    .hooks = &lines_hooks,
    .prepare = lines_prepare,
    .close_top = close_top,
    .stopped = lines_stopped,
    .thread_free = line_nodes_free,
    .traverse = lines_traverse,
    .clear = lines_clear,
    .dealloc = lines_dealloc,
};

/* ---- the LineTracer type ----------------------------------------------------------------------- */

static PyObject *lt_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"threads", NULL};
    PyObject *threads = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O:LineTracer", kwlist, &threads))
        return NULL;
    if (threads != Py_None && !PyDict_Check(threads))
        return PyErr_Format(PyExc_TypeError, "threads must be a dict or None");
    LineTracerObject *t = (LineTracerObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    if (apext_session_init(&t->sess, PRODUCER, (PyObject *)t, &lines_ops, "line profiler",
                           "apiprof lines", 0, sizeof(lframe)) < 0 ||
        (t->codes = PyList_New(0)) == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    t->sess.threads_dict = threads != Py_None ? Py_NewRef(threads) : NULL;
    t->sess.targets = t->codes;
    return (PyObject *)t;
}

/* add_code(code) -> bool: True if code became a target, False if it was one. */
static PyObject *lt_add_code(LineTracerObject *t, PyObject *code) {
    if (!PyCode_Check(code))
        return PyErr_Format(PyExc_TypeError, "add_code() needs a code object, not %.100s",
                            Py_TYPE(code)->tp_name);
    int has = PySequence_Contains(t->codes, code);
    if (has != 0)
        return has < 0 ? NULL : Py_NewRef(Py_False);
    if (PyList_Append(t->codes, code) < 0)
        return NULL;
    /* A record is filled at start(); a code added while running gets it now. */
    if (t->sess.running) {
        if (rec_fill(t, code, (uint32_t)(PyList_GET_SIZE(t->codes) - 1)) < 0 ||
            apext_install_code(&t->sess, code) < 0) {
            PySequence_DelItem(t->codes, PyList_GET_SIZE(t->codes) - 1);
            return NULL;
        }
    } else if (apext_code_frame(t->sess.prof, (PyCodeObject *)code, 0) == AP_NONE) {
        /* Interned now, so that a target never run still shows. */
        return PyErr_NoMemory();
    }
    Py_RETURN_TRUE;
}

static PyObject *lt_get_codes(LineTracerObject *t, void *Py_UNUSED(c)) {
    return PyList_GetSlice(t->codes, 0, PyList_GET_SIZE(t->codes));
}

static PyMethodDef lt_methods[] = {
    {"add_code", (PyCFunction)lt_add_code, METH_O,
     "add_code(code) -> bool\n\nMake a code object a target (also while running); False if it "
     "already was one."},
    {"start", apext_session_py_start, METH_NOARGS, "start()\n\nStart recording the targets' lines."},
    {"stop", apext_session_py_stop, METH_NOARGS,
     "stop()\n\nStop recording and close every open frame; a no-op when not running."},
    {"profile", apext_session_py_profile, METH_NOARGS,
     "profile() -> Profile\n\nThe recorded profile (shares the line tracer's data)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lt_getset[] = {
    {"running", apext_session_py_running, NULL, "Whether the hooks are installed.", NULL},
    {"tool_id", apext_session_py_tool_id, NULL,
     "The sys.monitoring tool id in use (3.12+, while running), else None.", NULL},
    {"codes", (getter)lt_get_codes, NULL, "The target code objects, in the order added.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

int apext_lines_init(PyObject *module, apext_state *st) {
    if (apext_code_init(PRODUCER, line_rec_free) < 0)
        return -1;
    return apext_session_add_type(module, "apiprof._core.LineTracer", sizeof(LineTracerObject),
                                  lt_new, lt_methods, lt_getset,
                                  "LineTracer(*, threads=None)\n\nThe line profiler of apiprof (use "
                                  "apiprof.LineProfiler).",
                                  &st->line_tracer_type);
}

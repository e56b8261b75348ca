/* lines.c -- apiprof._core.LineTracer: the line profiler (3.12+: sys.monitoring LINE set on the target code objects only; 3.11: a C trace function) feeding ap_prof trees of function and line nodes.
 *
 * Targets are code objects given in advance (add_code).  Everything that can
 * be decided about a target is decided then, outside the hooks: its record
 * in the co_extra slot APEXT_SLOT_LINES (target number, function frame, the
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
 * Everything here is protected by the GIL; one LineTracer runs at a time.
 * Hooks never raise: failures are noted (apext_fail) and reported by stop(). */
#include "hook.h"

#include <string.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_map.h"
#include "ap_prof.h"

#define STACK_INITIAL 32
#define UNWIND_SEARCH 16   /* how deep an exit looks for its frame */

/* ---- per-code record ------------------------------------------------------------ */

typedef struct line_rec {
    uint64_t serial;           /* LineTracer the record was filled for */
    uint32_t index;            /* target number in that LineTracer */
    ap_frame_id frame;         /* function-level frame */
    int first;                 /* smallest line of the code */
    int nlines;                /* lines first .. first + nlines - 1 */
    ap_frame_id *line_frames;  /* frame of each line; AP_NONE where the code has none */
    uint8_t genlike, awaits;
    int start_lasti;           /* 3.11: offset of the RESUME that starts the code */
    PyObject *code_bytes;      /* 3.11, generator-like code: co_code */
} line_rec;

static void line_rec_free(void *p) {
    line_rec *r = p;
    if (r == NULL)
        return;
    PyMem_RawFree(r->line_frames);
    Py_XDECREF(r->code_bytes);
    PyMem_RawFree(r);
}

/* ---- per-thread state ---------------------------------------------------------------- */

typedef struct lframe {
    const void *code;
    const line_rec *rec;
    ap_node **nodes;     /* [0] the function node, [1 + line - first] line nodes */
    ap_node *line;       /* the line running, NULL before the first line event */
    int lineno;
    uint64_t t0;         /* entered or resumed */
    uint64_t t_line;     /* the running line started (or the frame resumed) */
    uint64_t charged;    /* time charged to lines since t0 */
} lframe;

typedef struct lstate {
    ap_tree *tree;
    lframe *stack;
    size_t depth, cap;
    ap_node ***nodes;    /* per target number: node array (see lframe.nodes), or NULL */
    size_t nodes_cap;
    unsigned long ident;
    uint64_t thread_serial;
    int named;
    struct lstate *next;
} lstate;

typedef struct LineTracerObject {
    PyObject_HEAD
    ap_prof *prof;        /* owned */
    uint64_t serial;
    int running, tool_id;
    PyObject *codes;      /* list of target code objects; index = target number */
    PyObject *threads;    /* threading._active, or NULL */
    lstate *threads_list;
    ap_str_id k_thread, k_thread_id;
    ap_map susp_time;     /* frame key -> clock at a coroutine's suspension */
    ap_map susp_line;     /* frame key -> line running at a generator's suspension */
    apext_fail fail;
} LineTracerObject;

static LineTracerObject *active;
static uint64_t generation;
static uint64_t next_serial = 1;
static _Thread_local uint64_t tls_gen;
static _Thread_local lstate *tls_ts;

static void hook_fail(LineTracerObject *t, const char *what) {
    apext_fail_note(&t->fail, what);
}

/* ---- records (outside the hooks) --------------------------------------------------------- */

/* Fill the record of target code for t (number index).  0, or -1 with a
 * Python exception set. */
static int rec_fill(LineTracerObject *t, PyObject *code, uint32_t index) {
    PyCodeObject *co = (PyCodeObject *)code;
    ap_prof *p = t->prof;
    line_rec *rec = apext_code_get(code, APEXT_SLOT_LINES);
    int fresh = rec == NULL;
    if (fresh) {
        rec = PyMem_RawCalloc(1, sizeof *rec);
        if (rec == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        /* The lines of the code, from co_lines(): (start, end, line) triples. */
        PyObject *it = PyObject_CallMethod(code, "co_lines", NULL);
        PyObject *seq = it ? PySequence_List(it) : NULL;
        Py_XDECREF(it);
        if (seq == NULL) {
            line_rec_free(rec);
            return -1;
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
            return -1;
        }
        for (int i = 0; i < rec->nlines; i++)
            rec->line_frames[i] = AP_NONE;
        /* Mark the lines that exist with 0 until frames are interned below. */
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
        rec->genlike = (co->co_flags & APEXT_CO_GENLIKE) != 0;
        rec->awaits = (co->co_flags & APEXT_CO_AWAITS) != 0;
        rec->start_lasti = -1;
#if !AP_MONITORING
        if (rec->genlike) {
            if (apext_opcodes_init() < 0) {
                line_rec_free(rec);
                return -1;
            }
            rec->code_bytes = PyCode_GetCode(co);
            if (rec->code_bytes == NULL) {
                line_rec_free(rec);
                return -1;
            }
            rec->start_lasti = apext_first_resume(rec->code_bytes);
        }
#endif
    }
    ap_frame f = {apext_intern(p, co->co_name), apext_intern(p, co->co_qualname),
                  apext_intern(p, co->co_filename), (uint32_t)co->co_firstlineno, 0,
                  AP_FRAME_PYTHON};
    int ok = f.name != AP_NONE && f.qualname != AP_NONE && f.file != AP_NONE &&
             (rec->frame = ap_prof_frame_intern(p, &f)) != AP_NONE;
    for (int i = 0; ok && i < rec->nlines; i++) {
        if (rec->line_frames[i] == AP_NONE)
            continue;
        f.lineno = (uint32_t)(rec->first + i);
        ok = (rec->line_frames[i] = ap_prof_frame_intern(p, &f)) != AP_NONE;
    }
    if (!ok) {
        if (fresh)
            line_rec_free(rec);
        PyErr_NoMemory();
        return -1;
    }
    rec->index = index;
    rec->serial = t->serial;
    if (fresh && apext_code_set(code, APEXT_SLOT_LINES, rec) < 0) {
        line_rec_free(rec);
        PyErr_Format(PyExc_RuntimeError, "apiprof: %s", ap_err_msg());
        return -1;
    }
    return 0;
}

/* ---- thread states ----------------------------------------------------------------------- */

static lstate *lstate_new(LineTracerObject *t) {
    unsigned long ident = PyThread_get_thread_ident();
    uint64_t serial = apext_thread_serial();
    lstate *ts = NULL;
    for (lstate *x = t->threads_list; x != NULL; x = x->next)
        if (x->thread_serial == serial)
            ts = x;   /* this thread in an earlier start(): same tree */
    if (ts == NULL) {
        ts = PyMem_RawCalloc(1, sizeof *ts);
        if (ts == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            return NULL;
        }
        char id[32];
        int n = snprintf(id, sizeof id, "%lu", ident);
        ap_label l = {t->k_thread_id, ap_prof_intern(t->prof, id, (size_t)n)};
        ts->tree = l.val == AP_NONE ? NULL : ap_prof_tree_new(t->prof, &l, 1);
        ts->stack = PyMem_RawMalloc(STACK_INITIAL * sizeof *ts->stack);
        if (ts->tree == NULL || ts->stack == NULL) {
            PyMem_RawFree(ts->stack);
            PyMem_RawFree(ts);
            ap_err_set(AP_ENOMEM, "out of memory");
            return NULL;
        }
        ts->cap = STACK_INITIAL;
        ts->ident = ident;
        ts->thread_serial = serial;
        ts->next = t->threads_list;
        t->threads_list = ts;
    }
    ts->depth = 0;
    if (!ts->named)
        ts->named = apext_thread_label(t->prof, ts->tree, t->threads, ts->ident, t->k_thread);
    tls_ts = ts;
    tls_gen = generation;
    return ts;
}

static inline lstate *lstate_get(LineTracerObject *t) {
    if (tls_gen == generation && tls_ts != NULL)
        return tls_ts;
    return lstate_new(t);
}

/* The node array of target rec in thread ts, made at the target's first
 * event in the thread.  NULL on error (ap_err set). */
static ap_node **target_nodes(lstate *ts, const line_rec *rec) {
    if (rec->index < ts->nodes_cap && ts->nodes[rec->index] != NULL)
        return ts->nodes[rec->index];
    if (rec->index >= ts->nodes_cap) {
        size_t cap = ts->nodes_cap ? ts->nodes_cap : 8;
        while (cap <= rec->index)
            cap *= 2;
        ap_node ***n = PyMem_RawRealloc(ts->nodes, cap * sizeof *n);
        if (n == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            return NULL;
        }
        memset(n + ts->nodes_cap, 0, (cap - ts->nodes_cap) * sizeof *n);
        ts->nodes = n;
        ts->nodes_cap = cap;
    }
    ap_node **arr = PyMem_RawCalloc((size_t)rec->nlines + 1, sizeof *arr);
    if (arr == NULL) {
        ap_err_set(AP_ENOMEM, "out of memory");
        return NULL;
    }
    arr[0] = ap_tree_child(ts->tree, ap_tree_root(ts->tree), rec->frame);
    if (arr[0] == NULL) {
        PyMem_RawFree(arr);
        return NULL;
    }
    ts->nodes[rec->index] = arr;
    return arr;
}

/* The node of line lineno of frame e, made at its first hit; NULL when the
 * code has no such line or on error (ap_err set). */
static inline ap_node *line_node(lstate *ts, lframe *e, int lineno) {
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
        e->charged += d;
    }
    e->t_line = now;
}

/* Close the top frame of ts at now. */
static inline void close_top(lstate *ts, uint64_t now) {
    lframe *e = &ts->stack[--ts->depth];
    charge(e, now);
    uint64_t el = now > e->t0 ? now - e->t0 : 0;
    e->nodes[0]->m[AP_M_TOTAL_NS] += el;
    e->nodes[0]->m[AP_M_SELF_NS] += el > e->charged ? el - e->charged : 0;
}

/* A target frame starts (start = 1) or resumes (start = 0).  Returns the
 * pushed frame or NULL (failure noted). */
static lframe *on_start(LineTracerObject *t, lstate *ts, const line_rec *rec, const void *code,
                        const void *fkey, int start, uint64_t now) {
    if (ts->depth == ts->cap) {
        lframe *s = PyMem_RawRealloc(ts->stack, 2 * ts->cap * sizeof *s);
        if (s == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            hook_fail(t, "stack");
            return NULL;
        }
        ts->stack = s;
        ts->cap *= 2;
    }
    ap_node **nodes = target_nodes(ts, rec);
    if (nodes == NULL) {
        hook_fail(t, "tree");
        return NULL;
    }
    if (!ts->named && nodes[0]->m[AP_M_CALLS] == 0)   /* threads register late: retry on new nodes */
        ts->named = apext_thread_label(t->prof, ts->tree, t->threads, ts->ident, t->k_thread);
    lframe *e = &ts->stack[ts->depth++];
    e->code = code;
    e->rec = rec;
    e->nodes = nodes;
    e->line = NULL;
    e->lineno = 0;
    e->t0 = e->t_line = now;
    e->charged = 0;
    if (start)
        nodes[0]->m[AP_M_CALLS]++;
    if (!rec->genlike)
        return e;
    uint64_t key = (uint64_t)(uintptr_t)fkey;
    if (start) {   /* a new frame may reuse the address of a finished one */
        ap_map_remove(&t->susp_line, key);
        ap_map_remove(&t->susp_time, key);
        return e;
    }
    uint64_t *line = ap_map_get(&t->susp_line, key);
    if (line != NULL) {
        e->lineno = (int)*line;
        e->line = e->lineno ? line_node(ts, e, e->lineno) : NULL;
        ap_map_remove(&t->susp_line, key);
    }
    uint64_t *since = ap_map_get(&t->susp_time, key);
    if (since != NULL) {
        uint64_t w = now > *since ? now - *since : 0;
        ap_map_remove(&t->susp_time, key);
        nodes[0]->m[AP_M_AWAIT_NS] += w;
        if (e->line != NULL)
            e->line->m[AP_M_AWAIT_NS] += w;
    }
    return e;
}

/* The frame of code on ts's stack (frames above it, whose exit was not
 * seen, are closed), or NULL if it is not among the top UNWIND_SEARCH. */
static inline lframe *find_frame(lstate *ts, const void *code, uint64_t now) {
    size_t d = ts->depth;
    if (d > 0 && ts->stack[d - 1].code == code)
        return &ts->stack[d - 1];
    for (size_t i = d; i-- > 0 && d - i <= UNWIND_SEARCH;) {
        if (ts->stack[i].code == code) {
            while (ts->depth > i + 1)
                close_top(ts, now);
            return &ts->stack[i];
        }
    }
    return NULL;
}

static inline void on_line_event(LineTracerObject *t, const line_rec *rec, const void *code,
                           const void *fkey, int lineno, uint64_t now) {
    lstate *ts = lstate_get(t);
    if (ts == NULL) {
        hook_fail(t, "thread state");
        return;
    }
    lframe *e = find_frame(ts, code, now);
    if (e == NULL) {   /* a frame that was running when start() was called */
        e = on_start(t, ts, rec, code, fkey, 0, now);
        if (e == NULL)
            return;
    }
    charge(e, now);
    ap_node *n = line_node(ts, e, lineno);
    if (n == NULL && lineno >= e->rec->first && lineno < e->rec->first + e->rec->nlines &&
        e->rec->line_frames[lineno - e->rec->first] != AP_NONE)
        hook_fail(t, "tree");
    if (n != NULL)
        n->m[AP_M_HITS]++;
    e->line = n;
    e->lineno = lineno;
}

/* A target frame returns or unwinds (yield = 0) or suspends (yield = 1). */
static inline void on_leave(LineTracerObject *t, const line_rec *rec, const void *code,
                           const void *fkey, int yield, uint64_t now) {
    lstate *ts = lstate_get(t);
    if (ts == NULL) {
        hook_fail(t, "thread state");
        return;
    }
    lframe *e = find_frame(ts, code, now);
    if (e == NULL)
        return;
    int lineno = e->lineno;
    close_top(ts, now);
    if (yield && rec->genlike) {
        uint64_t key = (uint64_t)(uintptr_t)fkey;
        if (ap_map_put(&t->susp_line, key, (uint64_t)lineno) != 0 ||
            (rec->awaits && ap_map_put(&t->susp_time, key, now) != 0))
            hook_fail(t, "suspension map");
    }
}

/* Close every open frame of every thread at now (stop()). */
static void flush_all(LineTracerObject *t) {
    uint64_t now = ap_clock_now_ns();
    for (lstate *ts = t->threads_list; ts != NULL; ts = ts->next)
        while (ts->depth > 0)
            close_top(ts, now);
}

/* The running tracer's record of code, or NULL when code is not one of its
 * targets. */
static inline const line_rec *target_rec(LineTracerObject *t, PyObject *code) {
    const line_rec *rec = apext_code_get(code, APEXT_SLOT_LINES);
    return rec != NULL && rec->serial == t->serial ? rec : NULL;
}

#if AP_MONITORING
/* ---- 3.12+: sys.monitoring, local events on the targets ------------------------------------ */

enum { EV_START, EV_RESUME, EV_RETURN, EV_YIELD, EV_UNWIND, EV_THROW };

static PyObject *mon_event(PyObject *const *a, Py_ssize_t n, int ev) {
    LineTracerObject *t = active;
    if (t == NULL || n < 1)
        Py_RETURN_NONE;
    const line_rec *rec = target_rec(t, a[0]);
    if (rec == NULL)
        Py_RETURN_NONE;
    uint64_t now = ap_clock_now_ns();
    const void *fkey = rec->genlike ? apext_current_iframe() : NULL;
    switch (ev) {
    case EV_START:
    case EV_RESUME:
    case EV_THROW: {
        lstate *ts = lstate_get(t);
        if (ts == NULL)
            hook_fail(t, "thread state");
        else
            on_start(t, ts, rec, a[0], fkey, ev == EV_START, now);
        break;
    }
    default:
        on_leave(t, rec, a[0], fkey, ev == EV_YIELD, now);
        break;
    }
    Py_RETURN_NONE;
}

/* LINE: (code, line_number) */
static PyObject *cb_line(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    LineTracerObject *t = active;
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
    on_line_event(t, rec, a[0], rec->genlike ? apext_current_iframe() : NULL, (int)lineno, now);
    Py_RETURN_NONE;
}

#define CB(name, ev)                                                            \
    static PyObject *name(PyObject *m, PyObject *const *a, Py_ssize_t n) {      \
        (void)m;                                                                \
        return mon_event(a, n, ev);                                             \
    }
CB(cb_start, EV_START)
CB(cb_resume, EV_RESUME)
CB(cb_return, EV_RETURN)
CB(cb_yield, EV_YIELD)
CB(cb_unwind, EV_UNWIND)
CB(cb_throw, EV_THROW)
#undef CB

typedef struct mon_event_def {
    const char *name;   /* attribute of sys.monitoring.events */
    PyMethodDef def;
    int local;          /* set on the targets; else global */
} mon_event_def;

static mon_event_def mon_events[] = {
    {"LINE", {"_on_line", (PyCFunction)(void (*)(void))cb_line, METH_FASTCALL, NULL}, 1},
    {"PY_START", {"_on_line_start", (PyCFunction)(void (*)(void))cb_start, METH_FASTCALL, NULL}, 1},
    {"PY_RESUME", {"_on_line_resume", (PyCFunction)(void (*)(void))cb_resume, METH_FASTCALL, NULL}, 1},
    {"PY_RETURN", {"_on_line_return", (PyCFunction)(void (*)(void))cb_return, METH_FASTCALL, NULL}, 1},
    {"PY_YIELD", {"_on_line_yield", (PyCFunction)(void (*)(void))cb_yield, METH_FASTCALL, NULL}, 1},
    {"PY_UNWIND", {"_on_line_unwind", (PyCFunction)(void (*)(void))cb_unwind, METH_FASTCALL, NULL}, 0},
    {"PY_THROW", {"_on_line_throw", (PyCFunction)(void (*)(void))cb_throw, METH_FASTCALL, NULL}, 0},
};
#define N_MON_EVENTS (sizeof mon_events / sizeof mon_events[0])

static const char *const mon_event_names[] = {"LINE", "PY_START", "PY_RESUME", "PY_RETURN",
                                              "PY_YIELD", "PY_UNWIND", "PY_THROW", NULL};

static long local_mask = -1;

static int set_local(int tool, PyObject *code, long mask) {
    PyObject *mon = PySys_GetObject("monitoring");
    PyObject *r = mon ? PyObject_CallMethod(mon, "set_local_events", "iOl", tool, code, mask) : NULL;
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int install_hooks(LineTracerObject *t) {
    PyObject *mon = PySys_GetObject("monitoring");   /* borrowed */
    int tool = apext_mon_use_tool("apiprof lines");
    if (tool < 0)
        return -1;
    t->tool_id = tool;
    PyObject *events = PyObject_GetAttrString(mon, "events");
    if (events == NULL)
        goto err;
    long global = 0, local = 0;
    for (size_t i = 0; i < N_MON_EVENTS; i++) {
        PyObject *ev = PyObject_GetAttrString(events, mon_events[i].name);
        if (ev == NULL)
            goto err;
        long bit = PyLong_AsLong(ev);
        PyObject *fn = PyCFunction_New(&mon_events[i].def, NULL);
        PyObject *r = fn ? PyObject_CallMethod(mon, "register_callback", "iOO", tool, ev, fn) : NULL;
        Py_DECREF(ev);
        Py_XDECREF(fn);
        if (r == NULL)
            goto err;
        Py_DECREF(r);
        if (mon_events[i].local)
            local |= bit;
        else
            global |= bit;
    }
    Py_CLEAR(events);
    local_mask = local;
    PyObject *r = PyObject_CallMethod(mon, "set_events", "il", tool, global);
    if (r == NULL)
        goto err;
    Py_DECREF(r);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(t->codes); i++)
        if (set_local(tool, PyList_GET_ITEM(t->codes, i), local) < 0)
            goto err;
    return 0;
err:
    Py_XDECREF(events);
    {
        AP_SAVE_EXC(exc);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(t->codes); i++)
            if (set_local(tool, PyList_GET_ITEM(t->codes, i), 0) < 0)
                PyErr_Clear();
        AP_RESTORE_EXC(exc);
    }
    apext_mon_free_tool(tool, mon_event_names);
    return -1;
}

static void remove_hooks(LineTracerObject *t) {
    AP_SAVE_EXC(exc);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(t->codes); i++)
        if (set_local(t->tool_id, PyList_GET_ITEM(t->codes, i), 0) < 0)
            PyErr_Clear();
    AP_RESTORE_EXC(exc);
    apext_mon_free_tool(t->tool_id, mon_event_names);
}

/* A code added while running gets its local events now. */
static int hook_code(LineTracerObject *t, PyObject *code) {
    return set_local(t->tool_id, code, local_mask);
}

#else
/* ---- 3.11: the C trace function of every thread ---------------------------------------------- */

static PyObject *g_bootstrap;   /* _core._thread_trace_bootstrap; strong */

static int trace_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    LineTracerObject *t = active;
    if (t == NULL || (PyObject *)t != obj)
        return 0;
    PyCodeObject *co = PyFrame_GetCode(frame);
    const line_rec *rec = target_rec(t, (PyObject *)co);
    Py_DECREF(co);   /* the frame keeps it alive */
    if (rec == NULL)
        return 0;
    uint64_t now = ap_clock_now_ns();
    switch (what) {
    case PyTrace_LINE:
        on_line_event(t, rec, co, frame, PyFrame_GetLineNumber(frame), now);
        break;
    case PyTrace_CALL: {
        lstate *ts = lstate_get(t);
        if (ts == NULL) {
            hook_fail(t, "thread state");
            break;
        }
        int start = !rec->genlike || PyFrame_GetLasti(frame) == rec->start_lasti;
        on_start(t, ts, rec, co, frame, start, now);
        break;
    }
    case PyTrace_RETURN: {
        int yield = rec->genlike && arg != NULL &&
                    apext_is_yield(rec->code_bytes, PyFrame_GetLasti(frame));
        on_leave(t, rec, co, frame, yield, now);
        break;
    }
    default:
        break;
    }
    return 0;
}

/* Installed with threading.settrace(): runs once in each thread started
 * while the LineTracer runs, replaces itself with the C trace function and
 * passes the event on. */
static PyObject *thread_bootstrap(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    LineTracerObject *t = active;
    if (t == NULL) {
        PyEval_SetTrace(NULL, NULL);
        Py_RETURN_NONE;
    }
    PyEval_SetTrace(trace_hook, (PyObject *)t);
    if (n == 3 && PyFrame_Check(a[0]) && PyUnicode_Check(a[1]) &&
        PyUnicode_CompareWithASCIIString(a[1], "call") == 0)
        trace_hook((PyObject *)t, (PyFrameObject *)a[0], PyTrace_CALL, a[2]);
    Py_RETURN_NONE;
}

static PyMethodDef bootstrap_def = {
    "_thread_trace_bootstrap", (PyCFunction)(void (*)(void))thread_bootstrap, METH_FASTCALL, NULL};

static int set_threading_trace(PyObject *fn) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(threading, "settrace", "O", fn);
    Py_DECREF(threading);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int install_hooks(LineTracerObject *t) {
    if (apext_opcodes_init() < 0)
        return -1;
    PyThreadState *me = PyThreadState_Get();
    if (me->c_tracefunc != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "apiprof: another tracer is active in this thread (sys.settrace: a "
                        "debugger or coverage); stop it first");
        return -1;
    }
    if (g_bootstrap == NULL && (g_bootstrap = PyCFunction_New(&bootstrap_def, NULL)) == NULL)
        return -1;
    if (set_threading_trace(g_bootstrap) < 0)
        return -1;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        if (_PyEval_SetTrace(ts, trace_hook, (PyObject *)t) < 0)
            PyErr_Clear();
    }
    return 0;
}

static void remove_hooks(LineTracerObject *t) {
    (void)t;
    AP_SAVE_EXC(exc);
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        if (ts->c_tracefunc == trace_hook && _PyEval_SetTrace(ts, NULL, NULL) < 0)
            PyErr_Clear();
    }
    if (set_threading_trace(Py_None) < 0)
        PyErr_Clear();
    AP_RESTORE_EXC(exc);
}

static int hook_code(LineTracerObject *t, PyObject *code) {
    (void)t;
    (void)code;
    return 0;
}
#endif

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
    t->prof = ap_prof_new();
    t->codes = PyList_New(0);
    if (t->prof == NULL || t->codes == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    t->serial = next_serial++;
    t->threads = threads != Py_None ? Py_NewRef(threads) : NULL;
    t->k_thread = ap_prof_intern(t->prof, "thread", 6);
    t->k_thread_id = ap_prof_intern(t->prof, "thread_id", 9);
    if (t->k_thread == AP_NONE || t->k_thread_id == AP_NONE ||
        ap_prof_meta_set(t->prof, "clock", "wall") != 0 ||
        ap_prof_meta_set(t->prof, "tool", "apiprof lines") != 0 ||
        ap_prof_meta_set(t->prof, "python", Py_GetVersion()) != 0) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
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
    if (t->running) {
        if (rec_fill(t, code, (uint32_t)(PyList_GET_SIZE(t->codes) - 1)) < 0 ||
            hook_code(t, code) < 0) {
            PySequence_DelItem(t->codes, PyList_GET_SIZE(t->codes) - 1);
            return NULL;
        }
    } else {
        /* Intern the frames now, so that a target never run still shows. */
        ap_frame f = {apext_intern(t->prof, ((PyCodeObject *)code)->co_name),
                      apext_intern(t->prof, ((PyCodeObject *)code)->co_qualname),
                      apext_intern(t->prof, ((PyCodeObject *)code)->co_filename),
                      (uint32_t)((PyCodeObject *)code)->co_firstlineno, 0, AP_FRAME_PYTHON};
        if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE ||
            ap_prof_frame_intern(t->prof, &f) == AP_NONE)
            return PyErr_NoMemory();
    }
    Py_RETURN_TRUE;
}

static PyObject *lt_start(LineTracerObject *t, PyObject *Py_UNUSED(a)) {
    if (active == t)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: this line profiler is already running");
    if (active != NULL)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: another apiprof line profiler is running");
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(t->codes); i++)
        if (rec_fill(t, PyList_GET_ITEM(t->codes, i), (uint32_t)i) < 0)
            return NULL;
    if (ap_prof_meta_get(t->prof, "started") == NULL)
        apext_meta_time(t->prof, "started");
    generation++;
    active = t;
    t->running = 1;
    if (install_hooks(t) < 0) {
        active = NULL;
        t->running = 0;
        return NULL;
    }
    Py_INCREF(t);   /* the hooks hold it while running */
    Py_RETURN_NONE;
}

static PyObject *lt_stop(LineTracerObject *t, PyObject *Py_UNUSED(a)) {
    if (active != t)
        Py_RETURN_NONE;
    remove_hooks(t);
    flush_all(t);
    active = NULL;
    t->running = 0;
    generation++;
    ap_map_clear(&t->susp_time);
    ap_map_clear(&t->susp_line);
    apext_meta_time(t->prof, "stopped");
    if (ap_prof_finish(t->prof) != 0)
        apext_fail_note(&t->fail, "finish");
    Py_DECREF(t);
    if (apext_fail_warn(&t->fail) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *lt_profile(LineTracerObject *t, PyObject *Py_UNUSED(a)) {
    return apext_profile_wrap(apext_state_of_type(Py_TYPE(t)), (PyObject *)t, t->prof);
}

static PyObject *lt_get_running(LineTracerObject *t, void *Py_UNUSED(c)) {
    return PyBool_FromLong(t->running);
}

static PyObject *lt_get_tool_id(LineTracerObject *t, void *Py_UNUSED(c)) {
    if (!t->running || AP_MONITORING == 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(t->tool_id);
}

static PyObject *lt_get_codes(LineTracerObject *t, void *Py_UNUSED(c)) {
    return PyList_GetSlice(t->codes, 0, PyList_GET_SIZE(t->codes));
}

static int lt_traverse(LineTracerObject *t, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->codes);
    Py_VISIT(t->threads);
    return 0;
}

static int lt_clear(LineTracerObject *t) {
    Py_CLEAR(t->codes);
    Py_CLEAR(t->threads);
    return 0;
}

static void lt_dealloc(LineTracerObject *t) {
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    lt_clear(t);
    for (lstate *ts = t->threads_list; ts != NULL;) {
        lstate *next = ts->next;
        for (size_t i = 0; i < ts->nodes_cap; i++)
            PyMem_RawFree(ts->nodes[i]);
        PyMem_RawFree(ts->nodes);
        PyMem_RawFree(ts->stack);
        PyMem_RawFree(ts);
        ts = next;
    }
    ap_map_free(&t->susp_time);
    ap_map_free(&t->susp_line);
    ap_prof_free(t->prof);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyMethodDef lt_methods[] = {
    {"add_code", (PyCFunction)lt_add_code, METH_O,
     "add_code(code) -> bool\n\nMake a code object a target (also while running); False if it "
     "already was one."},
    {"start", (PyCFunction)lt_start, METH_NOARGS, "start()\n\nStart recording the targets' lines."},
    {"stop", (PyCFunction)lt_stop, METH_NOARGS,
     "stop()\n\nStop recording and close every open frame; a no-op when not running."},
    {"profile", (PyCFunction)lt_profile, METH_NOARGS,
     "profile() -> Profile\n\nThe recorded profile (shares the line tracer's data)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lt_getset[] = {
    {"running", (getter)lt_get_running, NULL, "Whether the hooks are installed.", NULL},
    {"tool_id", (getter)lt_get_tool_id, NULL,
     "The sys.monitoring tool id in use (3.12+, while running), else None.", NULL},
    {"codes", (getter)lt_get_codes, NULL, "The target code objects, in the order added.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot lt_slots[] = {
    {Py_tp_new, lt_new},
    {Py_tp_dealloc, lt_dealloc},
    {Py_tp_traverse, lt_traverse},
    {Py_tp_clear, lt_clear},
    {Py_tp_methods, lt_methods},
    {Py_tp_getset, lt_getset},
    {Py_tp_doc, "LineTracer(*, threads=None)\n\nThe line profiler of apiprof (use "
                "apiprof.LineProfiler)."},
    {0, NULL},
};

static PyType_Spec lt_spec = {
    .name = "apiprof._core.LineTracer",
    .basicsize = sizeof(LineTracerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = lt_slots,
};

int apext_lines_init(PyObject *module, apext_state *st) {
    if (apext_code_init(APEXT_SLOT_LINES, line_rec_free) < 0)
        return -1;
    st->line_tracer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &lt_spec, NULL);
    if (st->line_tracer_type == NULL)
        return -1;
    return PyModule_AddType(module, st->line_tracer_type);
}

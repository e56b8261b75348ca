/* tracer.c -- apiprof._core.Tracer: the exact function tracer (sys.monitoring on 3.12+, the C profile hook on 3.11) feeding ap_prof trees.
 *
 * Per event: one clock read, the code object's record from its co_extra slot
 * (frame id and filter verdict, computed once per code object and profile),
 * the thread's state through a thread-local pointer, and a push or pop on
 * that thread's shadow stack whose entries point at calling-context nodes.
 * No allocation in steady state (nodes and stack slots are only allocated
 * the first time a call path or depth is seen), no lock, no Python call, no
 * exception: a hook that fails records the first error and the profile is
 * reported incomplete at stop().
 *
 * Generators and coroutines: only a start (PY_START; on 3.11 the call event
 * at the code's first RESUME) counts as a call.  A yield pops the frame like
 * a return but counts nothing; a resume (or throw) pushes it again under the
 * current stack top.  For coroutines and async generators the time between
 * the yield and the resume is await time, charged as AP_M_AWAIT_NS to the
 * node of the resumed frame, which is the frame that awaited; every frame of
 * a suspended await chain gets it.  Suspension times are kept in a map keyed
 * by the interpreter frame (3.12+) or frame object (3.11), which lives as
 * long as the coroutine.
 *
 * Context scope (Tracer(context=(var, mark))): events are recorded only while
 * the current contextvars context holds mark in var, i.e. in the context that
 * set it and in contexts copied from it later (asyncio child tasks, anyio /
 * asyncio.to_thread worker calls): one request's work while others run on the
 * same loop.  The verdict is cached per thread, keyed by the thread state's
 * current context object and its context_ver (bumped at every Context.run
 * enter and exit) and the tracer generation; PyContextVar_Get runs only when
 * one of them changed, i.e. about once per task step.  Events out of scope
 * are dropped before touching the shadow stack, so the stack holds only
 * in-scope frames: a frame's enter and exit events are seen in the same
 * context (Context.run enters and leaves around whole calls, and its own
 * CALL/C_RETURN fire outside it), so pushes and pops stay paired.
 *
 * Everything here is protected by the GIL; only one Tracer runs at a time. */
#include "hook.h"
#include "labels.h"
#include "timeline.h"

#include <string.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_map.h"
#include "ap_prof.h"

#define STACK_INITIAL 128
#define UNWIND_SEARCH 16   /* how deep a pop looks for its frame */

/* ---- per-code record (co_extra) ------------------------------------------------- */

typedef struct code_rec {
    uint64_t serial;        /* profile the rest was computed for */
    ap_frame_id frame;
    uint8_t excluded;
    uint8_t genlike;        /* generator, coroutine or async generator */
    uint8_t awaits;         /* coroutine or async generator: suspensions are awaits */
    int start_lasti;        /* 3.11: byte offset of the RESUME that starts the code */
    PyObject *code_bytes;   /* 3.11, generator-like code: co_code, to tell yields apart */
} code_rec;

static void code_rec_free(void *p) {
    code_rec *r = p;
    if (r != NULL) {
        Py_XDECREF(r->code_bytes);
        PyMem_RawFree(r);
    }
}

/* ---- per-thread state ----------------------------------------------------------- */

typedef struct tframe {
    ap_node *node;
    uint64_t t0;          /* clock when pushed or resumed */
    uint64_t child;       /* time of callees while this frame was on the stack */
    const void *key;      /* code object or PyMethodDef */
} tframe;

typedef struct tstate {
    ap_tree *tree;
    tframe *stack;        /* stack[0] is the root of tree */
    size_t depth, cap;
    unsigned long ident;
    uint64_t thread_serial;   /* tls_thread_serial of its thread */
    int named;
    struct tstate *next;
} tstate;

typedef struct TracerObject {
    PyObject_HEAD
    ap_prof *prof;        /* owned */
    uint64_t serial;
    int cpu_clock, builtins, running, tool_id;
    PyObject *include;    /* tuple of str */
    PyObject *exclude;    /* tuple of str */
    PyObject *threads;    /* dict ident -> threading.Thread (threading._active), or NULL */
    PyObject *scope_var;  /* contextvars.ContextVar of the context scope, or NULL: all events */
    PyObject *scope_mark; /* the value of scope_var that puts a context in scope */
    tstate *threads_list;
    ap_str_id k_thread, k_thread_id, k_phase;
    ap_str_id phase;      /* label phase=<phase> of new trees; AP_NONE: no phase label */
    ap_map builtin_recs;  /* PyMethodDef* -> frame id << 1 | excluded, per serial */
    ap_map suspended;     /* frame key -> wall clock at suspension */
    apext_fail fail;      /* first failure of a hook */
    apext_labels labels;     /* route / task label trees (labels.h), off unless asked for */
    apext_timeline timeline; /* event ring (timeline.h), off unless asked for */
} TracerObject;

/* The running tracer (NULL when none) and a generation that changes at every
 * start(), so that thread-local pointers of an earlier run are not used. */
static TracerObject *active;
static uint64_t generation;
static uint64_t next_serial = 1;

static _Thread_local uint64_t tls_gen;
static _Thread_local tstate *tls_ts;

static void hook_fail(TracerObject *t, const char *what) {
    apext_fail_note(&t->fail, what);
}

/* ---- context scope ---------------------------------------------------------------- */

/* A thread's last scope verdict and what it was computed for. */
typedef struct scope_cache {
    const PyThreadState *ts;
    const PyObject *ctx;     /* ts->context */
    uint64_t ver;            /* ts->context_ver */
    uint64_t gen;            /* generation */
    int in;
} scope_cache;

static _Thread_local scope_cache tls_scope;

static inline PyThreadState *current_tstate(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

static int scope_compute(TracerObject *t, PyThreadState *ts, scope_cache *c) {
    int in = 0;
    if (ts->context != NULL) {   /* no context yet: the var is unset (and none is created) */
        PyObject *v = NULL;
        if (PyContextVar_Get(t->scope_var, NULL, &v) < 0) {
            PyErr_Clear();
            ap_err_set(AP_EINVAL, "context variable not readable");
            hook_fail(t, "scope");
        }
        in = v != NULL && v == t->scope_mark;
        Py_XDECREF(v);   /* the tracer holds a reference to mark */
    }
    c->ts = ts;
    c->ctx = ts->context;
    c->ver = ts->context_ver;
    c->gen = generation;
    c->in = in;
    return in;
}

/* Whether the current event is in the tracer's scope: always without a scope
 * var; else whether the current context holds the mark (cached, see top). */
static inline int in_scope(TracerObject *t) {
    if (t->labels.on && !apext_labels_recorded(&t->labels))   /* labels: paused context */
        return 0;
    if (t->scope_var == NULL)
        return 1;
    PyThreadState *ts = current_tstate();
    scope_cache *c = &tls_scope;
    if (c->ctx == ts->context && c->ver == ts->context_ver && c->gen == generation && c->ts == ts)
        return c->in;
    return scope_compute(t, ts, c);
}

static inline uint64_t clock_now(const TracerObject *t) {
    return t->cpu_clock ? ap_clock_thread_cpu_ns() : ap_clock_now_ns();
}

/* ---- names and filters ----------------------------------------------------------- */

#define intern_obj apext_intern

static int prefix_match(const char *s, const char *pat, int module) {
    size_t n = strlen(pat);
    if (strncmp(s, pat, n) != 0)
        return 0;
    return !module || s[n] == '\0' || s[n] == '.';
}

/* Whether pattern list pats (tuple of str) matches the module name or the
 * file.  A pattern with a '/' is a path prefix, otherwise a module prefix. */
static int patterns_match(PyObject *pats, const char *module, const char *file) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pats); i++) {
        const char *pat = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pats, i));
        if (pat == NULL) {
            PyErr_Clear();
            continue;
        }
        if (strchr(pat, '/') != NULL) {
            if (file != NULL && prefix_match(file, pat, 0))
                return 1;
        } else if (module != NULL && prefix_match(module, pat, 1)) {
            return 1;
        }
    }
    return 0;
}

static int excluded_by(TracerObject *t, const char *module, const char *file) {
    if (PyTuple_GET_SIZE(t->include) > 0 && !patterns_match(t->include, module, file))
        return 1;
    return patterns_match(t->exclude, module, file);
}

/* The module name of the code being started: __name__ of globals. */
static const char *globals_module(PyObject *globals) {
    if (globals == NULL || !PyDict_Check(globals))
        return NULL;
    PyObject *name = PyDict_GetItemString(globals, "__name__");
    if (name == NULL || !PyUnicode_Check(name))
        return NULL;
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL)
        PyErr_Clear();
    return s;
}

/* Slow path: fill rec for code co under tracer t.  globals are those of the
 * frame running co (for the module name).  0, or -1 with an ap_err set. */
static int code_rec_fill(TracerObject *t, code_rec *rec, PyCodeObject *co, PyObject *globals) {
    ap_prof *p = t->prof;
    ap_frame f = {intern_obj(p, co->co_name), intern_obj(p, co->co_qualname),
                  intern_obj(p, co->co_filename), (uint32_t)co->co_firstlineno, 0,
                  AP_FRAME_PYTHON};
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return -1;
    ap_frame_id id = ap_prof_frame_intern(p, &f);
    if (id == AP_NONE)
        return -1;
    rec->frame = id;
    rec->excluded = (uint8_t)excluded_by(t, globals_module(globals), ap_prof_str(p, f.file));
    rec->genlike = (co->co_flags & APEXT_CO_GENLIKE) != 0;
    rec->awaits = (co->co_flags & APEXT_CO_AWAITS) != 0;
    rec->start_lasti = -1;
#if !AP_MONITORING
    if (rec->genlike && rec->code_bytes == NULL) {
        PyObject *bytes = PyCode_GetCode(co);
        if (bytes == NULL) {
            PyErr_Clear();
            return ap_err_set(AP_ENOMEM, "cannot read co_code");
        }
        rec->code_bytes = bytes;
    }
    if (rec->genlike)
        rec->start_lasti = apext_first_resume(rec->code_bytes);
#endif
    rec->serial = t->serial;
    return 0;
}

/* The record of co for the running profile, or NULL (error recorded). */
static inline code_rec *code_rec_get(TracerObject *t, PyCodeObject *co, PyObject *globals) {
    code_rec *rec = apext_code_get((PyObject *)co, APEXT_SLOT_TRACE);
    if (rec != NULL && rec->serial == t->serial)
        return rec;
    if (rec == NULL) {
        rec = PyMem_RawCalloc(1, sizeof *rec);
        if (rec == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            return NULL;
        }
        if (apext_code_set((PyObject *)co, APEXT_SLOT_TRACE, rec) < 0) {
            PyMem_RawFree(rec);
            return NULL;
        }
    }
    if (code_rec_fill(t, rec, co, globals) != 0) {
        rec->serial = 0;
        return NULL;
    }
    return rec;
}

/* Record of a C callable: key (PyMethodDef*), frame and verdict; 0 when the
 * callable is not a builtin function or method descriptor, 1 when found,
 * -1 on error (recorded). */
static int builtin_rec(TracerObject *t, PyObject *callable, const void **key, ap_frame_id *frame,
                       int *excluded) {
    PyMethodDef *ml;
    PyObject *self = NULL;
    PyTypeObject *type = NULL;
    if (PyCFunction_Check(callable)) {
        ml = ((PyCFunctionObject *)callable)->m_ml;
        self = ((PyCFunctionObject *)callable)->m_self;
    } else if (Py_IS_TYPE(callable, &PyMethodDescr_Type)) {
        ml = ((PyMethodDescrObject *)callable)->d_method;
        type = ((PyMethodDescrObject *)callable)->d_common.d_type;
    } else {
        return 0;
    }
    *key = ml;
    uint64_t *v = ap_map_get(&t->builtin_recs, (uint64_t)(uintptr_t)ml);
    if (v != NULL) {
        *frame = (ap_frame_id)(*v >> 1);
        *excluded = (int)(*v & 1);
        return 1;
    }
    /* First sight: name it, as cProfile does, and apply the filters. */
    ap_prof *p = t->prof;
    PyObject *module = NULL, *qual = NULL;
    int kind;
    if (type == NULL && self != NULL && !PyModule_Check(self))
        type = PyType_Check(self) ? (PyTypeObject *)self : Py_TYPE(self);
    if (type != NULL) {
        kind = AP_FRAME_METHOD;
        module = PyObject_GetAttrString((PyObject *)type, "__module__");
        PyObject *tq = PyType_GetQualName(type);
        if (module != NULL && PyUnicode_Check(module) && tq != NULL &&
            PyUnicode_CompareWithASCIIString(module, "builtins") != 0)
            qual = PyUnicode_FromFormat("%U.%U.%s", module, tq, ml->ml_name);
        else if (tq != NULL)
            qual = PyUnicode_FromFormat("%U.%s", tq, ml->ml_name);
        Py_XDECREF(tq);
    } else {
        kind = AP_FRAME_BUILTIN;
        PyObject *m = ((PyCFunctionObject *)callable)->m_module;
        if (m != NULL && PyUnicode_Check(m))
            module = Py_NewRef(m);
        else if (self != NULL && PyModule_Check(self))
            module = PyModule_GetNameObject(self);
        if (module != NULL && PyUnicode_Check(module))
            qual = PyUnicode_FromFormat("%U.%s", module, ml->ml_name);
        else
            qual = PyUnicode_FromString(ml->ml_name);
    }
    PyErr_Clear();
    const char *mod = module != NULL && PyUnicode_Check(module) ? PyUnicode_AsUTF8(module) : NULL;
    PyErr_Clear();
    ap_frame f = {ap_prof_intern(p, ml->ml_name, strlen(ml->ml_name)), intern_obj(p, qual),
                  ap_prof_intern(p, "~", 1), 0, 0, (uint32_t)kind};
    *excluded = excluded_by(t, mod ? mod : "builtins", NULL);
    Py_XDECREF(module);
    Py_XDECREF(qual);
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return -1;
    *frame = ap_prof_frame_intern(p, &f);
    if (*frame == AP_NONE ||
        ap_map_put(&t->builtin_recs, (uint64_t)(uintptr_t)ml, (uint64_t)*frame << 1 | (uint64_t)*excluded) != 0)
        return -1;
    return 1;
}

/* ---- thread states ---------------------------------------------------------------- */

/* Label the tree of ts with its thread's name, if threading knows it yet. */
static void name_thread(TracerObject *t, tstate *ts) {
    if (!ts->named)
        ts->named = apext_thread_label(t->prof, ts->tree, t->threads, ts->ident, t->k_thread);
}

static tstate *tstate_new(TracerObject *t) {
    unsigned long ident = PyThread_get_thread_ident();
    uint64_t serial = apext_thread_serial();
    tstate *ts = NULL;
    for (tstate *x = t->threads_list; x != NULL; x = x->next) {
        if (x->thread_serial == serial) {
            ts = x;   /* a thread traced in an earlier start(): same tree */
            break;
        }
    }
    if (ts == NULL) {
        ts = PyMem_RawCalloc(1, sizeof *ts);
        if (ts == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            return NULL;
        }
        char id[32];
        int n = snprintf(id, sizeof id, "%lu", ident);
        ap_label l[2] = {{t->k_thread_id, ap_prof_intern(t->prof, id, (size_t)n)},
                         {t->k_phase, t->phase}};
        ts->tree = l[0].val == AP_NONE ? NULL
                                       : ap_prof_tree_new(t->prof, l, t->phase == AP_NONE ? 1 : 2);
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
    ts->depth = 1;
    ts->stack[0].node = ap_tree_root(ts->tree);
    ts->stack[0].t0 = 0;
    ts->stack[0].child = 0;
    ts->stack[0].key = NULL;
    name_thread(t, ts);
    tls_ts = ts;
    tls_gen = generation;
    return ts;
}

static inline tstate *tstate_get(TracerObject *t) {
    if (tls_gen == generation && tls_ts != NULL)
        return tls_ts;
    return tstate_new(t);
}

/* ---- stack operations --------------------------------------------------------------- */

static inline void push(TracerObject *t, tstate *ts, ap_frame_id frame, const void *key,
                        uint64_t now, uint64_t calls) {
    if (ts->depth == ts->cap) {
        tframe *s = PyMem_RawRealloc(ts->stack, 2 * ts->cap * sizeof *s);
        if (s == NULL) {
            ap_err_set(AP_ENOMEM, "out of memory");
            hook_fail(t, "stack");
            return;
        }
        ts->stack = s;
        ts->cap *= 2;
    }
    ap_node *parent = ts->stack[ts->depth - 1].node;
    ap_tree *tree = ts->tree;
    if (t->labels.on && (parent = apext_labels_parent(&t->labels, &tree, parent)) == NULL) {
        hook_fail(t, "labels");   /* labels: the tree of the context's route / task */
        return;
    }
    ap_node *n = ap_tree_child_fast(tree, parent, frame);
    if (n == NULL) {
        hook_fail(t, "tree");
        return;
    }
    if (!ts->named && calls && n->m[AP_M_CALLS] == 0)
        name_thread(t, ts);   /* on new nodes only: threads register late */
    n->m[AP_M_CALLS] += calls;
    tframe *e = &ts->stack[ts->depth++];
    e->node = n;
    e->t0 = now;
    e->child = 0;
    e->key = key;
}

/* Close the top frame at time now. */
static inline void pop_top(tstate *ts, uint64_t now) {
    tframe *e = &ts->stack[--ts->depth];
    uint64_t el = now >= e->t0 ? now - e->t0 : 0;
    if (active != NULL && active->timeline.on)   /* timeline: the frame's span */
        apext_timeline_span(&active->timeline, active->prof,
                            apext_labels_tree_of(&active->labels, ts->tree, e->node),
                            e->node->frame, e->t0, now);
    e->node->m[AP_M_TOTAL_NS] += el;
    e->node->m[AP_M_SELF_NS] += el > e->child ? el - e->child : 0;
    ts->stack[ts->depth - 1].child += el;
}

/* Pop the frame of key: the top one normally; frames above it (whose exit
 * was not seen) are closed too.  A frame that is not on the stack (it was
 * entered before start(), or filtered out) is ignored.  Returns the popped
 * node or NULL. */
static inline ap_node *pop(tstate *ts, const void *key, uint64_t now) {
    size_t d = ts->depth;
    if (d > 1 && ts->stack[d - 1].key == key) {
        ap_node *n = ts->stack[d - 1].node;
        pop_top(ts, now);
        return n;
    }
    for (size_t i = d - 1; i >= 1 && d - i <= UNWIND_SEARCH; i--) {
        if (ts->stack[i].key == key) {
            ap_node *n = ts->stack[i].node;
            while (ts->depth > i)
                pop_top(ts, now);
            return n;
        }
    }
    return NULL;
}

static void suspend(TracerObject *t, const void *frame_key) {
    if (ap_map_put(&t->suspended, (uint64_t)(uintptr_t)frame_key, ap_clock_now_ns()) != 0)
        hook_fail(t, "await map");
}

static void resume_await(TracerObject *t, tstate *ts, const void *frame_key) {
    uint64_t *since = ap_map_get(&t->suspended, (uint64_t)(uintptr_t)frame_key);
    if (since == NULL)
        return;
    uint64_t now = ap_clock_now_ns(), s = *since;
    ap_map_remove(&t->suspended, (uint64_t)(uintptr_t)frame_key);
    if (ts->depth > 1 && now > s)
        ts->stack[ts->depth - 1].node->m[AP_M_AWAIT_NS] += now - s;
}

/* Close every open frame of every thread at time now (stop()). */
static void flush_all(TracerObject *t) {
    uint64_t now_wall = ap_clock_now_ns();
    for (tstate *ts = t->threads_list; ts != NULL; ts = ts->next) {
        /* Other threads' CPU clocks can't be read from here: close their
         * frames with this thread's reading only in wall mode. */
        uint64_t now = t->cpu_clock ? (ts == tls_ts ? ap_clock_thread_cpu_ns() : 0) : now_wall;
        while (ts->depth > 1) {
            if (now == 0)
                ts->depth--;
            else
                pop_top(ts, now);
        }
    }
}

/* ---- event handlers shared by both hook kinds ---------------------------------------- */

/* A Python frame starts (start = 1) or resumes (start = 0). */
static inline void on_py_enter(TracerObject *t, code_rec *rec, PyCodeObject *co,
                               const void *frame_key, int start, uint64_t now) {
    tstate *ts = tstate_get(t);
    if (ts == NULL) {
        hook_fail(t, "thread state");
        return;
    }
    push(t, ts, rec->frame, co, now, (uint64_t)start);
    if (rec->awaits) {
        if (start)
            ap_map_remove(&t->suspended, (uint64_t)(uintptr_t)frame_key);
        else
            resume_await(t, ts, frame_key);
    }
}

/* A Python frame returns or unwinds (yield = 0) or suspends (yield = 1). */
static inline void on_py_exit(TracerObject *t, code_rec *rec, PyCodeObject *co,
                              const void *frame_key, int yield, uint64_t now) {
    tstate *ts = tstate_get(t);
    if (ts == NULL) {
        hook_fail(t, "thread state");
        return;
    }
    if (pop(ts, co, now) != NULL && yield && rec->awaits)
        suspend(t, frame_key);
}

static inline void on_c_enter(TracerObject *t, PyObject *callable, uint64_t now) {
    const void *key;
    ap_frame_id frame;
    int excluded;
    int r = builtin_rec(t, callable, &key, &frame, &excluded);
    if (r <= 0 || excluded) {
        if (r < 0)
            hook_fail(t, "builtin");
        return;
    }
    tstate *ts = tstate_get(t);
    if (ts == NULL) {
        hook_fail(t, "thread state");
        return;
    }
    push(t, ts, frame, key, now, 1);
}

static inline void on_c_exit(TracerObject *t, PyObject *callable, uint64_t now) {
    const void *key;
    if (PyCFunction_Check(callable))
        key = ((PyCFunctionObject *)callable)->m_ml;
    else if (Py_IS_TYPE(callable, &PyMethodDescr_Type))
        key = ((PyMethodDescrObject *)callable)->d_method;
    else
        return;
    tstate *ts = tstate_get(t);
    if (ts != NULL)
        pop(ts, key, now);
}

#if AP_MONITORING
/* ---- 3.12+: sys.monitoring callbacks ------------------------------------------------- */

static PyObject *g_disable;   /* sys.monitoring.DISABLE; strong */
/* Whether a callback returned DISABLE since the last restart_events(): the
 * locations it disabled stay disabled for the tool id, so the next start()
 * (whose filters may differ) must re-enable them. */
static int g_disabled_any;

static inline PyObject *disable(void) {
    g_disabled_any = 1;
    return Py_NewRef(g_disable);
}

#define current_iframe apext_current_iframe

/* The record of code: fast path inline; at first sight the module name
 * comes from the globals of the frame the event fires in (code's own). */
static inline code_rec *mon_rec(TracerObject *t, PyObject *code) {
    code_rec *rec = apext_code_get(code, APEXT_SLOT_TRACE);
    if (rec != NULL && rec->serial == t->serial)
        return rec;
    rec = code_rec_get(t, (PyCodeObject *)code, PyEval_GetGlobals());
    if (rec == NULL)
        hook_fail(t, "code");
    return rec;
}

/* PY_START / PY_RESUME / PY_THROW: (code, offset[, exception]) */
static PyObject *mon_enter(PyObject *code, int start, int can_disable) {
    TracerObject *t = active;
    if (t == NULL || !in_scope(t))
        Py_RETURN_NONE;
    uint64_t now = clock_now(t);
    code_rec *rec = mon_rec(t, code);
    if (rec == NULL)
        Py_RETURN_NONE;
    if (rec->excluded)
        return can_disable ? disable() : Py_NewRef(Py_None);
    on_py_enter(t, rec, (PyCodeObject *)code, rec->awaits ? current_iframe() : NULL, start, now);
    Py_RETURN_NONE;
}

static PyObject *mon_exit(PyObject *code, int yield, int can_disable) {
    TracerObject *t = active;
    if (t == NULL || !in_scope(t))
        Py_RETURN_NONE;
    uint64_t now = clock_now(t);
    code_rec *rec = mon_rec(t, code);
    if (rec == NULL)
        Py_RETURN_NONE;
    if (rec->excluded)
        return can_disable ? disable() : Py_NewRef(Py_None);
    on_py_exit(t, rec, (PyCodeObject *)code, yield && rec->awaits ? current_iframe() : NULL, yield,
               now);
    Py_RETURN_NONE;
}

static PyObject *cb_py_start(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    return n >= 1 ? mon_enter(a[0], 1, 1) : Py_NewRef(Py_None);
}

static PyObject *cb_py_resume(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    return n >= 1 ? mon_enter(a[0], 0, 1) : Py_NewRef(Py_None);
}

static PyObject *cb_py_throw(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    return n >= 1 ? mon_enter(a[0], 0, 0) : Py_NewRef(Py_None);
}

static PyObject *cb_py_return(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    return n >= 1 ? mon_exit(a[0], 0, 1) : Py_NewRef(Py_None);
}

static PyObject *cb_py_yield(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    return n >= 1 ? mon_exit(a[0], 1, 1) : Py_NewRef(Py_None);
}

static PyObject *cb_py_unwind(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    return n >= 1 ? mon_exit(a[0], 0, 0) : Py_NewRef(Py_None);
}

/* CALL: (code, offset, callable, arg0).  CALL fires for every call, Python
 * ones included, and dispatching it costs more than the rest of a traced
 * call; PY_START already sees Python functions.  So a call site that calls a
 * Python function (or a bound method of one) is disabled for this tool:
 * monomorphic Python call sites then cost nothing, and a site that calls
 * builtins keeps being watched.  The price: a builtin called later from a
 * site that has called a Python function is not recorded. */
static PyObject *cb_call(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    TracerObject *t = active;
    if (t == NULL || n < 3)
        Py_RETURN_NONE;
    PyObject *callable = a[2];
    if (PyFunction_Check(callable) ||
        (PyMethod_Check(callable) && PyFunction_Check(PyMethod_GET_FUNCTION(callable))))
        return disable();
    if (in_scope(t))
        on_c_enter(t, callable, clock_now(t));
    Py_RETURN_NONE;
}

/* C_RETURN / C_RAISE: (code, offset, callable, arg0) */
static PyObject *cb_c_exit(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    TracerObject *t = active;
    if (t != NULL && n >= 3 && in_scope(t))
        on_c_exit(t, a[2], clock_now(t));
    Py_RETURN_NONE;
}

typedef struct mon_event {
    const char *name;   /* attribute of sys.monitoring.events */
    PyMethodDef def;
    int builtin;        /* only when builtins are traced */
} mon_event;

static mon_event mon_events[] = {
    {"PY_START", {"_on_py_start", (PyCFunction)(void (*)(void))cb_py_start, METH_FASTCALL, NULL}, 0},
    {"PY_RESUME", {"_on_py_resume", (PyCFunction)(void (*)(void))cb_py_resume, METH_FASTCALL, NULL}, 0},
    {"PY_THROW", {"_on_py_throw", (PyCFunction)(void (*)(void))cb_py_throw, METH_FASTCALL, NULL}, 0},
    {"PY_RETURN", {"_on_py_return", (PyCFunction)(void (*)(void))cb_py_return, METH_FASTCALL, NULL}, 0},
    {"PY_YIELD", {"_on_py_yield", (PyCFunction)(void (*)(void))cb_py_yield, METH_FASTCALL, NULL}, 0},
    {"PY_UNWIND", {"_on_py_unwind", (PyCFunction)(void (*)(void))cb_py_unwind, METH_FASTCALL, NULL}, 0},
    {"CALL", {"_on_call", (PyCFunction)(void (*)(void))cb_call, METH_FASTCALL, NULL}, 1},
    {"C_RETURN", {"_on_c_return", (PyCFunction)(void (*)(void))cb_c_exit, METH_FASTCALL, NULL}, 1},
    {"C_RAISE", {"_on_c_raise", (PyCFunction)(void (*)(void))cb_c_exit, METH_FASTCALL, NULL}, 1},
};
#define N_MON_EVENTS (sizeof mon_events / sizeof mon_events[0])

/* The same names, for apext_mon_free_tool(). */
static const char *const mon_event_names[] = {
    "PY_START", "PY_RESUME", "PY_THROW", "PY_RETURN", "PY_YIELD", "PY_UNWIND",
    "CALL", "C_RETURN", "C_RAISE", NULL};

static int install_hooks(TracerObject *t) {
    PyObject *mon = PySys_GetObject("monitoring");   /* borrowed */
    int tool = apext_mon_use_tool("apiprof");
    if (tool < 0)
        return -1;
    t->tool_id = tool;
    PyObject *events = PyObject_GetAttrString(mon, "events");
    if (g_disable == NULL)
        g_disable = PyObject_GetAttrString(mon, "DISABLE");
    if (events == NULL || g_disable == NULL)
        goto err;
    long mask = 0;
    for (size_t i = 0; i < N_MON_EVENTS; i++) {
        if (mon_events[i].builtin && !t->builtins)
            continue;
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
        mask |= bit;
    }
    Py_DECREF(events);
    PyObject *r = PyObject_CallMethod(mon, "set_events", "il", tool, mask);
    if (r == NULL)
        goto err_tool;
    Py_DECREF(r);
    if (g_disabled_any) {
        r = PyObject_CallMethod(mon, "restart_events", NULL);
        if (r == NULL)
            goto err_tool;
        Py_DECREF(r);
        g_disabled_any = 0;
    }
    return 0;
err:
    Py_XDECREF(events);
err_tool:
    apext_mon_free_tool(tool, mon_event_names);
    return -1;
}

static int remove_hooks(TracerObject *t) {
    apext_mon_free_tool(t->tool_id, mon_event_names);
    return 0;
}

#else
/* ---- 3.11: the C profile hook on every thread ------------------------------------------ */

static PyObject *g_bootstrap;   /* _core._thread_profile_bootstrap; strong */

static int profile_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    TracerObject *t = active;
    if (t == NULL || (PyObject *)t != obj || !in_scope(t))
        return 0;
    uint64_t now = clock_now(t);
    switch (what) {
    case PyTrace_CALL:
    case PyTrace_RETURN: {
        PyCodeObject *co = PyFrame_GetCode(frame);
        code_rec *rec = apext_code_get((PyObject *)co, APEXT_SLOT_TRACE);
        if (rec == NULL || rec->serial != t->serial) {
            PyObject *globals = PyFrame_GetGlobals(frame);
            rec = code_rec_get(t, co, globals);
            Py_XDECREF(globals);
        }
        Py_DECREF(co);   /* the frame keeps it alive */
        if (rec == NULL) {
            hook_fail(t, "code");
            return 0;
        }
        if (rec->excluded)
            return 0;
        if (what == PyTrace_CALL) {
            int start = !rec->genlike || PyFrame_GetLasti(frame) == rec->start_lasti;
            on_py_enter(t, rec, co, frame, start, now);
        } else {
            int yield = 0;
            if (rec->genlike && arg != NULL)
                yield = apext_is_yield(rec->code_bytes, PyFrame_GetLasti(frame));
            on_py_exit(t, rec, co, frame, yield, now);
        }
        break;
    }
    case PyTrace_C_CALL:
        if (t->builtins)
            on_c_enter(t, arg, now);
        break;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        if (t->builtins)
            on_c_exit(t, arg, now);
        break;
    default:
        break;
    }
    return 0;
}

/* Installed with threading.setprofile(): runs once in each thread started
 * while the tracer runs, as its Python-level profile function, replaces
 * itself with the C hook and passes the event on. */
static PyObject *thread_bootstrap(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    TracerObject *t = active;
    if (t == NULL) {
        PyEval_SetProfile(NULL, NULL);
        Py_RETURN_NONE;
    }
    PyEval_SetProfile(profile_hook, (PyObject *)t);
    if (n == 3 && PyFrame_Check(a[0]) && PyUnicode_Check(a[1])) {
        static const char *const names[] = {"call", "exception", "line", "return",
                                            "c_call", "c_exception", "c_return"};
        for (int i = 0; i < 7; i++) {
            if (PyUnicode_CompareWithASCIIString(a[1], names[i]) == 0) {
                profile_hook((PyObject *)t, (PyFrameObject *)a[0], i, a[2]);
                break;
            }
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef bootstrap_def = {
    "_thread_profile_bootstrap", (PyCFunction)(void (*)(void))thread_bootstrap, METH_FASTCALL,
    NULL};

static int set_threading_profile(PyObject *fn) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(threading, "setprofile", "O", fn);
    Py_DECREF(threading);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int install_hooks(TracerObject *t) {
    if (apext_opcodes_init() < 0)
        return -1;
    PyThreadState *me = PyThreadState_Get();
    if (me->c_profilefunc != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "apiprof: another profiler is active in this thread (sys.setprofile); "
                        "stop it first");
        return -1;
    }
    if (g_bootstrap == NULL && (g_bootstrap = PyCFunction_New(&bootstrap_def, NULL)) == NULL)
        return -1;
    if (set_threading_profile(g_bootstrap) < 0)
        return -1;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        if (_PyEval_SetProfile(ts, profile_hook, (PyObject *)t) < 0)
            PyErr_Clear();
    }
    return 0;
}

static int remove_hooks(TracerObject *t) {
    (void)t;
    AP_SAVE_EXC(exc);
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        if (ts->c_profilefunc == profile_hook && _PyEval_SetProfile(ts, NULL, NULL) < 0)
            PyErr_Clear();
    }
    if (set_threading_profile(Py_None) < 0)
        PyErr_Clear();
    AP_RESTORE_EXC(exc);
    return 0;
}
#endif

/* ---- phases ------------------------------------------------------------------------------ */

/* Move thread ts to a tree labelled phase=t->phase (its other labels kept).
 * The frames open on its stack continue in the new tree under the same call
 * path, with no call counted there: a call belongs to the phase it started
 * in.  In wall-clock mode (and for the calling thread in CPU mode) they are
 * closed in the old tree at now and reopened at now, so each phase gets the
 * time spent in it; another thread's CPU clock can't be read from here, so
 * in CPU mode its open frames carry their time so far into the new phase.
 * A tree that holds nothing yet is relabelled instead.  0 / -1 (ap_err set;
 * the stack then ends at the last frame that could be moved). */
static int switch_phase(TracerObject *t, tstate *ts, uint64_t now_wall) {
    ap_tree *old = ts->tree;
    if (ap_tree_label_get(old, t->k_phase) == t->phase)
        return 0;
    int running = active == t;
    if (ap_tree_nnodes(old) == 1 && (!running || ts->depth <= 1))
        return ap_tree_label_set(old, t->k_phase, t->phase);
    ap_tree *nt = ap_prof_tree_new(t->prof, NULL, 0);
    if (nt == NULL)
        return -1;
    for (size_t i = 0; i < ap_tree_nlabels(old); i++) {
        ap_label l = ap_tree_label_at(old, i);
        if (l.key != t->k_phase && ap_tree_label_set(nt, l.key, l.val) != 0)
            return -1;
    }
    if (ap_tree_label_set(nt, t->k_phase, t->phase) != 0)
        return -1;
    ts->tree = nt;
    ts->stack[0].node = ap_tree_root(nt);
    if (!running)
        return 0;
    size_t depth = ts->depth;
    int split = !t->cpu_clock || (tls_ts == ts && tls_gen == generation);
    uint64_t now = t->cpu_clock ? (split ? ap_clock_thread_cpu_ns() : 0) : now_wall;
    if (split)
        while (ts->depth > 1)
            pop_top(ts, now);
    ts->stack[0].child = 0;
    for (size_t i = 1; i < depth; i++) {
        tframe *e = &ts->stack[i];
        ap_node *n = ap_tree_child(nt, ts->stack[i - 1].node, e->node->frame);
        if (n == NULL) {
            ts->depth = i;
            return -1;
        }
        e->node = n;
        if (split) {
            e->t0 = now;
            e->child = 0;
        }
    }
    ts->depth = depth;
    return 0;
}

/* set_phase(name): new trees get the label phase=name, and every thread
 * known so far moves to one (see switch_phase). */
static PyObject *tracer_set_phase(TracerObject *t, PyObject *name) {
    if (!PyUnicode_Check(name))
        return PyErr_Format(PyExc_TypeError, "phase must be a str, not %.100s",
                            Py_TYPE(name)->tp_name);
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (s == NULL)
        return NULL;
    if (n < 1 || n > 100)
        return PyErr_Format(PyExc_ValueError, "phase must be 1 to 100 characters, not %R", name);
    ap_str_id id = ap_prof_intern(t->prof, s, (size_t)n);
    if (id == AP_NONE)
        return PyErr_NoMemory();
    t->phase = id;
    apext_labels_phase(&t->labels);   /* labels: new label trees for the new phase */
    uint64_t now = ap_clock_now_ns();
    for (tstate *ts = t->threads_list; ts != NULL; ts = ts->next) {
        if (switch_phase(t, ts, now) != 0) {
            hook_fail(t, "phase");
            return PyErr_NoMemory();
        }
    }
    Py_RETURN_NONE;
}

static PyObject *tracer_get_phase(TracerObject *t, void *Py_UNUSED(c)) {
    if (t->phase == AP_NONE)
        Py_RETURN_NONE;
    return PyUnicode_FromString(ap_prof_str(t->prof, t->phase));
}

/* ---- the Tracer type ------------------------------------------------------------------- */

#define set_meta_time apext_meta_time

static PyObject *tracer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"clock", "builtins", "include", "exclude", "threads", "context",
                             "labels", "tasks", "timeline", NULL};
    const char *clock = "wall";
    int builtins = 1, tasks = 0;
    Py_ssize_t timeline = 0;
    PyObject *include = NULL, *exclude = NULL, *threads = Py_None, *context = Py_None;
    PyObject *labels = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$spOOOOOpn:Tracer", kwlist, &clock, &builtins,
                                     &include, &exclude, &threads, &context, &labels, &tasks,
                                     &timeline))
        return NULL;
    int cpu;
    if (strcmp(clock, "wall") == 0)
        cpu = 0;
    else if (strcmp(clock, "cpu") == 0)
        cpu = 1;
    else
        return PyErr_Format(PyExc_ValueError, "clock must be 'wall' or 'cpu', not %R",
                            PyTuple_Size(args) ? PyTuple_GET_ITEM(args, 0) : Py_None);
    PyObject *lists[2] = {include, exclude};
    for (int i = 0; i < 2; i++) {
        PyObject *l = lists[i];
        if (l == NULL || l == Py_None)
            continue;
        if (!PyTuple_Check(l))
            return PyErr_Format(PyExc_TypeError, "%s must be a tuple of str", i ? "exclude" : "include");
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(l); k++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(l, k)))
                return PyErr_Format(PyExc_TypeError, "%s must be a tuple of str",
                                    i ? "exclude" : "include");
    }
    if (threads != Py_None && !PyDict_Check(threads))
        return PyErr_Format(PyExc_TypeError, "threads must be a dict or None");
    if (context != Py_None &&
        (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 2 ||
         !PyContextVar_CheckExact(PyTuple_GET_ITEM(context, 0))))
        return PyErr_Format(PyExc_TypeError, "context must be a (ContextVar, mark) tuple or None");
    TracerObject *t = (TracerObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->prof = ap_prof_new();
    if (t->prof == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    t->serial = next_serial++;
    t->cpu_clock = cpu;
    t->builtins = builtins;
    t->include = include && include != Py_None ? Py_NewRef(include) : PyTuple_New(0);
    t->exclude = exclude && exclude != Py_None ? Py_NewRef(exclude) : PyTuple_New(0);
    t->threads = threads != Py_None ? Py_NewRef(threads) : NULL;
    if (context != Py_None) {
        t->scope_var = Py_NewRef(PyTuple_GET_ITEM(context, 0));
        t->scope_mark = Py_NewRef(PyTuple_GET_ITEM(context, 1));
    }
    t->k_thread = ap_prof_intern(t->prof, "thread", 6);
    t->k_thread_id = ap_prof_intern(t->prof, "thread_id", 9);
    t->k_phase = ap_prof_intern(t->prof, "phase", 5);
    t->phase = AP_NONE;
    if (timeline > 0 && cpu) {
        Py_DECREF(t);
        return PyErr_Format(PyExc_ValueError, "a timeline needs clock='wall'");
    }
    if (apext_labels_init(&t->labels, t->prof, labels, tasks) < 0 ||
        apext_timeline_init(&t->timeline, t->prof, timeline) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    if (t->include == NULL || t->exclude == NULL || t->k_thread == AP_NONE ||
        t->k_thread_id == AP_NONE || t->k_phase == AP_NONE || ap_prof_meta_set(t->prof, "clock", clock) != 0 ||
        ap_prof_meta_set(t->prof, "tool", "apiprof trace") != 0 ||
        ap_prof_meta_set(t->prof, "python", Py_GetVersion()) != 0) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    return (PyObject *)t;
}

static PyObject *tracer_start(TracerObject *t, PyObject *Py_UNUSED(a)) {
    if (active == t)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: this profiler is already running");
    if (active != NULL)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: another apiprof profiler is running");
    if (ap_prof_meta_get(t->prof, "started") == NULL)
        set_meta_time(t->prof, "started");
    generation++;
    apext_labels_start(&t->labels);
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

static PyObject *tracer_stop(TracerObject *t, PyObject *Py_UNUSED(a)) {
    if (active != t)
        Py_RETURN_NONE;
    remove_hooks(t);
    flush_all(t);
    active = NULL;
    t->running = 0;
    generation++;
    ap_map_clear(&t->suspended);
    set_meta_time(t->prof, "stopped");
    if (apext_timeline_note(&t->timeline, t->prof) != 0)   /* timeline: kept / dropped */
        apext_fail_note(&t->fail, "timeline");
    if (ap_prof_finish(t->prof) != 0)
        apext_fail_note(&t->fail, "finish");
    Py_DECREF(t);
    if (apext_fail_warn(&t->fail) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *tracer_profile(TracerObject *t, PyObject *Py_UNUSED(a)) {
    return apext_profile_wrap(apext_state_of_type(Py_TYPE(t)), (PyObject *)t, t->prof);
}

static PyObject *tracer_get_running(TracerObject *t, void *Py_UNUSED(c)) {
    return PyBool_FromLong(t->running);
}

static PyObject *tracer_get_tool_id(TracerObject *t, void *Py_UNUSED(c)) {
    if (!t->running || AP_MONITORING == 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(t->tool_id);
}

static int tracer_traverse(TracerObject *t, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->include);
    Py_VISIT(t->exclude);
    Py_VISIT(t->threads);
    Py_VISIT(t->scope_var);
    Py_VISIT(t->scope_mark);
    return apext_labels_traverse(&t->labels, visit, arg);
}

static int tracer_clear(TracerObject *t) {
    Py_CLEAR(t->include);
    Py_CLEAR(t->exclude);
    Py_CLEAR(t->threads);
    Py_CLEAR(t->scope_var);
    Py_CLEAR(t->scope_mark);
    apext_labels_clear(&t->labels);
    return 0;
}

static void tracer_dealloc(TracerObject *t) {
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    tracer_clear(t);
    for (tstate *ts = t->threads_list; ts != NULL;) {
        tstate *next = ts->next;
        PyMem_RawFree(ts->stack);
        PyMem_RawFree(ts);
        ts = next;
    }
    ap_map_free(&t->builtin_recs);
    ap_map_free(&t->suspended);
    apext_labels_free(&t->labels);
    apext_timeline_free(&t->timeline);
    ap_prof_free(t->prof);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyMethodDef tracer_methods[] = {
    {"start", (PyCFunction)tracer_start, METH_NOARGS,
     "start()\n\nInstall the hooks (all threads) and start recording."},
    {"stop", (PyCFunction)tracer_stop, METH_NOARGS,
     "stop()\n\nRemove the hooks and close every open frame; a no-op when not running."},
    {"profile", (PyCFunction)tracer_profile, METH_NOARGS,
     "profile() -> Profile\n\nThe recorded profile (shares the tracer's data)."},
    {"set_phase", (PyCFunction)tracer_set_phase, METH_O,
     "set_phase(name)\n\nRecord from now on into trees labelled phase=name (every thread; "
     "open frames are split at the switch)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tracer_getset[] = {
    {"running", (getter)tracer_get_running, NULL, "Whether the hooks are installed.", NULL},
    {"phase", (getter)tracer_get_phase, NULL, "The current phase label, or None.", NULL},
    {"tool_id", (getter)tracer_get_tool_id, NULL,
     "The sys.monitoring tool id in use (3.12+, while running), else None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot tracer_slots[] = {
    {Py_tp_new, tracer_new},
    {Py_tp_dealloc, tracer_dealloc},
    {Py_tp_traverse, tracer_traverse},
    {Py_tp_clear, tracer_clear},
    {Py_tp_methods, tracer_methods},
    {Py_tp_getset, tracer_getset},
    {Py_tp_doc, "Tracer(*, clock='wall', builtins=True, include=(), exclude=(), threads=None, "
                "context=None, labels=None, tasks=False, timeline=0)\n\n"
                "The exact function tracer of apiprof (use apiprof.Profiler). context=(var, mark) "
                "records only events whose current contextvars context has var set to mark. labels=(var, "
                "paused) records work whose context holds a str in var into trees labelled "
                "route=<str> (nothing while it holds paused); tasks=True labels named asyncio "
                "tasks' work task=<name>; timeline=N keeps the last N frame spans (wall clock)."},
    {0, NULL},
};

static PyType_Spec tracer_spec = {
    .name = "apiprof._core.Tracer",
    .basicsize = sizeof(TracerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tracer_slots,
};

int apext_tracer_init(PyObject *module, apext_state *st) {
    if (apext_code_init(APEXT_SLOT_TRACE, code_rec_free) < 0)
        return -1;
    st->tracer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tracer_spec, NULL);
    if (st->tracer_type == NULL)
        return -1;
    return PyModule_AddType(module, st->tracer_type);
}

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
 * The session, thread states, shadow stack, per-code records and hook
 * installation are the framework's (session.h, stack.h, code.h,
 * install.h); this file holds what only the function tracer does.
 * Everything here is protected by the GIL; only one Tracer runs at a time. */
#include "install.h"
#include "labels.h"
#include "locks.h"
#include "memory.h"
#include "stack.h"
#include "timeline.h"

#include <string.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_map.h"
#include "ap_prof.h"
#include "ap_stall.h"

/* ---- per-code record (co_extra) ------------------------------------------------- */

typedef struct code_rec {
    apext_code_info info;   /* frame, kinds; info.serial: the session it was filled for */
    uint8_t excluded;
    uint8_t loop;           /* an event loop's frame: LOOP_RUNNER or LOOP_ITERATION (stalls) */
} code_rec;

/* A direct-mapped cache in front of builtin_recs: the builtins of a hot loop
 * are found without hashing. */
#define BUILTIN_CACHE 64

typedef struct builtin_slot {
    const PyMethodDef *ml;   /* NULL: empty */
    uint64_t v;              /* as in builtin_recs */
} builtin_slot;

typedef struct TracerObject {
    PyObject_HEAD
    apext_session sess;   /* profile, thread states, failure note (as in apext_object) */
    int builtins;
    PyObject *include;    /* tuple of str */
    PyObject *exclude;    /* tuple of str */
    PyObject *scope_var;  /* contextvars.ContextVar of the context scope, or NULL: all events */
    PyObject *scope_mark; /* the value of scope_var that puts a context in scope */
    ap_map builtin_recs;  /* PyMethodDef* -> frame id << 1 | excluded, per session */
    builtin_slot builtin_cache[BUILTIN_CACHE];
    apext_labels labels;     /* route / task label trees (labels.h), off unless asked for */
    apext_timeline timeline; /* event ring (timeline.h), off unless asked for */
    int cpu_split;           /* cpu=True: thread CPU time per node beside the wall clock */
    int plain;               /* none of scope, labels, timeline, CPU split, CPU clock: the
                                events of Python frames may take the short path (3.12+) */
    uint64_t stall_ns;       /* event-loop stall threshold; 0: stalls are not detected */
    const void *loop_keys[2];  /* keys of uvloop's run_until_complete / run_forever, once seen */
    PyObject *site_code;     /* the call site of the C call being closed (3.12+: code, */
    int site_offset;         /* offset; 3.11: the calling frame), else NULL; borrowed */
    const apext_thread *gil_last; /* cpu=True: the thread of the last event (GIL waits) */
} TracerObject;

/* The shadow-stack entry with cpu=True (the session's frame_size then): the
 * thread CPU clock when the frame was entered and the CPU time of its
 * callees, for AP_M_CPU_NS (self) and AP_M_CPU_TOTAL_NS (with callees). */
typedef struct cpu_frame {
    apext_frame f;
    uint64_t cpu0;
    uint64_t cpu_child;
} cpu_frame;

_Static_assert(offsetof(TracerObject, sess) == offsetof(apext_object, sess),
               "starts as apext_object");

#define PRODUCER APEXT_PRODUCER_TRACE

/* The running tracer, or NULL. */
static inline TracerObject *running_tracer(void) {
    return (TracerObject *)apext_session_running[PRODUCER];
}

/* ---- the tracer's pushes and pops --------------------------------------------------
 * Through these two, so that labels choose the tree of a frame entered and the
 * timeline sees every frame closed (also those closed at stop(), as close_top). */

/* ---- event-loop stalls ------------------------------------------------------------
 * Two kinds of frames tell that a thread runs an event loop.  A runner runs a
 * whole loop: asyncio.Runner.run (asyncio.run), and uvloop's compiled
 * Loop.run_until_complete / run_forever where the hooks see them (3.12+).
 * An iteration frame is one turn of asyncio's pure-Python loop,
 * BaseEventLoop._run_once.  The steps of the loop (a callback, or a task step:
 * the resume of a task's coroutine up to its next yield) are the frames
 * entered right above the open iteration frame or, when the loop has none
 * (uvloop runs its turns in C), right above the innermost runner.  When a
 * step that is not the selector's wait closes after stall_ns or more, it is
 * a stall.  Every frame closed inside a step is compared with the step's
 * largest self time so far: the culprit is the frame with the most self time
 * in one call, and when it is a C call of at least CULPRIT_LINE_NS its call
 * site gives the line.
 *
 * Cost: the thread-local state exists only on a thread that runs a loop, so
 * other threads pay one pointer test per short-path exit; on the loop thread a
 * frame closed inside a step takes the short path too (stall_short_close: a
 * comparison with the step's largest self time), and only the frames that
 * end steps, turns and the loop take the full path. */

#define LOOP_RUNNER 1
#define LOOP_ITERATION 2
#define CULPRIT_LINE_NS 1000000u   /* a C call this long gets its line looked up */

typedef struct stall_thread {
    size_t runner_depth;   /* stack entries up to the innermost runner frame; 0: none */
    size_t iter_depth;     /* ... up to the open iteration frame; 0: none */
    int iterations;        /* an iteration frame ran under the runner: its steps are those */
    uint64_t max_self;     /* the culprit's self time */
    const ap_node *culprit;
    ap_tree *tree;         /* the tree the culprit ran in (its labels) */
    uint32_t line;         /* its call site's line, 0 when unknown */
    uint64_t step_t0;      /* the open step's start (its entry's t0), 0: none */
    uint64_t step_cpu0;    /* the loop thread's CPU clock when that step started */
} stall_thread;

static void stall_thread_free(void *ext) {
    PyMem_RawFree(ext);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The loop role of a Python function's frame: LOOP_RUNNER, LOOP_ITERATION
 * or 0. */
static uint8_t loop_role(const ap_prof *p, ap_frame_id frame) {
    const ap_frame *f = ap_prof_frame(p, frame);
    const char *q = ap_prof_str(p, f->qualname), *file = ap_prof_str(p, f->file);
    if (ends_with(file, "/asyncio/base_events.py") && strcmp(q, "BaseEventLoop._run_once") == 0)
        return LOOP_ITERATION;
    if (ends_with(file, "/asyncio/runners.py") && strcmp(q, "Runner.run") == 0)
        return LOOP_RUNNER;
    return 0;
}

/* A loop frame of role was just entered: the top of ts. */
static void stall_loop_enter(TracerObject *t, apext_thread *ts, int role) {
    stall_thread *st = ts->ext;
    if (st == NULL && (st = ts->ext = PyMem_RawCalloc(1, sizeof *st)) == NULL) {
        ap_err_set(AP_ENOMEM, "stalls: out of memory");
        apext_session_fail(&t->sess, "stalls");
        return;
    }
    if (role == LOOP_ITERATION) {
        st->iter_depth = ts->depth;
        st->iterations = 1;
    } else {
        st->runner_depth = ts->depth;
        st->iterations = 0;
    }
    st->culprit = NULL;
}

/* The line of the C call being closed, from its call site; 0 when unknown. */
static uint32_t site_line(TracerObject *t) {
    if (t->site_code == NULL)
        return 0;
#if AP_MONITORING
    int line = PyCode_Addr2Line((PyCodeObject *)t->site_code, t->site_offset);
#else
    int line = PyFrame_GetLineNumber((PyFrameObject *)t->site_code);
#endif
    return line > 0 ? (uint32_t)line : 0;
}

/* Whether the frame of a long step is the selector waiting for I/O (idle,
 * not a stall): SelectSelector.select, EpollSelector.select, ... */
static int stall_idle(const ap_prof *p, ap_frame_id frame) {
    const ap_frame *f = ap_prof_frame(p, frame);
    return ends_with(ap_prof_str(p, f->qualname), "Selector.select") &&
           ends_with(ap_prof_str(p, f->file), "/selectors.py");
}

static void stall_record(TracerObject *t, apext_thread *ts, stall_thread *st, uint64_t t0,
                         uint64_t el, uint64_t cpu) {
    ap_prof *p = t->sess.prof;
    ap_frame_id stack[AP_STALL_STACK_MAX];
    size_t n = 0;
    for (const ap_node *x = st->culprit; x != NULL && x->id != 0; x = x->up)
        n++;
    size_t skip = n > AP_STALL_STACK_MAX ? n - AP_STALL_STACK_MAX : 0, k = n - skip;
    const ap_node *func = NULL;
    for (const ap_node *x = st->culprit; x != NULL && x->id != 0; x = x->up) {
        if (func == NULL && ap_prof_frame(p, x->frame)->kind == AP_FRAME_PYTHON)
            func = x;   /* the Python function where the time went */
        if (skip > 0)
            skip--;
        else
            stack[--k] = x->frame;
    }
    if (func == NULL)
        return;   /* a C function called by no recorded Python frame */
    ap_frame_id ff = ap_prof_func_frame(p, func->frame);
    if (ff == AP_NONE) {
        apext_session_fail(&t->sess, "stalls");
        return;
    }
    ap_tree *tree = st->tree != NULL ? st->tree : ts->tree;
    ap_str_id thread = ap_tree_label_get(tree, t->sess.k_thread);
    ap_str_id route = t->labels.on ? ap_tree_label_get(tree, t->labels.k_route) : AP_NONE;
    ap_str_id task = t->labels.on ? ap_tree_label_get(tree, t->labels.k_task) : AP_NONE;
    ap_stall s = {t0,
                  el,
                  ff,
                  func == st->culprit || st->line == 0 ? ap_prof_frame(p, ff)->line : st->line,
                  thread == AP_NONE ? 0 : thread,
                  route == AP_NONE ? 0 : route,
                  task == AP_NONE ? 0 : task,
                  0,
                  0,
                  cpu};
    if (ap_prof_stall_add(p, &s, stack, n - (n > AP_STALL_STACK_MAX ? n - AP_STALL_STACK_MAX : 0)) != 0)
        apext_session_fail(&t->sess, "stalls");
}

/* The stack index of a loop step's entry on a loop thread: under the open iteration
 * frame, else under the runner when no iteration frame ran; 0 when none. */
static size_t stall_level(const stall_thread *st) {
    return st->iter_depth ? st->iter_depth : st->iterations ? 0 : st->runner_depth;
}

/* An entry was pushed on a loop thread: a step that starts notes the thread's CPU
 * clock, so that a stall can say how much of it the loop ran (one clock read per
 * step, on the loop thread only). */
static void stall_step_start(apext_thread *ts) {
    stall_thread *st = ts->ext;
    size_t level = stall_level(st);
    if (level == 0 || ts->depth - 1 != level || ts->ident != PyThread_get_thread_ident())
        return;
    st->step_t0 = apext_stack_at(ts, level)->t0;
    st->step_cpu0 = ap_clock_thread_cpu_ns();
}

/* The top entry of ts, on a thread running a loop, is about to close at now. */
static void stall_close(TracerObject *t, apext_thread *ts, uint64_t now) {
    stall_thread *st = ts->ext;
    size_t i = ts->depth - 1;
    if (i + 1 == st->iter_depth) {   /* a turn of the loop ends */
        st->iter_depth = 0;
        return;
    }
    if (i + 1 == st->runner_depth) {   /* the loop ends */
        ts->ext = NULL;
        stall_thread_free(st);
        return;
    }
    size_t level = stall_level(st);
    if (level == 0 || i < level)
        return;
    apext_frame *e = apext_stack_at(ts, i);
    uint64_t el = now >= e->t0 ? now - e->t0 : 0, self = el > e->child ? el - e->child : 0;
    if (st->culprit == NULL || self > st->max_self) {
        st->max_self = self;
        st->culprit = e->node;
        st->tree = t->labels.on ? apext_labels_tree_of(&t->labels, ts->tree, e->node) : ts->tree;
        st->line = self >= CULPRIT_LINE_NS ? site_line(t) : 0;
    }
    if (i != level)
        return;
    if (el >= t->stall_ns && !stall_idle(t->sess.prof, e->node->frame)) {
        uint64_t cpu = 0;   /* unknown */
        if (st->step_t0 == e->t0 && st->step_t0 != 0 && ts->ident == PyThread_get_thread_ident()) {
            uint64_t c = ap_clock_thread_cpu_ns();
            cpu = c > st->step_cpu0 ? c - st->step_cpu0 : 1;
        }
        stall_record(t, ts, st, e->t0, el, cpu);
    }
    st->culprit = NULL;
    st->max_self = 0;
    st->step_t0 = 0;
}

/* Close the top frame of ts, recording its span when a timeline is kept and
 * its CPU time with cpu=True.  Only the calling thread's CPU clock can be
 * read: frames of other threads closed at stop() get no CPU time. */
static void tracer_close_top(apext_thread *ts, uint64_t now) {
    TracerObject *t = running_tracer();
    if (t != NULL && ts->ext != NULL)
        stall_close(t, ts, now);
    if (t != NULL && t->timeline.on) {
        apext_frame *e = apext_stack_at(ts, ts->depth - 1);
        apext_timeline_span(&t->timeline, t->sess.prof,
                            apext_labels_tree_of(&t->labels, ts->tree, e->node), e->node->frame,
                            e->t0, now);
    }
    if (t != NULL && t->cpu_split && ts->ident == PyThread_get_thread_ident()) {
        cpu_frame *e = (cpu_frame *)apext_stack_at(ts, ts->depth - 1);
        uint64_t c = ap_clock_thread_cpu_ns();
        uint64_t el = c >= e->cpu0 ? c - e->cpu0 : 0;
        ts->cpu_wall = now;
        ts->cpu_at = c;
        e->f.node->m[AP_M_CPU_TOTAL_NS] += el;
        e->f.node->m[AP_M_CPU_NS] += el > e->cpu_child ? el - e->cpu_child : 0;
        if (ts->depth > 2)   /* the caller is a frame, not the root */
            ((cpu_frame *)apext_stack_at(ts, ts->depth - 2))->cpu_child += el;
    }
    apext_stack_pop_top(ts, now);
}

/* A frame entered or reopened in another tree starts its CPU count now
 * (entries are cpu_frames only with cpu=True). */
static void tracer_cpu_start(apext_thread *ts, apext_frame *e, uint64_t now) {
    cpu_frame *c = (cpu_frame *)e;
    c->cpu0 = ap_clock_thread_cpu_ns();
    c->cpu_child = 0;
    ts->cpu_wall = now;
    ts->cpu_at = c->cpu0;
}

/* The loop role of entry e (of a frame reopened after a phase switch). */
static int loop_entry_role(TracerObject *t, const apext_frame *e) {
    if (e->key == NULL)
        return 0;
    if (e->key == t->loop_keys[0] || e->key == t->loop_keys[1])
        return LOOP_RUNNER;
    if (ap_prof_frame(t->sess.prof, e->node->frame)->kind != AP_FRAME_PYTHON)
        return 0;
    code_rec *rec = apext_code_get((PyObject *)e->key, PRODUCER);
    return rec != NULL && rec->info.serial == t->sess.serial ? rec->loop : 0;
}

static void tracer_reopen(apext_thread *ts, apext_frame *e) {
    TracerObject *t = running_tracer();
    if (t != NULL && t->cpu_split && ts->ident == PyThread_get_thread_ident())
        tracer_cpu_start(ts, e, ap_clock_now_ns());
    int role = t != NULL && t->stall_ns ? loop_entry_role(t, e) : 0;
    if (role != 0) {   /* a loop frame closed at the switch goes on: as if entered now */
        size_t depth = ts->depth;
        ts->depth = (size_t)((char *)e - ts->stack) / ts->esize + 1;
        stall_loop_enter(t, ts, role);
        ts->depth = depth;
    }
}

/* Enter frame (key) on ts: into the tree of the current labels when they are on. */
static inline void tracer_enter(TracerObject *t, apext_thread *ts, ap_frame_id frame,
                                const void *key, uint64_t now, uint64_t calls) {
    ap_node *n;
    if (!t->labels.on) {
        n = apext_stack_enter(&t->sess, ts, frame, key, now, calls);
    } else {
        ap_tree *tree = ts->tree;
        ap_node *parent = apext_labels_parent(&t->labels, &tree, apext_stack_top_node(ts));
        if (parent == NULL) {
            apext_session_fail(&t->sess, "labels");
            return;
        }
        n = apext_stack_enter_at(&t->sess, ts, tree, parent, frame, key, now, calls);
    }
    if (t->cpu_split && n != NULL)
        tracer_cpu_start(ts, apext_stack_at(ts, ts->depth - 1), now);
    if (ts->ext != NULL && n != NULL)
        stall_step_start(ts);
}

/* Whether the calling thread's current labels are recorded (not paused). */
static inline int in_scope_labels(TracerObject *t) {
    return apext_labels_recorded(&t->labels);
}

static inline ap_node *tracer_exit(TracerObject *t, apext_thread *ts, const void *key,
                                   uint64_t now) {
    if (t->timeline.on || t->cpu_split || ts->ext != NULL)
        return apext_stack_exit_with(ts, key, now, tracer_close_top);
    return apext_stack_exit(ts, key, now);
}

void apext_tracer_count_request(void) {
    TracerObject *t = running_tracer();
    if (t == NULL || !t->labels.on || !in_scope_labels(t))
        return;
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    ap_tree *tree = ts->tree;
    if (apext_labels_parent(&t->labels, &tree, ap_tree_root(ts->tree)) == NULL) {
        apext_session_fail(&t->sess, "labels");
        return;
    }
    if (tree != ts->tree)   /* a route (or task) label tree: the request starts there */
        ap_tree_root(tree)->m[AP_M_CALLS]++;
}

void apext_tracer_route_latency(uint64_t ns) {
    TracerObject *t = running_tracer();
    if (t == NULL || !t->labels.on || !in_scope_labels(t) || apext_labels_tls.route == AP_NONE)
        return;
    ap_hist *h = ap_prof_latency(t->labels.prof, apext_labels_tls.route);
    if (h == NULL) {
        apext_session_fail(&t->sess, "route latency");
        return;
    }
    ap_hist_record(h, ns);
}

/* ---- context scope ---------------------------------------------------------------- */

/* A thread's last scope verdict and what it was computed for. */
typedef struct scope_cache {
    const PyThreadState *ts;
    const PyObject *ctx;     /* ts->context */
    uint64_t ver;            /* ts->context_ver */
    uint64_t gen;            /* the session generation */
    int in;
} scope_cache;

static APEXT_TLS scope_cache tls_scope;

static int scope_compute(TracerObject *t, PyThreadState *ts, scope_cache *c) {
    int in = 0;
    if (ts->context != NULL) {   /* no context yet: the var is unset (and none is created) */
        PyObject *v = NULL;
        if (PyContextVar_Get(t->scope_var, NULL, &v) < 0) {
            PyErr_Clear();
            ap_err_set(AP_EINVAL, "context variable not readable");
            apext_session_fail(&t->sess, "scope");
        }
        in = v != NULL && v == t->scope_mark;
        Py_XDECREF(v);   /* the tracer holds a reference to mark */
    }
    c->ts = ts;
    c->ctx = ts->context;
    c->ver = ts->context_ver;
    c->gen = apext_session_generation[PRODUCER];
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
    PyThreadState *ts = apext_compat_tstate();
    scope_cache *c = &tls_scope;
    if (c->ctx == ts->context && c->ver == ts->context_ver &&
        c->gen == apext_session_generation[PRODUCER] && c->ts == ts)
        return c->in;
    return scope_compute(t, ts, c);
}

/* ---- lock waits -------------------------------------------------------------------
 * A TimedLock (locks.c) reports each acquisition that had to wait.  The wait
 * becomes a call of a "<lock wait>" frame whose file and line are the
 * acquiring line (so the function table has a row per contended line, and the
 * acquiring function's self time no longer holds the wait), entered at t0 and
 * closed at t1 like any callee; the wait rules (ap_wait.c) give it its kind,
 * lock, in AP_M_WAIT_LOCK_NS of that node and of every ancestor. */

static char lock_wait_key;   /* the key of "<lock wait>" frames on the stack */

void apext_tracer_lock_wait(uint64_t t0, uint64_t t1) {
    TracerObject *t = running_tracer();
    if (t == NULL || t->sess.cpu_clock || !in_scope(t))
        return;
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    PyFrameObject *caller = PyEval_GetFrame();   /* borrowed */
    if (ts == NULL || caller == NULL)
        return;
    ap_prof *p = t->sess.prof;
    PyCodeObject *co = PyFrame_GetCode(caller);
    ap_frame f = {ap_prof_intern(p, "<lock wait>", 11), 0,
                  apext_session_intern(p, co->co_filename),
                  (uint32_t)PyFrame_GetLineNumber(caller), 0, AP_FRAME_OTHER};
    Py_DECREF(co);
    f.qualname = f.name;
    ap_frame_id id = f.name == AP_NONE || f.file == AP_NONE ? AP_NONE : ap_prof_frame_intern(p, &f);
    if (id == AP_NONE) {
        apext_session_fail(&t->sess, "lock wait");
        return;
    }
    tracer_enter(t, ts, id, &lock_wait_key, t0, 1);
    if (apext_stack_at(ts, ts->depth - 1)->key != &lock_wait_key)
        return;   /* not entered (noted) */
    tracer_exit(t, ts, &lock_wait_key, t1); /* its kind, lock, from the wait rules (ap_wait.c) */
}

/* ---- GIL waits ---------------------------------------------------------------------
 * With cpu=True (and builtins), a thread that was running Python code and
 * whose next event finds that another thread had an event in between (the
 * GIL went to that thread and came back) waited for the GIL for the wall time
 * since its last CPU reading less the CPU time it used in that interval.
 * While its innermost frame is a Python function the thread cannot be off the
 * CPU for another reason the tracer would see: a blocking C call is a frame
 * of its own (its off-CPU time is that call's, sleep, network, lock...).  The
 * wait becomes a call of a "<gil wait>" frame (file and first line of the
 * waiting function) entered at now - wait and closed now, so the function's
 * self time leaves it out; its kind, gil, comes from the wait rules
 * (ap_wait.c).  What it also holds: time waiting for a core while other
 * threads ran (more runnable threads than cores), and off-CPU time of code the
 * tracer does not see between two events (a filtered-out function's blocking
 * call, a C slot such as a file iterator's read); what it misses: a switch
 * during which the other thread made no event (a loop without calls).
 * docs/waits.md says so. */

#define GIL_WAIT_MIN_NS 1000u   /* shorter gaps are the two clocks' skew */

static char gil_wait_key;   /* the key of "<gil wait>" frames on the stack */

static void gil_check(TracerObject *t, apext_thread *ts, uint64_t now) {
    const apext_thread *last = t->gil_last;
    t->gil_last = ts;
    if (last == ts || last == NULL || ts->cpu_wall == 0 || ts->depth < 2 || !t->builtins ||
        now <= ts->cpu_wall)
        return;
    apext_frame *top = apext_stack_at(ts, ts->depth - 1);
    ap_prof *p = t->sess.prof;
    const ap_frame *tf = ap_prof_frame(p, top->node->frame);
    if (tf == NULL || tf->kind != AP_FRAME_PYTHON || top->key == &gil_wait_key)
        return;
    uint64_t c = ap_clock_thread_cpu_ns();
    uint64_t wall = now - ts->cpu_wall, cpu = c > ts->cpu_at ? c - ts->cpu_at : 0;
    if (wall <= cpu + GIL_WAIT_MIN_NS)
        return;
    ap_str_id name = ap_prof_intern(p, "<gil wait>", 10);
    ap_frame f = {name, name, tf->file, tf->line, 0, AP_FRAME_OTHER};
    ap_frame_id id = name == AP_NONE ? AP_NONE : ap_prof_frame_intern(p, &f);
    if (id == AP_NONE) {
        apext_session_fail(&t->sess, "gil wait");
        return;
    }
    tracer_enter(t, ts, id, &gil_wait_key, now - (wall - cpu), 1);
    if (apext_stack_at(ts, ts->depth - 1)->key != &gil_wait_key)
        return;   /* not entered (noted) */
    tracer_exit(t, ts, &gil_wait_key, now);
}

/* ---- apiprof's own threads ------------------------------------------------------
 * untrace_thread(), called first thing by a thread of apiprof's own (the checkpoint
 * thread): the interpreter stops delivering its events (PyThreadState_EnterTracing:
 * sys.monitoring and the profile hook both skip a thread state that is tracing, for
 * the rest of the thread's life), and the running tracer drops the frames it had
 * opened on it (threading's bootstrap, the thread's run): never closed, they would
 * hold all of the thread's time.  Their calls are taken back. */
static PyObject *untrace_thread(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    PyThreadState_EnterTracing(PyThreadState_Get());
    TracerObject *t = running_tracer();
    if (t == NULL)
        Py_RETURN_NONE;
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    while (ts != NULL && ts->depth > 1) {
        ap_node *n = apext_stack_at(ts, --ts->depth)->node;
        if (n->m[AP_M_CALLS] > 0)
            n->m[AP_M_CALLS]--;
    }
    if (ts != NULL && ts->ext != NULL) {   /* not a loop thread after all */
        stall_thread_free(ts->ext);
        ts->ext = NULL;
    }
    Py_RETURN_NONE;
}

PyMethodDef apext_tracer_methods[] = {
    {"untrace_thread", untrace_thread, METH_NOARGS,
     "untrace_thread(): the calling thread (one of apiprof's own) is not profiled from now\n"
     "on, and the running tracer forgets the frames it had opened on it."},
    {NULL, NULL, 0, NULL},
};

/* ---- names and filters ----------------------------------------------------------- */

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
    if (apext_code_info_fill(&rec->info, &t->sess, co) != 0)
        return -1;
    ap_prof *p = t->sess.prof;
    const char *file = ap_prof_str(p, ap_prof_frame(p, rec->info.frame)->file);
    rec->excluded = (uint8_t)excluded_by(t, globals_module(globals), file);
    rec->loop = t->stall_ns != 0 ? loop_role(p, rec->info.frame) : 0;
    return 0;
}

/* The record of co for the running profile, or NULL (error to be noted). */
static code_rec *code_rec_get(TracerObject *t, PyCodeObject *co, PyObject *globals) {
    code_rec *rec = apext_code_get((PyObject *)co, PRODUCER);
    if (rec != NULL && rec->info.serial == t->sess.serial)
        return rec;
    if (rec == NULL && (rec = apext_code_new((PyObject *)co, PRODUCER, sizeof *rec)) == NULL)
        return NULL;
    return code_rec_fill(t, rec, co, globals) == 0 ? rec : NULL;
}

/* The function object of a compiled callable that is neither a builtin nor a
 * method descriptor: a Cython function (cython_function_or_method, what
 * uvloop's Loop.run_until_complete is), bare or bound as a method; else NULL.
 * Without it, the time in such a call (uvloop's whole event loop, idle
 * included) would be the self time of the Python frame that made it. */
static PyObject *compiled_function(PyObject *callable) {
    PyObject *fn = PyMethod_Check(callable) ? PyMethod_GET_FUNCTION(callable) : callable;
    const char *name = Py_TYPE(fn)->tp_name;
    size_t n = strlen(name), suffix = sizeof "cython_function_or_method" - 1;
    return n >= suffix && strcmp(name + n - suffix, "cython_function_or_method") == 0 ? fn : NULL;
}

/* Record of a compiled function (compiled_function): keyed by the function
 * object, which lives as long as its class or module (a function freed and
 * another allocated at its address would take its name).  As builtin_rec. */
static int compiled_rec(TracerObject *t, PyObject *callable, PyObject *fn, const void **key,
                        ap_frame_id *frame, int *excluded) {
    *key = fn;
    uint64_t *v = ap_map_get(&t->builtin_recs, (uint64_t)(uintptr_t)fn);
    if (v != NULL) {
        *frame = (ap_frame_id)(*v >> 1);
        *excluded = (int)(*v & 1);
        return 1;
    }
    ap_prof *p = t->sess.prof;
    PyObject *module = PyObject_GetAttrString(fn, "__module__");
    PyObject *name = module ? PyObject_GetAttrString(fn, "__name__") : NULL;
    PyObject *qual = name ? PyObject_GetAttrString(fn, "__qualname__") : NULL;
    PyObject *full = NULL;
    if (qual != NULL && PyUnicode_Check(qual) && PyUnicode_Check(module))
        full = PyUnicode_FromFormat("%U.%U", module, qual);
    PyErr_Clear();
    const char *mod = module != NULL && PyUnicode_Check(module) ? PyUnicode_AsUTF8(module) : NULL;
    PyErr_Clear();
    ap_frame f = {apext_session_intern(p, name), apext_session_intern(p, full ? full : qual),
                  ap_prof_intern(p, "~", 1), 0, 0,
                  PyMethod_Check(callable) ? AP_FRAME_METHOD : AP_FRAME_BUILTIN};
    *excluded = excluded_by(t, mod ? mod : "builtins", NULL);
    const char *fq = full != NULL ? PyUnicode_AsUTF8(full) : NULL;
    PyErr_Clear();
    if (fq != NULL && strncmp(fq, "uvloop.", 7) == 0) {   /* the loop's run frames (stalls) */
        if (ends_with(fq, ".Loop.run_until_complete"))
            t->loop_keys[0] = fn;
        else if (ends_with(fq, ".Loop.run_forever"))
            t->loop_keys[1] = fn;
    }
    Py_XDECREF(module);
    Py_XDECREF(name);
    Py_XDECREF(qual);
    Py_XDECREF(full);
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return -1;
    *frame = ap_prof_frame_intern(p, &f);
    if (*frame == AP_NONE ||
        ap_map_put(&t->builtin_recs, (uint64_t)(uintptr_t)fn, (uint64_t)*frame << 1 | (uint64_t)*excluded) != 0)
        return -1;
    return 1;
}

static int builtin_rec_slow(TracerObject *t, PyObject *callable, const void **key,
                            ap_frame_id *frame, int *excluded);

/* Record of a C callable: key (PyMethodDef*, or the function object of a
 * compiled function), frame and verdict; 0 when the callable is not a
 * builtin function, method descriptor or compiled function, 1 when found,
 * -1 on error (recorded).  Inline: a builtin met before is found in the
 * cache. */
static inline int builtin_rec(TracerObject *t, PyObject *callable, const void **key,
                              ap_frame_id *frame, int *excluded) {
    const PyMethodDef *ml;
    if (Py_IS_TYPE(callable, &PyMethodDescr_Type))
        ml = ((PyMethodDescrObject *)callable)->d_method;
    else if (Py_IS_TYPE(callable, &PyCFunction_Type) || Py_IS_TYPE(callable, &PyCMethod_Type))
        ml = ((PyCFunctionObject *)callable)->m_ml;
    else if (PyType_Check(callable))   /* a class: not a builtin function */
        return 0;
    else
        return builtin_rec_slow(t, callable, key, frame, excluded);
    const builtin_slot *slot = &t->builtin_cache[((uintptr_t)ml >> 5) % BUILTIN_CACHE];
    if (slot->ml != ml)
        return builtin_rec_slow(t, callable, key, frame, excluded);
    *key = ml;
    *frame = (ap_frame_id)(slot->v >> 1);
    *excluded = (int)(slot->v & 1);
    return 1;
}

static __attribute__((noinline)) int builtin_rec_slow(TracerObject *t, PyObject *callable,
                                                      const void **key, ap_frame_id *frame,
                                                      int *excluded) {
    PyMethodDef *ml;
    PyObject *self = NULL;
    PyTypeObject *type = NULL;
    PyObject *compiled;
    if (Py_IS_TYPE(callable, &PyMethodDescr_Type)) {
        ml = ((PyMethodDescrObject *)callable)->d_method;
        type = ((PyMethodDescrObject *)callable)->d_common.d_type;
    } else if (Py_IS_TYPE(callable, &PyCFunction_Type) || PyCFunction_Check(callable)) {
        ml = ((PyCFunctionObject *)callable)->m_ml;
        self = ((PyCFunctionObject *)callable)->m_self;
    } else if ((compiled = compiled_function(callable)) != NULL) {
        return compiled_rec(t, callable, compiled, key, frame, excluded);
    } else {
        return 0;
    }
    *key = ml;
    builtin_slot *slot = &t->builtin_cache[((uintptr_t)ml >> 5) % BUILTIN_CACHE];
    if (slot->ml == ml) {
        *frame = (ap_frame_id)(slot->v >> 1);
        *excluded = (int)(slot->v & 1);
        return 1;
    }
    uint64_t *v = ap_map_get(&t->builtin_recs, (uint64_t)(uintptr_t)ml);
    if (v != NULL) {
        slot->ml = ml;
        slot->v = *v;
        *frame = (ap_frame_id)(*v >> 1);
        *excluded = (int)(*v & 1);
        return 1;
    }
    /* First sight: name it, as cProfile does, and apply the filters. */
    ap_prof *p = t->sess.prof;
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
    ap_frame f = {ap_prof_intern(p, ml->ml_name, strlen(ml->ml_name)), apext_session_intern(p, qual),
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

/* ---- events ------------------------------------------------------------------------ */

static void suspend(TracerObject *t, const void *frame_key) {
    if (ap_map_put(&t->sess.suspended, (uint64_t)(uintptr_t)frame_key, ap_clock_now_ns()) != 0)
        apext_session_fail(&t->sess, "await map");
}

static void resume_await(TracerObject *t, apext_thread *ts, const void *frame_key) {
    uint64_t *since = ap_map_get(&t->sess.suspended, (uint64_t)(uintptr_t)frame_key);
    if (since == NULL)
        return;
    uint64_t now = ap_clock_now_ns(), s = *since;
    ap_map_remove(&t->sess.suspended, (uint64_t)(uintptr_t)frame_key);
    if (ts->depth > 1 && now > s)
        apext_stack_top_node(ts)->m[AP_M_AWAIT_NS] += now - s;
}

/* A Python frame starts (start = 1) or resumes (start = 0). */
static inline void on_py_enter(TracerObject *t, code_rec *rec, PyCodeObject *co,
                               const void *frame_key, int start, uint64_t now) {
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    if (t->cpu_split)
        gil_check(t, ts, now);
    tracer_enter(t, ts, rec->info.frame, co, now, (uint64_t)start);
    if (rec->loop)
        stall_loop_enter(t, ts, rec->loop);
    if (rec->info.awaits) {
        if (start)
            ap_map_remove(&t->sess.suspended, (uint64_t)(uintptr_t)frame_key);
        else
            resume_await(t, ts, frame_key);
    }
}

/* A Python frame returns or unwinds (yield = 0) or suspends (yield = 1). */
static inline void on_py_exit(TracerObject *t, code_rec *rec, PyCodeObject *co,
                              const void *frame_key, int yield, uint64_t now) {
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    if (t->cpu_split)
        gil_check(t, ts, now);
    if (tracer_exit(t, ts, co, now) != NULL && yield && rec->info.awaits)
        suspend(t, frame_key);
}

static inline void on_c_enter(TracerObject *t, PyObject *callable, uint64_t now) {
    const void *key;
    ap_frame_id frame;
    int excluded;
    int r = builtin_rec(t, callable, &key, &frame, &excluded);
    if (r <= 0 || excluded) {
        if (r < 0)
            apext_session_fail(&t->sess, "builtin");
        return;
    }
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    if (t->cpu_split)
        gil_check(t, ts, now);
    tracer_enter(t, ts, frame, key, now, 1);
    if (t->stall_ns && key != NULL && (key == t->loop_keys[0] || key == t->loop_keys[1]))
        stall_loop_enter(t, ts, LOOP_RUNNER);
}

/* The key of a C callable's frames (its PyMethodDef), or NULL when it is not
 * a builtin function or method descriptor. */
static inline const void *builtin_key(PyObject *callable) {
    if (Py_IS_TYPE(callable, &PyMethodDescr_Type))
        return ((PyMethodDescrObject *)callable)->d_method;
    if (Py_IS_TYPE(callable, &PyCFunction_Type) || PyCFunction_Check(callable))
        return ((PyCFunctionObject *)callable)->m_ml;
    return NULL;
}

static inline void on_c_exit(TracerObject *t, PyObject *callable, uint64_t now) {
    const void *key = builtin_key(callable);
    if (key == NULL && (key = compiled_function(callable)) == NULL)
        return;
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return;
    if (t->cpu_split)
        t->gil_last = ts;   /* its innermost frame is this C call: no GIL wait */
    tracer_exit(t, ts, key, now);
}

#if AP_MONITORING
/* ---- 3.12+: sys.monitoring callbacks ------------------------------------------------- */

/* The record of code: fast path inline; at first sight the module name
 * comes from the globals of the frame the event fires in (code's own). */
static inline code_rec *mon_rec(TracerObject *t, PyObject *code) {
    code_rec *rec = apext_code_get(code, PRODUCER);
    if (rec != NULL && rec->info.serial == t->sess.serial)
        return rec;
    rec = code_rec_get(t, (PyCodeObject *)code, PyEval_GetGlobals());
    if (rec == NULL)
        apext_session_fail(&t->sess, "code");
    return rec;
}

/* The short path of the events of Python frames, for a plain tracer (see
 * TracerObject.plain): the code's record is filled for this session, not
 * excluded and not a coroutine's (no await accounting), the thread's state
 * is current and, on entry, the node is the parent's last child, the stack
 * has room and the thread needs no naming.  Then an entry is a push and an
 * exit a pop of the top entry, with no call; anything else takes the full
 * path below, which decides the same way. */
static inline code_rec *short_rec(TracerObject *t, PyObject *code) {
    code_rec *rec = apext_code_get(code, PRODUCER);
    if (rec == NULL || rec->info.serial != t->sess.serial || rec->excluded || rec->info.awaits ||
        rec->loop)
        return NULL;
    return rec;
}

static inline apext_thread *short_thread(void) {
    apext_stack_tls *c = &apext_stack_tls_slots[PRODUCER];
    return c->gen == apext_session_generation[PRODUCER] ? c->thread : NULL;
}

/* Push frame (key) on ts, as apext_stack_enter() does; 0 when the stack is
 * full or the node can't be made (the full path then notes it). */
static inline int short_push(TracerObject *t, apext_thread *ts, ap_frame_id frame,
                             const void *key, int start) {
    if (ts->depth == ts->cap)
        return 0;
    apext_frame *top = (apext_frame *)ts->stack + ts->depth;
    ap_node *parent = top[-1].node;
    ap_node *n = parent->mru;
    if ((n == NULL || n->frame != frame) && (n = ap_tree_child(ts->tree, parent, frame)) == NULL)
        return 0;
    if (!ts->named && start && n->m[AP_M_CALLS] == 0)
        apext_stack_name(&t->sess, ts);   /* on new nodes only */
    n->m[AP_M_CALLS] += (uint64_t)start;
    top->node = n;
    top->t0 = ap_clock_now_ns();
    top->child = 0;
    top->key = key;
    ts->depth++;
    if (__builtin_expect(ts->ext != NULL, 0))   /* a loop thread: a step may start */
        stall_step_start(ts);
    return 1;
}

static inline int short_enter(TracerObject *t, PyObject *code, int start) {
    code_rec *rec = short_rec(t, code);
    apext_thread *ts = rec != NULL ? short_thread() : NULL;
    return ts != NULL && short_push(t, ts, rec->info.frame, code, start);
}

/* The short path's close of the top entry of a loop thread's stack (ts->ext set; a
 * plain tracer, so no labels): a frame inside a step competes for the culprit as in
 * stall_close(), and 1 is returned; the frames that end a step, a turn or the loop, and
 * a C call long enough to become a culprit with its line, take the full path (0). */
static inline int stall_short_close(apext_thread *ts, uint64_t now, int c_call) {
    stall_thread *st = ts->ext;
    size_t i = ts->depth - 1, level = stall_level(st);
    if (level == 0 || i <= level)
        return 0;
    const apext_frame *e = apext_stack_at(ts, i);
    uint64_t el = now >= e->t0 ? now - e->t0 : 0, self = el > e->child ? el - e->child : 0;
    if (st->culprit == NULL || self > st->max_self) {
        if (c_call && self >= CULPRIT_LINE_NS)
            return 0;   /* its call site's line: the full path reads it */
        st->max_self = self;
        st->culprit = e->node;
        st->tree = ts->tree;
        st->line = 0;
    }
    return 1;
}

static inline int short_exit(TracerObject *t, PyObject *code) {
    uint64_t now = ap_clock_now_ns();
    apext_thread *ts = short_rec(t, code) != NULL ? short_thread() : NULL;
    if (ts == NULL || ts->depth < 2 || ((apext_frame *)ts->stack)[ts->depth - 1].key != code ||
        (ts->ext != NULL && !stall_short_close(ts, now, 0)))   /* a loop's thread */
        return 0;
    apext_stack_pop_top(ts, now);
    return 1;
}

/* PY_START / PY_RESUME / PY_THROW: (code, offset[, exception]); the full
 * path out of line, so that the short one is a leaf with few registers. */
static __attribute__((noinline)) PyObject *mon_enter_full(TracerObject *t, PyObject *code,
                                                         int start, int can_disable) {
    if (!in_scope(t))
        Py_RETURN_NONE;
    uint64_t now = apext_session_clock(&t->sess);
    code_rec *rec = mon_rec(t, code);
    if (rec == NULL)
        Py_RETURN_NONE;
    if (rec->excluded)
        return can_disable ? apext_install_disable(PRODUCER) : Py_NewRef(Py_None);
    on_py_enter(t, rec, (PyCodeObject *)code, rec->info.awaits ? apext_compat_iframe() : NULL,
                start, now);
    Py_RETURN_NONE;
}

static __attribute__((noinline)) PyObject *mon_exit_full(TracerObject *t, PyObject *code,
                                                        int yield, int can_disable) {
    if (!in_scope(t))
        Py_RETURN_NONE;
    uint64_t now = apext_session_clock(&t->sess);
    code_rec *rec = mon_rec(t, code);
    if (rec == NULL)
        Py_RETURN_NONE;
    if (rec->excluded)
        return can_disable ? apext_install_disable(PRODUCER) : Py_NewRef(Py_None);
    on_py_exit(t, rec, (PyCodeObject *)code,
               yield && rec->info.awaits ? apext_compat_iframe() : NULL, yield, now);
    Py_RETURN_NONE;
}

static inline PyObject *mon_enter(PyObject *code, int start, int can_disable) {
    TracerObject *t = running_tracer();
    if (t == NULL || (t->plain && short_enter(t, code, start)))
        Py_RETURN_NONE;
    return mon_enter_full(t, code, start, can_disable);
}

static inline PyObject *mon_exit(PyObject *code, int yield, int can_disable) {
    TracerObject *t = running_tracer();
    if (t == NULL || (t->plain && short_exit(t, code)))
        Py_RETURN_NONE;
    return mon_exit_full(t, code, yield, can_disable);
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
    TracerObject *t = running_tracer();
    if (t == NULL || n < 3)
        Py_RETURN_NONE;
    PyObject *callable = a[2];
    if (PyFunction_Check(callable) ||
        (PyMethod_Check(callable) && PyFunction_Check(PyMethod_GET_FUNCTION(callable))))
        return apext_install_disable(PRODUCER);
    if (t->plain) {   /* the short path: a known builtin on a current thread state */
        const void *key;
        ap_frame_id frame;
        int excluded;
        apext_thread *ts = short_thread();
        if (ts != NULL && builtin_rec(t, callable, &key, &frame, &excluded) == 1 &&
            (excluded || (key != t->loop_keys[0] && key != t->loop_keys[1] &&
                          short_push(t, ts, frame, key, 1))))
            Py_RETURN_NONE;
    }
    if (in_scope(t))
        on_c_enter(t, callable, apext_session_clock(&t->sess));
    Py_RETURN_NONE;
}

/* C_RETURN / C_RAISE: (code, offset, callable, arg0) */
static PyObject *cb_c_exit(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    TracerObject *t = running_tracer();
    if (t != NULL && n >= 3 && t->plain) {   /* the short path: the top frame's return */
        uint64_t now = ap_clock_now_ns();
        apext_thread *ts = short_thread();
        const void *key = builtin_key(a[2]);
        if (ts != NULL && key != NULL && ts->depth > 1 &&
            ((apext_frame *)ts->stack)[ts->depth - 1].key == key &&
            (ts->ext == NULL || stall_short_close(ts, now, 1))) {
            apext_stack_pop_top(ts, now);
            Py_RETURN_NONE;
        }
    }
    if (t != NULL && n >= 3 && (builtin_key(a[2]) != NULL || compiled_function(a[2]) != NULL) &&
        in_scope(t)) {   /* else: no frame */
        t->site_code = a[0];   /* the call site, for a stall's line */
        t->site_offset = PyLong_Check(a[1]) ? (int)PyLong_AsLong(a[1]) : -1;
        if (t->site_offset < 0) {
            PyErr_Clear();
            t->site_code = NULL;
        }
        on_c_exit(t, a[2], apext_session_clock(&t->sess));
        t->site_code = NULL;
    }
    Py_RETURN_NONE;
}

static apext_event tracer_events[] = {
    APEXT_EVENT("PY_START", cb_py_start, 0),
    APEXT_EVENT("PY_RESUME", cb_py_resume, 0),
    APEXT_EVENT("PY_THROW", cb_py_throw, 0),
    APEXT_EVENT("PY_RETURN", cb_py_return, 0),
    APEXT_EVENT("PY_YIELD", cb_py_yield, 0),
    APEXT_EVENT("PY_UNWIND", cb_py_unwind, 0),
    APEXT_EVENT("CALL", cb_call, APEXT_EV_OPTIONAL),   /* builtins only */
    APEXT_EVENT("C_RETURN", cb_c_exit, APEXT_EV_OPTIONAL),
    APEXT_EVENT("C_RAISE", cb_c_exit, APEXT_EV_OPTIONAL),
};

#else
/* ---- 3.11: the C profile hook on every thread ------------------------------------------ */

static int profile_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    TracerObject *t = running_tracer();
    if (t == NULL || (PyObject *)t != obj || !in_scope(t))
        return 0;
    uint64_t now = apext_session_clock(&t->sess);
    switch (what) {
    case PyTrace_CALL:
    case PyTrace_RETURN: {
        PyCodeObject *co = PyFrame_GetCode(frame);
        code_rec *rec = apext_code_get((PyObject *)co, PRODUCER);
        if (rec == NULL || rec->info.serial != t->sess.serial) {
            PyObject *globals = PyFrame_GetGlobals(frame);
            rec = code_rec_get(t, co, globals);
            Py_XDECREF(globals);
        }
        Py_DECREF(co);   /* the frame keeps it alive */
        if (rec == NULL) {
            apext_session_fail(&t->sess, "code");
            return 0;
        }
        if (rec->excluded)
            return 0;
        if (what == PyTrace_CALL)
            on_py_enter(t, rec, co, frame, apext_code_is_start(&rec->info, frame), now);
        else
            on_py_exit(t, rec, co, frame, apext_code_is_yield(&rec->info, frame, arg), now);
        break;
    }
    case PyTrace_C_CALL:
        if (t->builtins)
            on_c_enter(t, arg, now);
        break;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        if (t->builtins) {
            t->site_code = (PyObject *)frame;   /* the call site, for a stall's line */
            on_c_exit(t, arg, now);
            t->site_code = NULL;
        }
        break;
    default:
        break;
    }
    return 0;
}
#endif

static apext_hooks tracer_hooks =
    APEXT_HOOKS(PRODUCER, "apiprof", tracer_events, APEXT_LEGACY_PROFILE, profile_hook);

/* ---- session operations ------------------------------------------------------------------- */

static int tracer_traverse(PyObject *owner, visitproc visit, void *arg) {
    TracerObject *t = (TracerObject *)owner;
    Py_VISIT(t->include);
    Py_VISIT(t->exclude);
    Py_VISIT(t->scope_var);
    Py_VISIT(t->scope_mark);
    return apext_labels_traverse(&t->labels, visit, arg);
}

static void tracer_clear(PyObject *owner) {
    TracerObject *t = (TracerObject *)owner;
    Py_CLEAR(t->include);
    Py_CLEAR(t->exclude);
    Py_CLEAR(t->scope_var);
    Py_CLEAR(t->scope_mark);
    apext_labels_clear(&t->labels);
}

static void tracer_dealloc(PyObject *owner) {
    TracerObject *t = (TracerObject *)owner;
    ap_map_free(&t->builtin_recs);
    apext_labels_free(&t->labels);
    apext_timeline_free(&t->timeline);
}

static int tracer_prepare(PyObject *owner) {
    TracerObject *t = (TracerObject *)owner;
    apext_labels_start(&t->labels);
    t->gil_last = NULL;
    t->plain = !t->labels.on && t->scope_var == NULL && !t->timeline.on && !t->cpu_split &&
               !t->sess.cpu_clock && t->sess.frame_size == sizeof(apext_frame);
    if (t->stall_ns) {
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long)t->stall_ns);
        if (ap_prof_meta_set(t->sess.prof, "stall_threshold_ns", v) != 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void tracer_stopped(PyObject *owner) {
    TracerObject *t = (TracerObject *)owner;
    if (apext_timeline_note(&t->timeline, t->sess.prof) != 0)   /* timeline: kept / dropped */
        apext_session_fail(&t->sess, "timeline");
    if (t->labels.on && apext_labels_sync(&t->labels) != 0)   /* thread names found late */
        apext_session_fail(&t->sess, "labels");
}

/* What both kinds of Tracer do beside their hooks. */
#define TRACER_OPS_COMMON                \
    .prepare = tracer_prepare,           \
    .close_top = tracer_close_top,       \
    .reopen = tracer_reopen,             \
    .thread_free = stall_thread_free,    \
    .stopped = tracer_stopped,           \
    .traverse = tracer_traverse,         \
    .clear = tracer_clear,               \
    .dealloc = tracer_dealloc

static const apext_session_ops tracer_ops = {.hooks = &tracer_hooks, TRACER_OPS_COMMON};

/* calls=False: the same session with no hooks installed; the profile, its
 * thread trees and labels are there for a producer that walks the running
 * frames itself (the allocation hook, memory.h). */
static const apext_session_ops tracer_walk_ops = {.hooks = NULL, TRACER_OPS_COMMON};

/* ---- walk mode (memory.h) ------------------------------------------------------------- */

ap_tree *apext_tracer_walk_tree(PyObject *owner) {
    TracerObject *t = (TracerObject *)owner;
    apext_thread *ts = apext_stack_thread(&t->sess, PRODUCER);
    if (ts == NULL)
        return NULL;
    if (!ts->named)
        apext_stack_name(&t->sess, ts);
    ap_tree *tree = ts->tree;
    if (t->labels.on && apext_labels_recorded(&t->labels) &&
        apext_labels_parent(&t->labels, &tree, ap_tree_root(ts->tree)) == NULL) {
        apext_session_fail(&t->sess, "labels");
        return ts->tree;
    }
    return tree;
}

ap_frame_id apext_tracer_code_frame(PyObject *owner, PyCodeObject *co, PyObject *globals,
                                    int *excluded) {
    TracerObject *t = (TracerObject *)owner;
    code_rec *rec = code_rec_get(t, co, globals);
    if (rec == NULL) {
        apext_session_fail(&t->sess, "code record");
        return AP_NONE;
    }
    *excluded = rec->excluded;
    return rec->info.frame;
}

/* ---- the Tracer type ------------------------------------------------------------------- */

static PyObject *tracer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"clock", "builtins", "include", "exclude", "threads", "context",
                             "labels", "tasks", "timeline", "cpu", "stalls", "calls", NULL};
    const char *clock = "wall";
    int builtins = 1, tasks = 0, cpu_split = 0, calls = 1;
    Py_ssize_t timeline = 0;
    unsigned long long stalls = 0;
    PyObject *include = NULL, *exclude = NULL, *threads = Py_None, *context = Py_None;
    PyObject *labels = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$spOOOOOpnpKp:Tracer", kwlist, &clock,
                                     &builtins, &include, &exclude, &threads, &context, &labels,
                                     &tasks, &timeline, &cpu_split, &stalls, &calls))
        return NULL;
    if (!calls && (context != Py_None || tasks || timeline > 0 || cpu_split || stalls > 0 ||
                   strcmp(clock, "wall") != 0))
        return PyErr_Format(PyExc_ValueError,
                            "calls=False records no calls: context, tasks, timeline, cpu, "
                            "stalls and clock='cpu' need them");
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
    if (cpu_split && cpu)
        return PyErr_Format(PyExc_ValueError,
                            "cpu=True needs clock='wall' (with clock='cpu' every time is CPU time)");
    TracerObject *t = (TracerObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    if (apext_session_init(&t->sess, PRODUCER, (PyObject *)t,
                           calls ? &tracer_ops : &tracer_walk_ops, "profiler",
                           "apiprof trace", cpu,
                           cpu_split ? sizeof(cpu_frame) : sizeof(apext_frame)) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    if (!calls && ap_prof_meta_set(t->sess.prof, "calls", "off") != 0) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    t->builtins = builtins;
    t->cpu_split = cpu_split;
    t->sess.optional_events = builtins;
    t->include = include && include != Py_None ? Py_NewRef(include) : PyTuple_New(0);
    t->exclude = exclude && exclude != Py_None ? Py_NewRef(exclude) : PyTuple_New(0);
    t->sess.threads_dict = threads != Py_None ? Py_NewRef(threads) : NULL;
    if (context != Py_None) {
        t->scope_var = Py_NewRef(PyTuple_GET_ITEM(context, 0));
        t->scope_mark = Py_NewRef(PyTuple_GET_ITEM(context, 1));
    }
    if (t->include == NULL || t->exclude == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    if (stalls > 0 && cpu) {
        Py_DECREF(t);
        return PyErr_Format(PyExc_ValueError, "stall detection needs clock='wall'");
    }
    t->stall_ns = stalls;
    if (timeline > 0 && cpu) {
        Py_DECREF(t);
        return PyErr_Format(PyExc_ValueError, "a timeline needs clock='wall'");
    }
    if (apext_labels_init(&t->labels, t->sess.prof, labels, tasks) < 0 ||
        apext_timeline_init(&t->timeline, t->sess.prof, timeline) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

/* set_phase(name): new trees get the label phase=name, and every thread
 * known so far moves to one (see apext_stack_relabel). */
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
    ap_str_id id = ap_prof_intern(t->sess.prof, s, (size_t)n);
    if (id == AP_NONE || apext_stack_set_phase(&t->sess, id) != 0)
        return PyErr_NoMemory();
    apext_labels_phase(&t->labels);   /* labels: new label trees for the new phase */
    Py_RETURN_NONE;
}

static PyObject *tracer_get_phase(TracerObject *t, void *Py_UNUSED(c)) {
    if (t->sess.phase == AP_NONE)
        Py_RETURN_NONE;
    return PyUnicode_FromString(ap_prof_str(t->sess.prof, t->sess.phase));
}

static PyMethodDef tracer_methods[] = {
    {"start", apext_session_py_start, METH_NOARGS,
     "start()\n\nInstall the hooks (all threads) and start recording."},
    {"stop", apext_session_py_stop, METH_NOARGS,
     "stop()\n\nRemove the hooks and close every open frame; a no-op when not running."},
    {"profile", apext_session_py_profile, METH_NOARGS,
     "profile() -> Profile\n\nThe recorded profile (shares the tracer's data)."},
    {"set_phase", (PyCFunction)tracer_set_phase, METH_O,
     "set_phase(name)\n\nRecord from now on into trees labelled phase=name (every thread; "
     "open frames are split at the switch)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tracer_getset[] = {
    {"running", apext_session_py_running, NULL, "Whether the hooks are installed.", NULL},
    {"phase", (getter)tracer_get_phase, NULL, "The current phase label, or None.", NULL},
    {"tool_id", apext_session_py_tool_id, NULL,
     "The sys.monitoring tool id in use (3.12+, while running), else None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static const char tracer_doc[] =
    "Tracer(*, clock='wall', builtins=True, include=(), exclude=(), threads=None, context=None, "
    "labels=None, tasks=False, timeline=0, cpu=False, stalls=0, calls=True)"
    "\n\nThe exact function tracer of apiprof (use apiprof.Profiler). context=(var, mark) "
    "records only events whose current contextvars context has var set to mark. labels=(var, "
    "paused) records work whose context holds a str in var into trees labelled route=<str> "
    "(nothing while it holds paused); tasks=True labels named asyncio tasks' work "
    "task=<name>; timeline=N keeps the last N frame spans (wall clock); stalls=NS records "
    "every event-loop step of NS nanoseconds or more as a stall (wall clock); cpu=True also "
    "records each frame's thread CPU time, self (cpu_ns) and with callees (cpu_total_ns), "
    "reading the thread CPU clock at every call and return (wall clock); calls=False installs "
    "no hooks: the profile's trees (threads, route labels) are filled by a MemoryTracker "
    "walking the running frames at each allocation it tracks.";

int apext_tracer_init(PyObject *module, apext_state *st) {
    if (apext_code_init(PRODUCER, NULL) < 0)
        return -1;
    return apext_session_add_type(module, "apiprof._core.Tracer", sizeof(TracerObject), tracer_new,
                                  tracer_methods, tracer_getset, tracer_doc, &st->tracer_type);
}

/* session.h -- the producer registry: which producers exist, which session of each one runs, generations, failure notes, start and stop. */
#ifndef APEXT_SESSION_H
#define APEXT_SESSION_H

#include "compat.h"

#include <stdint.h>

#include "ap_clock.h"
#include "ap_map.h"
#include "ap_prof.h"

/* ---- the producers --------------------------------------------------------------
 * A producer is a Python type whose hooks record events into an ap_prof (the
 * function tracer, the line profiler; later an allocation hook, a wait
 * classifier, a sampler).  Each one is one X(NAME, init) line here: NAME
 * gives it its apext_producer number (its running session, thread-local
 * slot and co_extra record slot are indexed by it) and init, called from the
 * module's exec slot, adds its type to the module (0, or -1 with an
 * exception set).  Adding a producer is adding its line. */
#define APEXT_PRODUCERS(X)          \
    X(TRACE, apext_tracer_init)     \
    X(LINES, apext_lines_init)      \
    X(MEMORY, apext_memory_init)    \
    /* one line per producer above */

#define APEXT_PRODUCER_ENUM_(name, init) APEXT_PRODUCER_##name,
typedef enum apext_producer {
    APEXT_PRODUCERS(APEXT_PRODUCER_ENUM_)
    APEXT_NPRODUCERS
} apext_producer;
#undef APEXT_PRODUCER_ENUM_

#define APEXT_PRODUCER_INIT_DECL_(name, init) int init(PyObject *module, apext_state *st);
APEXT_PRODUCERS(APEXT_PRODUCER_INIT_DECL_)
#undef APEXT_PRODUCER_INIT_DECL_

/* ---- failures in hooks --------------------------------------------------------------
 * A hook never raises: it records the first failure (with the ap_err message)
 * and counts the events it dropped; stop() reports it. */
typedef struct apext_session_failure {
    char msg[200];   /* "" when nothing failed */
    uint64_t lost;
} apext_session_failure;

/* ---- sessions ---------------------------------------------------------------------
 * One session per producer object: what the framework keeps for it.  The
 * producer embeds it, fills the configuration with apext_session_init() and
 * the ops, and calls apext_session_start() / _stop().  Everything here is
 * protected by the GIL (see stack.h for code that runs without it). */
struct apext_thread;
struct apext_frame;
struct apext_hooks;

typedef struct apext_session_ops {
    /* The producer's hooks (install.h): installed by start(), removed by
     * stop().  NULL: none (a session whose trees another producer fills,
     * such as a Tracer with calls=False). */
    struct apext_hooks *hooks;
    /* Before the hooks are installed at start(): decide what can be decided
     * outside them (a line profiler fills its targets' records).  0, or -1
     * with an exception set.  May be NULL. */
    int (*prepare)(PyObject *owner);
    /* Close the top frame of thread ts at clock now (stop() closes every open
     * frame with it).  NULL: apext_stack_pop_top(). */
    void (*close_top)(struct apext_thread *ts, uint64_t now);
    /* Entry e of ts was closed with close_top and opened again in another
     * tree (apext_stack_relabel; its t0 and child are reset already): reset
     * the producer's own fields of it.  May be NULL. */
    void (*reopen)(struct apext_thread *ts, struct apext_frame *e);
    /* After stop: drop what only makes sense while running.  May be NULL.
     * Can't fail. */
    void (*stopped)(PyObject *owner);
    /* Free the producer's per-thread data (apext_thread.ext).  May be NULL. */
    void (*thread_free)(void *ext);
    /* GC support and release of the producer's own fields (the session's
     * are the framework's).  Each may be NULL. */
    int (*traverse)(PyObject *owner, visitproc visit, void *arg);
    void (*clear)(PyObject *owner);
    void (*dealloc)(PyObject *owner);   /* frees C fields; can't fail */
} apext_session_ops;

typedef struct apext_session {
    apext_producer producer;
    const char *noun;            /* "profiler": in "this profiler is already running" */
    const apext_session_ops *ops;
    PyObject *owner;             /* the producer object embedding this session; borrowed */
    ap_prof *prof;               /* owned */
    uint64_t serial;             /* unique in the process, never 0; per-code records carry it */
    int running;
    int cpu_clock;               /* 1: frames are timed with the thread CPU clock */
    uint64_t process_cpu_t0;     /* process CPU time at the last start (meta process_cpu_ns) */
    int tool_id;                 /* sys.monitoring tool id while running (3.12+) */
    long local_events;           /* 3.12+: events set on target code objects */
    PyObject *threads_dict;      /* threading._active (ident -> Thread) or NULL; strong */
    int optional_events;         /* install the hooks' APEXT_EV_OPTIONAL events */
    PyObject *targets;           /* list of code objects for local events, or NULL; borrowed */
    ap_map suspended;            /* generator-like frame key -> clock at its suspension;
                                    emptied at stop */
    ap_str_id k_thread, k_thread_id, k_phase;
    ap_str_id phase;             /* label phase=<phase> of new trees; AP_NONE: none */
    size_t frame_size;           /* bytes of one shadow-stack entry (>= sizeof(apext_frame)) */
    struct apext_thread *threads;   /* every thread seen, newest first; owned */
    apext_session_failure fail;
} apext_session;

/* Every producer object starts like this: PyObject_HEAD, then its session
 * (the producer's own fields follow).  The framework's type slots and
 * methods below reach the session through it. */
typedef struct apext_object {
    PyObject_HEAD
    apext_session sess;
} apext_object;

/* The running producer object of each producer (NULL when none) and a
 * generation per producer that changes at every start and stop, so that
 * thread-local pointers of an earlier run are not used.  Protected by the
 * GIL; hooks read them first. */
extern PyObject *apext_session_running[APEXT_NPRODUCERS];
extern uint64_t apext_session_generation[APEXT_NPRODUCERS];

/* Set up s for producer p owned by owner: a new profile with metadata clock
 * and tool, the thread label keys, the serial.  frame_size is the size of
 * the producer's shadow-stack entry.  0, or -1 with an exception set (what
 * was made is freed with the object, see apext_session_add_type). */
int apext_session_init(apext_session *s, apext_producer p, PyObject *owner,
                       const apext_session_ops *ops, const char *noun, const char *tool,
                       int cpu_clock, size_t frame_size);

/* Free what s owns (profile, thread states, suspension map); the
 * framework's dealloc calls it.  s must not be running.  Can't fail. */
void apext_session_free(apext_session *s);

/* Start s: RuntimeError if it or another session of its producer runs; else
 * the generation changes, s becomes the running session, ops->prepare runs,
 * the hooks are installed and the owner is kept alive until stop.  0, or -1
 * with an exception set (s is then not running and no hook is left). */
int apext_session_start(apext_session *s);

/* Stop s if it runs (else a no-op): remove the hooks, close every open
 * frame, finish the profile, and warn (RuntimeWarning) if a hook failed.
 * 0, or -1 with an exception set (warnings as errors; s is stopped). */
int apext_session_stop(apext_session *s);

/* Record a failure of what in s (the current ap_err message is appended).
 * Can't fail. */
void apext_session_fail(apext_session *s, const char *what);

/* The clock that times frames of s: thread CPU or wall.  Can't fail. */
static inline uint64_t apext_session_clock(const apext_session *s) {
    return s->cpu_clock ? ap_clock_thread_cpu_ns() : ap_clock_now_ns();
}

/* ---- the producer's Python type ---------------------------------------------------
 * The framework gives every producer type its dealloc, traverse and clear
 * (through ops) and the methods and getters below; the producer lists them in
 * its tables with its own docstrings. */

/* Create the heap type name (an "apiprof._core.X" literal) of objects of
 * basicsize bytes (starting as apext_object) with tp_new, methods, getset
 * and doc, add it to module and store it in *type.  0, or -1 with an
 * exception set. */
int apext_session_add_type(PyObject *module, const char *name, size_t basicsize, newfunc tp_new,
                           PyMethodDef *methods, PyGetSetDef *getset, const char *doc,
                           PyTypeObject **type);

/* start(), stop(), profile() (a Profile sharing the session's data), and the
 * getters running and tool_id (3.12+, while running; else None). */
PyObject *apext_session_py_start(PyObject *self, PyObject *unused);
PyObject *apext_session_py_stop(PyObject *self, PyObject *unused);
PyObject *apext_session_py_profile(PyObject *self, PyObject *unused);
PyObject *apext_session_py_running(PyObject *self, void *closure);
PyObject *apext_session_py_tool_id(PyObject *self, void *closure);

/* ---- profile helpers --------------------------------------------------------------- */

/* Intern str object s into p ("?" when s is not a str or not encodable).
 * Returns the id; AP_NONE with AP_ENOMEM.  No Python exception is left. */
uint32_t apext_session_intern(ap_prof *p, PyObject *s);

#endif /* APEXT_SESSION_H */

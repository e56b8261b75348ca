/* ext.h -- shared declarations of the apiprof._core extension modules. */
#ifndef AP_EXT_H
#define AP_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef Py_GIL_DISABLED
#error "apiprof does not support free-threaded CPython; build it with the GIL-enabled interpreter"
#endif
#include <stdint.h>

/* Module state of apiprof._core. One instance per module object (multi-phase
 * init); every field is protected by the GIL. */
typedef struct {
    PyTypeObject *timer_type;      /* apiprof._core.Timer */
    PyTypeObject *timer_node_type; /* apiprof._core.TimerNode (registry tree) */
    PyTypeObject *timer_stack_type; /* apiprof._core.TimerStack (running timers of a context) */
    PyTypeObject *hist_type;       /* apiprof._core.Histogram */
    PyTypeObject *tracer_type;     /* apiprof._core.Tracer */
    PyTypeObject *profile_type;    /* apiprof._core.Profile */
    PyTypeObject *line_tracer_type; /* apiprof._core.LineTracer */
    PyObject *timer_root;          /* TimerNode: root of the timer registry */
    PyObject *timer_parent_var;    /* ContextVar holding the context's TimerStack */
    PyObject *timer_decorate;      /* Python callable(timer, func) -> wrapper, or NULL */
    PyTypeObject *route_table_type;   /* apiprof._core.RouteTable */
    PyTypeObject *route_request_type; /* apiprof._core.RouteRequest */
    PyObject *route_str[16];          /* interned keys and names used by routes.c (S_COUNT) */
} apext_state;

/* The module definition, for PyType_GetModuleByDef. */
extern PyModuleDef apext_module_def;

/* Returns the state of the module that defined `type`. Can't fail for types
 * created by this module. */
static inline apext_state *apext_state_of_type(PyTypeObject *type)
{
    return (apext_state *)PyModule_GetState(PyType_GetModuleByDef(type, &apext_module_def));
}

/* Per-subsystem set-up, called from the module's exec slot (producers are
 * listed in session.h instead). Each returns 0, or -1 with a Python exception
 * set. */
int apext_timer_init(PyObject *module, apext_state *st);
int apext_hist_init(PyObject *module, apext_state *st);
int apext_profile_init(PyObject *module, apext_state *st);
int apext_routes_init(PyObject *module, apext_state *st);

/* Module-level functions of the function tracer (tracer.c): untrace_thread(). */
extern PyMethodDef apext_tracer_methods[];

/* A Profile object over prof.  With owner (a Tracer) it borrows prof and
 * keeps owner alive; with owner NULL it takes ownership of prof (freed with
 * the object, also on failure).  Returns a new reference, or NULL with an
 * exception set. */
struct ap_prof;
PyObject *apext_profile_wrap(apext_state *st, PyObject *owner, struct ap_prof *prof);

/* The ap_prof of a Profile object and whether it was read from a file cut
 * short (*truncated, may be NULL).  NULL with TypeError when obj is not a
 * Profile of this module. */
struct ap_prof *apext_profile_get(apext_state *st, PyObject *obj, int *truncated);

/* Module-level functions of report.c (write_report, ...). */
extern PyMethodDef apext_report_methods[];

/* Query capture (queries.c): record_query, query_context, query_scope, sqlite_types. */
extern PyMethodDef apext_queries_methods[];

/* The one mapping from the core's error (ap_err_code / ap_err_msg, just
 * recorded) to a Python exception: AP_ENOMEM -> MemoryError, AP_EIO ->
 * OSError, AP_ENOTFOUND -> LookupError, every other code (EINVAL, ERANGE,
 * ECORRUPT, EFULL) -> ValueError.  The message is the core's, prefixed with
 * "what: " when what is not NULL.  Always returns NULL, so that callers can
 * write `return apext_raise_core(...)`. */
PyObject *apext_raise_core(const char *what);

/* The metric catalogue (ap_metric.h) as a list of dicts; module.c. */
PyObject *apext_metrics(PyObject *module, PyObject *unused);

/* GC hooks for the module state, per subsystem. */
int apext_timer_traverse(apext_state *st, visitproc visit, void *arg);
void apext_timer_clear(apext_state *st);
int apext_routes_traverse(apext_state *st, visitproc visit, void *arg);
void apext_routes_clear(apext_state *st);

/* Thread CPU ns of the calling thread at wall time `now` (ap_clock_now_ns()):
 * a real reading, or one extrapolated from the wall clock when the last real
 * reading on this thread is less than 2 us old (see timer.c).  Can't fail. */
uint64_t apext_thread_cpu_at(uint64_t now);

/* A real reading of the calling thread's CPU ns (a system call), taken at wall
 * time `now`; it becomes the thread's last real reading.  Can't fail. */
uint64_t apext_thread_cpu_read(uint64_t now);

/* The thread's last real CPU reading when it was taken at most `max_age` ns
 * before `now`, else a real reading now: a value at most the thread's CPU at
 * `now`, short of it by at most the CPU the thread used in the last `max_age`
 * ns, with no system call while readings are that recent.  Can't fail. */
uint64_t apext_thread_cpu_floor(uint64_t now, uint64_t max_age);

#endif

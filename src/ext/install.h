/* install.h -- installing a producer's hooks from its tables: sys.monitoring callbacks on 3.12+, the C profile or trace function of every thread on 3.11. */
#ifndef APEXT_INSTALL_H
#define APEXT_INSTALL_H

#include "session.h"

/* Flags of a monitoring event. */
#define APEXT_EV_LOCAL 1u      /* set on the session's target code objects only */
#define APEXT_EV_OPTIONAL 2u   /* installed only when apext_install() is asked for them */

/* One sys.monitoring event of a producer (3.12+). */
typedef struct apext_event {
    const char *name;   /* attribute of sys.monitoring.events */
    PyMethodDef def;    /* its callback (METH_FASTCALL, bound to no object) */
    unsigned flags;     /* APEXT_EV_* */
} apext_event;

/* An apext_event entry for callback fn (a METH_FASTCALL C function). */
#define APEXT_EVENT(name, fn, flags) \
    {name, {"apiprof." #fn, (PyCFunction)(void (*)(void))fn, METH_FASTCALL, NULL}, flags}

/* Which per-thread slot of 3.11 a legacy hook takes. */
typedef enum apext_legacy_slot {
    APEXT_LEGACY_PROFILE,   /* sys.setprofile's: calls and returns, C calls */
    APEXT_LEGACY_TRACE      /* sys.settrace's: calls, lines, returns */
} apext_legacy_slot;

/* Everything about a producer's hooks, for both kinds of interpreter: one
 * static table per producer, written with APEXT_HOOKS. */
typedef struct apext_hooks {
    apext_producer producer;
    /* 3.12+ */
    const char *tool_name;      /* the name given to sys.monitoring.use_tool_id */
    apext_event *events;        /* the events and their callbacks */
    size_t nevents;
    /* 3.11 */
    apext_legacy_slot slot;
    Py_tracefunc legacy;        /* the hook; its obj argument is the running owner */
    PyObject *bootstrap;        /* cached: the threading.setprofile / settrace function */
} apext_hooks;

/* The hooks table of producer p: on 3.12+ tool name tool and the events of
 * array events; on 3.11 hook fn in slot (only the arguments of the running
 * interpreter's kind are used, so the other kind's need not exist). */
#if AP_MONITORING
#define APEXT_HOOKS(p, tool, events, slot, fn) \
    {p, tool, events, sizeof events / sizeof events[0], 0, NULL, NULL}
#else
#define APEXT_HOOKS(p, tool, events, slot, fn) {p, NULL, NULL, 0, slot, fn, NULL}
#endif

/* Install h for session s (which must be the running session of its
 * producer).  3.12+: take a free tool id (3, 4, 5, then 2, 1, 0: the ids
 * of debuggers, coverage and cProfile last), register every event's
 * callback (APEXT_EV_OPTIONAL ones only when optional), enable the global
 * events, set the local ones on each code object of codes (a list, or
 * NULL), and re-enable the locations an earlier run of the producer
 * DISABLEd.  3.11: the hook on
 * every existing thread and, through threading, on every thread started
 * later.  0, or -1 with an exception set (nothing left installed). */
int apext_install(apext_session *s, apext_hooks *h, int optional, PyObject *codes);

/* Remove what apext_install() installed (codes as given to it).  Never
 * raises: a pending exception is kept, others are cleared. */
void apext_install_remove(apext_session *s, apext_hooks *h, PyObject *codes);

/* Set s's local events on one more code object while running (3.12+; a
 * no-op on 3.11).  0, or -1 with an exception set. */
int apext_install_code(apext_session *s, PyObject *code);

#if AP_MONITORING
/* sys.monitoring.DISABLE (a new reference), for a callback of producer p
 * that wants no more events from its location; the producer's next
 * apext_install() re-enables the locations.  Can't fail once apext_install()
 * has succeeded. */
PyObject *apext_install_disable(apext_producer p);
#endif

#endif /* APEXT_INSTALL_H */

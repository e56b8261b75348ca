/* hook.h -- what the extension's event hooks share (tracer.c, lines.c): version shims, the co_extra record, thread serials, sys.monitoring tool ids, failures recorded by hooks. */
#ifndef APEXT_HOOK_H
#define APEXT_HOOK_H

#include "ext.h"

#include <stdint.h>

#include "ap_prof.h"

#if PY_VERSION_HEX >= 0x030C0000
#define AP_MONITORING 1
#define AP_SAVE_EXC(e) PyObject *e = PyErr_GetRaisedException()
#define AP_RESTORE_EXC(e) PyErr_SetRaisedException(e)
#else
#define AP_MONITORING 0
#define AP_SAVE_EXC(e) PyObject *e##_t, *e##_v, *e##_tb; PyErr_Fetch(&e##_t, &e##_v, &e##_tb)
#define AP_RESTORE_EXC(e) PyErr_Restore(e##_t, e##_v, e##_tb)
#endif

#define APEXT_CO_GENLIKE (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE)
#define APEXT_CO_AWAITS (CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE)

/* ---- per-code records -------------------------------------------------------------
 * The extension takes one co_extra index.  Its value is a small array with
 * one record pointer per subsystem (slot), so the function tracer and the
 * line profiler keep their own per-code data side by side.  A record is
 * owned by the code object once set and freed with it by the destructor
 * its subsystem registered.  Protected by the GIL. */
typedef enum apext_slot {
    APEXT_SLOT_TRACE = 0,   /* tracer.c: code_rec */
    APEXT_SLOT_LINES = 1,   /* lines.c: line_rec */
    APEXT_NSLOTS
} apext_slot;

typedef struct apext_code_extra {
    void *rec[APEXT_NSLOTS];
} apext_code_extra;

/* The co_extra index, -1 before apext_code_init() succeeded. */
extern Py_ssize_t apext_code_index;

/* Take the co_extra index (once per process) and register the destructor of
 * slot s (may be NULL: the record is then freed with PyMem_RawFree).
 * Returns 0, or -1 with a Python exception set (no index is free). */
int apext_code_init(apext_slot s, void (*destructor)(void *rec));

/* The record of slot s of code, or NULL if it has none (any error of
 * co_extra is cleared).  For the hot path: one call and two loads.  Can't
 * fail; apext_code_index must be set. */
static inline void *apext_code_get(PyObject *code, apext_slot s) {
    void *extra = NULL;
#if AP_MONITORING
    if (PyUnstable_Code_GetExtra(code, apext_code_index, &extra) < 0) {
#else
    if (_PyCode_GetExtra(code, apext_code_index, &extra) < 0) {
#endif
        PyErr_Clear();
        return NULL;
    }
    return extra != NULL ? ((apext_code_extra *)extra)->rec[s] : NULL;
}

/* Set the record of slot s of code to rec (ownership passes to the code
 * object; a previous record of the slot is freed).  Returns 0; on error -1
 * with an ap_err (AP_ENOMEM) and no Python exception, rec still the
 * caller's. */
int apext_code_set(PyObject *code, apext_slot s, void *rec);

/* ---- threads -------------------------------------------------------------------- */

/* A number given to the calling OS thread at its first use, never reused
 * (thread idents are).  Can't fail. */
uint64_t apext_thread_serial(void);

/* Label tree with key = the name of thread ident in threads (a dict ident ->
 * threading.Thread, i.e. threading._active; NULL: nothing to do), if the
 * thread has registered itself there yet.  Returns 1 when labelled, else 0;
 * never raises (a pending exception is kept). */
int apext_thread_label(ap_prof *p, ap_tree *tree, PyObject *threads,
                       unsigned long ident, uint32_t key);

#if !AP_MONITORING
/* ---- 3.11: telling starts and yields of generator-like frames apart -------------- */

/* Read the RESUME and YIELD_VALUE opcodes (once).  0, or -1 with an
 * exception set. */
int apext_opcodes_init(void);

/* The byte offset of the first RESUME in code bytes (co_code): the call
 * event of a generator-like frame at that offset is its start, at another
 * one a resume.  -1 if none.  Can't fail. */
int apext_first_resume(PyObject *bytes);

/* Whether the instruction at lasti of code bytes is YIELD_VALUE (a "return"
 * event there is a yield).  Can't fail. */
int apext_is_yield(PyObject *bytes, int lasti);
#endif

#if AP_MONITORING
/* The running interpreter frame: identifies a generator or coroutine for its
 * lifetime.  Can't fail. */
const void *apext_current_iframe(void);

/* ---- sys.monitoring ------------------------------------------------------------------ */

/* Take a free tool id under name: 3, 4, 5 first, then 2, 1, 0 (the ids of
 * debuggers, coverage and cProfile are taken last).  Returns the id, or -1
 * with a Python exception set (every id in use, or sys.monitoring
 * missing). */
int apext_mon_use_tool(const char *name);

/* Clear tool's global events and callbacks (the names in events, a
 * NULL-terminated list of sys.monitoring.events attributes) and free it.
 * Never raises: a pending exception is kept, others are cleared.  Can't
 * fail. */
void apext_mon_free_tool(int tool, const char *const *events);
#endif

/* ---- failures in hooks ------------------------------------------------------------
 * A hook never raises: it records the first failure here (with the ap_err
 * message) and counts the events it dropped; stop() reports it. */
typedef struct apext_fail {
    char msg[200];   /* "" when nothing failed */
    uint64_t lost;
} apext_fail;

/* Record a failure of what (the current ap_err message is appended).  Can't
 * fail. */
void apext_fail_note(apext_fail *f, const char *what);

/* If a failure was recorded, warn with a RuntimeWarning saying the profile is
 * incomplete.  Returns 0, or -1 with an exception set (warnings as errors). */
int apext_fail_warn(const apext_fail *f);

/* ---- profiles ----------------------------------------------------------------------- */

/* Intern str object s into p ("?" when s is not a str or not encodable).
 * Returns the id; AP_NONE with AP_ENOMEM.  No Python exception is left. */
uint32_t apext_intern(ap_prof *p, PyObject *s);

/* Set metadata key of p to the current Unix time in ns (ignored on
 * AP_ENOMEM).  Can't fail. */
void apext_meta_time(ap_prof *p, const char *key);

#endif /* APEXT_HOOK_H */

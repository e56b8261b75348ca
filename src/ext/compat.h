/* compat.h -- every CPython version shim of the extension's hooks in one place: monitoring or legacy hooks, pending exceptions, co_extra, the running frame. */
#ifndef APEXT_COMPAT_H
#define APEXT_COMPAT_H

#include "ext.h"

/* AP_MONITORING: 1 where sys.monitoring exists (3.12+), else the C profile
 * and trace hooks of 3.11 are used. */
#if PY_VERSION_HEX >= 0x030C0000
#define AP_MONITORING 1
#else
#define AP_MONITORING 0
#endif

/* AP_SAVE_EXC(e) declares e and moves the pending exception (if any) into
 * it; AP_RESTORE_EXC(e) puts it back.  For code that must call Python and
 * leave the caller's exception state as it found it. */
#if AP_MONITORING
#define AP_SAVE_EXC(e) PyObject *e = PyErr_GetRaisedException()
#define AP_RESTORE_EXC(e) PyErr_SetRaisedException(e)
#else
#define AP_SAVE_EXC(e)                   \
    PyObject *e##_t, *e##_v, *e##_tb;    \
    PyErr_Fetch(&e##_t, &e##_v, &e##_tb)
#define AP_RESTORE_EXC(e) PyErr_Restore(e##_t, e##_v, e##_tb)
#endif

/* The calling thread's PyThreadState, or NULL; no check.  Can't fail. */
static inline PyThreadState *apext_compat_tstate(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* Thread-local variables read on every event: the initial-exec model reads
 * them at a fixed offset from the thread pointer, where the default model of
 * a -fPIC module calls __tls_get_addr at each access.  They take a few dozen
 * bytes of the static TLS reserve the C library keeps for loaded modules. */
#define APEXT_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* co_extra access under its name of each version.  Same contracts as
 * CPython's: 0, or -1 with an exception set. */
static inline Py_ssize_t apext_compat_extra_index(freefunc f) {
#if AP_MONITORING
    return PyUnstable_Eval_RequestCodeExtraIndex(f);
#else
    return _PyEval_RequestCodeExtraIndex(f);
#endif
}

static inline int apext_compat_extra_get(PyObject *code, Py_ssize_t index, void **extra) {
#if AP_MONITORING
    return PyUnstable_Code_GetExtra(code, index, extra);
#else
    return _PyCode_GetExtra(code, index, extra);
#endif
}

/* The same read without a call, for the hot path: co_extra points at a
 * {size, values[size]} block (CPython's layout, unchanged since 3.6; the
 * setter above makes it), or is NULL.  The value at index, or NULL when
 * none is set.  Can't fail. */
typedef struct apext_compat_code_extra {
    Py_ssize_t size;
    void *values[1];
} apext_compat_code_extra;

static inline void *apext_compat_extra_fast(PyObject *code, Py_ssize_t index) {
    const apext_compat_code_extra *e = (const apext_compat_code_extra *)((PyCodeObject *)code)->co_extra;
    return e != NULL && index >= 0 && index < e->size ? e->values[index] : NULL;
}

static inline int apext_compat_extra_set(PyObject *code, Py_ssize_t index, void *extra) {
#if AP_MONITORING
    return PyUnstable_Code_SetExtra(code, index, extra);
#else
    return _PyCode_SetExtra(code, index, extra);
#endif
}

#if AP_MONITORING
/* The running interpreter frame: identifies a generator or coroutine for its
 * lifetime.  Can't fail. */
static inline const void *apext_compat_iframe(void) {
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    return ts->current_frame;
#else
    return ts->cframe->current_frame;
#endif
}
#endif

#endif /* APEXT_COMPAT_H */

/* hook.c -- shared pieces of the extension's event hooks: the co_extra record, thread serials, tool ids, failure notes. */
#include "hook.h"

#include <string.h>
#include <time.h>

#include "ap_err.h"
#include "ap_prof.h"

Py_ssize_t apext_code_index = -1;
static void (*slot_destructor[APEXT_NSLOTS])(void *);

static void free_rec(apext_slot s, void *rec) {
    if (rec == NULL)
        return;
    if (slot_destructor[s] != NULL)
        slot_destructor[s](rec);
    else
        PyMem_RawFree(rec);
}

/* Called by CPython when a code object with our co_extra dies. */
static void code_extra_free(void *p) {
    apext_code_extra *x = p;
    if (x == NULL)
        return;
    for (int s = 0; s < APEXT_NSLOTS; s++)
        free_rec((apext_slot)s, x->rec[s]);
    PyMem_RawFree(x);
}

int apext_code_init(apext_slot s, void (*destructor)(void *rec)) {
    slot_destructor[s] = destructor;
    if (apext_code_index >= 0)
        return 0;
#if AP_MONITORING
    apext_code_index = PyUnstable_Eval_RequestCodeExtraIndex(code_extra_free);
#else
    apext_code_index = _PyEval_RequestCodeExtraIndex(code_extra_free);
#endif
    if (apext_code_index < 0) {
        PyErr_SetString(PyExc_RuntimeError, "apiprof: no co_extra slot is free");
        return -1;
    }
    return 0;
}

int apext_code_set(PyObject *code, apext_slot s, void *rec) {
    void *extra = NULL;
#if AP_MONITORING
    int rc = PyUnstable_Code_GetExtra(code, apext_code_index, &extra);
#else
    int rc = _PyCode_GetExtra(code, apext_code_index, &extra);
#endif
    if (rc < 0) {
        PyErr_Clear();
        return ap_err_set(AP_EINVAL, "co_extra is not readable");
    }
    apext_code_extra *x = extra;
    if (x == NULL) {
        x = PyMem_RawCalloc(1, sizeof *x);
        if (x == NULL)
            return ap_err_set(AP_ENOMEM, "out of memory");
#if AP_MONITORING
        rc = PyUnstable_Code_SetExtra(code, apext_code_index, x);
#else
        rc = _PyCode_SetExtra(code, apext_code_index, x);
#endif
        if (rc < 0) {
            PyErr_Clear();
            PyMem_RawFree(x);
            return ap_err_set(AP_ENOMEM, "co_extra is not writable");
        }
    }
    if (x->rec[s] != rec)
        free_rec(s, x->rec[s]);
    x->rec[s] = rec;
    return 0;
}

static _Thread_local uint64_t tls_thread_serial;
static uint64_t next_thread_serial = 1;   /* protected by the GIL */

uint64_t apext_thread_serial(void) {
    if (tls_thread_serial == 0)
        tls_thread_serial = next_thread_serial++;
    return tls_thread_serial;
}

int apext_thread_label(ap_prof *p, ap_tree *tree, PyObject *threads, unsigned long ident,
                       uint32_t key) {
    if (threads == NULL)
        return 0;
    int done = 0;
    AP_SAVE_EXC(exc);
    PyObject *k = PyLong_FromUnsignedLong(ident);
    PyObject *thread = k ? PyDict_GetItemWithError(threads, k) : NULL;
    PyObject *name = thread ? PyObject_GetAttrString(thread, "_name") : NULL;
    if (name != NULL && PyUnicode_Check(name)) {
        ap_str_id v = apext_intern(p, name);
        done = v != AP_NONE && ap_tree_label_set(tree, key, v) == 0;
    }
    Py_XDECREF(name);
    Py_XDECREF(k);
    PyErr_Clear();
    AP_RESTORE_EXC(exc);
    return done;
}

#if !AP_MONITORING
static int op_resume = -1, op_yield = -1;

int apext_opcodes_init(void) {
    if (op_resume >= 0)
        return 0;
    PyObject *opcode = PyImport_ImportModule("opcode");
    PyObject *opmap = opcode ? PyObject_GetAttrString(opcode, "opmap") : NULL;
    PyObject *r = opmap ? PyDict_GetItemString(opmap, "RESUME") : NULL;
    PyObject *y = opmap ? PyDict_GetItemString(opmap, "YIELD_VALUE") : NULL;
    if (r != NULL && y != NULL) {
        op_resume = (int)PyLong_AsLong(r);
        op_yield = (int)PyLong_AsLong(y);
    }
    Py_XDECREF(opmap);
    Py_XDECREF(opcode);
    if (op_resume < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "apiprof: opcode.opmap has no RESUME");
        return -1;
    }
    return 0;
}

int apext_first_resume(PyObject *bytes) {
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    for (Py_ssize_t i = 0; i + 1 < n; i += 2)
        if (b[i] == op_resume)
            return (int)i;
    return -1;
}

int apext_is_yield(PyObject *bytes, int lasti) {
    return lasti >= 0 && lasti < PyBytes_GET_SIZE(bytes) &&
           (unsigned char)PyBytes_AS_STRING(bytes)[lasti] == op_yield;
}
#endif

#if AP_MONITORING
const void *apext_current_iframe(void) {
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    return ts->current_frame;
#else
    return ts->cframe->current_frame;
#endif
}

static const int tool_order[] = {3, 4, 5, 2, 1, 0};

int apext_mon_use_tool(const char *name) {
    PyObject *mon = PySys_GetObject("monitoring");   /* borrowed */
    if (mon == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "apiprof: sys.monitoring is not available");
        return -1;
    }
    for (size_t i = 0; i < sizeof tool_order / sizeof tool_order[0]; i++) {
        PyObject *r = PyObject_CallMethod(mon, "use_tool_id", "is", tool_order[i], name);
        if (r != NULL) {
            Py_DECREF(r);
            return tool_order[i];
        }
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear();
    }
    PyErr_SetString(PyExc_RuntimeError,
                    "apiprof: every sys.monitoring tool id (0-5) is in use by other tools; "
                    "stop one of them to profile with apiprof");
    return -1;
}

void apext_mon_free_tool(int tool, const char *const *events) {
    PyObject *mon = PySys_GetObject("monitoring");
    if (mon == NULL)
        return;
    AP_SAVE_EXC(exc);
    PyObject *r = PyObject_CallMethod(mon, "set_events", "ii", tool, 0);
    Py_XDECREF(r);
    PyObject *ev_ns = PyObject_GetAttrString(mon, "events");
    for (size_t i = 0; ev_ns != NULL && events[i] != NULL; i++) {
        PyObject *ev = PyObject_GetAttrString(ev_ns, events[i]);
        if (ev != NULL) {
            r = PyObject_CallMethod(mon, "register_callback", "iOO", tool, ev, Py_None);
            Py_XDECREF(r);
            Py_DECREF(ev);
        }
    }
    Py_XDECREF(ev_ns);
    r = PyObject_CallMethod(mon, "free_tool_id", "i", tool);
    Py_XDECREF(r);
    PyErr_Clear();
    AP_RESTORE_EXC(exc);
}
#endif

void apext_fail_note(apext_fail *f, const char *what) {
    if (f->msg[0] == '\0')
        snprintf(f->msg, sizeof f->msg, "%s: %s", what, ap_err_msg());
    f->lost++;
}

int apext_fail_warn(const apext_fail *f) {
    if (f->msg[0] == '\0')
        return 0;
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "apiprof: the profile is incomplete (%s; %llu events lost)", f->msg,
                            (unsigned long long)f->lost);
}

uint32_t apext_intern(ap_prof *p, PyObject *s) {
    if (s == NULL || !PyUnicode_Check(s))
        return ap_prof_intern(p, "?", 1);
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) {
        PyErr_Clear();
        return ap_prof_intern(p, "?", 1);
    }
    return ap_prof_intern(p, u, (size_t)n);
}

void apext_meta_time(ap_prof *p, const char *key) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    ap_prof_meta_set(p, key, v);
}

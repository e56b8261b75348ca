/* install.c -- installing a producer's hooks from its tables: sys.monitoring tool ids, callbacks and event sets on 3.12+, per-thread C hooks and their thread bootstrap on 3.11. */
#include "install.h"

#include "code.h"

#if AP_MONITORING
/* ---- 3.12+: sys.monitoring -------------------------------------------------------- */

static PyObject *g_disable;   /* sys.monitoring.DISABLE; strong */

#if AP_MONITORING
/* ---- callback objects ----------------------------------------------------------------
 * What sys.monitoring calls for each event: a small object whose vectorcall
 * slot calls the event's C function directly.  A builtin function object
 * would do too, but its call path (argument checks, a recursion guard) costs
 * about as many instructions per event as the short path of a hook. */
typedef PyObject *(*fastcall_fn)(PyObject *, PyObject *const *, Py_ssize_t);

typedef struct apext_callback {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    fastcall_fn fn;
} apext_callback;

static PyObject *callback_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames) {
    (void)kwnames;   /* sys.monitoring passes positional arguments only */
    return ((apext_callback *)self)->fn(NULL, args, PyVectorcall_NARGS(nargsf));
}

static void callback_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(type);   /* instances of a heap type hold a reference to it */
}

static PyMemberDef callback_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(apext_callback, vectorcall), Py_READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot callback_slots[] = {
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_dealloc, (void *)callback_dealloc},
    {Py_tp_members, callback_members},
    {0, NULL},
};

static PyType_Spec callback_spec = {
    "apiprof._core._Callback", sizeof(apext_callback), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE, callback_slots};

static PyObject *callback_type;   /* made at the first install; strong */

/* A new callback object calling def's METH_FASTCALL function, or NULL with
 * an exception set. */
static PyObject *callback_new(const PyMethodDef *def) {
    if (callback_type == NULL && (callback_type = PyType_FromSpec(&callback_spec)) == NULL)
        return NULL;
    apext_callback *cb = PyObject_New(apext_callback, (PyTypeObject *)callback_type);
    if (cb == NULL)
        return NULL;
    cb->vectorcall = callback_vectorcall;
    cb->fn = (fastcall_fn)(void (*)(void))def->ml_meth;   /* METH_FASTCALL */
    return (PyObject *)cb;
}
#endif
/* Whether a producer's callback returned DISABLE since the last
 * restart_events(): the locations it disabled stay disabled for the tool id,
 * so its next install (whose filters may differ) must re-enable them.
 * Protected by the GIL. */
static int g_disabled[APEXT_NPRODUCERS];

PyObject *apext_install_disable(apext_producer p) {
    g_disabled[p] = 1;
    return Py_NewRef(g_disable);
}

static const int tool_order[] = {3, 4, 5, 2, 1, 0};

/* Take a free tool id under name.  The id, or -1 with an exception set. */
static int use_tool(PyObject *mon, const char *name) {
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

/* Set the local events of tool on every code object of codes (NULL: none)
 * to mask.  0, or -1 with an exception set (stops at the first failure). */
static int set_local_all(PyObject *mon, int tool, PyObject *codes, long mask) {
    for (Py_ssize_t i = 0; codes != NULL && i < PyList_GET_SIZE(codes); i++) {
        PyObject *r = PyObject_CallMethod(mon, "set_local_events", "iOl", tool,
                                          PyList_GET_ITEM(codes, i), mask);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Clear tool's events (local ones on codes too) and callbacks and free it.
 * Never raises. */
static void free_tool(PyObject *mon, int tool, const apext_hooks *h, PyObject *codes) {
    AP_SAVE_EXC(exc);
    if (set_local_all(mon, tool, codes, 0) < 0)
        PyErr_Clear();
    PyObject *r = PyObject_CallMethod(mon, "set_events", "ii", tool, 0);
    Py_XDECREF(r);
    PyObject *ev_ns = PyObject_GetAttrString(mon, "events");
    for (size_t i = 0; ev_ns != NULL && i < h->nevents; i++) {
        PyObject *ev = PyObject_GetAttrString(ev_ns, h->events[i].name);
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

int apext_install(apext_session *s, apext_hooks *h, int optional, PyObject *codes) {
    PyObject *mon = PySys_GetObject("monitoring");   /* borrowed */
    if (mon == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "apiprof: sys.monitoring is not available");
        return -1;
    }
    int tool = use_tool(mon, h->tool_name);
    if (tool < 0)
        return -1;
    s->tool_id = tool;
    PyObject *events = PyObject_GetAttrString(mon, "events");
    if (g_disable == NULL)
        g_disable = PyObject_GetAttrString(mon, "DISABLE");
    if (events == NULL || g_disable == NULL)
        goto err;
    long global = 0, local = 0;
    for (size_t i = 0; i < h->nevents; i++) {
        const apext_event *e = &h->events[i];
        if ((e->flags & APEXT_EV_OPTIONAL) && !optional)
            continue;
        PyObject *ev = PyObject_GetAttrString(events, e->name);
        if (ev == NULL)
            goto err;
        long bit = PyLong_AsLong(ev);
        PyObject *fn = callback_new(&h->events[i].def);
        PyObject *r =
            fn ? PyObject_CallMethod(mon, "register_callback", "iOO", tool, ev, fn) : NULL;
        Py_DECREF(ev);
        Py_XDECREF(fn);
        if (r == NULL)
            goto err;
        Py_DECREF(r);
        if (e->flags & APEXT_EV_LOCAL)
            local |= bit;
        else
            global |= bit;
    }
    Py_CLEAR(events);
    s->local_events = local;
    PyObject *r = PyObject_CallMethod(mon, "set_events", "il", tool, global);
    if (r == NULL)
        goto err;
    Py_DECREF(r);
    if (set_local_all(mon, tool, codes, local) < 0)
        goto err;
    if (g_disabled[h->producer]) {
        r = PyObject_CallMethod(mon, "restart_events", NULL);
        if (r == NULL)
            goto err;
        Py_DECREF(r);
        for (int p = 0; p < APEXT_NPRODUCERS; p++)
            g_disabled[p] = 0;   /* restart_events() re-enables every tool's locations */
    }
    return 0;
err:
    Py_XDECREF(events);
    free_tool(mon, tool, h, codes);
    return -1;
}

void apext_install_remove(apext_session *s, apext_hooks *h, PyObject *codes) {
    PyObject *mon = PySys_GetObject("monitoring");
    if (mon != NULL)
        free_tool(mon, s->tool_id, h, codes);
}

int apext_install_code(apext_session *s, PyObject *code) {
    PyObject *mon = PySys_GetObject("monitoring");
    PyObject *r = mon ? PyObject_CallMethod(mon, "set_local_events", "iOl", s->tool_id, code,
                                            s->local_events)
                      : NULL;
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

#else
/* ---- 3.11: the C profile or trace function of every thread -------------------------- */

static int set_hook(PyThreadState *ts, const apext_hooks *h, Py_tracefunc fn, PyObject *obj) {
    return h->slot == APEXT_LEGACY_TRACE ? _PyEval_SetTrace(ts, fn, obj)
                                         : _PyEval_SetProfile(ts, fn, obj);
}

/* Installed with threading.setprofile() / settrace(), bound to a capsule of
 * the hooks: runs once in each thread started while the producer runs, as
 * its Python-level function, replaces itself with the C hook and passes the
 * event on. */
static PyObject *thread_bootstrap(PyObject *capsule, PyObject *const *a, Py_ssize_t n) {
    const apext_hooks *h = PyCapsule_GetPointer(capsule, NULL);
    if (h == NULL)
        return NULL;
    PyObject *owner = apext_session_running[h->producer];
    Py_tracefunc fn = owner != NULL ? h->legacy : NULL;
    if (h->slot == APEXT_LEGACY_TRACE)
        PyEval_SetTrace(fn, owner);
    else
        PyEval_SetProfile(fn, owner);
    if (owner == NULL || n != 3 || !PyFrame_Check(a[0]) || !PyUnicode_Check(a[1]))
        Py_RETURN_NONE;
    static const char *const names[] = {"call", "exception", "line", "return",
                                        "c_call", "c_exception", "c_return"};
    for (int i = 0; i < 7; i++) {
        if (PyUnicode_CompareWithASCIIString(a[1], names[i]) == 0) {
            h->legacy(owner, (PyFrameObject *)a[0], i, a[2]);
            break;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef bootstrap_def = {
    "_thread_hook_bootstrap", (PyCFunction)(void (*)(void))thread_bootstrap, METH_FASTCALL, NULL};

static int set_threading_hook(const apext_hooks *h, PyObject *fn) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(
        threading, h->slot == APEXT_LEGACY_TRACE ? "settrace" : "setprofile", "O", fn);
    Py_DECREF(threading);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

int apext_install(apext_session *s, apext_hooks *h, int optional, PyObject *codes) {
    (void)optional;
    (void)codes;
    if (apext_code_opcodes_init() < 0)
        return -1;
    PyThreadState *me = PyThreadState_Get();
    Py_tracefunc busy = h->slot == APEXT_LEGACY_TRACE ? me->c_tracefunc : me->c_profilefunc;
    if (busy != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        h->slot == APEXT_LEGACY_TRACE
                            ? "apiprof: another tracer is active in this thread (sys.settrace: "
                              "a debugger or coverage); stop it first"
                            : "apiprof: another profiler is active in this thread "
                              "(sys.setprofile); stop it first");
        return -1;
    }
    if (h->bootstrap == NULL) {
        PyObject *cap = PyCapsule_New(h, NULL, NULL);
        h->bootstrap = cap ? PyCFunction_New(&bootstrap_def, cap) : NULL;
        Py_XDECREF(cap);
        if (h->bootstrap == NULL)
            return -1;
    }
    if (set_threading_hook(h, h->bootstrap) < 0)
        return -1;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        if (set_hook(ts, h, h->legacy, s->owner) < 0)
            PyErr_Clear();
    }
    return 0;
}

void apext_install_remove(apext_session *s, apext_hooks *h, PyObject *codes) {
    (void)s;
    (void)codes;
    AP_SAVE_EXC(exc);
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts != NULL;
         ts = PyThreadState_Next(ts)) {
        Py_tracefunc cur = h->slot == APEXT_LEGACY_TRACE ? ts->c_tracefunc : ts->c_profilefunc;
        if (cur == h->legacy && set_hook(ts, h, NULL, NULL) < 0)
            PyErr_Clear();
    }
    if (set_threading_hook(h, Py_None) < 0)
        PyErr_Clear();
    AP_RESTORE_EXC(exc);
}

int apext_install_code(apext_session *s, PyObject *code) {
    (void)s;
    (void)code;
    return 0;
}
#endif

/* locks.c -- apiprof._core.TimedLock and TimedRLock: a threading.Lock and RLock whose contended acquisitions are timed for the tracer (`with lock:` makes no call event). */
#include "locks.h"

#include "ap_clock.h"

/* A TimedLock holds a real _thread.lock and forwards every method to it.
 * acquire() first tries without blocking (one call when the lock is free);
 * only when that fails does it time the blocking acquisition and report it
 * (apext_tracer_lock_wait), after it returns, with the GIL held again.  So
 * an uncontended `with lock:` costs one extra method call, and the lock's
 * own semantics (timeouts, signals, errors) are the real lock's. */
typedef struct TimedLockObject {
    PyObject_HEAD
    PyObject *lock;   /* _thread.lock; strong */
} TimedLockObject;

static PyObject *s_acquire, *s_release, *s_locked, *s_reinit;   /* interned names */
static PyObject *allocate_lock;                                 /* _thread.allocate_lock */
static PyObject *make_rlock;                                    /* _thread.RLock */

static PyObject *wrap_new(PyTypeObject *type, PyObject *args, PyObject *kwds, PyObject *make) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0))
        return PyErr_Format(PyExc_TypeError, "%s() takes no arguments", type->tp_name);
    TimedLockObject *self = (TimedLockObject *)type->tp_alloc(type, 0);
    if (self != NULL && (self->lock = PyObject_CallNoArgs(make)) == NULL)
        Py_CLEAR(self);
    return (PyObject *)self;
}

static PyObject *tl_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    return wrap_new(type, args, kwds, allocate_lock);
}

/* A TimedRLock holds a real _thread.RLock: acquire, release and the context
 * manager are TimedLock's (a reentrant acquire by the owner succeeds at the
 * first, non-blocking try, so it is never timed), and every other attribute
 * (_is_owned, _release_save, _acquire_restore that threading.Condition
 * uses, _recursion_count, locked) is the real RLock's. */
static PyObject *tr_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    return wrap_new(type, args, kwds, make_rlock);
}

static PyObject *tr_getattro(PyObject *self, PyObject *name) {
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    PyErr_Clear();
    return PyObject_GetAttr(((TimedLockObject *)self)->lock, name);
}

static int tl_traverse(TimedLockObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->lock);
    return 0;
}

static int tl_clear(TimedLockObject *self) {
    Py_CLEAR(self->lock);
    return 0;
}

static void tl_dealloc(TimedLockObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tl_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

/* acquire(blocking=True, timeout=-1) -> bool, as _thread.lock's. */
static PyObject *tl_acquire(TimedLockObject *self, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames) {
    PyObject *try_args[2] = {self->lock, Py_False};
    PyObject *r = PyObject_VectorcallMethod(s_acquire, try_args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                            NULL);
    if (r != Py_False)   /* acquired (Py_True), or an error (NULL) */
        return r;
    Py_DECREF(r);
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n > 0 && kwnames == NULL && n == 1) {
        int blocking = PyObject_IsTrue(args[0]);
        if (blocking < 0)
            return NULL;
        if (!blocking)
            Py_RETURN_FALSE;
    }
    PyObject *call[4] = {self->lock, NULL, NULL, NULL};
    Py_ssize_t total = n + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    if (total > 2)
        return PyErr_Format(PyExc_TypeError, "acquire() takes at most 2 arguments");
    for (Py_ssize_t i = 0; i < total; i++)
        call[1 + i] = args[i];
    uint64_t t0 = ap_clock_now_ns();
    r = PyObject_VectorcallMethod(s_acquire, call, (size_t)(1 + n), kwnames);
    if (r == Py_True)
        apext_tracer_lock_wait(t0, ap_clock_now_ns());
    return r;
}

static PyObject *tl_enter(TimedLockObject *self, PyObject *Py_UNUSED(a)) {
    return tl_acquire(self, NULL, 0, NULL);
}

static PyObject *tl_forward(TimedLockObject *self, PyObject *name) {
    return PyObject_CallMethodNoArgs(self->lock, name);
}

static PyObject *tl_release(TimedLockObject *self, PyObject *Py_UNUSED(a)) {
    return tl_forward(self, s_release);
}

static PyObject *tl_exit(TimedLockObject *self, PyObject *const *Py_UNUSED(args),
                         Py_ssize_t Py_UNUSED(n)) {
    return tl_forward(self, s_release);
}

static PyObject *tl_locked(TimedLockObject *self, PyObject *Py_UNUSED(a)) {
    return tl_forward(self, s_locked);
}

static PyObject *tl_at_fork_reinit(TimedLockObject *self, PyObject *Py_UNUSED(a)) {
    return tl_forward(self, s_reinit);
}

static PyObject *tl_repr(TimedLockObject *self) {
    PyObject *locked = PyObject_CallMethodNoArgs(self->lock, s_locked);
    if (locked == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("<%s apiprof.TimedLock object at %p>",
                                       locked == Py_True ? "locked" : "unlocked", (void *)self);
    Py_DECREF(locked);
    return r;
}

static PyMethodDef tl_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))tl_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool\n\nAs threading.Lock's; a wait is timed."},
    {"acquire_lock", (PyCFunction)(void (*)(void))tl_acquire, METH_FASTCALL | METH_KEYWORDS,
     "An alias of acquire()."},
    {"__enter__", (PyCFunction)tl_enter, METH_NOARGS, "acquire()"},
    {"release", (PyCFunction)tl_release, METH_NOARGS, "release()"},
    {"release_lock", (PyCFunction)tl_release, METH_NOARGS, "An alias of release()."},
    {"__exit__", (PyCFunction)(void (*)(void))tl_exit, METH_FASTCALL, "release()"},
    {"locked", (PyCFunction)tl_locked, METH_NOARGS, "locked() -> bool"},
    {"locked_lock", (PyCFunction)tl_locked, METH_NOARGS, "An alias of locked()."},
    {"_at_fork_reinit", (PyCFunction)tl_at_fork_reinit, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tl_slots[] = {
    {Py_tp_new, tl_new},
    {Py_tp_dealloc, tl_dealloc},
    {Py_tp_traverse, tl_traverse},
    {Py_tp_clear, tl_clear},
    {Py_tp_repr, tl_repr},
    {Py_tp_methods, tl_methods},
    {Py_tp_doc, "TimedLock()\n\nA threading.Lock whose contended acquisitions (lock.acquire(), "
                "`with lock:`) the running apiprof tracer records as lock waits at the "
                "acquiring line."},
    {0, NULL},
};

static PyType_Spec tl_spec = {
    "apiprof._core.TimedLock", sizeof(TimedLockObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, tl_slots,
};

static PyObject *tr_repr(TimedLockObject *self) {
    return PyUnicode_FromFormat("<apiprof.TimedRLock of %R>", self->lock);
}

static PyMethodDef tr_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))tl_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool\n\nAs threading.RLock's; a wait is timed."},
    {"__enter__", (PyCFunction)tl_enter, METH_NOARGS, "acquire()"},
    {"release", (PyCFunction)tl_release, METH_NOARGS, "release()"},
    {"__exit__", (PyCFunction)(void (*)(void))tl_exit, METH_FASTCALL, "release()"},
    {"_at_fork_reinit", (PyCFunction)tl_at_fork_reinit, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tr_slots[] = {
    {Py_tp_new, tr_new},
    {Py_tp_dealloc, tl_dealloc},
    {Py_tp_traverse, tl_traverse},
    {Py_tp_clear, tl_clear},
    {Py_tp_repr, tr_repr},
    {Py_tp_getattro, tr_getattro},
    {Py_tp_methods, tr_methods},
    {Py_tp_doc, "TimedRLock()\n\nA threading.RLock whose contended acquisitions the running "
                "apiprof tracer records as lock waits at the acquiring line."},
    {0, NULL},
};

static PyType_Spec tr_spec = {
    "apiprof._core.TimedRLock", sizeof(TimedLockObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, tr_slots,
};

int apext_locks_init(PyObject *module) {
    if (s_acquire == NULL &&
        ((s_acquire = PyUnicode_InternFromString("acquire")) == NULL ||
         (s_release = PyUnicode_InternFromString("release")) == NULL ||
         (s_locked = PyUnicode_InternFromString("locked")) == NULL ||
         (s_reinit = PyUnicode_InternFromString("_at_fork_reinit")) == NULL))
        return -1;
    if (allocate_lock == NULL) {
        PyObject *thread = PyImport_ImportModule("_thread");
        if (thread == NULL)
            return -1;
        allocate_lock = PyObject_GetAttrString(thread, "allocate_lock");
        make_rlock = allocate_lock == NULL ? NULL : PyObject_GetAttrString(thread, "RLock");
        Py_DECREF(thread);
        if (make_rlock == NULL)
            return -1;
    }
    PyType_Spec *specs[2] = {&tl_spec, &tr_spec};
    const char *names[2] = {"TimedLock", "TimedRLock"};
    for (int i = 0; i < 2; i++) {
        PyObject *type = PyType_FromModuleAndSpec(module, specs[i], NULL);
        if (type == NULL)
            return -1;
        int rc = PyModule_AddObjectRef(module, names[i], type);
        Py_DECREF(type);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* locks.c -- apiprof._core.TimedLock: a threading.Lock whose contended acquisitions are timed for the tracer (`with lock:` makes no call event). */
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

static PyObject *tl_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0))
        return PyErr_Format(PyExc_TypeError, "TimedLock() takes no arguments");
    TimedLockObject *self = (TimedLockObject *)type->tp_alloc(type, 0);
    if (self != NULL && (self->lock = PyObject_CallNoArgs(allocate_lock)) == NULL)
        Py_CLEAR(self);
    return (PyObject *)self;
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
        Py_DECREF(thread);
        if (allocate_lock == NULL)
            return -1;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &tl_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "TimedLock", type);
    Py_DECREF(type);
    return rc;
}

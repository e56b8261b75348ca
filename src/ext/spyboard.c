/* spyboard.c -- the board apiprof-spy reads beside each sample (ap_spyboard.h). */
#include "spyboard.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ap_spyboard.h"

/* The one board of the process, found by apiprof-spy through this exported name.
 * Written under the GIL (labels, slots taken); heartbeat_ns by the sampler. */
__attribute__((visibility("default"), used)) ap_spyboard apext_spyboard = {
    .magic = AP_SPYBOARD_MAGIC,
};

/* index + 1 of the calling thread's slot; 0: none yet; -1: the board was full. */
static _Thread_local int my_slot;

int apext_spyboard_wanted(uint64_t now_ns) {
    uint64_t beat = __atomic_load_n(&apext_spyboard.heartbeat_ns, __ATOMIC_RELAXED);
    return beat != 0 && (beat > now_ns || now_ns - beat < AP_SPYBOARD_FRESH_NS);
}

uint32_t apext_spyboard_serve(uint32_t label) {
    if (my_slot == 0) {
        uint32_t i = apext_spyboard.nslots;
        if (i >= AP_SPYBOARD_SLOTS) {
            my_slot = -1;
            return 0;
        }
        apext_spyboard.slots[i].tid = (int32_t)syscall(SYS_gettid);
        __atomic_store_n(&apext_spyboard.nslots, i + 1, __ATOMIC_RELEASE);
        my_slot = (int)i + 1;
    }
    if (my_slot < 0)
        return 0;
    uint32_t *at = &apext_spyboard.slots[my_slot - 1].label;
    uint32_t before = *at;
    __atomic_store_n(at, label, __ATOMIC_RELEASE);
    return before;
}

/* The label of the request a context serves (a PyLong, index + 1), set by
 * apext_spyboard_enter().  Made at init. */
static PyObject *label_var;

#if PY_VERSION_HEX >= 0x030E0000
/* The context watcher's id, -1 while none is installed.  Protected by the GIL. */
static int watcher = -1;

/* A thread switched to another context: it serves that context's request now.  Never
 * raises (an error of the lookup is dropped: nothing is served). */
static int on_switch(PyContextEvent event, PyObject *ctx) {
    (void)ctx;
    if (event != Py_CONTEXT_SWITCHED)
        return 0;
    PyObject *value = NULL;
    uint32_t label = 0;
    if (PyContextVar_Get(label_var, NULL, &value) < 0)
        PyErr_Clear();
    else if (value != NULL && PyLong_CheckExact(value))
        label = (uint32_t)PyLong_AsUnsignedLong(value);
    Py_XDECREF(value);
    if (PyErr_Occurred())
        PyErr_Clear();
    apext_spyboard_serve(label);
    return 0;
}
#endif

int apext_spyboard_enter(uint32_t label) {
    PyObject *value = PyLong_FromUnsignedLong(label);
    PyObject *token = value ? PyContextVar_Set(label_var, value) : NULL;
    Py_XDECREF(value);
    if (token == NULL)
        return -1;
    Py_DECREF(token);
#if PY_VERSION_HEX >= 0x030E0000
    if (watcher < 0 && (watcher = PyContext_AddWatcher(on_switch)) < 0) {
        PyErr_Clear();   /* no watcher slot left: thread-pool work goes unlabelled */
        watcher = -2;
    }
#endif
    return 0;
}

void apext_spyboard_idle(void) {
#if PY_VERSION_HEX >= 0x030E0000
    if (watcher >= 0) {
        if (PyContext_ClearWatcher(watcher) < 0)
            PyErr_Clear();
        watcher = -1;
    }
#endif
}

int apext_spyboard_init(void) {
    if (label_var == NULL && (label_var = PyContextVar_New("apiprof_spy_route", NULL)) == NULL)
        return -1;
    return 0;
}

/* spy_label(name) -> int: name's index + 1 on the board, added once (the caller keeps
 * the mapping); 0 when the board has no room.  Needs the GIL. */
static PyObject *spy_label(PyObject *Py_UNUSED(m), PyObject *arg) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL)
        return NULL;
    uint32_t i = apext_spyboard.nlabels;
    if (i >= AP_SPYBOARD_LABELS)
        return PyLong_FromLong(0);
    size_t len = (size_t)n < AP_SPYBOARD_LABEL_MAX ? (size_t)n : AP_SPYBOARD_LABEL_MAX;
    memcpy(apext_spyboard.labels[i], s, len);
    apext_spyboard.labels[i][len] = '\0';
    __atomic_store_n(&apext_spyboard.nlabels, i + 1, __ATOMIC_RELEASE);
    return PyLong_FromUnsignedLong(i + 1);
}

PyMethodDef apext_spyboard_methods[] = {
    {"spy_label", spy_label, METH_O,
     "spy_label(name) -> int\n\nname (a route label) added to the board apiprof-spy reads;\n"
     "its index + 1, or 0 when the board is full.  Each call adds one: keep the result."},
    {NULL, NULL, 0, NULL},
};

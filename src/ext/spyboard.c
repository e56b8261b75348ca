/* spyboard.c -- the board apiprof-spy reads beside each sample (ap_spyboard.h). */
#include "spyboard.h"

#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ap_clock.h"
#include "ap_spyboard.h"
#include "spy_layout.h"

/* The one board of the process, found by apiprof-spy through this exported name.
 * Written under the GIL (labels, slots taken); heartbeat_ns by the sampler. */
__attribute__((visibility("default"), used)) ap_spyboard apext_spyboard = {
    .magic = AP_SPYBOARD_MAGIC,
};

/* index + 1 of the calling thread's slot; 0: none yet; -1: the board was full. */
static _Thread_local int my_slot;

/* Frees the calling thread's slot when it exits (its value: the slot's index + 1). */
static pthread_key_t slot_key;

static void slot_free(void *value) {
    ap_spyboard_slot *sl = &apext_spyboard.slots[(uintptr_t)value - 1];
    __atomic_store_n(&sl->label, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&sl->tid, 0, __ATOMIC_RELEASE);
}

/* A forked child has its own threads: the copy of the board starts empty, unread. */
static void after_fork_in_child(void) {
    my_slot = 0;
    memset(apext_spyboard.slots, 0, sizeof apext_spyboard.slots);
    apext_spyboard.nslots = 0;
    memset(apext_spyboard.requests, 0, sizeof apext_spyboard.requests);
    apext_spyboard.nrequests = 0;
    apext_spyboard.heartbeat_ns = 0;
}

int apext_spyboard_wanted(void) {
    uint64_t beat = __atomic_load_n(&apext_spyboard.heartbeat_ns, __ATOMIC_RELAXED);
    if (beat == 0)
        return 0;
    uint64_t now = ap_clock_mono_ns();   /* the sampler's clock, CLOCK_MONOTONIC */
    return (beat > now ? beat - now : now - beat) < AP_SPYBOARD_FRESH_NS;
}

/* The calling thread's slot: a free one (its thread exited) or the next.  0 when the
 * board is full. */
static int take_slot(void) {
    int32_t tid = (int32_t)syscall(SYS_gettid);
    uint32_t n = apext_spyboard.nslots, i = 0;
    while (i < n && __atomic_load_n(&apext_spyboard.slots[i].tid, __ATOMIC_ACQUIRE) != 0)
        i++;
    if (i == AP_SPYBOARD_SLOTS)
        return 0;
    apext_spyboard.slots[i].label = 0;
    __atomic_store_n(&apext_spyboard.slots[i].tid, tid, __ATOMIC_RELEASE);
    if (i == n)
        __atomic_store_n(&apext_spyboard.nslots, n + 1, __ATOMIC_RELEASE);
    (void)pthread_setspecific(slot_key, (void *)(uintptr_t)(i + 1));
    return (int)i + 1;
}

apext_spy_serving apext_spyboard_serve(apext_spy_serving now) {
    apext_spy_serving before = {0, 0};
    if (my_slot == 0) {
        if (now.label == 0)   /* a thread serving nothing needs no slot */
            return before;
        my_slot = take_slot();
        if (my_slot == 0)
            my_slot = -1;
    }
    if (my_slot < 0)
        return before;
    ap_spyboard_slot *at = &apext_spyboard.slots[my_slot - 1];
    before.label = at->label;
    before.request = at->request;
    /* the label last: a sampler that reads a label reads it with its request (it reads
     * the slot again after its sample, and drops a label that changed meanwhile) */
    __atomic_store_n(&at->label, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&at->request, now.request, __ATOMIC_RELEASE);
    __atomic_store_n(&at->label, now.label, __ATOMIC_RELEASE);
    return before;
}

/* Where the search for a free request entry starts: after the last one taken. */
static uint32_t request_hint;

uint32_t apext_spyboard_request_in(uint64_t id, PyObject *coro, uint32_t label, uint64_t t0_ns) {
    uint32_t n = apext_spyboard.nrequests, i = request_hint;
    for (uint32_t k = 0; k < n; k++, i++) {
        if (i >= n)
            i = 0;
        if (apext_spyboard.requests[i].id == 0)
            goto found;
    }
    if (n == AP_SPYBOARD_REQUESTS)
        return 0;
    i = n;
found:;
    ap_spyboard_request *e = &apext_spyboard.requests[i];
    e->coro = (uint64_t)(uintptr_t)coro;
    e->t0_ns = t0_ns;
    e->vars = 0;
    e->label = label;
    __atomic_store_n(&e->id, id, __ATOMIC_RELEASE);
    if (i == n)
        __atomic_store_n(&apext_spyboard.nrequests, n + 1, __ATOMIC_RELEASE);
    request_hint = i + 1;
    return i + 1;
}

void apext_spyboard_request_context(uint32_t entry) {
    static const spy_layout *lay;
    if (entry == 0)
        return;
    if (lay == NULL && (lay = spy_layout_get(PY_MINOR_VERSION)) == NULL)
        return;
    PyObject *ctx = PyThreadState_Get()->context;   /* the task's, just set */
    if (ctx == NULL)
        return;
    uint64_t vars;
    memcpy(&vars, (const char *)ctx + lay->ctx_vars, sizeof vars);
    __atomic_store_n(&apext_spyboard.requests[entry - 1].vars, vars, __ATOMIC_RELEASE);
}

void apext_spyboard_request_out(uint32_t entry) {
    if (entry != 0)
        __atomic_store_n(&apext_spyboard.requests[entry - 1].id, 0, __ATOMIC_RELEASE);
}

/* What the request a context serves is (a PyLong: its number * LABEL_SPAN + its label's
 * index + 1), set by apext_spyboard_enter().  Made at init. */
#define LABEL_SPAN 512u
_Static_assert(LABEL_SPAN > AP_SPYBOARD_LABELS, "a label's index + 1 fits below LABEL_SPAN");
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
    unsigned long long what = 0;
    if (PyContextVar_Get(label_var, NULL, &value) < 0)
        PyErr_Clear();
    else if (value != NULL && PyLong_CheckExact(value))
        what = PyLong_AsUnsignedLongLong(value);
    Py_XDECREF(value);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        what = 0;
    }
    apext_spyboard_serve((apext_spy_serving){(uint32_t)(what % LABEL_SPAN), what / LABEL_SPAN});
    return 0;
}
#endif

int apext_spyboard_enter(apext_spy_serving now) {
    PyObject *value = PyLong_FromUnsignedLongLong(now.request * LABEL_SPAN + now.label);
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

void apext_spyboard_via(uint32_t off) {
    apext_spyboard.via_coro = off;
}

int apext_spyboard_init(void) {
    if (label_var != NULL)
        return 0;
    if ((label_var = PyContextVar_New("apiprof_spy_route", NULL)) == NULL)
        return -1;
    if (pthread_key_create(&slot_key, slot_free) != 0 ||
        pthread_atfork(NULL, NULL, after_fork_in_child) != 0) {
        Py_CLEAR(label_var);
        PyErr_SetString(PyExc_OSError, "cannot set up the sampler's board");
        return -1;
    }
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
    while (len < (size_t)n && len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
        len--;   /* cut on a character boundary */
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

/* stallwatch.c -- the middleware's stall watchdog: a thread that captures the call path of an event loop's thread while one step of a request has been running too long. */
#include "stallwatch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ap_clock.h"
#include "ap_wait.h"
#include "compat.h"

/* A watched thread.  used, step_t0 and seq are read by the watchdog without the GIL;
 * everything else is touched under the GIL (tstate, captured, cap) or by one side only
 * (depth: the owner; seen: the watchdog). */
typedef struct slot {
    _Atomic int used;
    _Atomic uint64_t step_t0;   /* the open step's start, 0: none */
    _Atomic uint64_t seq;       /* steps begun; never reset, so a slot's reuse is new */
    PyThreadState *tstate;      /* the owner's, refreshed at each step */
    unsigned depth;             /* steps open (nested), owner only */
    uint64_t seen;              /* watchdog only: the step it last looked at */
    uint64_t captured;          /* the step cap belongs to, 0: cap is empty */
    apext_stall_capture cap;
} slot;

static slot slots[APEXT_STALLWATCH_SLOTS];
static APEXT_TLS slot *my_slot;
static pthread_key_t slot_key;
static int key_ready, atexit_ready;

static _Atomic uint64_t watch_ns;   /* the threshold; 0: not watching */
static _Atomic int stopping;
static int started;                 /* the watchdog runs in this process (under the GIL) */
static pthread_t watcher;

/* ---- the watched threads --------------------------------------------------------- */

/* A thread exits: its slot is free again (its steps are over). */
static void slot_free(void *p) {
    slot *s = p;
    s->depth = 0;
    atomic_store(&s->step_t0, 0);
    atomic_store(&s->used, 0);
}

static slot *claim(void) {
    if (!key_ready)
        return NULL;
    for (size_t i = 0; i < APEXT_STALLWATCH_SLOTS; i++) {
        int free_ = 0;
        if (atomic_compare_exchange_strong(&slots[i].used, &free_, 1)) {
            slots[i].depth = 0;
            if (pthread_setspecific(slot_key, &slots[i]) != 0) {
                atomic_store(&slots[i].used, 0);
                return NULL;
            }
            my_slot = &slots[i];
            return my_slot;
        }
    }
    return NULL;
}

/* In the child of fork(): only the forking thread is left, and no watchdog. */
static void after_fork_in_child(void) {
    started = 0;
    atomic_store(&stopping, 0);
    for (size_t i = 0; i < APEXT_STALLWATCH_SLOTS; i++) {
        slot *s = &slots[i];
        if (s == my_slot)
            continue;
        s->depth = 0;
        s->captured = 0;
        s->cap.n = 0;   /* references of gone threads' captures: left behind */
        atomic_store(&s->step_t0, 0);
        atomic_store(&s->used, 0);
    }
}

/* ---- the watchdog ------------------------------------------------------------------- */

/* Under the GIL: the call path of s's thread, now, for step seq. */
static void capture(slot *s, uint64_t seq) {
    apext_stallwatch_release(&s->cap);
    PyFrameObject *f = PyThreadState_GetFrame(s->tstate);
    int n = 0;
    while (f != NULL && n < APEXT_STALLWATCH_FRAMES) {
        s->cap.code[n] = PyFrame_GetCode(f);
        s->cap.line[n] = PyFrame_GetLineNumber(f);
        n++;
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    s->cap.n = n;
    s->captured = n > 0 ? seq : 0;
}

static void nap(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && !atomic_load(&stopping))
        ;
}

static void *watch_main(void *arg) {
    (void)arg;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState *me = PyEval_SaveThread();
    while (!atomic_load(&stopping)) {
        uint64_t limit = atomic_load(&watch_ns);
        uint64_t period = limit ? limit / 4 : 100000000u;
        nap(period < 1000000u ? 1000000u : period > 250000000u ? 250000000u : period);
        if (limit == 0 || atomic_load(&stopping))
            continue;
        uint64_t now = ap_clock_now_ns();
        for (size_t i = 0; i < APEXT_STALLWATCH_SLOTS; i++) {
            slot *s = &slots[i];
            if (!atomic_load(&s->used))
                continue;
            uint64_t t0 = atomic_load(&s->step_t0), seq = atomic_load(&s->seq);
            if (t0 == 0 || now < t0 + limit / 2 || seq == s->seen)
                continue;
            s->seen = seq;
            PyEval_RestoreThread(me);
            /* the same step still open: its thread is inside it, its state alive */
            if (!atomic_load(&stopping) && atomic_load(&s->used) &&
                atomic_load(&s->step_t0) == t0 && atomic_load(&s->seq) == seq)
                capture(s, seq);
            me = PyEval_SaveThread();
        }
    }
    PyEval_RestoreThread(me);
    PyGILState_Release(g);
    return NULL;
}

static PyObject *stop_watch(PyObject *m, PyObject *Py_UNUSED(a)) {
    (void)m;
    if (started) {
        atomic_store(&stopping, 1);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(watcher, NULL);
        Py_END_ALLOW_THREADS
        started = 0;
        atomic_store(&stopping, 0);
    }
    Py_RETURN_NONE;
}

PyMethodDef apext_stallwatch_methods[] = {
    {"_stall_watch_stop", stop_watch, METH_NOARGS,
     "_stall_watch_stop(): stop the stall watchdog thread (at interpreter exit)."},
    {NULL, NULL, 0, NULL},
};

/* Start the watchdog in this process.  0, or -1 with an exception. */
static int start(void) {
    if (!key_ready) {
        if (pthread_key_create(&slot_key, slot_free) != 0 ||
            pthread_atfork(NULL, NULL, after_fork_in_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "apiprof: the stall watchdog cannot keep "
                                                "per-thread state");
            return -1;
        }
        key_ready = 1;
    }
    if (!atexit_ready) {
        PyObject *mod = PyImport_ImportModule("apiprof._core");
        PyObject *stop = mod ? PyObject_GetAttrString(mod, "_stall_watch_stop") : NULL;
        PyObject *atexit = stop ? PyImport_ImportModule("atexit") : NULL;
        PyObject *r = atexit ? PyObject_CallMethod(atexit, "register", "O", stop) : NULL;
        Py_XDECREF(mod);
        Py_XDECREF(stop);
        Py_XDECREF(atexit);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        atexit_ready = 1;
    }
    atomic_store(&stopping, 0);
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setstacksize(&attr, 256 * 1024);
        rc = pthread_create(&watcher, &attr, watch_main, NULL);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "apiprof: cannot start the stall watchdog: %s",
                     strerror(rc));
        return -1;
    }
    started = 1;
    return 0;
}

int apext_stallwatch_set(uint64_t threshold_ns) {
    atomic_store(&watch_ns, threshold_ns);
    return threshold_ns != 0 && !started ? start() : 0;
}

/* ---- the steps ------------------------------------------------------------------------ */

void apext_stallwatch_step_in(uint64_t now) {
    if (atomic_load_explicit(&watch_ns, memory_order_relaxed) == 0)
        return;
    slot *s = my_slot;
    if (s == NULL && (s = claim()) == NULL)
        return;
    if (s->depth++ != 0)
        return;
    if (!started && start() < 0) {   /* a forked child's first step */
        PyErr_WriteUnraisable(NULL);
        atomic_store(&watch_ns, 0);
        s->depth = 0;
        return;
    }
    s->tstate = PyThreadState_Get();
    atomic_store_explicit(&s->seq, atomic_load_explicit(&s->seq, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&s->step_t0, now, memory_order_release);
}

int apext_stallwatch_step_out(apext_stall_capture *out) {
    slot *s = my_slot;
    if (s == NULL || s->depth == 0 || --s->depth != 0)
        return 0;
    atomic_store_explicit(&s->step_t0, 0, memory_order_release);
    if (s->captured == 0)
        return 0;
    int mine = s->captured == atomic_load_explicit(&s->seq, memory_order_relaxed);
    s->captured = 0;
    if (!mine) {
        apext_stallwatch_release(&s->cap);
        return 0;
    }
    memcpy(out, &s->cap, sizeof *out);
    s->cap.n = 0;
    return 1;
}

void apext_stallwatch_release(apext_stall_capture *c) {
    for (int i = 0; i < c->n; i++)
        Py_CLEAR(c->code[i]);
    c->n = 0;
}

/* ---- the site ----------------------------------------------------------------------- */

static const char *code_file(PyCodeObject *co) {
    const char *s = PyUnicode_AsUTF8(co->co_filename);
    if (s == NULL)
        PyErr_Clear();
    return s ? s : "?";
}

static const char *code_qualname(PyCodeObject *co) {
    const char *s = PyUnicode_AsUTF8(co->co_qualname);
    if (s == NULL)
        PyErr_Clear();
    return s ? s : "?";
}

static int app_code(PyCodeObject *co) {
    const char *f = code_file(co);
    return !ap_wait_library_file(f) && !ap_wait_generated_file(f);
}

size_t apext_stallwatch_site(const apext_stall_capture *c, char *buf, size_t cap) {
    if (cap == 0)
        return 0;
    buf[0] = '\0';
    if (c->n == 0)
        return 0;
    int at = 0;   /* the culprit: the innermost frame of the app's code, else the innermost */
    while (at < c->n && !app_code(c->code[at]))
        at++;
    if (at == c->n)
        at = 0;
    PyCodeObject *co = c->code[at];
    int len = snprintf(buf, cap, "%s\t%s\t%d\t", code_qualname(co), code_file(co), c->line[at]);
    if (len < 0 || (size_t)len >= cap) {
        buf[cap - 1] = '\0';
        return strlen(buf);
    }
    size_t n = (size_t)len;
    /* the app's frames from the culprit outwards, at most 8, written outermost first */
    int path[8], np = 0;
    for (int i = at; i < c->n && np < 8; i++)
        if (i == at || app_code(c->code[i]))
            path[np++] = i;
    for (int k = np - 1; k >= 0 && n + 1 < cap; k--) {
        int w = snprintf(buf + n, cap - n, "%s%s", k == np - 1 ? "" : " > ",
                         code_qualname(c->code[path[k]]));
        if (w < 0 || (size_t)w >= cap - n) {
            buf[cap - 1] = '\0';
            return strlen(buf);
        }
        n += (size_t)w;
    }
    return n;
}

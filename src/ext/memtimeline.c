/* memtimeline.c -- apiprof._core.MemoryTimeline: a C thread samples the process's RSS and the traced heap on an interval; the points go into the tracer's profile under the GIL. */
#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ap_clock.h"
#include "ap_memtl.h"
#include "session.h"

/* ---- design ------------------------------------------------------------------------------
 * The sampler is a pthread that never touches Python or the profile: every
 * interval it reads /proc/self/statm (one pread of an fd opened at start())
 * and the running MemoryTracker's live bytes (apext_memory_live_now, under
 * the tracker's spin lock), and appends a point to a buffer of its own under
 * `mu`.  Under the GIL, flush() (also at stop(), and whenever the Profiler
 * hands out its profile or saves a checkpoint) moves the buffered points
 * into the tracer's profile (ap_prof_mem_add).  So nothing runs on the
 * application's threads but the flush, and the cost is one system call per
 * interval on a thread of its own.
 *
 * The phase of a point is an atomic string id of the profile, set by
 * phase() under the GIL (which also takes a point then, so that a phase's
 * band starts at its switch).
 *
 * One timeline runs at a time (tl_running, written under the GIL).  In a
 * child of fork() its thread is gone: the atfork handler makes the lock new
 * and marks the thread dead, and after_fork() (called by the Python layer's
 * at-fork hook) starts a new one. */

typedef struct MemoryTimelineObject {
    PyObject_HEAD
    PyObject *tracer;          /* apiprof._core.Tracer whose profile gets the points; strong */
    uint64_t interval_ns;
    int running;               /* under the GIL */
    int thread_alive;          /* under the GIL */
    pthread_t thread;
    int statm_fd;              /* -1: RSS not readable */
    uint64_t page;
    _Atomic uint32_t phase;    /* string id in the tracer's profile, 0: none */
    /* Under mu: */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;
    ap_mem_point *pts;
    size_t n, cap;
    uint64_t lost;             /* points not kept (out of memory) */
} MemoryTimelineObject;

static MemoryTimelineObject *tl_running;

static uint64_t read_rss(const MemoryTimelineObject *t) {
    char buf[128];
    if (t->statm_fd < 0)
        return 0;
    ssize_t n = pread(t->statm_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* "size resident shared text lib data dt", in pages */
    char *p = strchr(buf, ' ');
    return p != NULL ? strtoull(p + 1, NULL, 10) * t->page : 0;
}

/* Take a point now; any thread.  Can't fail (a lost point is counted). */
static void take(MemoryTimelineObject *t) {
    uint64_t live;
    ap_mem_point pt = {ap_clock_now_ns(), read_rss(t),
                       apext_memory_live_now(&live) ? live : AP_MEMTL_NO_HEAP,
                       atomic_load_explicit(&t->phase, memory_order_relaxed)};
    pthread_mutex_lock(&t->mu);
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        ap_mem_point *p = realloc(t->pts, cap * sizeof *p);   /* libc: never the PyMem hook */
        if (p == NULL) {
            t->lost++;
            pthread_mutex_unlock(&t->mu);
            return;
        }
        t->pts = p;
        t->cap = cap;
    }
    t->pts[t->n++] = pt;
    pthread_mutex_unlock(&t->mu);
}

static void *sampler(void *arg) {
    MemoryTimelineObject *t = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&t->mu);
    while (!t->quit) {
        uint64_t ns = (uint64_t)next.tv_nsec + t->interval_ns;
        next.tv_sec += (time_t)(ns / 1000000000u);
        next.tv_nsec = (long)(ns % 1000000000u);
        int rc = 0;
        while (!t->quit && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&t->cv, &t->mu, &next);
        if (t->quit)
            break;
        pthread_mutex_unlock(&t->mu);
        take(t);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static int start_thread(MemoryTimelineObject *t) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->quit = 0;
    /* The thread must not get signals meant for the program's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, sampler, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&t->cv);
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    t->thread_alive = 1;
    return 0;
}

static void stop_thread(MemoryTimelineObject *t) {
    if (!t->thread_alive)
        return;
    pthread_mutex_lock(&t->mu);
    t->quit = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(t->thread, NULL);
    Py_END_ALLOW_THREADS
    pthread_cond_destroy(&t->cv);
    t->thread_alive = 0;
}

/* Move the buffered points into the tracer's profile, in time order (the
 * sampler and phase() may append out of order by a few ns).  GIL held.
 * 0, or -1 with an exception set. */
static int flush(MemoryTimelineObject *t) {
    ap_prof *prof = ((apext_object *)t->tracer)->sess.prof;
    pthread_mutex_lock(&t->mu);
    ap_mem_point *pts = t->pts;
    size_t n = t->n;
    t->pts = NULL;
    t->n = t->cap = 0;
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && pts[j].t_ns < pts[j - 1].t_ns; j--) {
            ap_mem_point x = pts[j];
            pts[j] = pts[j - 1];
            pts[j - 1] = x;
        }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = ap_prof_mem_add(prof, &pts[i]);
    free(pts);
    if (rc != 0) {
        apext_raise_core("memory timeline");
        return -1;
    }
    return 0;
}

/* ---- the Python type ---------------------------------------------------------------------- */

static PyObject *tl_start(MemoryTimelineObject *t, PyObject *Py_UNUSED(a)) {
    if (t->running)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: this memory timeline is already running");
    if (tl_running != NULL)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: another memory timeline is running");
    ap_prof *prof = ((apext_object *)t->tracer)->sess.prof;
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)t->interval_ns);
    if (ap_prof_meta_set(prof, "memory_interval_ns", s) != 0)
        return apext_raise_core("memory timeline");
    t->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    long page = sysconf(_SC_PAGESIZE);
    t->page = page > 0 ? (uint64_t)page : 4096;
    take(t);   /* the first point: now */
    if (start_thread(t) != 0) {
        if (t->statm_fd >= 0)
            close(t->statm_fd);
        t->statm_fd = -1;
        return NULL;
    }
    t->running = 1;
    tl_running = t;
    Py_INCREF(t);   /* the thread holds it while running */
    Py_RETURN_NONE;
}

static PyObject *tl_stop(MemoryTimelineObject *t, PyObject *Py_UNUSED(a)) {
    if (!t->running)
        Py_RETURN_NONE;
    stop_thread(t);
    take(t);   /* the last point: now */
    t->running = 0;
    tl_running = NULL;
    if (t->statm_fd >= 0)
        close(t->statm_fd);
    t->statm_fd = -1;
    int rc = flush(t);
    if (t->lost) {
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)t->lost);
        ap_prof_meta_set(((apext_object *)t->tracer)->sess.prof, "memory_timeline_lost", s);
    }
    Py_DECREF(t);
    if (rc != 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *tl_flush(MemoryTimelineObject *t, PyObject *Py_UNUSED(a)) {
    if (flush(t) != 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *tl_phase(MemoryTimelineObject *t, PyObject *name) {
    uint32_t id = 0;
    if (name != Py_None) {
        Py_ssize_t len;
        const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &len) : NULL;
        if (s == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "phase must be a str or None, not %.100s",
                             Py_TYPE(name)->tp_name);
            return NULL;
        }
        id = ap_prof_intern(((apext_object *)t->tracer)->sess.prof, s, (size_t)len);
        if (id == AP_NONE)
            return apext_raise_core("memory timeline");
    }
    atomic_store_explicit(&t->phase, id, memory_order_relaxed);
    if (t->running)
        take(t);
    Py_RETURN_NONE;
}

static PyObject *tl_after_fork(MemoryTimelineObject *t, PyObject *Py_UNUSED(a)) {
    if (t->running && !t->thread_alive && start_thread(t) != 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *tl_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tracer", "interval_ns", NULL};
    PyObject *tracer;
    unsigned long long interval = 100000000ull;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$K:MemoryTimeline", kwlist, &tracer,
                                     &interval))
        return NULL;
    apext_state *st = apext_state_of_type(type);
    if (!PyObject_TypeCheck(tracer, st->tracer_type))
        return PyErr_Format(PyExc_TypeError, "tracer must be an apiprof._core.Tracer");
    if (interval < 1000000ull || interval > 3600000000000ull)
        return PyErr_Format(PyExc_ValueError, "interval_ns must be 1 ms to 1 hour");
    MemoryTimelineObject *t = (MemoryTimelineObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->tracer = Py_NewRef(tracer);
    t->interval_ns = interval;
    t->statm_fd = -1;
    pthread_mutex_init(&t->mu, NULL);
    return (PyObject *)t;
}

static int tl_traverse(MemoryTimelineObject *t, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->tracer);
    return 0;
}

static int tl_clear(MemoryTimelineObject *t) {
    Py_CLEAR(t->tracer);
    return 0;
}

static void tl_dealloc(MemoryTimelineObject *t) {
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    tl_clear(t);   /* never running here: the thread holds a reference */
    free(t->pts);
    pthread_mutex_destroy(&t->mu);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyObject *tl_get_running(MemoryTimelineObject *t, void *Py_UNUSED(c)) {
    return PyBool_FromLong(t->running);
}

static PyObject *tl_get_interval(MemoryTimelineObject *t, void *Py_UNUSED(c)) {
    return PyLong_FromUnsignedLongLong(t->interval_ns);
}

static PyMethodDef tl_methods[] = {
    {"start", (PyCFunction)tl_start, METH_NOARGS,
     "start()\n\nTake a point now and start the sampling thread."},
    {"stop", (PyCFunction)tl_stop, METH_NOARGS,
     "stop()\n\nStop the thread, take a last point and move every point into the tracer's "
     "profile.  A no-op when not running."},
    {"flush", (PyCFunction)tl_flush, METH_NOARGS,
     "flush()\n\nMove the points taken so far into the tracer's profile."},
    {"phase", (PyCFunction)tl_phase, METH_O,
     "phase(name)\n\nLabel the points from now on with phase name (None: no phase), and take "
     "one now."},
    {"after_fork", (PyCFunction)tl_after_fork, METH_NOARGS,
     "after_fork()\n\nIn a child of fork(): start the sampling thread again when running."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tl_getset[] = {
    {"running", (getter)tl_get_running, NULL, "Whether the sampling thread runs.", NULL},
    {"interval_ns", (getter)tl_get_interval, NULL, "Nanoseconds between points.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static const char tl_doc[] =
    "MemoryTimeline(tracer, *, interval_ns=100000000)\n\nMemory over time (use "
    "apiprof.Profiler(memory_interval=...)): a C thread takes a point every interval_ns "
    "(process RSS from /proc/self/statm, and the running MemoryTracker's live bytes) into "
    "tracer's profile (the JSON export's \"memory_timeline\", the HTML report's chart).";

/* In a child of fork() only the forking thread lives on: the sampler is
 * gone and its lock may be held. */
static void after_fork_in_child(void) {
    MemoryTimelineObject *t = tl_running;
    if (t == NULL)
        return;
    pthread_mutex_init(&t->mu, NULL);
    t->thread_alive = 0;
}

int apext_memtimeline_init(PyObject *module, apext_state *st) {
    (void)st;
    static int atfork;
    if (!atfork && pthread_atfork(NULL, NULL, after_fork_in_child) == 0)
        atfork = 1;
    PyType_Slot slots[] = {
        {Py_tp_new, tl_new},
        {Py_tp_dealloc, tl_dealloc},
        {Py_tp_traverse, tl_traverse},
        {Py_tp_clear, tl_clear},
        {Py_tp_methods, tl_methods},
        {Py_tp_getset, tl_getset},
        {Py_tp_doc, (void *)tl_doc},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = "apiprof._core.MemoryTimeline",
        .basicsize = (int)sizeof(MemoryTimelineObject),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
        .slots = slots,
    };
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddType(module, type);
    Py_DECREF(type);
    return rc;
}

/* session.c -- the producer registry: sessions, their start and stop, generations, failure notes. */
#include "session.h"

#include <string.h>
#include <time.h>

#include "ap_err.h"
#include "stack.h"

PyObject *apext_session_running[APEXT_NPRODUCERS];
uint64_t apext_session_generation[APEXT_NPRODUCERS];
static uint64_t next_serial = 1;   /* protected by the GIL */

/* Set metadata key of p to the current Unix time in ns (ignored on
 * AP_ENOMEM). */
static void meta_time(ap_prof *p, const char *key) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    ap_prof_meta_set(p, key, v);
}

uint32_t apext_session_intern(ap_prof *p, PyObject *s) {
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

int apext_session_init(apext_session *s, apext_producer p, PyObject *owner,
                       const apext_session_ops *ops, const char *noun, const char *tool,
                       int cpu_clock, size_t frame_size) {
    s->producer = p;
    s->ops = ops;
    s->owner = owner;
    s->noun = noun;
    s->serial = next_serial++;
    s->cpu_clock = cpu_clock;
    s->frame_size = frame_size;
    s->phase = AP_NONE;
    s->prof = ap_prof_new();
    if (s->prof == NULL)
        goto nomem;
    s->k_thread = ap_prof_intern(s->prof, "thread", 6);
    s->k_thread_id = ap_prof_intern(s->prof, "thread_id", 9);
    s->k_phase = ap_prof_intern(s->prof, "phase", 5);
    if (s->k_thread == AP_NONE || s->k_thread_id == AP_NONE || s->k_phase == AP_NONE ||
        ap_prof_meta_set(s->prof, "clock", cpu_clock ? "cpu" : "wall") != 0 ||
        ap_prof_meta_set(s->prof, "tool", tool) != 0 ||
        ap_prof_meta_set(s->prof, "python", Py_GetVersion()) != 0)
        goto nomem;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

void apext_session_free(apext_session *s) {
    apext_stack_free(s);
    ap_prof_free(s->prof);
    s->prof = NULL;
}

int apext_session_start(apext_session *s) {
    apext_producer p = s->producer;
    if (apext_session_running[p] == s->owner) {
        PyErr_Format(PyExc_RuntimeError, "apiprof: this %s is already running", s->noun);
        return -1;
    }
    if (apext_session_running[p] != NULL) {
        PyErr_Format(PyExc_RuntimeError, "apiprof: another apiprof %s is running", s->noun);
        return -1;
    }
    if (ap_prof_meta_get(s->prof, "started") == NULL)
        meta_time(s->prof, "started");
    apext_session_generation[p]++;
    apext_session_running[p] = s->owner;
    s->running = 1;
    if (s->ops->install(s->owner) < 0) {
        apext_session_running[p] = NULL;
        s->running = 0;
        return -1;
    }
    Py_INCREF(s->owner);   /* the hooks hold it while running */
    return 0;
}

int apext_session_stop(apext_session *s) {
    apext_producer p = s->producer;
    if (apext_session_running[p] != s->owner)
        return 0;
    s->ops->remove(s->owner);
    apext_stack_flush(s);
    apext_session_running[p] = NULL;
    s->running = 0;
    apext_session_generation[p]++;
    if (s->ops->stopped != NULL)
        s->ops->stopped(s->owner);
    meta_time(s->prof, "stopped");
    if (ap_prof_finish(s->prof) != 0)
        apext_session_fail(s, "finish");
    Py_DECREF(s->owner);
    if (s->fail.msg[0] == '\0')
        return 0;
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "apiprof: the profile is incomplete (%s; %llu events lost)",
                            s->fail.msg, (unsigned long long)s->fail.lost);
}

void apext_session_fail(apext_session *s, const char *what) {
    if (s->fail.msg[0] == '\0')
        snprintf(s->fail.msg, sizeof s->fail.msg, "%s: %s", what, ap_err_msg());
    s->fail.lost++;
}

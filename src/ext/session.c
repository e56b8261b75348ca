/* session.c -- the producer registry: sessions, their start and stop, generations, failure notes. */
#include "session.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ap_clock.h"
#include "ap_err.h"
#include "install.h"
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

/* Add the process CPU time since the last start to metadata process_cpu_ns:
 * every thread of the process, native threads of C extensions included,
 * beside the per-thread figures of the frames (ignored on AP_ENOMEM). */
static void meta_process_cpu(apext_session *s) {
    const char *before = ap_prof_meta_get(s->prof, "process_cpu_ns");
    uint64_t now = ap_clock_process_cpu_ns();
    uint64_t total = (before ? strtoull(before, NULL, 10) : 0) +
                     (now > s->process_cpu_t0 ? now - s->process_cpu_t0 : 0);
    char v[32];
    snprintf(v, sizeof v, "%llu", (unsigned long long)total);
    ap_prof_meta_set(s->prof, "process_cpu_ns", v);
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
    ap_map_free(&s->suspended);
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
    s->process_cpu_t0 = ap_clock_process_cpu_ns();
    apext_session_generation[p]++;
    apext_session_running[p] = s->owner;
    s->running = 1;
    if ((s->ops->prepare != NULL && s->ops->prepare(s->owner) < 0) ||
        (s->ops->hooks != NULL &&
         apext_install(s, s->ops->hooks, s->optional_events, s->targets) < 0)) {
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
    if (s->ops->hooks != NULL)
        apext_install_remove(s, s->ops->hooks, s->targets);
    apext_stack_flush(s);
    apext_session_running[p] = NULL;
    s->running = 0;
    apext_session_generation[p]++;
    ap_map_clear(&s->suspended);
    if (s->ops->stopped != NULL)
        s->ops->stopped(s->owner);
    meta_time(s->prof, "stopped");
    meta_process_cpu(s);
    /* The user's wait rules travel with the profile (ap_wait.h). */
    const char *rules = getenv("APIPROF_WAIT_RULES");
    if (rules != NULL && rules[0] != '\0' && ap_prof_meta_set(s->prof, "wait_rules", rules) != 0)
        apext_session_fail(s, "wait rules");
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

/* ---- the producer's Python type --------------------------------------------------- */

static apext_session *session_of(PyObject *o) {
    return &((apext_object *)o)->sess;
}

PyObject *apext_session_py_start(PyObject *self, PyObject *Py_UNUSED(unused)) {
    if (apext_session_start(session_of(self)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *apext_session_py_stop(PyObject *self, PyObject *Py_UNUSED(unused)) {
    if (apext_session_stop(session_of(self)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *apext_session_py_profile(PyObject *self, PyObject *Py_UNUSED(unused)) {
    return apext_profile_wrap(apext_state_of_type(Py_TYPE(self)), self, session_of(self)->prof);
}

PyObject *apext_session_py_running(PyObject *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(session_of(self)->running);
}

PyObject *apext_session_py_tool_id(PyObject *self, void *Py_UNUSED(closure)) {
    apext_session *s = session_of(self);
    if (!s->running || AP_MONITORING == 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(s->tool_id);
}

static int object_traverse(PyObject *o, visitproc visit, void *arg) {
    apext_session *s = session_of(o);
    Py_VISIT(Py_TYPE(o));
    Py_VISIT(s->threads_dict);
    return s->ops != NULL && s->ops->traverse != NULL ? s->ops->traverse(o, visit, arg) : 0;
}

static int object_clear(PyObject *o) {
    apext_session *s = session_of(o);
    Py_CLEAR(s->threads_dict);
    if (s->ops != NULL && s->ops->clear != NULL)
        s->ops->clear(o);
    return 0;
}

static void object_dealloc(PyObject *o) {
    PyTypeObject *tp = Py_TYPE(o);
    apext_session *s = session_of(o);
    PyObject_GC_UnTrack(o);
    object_clear(o);
    if (s->ops != NULL && s->ops->dealloc != NULL)
        s->ops->dealloc(o);
    apext_session_free(s);
    tp->tp_free(o);
    Py_DECREF(tp);
}

int apext_session_add_type(PyObject *module, const char *name, size_t basicsize, newfunc tp_new,
                           PyMethodDef *methods, PyGetSetDef *getset, const char *doc,
                           PyTypeObject **type) {
    PyType_Slot slots[] = {
        {Py_tp_new, tp_new},
        {Py_tp_dealloc, object_dealloc},
        {Py_tp_traverse, object_traverse},
        {Py_tp_clear, object_clear},
        {Py_tp_methods, methods},
        {Py_tp_getset, getset},
        {Py_tp_doc, (void *)doc},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = name,
        .basicsize = (int)basicsize,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
        .slots = slots,
    };
    *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
    if (*type == NULL)
        return -1;
    return PyModule_AddType(module, *type);
}

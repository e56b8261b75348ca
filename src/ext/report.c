/* report.c -- apiprof._core.write_report (every report format, written by the C core) and the test-only profile builder. */
#include "ext.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "ap_err.h"
#include "ap_prof.h"
#include "ap_report.h"

/* A str option of the dict, or NULL (absent / None).  -1 on a wrong type. */
static int opt_str(PyObject *opts, const char *key, const char **out)
{
    *out = NULL;
    if (opts == NULL)
        return 0;
    PyObject *v = PyDict_GetItemString(opts, key);   /* borrowed */
    if (v == NULL || v == Py_None)
        return 0;
    if (!PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "option %s must be a str", key);
        return -1;
    }
    *out = PyUnicode_AsUTF8(v);
    return *out == NULL ? -1 : 0;
}

static PyObject *write_report(PyObject *module, PyObject *args)
{
    const char *fmt;
    PyObject *prof_obj, *out_obj = Py_None, *opts = Py_None;
    if (!PyArg_ParseTuple(args, "Os|OO:write_report", &prof_obj, &fmt, &out_obj, &opts))
        return NULL;
    int truncated = 0;
    ap_prof *p = apext_profile_get(PyModule_GetState(module), prof_obj, &truncated);
    if (p == NULL)
        return NULL;
    if (opts != Py_None && !PyDict_Check(opts))
        return PyErr_Format(PyExc_TypeError, "options must be a dict");
    PyObject *od = opts == Py_None ? NULL : opts;
    ap_report_opts o;
    memset(&o, 0, sizeof o);
    if (opt_str(od, "metric", &o.metric) || opt_str(od, "route", &o.route) ||
        opt_str(od, "thread", &o.thread) || opt_str(od, "task", &o.task) ||
        opt_str(od, "phase", &o.phase) ||
        opt_str(od, "title", &o.title))
        return NULL;
    if (od != NULL) {
        PyObject *mp = PyDict_GetItemString(od, "min_percent");
        if (mp != NULL && mp != Py_None) {
            o.min_percent = PyFloat_AsDouble(mp);
            if (o.min_percent == -1.0 && PyErr_Occurred())
                return NULL;
        }
    }
    const char *path_out = NULL;
    if (out_obj != Py_None) {
        if (!PyUnicode_Check(out_obj))
            return PyErr_Format(PyExc_TypeError, "the output path must be a str or None");
        path_out = PyUnicode_AsUTF8(out_obj);
        if (path_out == NULL)
            return NULL;
    }
    if (!ap_report_format_known(fmt))
        return PyErr_Format(PyExc_ValueError,
                            "unknown format '%s' (html, svg, dot, speedscope, pprof, collapsed, "
                            "callgrind, chrome, json, pstats)", fmt);
    FILE *out = stdout;
    char *tmp_path = NULL;
    if (path_out != NULL) {
        /* Write beside the target and rename, so that a failure leaves no
         * half-written report where a complete one was expected. */
        size_t n = strlen(path_out) + 16;
        tmp_path = PyMem_Malloc(n);
        if (tmp_path == NULL)
            return PyErr_NoMemory();
        snprintf(tmp_path, n, "%s.tmp%ld", path_out, (long)getpid());
        out = fopen(tmp_path, "wb");
        if (out == NULL) {
            PyErr_Format(PyExc_OSError, "cannot write %s: %s", path_out, strerror(errno));
            PyMem_Free(tmp_path);
            return NULL;
        }
    }
    int rc = ap_report_write(p, fmt, &o, out);
    if (path_out != NULL) {
        if (fclose(out) != 0 && rc == 0)
            rc = ap_err_set(AP_EIO, "%s: %s", path_out, strerror(errno));
        if (rc == 0 && rename(tmp_path, path_out) != 0)
            rc = ap_err_set(AP_EIO, "cannot write %s: %s", path_out, strerror(errno));
        if (rc != 0)
            remove(tmp_path);
        PyMem_Free(tmp_path);
    } else {
        fflush(stdout);
    }
    if (rc != 0)
        return apext_raise_core(NULL);
    return PyBool_FromLong(truncated);
}

/* ---- test-only producer ----------------------------------------------------- */

/* A frame from (qualname, file, line, lineno[, kind]). */
static ap_frame_id spec_frame(ap_prof *p, PyObject *spec)
{
    const char *qual, *file;
    unsigned int line, lineno, kind = AP_FRAME_PYTHON;
    if (!PyArg_ParseTuple(spec, "ssII|I;a frame is (qualname, file, line, lineno[, kind])", &qual,
                          &file, &line, &lineno, &kind))
        return AP_NONE;
    if (kind < AP_FRAME_PYTHON || kind > AP_FRAME_OTHER) {
        PyErr_SetString(PyExc_ValueError, "frame kind must be 1..4");
        return AP_NONE;
    }
    const char *dot = strrchr(qual, '.');
    const char *name = dot && kind == AP_FRAME_PYTHON ? dot + 1 : qual;
    ap_frame f = {ap_prof_intern(p, name, strlen(name)), ap_prof_intern(p, qual, strlen(qual)),
                  ap_prof_intern(p, file, strlen(file)), line, lineno, kind};
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return (ap_frame_id)(apext_raise_core(NULL), AP_NONE);
    ap_frame_id id = ap_prof_frame_intern(p, &f);
    if (id == AP_NONE)
        apext_raise_core(NULL);
    return id;
}

static int metric_index(const char *name)
{
    for (unsigned k = 0; k < AP_M_COUNT; k++)
        if (strcmp(ap_metric_name(k), name) == 0)
            return (int)k;
    return -1;
}

static int build_tree(ap_prof *p, PyObject *tspec)
{
    PyObject *labels = PyDict_GetItemString(tspec, "labels");
    PyObject *nodes = PyDict_GetItemString(tspec, "nodes");
    if (nodes == NULL || !PyList_Check(nodes)) {
        PyErr_SetString(PyExc_ValueError, "a tree needs a list 'nodes'");
        return -1;
    }
    ap_tree *t = ap_prof_tree_new(p, NULL, 0);
    if (t == NULL)
        return (apext_raise_core(NULL), -1);
    if (labels != NULL && PyDict_Check(labels)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(labels, &pos, &k, &v)) {
            Py_ssize_t kl, vl;
            const char *ks = PyUnicode_AsUTF8AndSize(k, &kl), *vs = PyUnicode_AsUTF8AndSize(v, &vl);
            if (ks == NULL || vs == NULL)
                return -1;
            if (ap_tree_label_set(t, ap_prof_intern(p, ks, (size_t)kl), ap_prof_intern(p, vs, (size_t)vl)))
                return (apext_raise_core(NULL), -1);
        }
    }
    int explicit_total = 0;
    size_t explicit_calls_cap = 0;
    uint8_t *explicit_calls = NULL;   /* nodes whose calls were given, 0 included */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(nodes); i++) {
        PyObject *stack, *metrics;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(nodes, i), "OO!;a node is (frames, {metric: value})",
                              &stack, &PyDict_Type, &metrics))
            goto fail;
        PyObject *seq = PySequence_Fast(stack, "a node's frames must be a sequence");
        if (seq == NULL)
            goto fail;
        ap_node *n = ap_tree_root(t);
        for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq) && n != NULL; k++) {
            ap_frame_id f = spec_frame(p, PySequence_Fast_GET_ITEM(seq, k));
            if (f == AP_NONE) {
                Py_DECREF(seq);
                goto fail;
            }
            n = ap_tree_child(t, n, f);
        }
        Py_DECREF(seq);
        if (n == NULL) {
            apext_raise_core(NULL);
            goto fail;
        }
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(metrics, &pos, &k, &v)) {
            const char *ks = PyUnicode_AsUTF8(k);
            if (ks == NULL)
                goto fail;
            int mi = metric_index(ks);
            unsigned long long val = PyLong_AsUnsignedLongLong(v);
            if (mi < 0) {
                PyErr_Format(PyExc_ValueError, "unknown metric %s", ks);
                goto fail;
            }
            if (val == (unsigned long long)-1 && PyErr_Occurred())
                goto fail;
            n->m[mi] += val;
            explicit_total |= mi == AP_M_TOTAL_NS;
            if (mi == AP_M_CALLS) {
                if (n->id >= explicit_calls_cap) {
                    size_t cap = (n->id + 1) * 2;
                    uint8_t *e = PyMem_Realloc(explicit_calls, cap);
                    if (e == NULL) {
                        PyErr_NoMemory();
                        goto fail;
                    }
                    memset(e + explicit_calls_cap, 0, cap - explicit_calls_cap);
                    explicit_calls = e;
                    explicit_calls_cap = cap;
                }
                explicit_calls[n->id] = 1;
            }
        }
    }
    size_t nn = ap_tree_nnodes(t);
    for (size_t i = 1; i < nn; i++) {
        ap_node *n = (ap_node *)ap_tree_node(t, (ap_node_id)i);
        if (n->m[AP_M_CALLS] == 0 && !(i < explicit_calls_cap && explicit_calls[i]))
            n->m[AP_M_CALLS] = 1;
        if (!explicit_total)
            n->m[AP_M_TOTAL_NS] = n->m[AP_M_SELF_NS];
    }
    if (!explicit_total)
        for (size_t i = nn; i-- > 1;) {
            const ap_node *n = ap_tree_node(t, (ap_node_id)i);
            ((ap_node *)ap_tree_node(t, n->parent))->m[AP_M_TOTAL_NS] += n->m[AP_M_TOTAL_NS];
        }
    PyMem_Free(explicit_calls);
    return 0;
fail:
    PyMem_Free(explicit_calls);
    return -1;
}

static PyObject *make_test_profile(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *spec;
    const char *path;
    if (!PyArg_ParseTuple(args, "O!s:_make_test_profile", &PyDict_Type, &spec, &path))
        return NULL;
    ap_prof *p = ap_prof_new();
    if (p == NULL)
        return apext_raise_core(NULL);
    PyObject *meta = PyDict_GetItemString(spec, "meta");
    PyObject *trees = PyDict_GetItemString(spec, "trees");
    PyObject *events = PyDict_GetItemString(spec, "events");
    if (meta != NULL && PyDict_Check(meta)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(meta, &pos, &k, &v)) {
            const char *ks = PyUnicode_AsUTF8(k), *vs = PyUnicode_AsUTF8(v);
            if (ks == NULL || vs == NULL)
                goto err;
            if (ap_prof_meta_set(p, ks, vs) != 0) {
                apext_raise_core(NULL);
                goto err;
            }
        }
    }
    if (trees == NULL || !PyList_Check(trees)) {
        PyErr_SetString(PyExc_ValueError, "spec needs a list 'trees'");
        goto err;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(trees); i++)
        if (build_tree(p, PyList_GET_ITEM(trees, i)) != 0)
            goto err;
    if (events != NULL && events != Py_None) {
        PyObject *cap = PyDict_GetItemString(spec, "events_capacity");
        Py_ssize_t ne = PySequence_Size(events);
        size_t capacity = cap ? PyLong_AsSize_t(cap) : (size_t)(ne > 0 ? ne : 1);
        if (PyErr_Occurred() || ne < 0)
            goto err;
        if (ap_prof_events_enable(p, capacity) != 0) {
            apext_raise_core(NULL);
            goto err;
        }
        for (Py_ssize_t i = 0; i < ne; i++) {
            PyObject *e = PySequence_GetItem(events, i);
            PyObject *fspec;
            unsigned int tree;
            unsigned long long start, dur;
            if (e == NULL)
                goto err;
            int ok = PyArg_ParseTuple(e, "IOKK;an event is (tree, frame, start_ns, dur_ns)", &tree,
                                      &fspec, &start, &dur);
            if (!ok) {
                Py_DECREF(e);
                goto err;
            }
            ap_frame_id f = spec_frame(p, fspec);
            Py_DECREF(e);
            if (f == AP_NONE)
                goto err;
            ap_event ev = {start, dur, f, tree};
            ap_prof_event_add(p, &ev);
        }
    }
    if (ap_prof_finish(p) != 0 || ap_prof_write(p, path) != 0) {
        apext_raise_core(NULL);
        goto err;
    }
    ap_prof_free(p);
    Py_RETURN_NONE;
err:
    ap_prof_free(p);
    return NULL;
}

static PyObject *report_format_for_path(PyObject *Py_UNUSED(m), PyObject *arg)
{
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL)
        return NULL;
    const char *fmt = ap_report_format_for_path(path);
    if (fmt == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(fmt);
}

PyMethodDef apext_report_methods[] = {
    {"write_report", write_report, METH_VARARGS,
     "write_report(profile, format, path_out=None, options=None) -> bool\n\n"
     "Write the view `format` of a Profile to path_out (stdout when None).\n"
     "options: metric, min_percent, route, thread, task, phase, title.  Returns\n"
     "True when the profile was read from a file cut short.  Raises\n"
     "ValueError (unknown format or metric),\n"
     "LookupError (nothing matches a filter; no timeline for 'chrome'),\n"
     "OSError, MemoryError."},
    {"report_format_for_path", report_format_for_path, METH_O,
     "report_format_for_path(path) -> str | None\n\nThe format a file name's extension implies."},
    {"_make_test_profile", make_test_profile, METH_VARARGS,
     "_make_test_profile(spec, path) -> None\n\nFor tests: build a profile from a description and\n"
     "write it as a native file.  spec = {'meta': {..}, 'trees': [{'labels': {..},\n"
     "'nodes': [([(qualname, file, line, lineno[, kind]), ...], {metric: value})]}],\n"
     "'events': [(tree, frame, start_ns, dur_ns)], 'events_capacity': n}.  Nodes\n"
     "without calls get 1; total_ns is derived from self_ns unless given."},
    {NULL, NULL, 0, NULL},
};

/* profile.c -- apiprof._core.Profile: Python access to an ap_prof (function table, trees, files) and load(). */
#include "ext.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_findings.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_stall.h"
#include "ap_unrel.h"
#include "ap_wait.h"

typedef struct {
    PyObject_HEAD
    ap_prof *prof;      /* owned when owner is NULL, else borrowed from owner */
    PyObject *owner;    /* the Tracer that owns prof, or NULL */
    int truncated;      /* read from a file cut short */
} ProfileObject;

PyObject *apext_profile_wrap(apext_state *st, PyObject *owner, ap_prof *prof) {
    ProfileObject *p = PyObject_GC_New(ProfileObject, st->profile_type);
    if (p == NULL) {
        if (owner == NULL)
            ap_prof_free(prof);
        return NULL;
    }
    p->prof = prof;
    p->owner = Py_XNewRef(owner);
    p->truncated = 0;
    PyObject_GC_Track(p);
    return (PyObject *)p;
}

struct ap_prof *apext_profile_get(apext_state *st, PyObject *obj, int *truncated) {
    if (!PyObject_TypeCheck(obj, st->profile_type)) {
        PyErr_Format(PyExc_TypeError, "expected an apiprof._core.Profile, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (truncated != NULL)
        *truncated = ((ProfileObject *)obj)->truncated;
    return ((ProfileObject *)obj)->prof;
}

static PyObject *str_of(const ap_prof *p, ap_str_id id) {
    return PyUnicode_DecodeUTF8(ap_prof_str(p, id), (Py_ssize_t)strlen(ap_prof_str(p, id)), "replace");
}

/* Add name, qualname, file, line, kind of frame id to dict d.  0 / -1. */
static int frame_fields(const ap_prof *p, ap_frame_id id, PyObject *d) {
    const ap_frame *f = ap_prof_frame(p, id);
    if (f == NULL)
        return 0;
    const struct {
        const char *key;
        PyObject *val;
    } items[] = {
        {"name", str_of(p, f->name)},
        {"qualname", str_of(p, f->qualname)},
        {"file", str_of(p, f->file)},
        {"line", PyLong_FromUnsignedLong(f->line)},
        {"kind", PyUnicode_FromString(ap_frame_kind_name(f->kind))},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        if (rc == 0 && (items[i].val == NULL || PyDict_SetItemString(d, items[i].key, items[i].val) < 0))
            rc = -1;
        Py_XDECREF(items[i].val);
    }
    return rc;
}

static int set_u64(PyObject *d, const char *key, uint64_t v) {
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static int set_i64(PyObject *d, const char *key, int64_t v) {
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static PyObject *edges_list(const ap_func_edge *e, uint32_t first, uint32_t n, int callers) {
    PyObject *l = PyList_New(n);
    if (l == NULL)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        const ap_func_edge *x = &e[first + i];
        PyObject *d = PyDict_New();
        if (d == NULL || set_u64(d, "function", callers ? x->caller : x->callee) < 0 ||
            set_u64(d, "calls", x->calls) < 0 || set_u64(d, "primitive_calls", x->prim_calls) < 0 ||
            set_u64(d, "self_ns", x->self_ns) < 0 || set_u64(d, "total_ns", x->total_ns) < 0) {
            Py_XDECREF(d);
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, d);
    }
    return l;
}

static int keep_one(const ap_tree *t, void *arg) {
    return t == arg;
}

/* The class of each function of p: per function-level frame, how many of
 * its nodes there are, are idle, are library work (ap_classes).  Returns a
 * map frame -> n << 42 | idle << 21 | library (counts saturate at 2^21 - 1),
 * or -1 with an exception. */
static int function_classes(ap_prof *p, ap_map *out) {
    ap_classes c;
    if (ap_classes_build(p, &c) != 0) {
        apext_raise_core("functions");
        return -1;
    }
    const uint64_t cap = (1u << 21) - 1;
    for (size_t t = 0; t < c.ntrees; t++) {
        const ap_tree *tree = ap_prof_tree_at(p, t);
        for (size_t i = 1; i < ap_tree_nnodes(tree); i++) {
            ap_frame_id fn = ap_prof_func_frame(p, ap_tree_node(tree, (ap_node_id)i)->frame);
            int ins;
            uint64_t *v = fn == AP_NONE ? NULL : ap_map_upsert(out, fn, 0, &ins);
            if (v == NULL) {
                ap_classes_free(&c);
                PyErr_NoMemory();
                return -1;
            }
            uint64_t n = *v >> 42, idle = (*v >> 21) & cap, lib = *v & cap;
            n += n < cap;
            idle += c.node_idle[t][i] && idle < cap;
            lib += c.node_library[t][i] && lib < cap;
            *v = n << 42 | idle << 21 | lib;
        }
    }
    ap_classes_free(&c);
    return 0;
}

/* "idle" when every node of the function is idle, "library" when every node
 * is library work, else "user". */
static const char *class_name(const ap_map *classes, ap_frame_id fn) {
    const uint64_t *v = ap_map_get(classes, fn);
    const uint64_t cap = (1u << 21) - 1;
    if (v == NULL)
        return "user";
    uint64_t n = *v >> 42;
    if (((*v >> 21) & cap) == n)
        return "idle";
    return (*v & cap) == n ? "library" : "user";
}

/* functions(tree=None) -> list of dict */
static PyObject *profile_functions(ProfileObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tree", NULL};
    PyObject *tree_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:functions", kwlist, &tree_obj))
        return NULL;
    ap_tree *only = NULL;
    if (tree_obj != Py_None) {
        Py_ssize_t i = PyLong_AsSsize_t(tree_obj);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        only = i >= 0 ? ap_prof_tree_at(self->prof, (size_t)i) : NULL;
        if (only == NULL)
            return PyErr_Format(PyExc_IndexError, "no tree %zd", i);
    }
    ap_functab ft;
    if (ap_functab_build(self->prof, only ? keep_one : NULL, only, &ft) != 0)
        return apext_raise_core("functions");
    ap_map classes = {0};
    if (function_classes(self->prof, &classes) != 0) {
        ap_functab_free(&ft);
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)ft.nrows);
    for (size_t i = 0; list != NULL && i < ft.nrows; i++) {
        const ap_func_row *r = &ft.rows[i];
        PyObject *d = PyDict_New();
        PyObject *callers = NULL, *callees = NULL;
        int ok = d != NULL && frame_fields(self->prof, r->frame, d) == 0 &&
                 set_u64(d, "calls", r->calls) == 0 &&
                 set_u64(d, "primitive_calls", r->prim_calls) == 0 &&
                 set_u64(d, "self_ns", r->self_ns) == 0 && set_u64(d, "total_ns", r->total_ns) == 0 &&
                 set_u64(d, "await_ns", r->await_ns) == 0;
        if (ok) {
            PyObject *cls = PyUnicode_FromString(class_name(&classes, r->frame));
            ok = cls != NULL && PyDict_SetItemString(d, "class", cls) == 0;
            Py_XDECREF(cls);
        }
        for (unsigned k = AP_M_CPU_NS; ok && k < AP_M_COUNT; k++)
            if (k != AP_M_AWAIT_NS && r->m[k] != 0)
                ok = set_u64(d, ap_metric_name(k), r->m[k]) == 0;
        ok = ok && (callers = edges_list(ft.edges_in, r->callers_first, r->ncallers, 1)) != NULL &&
             PyDict_SetItemString(d, "callers", callers) == 0 &&
             (callees = edges_list(ft.edges_out, r->callees_first, r->ncallees, 0)) != NULL &&
             PyDict_SetItemString(d, "callees", callees) == 0;
        Py_XDECREF(callers);
        Py_XDECREF(callees);
        if (!ok) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    ap_functab_free(&ft);
    ap_map_free(&classes);
    return list;
}

/* lines() -> list of dict: the line table (ap_lines_build) */
static PyObject *profile_lines(ProfileObject *self, PyObject *Py_UNUSED(a)) {
    ap_line_row *rows;
    size_t n;
    if (ap_lines_build(self->prof, &rows, &n) != 0)
        return apext_raise_core("lines");
    const char *attr = ap_prof_meta_get(self->prof, "memory_attribution");
    int net = attr != NULL && strcmp(attr, "lines") == 0;   /* frees charged to lines */
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        const ap_frame *f = ap_prof_frame(self->prof, rows[i].frame);
        PyObject *d = PyDict_New();
        PyObject *file = d ? str_of(self->prof, f->file) : NULL;
        PyObject *func = file ? str_of(self->prof, f->qualname) : NULL;
        int ok = func != NULL && PyDict_SetItemString(d, "file", file) == 0 &&
                 PyDict_SetItemString(d, "function", func) == 0 &&
                 set_u64(d, "function_line", f->line) == 0 && set_u64(d, "line", f->lineno) == 0 &&
                 set_u64(d, "hits", rows[i].hits) == 0 && set_u64(d, "time_ns", rows[i].time_ns) == 0 &&
                 set_u64(d, "await_ns", rows[i].await_ns) == 0 &&
                 ((rows[i].alloc_count == 0 && rows[i].live_bytes == 0 &&
                   rows[i].freed_bytes == 0) ||
                  (set_u64(d, "alloc_bytes", rows[i].alloc_bytes) == 0 &&
                   set_u64(d, "alloc_count", rows[i].alloc_count) == 0 &&
                   set_u64(d, "live_bytes", rows[i].live_bytes) == 0 &&
                   set_u64(d, "peak_bytes", rows[i].peak_bytes) == 0 &&
                   (!net || (set_u64(d, "freed_bytes", rows[i].freed_bytes) == 0 &&
                             set_i64(d, "net_bytes", (int64_t)(rows[i].alloc_bytes -
                                                               rows[i].freed_bytes)) == 0))));
        Py_XDECREF(file);
        Py_XDECREF(func);
        if (!ok) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    free(rows);
    return list;
}

/* frames() -> list of dict: every interned frame (id = index) with lineno */
static PyObject *profile_frames(ProfileObject *self, PyObject *Py_UNUSED(a)) {
    size_t n = ap_prof_nframes(self->prof);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        PyObject *d = PyDict_New();
        if (d == NULL || frame_fields(self->prof, (ap_frame_id)i, d) < 0 ||
            set_u64(d, "lineno", ap_prof_frame(self->prof, (ap_frame_id)i)->lineno) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

/* select(labels) -> Profile: the trees that carry every label of the dict */
static PyObject *profile_select(ProfileObject *self, PyObject *labels) {
    if (!PyDict_Check(labels))
        return PyErr_Format(PyExc_TypeError, "labels must be a dict of str, not %.100s",
                            Py_TYPE(labels)->tp_name);
    ap_selector sel = {0};
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(labels, &pos, &key, &val)) {
        if (!PyUnicode_Check(key) || !PyUnicode_Check(val))
            return PyErr_Format(PyExc_TypeError, "labels must be a dict of str");
        const char *k = PyUnicode_AsUTF8(key), *v = k ? PyUnicode_AsUTF8(val) : NULL;
        if (v == NULL)
            return NULL;
        if (ap_selector_add(self->prof, &sel, k, v) != 0)
            return apext_raise_core("select");
    }
    ap_prof *chosen = ap_prof_select(self->prof, ap_selector_keep, &sel);
    if (chosen == NULL)
        return apext_raise_core("select");
    PyObject *result = apext_profile_wrap(apext_state_of_type(Py_TYPE(self)), NULL, chosen);
    if (result != NULL)
        ((ProfileObject *)result)->truncated = self->truncated;
    return result;
}

/* project(metric) -> Profile: one tree, the sum of all, whose self_ns and
 * total_ns hold the view metric ("wall", "cpu", "await", "memory",
 * "samples"), as every report view reads it (ap_report_project). */
static PyObject *profile_project(ProfileObject *self, PyObject *name) {
    const char *metric = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (metric == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "metric must be a str");
    unsigned vm;
    if (ap_prof_finish(self->prof) != 0 || ap_report_pick_metric(self->prof, metric, &vm) != 0)
        return apext_raise_core(NULL);
    ap_prof *projected = ap_report_project(self->prof, ap_report_vm_field(vm));
    if (projected == NULL)
        return apext_raise_core(NULL);
    PyObject *result = apext_profile_wrap(apext_state_of_type(Py_TYPE(self)), NULL, projected);
    if (result != NULL)
        ((ProfileObject *)result)->truncated = self->truncated;
    return result;
}

/* trees() -> list of {"labels": {...}, "nodes": int} */
static PyObject *profile_trees(ProfileObject *self, PyObject *Py_UNUSED(a)) {
    size_t n = ap_prof_ntrees(self->prof);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        const ap_tree *t = ap_prof_tree_at(self->prof, i);
        PyObject *d = PyDict_New(), *labels = PyDict_New();
        int ok = d != NULL && labels != NULL;
        for (size_t k = 0; ok && k < ap_tree_nlabels(t); k++) {
            ap_label l = ap_tree_label_at(t, k);
            PyObject *key = str_of(self->prof, l.key), *val = str_of(self->prof, l.val);
            ok = key != NULL && val != NULL && PyDict_SetItem(labels, key, val) == 0;
            Py_XDECREF(key);
            Py_XDECREF(val);
        }
        ok = ok && PyDict_SetItemString(d, "labels", labels) == 0 &&
             set_u64(d, "nodes", ap_tree_nnodes(t)) == 0;
        Py_XDECREF(labels);
        if (!ok) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

/* wait_totals() -> {kind: ns}: each wait kind's time over the whole profile (its
 * inclusive metric summed over the root's children of every tree); kinds with none are
 * left out. */
static PyObject *profile_wait_totals(ProfileObject *self, PyObject *Py_UNUSED(a)) {
    uint64_t total[AP_WAIT_COUNT] = {0};
    for (size_t i = 0; i < ap_prof_ntrees(self->prof); i++) {
        const ap_tree *t = ap_prof_tree_at(self->prof, i);
        if (ap_tree_nnodes(t) == 0)
            continue;
        for (const ap_node *c = ap_node_first_child(ap_tree_node(t, 0)); c != NULL;
             c = ap_node_next_sibling(c))
            for (unsigned k = 0; k < AP_WAIT_COUNT; k++)
                total[k] += c->m[ap_wait_metric(k)];
    }
    PyObject *d = PyDict_New();
    for (unsigned k = 0; d != NULL && k < AP_WAIT_COUNT; k++)
        if (total[k] != 0 && set_u64(d, ap_wait_name(k), total[k]) < 0)
            Py_CLEAR(d);
    return d;
}

/* nodes(tree) -> list of dict: parent, frame fields and non-zero metrics */
static PyObject *profile_nodes(ProfileObject *self, PyObject *arg) {
    Py_ssize_t ti = PyLong_AsSsize_t(arg);
    if (ti == -1 && PyErr_Occurred())
        return NULL;
    const ap_tree *t = ti >= 0 ? ap_prof_tree_at(self->prof, (size_t)ti) : NULL;
    if (t == NULL)
        return PyErr_Format(PyExc_IndexError, "no tree %zd", ti);
    size_t n = ap_tree_nnodes(t);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        const ap_node *node = ap_tree_node(t, (ap_node_id)i);
        PyObject *d = PyDict_New();
        PyObject *parent = node->parent == AP_NONE ? Py_NewRef(Py_None)
                                                   : PyLong_FromUnsignedLong(node->parent);
        int ok = d != NULL && parent != NULL && PyDict_SetItemString(d, "parent", parent) == 0 &&
                 frame_fields(self->prof, node->frame, d) == 0;
        Py_XDECREF(parent);
        for (unsigned k = 0; ok && k < AP_M_COUNT; k++)
            ok = set_u64(d, ap_metric_name(k), node->m[k]) == 0;
        if (!ok) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

static PyObject *profile_save(ProfileObject *self, PyObject *path_obj) {
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path_obj, &bytes))
        return NULL;
    int rc = ap_prof_write(self->prof, PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    if (rc != 0)
        return apext_raise_core("save");
    Py_RETURN_NONE;
}

/* Write the view fmt of the profile to path (the report dispatcher, as
 * `apiprof report`). */
static PyObject *write_format(ProfileObject *self, PyObject *path_obj, const char *fmt) {
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path_obj, &bytes))
        return NULL;
    FILE *f = fopen(PyBytes_AS_STRING(bytes), "wb");
    if (f == NULL) {
        PyErr_Format(PyExc_OSError, "cannot write %s: %s", PyBytes_AS_STRING(bytes), strerror(errno));
        Py_DECREF(bytes);
        return NULL;
    }
    int rc = ap_report_write(self->prof, fmt, NULL, f);
    if (fclose(f) != 0 && rc == 0)
        rc = ap_err_set(AP_EIO, "%s: %s", PyBytes_AS_STRING(bytes), strerror(errno));
    Py_DECREF(bytes);
    if (rc != 0)
        return apext_raise_core(fmt);
    Py_RETURN_NONE;
}

static PyObject *profile_write_json(ProfileObject *self, PyObject *path) {
    return write_format(self, path, "json");
}

static PyObject *profile_write_pstats(ProfileObject *self, PyObject *path) {
    return write_format(self, path, "pstats");
}

/* json() -> bytes: the JSON export in memory (what write_json writes). */
static PyObject *profile_json(ProfileObject *self, PyObject *Py_UNUSED(a)) {
    ap_sbuf sb = {0};
    int rc = ap_report_write_buf(self->prof, "json", NULL, &sb);
    PyObject *out = rc == 0 ? PyBytes_FromStringAndSize(sb.data, (Py_ssize_t)sb.len)
                            : apext_raise_core("json");
    ap_sbuf_free(&sb);
    return out;
}

/* unreleased_objects(requests=False) -> list: the JSON export's "unreleased_objects"
 * (ap_unrel_json_of: with requests, only what requests made), parsed. */
static PyObject *profile_unreleased(ProfileObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"requests", NULL};
    int requests = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p:unreleased_objects", kwlist, &requests))
        return NULL;
    ap_sbuf sb = {0};
    PyObject *out = NULL;
    if (ap_unrel_json_of(self->prof, requests, &sb) != 0 || sb.failed) {
        ap_sbuf_free(&sb);
        return PyErr_NoMemory();
    }
    PyObject *json = PyImport_ImportModule("json");
    PyObject *text = json ? PyUnicode_DecodeUTF8(sb.data, (Py_ssize_t)sb.len, "replace") : NULL;
    if (text != NULL)
        out = PyObject_CallMethod(json, "loads", "O", text);
    Py_XDECREF(text);
    Py_XDECREF(json);
    ap_sbuf_free(&sb);
    return out;
}

/* report(format, title=None) -> bytes: a view in memory, as apiprof report
 * writes it with no filter (html, svg, ...). */
static PyObject *profile_report(ProfileObject *self, PyObject *args) {
    const char *fmt, *title = NULL;
    if (!PyArg_ParseTuple(args, "s|z:report", &fmt, &title))
        return NULL;
    if (!ap_report_format_known(fmt))
        return PyErr_Format(PyExc_ValueError, "unknown format '%s'", fmt);
    ap_report_opts o;
    memset(&o, 0, sizeof o);
    o.title = title;
    ap_sbuf sb = {0};
    int rc = ap_report_write_buf(self->prof, fmt, &o, &sb);
    PyObject *out = rc == 0 ? PyBytes_FromStringAndSize(sb.data, (Py_ssize_t)sb.len)
                            : apext_raise_core(NULL);
    ap_sbuf_free(&sb);
    return out;
}

/* set_meta(key, value): add or replace a metadata entry (both str). */
static PyObject *profile_set_meta(ProfileObject *self, PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyUnicode_Check(a[0]) || !PyUnicode_Check(a[1]))
        return PyErr_Format(PyExc_TypeError, "set_meta(key: str, value: str)");
    const char *k = PyUnicode_AsUTF8(a[0]), *v = k ? PyUnicode_AsUTF8(a[1]) : NULL;
    if (v == NULL)
        return NULL;
    if (ap_prof_meta_set(self->prof, k, v) != 0)
        return apext_raise_core("set_meta");
    Py_RETURN_NONE;
}

/* Intern the function-level frame of a Python function (qualname, file, first line):
 * its id, or AP_NONE with the core's error set. */
static ap_frame_id python_frame(ap_prof *p, const char *qualname, const char *file,
                                uint32_t first) {
    const char *dot = strrchr(qualname, '.');
    const char *name = dot != NULL ? dot + 1 : qualname;
    ap_frame f = {ap_prof_intern(p, name, strlen(name)), ap_prof_intern(p, qualname, strlen(qualname)),
                  ap_prof_intern(p, file, strlen(file)), first, 0, AP_FRAME_PYTHON};
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return AP_NONE;
    return ap_prof_frame_intern(p, &f);
}

/* add_stall(start_ns, duration_ns, frames, route="", task="") */
static PyObject *profile_add_stall(ProfileObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"start_ns", "duration_ns", "frames", "route", "task", NULL};
    unsigned long long t0, ns;
    PyObject *frames;
    const char *route = "", *task = "";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKO|ss:add_stall", kwlist, &t0, &ns, &frames,
                                     &route, &task))
        return NULL;
    PyObject *seq = PySequence_Fast(frames, "frames: a list of (qualname, file, first_line, line)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "add_stall: no frames");
    }
    /* the innermost AP_STALL_STACK_MAX frames are enough: a stall keeps no more */
    Py_ssize_t first = n > (Py_ssize_t)AP_STALL_STACK_MAX ? n - (Py_ssize_t)AP_STALL_STACK_MAX : 0;
    ap_frame_id ids[AP_STALL_STACK_MAX];
    uint32_t lines[AP_STALL_STACK_MAX];
    size_t k = 0, culprit = 0;
    int app_seen = 0;
    for (Py_ssize_t i = first; i < n; i++, k++) {
        const char *qual, *file;
        unsigned first_line, line;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "ssII", &qual, &file, &first_line,
                              &line)) {
            Py_DECREF(seq);
            return NULL;
        }
        ids[k] = python_frame(self->prof, qual, file, first_line);
        lines[k] = line;
        if (ids[k] == AP_NONE) {
            Py_DECREF(seq);
            return apext_raise_core("add_stall");
        }
        /* the culprit: the innermost frame of the app's code, else the innermost */
        if (!ap_wait_library_file(file) && !ap_wait_generated_file(file)) {
            culprit = k;
            app_seen = 1;
        }
    }
    Py_DECREF(seq);
    if (!app_seen)
        culprit = k - 1;
    ap_str_id r = *route ? ap_prof_intern(self->prof, route, strlen(route)) : 0;
    ap_str_id t = *task ? ap_prof_intern(self->prof, task, strlen(task)) : 0;
    if (r == AP_NONE || t == AP_NONE)
        return apext_raise_core("add_stall");
    ap_stall st = {t0, ns, ids[culprit], lines[culprit], 0, r, t, 0, 0, 0};
    if (ap_prof_stall_add(self->prof, &st, ids, culprit + 1) != 0)
        return apext_raise_core("add_stall");
    Py_RETURN_NONE;
}

static PyObject *profile_absorb(ProfileObject *self, PyObject *args) {
    PyObject *other;
    const char *key = NULL, *val = NULL;
    if (!PyArg_ParseTuple(args, "O|zz:absorb", &other, &key, &val))
        return NULL;
    if ((key == NULL) != (val == NULL))
        return PyErr_Format(PyExc_TypeError, "absorb(profile, key, value): give both or neither");
    ap_prof *src = apext_profile_get(apext_state_of_type(Py_TYPE(self)), other, NULL);
    if (src == NULL)
        return NULL;
    if (src == self->prof)
        return PyErr_Format(PyExc_ValueError, "a profile cannot absorb itself");
    if (ap_prof_absorb(self->prof, src, key, val) != 0)
        return apext_raise_core("absorb");
    Py_RETURN_NONE;
}

static PyObject *profile_label_all(ProfileObject *self, PyObject *args) {
    const char *key, *val;
    if (!PyArg_ParseTuple(args, "ss:label_all", &key, &val))
        return NULL;
    if (ap_prof_label_all(self->prof, key, val) != 0)
        return apext_raise_core("label_all");
    Py_RETURN_NONE;
}

static PyObject *profile_get_meta(ProfileObject *self, void *Py_UNUSED(c)) {
    PyObject *d = PyDict_New();
    for (size_t i = 0; d != NULL && i < ap_prof_nmeta(self->prof); i++) {
        const char *k, *v;
        ap_prof_meta_at(self->prof, i, &k, &v);
        /* Keys as values: a file may hold any bytes, invalid UTF-8 reads as U+FFFD. */
        PyObject *key = PyUnicode_DecodeUTF8(k, (Py_ssize_t)strlen(k), "replace");
        PyObject *val = PyUnicode_DecodeUTF8(v, (Py_ssize_t)strlen(v), "replace");
        if (key == NULL || val == NULL || PyDict_SetItem(d, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    return d;
}

static PyObject *profile_get_truncated(ProfileObject *self, void *Py_UNUSED(c)) {
    return PyBool_FromLong(self->truncated);
}

static int profile_traverse(ProfileObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    return 0;
}

static int profile_clear(ProfileObject *self) {
    Py_CLEAR(self->owner);
    return 0;
}

static void profile_dealloc(ProfileObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->owner == NULL)
        ap_prof_free(self->prof);
    self->prof = NULL;
    profile_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

/* The qualname (or name) of frame f, or None for frame 0. */
static PyObject *name_or_none(const ap_prof *p, ap_frame_id f) {
    if (f == 0)
        Py_RETURN_NONE;
    const ap_frame *fr = ap_prof_frame(p, f);
    return str_of(p, ap_prof_str(p, fr->qualname)[0] ? fr->qualname : fr->name);
}

/* findings(lines=None, baseline=None) -> list of dict (ap_findings_build, ranked) */
static PyObject *profile_findings(ProfileObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"lines", "baseline", NULL};
    PyObject *lines_obj = Py_None, *base_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:findings", kwlist, &lines_obj, &base_obj))
        return NULL;
    const ap_prof *lines = NULL;
    ap_prof *baseline = NULL;
    if (lines_obj != Py_None) {
        if (Py_TYPE(lines_obj) != Py_TYPE(self))
            return PyErr_Format(PyExc_TypeError, "lines must be a Profile or None");
        lines = ((ProfileObject *)lines_obj)->prof;
    }
    if (base_obj != Py_None) {
        if (Py_TYPE(base_obj) != Py_TYPE(self))
            return PyErr_Format(PyExc_TypeError, "baseline must be a Profile or None");
        baseline = ((ProfileObject *)base_obj)->prof;
    }
    ap_finding *fs;
    size_t n;
    if (ap_findings_build(self->prof, lines, baseline, &fs, &n) != 0)
        return apext_raise_core("findings");
    ap_prof *p = self->prof;
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        const ap_finding *f = &fs[i];
        const ap_frame *fr = ap_prof_frame(p, f->frame);
        int py = f->frame != 0 && fr->kind == AP_FRAME_PYTHON;
        PyObject *path = PyList_New((Py_ssize_t)f->npath);
        for (size_t k = 0; path != NULL && k < f->npath; k++) {
            PyObject *s = name_or_none(p, f->path[k]);
            if (s == NULL)
                Py_CLEAR(path);
            else
                PyList_SET_ITEM(path, (Py_ssize_t)k, s);
        }
        PyObject *d = path == NULL ? NULL : Py_BuildValue(
            "{sssssssNsNsNsIsKsssdsKsNsN}", "kind", ap_finding_kind_get(f->kind)->name, "title",
            ap_finding_kind_get(f->kind)->title, "severity",
            ap_finding_severity_name(f->severity), "route",
            f->route ? str_of(p, f->route) : Py_NewRef(Py_None), "function", name_or_none(p, f->frame),
            "file", py ? str_of(p, fr->file) : Py_NewRef(Py_None), "line",
            f->frame ? (f->line ? f->line : fr->line) : 0u, "value", (unsigned long long)f->value,
            "unit", f->unit, "share", f->share, "count", (unsigned long long)f->count, "path",
            path, "message", PyUnicode_DecodeUTF8(f->message, (Py_ssize_t)strlen(f->message), "replace"));
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    free(fs);
    return list;
}

/* routes() -> list of dict (ap_findings_routes: the route table with its wait split) */
static PyObject *profile_routes(ProfileObject *self, PyObject *Py_UNUSED(unused)) {
    ap_route_row *rows;
    size_t n;
    if (ap_findings_routes(self->prof, &rows, &n) != 0)
        return apext_raise_core("routes");
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        const ap_route_row *r = &rows[i];
        const ap_hist *h = r->latency;
        PyObject *lat = h == NULL ? Py_NewRef(Py_None) : Py_BuildValue(
            "{sKsKsKsKsKsK}", "count", (unsigned long long)ap_hist_count(h), "min_ns",
            (unsigned long long)ap_hist_min(h), "p50_ns",
            (unsigned long long)ap_hist_percentile(h, 50), "p95_ns",
            (unsigned long long)ap_hist_percentile(h, 95), "p99_ns",
            (unsigned long long)ap_hist_percentile(h, 99), "max_ns",
            (unsigned long long)ap_hist_max(h));
        PyObject *waits = lat == NULL ? NULL : PyDict_New();
        for (unsigned w = 0; waits != NULL && w < AP_WAIT_COUNT; w++) {
            PyObject *v = r->waits[w] ? PyLong_FromUnsignedLongLong(r->waits[w]) : NULL;
            if (r->waits[w] && (v == NULL || PyDict_SetItemString(waits, ap_wait_name(w), v) < 0))
                Py_CLEAR(waits);
            Py_XDECREF(v);
        }
        if (waits == NULL)
            Py_XDECREF(lat);
        PyObject *d = waits == NULL ? NULL : Py_BuildValue(
            "{sNsKsKsKsKsKsNsN}", "route", str_of(self->prof, r->route), "requests",
            (unsigned long long)r->requests, "work_ns", (unsigned long long)r->work_ns, "cpu_ns",
            (unsigned long long)r->cpu_ns, "wait_ns", (unsigned long long)r->wait_ns,
            "running_ns", (unsigned long long)r->running_ns, "waits", waits, "latency", lat);
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    free(rows);
    return list;
}

/* queries() -> list of dict (the captured statements, ap_prof.h "database queries") */
static PyObject *profile_queries(ProfileObject *self, PyObject *Py_UNUSED(unused)) {
    ap_prof *p = self->prof;
    size_t n = ap_prof_nqueries(p);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        const ap_query *q = ap_prof_query_at(p, i);
        const ap_frame *fr = ap_prof_frame(p, q->site);
        PyObject *d = Py_BuildValue(
            "{sNsssKsKsKsKsKsOsNsNsIsN}", "statement", str_of(p, q->statement), "kind",
            ap_query_kind_name(q->kind), "count",
            (unsigned long long)q->count, "total_ns", (unsigned long long)q->total_ns, "rows",
            (unsigned long long)q->rows, "requests", (unsigned long long)q->requests,
            "max_per_request", (unsigned long long)q->max_per_request, "n_plus_one",
            q->max_per_request >= AP_QUERY_N_PLUS_ONE ? Py_True : Py_False, "function",
            q->site ? str_of(p, fr->qualname) : Py_NewRef(Py_None), "file",
            q->site ? str_of(p, fr->file) : Py_NewRef(Py_None), "line", q->line, "route",
            q->route ? str_of(p, q->route) : Py_NewRef(Py_None));
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

static PyMethodDef profile_methods[] = {
    {"add_stall", (PyCFunction)(void (*)(void))profile_add_stall, METH_VARARGS | METH_KEYWORDS,
     "add_stall(start_ns, duration_ns, frames, route='', task='')\n\nAdd an event-loop stall "
     "seen by another producer (the middleware's watchdog): frames are its call path, "
     "outermost first, as (qualname, file, first_line, line); the culprit is the innermost "
     "frame of the app's code (not a library), else the innermost."},
    {"queries", (PyCFunction)profile_queries, METH_NOARGS,
     "queries() -> list[dict]\n\nThe captured database statements: statement (normalised), "
     "count, total_ns, rows, requests, max_per_request, n_plus_one, function, file, line, "
     "route (docs/waits.md)."},
    {"unreleased_objects", (PyCFunction)(void (*)(void))profile_unreleased,
     METH_VARARGS | METH_KEYWORDS,
     "unreleased_objects(requests=False) -> list[dict]\n\nObjects allocated while memory was "
     "recorded and still alive at its end, by type (most bytes first): type, count, bytes "
     "and the top sites (function, file, line, route, count, bytes); requests=True: only "
     "those made by requests (route set); docs/memory.md."},
    {"routes", (PyCFunction)profile_routes, METH_NOARGS,
     "routes() -> list[dict]\n\nThe route table, by work: route, requests, work_ns, cpu_ns, "
     "wait_ns (awaiting calls outside the app), running_ns (work less blocking waits), waits "
     "{kind: ns} (docs/waits.md) and latency\n(count, min_ns, p50_ns, p95_ns, p99_ns, max_ns; "
     "None without a histogram); docs/report.md."},
    {"findings", (PyCFunction)(void (*)(void))profile_findings, METH_VARARGS | METH_KEYWORDS,
     "findings(lines=None, baseline=None) -> list[dict]\n\nThe ranked findings; baseline: a profile "
     "before a change (regression findings); lines: a line profile of the "
     "same program whose hot lines join them. The findings (kind, title, severity, route, function, file, "
     "line, value, unit, share, count, path, message); docs/report.md."},
    {"functions", (PyCFunction)(void (*)(void))profile_functions, METH_VARARGS | METH_KEYWORDS,
     "functions(tree=None) -> list[dict]\n\nThe function table (pstats semantics), all trees "
     "or one; callers/callees refer to list indices."},
    {"lines", (PyCFunction)profile_lines, METH_NOARGS,
     "lines() -> list[dict]\n\nThe line table: file, function, function_line, line, hits, "
     "time_ns, await_ns, and alloc_bytes, alloc_count, live_bytes, peak_bytes for lines the "
     "allocation hook charged (with freed_bytes and net_bytes in a line profile's memory); "
     "all trees summed."},
    {"frames", (PyCFunction)profile_frames, METH_NOARGS,
     "frames() -> list[dict]\n\nEvery frame (id = index), with lineno."},
    {"select", (PyCFunction)profile_select, METH_O,
     "select(labels) -> Profile\n\nA new profile with the trees that carry every label of the "
     "dict (e.g. {'phase': 'warm'})."},
    {"project", (PyCFunction)profile_project, METH_O,
     "project(metric) -> Profile\n\nOne tree, the sum of all, whose self_ns and total_ns "
     "hold the view metric (wall, cpu, await, memory, samples) as the report views read it. "
     "ValueError when the name is unknown or the profile has none of it."},
    {"wait_totals", (PyCFunction)profile_wait_totals, METH_NOARGS,
     "wait_totals() -> dict[str, int]\n\nEach wait kind's ns over the whole profile "
     "(docs/waits.md); kinds with none are left out."},
    {"trees", (PyCFunction)profile_trees, METH_NOARGS,
     "trees() -> list[dict]\n\nEach tree's labels and node count."},
    {"nodes", (PyCFunction)profile_nodes, METH_O,
     "nodes(tree) -> list[dict]\n\nThe nodes of one tree, parents first."},
    {"save", (PyCFunction)profile_save, METH_O, "save(path)\n\nWrite the native file."},
    {"write_json", (PyCFunction)profile_write_json, METH_O, "write_json(path)\n\nJSON export."},
    {"write_pstats", (PyCFunction)profile_write_pstats, METH_O,
     "write_pstats(path)\n\nA file pstats.Stats loads."},
    {"json", (PyCFunction)profile_json, METH_NOARGS,
     "json() -> bytes\n\nThe JSON export (what write_json writes), in memory."},
    {"report", (PyCFunction)profile_report, METH_VARARGS,
     "report(format, title=None) -> bytes\n\nThe view `format` (html, svg, ...) in memory, "
     "as apiprof report writes it without filters."},
    {"absorb", (PyCFunction)profile_absorb, METH_VARARGS,
     "absorb(other, key=None, value=None)\n\nAdd every tree of profile other as a tree of "
     "this one (labelled key=value too), with its route latency and queries."},
    {"label_all", (PyCFunction)profile_label_all, METH_VARARGS,
     "label_all(key, value)\n\nSet the label key=value on every tree."},
    {"set_meta", (PyCFunction)(void (*)(void))profile_set_meta, METH_FASTCALL,
     "set_meta(key, value)\n\nAdd or replace a metadata entry."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef profile_getset[] = {
    {"meta", (getter)profile_get_meta, NULL, "Metadata (dict of str).", NULL},
    {"truncated", (getter)profile_get_truncated, NULL,
     "Whether the file it was read from was cut short.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot profile_slots[] = {
    {Py_tp_dealloc, profile_dealloc},
    {Py_tp_traverse, profile_traverse},
    {Py_tp_clear, profile_clear},
    {Py_tp_methods, profile_methods},
    {Py_tp_getset, profile_getset},
    {Py_tp_doc, "A profile: from a Tracer, or apiprof._core.load(path)."},
    {0, NULL},
};

static PyType_Spec profile_spec = {
    .name = "apiprof._core.Profile",
    .basicsize = sizeof(ProfileObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = profile_slots,
};

/* load(path) -> Profile */
static PyObject *profile_load(PyObject *module, PyObject *path_obj) {
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path_obj, &bytes))
        return NULL;
    int truncated = 0;
    ap_prof *p = ap_prof_read(PyBytes_AS_STRING(bytes), &truncated);
    if (p == NULL) {
        PyObject *r = apext_raise_core(ap_err_code() == AP_EIO ? NULL : PyBytes_AS_STRING(bytes));
        Py_DECREF(bytes);
        return r;
    }
    Py_DECREF(bytes);
    if (ap_prof_finish(p) != 0) {
        ap_prof_free(p);
        return apext_raise_core("load");
    }
    PyObject *obj = apext_profile_wrap(PyModule_GetState(module), NULL, p);
    if (obj != NULL)
        ((ProfileObject *)obj)->truncated = truncated;
    return obj;
}

/* loads(data) -> Profile: as load(), from bytes (the native file or the JSON export). */
static PyObject *profile_loads(PyObject *module, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    int truncated = 0;
    ap_prof *p = ap_prof_read_mem(view.buf, (size_t)view.len, &truncated);
    PyBuffer_Release(&view);
    if (p == NULL)
        return apext_raise_core(NULL);
    if (ap_prof_finish(p) != 0) {
        ap_prof_free(p);
        return apext_raise_core("loads");
    }
    PyObject *obj = apext_profile_wrap(PyModule_GetState(module), NULL, p);
    if (obj != NULL)
        ((ProfileObject *)obj)->truncated = truncated;
    return obj;
}

static PyMethodDef loads_def = {
    "loads", (PyCFunction)profile_loads, METH_O,
    "loads(data) -> Profile\n\nAs load(), from bytes: a native file or a JSON export; "
    "ValueError if it is not a profile."};

static PyMethodDef load_def = {
    "load", (PyCFunction)profile_load, METH_O,
    "load(path) -> Profile\n\nRead a native apiprof file; OSError if unreadable, ValueError if "
    "it is not a profile."};

int apext_profile_init(PyObject *module, apext_state *st) {
    st->profile_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &profile_spec, NULL);
    if (st->profile_type == NULL || PyModule_AddType(module, st->profile_type) < 0)
        return -1;
    PyObject *fn = PyCFunction_NewEx(&load_def, module, NULL);
    if (fn == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "load", fn);
    Py_DECREF(fn);
    if (rc != 0 || (fn = PyCFunction_NewEx(&loads_def, module, NULL)) == NULL)
        return -1;
    rc = PyModule_AddObjectRef(module, "loads", fn);
    Py_DECREF(fn);
    return rc;
}

/* report.c -- apiprof._core.write_report: every report format of a profile, written by the C core. */
#include "ext.h"

#include <errno.h>
#include <string.h>

#include "ap_diff.h"
#include "ap_err.h"
#include "ap_prof.h"
#include "ap_report.h"
#include "ap_sweep.h"

/* A str option of the dict, or NULL (absent / None).  -1 on a wrong type. */
static int opt_str(PyObject *opts, const char *key, const char **out) {
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


static PyObject *write_view(ap_prof *p, const char *fmt, PyObject *out_obj, PyObject *opts,
                            int truncated, const ap_prof *lines, ap_prof *baseline);

static PyObject *write_report(PyObject *module, PyObject *args) {
    const char *fmt;
    PyObject *prof_obj, *out_obj = Py_None, *opts = Py_None;
    if (!PyArg_ParseTuple(args, "Os|OO:write_report", &prof_obj, &fmt, &out_obj, &opts))
        return NULL;
    /* A Profile is written as it is; a path is read first (and freed here). */
    int truncated = 0;
    ap_prof *owned = NULL, *p;
    if (PyUnicode_Check(prof_obj)) {
        const char *path_in = PyUnicode_AsUTF8(prof_obj);
        if (path_in == NULL)
            return NULL;
        p = owned = ap_prof_read(path_in, &truncated);
        if (p == NULL)
            return apext_raise_core(path_in);
    } else {
        p = apext_profile_get(PyModule_GetState(module), prof_obj, &truncated);
        if (p == NULL)
            return NULL;
    }
    /* options["lines"]: a Profile (a line profile whose hot lines join the findings);
     * options["baseline"]: a Profile (before a change: the regression findings). */
    ap_prof *side[2] = {NULL, NULL};
    static const char *const side_keys[2] = {"lines", "baseline"};
    for (int i = 0; i < 2; i++) {
        PyObject *so = opts != Py_None && PyDict_Check(opts) ? PyDict_GetItemString(opts, side_keys[i])
                                                            : NULL;
        if (so != NULL && so != Py_None) {
            int st;
            side[i] = apext_profile_get(PyModule_GetState(module), so, &st);
            if (side[i] == NULL) {
                ap_prof_free(owned);
                return NULL;
            }
        }
    }
    PyObject *res = write_view(p, fmt, out_obj, opts, truncated, side[0], side[1]);
    ap_prof_free(owned);
    return res;
}

/* write_report() once the profile is in hand. */
static PyObject *write_view(ap_prof *p, const char *fmt, PyObject *out_obj, PyObject *opts,
                            int truncated, const ap_prof *lines, ap_prof *baseline) {
    if (opts != Py_None && !PyDict_Check(opts))
        return PyErr_Format(PyExc_TypeError, "options must be a dict");
    PyObject *od = opts == Py_None ? NULL : opts;
    ap_report_opts o;
    memset(&o, 0, sizeof o);
    o.lines = lines;
    o.baseline = baseline;
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
    /* Written where path_out names (the command line decides between writing through and
     * a new file renamed over the target: apiprof/_output.py). */
    FILE *out = stdout;
    if (path_out != NULL) {
        out = fopen(path_out, "wb");
        if (out == NULL)
            return PyErr_Format(PyExc_OSError, "cannot write %s: %s", path_out, strerror(errno));
    }
    int rc = ap_report_write(p, fmt, &o, out);
    if (path_out != NULL) {
        if (fclose(out) != 0 && rc == 0)
            rc = ap_err_set(AP_EIO, "%s: %s", path_out, strerror(errno));
    } else {
        fflush(stdout);
    }
    if (rc != 0)
        return apext_raise_core(NULL);
    return PyBool_FromLong(truncated);
}

static PyObject *report_format_for_path(PyObject *Py_UNUSED(m), PyObject *arg) {
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL)
        return NULL;
    const char *fmt = ap_report_format_for_path(path);
    if (fmt == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(fmt);
}

/* The profile of a diff argument: a Profile (borrowed) or a path, read into *owned. */
static ap_prof *diff_side(PyObject *module, PyObject *obj, ap_prof **owned) {
    int truncated = 0;
    *owned = NULL;
    if (PyUnicode_Check(obj)) {
        const char *path = PyUnicode_AsUTF8(obj);
        if (path == NULL)
            return NULL;
        *owned = ap_prof_read(path, &truncated);
        if (*owned == NULL)
            apext_raise_core(path);
        return *owned;
    }
    return apext_profile_get(PyModule_GetState(module), obj, &truncated);
}

static PyObject *diff(PyObject *module, PyObject *args) {
    PyObject *a_obj, *b_obj, *opts = Py_None;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "OOs|O:diff", &a_obj, &b_obj, &fmt, &opts))
        return NULL;
    if (opts != Py_None && !PyDict_Check(opts))
        return PyErr_Format(PyExc_TypeError, "options must be a dict");
    PyObject *od = opts == Py_None ? NULL : opts;
    ap_diff_opts o;
    memset(&o, 0, sizeof o);
    const char *per = NULL;
    if (opt_str(od, "metric", &o.metric) || opt_str(od, "per", &per) ||
        opt_str(od, "title", &o.title) || opt_str(od, "name_a", &o.name_a) ||
        opt_str(od, "name_b", &o.name_b))
        return NULL;
    if (per != NULL && strcmp(per, "request") == 0)
        o.per = AP_DIFF_PER_REQUEST;
    else if (per != NULL && strcmp(per, "total") == 0)
        o.per = AP_DIFF_PER_TOTAL;
    else if (per != NULL)
        return PyErr_Format(PyExc_ValueError, "per must be 'request' or 'total', not '%s'", per);
    ap_prof *own_a, *own_b = NULL;
    ap_prof *a = diff_side(module, a_obj, &own_a);
    ap_prof *b = a ? diff_side(module, b_obj, &own_b) : NULL;
    PyObject *res = NULL;
    if (b != NULL) {
        ap_sbuf out = {0};
        if (ap_diff_write(a, b, fmt, &o, &out) != 0)
            apext_raise_core(NULL);
        else
            res = PyUnicode_DecodeUTF8(out.data ? out.data : "", (Py_ssize_t)out.len, "replace");
        ap_sbuf_free(&out);
    }
    ap_prof_free(own_b);
    ap_prof_free(own_a);
    return res;
}

/* A float item of a dict; None or absent: dflt.  -1 with an exception on a wrong type. */
static int item_double(PyObject *d, const char *key, double dflt, double *out) {
    PyObject *v = PyDict_GetItemString(d, key);   /* borrowed */
    if (v == NULL || v == Py_None) {
        *out = dflt;
        return 0;
    }
    *out = PyFloat_AsDouble(v);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* write_sweep(format, path, chart): the load sweep's chart ("svg") or page ("html"). */
static PyObject *write_sweep(PyObject *module, PyObject *args) {
    (void)module;
    const char *fmt, *path;
    PyObject *chart;
    if (!PyArg_ParseTuple(args, "ssO!:write_sweep", &fmt, &path, &PyDict_Type, &chart))
        return NULL;
    if (strcmp(fmt, "svg") != 0 && strcmp(fmt, "html") != 0)
        return PyErr_Format(PyExc_ValueError, "format must be 'svg' or 'html', not %s", fmt);
    const char *title = NULL, *slo = NULL, *conclusion = NULL;
    double limit, sat, knee;
    if (opt_str(chart, "title", &title) || opt_str(chart, "slo", &slo) ||
        opt_str(chart, "conclusion", &conclusion) ||
        item_double(chart, "slo_limit_ms", 200, &limit) ||
        item_double(chart, "saturation", -1, &sat) || item_double(chart, "knee", -1, &knee))
        return NULL;
    if (!(limit > 0))
        return PyErr_Format(PyExc_ValueError, "slo_limit_ms must be > 0");
    PyObject *steps = PyDict_GetItemString(chart, "steps");
    if (steps == NULL || !PyList_Check(steps))
        return PyErr_Format(PyExc_TypeError, "chart['steps'] must be a list of dicts");
    Py_ssize_t n = PyList_GET_SIZE(steps);
    ap_sweep_step *st = PyMem_Calloc(n ? (size_t)n : 1, sizeof *st);
    if (st == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(steps, i);
        double ok;
        if (!PyDict_Check(s)) {
            PyMem_Free(st);
            return PyErr_Format(PyExc_TypeError, "chart['steps'] must be a list of dicts");
        }
        if (item_double(s, "offered", 0, &st[i].offered) ||
            item_double(s, "achieved", 0, &st[i].achieved) ||
            item_double(s, "slo_ms", -1, &st[i].slo_ms) ||
            item_double(s, "p50_ms", -1, &st[i].p50_ms) ||
            item_double(s, "failed", 0, &st[i].failed) ||
            item_double(s, "server_cpu", -1, &st[i].server_cpu) || item_double(s, "ok", 0, &ok)) {
            PyMem_Free(st);
            return NULL;
        }
        st[i].ok = ok != 0;
    }
    ap_sweep_chart c = {.title = title, .slo = slo, .slo_limit_ms = limit, .steps = st,
                        .n = (size_t)n, .saturation = (long)sat, .knee = (long)knee,
                        .conclusion = conclusion};
    ap_sbuf sb = {0};
    if (fmt[0] == 's')
        ap_sweep_svg(&sb, &c);
    else
        ap_sweep_html(&sb, &c);
    PyMem_Free(st);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        ap_sbuf_free(&sb);
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    }
    int rc = ap_sbuf_write(&sb, f);
    ap_sbuf_free(&sb);
    if (fclose(f) != 0 && rc == 0)
        rc = ap_err_set(AP_EIO, "%s: %s", path, strerror(errno));
    if (rc < 0)
        return apext_raise_core(path);
    Py_RETURN_NONE;
}

/* pyroscope_push_request(labels, pprof): the body of a Pyroscope Push. */
static PyObject *pyroscope_push_request(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *labels;
    Py_buffer pprof;
    if (!PyArg_ParseTuple(args, "O!y*:pyroscope_push_request", &PyList_Type, &labels, &pprof))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(labels);
    const char **pairs = PyMem_Calloc(2 * (size_t)n + 1, sizeof *pairs);
    PyObject *result = NULL;
    if (pairs == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(labels, i); /* borrowed: the list keeps them */
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
            (pairs[2 * i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 0))) == NULL ||
            (pairs[2 * i + 1] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 1))) == NULL) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError, "labels must be a list of (name, value) str pairs");
            }
            goto out;
        }
    }
    ap_sbuf sb = {0};
    if (ap_pprof_push_request(pairs, (size_t)n, pprof.buf, (size_t)pprof.len, &sb) == 0)
        result = PyBytes_FromStringAndSize(sb.data, (Py_ssize_t)sb.len);
    else
        apext_raise_core(NULL);
    ap_sbuf_free(&sb);
out:
    PyMem_Free(pairs);
    PyBuffer_Release(&pprof);
    return result;
}

PyMethodDef apext_report_methods[] = {
    {"pyroscope_push_request", pyroscope_push_request, METH_VARARGS,
     "pyroscope_push_request(labels, pprof) -> bytes\n\n"
     "The protobuf body of Grafana Pyroscope's /push.v1.PusherService/Push for one series:\n"
     "labels, a list of (name, value) str pairs, and one raw sample, pprof (gzipped\n"
     "profile.proto bytes).  Raises TypeError (labels), MemoryError."},
    {"diff", diff, METH_VARARGS,
     "diff(a, b, format, options=None) -> str\n\n"
     "Compare profile a (before) with b (after), each a Profile or the path of a native\n"
     "file, and return the view `format`: 'json' (docs/diff.md), 'svg' (differential\n"
     "flame graph) or 'html'.  options: metric, per ('request' | 'total'), title, name_a,\n"
     "name_b.  Raises ValueError (unknown format or metric, per request without\n"
     "requests), LookupError (no function in common), OSError, MemoryError."},
    {"write_sweep", write_sweep, METH_VARARGS,
     "write_sweep(format, path, chart) -> None\n\n"
     "The load sweep's latency-vs-throughput chart ('svg') or page ('html', the chart and\n"
     "the per-step table). chart: title, slo, slo_limit_ms, saturation, knee (step indices\n"
     "or None), conclusion, steps (offered, achieved, slo_ms, p50_ms, failed, server_cpu, ok)."},
    {"write_report", write_report, METH_VARARGS,
     "write_report(profile, format, path_out=None, options=None) -> bool\n\n"
     "Write the view `format` of a Profile (or of the native file at a path)\n"
     "to path_out (stdout when None).\n"
     "options: metric, min_percent, route, thread, task, phase, title, lines (a Profile),\n"
     "baseline (a Profile: the regression findings).  Returns\n"
     "True when the profile was read from a file cut short.  Raises\n"
     "ValueError (unknown format or metric),\n"
     "LookupError (nothing matches a filter; no timeline for 'chrome'),\n"
     "OSError, MemoryError."},
    {"report_format_for_path", report_format_for_path, METH_O,
     "report_format_for_path(path) -> str | None\n\nThe format a file name's extension implies."},
    {NULL, NULL, 0, NULL},
};

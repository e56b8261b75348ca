/* hist.c -- apiprof._core.Histogram: the core's log-linear histogram for Python. */
#include "ext.h"
#include "ap_err.h"
#include "ap_hist.h"

typedef struct {
    PyObject_HEAD
    ap_hist h; /* fixed size, embedded */
} HistObject;

static PyObject *hist_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Histogram", kwlist))
        return NULL;
    HistObject *self = (HistObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    ap_hist_init(&self->h);
    return (PyObject *)self;
}

static void hist_dealloc(HistObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int value_arg(PyObject *o, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "Histogram values are integers in [0, 2**64)");
        }
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *hist_record(HistObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t v, n = 1;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "record(value, count=1)");
        return NULL;
    }
    if (value_arg(args[0], &v) < 0 || (nargs == 2 && value_arg(args[1], &n) < 0))
        return NULL;
    ap_hist_record_n(&self->h, v, n);
    Py_RETURN_NONE;
}

static PyObject *hist_merge(HistObject *self, PyObject *other) {
    if (!PyObject_TypeCheck(other, Py_TYPE(self))) {
        PyErr_SetString(PyExc_TypeError, "merge() takes a Histogram");
        return NULL;
    }
    ap_hist_merge(&self->h, &((HistObject *)other)->h);
    Py_RETURN_NONE;
}

static PyObject *hist_percentile(HistObject *self, PyObject *arg) {
    double p = PyFloat_AsDouble(arg);
    if (p == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(p >= 0.0 && p <= 100.0)) {
        PyErr_SetString(PyExc_ValueError, "percentile must be in [0, 100]");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(ap_hist_percentile(&self->h, p));
}

static PyObject *hist_reset(HistObject *self, PyObject *Py_UNUSED(a)) {
    ap_hist_reset(&self->h);
    Py_RETURN_NONE;
}

static PyObject *hist_encode(HistObject *self, PyObject *Py_UNUSED(a)) {
    size_t n = ap_hist_encoded_size(&self->h);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b == NULL)
        return NULL;
    size_t w = ap_hist_encode(&self->h, (uint8_t *)PyBytes_AS_STRING(b), n);
    if (w == 0) {
        Py_DECREF(b);
        return apext_raise_core(NULL);
    }
    if (w != n && _PyBytes_Resize(&b, (Py_ssize_t)w) < 0)
        return NULL;
    return b;
}

static PyObject *hist_decode(PyObject *cls, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    HistObject *self = (HistObject *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (self == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    ap_hist_init(&self->h);
    int rc = ap_hist_decode(&self->h, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rc < 0) {
        Py_DECREF(self);
        return apext_raise_core("corrupt histogram");
    }
    return (PyObject *)self;
}

static PyObject *get_count(HistObject *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(ap_hist_count(&s->h)); }
static PyObject *get_min(HistObject *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(ap_hist_min(&s->h)); }
static PyObject *get_max(HistObject *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(ap_hist_max(&s->h)); }
static PyObject *get_sum(HistObject *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(ap_hist_sum(&s->h)); }
static PyObject *get_mean(HistObject *s, void *c) { (void)c; return PyFloat_FromDouble(ap_hist_mean(&s->h)); }

static PyGetSetDef hist_getset[] = {
    {"count", (getter)get_count, NULL, "number of recorded values", NULL},
    {"min", (getter)get_min, NULL, "smallest value (exact; 0 when empty)", NULL},
    {"max", (getter)get_max, NULL, "largest value (exact; 0 when empty)", NULL},
    {"sum", (getter)get_sum, NULL, "sum of the values (exact, modulo 2**64)", NULL},
    {"mean", (getter)get_mean, NULL, "sum / count (0.0 when empty)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef hist_methods[] = {
    {"record", (PyCFunction)(void (*)(void))hist_record, METH_FASTCALL,
     "record(value, count=1): add a value (a non-negative int) count times."},
    {"merge", (PyCFunction)hist_merge, METH_O, "merge(other): add another histogram's values (exact)."},
    {"percentile", (PyCFunction)hist_percentile, METH_O,
     "percentile(p) -> int: the value at percentile p in [0, 100], within 1%."},
    {"reset", (PyCFunction)hist_reset, METH_NOARGS, "reset(): forget every value."},
    {"encode", (PyCFunction)hist_encode, METH_NOARGS, "encode() -> bytes: the compact serialised form."},
    {"decode", (PyCFunction)hist_decode, METH_O | METH_CLASS,
     "Histogram.decode(data) -> Histogram; ValueError if data is corrupt."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot hist_slots[] = {
    {Py_tp_new, hist_new},
    {Py_tp_dealloc, hist_dealloc},
    {Py_tp_methods, hist_methods},
    {Py_tp_getset, hist_getset},
    {Py_tp_doc, "Histogram(): log-linear histogram of non-negative integers (nanoseconds),\n"
                "fixed memory, percentiles within 1%, exact count/min/max/sum."},
    {0, NULL},
};

static PyType_Spec hist_spec = {
    .name = "apiprof._core.Histogram",
    .basicsize = sizeof(HistObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = hist_slots,
};

int apext_hist_init(PyObject *module, apext_state *st) {
    st->hist_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &hist_spec, NULL);
    if (st->hist_type == NULL)
        return -1;
    return PyModule_AddObjectRef(module, "Histogram", (PyObject *)st->hist_type);
}

/* module.c -- the apiprof._core extension module: state, init, clock functions. */
#include "ext.h"
#include "locks.h"
#include "memory.h"
#include "ap_clock.h"
#include "ap_err.h"
#include "ap_metric.h"
#include "labels.h"
#include "session.h"
#include "spyboard.h"
#include "stallwatch.h"

PyObject *apext_raise_core(const char *what) {
    PyObject *type;
    switch (ap_err_code()) {
    case AP_ENOMEM: type = PyExc_MemoryError; break;
    case AP_EIO: type = PyExc_OSError; break;
    case AP_ENOTFOUND: type = PyExc_LookupError; break;
    default: type = PyExc_ValueError; break;
    }
    if (what != NULL)
        PyErr_Format(type, "%s: %s", what, ap_err_msg());
    else
        PyErr_SetString(type, ap_err_msg());
    return NULL;
}

PyObject *apext_metrics(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    PyObject *list = PyList_New(AP_M_COUNT);
    for (unsigned i = 0; list != NULL && i < AP_M_COUNT; i++) {
        unsigned k = ap_metric_column(i);   /* in table column order */
        const ap_metric_info *mi = ap_metric_get(k);
        PyObject *d = Py_BuildValue(
            "{sIsssssssOsOszszszss}", "index", k, "name", mi->name, "unit", mi->unit, "sum",
            mi->sum == AP_SUM_ALL ? "all" : "outermost", "table",
            (mi->views & AP_MV_TABLE) ? Py_True : Py_False, "tree",
            (mi->views & AP_MV_TREE) ? Py_True : Py_False, "label", mi->label, "view", mi->view,
            "pprof", mi->pprof, "doc", mi->doc);
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyObject *clock_source(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    return PyUnicode_FromString(ap_clock_source());
}

static PyObject *now_ns(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    return PyLong_FromUnsignedLongLong(ap_clock_now_ns());
}

static PyObject *thread_cpu_ns(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    return PyLong_FromUnsignedLongLong(ap_clock_thread_cpu_ns());
}

/* _bench_region(fn) -> fn(): a named C frame around a call, so that
 * bench/instructions.py counts only inside it (callgrind's
 * --toggle-collect=apext_bench_region).  Kept out of line and external so that
 * the symbol exists whatever the compiler does. */
__attribute__((noinline)) PyObject *apext_bench_region(PyObject *Py_UNUSED(m), PyObject *fn);
__attribute__((noinline)) PyObject *apext_bench_region(PyObject *Py_UNUSED(m), PyObject *fn) {
    return PyObject_CallNoArgs(fn);
}

static PyMethodDef module_methods[] = {
    {"_bench_region", apext_bench_region, METH_O,
     "_bench_region(fn) -> fn(): calls fn inside a C function named apext_bench_region\n"
     "(the region bench/instructions.py counts)."},
    {"clock_source", clock_source, METH_NOARGS,
     "clock_source() -> str\n\nThe wall clock in use: 'tsc' or 'monotonic'."},
    {"now_ns", now_ns, METH_NOARGS,
     "now_ns() -> int\n\nThe profiler's monotonic wall clock, in nanoseconds."},
    {"thread_cpu_ns", thread_cpu_ns, METH_NOARGS,
     "thread_cpu_ns() -> int\n\nCPU time of the calling thread, in nanoseconds."},
    {"metrics", apext_metrics, METH_NOARGS,
     "metrics() -> list[dict]\n\nThe metric catalogue: per node metric its index, name, unit,\n"
     "sum ('all' or 'outermost': once per recursion), table/tree (the views showing it),\n"
     "label, view (the --metric name), pprof and doc."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    apext_state *st = PyModule_GetState(module);
    ap_clock_init();
    if (PyModule_AddFunctions(module, apext_report_methods) < 0)
        return -1;
    if (PyModule_AddFunctions(module, apext_labels_methods) < 0)
        return -1;
    if (PyModule_AddFunctions(module, apext_queries_methods) < 0)
        return -1;
    if (PyModule_AddFunctions(module, apext_stallwatch_methods) < 0 ||
        PyModule_AddFunctions(module, apext_tracer_methods) < 0)
        return -1;
    if (PyModule_AddFunctions(module, apext_spyboard_methods) < 0 || apext_spyboard_init() < 0)
        return -1;
    if (apext_hist_init(module, st) < 0)
        return -1;
    if (apext_timer_init(module, st) < 0)
        return -1;
    if (apext_profile_init(module, st) < 0)
        return -1;
#define APEXT_PRODUCER_EXEC_(name, init) \
    if (init(module, st) < 0)             \
        return -1;
    APEXT_PRODUCERS(APEXT_PRODUCER_EXEC_)
#undef APEXT_PRODUCER_EXEC_
    if (apext_routes_init(module, st) < 0 || apext_locks_init(module) < 0 ||
        apext_memtimeline_init(module, st) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg) {
    apext_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_VISIT(st->hist_type);
    Py_VISIT(st->tracer_type);
    Py_VISIT(st->profile_type);
    Py_VISIT(st->line_tracer_type);
    int rc = apext_timer_traverse(st, visit, arg);
    return rc ? rc : apext_routes_traverse(st, visit, arg);
}

static int module_clear(PyObject *module) {
    apext_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_CLEAR(st->hist_type);
    Py_CLEAR(st->tracer_type);
    Py_CLEAR(st->profile_type);
    Py_CLEAR(st->line_tracer_type);
    apext_timer_clear(st);
    apext_routes_clear(st);
    return 0;
}

static void module_free(void *module) {
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

PyModuleDef apext_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "apiprof._core",
    .m_doc = "The C core of apiprof: clocks, histograms, the block timer, the tracer, the line tracer and profiles.",
    .m_size = sizeof(apext_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void) {
    return PyModuleDef_Init(&apext_module_def);
}

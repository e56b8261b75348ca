/* labels.c -- route and task labels of the function tracer: reading them on a cache miss, the label trees, and _core.label_set(). */
#include "labels.h"

#include <string.h>

#include "ap_err.h"

APEXT_TLS apext_label_cache apext_labels_tls;
uint64_t apext_labels_epoch = 1;

/* ---- tree indices ------------------------------------------------------------------ */

uint32_t apext_treeix_get(apext_treeix *ix, const ap_prof *p, const ap_tree *tree) {
    uint64_t *v = ap_map_get(&ix->map, (uint64_t)(uintptr_t)tree);
    if (v != NULL)
        return (uint32_t)*v;
    for (size_t n = ap_prof_ntrees(p); ix->indexed < n; ix->indexed++)
        if (ap_map_put(&ix->map, (uint64_t)(uintptr_t)ap_prof_tree_at(p, ix->indexed),
                       ix->indexed) != 0)
            return AP_NONE;
    v = ap_map_get(&ix->map, (uint64_t)(uintptr_t)tree);
    return v != NULL ? (uint32_t)*v : AP_NONE;
}

void apext_treeix_free(apext_treeix *ix) {
    ap_map_free(&ix->map);
    ix->indexed = 0;
}

/* ---- set-up ----------------------------------------------------------------------- */

int apext_labels_init(apext_labels *l, ap_prof *p, PyObject *arg, int tasks) {
    l->prof = p;
    apext_labels_epoch++;   /* a cache of a freed tracer at the same address is stale */
    if (arg == Py_None)
        return 0;
    if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != 2 ||
        !PyContextVar_CheckExact(PyTuple_GET_ITEM(arg, 0))) {
        PyErr_SetString(PyExc_TypeError, "labels must be a (ContextVar, paused) tuple or None");
        return -1;
    }
    l->var = Py_NewRef(PyTuple_GET_ITEM(arg, 0));
    l->paused = Py_NewRef(PyTuple_GET_ITEM(arg, 1));
    l->k_route = ap_prof_intern(p, "route", 5);
    l->k_task = ap_prof_intern(p, "task", 4);
    l->other = ap_prof_intern(p, "<other>", 7);
    if (l->k_route == AP_NONE || l->k_task == AP_NONE || l->other == AP_NONE) {
        PyErr_NoMemory();
        return -1;
    }
    if (tasks) {
        PyObject *asyncio = PyImport_ImportModule("asyncio");
        if (asyncio == NULL)
            return -1;
        l->get_loop = PyObject_GetAttrString(asyncio, "_get_running_loop");
        l->cur_task = l->get_loop ? PyObject_GetAttrString(asyncio, "current_task") : NULL;
        Py_DECREF(asyncio);
        if (l->cur_task == NULL)
            return -1;
        l->tasks = 1;
    }
    l->on = 1;
    return 0;
}

void apext_labels_start(apext_labels *l) {
    (void)l;
    apext_labels_epoch++;
}

void apext_labels_phase(apext_labels *l) {
    ap_map_clear(&l->trees);
    apext_labels_epoch++;
}

int apext_labels_traverse(apext_labels *l, visitproc visit, void *arg) {
    Py_VISIT(l->var);
    Py_VISIT(l->paused);
    Py_VISIT(l->get_loop);
    Py_VISIT(l->cur_task);
    return 0;
}

void apext_labels_clear(apext_labels *l) {
    Py_CLEAR(l->var);
    Py_CLEAR(l->paused);
    Py_CLEAR(l->get_loop);
    Py_CLEAR(l->cur_task);
}

void apext_labels_free(apext_labels *l) {
    ap_map_free(&l->routes);
    ap_map_free(&l->task_names);
    ap_map_free(&l->sets);
    ap_map_free(&l->trees);
    apext_treeix_free(&l->ix);
    l->on = 0;
}

/* ---- the slow path: reading the labels -------------------------------------------- */

/* The string id of label value s, if the key's bound admits it; "<other>"
 * past the bound; AP_NONE when it can't be interned. */
static ap_str_id admit(apext_labels *l, ap_map *seen, PyObject *s) {
    ap_str_id id = apext_session_intern(l->prof, s);
    if (id == AP_NONE || ap_map_get(seen, id) != NULL)
        return id;
    if (ap_map_size(seen) >= APEXT_LABELS_MAX_VALUES)
        return l->other;
    return ap_map_put(seen, id, 1) == 0 ? id : AP_NONE;
}

/* asyncio's default task name: "Task-" and digits. */
static int default_task_name(PyObject *name) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (s == NULL) {
        PyErr_Clear();
        return 1;
    }
    return ap_task_name_is_default(s, (size_t)n);
}

/* The name of the asyncio task running in this thread, if it was named;
 * AP_NONE otherwise.  Called with no exception set. */
static ap_str_id task_label(apext_labels *l) {
    PyObject *loop = PyObject_CallNoArgs(l->get_loop);
    if (loop == NULL || loop == Py_None) {
        Py_XDECREF(loop);
        PyErr_Clear();
        return AP_NONE;
    }
    PyObject *task = PyObject_CallOneArg(l->cur_task, loop);
    Py_DECREF(loop);
    if (task == NULL || task == Py_None) {
        Py_XDECREF(task);
        PyErr_Clear();
        return AP_NONE;
    }
    PyObject *name = PyObject_CallMethod(task, "get_name", NULL);
    Py_DECREF(task);
    ap_str_id id = AP_NONE;
    if (name != NULL && PyUnicode_Check(name) && !default_task_name(name))
        id = admit(l, &l->task_names, name);
    Py_XDECREF(name);
    PyErr_Clear();
    return id;
}

void apext_labels_refresh(apext_labels *l, PyThreadState *ts, apext_label_cache *c) {
    ap_str_id route = AP_NONE, task = AP_NONE;
    int paused = 0;
    /* Events such as PY_UNWIND fire with an exception set: keep it aside. */
    AP_SAVE_EXC(exc);
    if (ts->context != NULL) {   /* no context yet: nothing set (and none is created) */
        PyObject *v = NULL;
        if (PyContextVar_Get(l->var, NULL, &v) < 0)
            PyErr_Clear();
        else if (v == l->paused)
            paused = 1;
        else if (v != NULL && PyUnicode_Check(v))
            route = admit(l, &l->routes, v);
        Py_XDECREF(v);
    }
    if (l->tasks && !paused)
        task = task_label(l);
    AP_RESTORE_EXC(exc);
    c->ts = ts;
    c->ctx = ts->context;
    c->ver = ts->context_ver;
    c->epoch = apext_labels_epoch;
    c->owner = l;
    c->paused = paused;
    c->route = route;
    c->task = task;
    c->own = NULL;
    c->tree = NULL;
}

/* ---- the slow path: the label tree ------------------------------------------------- */

ap_tree *apext_labels_choose(apext_labels *l, ap_tree *own, apext_label_cache *c) {
    int inserted;
    uint64_t *set = ap_map_upsert(&l->sets, (uint64_t)c->route << 32 | c->task,
                                  ap_map_size(&l->sets), &inserted);
    uint32_t own_ix = apext_treeix_get(&l->ix, l->prof, own);
    if (set == NULL || own_ix == AP_NONE)
        return NULL;
    uint64_t key = (uint64_t)own_ix << 32 | *set;
    uint64_t *found = ap_map_get(&l->trees, key);
    ap_tree *tree;
    if (found != NULL) {
        tree = (ap_tree *)(uintptr_t)*found;
    } else {
        /* The thread tree's labels (thread, phase, ...) and the new ones. */
        ap_label labels[8];
        size_t n = 0;
        for (size_t i = 0; i < ap_tree_nlabels(own) && n < 6; i++) {
            ap_label x = ap_tree_label_at(own, i);
            if (x.key != l->k_route && x.key != l->k_task)
                labels[n++] = x;
        }
        if (c->route != AP_NONE)
            labels[n++] = (ap_label){l->k_route, c->route};
        if (c->task != AP_NONE)
            labels[n++] = (ap_label){l->k_task, c->task};
        tree = ap_prof_tree_new(l->prof, labels, n);
        if (tree == NULL || ap_map_put(&l->trees, key, (uint64_t)(uintptr_t)tree) != 0)
            return NULL;
        l->nlabelled++;
    }
    c->own = own;
    c->tree = tree;
    return tree;
}

int apext_labels_sync(apext_labels *l) {
    uint64_t key, val;
    for (size_t pos = 0; (pos = ap_map_next(&l->trees, pos, &key, &val)) != 0;) {
        const ap_tree *own = ap_prof_tree_at(l->prof, (size_t)(key >> 32));
        ap_tree *tree = (ap_tree *)(uintptr_t)val;
        for (size_t i = 0; own != NULL && i < ap_tree_nlabels(own); i++) {
            ap_label x = ap_tree_label_at(own, i);
            if (x.key != l->k_route && x.key != l->k_task &&
                ap_tree_label_get(tree, x.key) == AP_NONE &&
                ap_tree_label_set(tree, x.key, x.val) != 0)
                return -1;
        }
    }
    return 0;
}

/* ---- label_set(var, value) ---------------------------------------------------------- */

/* Set var to value in the current context and make every thread read its
 * labels again (ContextVar.set alone changes nothing the caches see).  A
 * function of apiprof._core, so the tracer's "apiprof" exclusion keeps the
 * call itself out of profiles: its enter and exit would be seen in
 * different label states. */
static PyObject *label_set(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyContextVar_CheckExact(a[0]))
        return PyErr_Format(PyExc_TypeError, "label_set(var, value): var must be a ContextVar");
    PyObject *token = PyContextVar_Set(a[0], a[1]);
    if (token == NULL)
        return NULL;
    apext_labels_epoch++;
    return token;
}

/* label_set(var, value), and a request with that route starts here: counted
 * in the tree its work goes to (RouteLabels calls it once per request). */
static PyObject *label_request(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    PyObject *token = label_set(m, a, n);
    if (token != NULL && PyUnicode_Check(a[1]))
        apext_tracer_count_request();
    return token;
}

/* route_latency(ns): a request of the current context's route ends, ns after
 * it started (RouteLabels and the middleware time the app's call). */
static PyObject *route_latency(PyObject *Py_UNUSED(m), PyObject *arg) {
    unsigned long long ns = PyLong_AsUnsignedLongLong(arg);
    if (ns == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    apext_tracer_route_latency((uint64_t)ns);
    Py_RETURN_NONE;
}

PyMethodDef apext_labels_methods[] = {
    {"label_set", (PyCFunction)(void (*)(void))label_set, METH_FASTCALL,
     "label_set(var, value) -> Token\n\nvar.set(value), seen at once by the tracer's route "
     "labels\n(apiprof._labels)."},
    {"label_request", (PyCFunction)(void (*)(void))label_request, METH_FASTCALL,
     "label_request(var, value) -> Token\n\nlabel_set(var, value) for the start of a request "
     "with route\nvalue: the running tracer counts it (the root calls of its route tree)."},
    {"route_latency", route_latency, METH_O,
     "route_latency(ns)\n\nA request of the current context's route ends ns after its start: "
     "recorded in\nthe running tracer's latency histogram of that route."},
    {NULL, NULL, 0, NULL},
};

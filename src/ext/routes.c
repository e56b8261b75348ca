/* routes.c -- apiprof._core.RouteTable and RouteRequest: the per-request work of the ASGI middleware.
 *
 * RouteTable wraps an ap_routes table (src/core/ap_routes.h).  The middleware
 * makes one RouteRequest per HTTP request with RouteTable.request(scope, send):
 *
 *   - the RouteRequest is the `send` handed to the app: calling it notes the
 *     status, counts body bytes, stamps the time the last body chunk is handed
 *     to the server, optionally adds headers (Server-Timing, a profile id) to
 *     http.response.start, and returns the server's send(message) awaitable;
 *   - `await req.run(app(scope, receive, req))` drives the app's coroutine
 *     step by step and sums the CPU time of the thread running each step (the
 *     event loop thread), so work that other tasks do while this request
 *     awaits is not counted, and work done in the thread pool is not either;
 *   - req.finish(error, route) records the request in the table under `route`,
 *     the template the middleware found up front (apiprof._route_match); when
 *     that is None it reads the matched route from the scope after routing.
 *
 * Everything here runs with the GIL held, which protects every field. */
#include "ext.h"

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_routes.h"

enum {
    S_TYPE, S_STATUS, S_BODY, S_MORE_BODY, S_HEADERS, S_ROUTE, S_ROOT_PATH, S_METHOD,
    S_PATH_FORMAT, S_PATH, S_UNMATCHED, S_COUNT
};
static const char *const STR_NAMES[S_COUNT] = {
    "type", "status", "body", "more_body", "headers", "route", "root_path", "method",
    "path_format", "path", "<unmatched>",
};

typedef struct {
    PyObject_HEAD
    ap_routes *table;
    PyObject *mount_type; /* starlette.routing.Mount, or None: routes that are sub-apps */
    size_t max_keys;
} RouteTable;

typedef struct {
    PyObject_HEAD
    RouteTable *table;       /* strong */
    PyObject *send;          /* the server's send; strong */
    PyObject *scope;         /* strong */
    PyObject *root_path;     /* scope["root_path"] when the request arrived; strong */
    PyObject *coro;          /* the app's coroutine while run() drives it, else NULL */
    PyObject *extra_headers; /* list of (bytes, bytes) added at response start, or NULL */
    uint64_t t0, t_start, t_last; /* arrival, response start, last body chunk (0 = not yet) */
    uint64_t cpu, cpu_in;    /* CPU summed over steps; thread CPU floor when the step began */
    uint64_t step_t0;        /* wall time when the current step began */
    uint64_t bytes_out;
    int status;              /* 0 until http.response.start */
    unsigned char in_step, server_timing, finished;
} RouteRequest;

static apext_state *state_of(PyObject *o) {
    return (apext_state *)PyType_GetModuleState(Py_TYPE(o));
}

/* ---- RouteTable ------------------------------------------------------------------ */

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_keys", NULL};
    Py_ssize_t max_keys = 256;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:RouteTable", kwlist, &max_keys))
        return NULL;
    if (max_keys < 1 || max_keys > 1000000) {
        PyErr_SetString(PyExc_ValueError, "max_keys must be in [1, 1000000]");
        return NULL;
    }
    RouteTable *self = (RouteTable *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->mount_type = Py_NewRef(Py_None);
    self->max_keys = (size_t)max_keys;
    self->table = ap_routes_new((size_t)max_keys);
    if (self->table == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static int table_traverse(RouteTable *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->mount_type);
    return 0;
}

static int table_clear(RouteTable *self) {
    Py_CLEAR(self->mount_type);
    return 0;
}

static void table_dealloc(RouteTable *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    table_clear(self);
    ap_routes_free(self->table);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int set_u64(PyObject *d, const char *key, uint64_t v) {
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static PyObject *entry_dict(const ap_route_stat *s) {
    static const char *const CLASS_NAMES[AP_ROUTES_CLASSES] = {"none", "1xx", "2xx", "3xx",
                                                               "4xx", "5xx"};
    const ap_hist *h = &s->wall;
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    PyObject *route = PyUnicode_DecodeUTF8(s->route, s->route_len, "replace");
    PyObject *method = PyUnicode_DecodeUTF8(s->method, (Py_ssize_t)strlen(s->method), "replace");
    PyObject *cls = PyUnicode_FromString(CLASS_NAMES[s->status_class]);
    int bad = route == NULL || method == NULL || cls == NULL ||
              PyDict_SetItemString(d, "route", route) < 0 ||
              PyDict_SetItemString(d, "method", method) < 0 ||
              PyDict_SetItemString(d, "status", cls) < 0;
    Py_XDECREF(route);
    Py_XDECREF(method);
    Py_XDECREF(cls);
    if (bad || set_u64(d, "count", ap_hist_count(h)) < 0 || set_u64(d, "errors", s->errors) < 0 ||
        set_u64(d, "total_ns", ap_hist_sum(h)) < 0 ||
        set_u64(d, "mean_ns", h->count ? ap_hist_sum(h) / h->count : 0) < 0 ||
        set_u64(d, "min_ns", ap_hist_min(h)) < 0 ||
        set_u64(d, "p50_ns", ap_hist_percentile(h, 50)) < 0 ||
        set_u64(d, "p90_ns", ap_hist_percentile(h, 90)) < 0 ||
        set_u64(d, "p95_ns", ap_hist_percentile(h, 95)) < 0 ||
        set_u64(d, "p99_ns", ap_hist_percentile(h, 99)) < 0 ||
        set_u64(d, "max_ns", ap_hist_max(h)) < 0 || set_u64(d, "cpu_ns", s->cpu_ns) < 0 ||
        set_u64(d, "bytes_out", s->bytes_out) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* snapshot() -> list of dicts, one per (route, method, status class) with requests. */
static PyObject *table_snapshot(RouteTable *self, PyObject *Py_UNUSED(a)) {
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < ap_routes_size(self->table); i++) {
        const ap_route_stat *s = ap_routes_at(self->table, i);
        if (s->wall.count == 0)
            continue;
        PyObject *d = entry_dict(s);
        if (d == NULL || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(d);
    }
    return list;
}

static PyObject *table_reset(RouteTable *self, PyObject *Py_UNUSED(a)) {
    ap_routes_reset(self->table);
    Py_RETURN_NONE;
}

static PyObject *table_encode(RouteTable *self, PyObject *Py_UNUSED(a)) {
    size_t n = ap_routes_encoded_size(self->table);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b == NULL)
        return NULL;
    if (ap_routes_encode(self->table, (uint8_t *)PyBytes_AS_STRING(b), n) != n) {
        Py_DECREF(b);
        return apext_raise_core(NULL);
    }
    return b;
}

static PyObject *table_merge(RouteTable *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = ap_routes_merge_encoded(self->table, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rc < 0)
        return apext_raise_core(NULL);
    Py_RETURN_NONE;
}

static PyObject *table_set_mount_type(RouteTable *self, PyObject *arg) {
    if (arg != Py_None && !PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "_set_mount_type takes a class or None");
        return NULL;
    }
    Py_XSETREF(self->mount_type, Py_NewRef(arg));
    Py_RETURN_NONE;
}

/* request(scope, send, server_timing=False) -> RouteRequest; the clock starts now. */
static PyObject *table_request(RouteTable *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "request(scope: dict, send, server_timing=False)");
        return NULL;
    }
    apext_state *st = state_of((PyObject *)self);
    RouteRequest *r = PyObject_GC_New(RouteRequest, st->route_request_type);
    if (r == NULL)
        return NULL;
    PyObject *root = PyDict_GetItemWithError(args[0], st->route_str[S_ROOT_PATH]);
    r->table = (RouteTable *)Py_NewRef(self);
    r->scope = Py_NewRef(args[0]);
    r->send = Py_NewRef(args[1]);
    r->root_path = root != NULL && PyUnicode_Check(root) ? Py_NewRef(root) : NULL;
    r->coro = r->extra_headers = NULL;
    r->t_start = r->t_last = r->cpu = r->cpu_in = r->step_t0 = r->bytes_out = 0;
    r->status = 0;
    r->in_step = r->finished = 0;
    r->server_timing = nargs == 3 && PyObject_IsTrue(args[2]) == 1;
    PyObject_GC_Track(r);
    if (PyErr_Occurred()) {
        Py_DECREF(r);
        return NULL;
    }
    r->t0 = ap_clock_now_ns();
    return (PyObject *)r;
}

static PyMethodDef table_methods[] = {
    {"request", (PyCFunction)(void (*)(void))table_request, METH_FASTCALL,
     "request(scope, send, server_timing=False) -> RouteRequest for one HTTP request."},
    {"snapshot", (PyCFunction)table_snapshot, METH_NOARGS,
     "snapshot() -> list of dicts, one per (route, method, status class)."},
    {"reset", (PyCFunction)table_reset, METH_NOARGS, "reset(): forget every request."},
    {"encode", (PyCFunction)table_encode, METH_NOARGS,
     "encode() -> bytes: the table in the format of src/core/ap_routes.h."},
    {"merge", (PyCFunction)table_merge, METH_O,
     "merge(data): add an encoded table (exact); ValueError if data is corrupt."},
    {"_set_mount_type", (PyCFunction)table_set_mount_type, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot table_slots[] = {
    {Py_tp_new, table_new},
    {Py_tp_traverse, table_traverse},
    {Py_tp_clear, table_clear},
    {Py_tp_dealloc, table_dealloc},
    {Py_tp_methods, table_methods},
    {Py_tp_doc, "RouteTable(max_keys=256): request statistics per (route, method, status class)."},
    {0, NULL},
};

static PyType_Spec table_spec = {
    .name = "apiprof._core.RouteTable",
    .basicsize = sizeof(RouteTable),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = table_slots,
};

/* ---- RouteRequest: the send wrapper ----------------------------------------------- */

static uint64_t step_cpu(RouteRequest *self, uint64_t now);

/* Message with headers + extra appended: a new dict, the app's is not changed.
 * New reference, or NULL with an exception. */
static PyObject *with_headers(apext_state *st, PyObject *message, PyObject *extra) {
    PyObject *copy = PyDict_Copy(message);
    if (copy == NULL)
        return NULL;
    PyObject *old = PyDict_GetItemWithError(copy, st->route_str[S_HEADERS]);
    PyObject *headers = old != NULL ? PySequence_List(old) : (PyErr_Occurred() ? NULL : PyList_New(0));
    if (headers == NULL)
        goto err;
    PyObject *tail = PySequence_InPlaceConcat(headers, extra);
    Py_DECREF(headers);
    if (tail == NULL)
        goto err;
    int rc = PyDict_SetItem(copy, st->route_str[S_HEADERS], tail);
    Py_DECREF(tail);
    if (rc < 0)
        goto err;
    return copy;
err:
    Py_DECREF(copy);
    return NULL;
}

/* The headers to add at response start (new list), or NULL with no exception
 * when there are none. */
static PyObject *start_headers(RouteRequest *self, uint64_t now) {
    if (!self->server_timing)
        return self->extra_headers ? PySequence_List(self->extra_headers) : NULL;
    uint64_t wall = now - self->t0, cpu = self->cpu;
    if (self->in_step)
        cpu += step_cpu(self, now);
    if (cpu > wall)
        cpu = wall;
    char value[160];
    snprintf(value, sizeof value, "app;dur=%.3f, cpu;dur=%.3f, await;dur=%.3f", wall / 1e6,
             cpu / 1e6, (wall - cpu) / 1e6);
    PyObject *list = self->extra_headers ? PySequence_List(self->extra_headers) : PyList_New(0);
    if (list == NULL)
        return NULL;
    PyObject *pair = Py_BuildValue("(yy)", "server-timing", value);
    if (pair == NULL || PyList_Append(list, pair) < 0) {
        Py_XDECREF(pair);
        Py_DECREF(list);
        return NULL;
    }
    Py_DECREF(pair);
    return list;
}

static PyObject *req_call(RouteRequest *self, PyObject *args, PyObject *kwds) {
    PyObject *message;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0) || PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "send(message) takes one message");
        return NULL;
    }
    message = PyTuple_GET_ITEM(args, 0);
    if (!PyDict_Check(message))
        return PyObject_CallOneArg(self->send, message);
    apext_state *st = state_of((PyObject *)self);
    PyObject *type = PyDict_GetItemWithError(message, st->route_str[S_TYPE]);
    if (type == NULL || !PyUnicode_Check(type)) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallOneArg(self->send, message);
    }
    uint64_t now = ap_clock_now_ns();
    if (PyUnicode_CompareWithASCIIString(type, "http.response.body") == 0) {
        PyObject *body = PyDict_GetItemWithError(message, st->route_str[S_BODY]);
        if (body != NULL && PyBytes_Check(body))
            self->bytes_out += (uint64_t)PyBytes_GET_SIZE(body);
        else if (body != NULL && PyObject_CheckBuffer(body)) {
            Py_ssize_t n = PyObject_Length(body);
            if (n > 0)
                self->bytes_out += (uint64_t)n;
            PyErr_Clear();
        }
        PyObject *more = PyDict_GetItemWithError(message, st->route_str[S_MORE_BODY]);
        if (PyErr_Occurred())
            return NULL;
        if (more == NULL || PyObject_IsTrue(more) == 0)
            self->t_last = now;
    } else if (PyUnicode_CompareWithASCIIString(type, "http.response.start") == 0) {
        PyObject *status = PyDict_GetItemWithError(message, st->route_str[S_STATUS]);
        if (status != NULL && PyLong_Check(status)) {
            long s = PyLong_AsLong(status);
            self->status = (s > 0 && s < 1000) ? (int)s : 0;
            PyErr_Clear();
        }
        self->t_start = now;
        PyObject *extra = start_headers(self, now);
        if (extra == NULL && PyErr_Occurred())
            return NULL;
        if (extra != NULL) {
            PyObject *copy = with_headers(st, message, extra);
            Py_DECREF(extra);
            if (copy == NULL)
                return NULL;
            PyObject *r = PyObject_CallOneArg(self->send, copy);
            Py_DECREF(copy);
            return r;
        }
    } else if (PyUnicode_CompareWithASCIIString(type, "http.response.pathsend") == 0 ||
               PyUnicode_CompareWithASCIIString(type, "http.response.zerocopysend") == 0) {
        self->t_last = now; /* the server sends the file; its size is not counted */
    }
    if (PyErr_Occurred())
        return NULL;
    return PyObject_CallOneArg(self->send, message);
}

/* ---- RouteRequest: stepping the app's coroutine ----------------------------------- */

/* CPU time of a step with no system call in the common case (docs/asgi.md, "What CPU
 * time means"): a step shorter than STEP_SHORT_NS counts its wall time; a longer one
 * takes a real reading at its end and counts the CPU since the thread's last real
 * reading (at most CPU_STALE_NS before the step began, else one is taken then), at most
 * the step's wall time.  So a step's figure is never below its real CPU time nor above
 * its wall time: over by the time the thread was off the CPU inside a short step, or by
 * the CPU the thread used in the at most CPU_STALE_NS before a long one began.  Real
 * readings: one per long step (a system call of ~0.5 us after >= 100 us of work) and at
 * most one per CPU_STALE_NS per thread at step starts. */
#define STEP_SHORT_NS 100000u
#define CPU_STALE_NS 1000000u

static void step_in(RouteRequest *self) {
    uint64_t now = ap_clock_now_ns();
    self->cpu_in = apext_thread_cpu_floor(now, CPU_STALE_NS);
    self->step_t0 = now;
    self->in_step = 1;
}

/* CPU ns of the current step up to `now`, by the rule above. */
static uint64_t step_cpu(RouteRequest *self, uint64_t now) {
    uint64_t wall = now - self->step_t0;
    if (wall < STEP_SHORT_NS)
        return wall;
    uint64_t c = apext_thread_cpu_read(now);
    c = c > self->cpu_in ? c - self->cpu_in : 0;
    return c < wall ? c : wall;
}

static void step_out(RouteRequest *self) {
    self->cpu += step_cpu(self, ap_clock_now_ns());
    self->in_step = 0;
}

static PyObject *req_run(RouteRequest *self, PyObject *coro) {
    if (self->coro != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RouteRequest.run() is already driving a coroutine");
        return NULL;
    }
    self->coro = Py_NewRef(coro);
    return Py_NewRef(self);
}

static PySendResult req_am_send(RouteRequest *self, PyObject *arg, PyObject **result) {
    if (self->coro == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RouteRequest awaited without run(coro)");
        *result = NULL;
        return PYGEN_ERROR;
    }
    step_in(self);
    PySendResult r = PyIter_Send(self->coro, arg, result);
    step_out(self);
    if (r != PYGEN_NEXT)
        Py_CLEAR(self->coro);
    return r;
}

/* Turns an am_send outcome into the iterator protocol: the yielded value, or
 * NULL with StopIteration(value) set (no exception for a None return). */
static PyObject *as_iter_result(PySendResult r, PyObject *result) {
    if (r == PYGEN_NEXT)
        return result;
    if (r == PYGEN_RETURN) {
        if (result != Py_None) {
            PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
            if (stop != NULL) {
                PyErr_SetObject(PyExc_StopIteration, stop);
                Py_DECREF(stop);
            }
        }
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *req_iternext(RouteRequest *self) {
    PyObject *result;
    PySendResult r = req_am_send(self, Py_None, &result);
    return as_iter_result(r, result);
}

static PyObject *req_send(RouteRequest *self, PyObject *value) {
    PyObject *result;
    PySendResult r = req_am_send(self, value, &result);
    PyObject *out = as_iter_result(r, result);
    if (out == NULL && r == PYGEN_RETURN && !PyErr_Occurred())
        PyErr_SetNone(PyExc_StopIteration);
    return out;
}

/* throw(exc) or the old throw(type, value, tb): passed on to the coroutine as
 * one exception instance where possible (the 3-argument form is deprecated). */
static PyObject *req_throw(RouteRequest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw(exception)");
        return NULL;
    }
    PyObject *exc = args[0];
    if (nargs >= 2 && PyExceptionInstance_Check(args[1])) {
        exc = args[1];
        if (nargs == 3 && PyTraceBack_Check(args[2]))
            PyException_SetTraceback(exc, args[2]);
    }
    if (self->coro == NULL) {
        if (PyExceptionInstance_Check(exc))
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        else
            PyErr_SetObject(exc, NULL);
        return NULL;
    }
    PyObject *coro = Py_NewRef(self->coro);
    step_in(self);
    PyObject *r = PyObject_CallMethod(coro, "throw", "O", exc);
    step_out(self);
    Py_DECREF(coro);
    if (r == NULL)
        Py_CLEAR(self->coro);
    return r;
}

static PyObject *req_close(RouteRequest *self, PyObject *Py_UNUSED(a)) {
    if (self->coro == NULL)
        Py_RETURN_NONE;
    PyObject *coro = self->coro;
    self->coro = NULL;
    PyObject *r = PyObject_CallMethod(coro, "close", NULL);
    Py_DECREF(coro);
    return r;
}

/* ---- RouteRequest: recording --------------------------------------------------- */

/* The route label of the finished request: the matched route's template with
 * the prefixes of the mounts it is under, "<unmatched>" when routing matched
 * nothing.  New reference, or NULL with an exception. */
static PyObject *route_label(RouteRequest *self, apext_state *st) {
    PyObject *route = PyDict_GetItemWithError(self->scope, st->route_str[S_ROUTE]);
    if (route == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(st->route_str[S_UNMATCHED]);
    Py_INCREF(route);
    PyObject *tmpl = PyObject_GetAttr(route, st->route_str[S_PATH_FORMAT]);
    if (tmpl == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        tmpl = PyObject_GetAttr(route, st->route_str[S_PATH]);
    }
    if (tmpl == NULL || !PyUnicode_Check(tmpl)) {
        PyErr_Clear();
        Py_XDECREF(tmpl);
        Py_DECREF(route);
        return Py_NewRef(st->route_str[S_UNMATCHED]);
    }
    /* Mount prefixes: how much the routers added to root_path. */
    PyObject *root = PyDict_GetItemWithError(self->scope, st->route_str[S_ROOT_PATH]);
    Py_ssize_t base = self->root_path ? PyUnicode_GET_LENGTH(self->root_path) : 0;
    PyObject *prefix = NULL;
    if (root != NULL && PyUnicode_Check(root) && PyUnicode_GET_LENGTH(root) > base)
        prefix = PyUnicode_Substring(root, base, PyUnicode_GET_LENGTH(root));
    int is_mount = self->table->mount_type != Py_None &&
                   PyObject_TypeCheck(route, (PyTypeObject *)self->table->mount_type);
    Py_DECREF(route);
    if (prefix != NULL && is_mount) {
        /* A mounted app that is not a router: root_path already holds the
         * mount's own path, which starts its template. */
        PyObject *own = PyUnicode_Substring(tmpl, 0, PyUnicode_FindChar(tmpl, '{', 0,
                                                                       PyUnicode_GET_LENGTH(tmpl), 1));
        if (own != NULL && PyUnicode_GET_LENGTH(own) > 0 && PyUnicode_Tailmatch(prefix, own, 0, PY_SSIZE_T_MAX, 1) == 1) {
            PyObject *cut = PyUnicode_Substring(prefix, 0, PyUnicode_GET_LENGTH(prefix) - PyUnicode_GET_LENGTH(own));
            Py_SETREF(prefix, cut);
        }
        Py_XDECREF(own);
    }
    if (prefix == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(tmpl);
            return NULL;
        }
        return tmpl;
    }
    PyObject *label = PyUnicode_Concat(prefix, tmpl);
    Py_DECREF(prefix);
    Py_DECREF(tmpl);
    return label;
}

/* finish(error=False, route=None) -> str: records the request once, under `route`
 * (a str) or else the route read from the scope, and returns its route label. */
static PyObject *req_finish(RouteRequest *self, PyObject *const *args, Py_ssize_t nargs) {
    int error = nargs >= 1 && PyObject_IsTrue(args[0]) == 1;
    PyObject *given = nargs >= 2 ? args[1] : Py_None;
    apext_state *st = state_of((PyObject *)self);
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "finish() takes at most 2 arguments");
        return NULL;
    }
    if (given != Py_None && !PyUnicode_Check(given)) {
        PyErr_SetString(PyExc_TypeError, "finish(): route must be a str or None");
        return NULL;
    }
    if (self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "RouteRequest.finish() called twice");
        return NULL;
    }
    self->finished = 1;
    uint64_t end = self->t_last ? self->t_last : ap_clock_now_ns();
    PyObject *label = given != Py_None ? Py_NewRef(given) : route_label(self, st);
    if (label == NULL)
        return NULL;
    PyObject *method = PyDict_GetItemWithError(self->scope, st->route_str[S_METHOD]);
    if (method == NULL && PyErr_Occurred()) {
        Py_DECREF(label);
        return NULL;
    }
    Py_ssize_t rlen = 0, mlen = 0;
    const char *r = PyUnicode_AsUTF8AndSize(label, &rlen);
    const char *m = method && PyUnicode_Check(method) ? PyUnicode_AsUTF8AndSize(method, &mlen) : "";
    if (r == NULL || m == NULL) {
        Py_DECREF(label);
        return NULL;
    }
    unsigned cls = self->status ? (unsigned)(self->status / 100) : error ? 5u : 0u;
    ap_route_stat *s = ap_routes_get(self->table->table, r, (size_t)rlen, m, (size_t)mlen, cls);
    if (s == NULL) {
        Py_DECREF(label);
        return PyErr_NoMemory();
    }
    uint64_t wall = end - self->t0;
    ap_routes_record(s, wall, self->cpu < wall ? self->cpu : wall, self->bytes_out,
                     error || cls >= 5);
    return label;
}

static int req_traverse(RouteRequest *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->table);
    Py_VISIT(self->send);
    Py_VISIT(self->scope);
    Py_VISIT(self->root_path);
    Py_VISIT(self->coro);
    Py_VISIT(self->extra_headers);
    return 0;
}

static int req_clear(RouteRequest *self) {
    Py_CLEAR(self->table);
    Py_CLEAR(self->send);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->root_path);
    Py_CLEAR(self->coro);
    Py_CLEAR(self->extra_headers);
    return 0;
}

static void req_dealloc(RouteRequest *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    req_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *req_await(RouteRequest *self) {
    return Py_NewRef(self);
}

static PyObject *get_status(RouteRequest *s, void *c) { (void)c; return PyLong_FromLong(s->status); }
static PyObject *get_bytes(RouteRequest *s, void *c) { (void)c; return PyLong_FromUnsignedLongLong(s->bytes_out); }
static uint64_t wall_of(const RouteRequest *s)
{
    uint64_t end = s->t_last ? s->t_last : ap_clock_now_ns();
    return end - s->t0;
}

/* Capped at the wall time, as the statistics and Server-Timing are: work after the
 * last body chunk (where the wall time ends) or clock granularity can add CPU time
 * beyond it. */
static PyObject *get_cpu(RouteRequest *s, void *c)
{
    (void)c;
    uint64_t wall = wall_of(s);
    return PyLong_FromUnsignedLongLong(s->cpu < wall ? s->cpu : wall);
}

static PyObject *get_wall(RouteRequest *s, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(wall_of(s));
}

static PyObject *get_extra(RouteRequest *s, void *c) {
    (void)c;
    return Py_NewRef(s->extra_headers ? s->extra_headers : Py_None);
}

static int set_extra(RouteRequest *s, PyObject *v, void *c) {
    (void)c;
    if (v != NULL && v != Py_None && !PyList_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "extra_headers is a list of (bytes, bytes) or None");
        return -1;
    }
    Py_XSETREF(s->extra_headers, v == NULL || v == Py_None ? NULL : Py_NewRef(v));
    return 0;
}

static PyGetSetDef req_getset[] = {
    {"status", (getter)get_status, NULL, "response status, 0 before the response starts", NULL},
    {"bytes_out", (getter)get_bytes, NULL, "response body bytes so far", NULL},
    {"cpu_ns", (getter)get_cpu, NULL, "CPU ns of the app's steps so far, at most wall_ns", NULL},
    {"wall_ns", (getter)get_wall, NULL, "ns from arrival to the last body chunk (or now)", NULL},
    {"extra_headers", (getter)get_extra, (setter)set_extra,
     "headers added to http.response.start, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef req_methods[] = {
    {"run", (PyCFunction)req_run, METH_O,
     "run(coro) -> awaitable: await coro, summing the CPU time of its steps."},
    {"send", (PyCFunction)req_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))req_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)req_close, METH_NOARGS, NULL},
    {"finish", (PyCFunction)(void (*)(void))req_finish, METH_FASTCALL,
     "finish(error=False) -> str: record the request; returns its route label."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot req_slots[] = {
    {Py_tp_call, req_call},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, req_iternext},
    {Py_am_await, req_await},
    {Py_am_send, req_am_send},
    {Py_tp_methods, req_methods},
    {Py_tp_getset, req_getset},
    {Py_tp_traverse, req_traverse},
    {Py_tp_clear, req_clear},
    {Py_tp_dealloc, req_dealloc},
    {Py_tp_doc, "One HTTP request seen by the middleware (made by RouteTable.request)."},
    {0, NULL},
};

static PyType_Spec req_spec = {
    .name = "apiprof._core.RouteRequest",
    .basicsize = sizeof(RouteRequest),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = req_slots,
};

int apext_routes_init(PyObject *module, apext_state *st) {
    for (int i = 0; i < S_COUNT; i++) {
        st->route_str[i] = PyUnicode_InternFromString(STR_NAMES[i]);
        if (st->route_str[i] == NULL)
            return -1;
    }
    st->route_request_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &req_spec, NULL);
    if (st->route_request_type == NULL)
        return -1;
    st->route_table_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &table_spec, NULL);
    if (st->route_table_type == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "RouteRequest", (PyObject *)st->route_request_type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "RouteTable", (PyObject *)st->route_table_type);
}

int apext_routes_traverse(apext_state *st, visitproc visit, void *arg) {
    Py_VISIT(st->route_table_type);
    Py_VISIT(st->route_request_type);
    return 0;
}

void apext_routes_clear(apext_state *st) {
    Py_CLEAR(st->route_table_type);
    Py_CLEAR(st->route_request_type);
    for (int i = 0; i < S_COUNT; i++)
        Py_CLEAR(st->route_str[i]);
}

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
 *     that is None it reads the matched route from the scope after routing;
 *   - while a MemoryTracker(None) runs (the middleware's memory=True), run()
 *     makes the request the owner of the allocations in its context (memory.h)
 *     and the record adds their bytes to the route's statistics.
 *
 * Everything here runs with the GIL held, which protects every field. */
#include "compat.h"

#include <string.h>

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

#include "ap_clock.h"
#include "ap_err.h"
#include "ap_prom.h"
#include "ap_routes.h"
#include "ap_spyboard.h"
#include "ap_wait.h"
#include "memory.h"
#include "spyboard.h"
#include "stallwatch.h"

enum {
    S_TYPE, S_STATUS, S_BODY, S_MORE_BODY, S_HEADERS, S_ROUTE, S_ROOT_PATH, S_METHOD,
    S_PATH_FORMAT, S_PATH, S_UNMATCHED, S_FULLMATCH, S_ROUTED, S_CACHE, S_LEAVES, S_SPY_LABEL,
    S_COUNT
};
_Static_assert(S_COUNT <= sizeof(((apext_state *)0)->route_str) / sizeof(PyObject *),
               "apext_state.route_str holds every name");
static const char *const STR_NAMES[S_COUNT] = {
    "type", "status", "body", "more_body", "headers", "route", "root_path", "method",
    "path_format", "path", "<unmatched>", "fullmatch", "routed", "_cache", "_leaves",
    "spy_label",
};

typedef struct {
    PyObject_HEAD
    ap_routes *table;
    PyObject *mount_type; /* starlette.routing.Mount, or None: routes that are sub-apps */
    /* The RouteFinder (apiprof._labels) of the last self-finishing request, and its
     * _cache (key -> template) and _leaves (id(route) -> (route, template, regex)) dicts,
     * which it clears but never replaces.  Strong, or NULL.  One table serves every
     * middleware of the process, each with its own finder. */
    PyObject *finder, *cache, *leaves;
    PyObject *fit_seen, *fit_sub; /* the last _leaves entry whose regex fitted, and the path it
                                   * fitted (strong, or NULL): the same pair needs no match */
    /* The last key recorded and its entry (entries never move): the same label object,
     * an equal method and the same class need no hashing.  Strong, or NULL. */
    PyObject *last_label, *last_method;
    unsigned last_cls;
    ap_route_stat *last_stat;
    /* The last arrival key found in the finder's template cache, and its template: an
     * equal key needs no tuple and no lookup (the cache is never changed for a key). */
    PyObject *arr_key[4], *arr_known;
    size_t max_keys;
    uint64_t stall_ns;       /* a step of a request this long or longer is a stall; 0: none */
} RouteTable;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* req_vectorcall: the app calls send(message) per message */
    RouteTable *table;       /* strong */
    PyObject *send;          /* the server's send; strong */
    PyObject *scope;         /* strong */
    PyObject *root_path;     /* scope["root_path"] when the request arrived; strong */
    PyObject *coro;          /* the app's coroutine while run() drives it, else NULL */
    PyObject *extra_headers; /* list of (bytes, bytes) added at response start, or NULL */
    /* Self-finishing requests (RouteTable.request(..., routed=True)), see finish_self(): */
    PyObject *path, *arrived_root; /* scope["path"] and ["root_path"] on arrival, str */
    PyObject *method;        /* scope["method"] on arrival, or NULL */
    PyObject *before;        /* a copy of the scope on arrival, or NULL when `known` holds */
    PyObject *known;         /* the template (or None) the finder had cached for this scope, or NULL */
    PyObject *label;         /* the route label once finished, or NULL */
    PyObject *finder, *leaves; /* the request's RouteFinder and its _leaves dict, or NULL */
    uint64_t t0, t_start, t_last; /* arrival, response start, last body chunk (0 = not yet) */
    uint64_t cpu, cpu_in;    /* CPU summed over steps; thread CPU floor when the step began */
    uint64_t step_t0;        /* wall time when the current step began */
    uint64_t bytes_out;
    uint64_t stalls, stall_ns, stall_max_ns; /* its steps at or above the table's threshold */
    uint64_t stall_buckets[AP_ROUTES_STALL_BUCKETS]; /* their durations (ap_routes.h) */
    struct req_caught *caught; /* its longest stalls with the watchdog's capture, or NULL */
    uint64_t serial;         /* its number in the stall log (below) */
    uint64_t stall_cost_ns;  /* its stalls' time times the other requests in flight */
    apext_mem_owner *mem;    /* its allocations (memory.h) until recorded, or NULL */
    PyObject *mem_box;       /* the box of mem in the request's context (strong), or NULL */
    uint32_t spy_label;      /* its route on apiprof-spy's board (spyboard.h), 0: none */
    apext_spy_serving spy_prev;   /* what the thread served before the current step */
    uint32_t spy_entry;      /* its entry among the board's requests in flight, 0: none */
    int status;              /* 0 until http.response.start */
    unsigned char in_step, server_timing, finished, self_finish;
    unsigned char in_flight; /* counted in the stall log's requests in flight */
} RouteRequest;

static PyObject *req_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames);

/* ---- what stalls cost other requests ------------------------------------------------
 * While a step of one request stalls the loop, every other request in flight on it
 * waits.  The process keeps the requests in flight (made and not yet recorded) and its
 * last STALL_LOG stalls with the request that made each: a stall adds its time times
 * the others in flight to its request's cost; a request, when recorded, adds the parts
 * of its own life that other requests' stalls in the log covered to its delay.  One
 * log per process (a process with several loop threads mixes theirs); under the GIL. */
#define STALL_LOG 32
static struct {
    uint64_t inflight, serial, last_end;
    unsigned next;
    struct {
        uint64_t t0, t1, owner;
    } e[STALL_LOG];
} stall_log;

/* The time of [t0, t1) that stalls of requests other than serial covered. */
static uint64_t stall_delay(uint64_t serial, uint64_t t0, uint64_t t1) {
    if (stall_log.last_end <= t0)
        return 0;   /* the usual case: no stall since the request came */
    uint64_t ns = 0;
    for (unsigned i = 0; i < STALL_LOG; i++) {
        uint64_t a = stall_log.e[i].t0 > t0 ? stall_log.e[i].t0 : t0;
        uint64_t b = stall_log.e[i].t1 < t1 ? stall_log.e[i].t1 : t1;
        if (stall_log.e[i].owner != serial && stall_log.e[i].owner != 0 && b > a)
            ns += b - a;
    }
    return ns;
}

/* The request is no longer in flight (recorded, or gone unrecorded). */
#define leave_flight(r)                  \
    do {                                 \
        if ((r)->in_flight) {            \
            (r)->in_flight = 0;          \
            stall_log.inflight--;        \
        }                                \
    } while (0)

/* The stalls of a request whose call path the stall watchdog captured (stallwatch.h):
 * the REQ_CAUGHT longest, each with its start and duration.  Made at the first one. */
#define REQ_CAUGHT 4
typedef struct req_caught {
    int n;
    struct {
        uint64_t t0, ns;
        apext_stall_capture cap;
    } s[REQ_CAUGHT];
} req_caught;

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
    self->finder = self->cache = self->leaves = self->fit_seen = self->fit_sub = NULL;
    self->last_label = self->last_method = self->arr_known = NULL;
    self->arr_key[0] = self->arr_key[1] = self->arr_key[2] = self->arr_key[3] = NULL;
    self->last_stat = NULL;
    self->last_cls = 0;
    self->max_keys = (size_t)max_keys;
    self->stall_ns = 0;
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
    Py_VISIT(self->finder);
    Py_VISIT(self->cache);
    Py_VISIT(self->leaves);
    Py_VISIT(self->fit_seen);
    Py_VISIT(self->fit_sub);
    Py_VISIT(self->last_label);
    Py_VISIT(self->last_method);
    for (int i = 0; i < 4; i++)
        Py_VISIT(self->arr_key[i]);
    Py_VISIT(self->arr_known);
    return 0;
}

static int table_clear(RouteTable *self) {
    Py_CLEAR(self->mount_type);
    Py_CLEAR(self->finder);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->leaves);
    Py_CLEAR(self->fit_seen);
    Py_CLEAR(self->fit_sub);
    Py_CLEAR(self->last_label);
    Py_CLEAR(self->last_method);
    for (int i = 0; i < 4; i++)
        Py_CLEAR(self->arr_key[i]);
    Py_CLEAR(self->arr_known);
    return 0;
}

static void table_dealloc(RouteTable *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    table_clear(self);
    apext_memory_forget_routes(self->table);   /* no request's memory may reach them now */
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

/* d["waits"]: {kind name: ns} of s's measured (profiled) requests, kinds with time
 * only.  0, or -1 with an exception. */
static int entry_waits(PyObject *d, const ap_route_stat *s) {
    PyObject *w = PyDict_New();
    if (w == NULL)
        return -1;
    for (unsigned k = 0; k < AP_WAIT_COUNT && k < AP_ROUTES_WAITS; k++)
        if (s->wait_ns[k] != 0 && set_u64(w, ap_wait_name(k), s->wait_ns[k]) < 0) {
            Py_DECREF(w);
            return -1;
        }
    int rc = PyDict_SetItemString(d, "waits", w);
    Py_DECREF(w);
    return rc;
}

/* d["stall_hist"]: [[le_ns, count], ...] for each duration bucket of s's stalls (le_ns
 * None for the open last one).  0, or -1 with an exception. */
static int entry_stall_hist(PyObject *d, const ap_route_stat *s) {
    PyObject *list = PyList_New(AP_ROUTES_STALL_BUCKETS);
    if (list == NULL)
        return -1;
    for (Py_ssize_t b = 0; b < AP_ROUTES_STALL_BUCKETS; b++) {
        PyObject *pair = b < AP_ROUTES_STALL_BUCKETS - 1
                             ? Py_BuildValue("[KK]", (unsigned long long)ap_routes_stall_le_ns[b],
                                             (unsigned long long)s->stall_buckets[b])
                             : Py_BuildValue("[OK]", Py_None,
                                             (unsigned long long)s->stall_buckets[b]);
        if (pair == NULL) {
            Py_DECREF(list);
            return -1;
        }
        PyList_SET_ITEM(list, b, pair);
    }
    int rc = PyDict_SetItemString(d, "stall_hist", list);
    Py_DECREF(list);
    return rc;
}

/* d["stall_sites"]: [{"function", "file", "line", "path", "stalls", "ns", "max_ns"}, ...]
 * from s's sites ("function\tfile\tline\tpath"; a text of another shape is all
 * "function").  0, or -1 with an exception. */
static int entry_stall_sites(PyObject *d, const ap_route_stat *s) {
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return -1;
    for (unsigned i = 0; i < AP_ROUTES_STALL_SITES; i++) {
        const ap_route_site *site = &s->stall_sites[i];
        if (site->stalls == 0)
            continue;
        const char *f[4] = {site->text, "", "", ""};
        size_t len[4] = {site->len, 0, 0, 0};
        const char *tab, *p = site->text, *end = site->text + site->len;
        for (int k = 1; k < 4 && (tab = memchr(p, '\t', (size_t)(end - p))) != NULL; k++) {
            len[k - 1] = (size_t)(tab - f[k - 1]);
            f[k] = p = tab + 1;
            len[k] = (size_t)(end - p);
        }
        PyObject *e = Py_BuildValue(
            "{s:s#,s:s#,s:i,s:s#,s:K,s:K,s:K}", "function", f[0], (Py_ssize_t)len[0], "file",
            f[1], (Py_ssize_t)len[1], "line", atoi(f[2]), "path", f[3], (Py_ssize_t)len[3],
            "stalls", (unsigned long long)site->stalls, "ns", (unsigned long long)site->ns,
            "max_ns", (unsigned long long)site->max_ns);
        if (e == NULL)
            PyErr_Clear();   /* a text that is not UTF-8 (cut inside a character): left out */
        else if (PyList_Append(list, e) < 0) {
            Py_DECREF(e);
            Py_DECREF(list);
            return -1;
        } else
            Py_DECREF(e);
    }
    int rc = PyDict_SetItemString(d, "stall_sites", list);
    Py_DECREF(list);
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
        set_u64(d, "bytes_out", s->bytes_out) < 0 ||
        set_u64(d, "mem_requests", s->mem_requests) < 0 ||
        set_u64(d, "alloc_bytes", s->alloc_bytes) < 0 ||
        set_u64(d, "retained_bytes", s->retained_bytes) < 0 ||
        set_u64(d, "live_bytes", s->live_bytes) < 0 ||
        set_u64(d, "retained_max", s->retained_max) < 0 ||
        set_u64(d, "stalls", s->stalls) < 0 || set_u64(d, "stall_ns", s->stall_ns) < 0 ||
        set_u64(d, "stall_max_ns", s->stall_max_ns) < 0 || set_u64(d, "waited", s->waited) < 0 ||
        set_u64(d, "stall_cost_ns", s->stall_cost_ns) < 0 || set_u64(d, "delayed", s->delayed) < 0 ||
        set_u64(d, "delayed_ns", s->delayed_ns) < 0 ||
        entry_waits(d, s) < 0 || entry_stall_hist(d, s) < 0 || entry_stall_sites(d, s) < 0) {
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
    /* requests recorded before the reset no longer count: their later frees must
     * not come off the live bytes of those recorded after it */
    apext_memory_forget_routes(self->table);
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

/* add_waits(route, method, status_class, waits) adds one profiled request's waits
 * ({kind name: ns}; unknown kinds are ignored) to the entry of that key. */
static PyObject *table_add_waits(RouteTable *self, PyObject *args) {
    const char *route, *method;
    Py_ssize_t rlen, mlen;
    unsigned int cls;
    PyObject *waits;
    if (!PyArg_ParseTuple(args, "s#s#IO!:add_waits", &route, &rlen, &method, &mlen, &cls,
                          &PyDict_Type, &waits))
        return NULL;
    uint64_t ns[AP_WAIT_COUNT] = {0};
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(waits, &pos, &key, &value)) {
        const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (name == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "wait kinds must be str");
            return NULL;
        }
        unsigned long long v = PyLong_AsUnsignedLongLong(value);
        if (PyErr_Occurred())
            return NULL;
        unsigned k = ap_wait_by_name(name);
        if (k < AP_WAIT_COUNT)
            ns[k] += v;
    }
    ap_route_stat *s = ap_routes_get(self->table, route, (size_t)rlen, method, (size_t)mlen,
                                     cls > 5 ? 5 : cls);
    if (s == NULL)
        return apext_raise_core(NULL);
    ap_routes_add_waits(s, ns, AP_WAIT_COUNT);
    Py_RETURN_NONE;
}

/* prometheus(bounds_ns, labels=()) -> bytes: the table in the text exposition format
 * (src/core/ap_prom.h); labels are (name, value) pairs put first in every sample, names
 * checked by the caller. */
static PyObject *table_prometheus(RouteTable *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bounds_ns", "labels", NULL};
    PyObject *bounds, *labels = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:prometheus", kwlist, &bounds, &labels))
        return NULL;
    PyObject *seq = PySequence_Fast(bounds, "bounds_ns must be a sequence of ints");
    if (seq == NULL)
        return NULL;
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    uint64_t b[AP_PROM_BOUNDS_MAX];
    if (nb < 1 || nb > AP_PROM_BOUNDS_MAX) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "between 1 and %d bounds", AP_PROM_BOUNDS_MAX);
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        b[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    ap_sbuf extra = {0}, out = {0};
    PyObject *res = NULL;
    if (labels != NULL && labels != Py_None) {
        PyObject *ls = PySequence_Fast(labels, "labels must be a sequence of (name, value)");
        if (ls == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(ls); i++) {
            const char *name, *value;
            Py_ssize_t nlen, vlen;
            PyObject *pair = PySequence_Fast_GET_ITEM(ls, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                (name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &nlen)) == NULL ||
                (value = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vlen)) == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "labels must be (str, str) pairs");
                Py_DECREF(ls);
                goto done;
            }
            if (i > 0)
                ap_sbuf_putc(&extra, ',');
            ap_prom_label(&extra, name, value, (size_t)vlen);
        }
        Py_DECREF(ls);
    }
    ap_sbuf_putc(&extra, '\0');
    if (extra.failed) {
        PyErr_NoMemory();
        goto done;
    }
    if (ap_prom_routes(&out, self->table, b, (size_t)nb, extra.data) < 0) {
        apext_raise_core(NULL);
        goto done;
    }
    res = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.len);
done:
    ap_sbuf_free(&extra);
    ap_sbuf_free(&out);
    return res;
}

/* Makes `finder` the table's current RouteFinder (its dicts read once; the memos of
 * another finder's answers dropped).  0, or -1 with an exception. */
static int use_finder(RouteTable *self, apext_state *st, PyObject *finder) {
    if (finder == self->finder)
        return 0;
    PyObject *cache = PyObject_GetAttr(finder, st->route_str[S_CACHE]);
    PyObject *leaves = cache ? PyObject_GetAttr(finder, st->route_str[S_LEAVES]) : NULL;
    if (leaves == NULL || !PyDict_CheckExact(cache) || !PyDict_CheckExact(leaves)) {
        Py_XDECREF(cache);
        Py_XDECREF(leaves);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "request(): finder must be a RouteFinder");
        return -1;
    }
    Py_XSETREF(self->finder, Py_NewRef(finder));
    Py_XSETREF(self->cache, cache);
    Py_XSETREF(self->leaves, leaves);
    Py_CLEAR(self->fit_seen);
    Py_CLEAR(self->fit_sub);
    for (int i = 0; i < 4; i++)
        Py_CLEAR(self->arr_key[i]);
    Py_CLEAR(self->arr_known);
    return 0;
}

static PyObject *table_set_stall(RouteTable *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "set_stall_threshold(ns, watch=False)");
        return NULL;
    }
    unsigned long long ns = PyLong_AsUnsignedLongLong(args[0]);
    if (ns == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int watch = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (watch < 0 || (watch && ns != 0 && apext_stallwatch_set(ns) < 0))
        return NULL;
    self->stall_ns = ns;
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

/* a and b are the same object, or equal exact str objects.  Can't fail. */
static int same_str(PyObject *a, PyObject *b) {
    return a == b || (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b) &&
                      PyUnicode_Compare(a, b) == 0);
}

/* What a self-finishing request keeps of its scope on arrival: the path and
 * root_path, and either the template the finder has cached for it (`known`) or
 * else a copy of the scope (RouteFinder.routed's `before`).  0, or -1 with an
 * exception. */
static int keep_arrival(RouteRequest *r, apext_state *st, PyObject *scope) {
    PyObject *path = PyDict_GetItemWithError(scope, st->route_str[S_PATH]);
    PyObject *root = r->root_path; /* scope["root_path"] when a str (table_request) */
    if (root == NULL && (root = PyDict_GetItemWithError(scope, st->route_str[S_ROOT_PATH])) == NULL &&
        PyErr_Occurred())
        return -1;
    if (path != NULL && PyUnicode_CheckExact(path) && (root == NULL || PyUnicode_CheckExact(root))) {
        r->path = Py_NewRef(path);
        r->arrived_root = Py_NewRef(root != NULL ? root : Py_None);
        PyObject *kind = PyDict_GetItemWithError(scope, st->route_str[S_TYPE]);
        PyObject *method = PyDict_GetItemWithError(scope, st->route_str[S_METHOD]);
        if (PyErr_Occurred())
            return -1;
        r->method = Py_XNewRef(method);
        /* RouteFinder.template's key: (type, method, root_path, path) */
        RouteTable *t = r->table;
        PyObject *parts[4] = {kind ? kind : Py_None, method ? method : Py_None,
                              root ? root : Py_None, path};
        if (t->arr_known != NULL && same_str(parts[0], t->arr_key[0]) &&
            same_str(parts[1], t->arr_key[1]) && same_str(parts[2], t->arr_key[2]) &&
            same_str(parts[3], t->arr_key[3])) {
            r->known = Py_NewRef(t->arr_known);
            return 0;
        }
        PyObject *key = PyTuple_Pack(4, parts[0], parts[1], parts[2], parts[3]);
        if (key == NULL)
            return -1;
        PyObject *hit = PyDict_GetItemWithError(t->cache, key);
        Py_DECREF(key);
        if (hit != NULL) {
            r->known = Py_NewRef(hit);
            for (int i = 0; i < 4; i++)
                Py_XSETREF(t->arr_key[i], Py_NewRef(parts[i]));
            Py_XSETREF(t->arr_known, Py_NewRef(hit));
            return 0;
        }
        if (PyErr_Occurred())
            PyErr_Clear(); /* an unhashable value: the copy below */
    }
    r->before = PyDict_Copy(scope);
    return r->before ? 0 : -1;
}

/* The request's route on apiprof-spy's board: its finder's spy_label(scope), found up
 * front while a sampler reads the board.  0 when there is none; never fails the
 * request (an error is dropped). */
static uint32_t spy_label_of(RouteRequest *r, apext_state *st) {
    PyObject *got = PyObject_CallMethodOneArg(r->finder, st->route_str[S_SPY_LABEL], r->scope);
    unsigned long v = got != NULL && PyLong_Check(got) ? PyLong_AsUnsignedLong(got) : 0;
    Py_XDECREF(got);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        v = 0;
    }
    return (uint32_t)v;
}

/* request(scope, send, server_timing=False, finder=None) -> RouteRequest; the clock
 * starts now.  With a finder (apiprof._labels.RouteFinder), the request finishes itself
 * when the coroutine given to run() ends (finish_self), under the route that finder
 * finds. */
static PyObject *table_request(RouteTable *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 4 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "request(scope: dict, send, server_timing=False, finder=None)");
        return NULL;
    }
    apext_state *st = state_of((PyObject *)self);
    RouteRequest *r = PyObject_GC_New(RouteRequest, st->route_request_type);
    if (r == NULL)
        return NULL;
    PyObject *root = PyDict_GetItemWithError(args[0], st->route_str[S_ROOT_PATH]);
    r->vectorcall = req_vectorcall;
    r->table = (RouteTable *)Py_NewRef(self);
    r->scope = Py_NewRef(args[0]);
    r->send = Py_NewRef(args[1]);
    r->root_path = root != NULL && PyUnicode_Check(root) ? Py_NewRef(root) : NULL;
    r->coro = r->extra_headers = NULL;
    r->path = r->arrived_root = r->method = r->before = r->known = r->label = NULL;
    r->finder = r->leaves = NULL;
    r->self_finish = nargs == 4 && args[3] != Py_None;
    r->t_start = r->t_last = r->cpu = r->cpu_in = r->step_t0 = r->bytes_out = 0;
    r->stalls = r->stall_ns = r->stall_max_ns = 0;
    memset(r->stall_buckets, 0, sizeof r->stall_buckets);
    r->caught = NULL;
    r->serial = ++stall_log.serial;
    r->stall_cost_ns = 0;
    r->in_flight = 1;
    stall_log.inflight++;
    r->mem = NULL;
    r->mem_box = NULL;
    r->spy_label = r->spy_entry = 0;
    r->spy_prev = (apext_spy_serving){0, 0};
    r->status = 0;
    r->in_step = r->finished = 0;
    r->server_timing = nargs >= 3 && PyObject_IsTrue(args[2]) == 1;
    PyObject_GC_Track(r);
    if (!PyErr_Occurred() && r->self_finish && use_finder(self, st, args[3]) == 0) {
        r->finder = Py_NewRef(self->finder);
        r->leaves = Py_NewRef(self->leaves);
        keep_arrival(r, st, args[0]);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(r);
        return NULL;
    }
    r->t0 = ap_clock_now_ns();
    if (!apext_spyboard_wanted())
        apext_spyboard_idle();
    else if (r->finder != NULL)
        r->spy_label = spy_label_of(r, st);
    return (PyObject *)r;
}

static PyMethodDef table_methods[] = {
    {"request", (PyCFunction)(void (*)(void))table_request, METH_FASTCALL,
     "request(scope, send, server_timing=False, finder=None) -> RouteRequest for one HTTP\n"
     "request; with a RouteFinder it records itself when its run() ends."},
    {"snapshot", (PyCFunction)table_snapshot, METH_NOARGS,
     "snapshot() -> list of dicts, one per (route, method, status class)."},
    {"reset", (PyCFunction)table_reset, METH_NOARGS, "reset(): forget every request."},
    {"encode", (PyCFunction)table_encode, METH_NOARGS,
     "encode() -> bytes: the table in the format of src/core/ap_routes.h."},
    {"merge", (PyCFunction)table_merge, METH_O,
     "merge(data): add an encoded table (exact); ValueError if data is corrupt."},
    {"add_waits", (PyCFunction)table_add_waits, METH_VARARGS,
     "add_waits(route, method, status_class, waits): add one profiled request's waits\n"
     "({kind: ns}) to that key's entry."},
    {"prometheus", (PyCFunction)(void (*)(void))table_prometheus, METH_VARARGS | METH_KEYWORDS,
     "prometheus(bounds_ns, labels=()) -> bytes: the table in Prometheus' text format\n"
     "(0.0.4); labels are (name, value) pairs added to every sample."},
    {"_set_mount_type", (PyCFunction)table_set_mount_type, METH_O, NULL},
    {"set_stall_threshold", (PyCFunction)(void (*)(void))table_set_stall, METH_FASTCALL,
     "set_stall_threshold(ns, watch=False): a step of a request's own code on the event loop\n"
     "this long or longer counts as a stall of its route (0: none counted); with watch, the\n"
     "stall watchdog captures where each stall's thread was (stall_sites, stalls())."},
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
static int finish_self(RouteRequest *self, int error);

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

/* str `s` == the ASCII literal `lit`: the length and the bytes, without
 * PyUnicode_CompareWithASCIIString's walk (a message type is checked per message). */
#define STR_IS(s, lit) str_is((s), (lit), sizeof(lit) - 1)
static int str_is(PyObject *s, const char *lit, Py_ssize_t n) {
    return PyUnicode_GET_LENGTH(s) == n && PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND &&
           memcmp(PyUnicode_DATA(s), lit, (size_t)n) == 0;
}

static PyObject *req_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames) {
    RouteRequest *self = (RouteRequest *)op;
    if ((kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) || PyVectorcall_NARGS(nargsf) != 1) {
        PyErr_SetString(PyExc_TypeError, "send(message) takes one message");
        return NULL;
    }
    PyObject *message = args[0];
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
    if (STR_IS(type, "http.response.body")) {
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
    } else if (STR_IS(type, "http.response.start")) {
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
    } else if (STR_IS(type, "http.response.pathsend") || STR_IS(type, "http.response.zerocopysend")) {
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

/* The request's memory ends: its box is emptied (contexts that copied it keep
 * an empty box) and its owner's bytes go to s (NULL: nowhere). */
static void end_memory(RouteRequest *self, ap_route_stat *s) {
    if (self->mem_box != NULL) {
        apext_memory_box_clear(self->mem_box);
        Py_CLEAR(self->mem_box);
    }
    if (self->mem != NULL) {
        apext_memory_owner_end(self->mem, s, self->table != NULL ? self->table->table : NULL);
        self->mem = NULL;
    }
}

static void step_in(RouteRequest *self) {
    if (self->spy_label)
        self->spy_prev = apext_spyboard_serve((apext_spy_serving){self->spy_label, self->serial});
    uint64_t now = ap_clock_now_ns();
    self->cpu_in = apext_thread_cpu_floor(now, CPU_STALE_NS);
    self->step_t0 = now;
    self->in_step = 1;
    apext_stallwatch_step_in(now);
}

/* Keep the watchdog's capture of a stall of ns that began at t0 (moved from cap): among
 * the request's REQ_CAUGHT longest, else released. */
static void keep_caught(RouteRequest *self, uint64_t t0, uint64_t ns, apext_stall_capture *cap) {
    req_caught *c = self->caught;
    if (c == NULL && (c = self->caught = PyMem_Calloc(1, sizeof *c)) == NULL) {
        apext_stallwatch_release(cap);
        return;
    }
    int at = c->n;
    if (at == REQ_CAUGHT) {   /* the shortest goes, if shorter than this */
        at = 0;
        for (int i = 1; i < REQ_CAUGHT; i++)
            if (c->s[i].ns < c->s[at].ns)
                at = i;
        if (c->s[at].ns >= ns) {
            apext_stallwatch_release(cap);
            return;
        }
        apext_stallwatch_release(&c->s[at].cap);
    } else {
        c->n++;
    }
    c->s[at].t0 = t0;
    c->s[at].ns = ns;
    memcpy(&c->s[at].cap, cap, sizeof *cap);
    cap->n = 0;
}

static void free_caught(RouteRequest *self) {
    if (self->caught == NULL)
        return;
    for (int i = 0; i < self->caught->n; i++)
        apext_stallwatch_release(&self->caught->s[i].cap);
    PyMem_Free(self->caught);
    self->caught = NULL;
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

/* The step ends: its CPU time is added, and a step at or above the table's
 * stall threshold (the loop ran nothing else meanwhile) is a stall. */
static void step_out(RouteRequest *self) {
    if (self->spy_label)
        apext_spyboard_serve(self->spy_prev);
    uint64_t now = ap_clock_now_ns();
    self->cpu += step_cpu(self, now);
    self->in_step = 0;
    uint64_t wall = now - self->step_t0, limit = self->table->stall_ns;
    apext_stall_capture cap;
    int caught = apext_stallwatch_step_out(&cap);
    if (limit != 0 && wall >= limit) {
        self->stalls++;
        self->stall_ns += wall;
        if (wall > self->stall_max_ns)
            self->stall_max_ns = wall;
        self->stall_buckets[ap_routes_stall_bucket(wall)]++;
        if (stall_log.inflight > 1)
            self->stall_cost_ns += wall * (stall_log.inflight - 1);
        unsigned at = stall_log.next++ % STALL_LOG;
        stall_log.e[at].t0 = self->step_t0;
        stall_log.e[at].t1 = now;
        stall_log.e[at].owner = self->serial;
        stall_log.last_end = now;
        if (caught) {
            keep_caught(self, self->step_t0, wall, &cap);
            caught = 0;
        }
    }
    if (caught)
        apext_stallwatch_release(&cap);
}

/* The coroutine is let go: first out of the board's requests in flight. */
static void drop_coro(RouteRequest *self) {
    apext_spyboard_request_out(self->spy_entry);
    self->spy_entry = 0;
    Py_CLEAR(self->coro);
}

static PyObject *req_run(RouteRequest *self, PyObject *coro) {
    if (self->coro != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RouteRequest.run() is already driving a coroutine");
        return NULL;
    }
    self->coro = Py_NewRef(coro);
    /* the request's context (its task's, the caller's) names it as the allocating
     * request, for the thread-pool work it starts too */
    if (self->mem == NULL && !self->finished && (self->mem = apext_memory_owner_new()) != NULL) {
        self->mem_box = apext_memory_box_new(self->mem);
        PyObject *token =
            self->mem_box ? PyContextVar_Set(apext_memory_request_var, self->mem_box) : NULL;
        if (token == NULL) {
            end_memory(self, NULL);
            drop_coro(self);
            return NULL;
        }
        Py_DECREF(token);
    }
    if (self->spy_label &&
        apext_spyboard_enter((apext_spy_serving){self->spy_label, self->serial}) < 0) {
        end_memory(self, NULL);
        drop_coro(self);
        return NULL;
    }
    /* in flight on the board whether or not a sampler reads it now (a few stores):
     * `apiprof dump` then shows where each request waits */
    self->spy_entry = apext_spyboard_request_in(self->serial, coro, self->spy_label, self->t0);
    if (self->spy_label)
        apext_spyboard_request_context(self->spy_entry);
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
    if (r != PYGEN_NEXT) {
        drop_coro(self);
        if (finish_self(self, r == PYGEN_ERROR) < 0) {
            Py_CLEAR(*result);
            return PYGEN_ERROR;
        }
    }
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
    if (r == NULL) {
        drop_coro(self);
        /* StopIteration: the coroutine caught the exception and returned */
        finish_self(self, !PyErr_ExceptionMatches(PyExc_StopIteration));
    }
    return r;
}

static PyObject *req_close(RouteRequest *self, PyObject *Py_UNUSED(a)) {
    if (self->coro == NULL)
        Py_RETURN_NONE;
    PyObject *coro = self->coro;
    apext_spyboard_request_out(self->spy_entry);
    self->spy_entry = 0;
    self->coro = NULL;
    PyObject *r = PyObject_CallMethod(coro, "close", NULL);
    Py_DECREF(coro);
    if (finish_self(self, 1) < 0) /* r == NULL: the close's exception is kept instead */
        Py_CLEAR(r);
    return r;
}

/* ---- RouteRequest: recording --------------------------------------------------- */

static PyObject *finish_as(RouteRequest *self, apext_state *st, int error, PyObject *given);

/* The template of a self-finishing request, as RouteFinder.routed(before, leaf) finds
 * it: its common case here (the route object the router left in the scope, seen before
 * under one template whose regex fits the arrival path), else that method, given the
 * arrival copy of the scope or the template cached on arrival.  A str or None (new
 * reference), or NULL with an exception. */
static PyObject *routed_label(RouteRequest *self, apext_state *st) {
    PyObject *leaf = PyDict_GetItemWithError(self->scope, st->route_str[S_ROUTE]);
    if (leaf == NULL && PyErr_Occurred())
        return NULL;
    leaf = leaf != NULL ? leaf : Py_None;
    if (leaf != Py_None && self->path != NULL) {
        PyObject *id = PyLong_FromVoidPtr(leaf);
        if (id == NULL)
            return NULL;
        PyObject *seen = PyDict_GetItemWithError(self->leaves, id);
        Py_DECREF(id);
        if (seen == NULL && PyErr_Occurred())
            return NULL;
        if (seen != NULL && PyTuple_CheckExact(seen) && PyTuple_GET_SIZE(seen) == 3 &&
            PyTuple_GET_ITEM(seen, 0) == leaf && PyTuple_GET_ITEM(seen, 2) != Py_None) {
            PyObject *path = self->path, *root = self->arrived_root, *sub;
            Py_ssize_t n = root != Py_None ? PyUnicode_GET_LENGTH(root) : 0;
            if (n > 0 && PyUnicode_Tailmatch(path, root, 0, PY_SSIZE_T_MAX, -1) == 1)
                sub = PyUnicode_Substring(path, n, PyUnicode_GET_LENGTH(path));
            else
                sub = Py_NewRef(path);
            if (sub == NULL)
                return NULL;
            RouteTable *t = self->table; /* fit_*: an entry of a _leaves dict, any finder's */
            if (seen == t->fit_seen && PyUnicode_Compare(sub, t->fit_sub) == 0) {
                Py_DECREF(sub);
                return Py_NewRef(PyTuple_GET_ITEM(seen, 1));
            }
            PyObject *m = PyObject_CallMethodOneArg(PyTuple_GET_ITEM(seen, 2),
                                                    st->route_str[S_FULLMATCH], sub);
            int hit = m != NULL ? PyObject_IsTrue(m) : -1;
            Py_XDECREF(m);
            if (hit <= 0) {
                Py_DECREF(sub);
                if (hit < 0)
                    return NULL;
            } else {
                Py_XSETREF(t->fit_seen, Py_NewRef(seen));
                Py_XSETREF(t->fit_sub, sub);
                return Py_NewRef(PyTuple_GET_ITEM(seen, 1));
            }
        }
    }
    PyObject *before = Py_XNewRef(self->before);
    if (before == NULL) { /* the template was cached on arrival: path and root_path suffice */
        before = PyDict_New();
        if (before == NULL || PyDict_SetItem(before, st->route_str[S_PATH], self->path) < 0 ||
            (self->arrived_root != Py_None &&
             PyDict_SetItem(before, st->route_str[S_ROOT_PATH], self->arrived_root) < 0)) {
            Py_XDECREF(before);
            return NULL;
        }
    }
    PyObject *known = self->known != NULL ? PyTuple_Pack(1, self->known) : NULL;
    if (known == NULL && self->known != NULL) {
        Py_DECREF(before);
        return NULL;
    }
    PyObject *args[4] = {self->finder, before, leaf, known};
    PyObject *label = PyObject_VectorcallMethod(st->route_str[S_ROUTED], args,
                                                (known ? 4 : 3) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                NULL);
    Py_DECREF(before);
    Py_XDECREF(known);
    if (label != NULL && label != Py_None && !PyUnicode_Check(label)) {
        Py_DECREF(label);
        PyErr_SetString(PyExc_TypeError, "RouteFinder.routed() returned neither str nor None");
        return NULL;
    }
    return label;
}

/* Finishes a self-finishing request when its coroutine ended (`error`: by an
 * exception, or it was closed), once; an exception pending on entry (the app's) is
 * kept, and a failure to record is then reported as unraisable.  0, or -1 with an
 * exception (none pending on entry). */
static int finish_self(RouteRequest *self, int error) {
    if (!self->self_finish || self->finished)
        return 0;
    apext_state *st = state_of((PyObject *)self);
    int pending = PyErr_Occurred() != NULL;
    AP_SAVE_EXC(exc);
    PyObject *given = routed_label(self, st);
    PyObject *label = given != NULL ? finish_as(self, st, error, given) : NULL;
    Py_XDECREF(given);
    self->finished = 1;
    leave_flight(self);
    if (label != NULL)
        Py_XSETREF(self->label, label);
    Py_CLEAR(self->before);
    if (label == NULL && !pending)
        return -1;
    if (label == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    AP_RESTORE_EXC(exc); /* the pending exception, or none */
    return 0;
}

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

static PyObject *finish_as(RouteRequest *self, apext_state *st, int error, PyObject *given);

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
    if (self->finished && self->self_finish) /* it finished itself (request(..., finder)) */
        return Py_NewRef(self->label != NULL ? self->label : Py_None);
    if (self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "RouteRequest.finish() called twice");
        return NULL;
    }
    return finish_as(self, st, error, given);
}

/* Records the request once under `given` (a str, or None: the route read from
 * the scope).  Its label (new reference), or NULL with an exception. */
static PyObject *finish_as(RouteRequest *self, apext_state *st, int error, PyObject *given) {
    self->finished = 1;
    leave_flight(self);
    uint64_t end = self->t_last ? self->t_last : ap_clock_now_ns();
    PyObject *label = given != Py_None ? Py_NewRef(given) : route_label(self, st);
    if (label == NULL)
        return NULL;
    /* the method on arrival when kept (self-finishing requests; routers do not change it) */
    PyObject *method = self->method != NULL ? self->method
                                            : PyDict_GetItemWithError(self->scope, st->route_str[S_METHOD]);
    if (method == NULL && PyErr_Occurred()) {
        Py_DECREF(label);
        return NULL;
    }
    unsigned cls = self->status ? (unsigned)(self->status / 100) : error ? 5u : 0u;
    RouteTable *t = self->table;
    ap_route_stat *s;
    if (t->last_stat != NULL && label == t->last_label && cls == t->last_cls && method != NULL &&
        same_str(method, t->last_method)) {
        s = t->last_stat;
    } else {
        Py_ssize_t rlen = 0, mlen = 0;
        const char *r = PyUnicode_AsUTF8AndSize(label, &rlen);
        const char *m = method && PyUnicode_Check(method) ? PyUnicode_AsUTF8AndSize(method, &mlen) : "";
        if (r == NULL || m == NULL) {
            Py_DECREF(label);
            return NULL;
        }
        s = ap_routes_get(t->table, r, (size_t)rlen, m, (size_t)mlen, cls);
        if (s == NULL) {
            Py_DECREF(label);
            return PyErr_NoMemory();
        }
        if (method != NULL && PyUnicode_CheckExact(method)) {
            Py_XSETREF(t->last_label, Py_NewRef(label));
            Py_XSETREF(t->last_method, Py_NewRef(method));
            t->last_cls = cls;
            t->last_stat = s;
        }
    }
    uint64_t wall = end - self->t0;
    ap_routes_record(s, wall, self->cpu < wall ? self->cpu : wall, self->bytes_out,
                     error || cls >= 5);
    if (self->stalls)
        ap_routes_add_stalls(s, self->stalls, self->stall_ns, self->stall_max_ns,
                             self->stall_buckets);
    uint64_t delayed = stall_delay(self->serial, self->t0, end);
    if (delayed || self->stall_cost_ns)
        ap_routes_add_stall_delays(s, self->stall_cost_ns, delayed);
    for (int i = 0; self->caught != NULL && i < self->caught->n; i++) {
        char site[AP_ROUTES_SITE_MAX + 1];
        size_t n = apext_stallwatch_site(&self->caught->s[i].cap, site, sizeof site);
        ap_routes_add_stall_site(s, site, n, 1, self->caught->s[i].ns, self->caught->s[i].ns);
    }
    end_memory(self, s);
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
    Py_VISIT(self->path);
    Py_VISIT(self->finder);
    Py_VISIT(self->leaves);
    Py_VISIT(self->method);
    Py_VISIT(self->arrived_root);
    Py_VISIT(self->before);
    Py_VISIT(self->known);
    Py_VISIT(self->label);
    return 0;
}

static int req_clear(RouteRequest *self) {
    Py_CLEAR(self->table);
    Py_CLEAR(self->send);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->root_path);
    drop_coro(self);
    Py_CLEAR(self->extra_headers);
    Py_CLEAR(self->path);
    Py_CLEAR(self->finder);
    Py_CLEAR(self->leaves);
    Py_CLEAR(self->method);
    Py_CLEAR(self->arrived_root);
    Py_CLEAR(self->before);
    Py_CLEAR(self->known);
    Py_CLEAR(self->label);
    return 0;
}

static void req_dealloc(RouteRequest *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    end_memory(self, NULL);   /* never recorded: its memory goes nowhere */
    leave_flight(self);
    free_caught(self);
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

static PyMemberDef req_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(RouteRequest, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* stalls() -> [(start_ns, duration_ns, [(qualname, file, first_line, line), ...]), ...]:
 * the request's stalls whose call path the watchdog captured (its longest ones), the
 * path outermost first. */
static PyObject *req_stalls(RouteRequest *self, PyObject *Py_UNUSED(a)) {
    PyObject *out = PyList_New(0);
    for (int i = 0; out != NULL && self->caught != NULL && i < self->caught->n; i++) {
        const apext_stall_capture *cap = &self->caught->s[i].cap;
        PyObject *frames = PyList_New(cap->n);
        for (int k = 0; frames != NULL && k < cap->n; k++) {
            PyCodeObject *co = cap->code[cap->n - 1 - k];
            PyObject *f = Py_BuildValue("(OOii)", co->co_qualname, co->co_filename,
                                        co->co_firstlineno, cap->line[cap->n - 1 - k]);
            if (f == NULL)
                Py_CLEAR(frames);
            else
                PyList_SET_ITEM(frames, k, f);
        }
        PyObject *e = frames ? Py_BuildValue("(KKN)", (unsigned long long)self->caught->s[i].t0,
                                             (unsigned long long)self->caught->s[i].ns, frames)
                             : NULL;
        if (e == NULL || PyList_Append(out, e) < 0)
            Py_CLEAR(out);
        Py_XDECREF(e);
    }
    return out;
}

static PyMethodDef req_methods[] = {
    {"stalls", (PyCFunction)req_stalls, METH_NOARGS,
     "stalls() -> [(start_ns, duration_ns, [(qualname, file, first_line, line), ...])]: its\n"
     "stalls whose call path the stall watchdog captured, outermost frame first."},
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
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_members, req_members},
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
    .name = AP_SPYBOARD_VIA_TYPE,
    .basicsize = sizeof(RouteRequest),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = req_slots,
};

int apext_routes_init(PyObject *module, apext_state *st) {
    for (int i = 0; i < S_COUNT; i++) {
        st->route_str[i] = PyUnicode_InternFromString(STR_NAMES[i]);
        if (st->route_str[i] == NULL)
            return -1;
    }
    apext_spyboard_via((uint32_t)offsetof(RouteRequest, coro));
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

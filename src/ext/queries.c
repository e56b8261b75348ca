/* queries.c -- query capture: record_query (one database statement or outgoing call into the running tracer's profile, with its normalised text, request, route and the app's calling line) and sqlite3's timed Connection and Cursor classes. */
#include "ext.h"
#include "code.h"
#include "compat.h"
#include "stack.h"

#include <string.h>

#include "ap_clock.h"
#include "ap_prof.h"
#include "ap_wait.h"

/* ---- the app's calling line -----------------------------------------------------------
 * Walking to the app's frame means, per frame, a library-file test of its
 * code's file name and, for the app's frame, its line from the location
 * table (a scan from the table's start): both are cached per (code object,
 * instruction), a statement's call site being the same few places each
 * time.  The cache holds its code objects (so an address is not reused);
 * protected by the GIL, released by query_scope(None, None). */
typedef struct site_slot {
    PyObject *code;  /* strong, or NULL */
    int lasti;
    int app;         /* the app's code (not a library file) */
    uint64_t serial; /* the session frame is of (app only) */
    ap_frame_id frame;
    uint32_t line;
} site_slot;

#define SITE_CACHE 256
static site_slot site_cache[SITE_CACHE];

/* The function-level frame of co in sess's profile: the tracer's record of the code
 * has it (no interning), else it is interned.  AP_NONE on an interning error. */
static ap_frame_id code_frame(apext_session *sess, PyCodeObject *co) {
    apext_code_info *rec = apext_code_get((PyObject *)co, APEXT_PRODUCER_TRACE);
    if (rec != NULL && rec->serial == sess->serial)
        return rec->frame;
    ap_prof *p = sess->prof;
    ap_frame fr = {apext_session_intern(p, co->co_name), apext_session_intern(p, co->co_qualname),
                   apext_session_intern(p, co->co_filename), (uint32_t)co->co_firstlineno, 0,
                   AP_FRAME_PYTHON};
    if (fr.name == AP_NONE || fr.qualname == AP_NONE || fr.file == AP_NONE)
        return AP_NONE;
    return ap_prof_frame_intern(p, &fr);
}

/* Whether co is the app's code: not a library file nor made at run time. */
static int app_code(PyCodeObject *co) {
    const char *file = PyUnicode_AsUTF8(co->co_filename);
    if (file == NULL) {
        PyErr_Clear();
        return 0;
    }
    return !ap_wait_library_file(file) && !ap_wait_generated_file(file);
}

/* The slot of (co, lasti) in session sess, filled if it was not.  NULL on
 * an interning error (noted by the caller). */
static site_slot *site_of(apext_session *sess, PyFrameObject *f, PyCodeObject *co) {
    int lasti = PyFrame_GetLasti(f);
    site_slot *slot = &site_cache[(((uintptr_t)co >> 4) ^ (uintptr_t)lasti * 0x9E37u) % SITE_CACHE];
    if (slot->code == (PyObject *)co && slot->lasti == lasti &&
        (!slot->app || slot->serial == sess->serial))
        return slot;
    int app = app_code(co);
    ap_frame_id frame = 0;
    uint32_t line = 0;
    if (app) {
        if ((frame = code_frame(sess, co)) == AP_NONE)
            return NULL;
        int line_no = PyFrame_GetLineNumber(f);
        line = line_no > 0 ? (uint32_t)line_no : 0;
    }
    PyObject *old = slot->code; /* released last: its release may run code */
    slot->code = Py_NewRef((PyObject *)co);
    slot->lasti = lasti;
    slot->app = app;
    slot->serial = sess->serial;
    slot->frame = frame;
    slot->line = line;
    Py_XDECREF(old);
    return slot;
}

/* The innermost frame of the app's code (not a library file nor code made at
 * run time: ap_wait.h) on the calling
 * thread's Python stack, as a function-level frame of the session's
 * profile, and its line; 0 when there is none.  Returns -1 on an interning
 * error. */
static int call_site(apext_session *sess, ap_frame_id *site, uint32_t *line) {
    *site = 0;
    *line = 0;
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    Py_XINCREF(f);
    while (f != NULL) {
        PyCodeObject *co = PyFrame_GetCode(f);
        site_slot *slot = site_of(sess, f, co);
        Py_DECREF(co);
        if (slot == NULL || slot->app) {
            Py_DECREF(f);
            if (slot == NULL)
                return -1;
            *site = slot->frame;
            *line = slot->line;
            return 0;
        }
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    return 0;
}

/* ---- where a record goes: request, route, scope ---------------------------------------
 * The context variables of _labels (set once by query_context) and, for a
 * profiler with scope="context", the variable and mark of its scope
 * (query_scope).  Strong references; protected by the GIL. */
static PyObject *request_var, *route_var, *scope_var, *scope_mark;
/* Where a statement run on another thread for the context was asked for (aiosqlite's
 * worker runs it in a copy of the caller's context): (code, line), set by the caller
 * from query_site(); a record whose own thread has no app frame takes it. */
static PyObject *site_var;

/* The request serial to record under in *request: 1, or 0 when the
 * current context is out of the scope (not recorded); -1 with a Python
 * exception. */
static int context_request(uint64_t *request) {
    PyObject *v = NULL;
    *request = 0;
    if (scope_var != NULL) {
        if (PyContextVar_Get(scope_var, NULL, &v) < 0)
            return -1;
        int in = v == scope_mark;
        Py_XDECREF(v);
        if (!in)
            return 0;
    }
    if (request_var != NULL) {
        if (PyContextVar_Get(request_var, NULL, &v) < 0)
            return -1;
        if (v != NULL && PyLong_Check(v)) {
            *request = PyLong_AsUnsignedLongLong(v);
            if (*request == (uint64_t)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                *request = 0;
            }
        }
        Py_XDECREF(v);
    }
    if (scope_var != NULL && *request == 0)
        *request = 1; /* a context scope is one request of its own */
    return 1;
}

/* ---- string ids by identity ------------------------------------------------------------
 * A statement is the same str object each time its code runs (a constant,
 * or SQLAlchemy's cached compilation), and so is a route: a small cache
 * keyed by the object (held, so its address is not reused) and the session
 * skips normalising and interning on the hot path. */
typedef struct ident_slot {
    PyObject *obj;   /* strong, or NULL */
    uint64_t serial; /* the session the id is of */
    ap_str_id id;
} ident_slot;

#define STMT_CACHE 256
#define ROUTE_CACHE 64
static ident_slot stmt_cache[STMT_CACHE], route_cache[ROUTE_CACHE];

static void ident_forget(ident_slot *cache, size_t n) {
    for (size_t i = 0; i < n; i++)
        Py_CLEAR(cache[i].obj);
}

enum { TEXT_ROUTE, TEXT_STATEMENT, TEXT_LABEL };

/* The id of text in s's profile: a route as it is, a statement normalised (both cached
 * by identity), an outgoing call's label as it is up to 2047 bytes (a new string each
 * time: not cached).  AP_NONE with an ap_err (no memory) or a Python exception (text
 * not encodable). */
static ap_str_id text_id(apext_session *s, PyObject *text, int mode) {
    ident_slot *slot = mode == TEXT_STATEMENT ? &stmt_cache[((uintptr_t)text >> 4) % STMT_CACHE]
                       : mode == TEXT_ROUTE   ? &route_cache[((uintptr_t)text >> 4) % ROUTE_CACHE]
                                              : NULL;
    if (slot != NULL && slot->obj == text && slot->serial == s->serial)
        return slot->id;
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(text, &len);
    if (u == NULL)
        return AP_NONE;
    ap_str_id id;
    if (mode == TEXT_STATEMENT) {
        char buf[2048];
        size_t n = ap_query_normalise(u, (size_t)len, buf, sizeof buf);
        id = ap_prof_intern(s->prof, buf, n);
    } else {
        size_t n = mode == TEXT_LABEL && len > 2047 ? 2047 : (size_t)len;
        while (mode == TEXT_LABEL && n < (size_t)len && n > 0 && ((unsigned char)u[n] & 0xC0) == 0x80)
            n--; /* cut on a character boundary */
        id = ap_prof_intern(s->prof, u, n);
    }
    if (id != AP_NONE && slot != NULL) {
        PyObject *old = slot->obj;
        slot->obj = Py_NewRef(text);
        slot->serial = s->serial;
        slot->id = id;
        Py_XDECREF(old);
    }
    return id;
}

/* The site the context's site_var holds, as call_site() gives one (0 when it holds
 * none).  -1 on an interning error. */
static int asked_site(apext_session *sess, ap_frame_id *site, uint32_t *line) {
    PyObject *v = NULL;
    if (PyContextVar_Get(site_var, NULL, &v) < 0) {
        PyErr_Clear();
        return 0;
    }
    int rc = 0;
    if (v != NULL && PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 2 &&
        PyCode_Check(PyTuple_GET_ITEM(v, 0)) && PyLong_Check(PyTuple_GET_ITEM(v, 1))) {
        long ln = PyLong_AsLong(PyTuple_GET_ITEM(v, 1));
        PyErr_Clear();
        *site = code_frame(sess, (PyCodeObject *)PyTuple_GET_ITEM(v, 0));
        *line = ln > 0 ? (uint32_t)ln : 0;
        rc = *site == AP_NONE ? -1 : 0;
    }
    Py_XDECREF(v);
    return rc;
}

/* query_site() -> (code, line) | None: the innermost frame of the app's code on the
 * calling thread's stack, for a statement that another thread will run for it. */
static PyObject *query_site(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    Py_XINCREF(f);
    while (f != NULL) {
        PyCodeObject *co = PyFrame_GetCode(f);
        if (app_code(co)) {
            int line = PyFrame_GetLineNumber(f);
            Py_DECREF(f);
            return Py_BuildValue("(Ni)", (PyObject *)co, line);
        }
        Py_DECREF(co);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_RETURN_NONE;
}

/* ---- one record --------------------------------------------------------------------------
 * text (a str) that took ns and reported rows, of kind (AP_QUERY_*), into
 * the running tracer's profile if it records this thread and the context is
 * in scope.  1 recorded, 0 not; -1 when recording failed (noted in the
 * session; no Python exception is left). */
static int record(PyObject *text, uint64_t ns, uint64_t rows, unsigned kind) {
    apext_object *o = (apext_object *)apext_session_running[APEXT_PRODUCER_TRACE];
    apext_thread *ts = o != NULL ? apext_stack_thread(&o->sess, APEXT_PRODUCER_TRACE) : NULL;
    if (ts == NULL)
        return 0;
    uint64_t request;
    int in = context_request(&request);
    if (in <= 0) {
        PyErr_Clear();
        return 0;
    }
    PyObject *route = NULL;
    if (route_var != NULL && PyContextVar_Get(route_var, Py_None, &route) < 0) {
        PyErr_Clear();
        route = NULL;
    }
    ap_str_id route_id = 0, stmt = AP_NONE;
    if (route != NULL && PyUnicode_Check(route))
        route_id = text_id(&o->sess, route, TEXT_ROUTE);
    Py_XDECREF(route);
    if (route_id != AP_NONE)
        stmt = text_id(&o->sess, text, kind == AP_QUERY_STATEMENT ? TEXT_STATEMENT : TEXT_LABEL);
    if (stmt == AP_NONE && PyErr_Occurred()) { /* a text that is no valid Unicode: not recorded */
        PyErr_Clear();
        return 0;
    }
    ap_frame_id site;
    uint32_t line;
    int bad = stmt == AP_NONE || route_id == AP_NONE || call_site(&o->sess, &site, &line) != 0;
    if (!bad && site == 0 && site_var != NULL)
        bad = asked_site(&o->sess, &site, &line) != 0;
    if (bad || ap_prof_query_add(o->sess.prof, kind, stmt, route_id, site, line, ns, rows, request) != 0) {
        apext_session_fail(&o->sess, "query");
        PyErr_Clear();
        return -1;
    }
    return 1;
}

/* record_query(text, ns, rows, kind=0) -> bool */
static PyObject *record_query(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    unsigned long long ns, rows, kind = AP_QUERY_STATEMENT;
    if ((n != 3 && n != 4) || !PyUnicode_Check(a[0]))
        return PyErr_Format(PyExc_TypeError, "record_query(text: str, ns, rows, kind: int = 0)");
    ns = PyLong_AsUnsignedLongLong(a[1]);
    rows = PyLong_AsUnsignedLongLong(a[2]);
    if (n == 4)
        kind = PyLong_AsUnsignedLongLong(a[3]);
    if (PyErr_Occurred())
        return NULL;
    if (kind >= AP_QUERY_KINDS)
        return PyErr_Format(PyExc_ValueError, "record_query: unknown kind %llu", kind);
    return PyBool_FromLong(record(a[0], ns, rows, (unsigned)kind) == 1);
}

/* query_context(request_var, route_var, site_var): the context variables records read. */
static PyObject *query_context(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    if (n != 3 || !PyContextVar_CheckExact(a[0]) || !PyContextVar_CheckExact(a[1]) ||
        !PyContextVar_CheckExact(a[2]))
        return PyErr_Format(PyExc_TypeError, "query_context(request_var, route_var, site_var)");
    Py_XSETREF(request_var, Py_NewRef(a[0]));
    Py_XSETREF(route_var, Py_NewRef(a[1]));
    Py_XSETREF(site_var, Py_NewRef(a[2]));
    Py_RETURN_NONE;
}

/* query_scope(var, mark) / query_scope(None, None) */
static PyObject *query_scope(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || (a[0] != Py_None && !PyContextVar_CheckExact(a[0])))
        return PyErr_Format(PyExc_TypeError, "query_scope(var: ContextVar | None, mark)");
    if (a[0] == Py_None) {
        Py_CLEAR(scope_var);
        Py_CLEAR(scope_mark);
        ident_forget(stmt_cache, STMT_CACHE);
        ident_forget(route_cache, ROUTE_CACHE);
        for (size_t i = 0; i < SITE_CACHE; i++)
            Py_CLEAR(site_cache[i].code);
    } else {
        Py_XSETREF(scope_var, Py_NewRef(a[0]));
        Py_XSETREF(scope_mark, Py_NewRef(a[1]));
    }
    Py_RETURN_NONE;
}

/* ---- sqlite3's timed classes ------------------------------------------------------------
 * Subclasses of sqlite3.Connection and sqlite3.Cursor, named as sqlite3's
 * own (so the tracer records a call of their methods as it records
 * sqlite3's, and its wait rules apply), whose statement methods call the
 * base method and record the statement: no Python frame per statement.
 * Made once by sqlite_types(). */
static PyObject *base_execute, *base_executemany, *base_cursor; /* unbound methods */
static PyObject *cursor_type;                                    /* the timed Cursor */
static PyObject *s_rowcount;

/* base(self, *a) timed, and its statement a[0] recorded (also when the
 * statement failed: its time was spent). */
static PyObject *cursor_run(PyObject *self, PyObject *base, PyObject *const *a, Py_ssize_t n,
                            const char *what) {
    if (n < 1 || n > 2)
        return PyErr_Format(PyExc_TypeError, "%s expected 1 or 2 arguments, got %zd", what, n);
    PyObject *args[3] = {self, a[0], n > 1 ? a[1] : NULL};
    uint64_t t0 = ap_clock_now_ns();
    PyObject *out = PyObject_Vectorcall(base, args, (size_t)n + 1, NULL);
    if (apext_session_running[APEXT_PRODUCER_TRACE] != NULL && PyUnicode_Check(a[0])) {
        uint64_t ns = ap_clock_now_ns() - t0;
        AP_SAVE_EXC(e);
        long rows = 0;
        PyObject *rc = PyObject_GetAttr(self, s_rowcount);
        if (rc != NULL && PyLong_Check(rc))
            rows = PyLong_AsLong(rc);
        Py_XDECREF(rc);
        PyErr_Clear();
        record(a[0], ns, rows > 0 ? (uint64_t)rows : 0, AP_QUERY_STATEMENT);
        AP_RESTORE_EXC(e);
    }
    return out;
}

static PyObject *cursor_execute(PyObject *self, PyObject *const *a, Py_ssize_t n) {
    return cursor_run(self, base_execute, a, n, "execute");
}

static PyObject *cursor_executemany(PyObject *self, PyObject *const *a, Py_ssize_t n) {
    return cursor_run(self, base_executemany, a, n, "executemany");
}

/* Connection.cursor(factory=Cursor): the timed Cursor unless a factory is given. */
static PyObject *conn_cursor(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kw) {
    Py_ssize_t npos = PyVectorcall_NARGS(nargsf);
    Py_ssize_t n = npos + (kw != NULL ? PyTuple_GET_SIZE(kw) : 0);
    if (n > 1)
        return PyErr_Format(PyExc_TypeError, "cursor() takes at most 1 argument (%zd given)", n);
    if (n == 0) {
        PyObject *args[2] = {self, cursor_type};
        return PyObject_Vectorcall(base_cursor, args, 2, NULL);
    }
    PyObject *args[2] = {self, a[0]}; /* factory, positional or by keyword (kw) */
    return PyObject_Vectorcall(base_cursor, args, (size_t)npos + 1, kw);
}

static PyObject *conn_run(PyObject *self, PyObject *base, PyObject *const *a, Py_ssize_t n,
                          const char *what) {
    PyObject *args[2] = {self, cursor_type};
    PyObject *cur = PyObject_Vectorcall(base_cursor, args, 2, NULL);
    if (cur == NULL)
        return NULL;
    PyObject *out = cursor_run(cur, base, a, n, what);
    Py_DECREF(cur);
    return out;
}

static PyObject *conn_execute(PyObject *self, PyObject *const *a, Py_ssize_t n) {
    return conn_run(self, base_execute, a, n, "execute");
}

static PyObject *conn_executemany(PyObject *self, PyObject *const *a, Py_ssize_t n) {
    return conn_run(self, base_executemany, a, n, "executemany");
}

static PyMethodDef cursor_methods[] = {
    {"execute", (PyCFunction)(void (*)(void))cursor_execute, METH_FASTCALL,
     "execute(sql, parameters=(), /): sqlite3's, timed and recorded"},
    {"executemany", (PyCFunction)(void (*)(void))cursor_executemany, METH_FASTCALL,
     "executemany(sql, parameters, /): sqlite3's, timed and recorded"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef conn_methods[] = {
    {"cursor", (PyCFunction)(void (*)(void))conn_cursor, METH_FASTCALL | METH_KEYWORDS,
     "cursor(factory=Cursor): a timed cursor unless factory is given"},
    {"execute", (PyCFunction)(void (*)(void))conn_execute, METH_FASTCALL,
     "execute(sql, parameters=(), /): on a new timed cursor"},
    {"executemany", (PyCFunction)(void (*)(void))conn_executemany, METH_FASTCALL,
     "executemany(sql, parameters, /): on a new timed cursor"},
    {NULL, NULL, 0, NULL},
};

static PyObject *make_type(const char *name, PyMethodDef *methods, PyObject *base) {
    PyType_Slot slots[] = {{Py_tp_methods, methods}, {0, NULL}};
    PyType_Spec spec = {name, 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, slots};
    return PyType_FromSpecWithBases(&spec, base);
}

/* sqlite_types(Connection, Cursor) -> (timed Connection, timed Cursor); once. */
static PyObject *sqlite_types(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyType_Check(a[0]) || !PyType_Check(a[1]))
        return PyErr_Format(PyExc_TypeError, "sqlite_types(Connection: type, Cursor: type)");
    if (cursor_type != NULL)
        return PyErr_Format(PyExc_RuntimeError, "sqlite_types: made already");
    PyObject *conn = NULL;
    if ((s_rowcount = PyUnicode_InternFromString("rowcount")) == NULL ||
        (base_execute = PyObject_GetAttrString(a[1], "execute")) == NULL ||
        (base_executemany = PyObject_GetAttrString(a[1], "executemany")) == NULL ||
        (base_cursor = PyObject_GetAttrString(a[0], "cursor")) == NULL ||
        (cursor_type = make_type("sqlite3.Cursor", cursor_methods, a[1])) == NULL ||
        (conn = make_type("sqlite3.Connection", conn_methods, a[0])) == NULL) {
        Py_CLEAR(s_rowcount);
        Py_CLEAR(base_execute);
        Py_CLEAR(base_executemany);
        Py_CLEAR(base_cursor);
        Py_CLEAR(cursor_type);
        return NULL;
    }
    return Py_BuildValue("(NO)", conn, cursor_type);
}

PyMethodDef apext_queries_methods[] = {
    {"record_query", (PyCFunction)(void (*)(void))record_query, METH_FASTCALL,
     "record_query(text, ns, rows, kind=0) -> bool\n\nOne database statement (kind 0; an "
     "outgoing HTTP call: kind 1, its label as given) that took ns and reported rows, into "
     "the running tracer's profile, under the request and route of the current context "
     "(query_context): its normalised text and the app's calling line. False when no tracer "
     "records this thread or the context is out of the scope (query_scope)."},
    {"query_context", (PyCFunction)(void (*)(void))query_context, METH_FASTCALL,
     "query_context(request_var, route_var, site_var): the context variables that name a "
     "record's request (an int serial, 0 for none), route (a str, else none) and, for a "
     "statement run on a thread with no app frame, its call site ((code, line) from "
     "query_site())."},
    {"query_site", (PyCFunction)query_site, METH_NOARGS,
     "query_site() -> (code, line) | None: the innermost frame of the app's code on this "
     "thread's stack."},
    {"query_scope", (PyCFunction)(void (*)(void))query_scope, METH_FASTCALL,
     "query_scope(var, mark): record only in contexts where var holds mark, each as one "
     "request; query_scope(None, None): everywhere again, and the cached string ids and "
     "call sites released."},
    {"sqlite_types", (PyCFunction)(void (*)(void))sqlite_types, METH_FASTCALL,
     "sqlite_types(Connection, Cursor) -> (Connection, Cursor)\n\nSubclasses of sqlite3's "
     "classes under sqlite3's names whose execute and executemany (and the connection's "
     "shortcuts, and cursor()'s default factory) time each statement and record it "
     "(record_query). Made once per process."},
    {NULL, NULL, 0, NULL},
};

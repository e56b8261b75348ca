/* queries.c -- apiprof._core.record_query: one database statement into the running tracer's profile (its normalised text, route, the app's calling line). */
#include "ext.h"
#include "code.h"
#include "stack.h"

#include <string.h>

#include "ap_prof.h"
#include "ap_wait.h"

/* The innermost frame of the app's code (not a library file) on the calling
 * thread's Python stack, as a function-level frame of p, and its line; 0
 * when there is none.  Returns -1 on an interning error. */
static int call_site(apext_session *sess, ap_frame_id *site, uint32_t *line) {
    ap_prof *p = sess->prof;
    *site = 0;
    *line = 0;
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    Py_XINCREF(f);
    while (f != NULL) {
        PyCodeObject *co = PyFrame_GetCode(f);
        const char *file = PyUnicode_AsUTF8(co->co_filename);
        if (file == NULL)
            PyErr_Clear();
        if (file != NULL && !ap_wait_library_file(file)) {
            /* The tracer's record of the code has its frame: no interning. */
            apext_code_info *rec = apext_code_get((PyObject *)co, APEXT_PRODUCER_TRACE);
            if (rec != NULL && rec->serial == sess->serial) {
                int line_no = PyFrame_GetLineNumber(f);
                Py_DECREF(co);
                Py_DECREF(f);
                *site = rec->frame;
                *line = line_no > 0 ? (uint32_t)line_no : 0;
                return 0;
            }
            ap_frame fr = {apext_session_intern(p, co->co_name),
                           apext_session_intern(p, co->co_qualname),
                           apext_session_intern(p, co->co_filename),
                           (uint32_t)co->co_firstlineno, 0, AP_FRAME_PYTHON};
            int line_no = PyFrame_GetLineNumber(f);
            Py_DECREF(co);
            Py_DECREF(f);
            if (fr.name == AP_NONE || fr.qualname == AP_NONE || fr.file == AP_NONE)
                return -1;
            *site = ap_prof_frame_intern(p, &fr);
            *line = line_no > 0 ? (uint32_t)line_no : 0;
            return *site == AP_NONE ? -1 : 0;
        }
        Py_DECREF(co);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    return 0;
}

/* record_query(statement, ns, rows, request, route, kind=0) -> bool */
static PyObject *record_query(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    unsigned long long ns, rows, request, kind = AP_QUERY_STATEMENT;
    if ((n != 5 && n != 6) || !PyUnicode_Check(a[0]) ||
        (a[4] != Py_None && !PyUnicode_Check(a[4])))
        return PyErr_Format(PyExc_TypeError, "record_query(statement: str, ns, rows, request, "
                                             "route: str | None, kind: int = 0)");
    ns = PyLong_AsUnsignedLongLong(a[1]);
    rows = PyLong_AsUnsignedLongLong(a[2]);
    request = PyLong_AsUnsignedLongLong(a[3]);
    if (n == 6)
        kind = PyLong_AsUnsignedLongLong(a[5]);
    if (PyErr_Occurred())
        return NULL;
    if (kind >= AP_QUERY_KINDS)
        return PyErr_Format(PyExc_ValueError, "record_query: unknown kind %llu", kind);
    apext_object *o = (apext_object *)apext_session_running[APEXT_PRODUCER_TRACE];
    apext_thread *ts = o != NULL ? apext_stack_thread(&o->sess, APEXT_PRODUCER_TRACE) : NULL;
    if (ts == NULL)
        Py_RETURN_FALSE;
    ap_prof *p = o->sess.prof;
    Py_ssize_t len;
    const char *sql = PyUnicode_AsUTF8AndSize(a[0], &len);
    if (sql == NULL)
        return NULL;
    char text[2048];
    size_t tn;
    if (kind == AP_QUERY_STATEMENT) {
        tn = ap_query_normalise(sql, (size_t)len, text, sizeof text);
    } else { /* an HTTP call's label is made by the caller */
        tn = (size_t)len < sizeof text ? (size_t)len : sizeof text - 1;
        memcpy(text, sql, tn);
        text[tn] = '\0';
    }
    ap_str_id stmt = ap_prof_intern(p, text, tn);
    ap_str_id route = a[4] == Py_None ? 0 : apext_session_intern(p, a[4]);
    ap_frame_id site;
    uint32_t line;
    if (stmt == AP_NONE || route == AP_NONE || call_site(&o->sess, &site, &line) != 0 ||
        ap_prof_query_add(p, (unsigned)kind, stmt, route, site, line, ns, rows, request) != 0) {
        apext_session_fail(&o->sess, "query");
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

PyMethodDef apext_queries_methods[] = {
    {"record_query", (PyCFunction)(void (*)(void))record_query, METH_FASTCALL,
     "record_query(statement, ns, rows, request, route, kind=0) -> bool\n\nOne database "
     "statement (kind 0; an outgoing HTTP call: kind 1, its label as given) "
     "that took ns and reported rows, in request (a serial, 0 for none) of route (None "
     "outside requests), into the running tracer's profile: its normalised text and the "
     "app's calling line. False when no tracer records this thread."},
    {NULL, NULL, 0, NULL},
};

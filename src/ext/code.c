/* code.c -- per-code records: the co_extra index, its per-producer record array, the code facts every producer shares. */
#include "code.h"

#include "ap_err.h"

Py_ssize_t apext_code_index = -1;
static void (*rec_destructor[APEXT_NPRODUCERS])(void *);

static void free_rec(int p, void *rec) {
    if (rec == NULL)
        return;
    apext_code_info_clear(rec);
    if (rec_destructor[p] != NULL)
        rec_destructor[p](rec);
    else
        PyMem_RawFree(rec);
}

/* Called by CPython when a code object with our co_extra dies. */
static void code_extra_free(void *x) {
    apext_code_extra *e = x;
    if (e == NULL)
        return;
    for (int p = 0; p < APEXT_NPRODUCERS; p++)
        free_rec(p, e->rec[p]);
    PyMem_RawFree(e);
}

int apext_code_init(apext_producer p, void (*destructor)(void *rec)) {
    rec_destructor[p] = destructor;
    if (apext_code_index >= 0)
        return 0;
    apext_code_index = apext_compat_extra_index(code_extra_free);
    if (apext_code_index < 0) {
        PyErr_SetString(PyExc_RuntimeError, "apiprof: no co_extra slot is free");
        return -1;
    }
    return 0;
}

int apext_code_set(PyObject *code, apext_producer p, void *rec) {
    void *extra = NULL;
    if (apext_compat_extra_get(code, apext_code_index, &extra) < 0) {
        PyErr_Clear();
        return ap_err_set(AP_EINVAL, "co_extra is not readable");
    }
    apext_code_extra *e = extra;
    if (e == NULL) {
        e = PyMem_RawCalloc(1, sizeof *e);
        if (e == NULL)
            return ap_err_set(AP_ENOMEM, "out of memory");
        if (apext_compat_extra_set(code, apext_code_index, e) < 0) {
            PyErr_Clear();
            PyMem_RawFree(e);
            return ap_err_set(AP_ENOMEM, "co_extra is not writable");
        }
    }
    if (e->rec[p] != rec)
        free_rec(p, e->rec[p]);
    e->rec[p] = rec;
    return 0;
}

void *apext_code_new(PyObject *code, apext_producer p, size_t size) {
    void *rec = PyMem_RawCalloc(1, size);
    if (rec == NULL) {
        ap_err_set(AP_ENOMEM, "out of memory");
        return NULL;
    }
    if (apext_code_set(code, p, rec) < 0) {
        PyMem_RawFree(rec);
        return NULL;
    }
    return rec;
}

ap_frame_id apext_code_frame(ap_prof *p, PyCodeObject *co, int lineno) {
    ap_frame f = {apext_session_intern(p, co->co_name), apext_session_intern(p, co->co_qualname),
                  apext_session_intern(p, co->co_filename), (uint32_t)co->co_firstlineno,
                  (uint32_t)lineno, AP_FRAME_PYTHON};
    if (f.name == AP_NONE || f.qualname == AP_NONE || f.file == AP_NONE)
        return AP_NONE;
    return ap_prof_frame_intern(p, &f);
}

#if !AP_MONITORING
static int op_resume = -1, op_yield = -1;

int apext_code_opcodes_init(void) {
    if (op_resume >= 0)
        return 0;
    PyObject *opcode = PyImport_ImportModule("opcode");
    PyObject *opmap = opcode ? PyObject_GetAttrString(opcode, "opmap") : NULL;
    PyObject *r = opmap ? PyDict_GetItemString(opmap, "RESUME") : NULL;
    PyObject *y = opmap ? PyDict_GetItemString(opmap, "YIELD_VALUE") : NULL;
    if (r != NULL && y != NULL) {
        op_resume = (int)PyLong_AsLong(r);
        op_yield = (int)PyLong_AsLong(y);
    }
    Py_XDECREF(opmap);
    Py_XDECREF(opcode);
    if (op_resume < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "apiprof: opcode.opmap has no RESUME");
        return -1;
    }
    return 0;
}

/* The byte offset of the first RESUME in code bytes, or -1. */
static int first_resume(PyObject *bytes) {
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    for (Py_ssize_t i = 0; i + 1 < n; i += 2)
        if (b[i] == op_resume)
            return (int)i;
    return -1;
}

int apext_code_is_yield_at(PyObject *bytes, int lasti) {
    return lasti >= 0 && lasti < PyBytes_GET_SIZE(bytes) &&
           (unsigned char)PyBytes_AS_STRING(bytes)[lasti] == op_yield;
}
#endif

int apext_code_info_fill(apext_code_info *ci, const apext_session *s, PyCodeObject *co) {
    ci->serial = 0;
    ci->frame = apext_code_frame(s->prof, co, 0);
    if (ci->frame == AP_NONE)
        return -1;
    ci->genlike = (co->co_flags & APEXT_CO_GENLIKE) != 0;
    ci->awaits = (co->co_flags & APEXT_CO_AWAITS) != 0;
    ci->start_lasti = -1;
#if !AP_MONITORING
    if (ci->genlike) {
        if (op_resume < 0 && apext_code_opcodes_init() < 0) {
            PyErr_Clear();
            return ap_err_set(AP_EINVAL, "cannot read the opcode table");
        }
        if (ci->code_bytes == NULL && (ci->code_bytes = PyCode_GetCode(co)) == NULL) {
            PyErr_Clear();
            return ap_err_set(AP_ENOMEM, "cannot read co_code");
        }
        ci->start_lasti = first_resume(ci->code_bytes);
    }
#endif
    ci->serial = s->serial;
    return 0;
}

void apext_code_info_clear(apext_code_info *ci) {
    Py_CLEAR(ci->code_bytes);
}

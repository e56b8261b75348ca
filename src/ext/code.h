/* code.h -- per-code records: one co_extra index holding a record per producer, and what every producer knows about a code object (frame, generator kind, 3.11 yield decoding). */
#ifndef APEXT_CODE_H
#define APEXT_CODE_H

#include "session.h"

#define APEXT_CO_GENLIKE (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE)
#define APEXT_CO_AWAITS (CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE)

/* ---- the co_extra record ------------------------------------------------------------
 * The extension takes one co_extra index.  Its value is a small array with
 * one record pointer per producer, so producers keep their per-code data
 * side by side; every record starts with an apext_code_info.  A record is owned by the code object once set and freed
 * with it by the destructor its producer registered.  Protected by the
 * GIL. */
typedef struct apext_code_extra {
    void *rec[APEXT_NPRODUCERS];
} apext_code_extra;

/* The co_extra index, -1 before apext_code_init() succeeded. */
extern Py_ssize_t apext_code_index;

/* Take the co_extra index (once per process) and register the destructor of
 * producer p's records.  A record starts with an apext_code_info, which is
 * cleared first; then destructor runs (NULL: the record is freed with
 * PyMem_RawFree).  Returns 0, or -1 with a Python exception set (no index
 * is free). */
int apext_code_init(apext_producer p, void (*destructor)(void *rec));

/* The record of producer p for code (a code object), or NULL if it has
 * none.  For the hot path: a few loads, no call.  Can't fail;
 * apext_code_index must be set. */
static inline void *apext_code_get(PyObject *code, apext_producer p) {
    void *extra = apext_compat_extra_fast(code, apext_code_index);
    return extra != NULL ? ((apext_code_extra *)extra)->rec[p] : NULL;
}

/* Set the record of producer p for code to rec (ownership passes to the
 * code object; a previous record is freed).  Returns 0; on error -1 with an
 * ap_err (AP_ENOMEM) and no Python exception, rec still the caller's. */
int apext_code_set(PyObject *code, apext_producer p, void *rec);

/* A zeroed record of size bytes, set as producer p's record of code.
 * Returns it, or NULL with an ap_err and no Python exception. */
void *apext_code_new(PyObject *code, apext_producer p, size_t size);

/* ---- what every producer knows about a code object -----------------------------------
 * Producers start their record with this. */
typedef struct apext_code_info {
    uint64_t serial;        /* session the record was filled for; 0: not filled */
    ap_frame_id frame;      /* the function's frame in that session's profile */
    uint8_t genlike;        /* generator, coroutine or async generator */
    uint8_t awaits;         /* coroutine or async generator: suspensions are awaits */
    int start_lasti;        /* 3.11: byte offset of the RESUME that starts the code; else -1 */
    PyObject *code_bytes;   /* 3.11, generator-like code: co_code, to tell yields apart */
} apext_code_info;

/* The frame of line lineno (0: the function) of co in p.  Returns its id, or
 * AP_NONE with an ap_err (AP_ENOMEM).  No Python exception is left. */
ap_frame_id apext_code_frame(ap_prof *p, PyCodeObject *co, int lineno);

/* Fill ci for co in session s (frame, kinds, 3.11 RESUME offset).  0, or -1
 * with an ap_err and no Python exception (ci->serial then 0). */
int apext_code_info_fill(apext_code_info *ci, const apext_session *s, PyCodeObject *co);

/* Release what ci holds (the 3.11 code bytes).  Can't fail. */
void apext_code_info_clear(apext_code_info *ci);

#if !AP_MONITORING
/* Read the RESUME and YIELD_VALUE opcodes (once).  0, or -1 with an
 * exception set. */
int apext_code_opcodes_init(void);

/* Whether the instruction at lasti of code bytes is YIELD_VALUE.  Can't
 * fail. */
int apext_code_is_yield_at(PyObject *bytes, int lasti);

/* 3.11 "call" event of frame: a start (1) or a resume of a generator-like
 * frame (0).  Can't fail. */
static inline int apext_code_is_start(const apext_code_info *ci, PyFrameObject *frame) {
    return !ci->genlike || PyFrame_GetLasti(frame) == ci->start_lasti;
}

/* 3.11 "return" event of frame with value arg: a yield (1) or a return or
 * unwind (0).  Can't fail. */
static inline int apext_code_is_yield(const apext_code_info *ci, PyFrameObject *frame,
                                      PyObject *arg) {
    return ci->genlike && arg != NULL &&
           apext_code_is_yield_at(ci->code_bytes, PyFrame_GetLasti(frame));
}
#endif

#endif /* APEXT_CODE_H */

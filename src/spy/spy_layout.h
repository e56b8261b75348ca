/* spy_layout.h -- where the fields apiprof-spy reads are in each supported CPython (3.11-3.15). */
#ifndef SPY_LAYOUT_H
#define SPY_LAYOUT_H

#include <stdint.h>

/* Byte offsets (and a few constants) of one CPython minor version, measured from its
 * internal headers by spy_layout_probe.c (scripts/spy-layout.sh writes the table).
 * Prefixes: rt_ _PyRuntimeState, is_ PyInterpreterState, gil_ struct _gil_runtime_state,
 * ts_ PyThreadState, cf_ _PyCFrame (3.11, 3.12), fr_ _PyInterpreterFrame, co_
 * PyCodeObject, bytes_ PyBytesObject, u_ PyASCIIObject / PyCompactUnicodeObject. */
typedef struct spy_layout {
    uint32_t minor;                 /* 11 for 3.11 ... */
    uint32_t rt_interpreters_head;  /* PyInterpreterState * of the newest interpreter */
    uint32_t is_threads_head;       /* PyThreadState * of the newest thread */
    uint32_t rt_gil;                /* 3.11: the GIL struct inside _PyRuntime (else 0) */
    uint32_t is_gil_ptr;            /* 3.12+: pointer to the GIL struct in the interpreter */
    uint32_t gil_locked;            /* int: the GIL is held */
    uint32_t gil_last_holder;       /* PyThreadState *: holder while locked */
    uint32_t ts_next;               /* PyThreadState *: next (older) thread */
    uint32_t ts_thread_id;          /* unsigned long: pthread_t */
    uint32_t ts_native_thread_id;   /* unsigned long: the kernel's thread id */
    uint32_t ts_frame;              /* 3.11/3.12: _PyCFrame *; 3.13+: _PyInterpreterFrame * */
    uint32_t cf_current_frame;      /* 3.11/3.12: _PyInterpreterFrame * in the _PyCFrame */
    uint32_t has_cframe;            /* 1: ts_frame is a _PyCFrame to go through */
    uint32_t fr_code;               /* code object (3.14+: a tagged stack reference) */
    uint32_t fr_instr;              /* 3.11/3.12: last instruction; 3.13+: current one */
    uint32_t fr_previous;           /* the caller's _PyInterpreterFrame * */
    uint32_t fr_owner;              /* char: who owns the frame */
    uint32_t owner_cstack;          /* owner value of C-stack entry frames (255: none) */
    uint32_t owner_interpreter;     /* owner value of interpreter entry frames (255: none) */
    uint32_t owner_generator;       /* owner value of a coroutine's or generator's frame */
    uint32_t code_tagged;           /* 1: fr_code has tag bits to clear */
    /* Coroutines and generators (gen_ PyGenObject): the _PyInterpreterFrame inside the
     * object, its state byte (int8_t), the state of one executing now, and the states of
     * one suspended in an await (gen_yf_lo..gen_yf_hi, compared as int8_t); before 3.13
     * that state also needs the next instruction to be op_resume or op_resume_alt with
     * an argument of 2 or more (0: no such check). */
    uint32_t gen_iframe, gen_frame_state, gen_executing, gen_yf_lo, gen_yf_hi;
    uint32_t op_resume, op_resume_alt;
    /* A frame's value stack: fr_stacktop is an int index into localsplus (3.11-3.13), or
     * with fr_stack_is_ptr a pointer just past the top (3.14+, tagged references). */
    uint32_t fr_stacktop, fr_stack_is_ptr, fr_localsplus;
    uint32_t type_name;             /* PyTypeObject.tp_name, a char * */
    uint32_t ts_context;            /* PyThreadState.context: the context it runs in */
    uint32_t ctx_vars;              /* PyContext.ctx_vars: its variables (shared by copies) */
    uint32_t set_mask, set_table;   /* PySetObject: its table's size - 1, the table */
    uint32_t wr_object;             /* PyWeakReference: the object (None once dead) */
    uint32_t task_coro, task_name;  /* _asyncio.Task: its coroutine, its name */
    uint32_t asend_gen, athrow_gen; /* async_generator_asend / _athrow: the generator */
    uint32_t is_modules;            /* PyInterpreterState: sys.modules (a dict) */
    uint32_t mod_dict;              /* PyModuleObject: its dict */
    uint32_t dict_keys, dict_values;                 /* PyDictObject */
    uint32_t dk_log2_index_bytes, dk_kind, dk_nentries, dk_indices;   /* PyDictKeysObject */
    uint32_t dv_values, dv_valid;   /* PyDictValues: the values, 3.13+ whether valid */
    uint32_t type_basicsize;        /* PyTypeObject.tp_basicsize */
    uint32_t co_name, co_qualname, co_filename;   /* PyUnicodeObject * */
    uint32_t co_firstlineno;        /* int */
    uint32_t co_linetable;          /* PyBytesObject *: the location table */
    uint32_t co_code_adaptive;      /* first code unit, inside the code object */
    uint32_t bytes_size, bytes_sval;              /* PyBytesObject length and data */
    uint32_t u_length, u_state;     /* PyASCIIObject: length (code points), state bits */
    uint32_t u_ascii_size;          /* data of compact ASCII strings starts here */
    uint32_t u_compact_size;        /* data of other compact strings starts here */
    uint32_t u_kind_bit, u_compact_bit, u_ascii_bit;  /* positions in the state word */
    /* 3.13+: size of _Py_DebugOffsets and where each field above is in it (0: absent).
     * A target's own _Py_DebugOffsets wins over the table, so a patch release that
     * moves a field is still read right. */
    uint32_t dbg_size;
    uint32_t dbg_rt_interpreters_head, dbg_is_threads_head, dbg_ts_next, dbg_ts_thread_id,
        dbg_ts_native_thread_id, dbg_ts_frame, dbg_fr_previous, dbg_fr_code, dbg_fr_instr,
        dbg_fr_owner, dbg_co_name, dbg_co_qualname, dbg_co_filename, dbg_co_firstlineno,
        dbg_co_linetable, dbg_co_code_adaptive, dbg_bytes_size, dbg_bytes_sval, dbg_u_length,
        dbg_u_state, dbg_u_ascii_size;
} spy_layout;

/* The layout of CPython 3.minor, or NULL when that version is not supported.
 * Can't fail. */
const spy_layout *spy_layout_get(unsigned minor);

/* Lowest and highest supported minor versions (3.x). */
#define SPY_MINOR_MIN 11
#define SPY_MINOR_MAX 15

#endif /* SPY_LAYOUT_H */

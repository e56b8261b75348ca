/* spy_layout_probe.c -- built against one CPython's internal headers, prints that version's row of spy_layout_table.h. */
/* Not part of the build: scripts/spy-layout.sh compiles and runs it once per version.  The
 * structures it measures are the interpreter's own; nothing else reads them. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "internal/pycore_code.h"
#include "internal/pycore_frame.h"
#include "internal/pycore_genobject.h"
#include "internal/pycore_context.h"
#include "internal/pycore_dict.h"
#include "internal/pycore_moduleobject.h"
#if PY_VERSION_HEX < 0x030d0000
#include "opcode.h"
#endif
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"
#if PY_VERSION_HEX >= 0x030e0000
#include "internal/pycore_debug_offsets.h"
#include "internal/pycore_interpframe_structs.h"
#endif
#if PY_VERSION_HEX < 0x030d0000
#include "internal/pycore_gil.h"
#endif

#define F(name, val) printf("    ." #name " = %lu,\n", (unsigned long)(val))

/* The bit where the unicode state bitfield `field` starts, found by setting it to 1. */
#define STATE_BIT(field)                                                                   \
    do {                                                                                   \
        PyASCIIObject a;                                                                   \
        memset(&a, 0, sizeof a);                                                           \
        a.state.field = 1;                                                                 \
        unsigned int w;                                                                    \
        memcpy(&w, &a.state, sizeof w);                                                    \
        printf("    .u_" #field "_bit = %d,\n", __builtin_ctz(w));                          \
    } while (0)

int main(void) {
    printf("{   /* %s */\n", PY_VERSION);
    F(minor, PY_MINOR_VERSION);
    F(rt_interpreters_head, offsetof(_PyRuntimeState, interpreters.head));
    F(is_threads_head, offsetof(PyInterpreterState, threads.head));
#if PY_VERSION_HEX < 0x030c0000
    F(rt_gil, offsetof(_PyRuntimeState, ceval.gil));
    F(is_gil_ptr, 0);
#else
    F(rt_gil, 0);
    F(is_gil_ptr, offsetof(PyInterpreterState, ceval.gil));
#endif
    F(gil_locked, offsetof(struct _gil_runtime_state, locked));
    F(gil_last_holder, offsetof(struct _gil_runtime_state, last_holder));
    F(ts_next, offsetof(PyThreadState, next));
    F(ts_thread_id, offsetof(PyThreadState, thread_id));
    F(ts_native_thread_id, offsetof(PyThreadState, native_thread_id));
#if PY_VERSION_HEX < 0x030d0000
    F(ts_frame, offsetof(PyThreadState, cframe));
    F(cf_current_frame, offsetof(_PyCFrame, current_frame));
    F(has_cframe, 1);
    F(fr_code, offsetof(_PyInterpreterFrame, f_code));
    F(fr_instr, offsetof(_PyInterpreterFrame, prev_instr));
#else
    F(ts_frame, offsetof(PyThreadState, current_frame));
    F(cf_current_frame, 0);
    F(has_cframe, 0);
    F(fr_code, offsetof(_PyInterpreterFrame, f_executable));
    F(fr_instr, offsetof(_PyInterpreterFrame, instr_ptr));
#endif
    F(fr_previous, offsetof(_PyInterpreterFrame, previous));
    F(fr_owner, offsetof(_PyInterpreterFrame, owner));
#if PY_VERSION_HEX >= 0x030c0000 && PY_VERSION_HEX < 0x030f0000
    F(owner_cstack, FRAME_OWNED_BY_CSTACK);
#else
    F(owner_cstack, 255);
#endif
    F(owner_generator, FRAME_OWNED_BY_GENERATOR);
#if PY_VERSION_HEX >= 0x030e0000
    F(owner_interpreter, FRAME_OWNED_BY_INTERPRETER);
    F(code_tagged, 1);
#else
    F(owner_interpreter, 255);
    F(code_tagged, 0);
#endif
    /* coroutines and generators: the frame inside the object, its state, its stack */
    F(gen_iframe, offsetof(PyGenObject, gi_iframe));
    F(gen_frame_state, offsetof(PyGenObject, gi_frame_state));
    F(gen_executing, (uint8_t)FRAME_EXECUTING);
#if PY_VERSION_HEX < 0x030d0000
    /* suspended in an await: FRAME_SUSPENDED and the next instruction a RESUME whose
     * argument is 2 or more */
    F(gen_yf_lo, (uint8_t)FRAME_SUSPENDED);
    F(gen_yf_hi, (uint8_t)FRAME_SUSPENDED);
    F(op_resume, RESUME);
#if PY_VERSION_HEX < 0x030c0000
    F(op_resume_alt, RESUME_QUICK);
#else
    F(op_resume_alt, INSTRUMENTED_RESUME);
#endif
#else
    F(gen_yf_lo, (uint8_t)FRAME_SUSPENDED_YIELD_FROM);
#if PY_VERSION_HEX < 0x030f0000
    F(gen_yf_hi, (uint8_t)FRAME_SUSPENDED_YIELD_FROM);
#else
    F(gen_yf_hi, (uint8_t)FRAME_SUSPENDED_YIELD_FROM_LOCKED);
#endif
    F(op_resume, 0);
    F(op_resume_alt, 0);
#endif
#if PY_VERSION_HEX < 0x030e0000
    F(fr_stacktop, offsetof(_PyInterpreterFrame, stacktop));
    F(fr_stack_is_ptr, 0);
#else
    F(fr_stacktop, offsetof(_PyInterpreterFrame, stackpointer));
    F(fr_stack_is_ptr, 1);
#endif
    F(fr_localsplus, offsetof(_PyInterpreterFrame, localsplus));
    F(type_name, offsetof(PyTypeObject, tp_name));
    /* a thread's current context and the variables (a HAMT) a context holds */
    F(ts_context, offsetof(PyThreadState, context));
    F(ctx_vars, offsetof(PyContext, ctx_vars));
    /* a set's hash table (mask + 1 entries of {key, hash}), a weak reference's object,
     * and where an _asyncio.Task keeps its coroutine and name: TaskObj is private to
     * _asynciomodule.c, so spy-layout.sh finds those in a live task of this version */
    F(set_mask, offsetof(PySetObject, mask));
    F(set_table, offsetof(PySetObject, table));
    F(wr_object, offsetof(PyWeakReference, wr_object));
    F(task_coro, TASK_CORO);
    F(task_name, TASK_NAME);
    F(asend_gen, ASEND_GEN);
    F(athrow_gen, ATHROW_GEN);
    /* finding a module's attribute from outside: sys.modules, a module's dict, a dict's
     * keys and entries, an instance's attribute values (3.11: a values pointer before
     * the object; 3.12: the same, tagged, in the slot of its dict; 3.13+: inline after
     * the object, tp_basicsize on) */
#if PY_VERSION_HEX < 0x030c0000
    F(is_modules, offsetof(PyInterpreterState, modules));
#else
    F(is_modules, offsetof(PyInterpreterState, imports.modules));
#endif
    F(mod_dict, offsetof(PyModuleObject, md_dict));
    F(dict_keys, offsetof(PyDictObject, ma_keys));
    F(dict_values, offsetof(PyDictObject, ma_values));
    F(dk_log2_index_bytes, offsetof(PyDictKeysObject, dk_log2_index_bytes));
    F(dk_kind, offsetof(PyDictKeysObject, dk_kind));
    F(dk_nentries, offsetof(PyDictKeysObject, dk_nentries));
    F(dk_indices, offsetof(PyDictKeysObject, dk_indices));
    F(dv_values, offsetof(PyDictValues, values));
#if PY_VERSION_HEX >= 0x030d0000
    F(dv_valid, offsetof(PyDictValues, valid));
#else
    F(dv_valid, 0);
#endif
    F(type_basicsize, offsetof(PyTypeObject, tp_basicsize));
    F(co_name, offsetof(PyCodeObject, co_name));
    F(co_qualname, offsetof(PyCodeObject, co_qualname));
    F(co_filename, offsetof(PyCodeObject, co_filename));
    F(co_firstlineno, offsetof(PyCodeObject, co_firstlineno));
    F(co_linetable, offsetof(PyCodeObject, co_linetable));
    F(co_code_adaptive, offsetof(PyCodeObject, co_code_adaptive));
    F(bytes_size, offsetof(PyVarObject, ob_size));
    F(bytes_sval, offsetof(PyBytesObject, ob_sval));
    F(u_length, offsetof(PyASCIIObject, length));
    F(u_state, offsetof(PyASCIIObject, state));
    F(u_ascii_size, sizeof(PyASCIIObject));
    F(u_compact_size, sizeof(PyCompactUnicodeObject));
    STATE_BIT(kind);
    STATE_BIT(compact);
    STATE_BIT(ascii);
#if PY_VERSION_HEX >= 0x030d0000
    /* Where each field above is in _Py_DebugOffsets (0: not there). */
    F(dbg_size, sizeof(_Py_DebugOffsets));
#define D(name, path) F(dbg_##name, offsetof(_Py_DebugOffsets, path))
    D(rt_interpreters_head, runtime_state.interpreters_head);
    D(is_threads_head, interpreter_state.threads_head);
    D(ts_next, thread_state.next);
    D(ts_thread_id, thread_state.thread_id);
    D(ts_native_thread_id, thread_state.native_thread_id);
    D(ts_frame, thread_state.current_frame);
    D(fr_previous, interpreter_frame.previous);
    D(fr_code, interpreter_frame.executable);
    D(fr_instr, interpreter_frame.instr_ptr);
    D(fr_owner, interpreter_frame.owner);
    D(co_name, code_object.name);
    D(co_qualname, code_object.qualname);
    D(co_filename, code_object.filename);
    D(co_firstlineno, code_object.firstlineno);
    D(co_linetable, code_object.linetable);
    D(co_code_adaptive, code_object.co_code_adaptive);
    D(bytes_size, bytes_object.ob_size);
    D(bytes_sval, bytes_object.ob_sval);
    D(u_length, unicode_object.length);
    D(u_state, unicode_object.state);
    D(u_ascii_size, unicode_object.asciiobject_size);
#endif
    printf("},\n");
    return 0;
}

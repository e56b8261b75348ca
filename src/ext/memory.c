/* memory.c -- apiprof._core.MemoryTracker: the allocation hook over PyMem's RAW, MEM and OBJ domains, every block or byte-sampled, charged to the running tracer's node and line. */
#include "stack.h"
#include "memory.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ap_err.h"
#include "ap_map.h"
#include "ap_prof.h"
#include "ap_routes.h"
#include "ap_unrel.h"
#include "spy_layout.h"

/* ---- what it records ------------------------------------------------------------------
 * The tracker wraps the three allocator domains (PyMem_SetAllocator) while it
 * runs and writes AP_M_ALLOC_BYTES, AP_M_ALLOC_COUNT, AP_M_LIVE_BYTES and
 * AP_M_PEAK_BYTES into the profile of the function tracer it was given
 * (which must run: the tracker reads its per-thread shadow stack, it keeps
 * none of its own).  An allocation is charged to:
 *   - the line node of the running Python frame (a child of the tracer's top
 *     node, frame = the function's frame with lineno) when the top of the
 *     tracer's stack is that frame's function;
 *   - else the top node itself (a builtin the tracer records, or the nearest
 *     traced caller of code the tracer filters out);
 *   - else (a thread the tracer has not seen yet, or no GIL) one of two nodes
 *     of the tree labelled thread="<outside the tracer>": "<no traced frame>"
 *     and "<without the GIL>".
 * Modes: full (every block: exact counts and bytes, every live block in the
 * live map) and sampled (a Poisson process over the bytes allocated by each
 * thread, mean interval `rate`: a block of n bytes is sampled with
 * probability p = 1 - exp(-n / rate) and counted as 1/p blocks of n/p bytes,
 * so every sum is an unbiased estimate; only sampled blocks are in the live
 * map).  A free removes the block from the live map and its bytes (weighted
 * in sampled mode) from the live bytes of the node it was charged to.
 *
 * Given None instead of a tracer (the ASGI middleware's memory=True), the
 * tracker writes no profile: it charges each allocation (sampled, as a rule)
 * to the HTTP request running it, the RouteRequest that
 * apext_memory_request_var holds in the allocating thread's context
 * (routes.c sets it when the request starts, so the thread-pool work of a
 * sync route, which runs in a copy of the request's context, is the
 * request's too).  A request's owner record (below) sums what it allocated
 * and what of it is still alive; when the request ends, both go to its
 * route's statistics (ap_routes_add_memory), and each later free of one of
 * its blocks leaves the route's live bytes, so a route's live bytes grow
 * with the requests it served only when it keeps what they allocated.
 * Allocations outside requests are not tracked.
 *
 * Given a LineTracer instead (apiprof lines --memory), the tracker charges
 * the line running in the innermost target frame of the thread (its callees'
 * allocations included, as its time is; apext_lines_charge_node), and also
 * charges each free of a tracked block to that line's AP_M_FREED_BYTES, so
 * that a line's net bytes are alloc - freed.  Outside target frames it
 * charges "<no traced frame>".
 *
 * ---- concurrency contract ---------------------------------------------------------------
 * MEM and OBJ hooks run with the GIL held.  RAW hooks may run without it
 * (PyMem_RawMalloc is documented as callable without the GIL).  A RAW hook
 * asks PyGILState_Check(): with the GIL held it is handled as the others;
 * without it, it touches no tree, thread state, code record or Python
 * object: it charges the "<without the GIL>" node, made under the GIL at
 * start() and never moved, and updates the live map.  The live map, the
 * block slab and every memory counter of every node are written only under
 * mem_lock (a spin lock, uncontended while the GIL serialises the others),
 * so a free without the GIL of a block allocated under it is exact too.
 * Counters are read (reports) under the GIL without the lock: a reader may
 * see a value one allocation old.  A hook in flight is counted in
 * mem_inflight; stop() restores the allocators, then waits for it to reach
 * zero before it releases anything a hook could read.
 *
 * Reentrancy: the tracker's own work can allocate (a new tree node or line
 * frame uses malloc; nothing here calls PyMem, but a Python-level callee of
 * a future change could); a thread-local guard makes any allocation made
 * inside a hook go straight to the wrapped allocator. */

#define PRODUCER APEXT_PRODUCER_MEMORY
#define LINE_CACHE 256   /* direct-mapped (code, instruction) -> line frame */
#define DEFAULT_RATE (512 * 1024)
#define FILTER_WORDS 1024   /* 65,536 bits */

typedef struct mem_domain {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx orig;   /* the allocator wrapped while running */
} mem_domain;

/* The memory of one HTTP request (requests mode): what it allocated, what
 * of that is alive, and its route's statistics once it ended (NULL before,
 * or when its route table is gone).  Held by the request until it ends and
 * by each of its tracked blocks; freed at the last release.  Every field
 * under mem_lock. */
struct apext_mem_owner {
    ap_route_stat *stat;
    const ap_routes *table;   /* the table of stat */
    uint64_t alloc, live;
    uint64_t refs;
};

/* What the context variable holds: a capsule of a box that points at the
 * running request's owner until it ends. */
#define BOX_NAME "apiprof.request_memory"
typedef struct owner_box {
    apext_mem_owner *owner;
} owner_box;

/* A tracked live block: the node it was charged to (NULL in requests mode),
 * the request that allocated it (requests mode, else NULL), its (weighted)
 * bytes and its size (MEM_OBJ set: allocated in the OBJ domain, so a Python
 * object); free slots are chained through next. */
typedef struct mem_block {
    ap_node *node;
    apext_mem_owner *owner;
    uint64_t bytes;
    uint32_t next;
    uint32_t size;
} mem_block;

#define MEM_OBJ 0x80000000u
#define MEM_SIZE_MAX 0x7fffffffu

typedef struct line_slot {
    const void *code;
    int lasti;
    ap_frame_id func, line;   /* func: the function frame it was made for */
} line_slot;

typedef struct MemoryTrackerObject {
    PyObject_HEAD
    PyObject *tracer;       /* the Tracer (or LineTracer) whose profile is written; strong */
    int line_tracer;        /* tracer is a LineTracer: charge its running line, frees too */
    int requests;           /* no tracer: charge the running HTTP request (no profile) */
    int walk;               /* a Tracer with calls=False: walk the frames of each block */
    int sampled;
    uint64_t rate;          /* sampled: mean bytes between samples */
    uint64_t seed;          /* sampled: seed of every thread's generator (0: from the clock) */
    uint64_t run_seed;      /* the seed of this run: seed, or the clock's when it is 0 */
    int running;
    int paused;             /* stop() reads the live objects: new blocks are not tracked */
    uint64_t generation;    /* changes at every start: threads re-seed */
    ap_prof *prof;          /* the tracer's profile while running; borrowed */
    ap_node *no_frame, *no_gil;
    /* Under mem_lock: */
    ap_map live;            /* block address -> index into blocks */
    mem_block *blocks;
    uint32_t nblocks, cap, free_head;
    uint64_t live_total, peak_total;   /* traced live bytes now and at most */
    uint64_t lost;          /* blocks not tracked (out of memory) */
    /* Sampled: a bit per address hash, set when a block is tracked and cleared
     * only at start(), so that a free of an unsampled block (nearly all of
     * them) is decided without the lock or the map.  Set under mem_lock,
     * read without it: a free never races with its own block's allocation. */
    uint64_t filter[FILTER_WORDS];
    /* Under the GIL: */
    line_slot lines[LINE_CACHE];
    const ap_node *tree_of_top;        /* the node the cached tree holds */
    ap_tree *tree_cache;
} MemoryTrackerObject;

static mem_domain domains[3] = {
    {PYMEM_DOMAIN_RAW, {0}}, {PYMEM_DOMAIN_MEM, {0}}, {PYMEM_DOMAIN_OBJ, {0}}};
static MemoryTrackerObject *mem_running;   /* written under the GIL, read by hooks */
static atomic_flag mem_lock = ATOMIC_FLAG_INIT;
static atomic_int mem_inflight;
static APEXT_TLS int mem_guard;

/* Per thread, sampled mode: bytes left before the next sample and the
 * generator's state, valid for generation gen. */
typedef struct mem_sampler {
    int64_t left;
    uint64_t rng, gen;
} mem_sampler;
static APEXT_TLS mem_sampler tls_sampler;
static APEXT_TLS uint64_t tls_thread_no;   /* this thread's number for seeding, 0: none yet */
static atomic_uint_fast64_t mem_threads;
PyObject *apext_memory_request_var;   /* contextvars.ContextVar, made at init */

static inline void lock(void) {
    while (atomic_flag_test_and_set_explicit(&mem_lock, memory_order_acquire))
        ;
}

static inline void unlock(void) {
    atomic_flag_clear_explicit(&mem_lock, memory_order_release);
}

/* ---- sampling ------------------------------------------------------------------------ */

static inline uint64_t rng_next(uint64_t *s) {
    *s += 0x9e3779b97f4a7c15u;
    return ap_hash_u64(*s);
}

/* Uniform in (0, 1]. */
static inline double rng_unit(uint64_t *s) {
    return ((double)(rng_next(s) >> 11) + 1.0) / 9007199254740992.0;
}

static inline int64_t next_interval(mem_sampler *t, uint64_t rate) {
    double x = -log(rng_unit(&t->rng)) * (double)rate;
    return x < 1.0 ? 1 : x > 9e18 ? INT64_MAX : (int64_t)x;
}

/* w rounded up or down at random with the odds that keep its mean. */
static inline uint64_t round_unbiased(mem_sampler *t, double w) {
    double f = floor(w);
    return (uint64_t)f + (rng_unit(&t->rng) <= w - f ? 1u : 0u);
}

/* Whether a block of size bytes is sampled; *bytes and *count get its
 * weights.  The per-thread sampler is re-seeded at a new run. */
static inline int sample(MemoryTrackerObject *m, size_t size, uint64_t *bytes, uint64_t *count) {
    mem_sampler *t = &tls_sampler;
    if (t->gen != m->generation) {
        t->gen = m->generation;
        if (tls_thread_no == 0)
            tls_thread_no = atomic_fetch_add_explicit(&mem_threads, 1, memory_order_relaxed) + 1;
        t->rng = ap_hash_u64(m->run_seed ^ (tls_thread_no * 0x2545f4914f6cdd1du));
        t->left = next_interval(t, m->rate);
    }
    t->left -= (int64_t)size;
    if (t->left > 0)
        return 0;
    t->left = next_interval(t, m->rate);
    double p = -expm1(-(double)size / (double)m->rate);
    if (p <= 0.0)
        p = 1e-300;
    *bytes = round_unbiased(t, (double)size / p);
    *count = round_unbiased(t, 1.0 / p);
    return 1;
}

/* ---- the running frame ------------------------------------------------------------
 * The code object and instruction index of the calling thread's running
 * interpreter frame (the GIL is held); 0 when there is none. */
#if PY_VERSION_HEX >= 0x030C0000
static inline int running_code(const void **code, int *lasti) {
    PyThreadState *ts = apext_compat_tstate();
    if (ts == NULL)
        return 0;
#if PY_VERSION_HEX >= 0x030D0000
    struct _PyInterpreterFrame *f = ts->current_frame;
#else
    struct _PyInterpreterFrame *f = ts->cframe != NULL ? ts->cframe->current_frame : NULL;
#endif
    if (f == NULL)
        return 0;
    PyObject *co = PyUnstable_InterpreterFrame_GetCode(f);   /* new reference */
    *code = co;
    Py_XDECREF(co);   /* the frame keeps it alive */
    if (co == NULL || !PyCode_Check(co))
        return 0;
    *lasti = PyUnstable_InterpreterFrame_GetLasti(f);
    return 1;
}

static inline int line_of(const void *code, int lasti) {
    return PyCode_Addr2Line((PyCodeObject *)code, lasti);
}
#else
/* 3.11's _PyInterpreterFrame (Include/internal/pycore_frame.h), the fields
 * read here; unchanged through 3.11.x. */
typedef struct frame311 {
    PyObject *f_func, *f_globals, *f_builtins, *f_locals;
    PyCodeObject *f_code;
    PyObject *frame_obj;
    struct frame311 *previous;
    _Py_CODEUNIT *prev_instr;
} frame311;

static inline int running_code(const void **code, int *lasti) {
    PyThreadState *ts = apext_compat_tstate();
    if (ts == NULL || ts->cframe == NULL || ts->cframe->current_frame == NULL)
        return 0;
    const frame311 *f = (const frame311 *)ts->cframe->current_frame;
    if (f->f_code == NULL)
        return 0;
    *code = f->f_code;
    *lasti = (int)(f->prev_instr - _PyCode_CODE(f->f_code)) * (int)sizeof(_Py_CODEUNIT);
    return 1;
}

static inline int line_of(const void *code, int lasti) {
    return PyCode_Addr2Line((PyCodeObject *)code, lasti < 0 ? -1 : lasti);
}
#endif

/* ---- the walk of the running frames (walk mode) -------------------------------------
 * The calling thread's interpreter frames, innermost first, read in place
 * (no frame object is made: a hook may run in the middle of any allocation,
 * where making objects could start a collection).  The fields are those of
 * _PyInterpreterFrame in the internal headers of each version: the code (a
 * tagged stack reference from 3.14), the caller, the globals and the owner
 * byte, whose offsets and entry-frame values the layout table of
 * apiprof-spy holds (src/spy/spy_layout_table.h, measured from those
 * headers); the globals come right after the function in 3.12-3.15 (offset
 * 24) and second in 3.11 (offset 8). */
#define WALK_MAX 256   /* frames kept, the innermost; a deeper stack loses its outermost */
/* 3.13+: the flag of the interpreter's own shim code objects (the frame
 * that runs after a class's __init__): static code that is nobody's
 * function, never given to monitoring, and whose co_extra must not be
 * written.  3.12's one shim, the entry trampoline, is a C-stack frame. */
#ifdef CO_NO_MONITORING_EVENTS
#define WALK_SHIM CO_NO_MONITORING_EVENTS
#else
#define WALK_SHIM 0
#endif

typedef struct walk_frame {
    PyCodeObject *code;
    PyObject *globals;
} walk_frame;

static const spy_layout *walk_layout;   /* this interpreter's row, set at init */

/* The frames that were running in the thread that started the tracker when
 * it started (the caller of start() and its callers: a launcher, a test, a
 * `with` block's function), by address with their code: the walk of that
 * thread stops at the first of them, as the tracer's stack holds only frames
 * entered after its start.  An open-addressed set, written at start() only. */
#define BASE_SLOTS 1024   /* a power of two, at least 2 * WALK_MAX */
typedef struct walk_base {
    const PyThreadState *ts;   /* the starting thread; NULL: none */
    struct {
        const void *frame, *code;
    } slot[BASE_SLOTS];
} walk_base;

static walk_base base;

static inline size_t base_slot(const void *frame) {
    uintptr_t h = (uintptr_t)frame >> 3;
    return (size_t)((h ^ (h >> 11)) * 0x9e3779b1u) & (BASE_SLOTS - 1);
}

static void base_add(const void *frame, const void *code) {
    size_t i = base_slot(frame);
    while (base.slot[i].frame != NULL && base.slot[i].frame != frame)
        i = (i + 1) & (BASE_SLOTS - 1);
    base.slot[i].frame = frame;
    base.slot[i].code = code;
}

static inline int base_has(const void *frame, const void *code) {
    for (size_t i = base_slot(frame); base.slot[i].frame != NULL; i = (i + 1) & (BASE_SLOTS - 1))
        if (base.slot[i].frame == frame)
            return base.slot[i].code == code;
    return 0;
}

static inline const char *frame_field(const char *f, uint32_t off) {
    return *(const char *const *)(f + off);
}

/* Up to max frames of the calling thread (GIL held) into out, innermost
 * first, C-stack entry frames and frames without code left out; *lasti is
 * the instruction offset of the innermost.  In the thread that started the
 * tracker, the walk stops at the first frame that was running then (base);
 * with record set, every frame walked is added to base instead.  Returns
 * how many.  Can't fail. */
static size_t walk_frames(walk_frame *out, size_t max, int *lasti, int record) {
    const spy_layout *l = walk_layout;
    PyThreadState *ts = apext_compat_tstate();
    if (ts == NULL || l == NULL)
        return 0;
    int cut = !record && ts == base.ts;
#if PY_VERSION_HEX >= 0x030D0000
    const char *f = (const char *)ts->current_frame;
#else
    const char *f = ts->cframe != NULL ? (const char *)ts->cframe->current_frame : NULL;
#endif
    size_t n = 0;
    for (; f != NULL && n < max; f = frame_field(f, l->fr_previous)) {
        unsigned owner = (unsigned char)f[l->fr_owner];
        if (owner == l->owner_cstack || owner == l->owner_interpreter)
            continue;
        uintptr_t code = (uintptr_t)frame_field(f, l->fr_code);
        if (l->code_tagged)
            code &= ~(uintptr_t)3;
        if (code == 0 || !PyCode_Check((PyObject *)code) ||
            (((PyCodeObject *)code)->co_flags & WALK_SHIM) != 0)
            continue;
        if (record)
            base_add(f, (const void *)code);
        else if (cut && base_has(f, (const void *)code))
            break;
        if (n == 0) {
#if PY_VERSION_HEX >= 0x030C0000
            *lasti = PyUnstable_InterpreterFrame_GetLasti((struct _PyInterpreterFrame *)f);
#else
            const frame311 *f311 = (const frame311 *)f;
            *lasti = (int)(f311->prev_instr - _PyCode_CODE(f311->f_code)) *
                     (int)sizeof(_Py_CODEUNIT);
#endif
        }
        out[n].code = (PyCodeObject *)code;
        out[n].globals = (PyObject *)frame_field(f, PY_VERSION_HEX >= 0x030C0000 ? 24 : 8);
        n++;
    }
    return n;
}

/* ---- attribution (GIL held) ---------------------------------------------------------- */

/* The tree that holds node n of the tracer's profile (cached for the last
 * top node), or NULL. */
static ap_tree *tree_of(MemoryTrackerObject *m, const ap_node *n) {
    if (n == m->tree_of_top)
        return m->tree_cache;
    const ap_node *root = n;
    while (root->up != NULL)
        root = root->up;
    for (size_t i = ap_prof_ntrees(m->prof); i-- > 0;) {
        ap_tree *t = ap_prof_tree_at(m->prof, i);
        if (ap_tree_root(t) == root) {
            m->tree_of_top = n;
            m->tree_cache = t;
            return t;
        }
    }
    return NULL;
}

/* The line frame of (code, lasti) in function frame func, or AP_NONE. */
static ap_frame_id line_frame(MemoryTrackerObject *m, const void *code, int lasti,
                              ap_frame_id func) {
    uintptr_t h = ((uintptr_t)code >> 4) ^ ((uintptr_t)lasti * 0x9e3779b1u);
    line_slot *s = &m->lines[(h ^ (h >> 8)) % LINE_CACHE];
    if (s->code == code && s->lasti == lasti && s->func == func)
        return s->line;
    int line = line_of(code, lasti);
    const ap_frame *ff = ap_prof_frame(m->prof, func);
    if (line <= 0 || ff == NULL)
        return AP_NONE;
    ap_frame f = *ff;
    f.lineno = (uint32_t)line;
    ap_frame_id id = ap_prof_frame_intern(m->prof, &f);
    if (id != AP_NONE) {
        s->code = code;
        s->lasti = lasti;
        s->func = func;
        s->line = id;
    }
    return id;
}

/* Walk mode: the node of the calling thread's running frames (GIL held),
 * made on the way: a path of function nodes from the root of the thread's
 * (or its route's) tree, frames the tracer's patterns exclude left out, and
 * the innermost frame's line under its function, as the tracer's own
 * attribution gives.  Code the tracer never sees here (C functions) is part
 * of the line that called it. */
static ap_node *walk_node(MemoryTrackerObject *m) {
    ap_tree *tree = apext_tracer_walk_tree(m->tracer);
    if (tree == NULL)
        return m->no_frame;
    walk_frame fr[WALK_MAX];
    int lasti = -1;
    size_t n = walk_frames(fr, WALK_MAX, &lasti, 0);
    ap_node *node = ap_tree_root(tree);
    ap_frame_id func = AP_NONE;
    for (size_t i = n; i-- > 0;) {
        int excluded = 0;
        ap_frame_id id = apext_tracer_code_frame(m->tracer, fr[i].code, fr[i].globals, &excluded);
        if (id == AP_NONE)
            return node;
        func = AP_NONE;
        if (excluded)
            continue;
        ap_node *c = ap_tree_child_fast(tree, node, id);
        if (c == NULL)
            return node;
        node = c;
        func = id;
    }
    if (func == AP_NONE)   /* the innermost frame was left out: no line of it */
        return node;
    ap_frame_id lf = line_frame(m, fr[0].code, lasti, func);
    ap_node *c = lf != AP_NONE ? ap_tree_child_fast(tree, node, lf) : NULL;
    return c != NULL ? c : node;
}

/* The node an allocation by the calling thread (GIL held) is charged to. */
static ap_node *charge_node(MemoryTrackerObject *m) {
    if (m->walk)
        return walk_node(m);
    if (m->line_tracer) {
        ap_node *n = apext_lines_charge_node(m->tracer);
        return n != NULL ? n : m->no_frame;
    }
    if (apext_session_running[APEXT_PRODUCER_TRACE] != m->tracer)
        return m->no_frame;
    apext_stack_tls *c = &apext_stack_tls_slots[APEXT_PRODUCER_TRACE];
    if (c->gen != apext_session_generation[APEXT_PRODUCER_TRACE] || c->thread == NULL)
        return m->no_frame;
    apext_thread *ts = c->thread;
    apext_frame *top = apext_stack_at(ts, ts->depth - 1);
    const void *code;
    int lasti;
    if (ts->depth < 2 || !running_code(&code, &lasti) || top->key != code)
        return top->node;
    ap_frame_id lf = line_frame(m, code, lasti, top->node->frame);
    ap_tree *tree = lf != AP_NONE ? tree_of(m, top->node) : NULL;
    if (tree == NULL)
        return top->node;
    ap_node *n = ap_tree_child_fast(tree, top->node, lf);
    return n != NULL ? n : top->node;
}

/* ---- the live map (under mem_lock) --------------------------------------------------- */

/* The address bits above the 16-byte alignment of every PyMem block: blocks
 * near each other get different bits, and a free is decided in a few
 * instructions (a hash here was a third of an untracked free's cost). */
static inline uint64_t filter_bit(const void *ptr) {
    return ((uint64_t)(uintptr_t)ptr >> 4) & (FILTER_WORDS * 64 - 1);
}

static inline int filter_has(const MemoryTrackerObject *m, const void *ptr) {
    uint64_t b = filter_bit(ptr);
    return (m->filter[b >> 6] >> (b & 63)) & 1u;
}

/* A request's owner record loses bytes of its live ones and one reference
 * (a block of it was freed, or it ended); the last release frees it. */
static void owner_release(apext_mem_owner *o, uint64_t bytes) {
    o->live = o->live > bytes ? o->live - bytes : 0;
    if (o->stat != NULL && bytes != 0)
        ap_routes_free_memory(o->stat, bytes);
    if (--o->refs == 0)
        free(o);
}

/* Block b is no longer alive: its bytes leave its node's (or request's) live
 * bytes and the total. */
static void drop_block(MemoryTrackerObject *m, mem_block *b) {
    if (b->node != NULL)
        b->node->m[AP_M_LIVE_BYTES] -= b->bytes;
    if (b->owner != NULL)
        owner_release(b->owner, b->bytes);
    b->owner = NULL;
    m->live_total -= b->bytes;
}

/* Track ptr as a live block charged to node, or (requests mode, node NULL)
 * to the request owner, which gets the bytes and a reference. */
static void track(MemoryTrackerObject *m, void *ptr, ap_node *node, apext_mem_owner *owner,
                  uint64_t bytes, uint32_t size) {
    uint64_t key = (uint64_t)(uintptr_t)ptr;
    int inserted;
    uint64_t *v = ap_map_upsert(&m->live, key, UINT32_MAX, &inserted);
    if (v == NULL) {
        m->lost++;
        return;
    }
    uint32_t i;
    if (!inserted) {   /* freed where no hook saw it: the old block is gone */
        i = (uint32_t)*v;
        drop_block(m, &m->blocks[i]);
    } else if (m->free_head != UINT32_MAX) {
        i = m->free_head;
        m->free_head = m->blocks[i].next;
    } else {
        if (m->nblocks == m->cap) {
            uint32_t cap = m->cap ? m->cap * 2 : 1024;
            mem_block *b = cap > m->cap ? realloc(m->blocks, (size_t)cap * sizeof *b) : NULL;
            if (b == NULL) {
                ap_map_remove(&m->live, key);
                m->lost++;
                return;
            }
            m->blocks = b;
            m->cap = cap;
        }
        i = m->nblocks++;
    }
    *v = i;
    uint64_t fb = filter_bit(ptr);
    m->filter[fb >> 6] |= (uint64_t)1 << (fb & 63);
    m->blocks[i] = (mem_block){node, owner, bytes, UINT32_MAX, size};
    if (node != NULL) {
        uint64_t *live = &node->m[AP_M_LIVE_BYTES];
        *live += bytes;
        if (*live > node->m[AP_M_PEAK_BYTES])
            node->m[AP_M_PEAK_BYTES] = *live;
    } else if (owner != NULL) {
        owner->live += bytes;
        owner->refs++;
    }
    m->live_total += bytes;
    if (m->live_total > m->peak_total)
        m->peak_total = m->live_total;
}

/* Forget ptr: its bytes leave its node's live bytes.  Returns its block
 * (valid until the next track) or NULL if it was not tracked. */
static mem_block *untrack(MemoryTrackerObject *m, void *ptr) {
    uint64_t *v = ap_map_get(&m->live, (uint64_t)(uintptr_t)ptr);
    if (v == NULL)
        return NULL;
    uint32_t i = (uint32_t)*v;
    ap_map_remove(&m->live, (uint64_t)(uintptr_t)ptr);
    mem_block *b = &m->blocks[i];
    drop_block(m, b);
    b->next = m->free_head;
    m->free_head = i;
    return b;
}

/* ---- the hooks -------------------------------------------------------------------------
 * Only RAW hooks can be in flight while stop() runs (the others hold the
 * GIL, as stop() does), so only they are counted. */

static inline void enter(const mem_domain *d) {
    if (d->domain == PYMEM_DOMAIN_RAW)
        atomic_fetch_add_explicit(&mem_inflight, 1, memory_order_acquire);
}

static inline void leave(const mem_domain *d) {
    if (d->domain == PYMEM_DOMAIN_RAW)
        atomic_fetch_sub_explicit(&mem_inflight, 1, memory_order_release);
}

/* Requests mode (GIL held): charge the block to the request whose context
 * runs, if any. */
static void charge_request(MemoryTrackerObject *m, void *ptr, uint64_t bytes, size_t size,
                           int obj) {
    if (apext_compat_tstate() == NULL)   /* no thread state: no context to read */
        return;
    mem_guard = 1;
    PyObject *box = NULL;
    if (PyContextVar_Get(apext_memory_request_var, NULL, &box) < 0)
        PyErr_Clear();   /* cannot happen: the variable is a ContextVar */
    apext_mem_owner *o = NULL;
    if (box != NULL && PyCapsule_IsValid(box, BOX_NAME))
        o = ((owner_box *)PyCapsule_GetPointer(box, BOX_NAME))->owner;
    Py_XDECREF(box);   /* the context holds it */
    if (o != NULL) {
        lock();
        o->alloc += bytes;
        track(m, ptr, NULL, o, bytes,
              (size > MEM_SIZE_MAX ? MEM_SIZE_MAX : (uint32_t)size) | (obj ? MEM_OBJ : 0u));
        unlock();
    }
    mem_guard = 0;
}

static void on_alloc(const mem_domain *d, void *ptr, size_t size) {
    MemoryTrackerObject *m = mem_running;
    if (m == NULL || m->paused)
        return;
    uint64_t bytes = size, count = 1;
    if (m->sampled && !sample(m, size, &bytes, &count))
        return;
    int gil = d->domain != PYMEM_DOMAIN_RAW || PyGILState_Check();
    if (m->requests) {
        if (gil)
            charge_request(m, ptr, bytes, size, d->domain == PYMEM_DOMAIN_OBJ);
        return;
    }
    mem_guard = 1;
    ap_node *node = gil ? charge_node(m) : m->no_gil;
    lock();
    /* a line profile: the running line of every target frame, as time */
    if (!m->line_tracer || node == m->no_frame || node == m->no_gil ||
        !apext_lines_add(m->tracer, AP_M_ALLOC_BYTES, bytes, AP_M_ALLOC_COUNT, count)) {
        node->m[AP_M_ALLOC_BYTES] += bytes;
        node->m[AP_M_ALLOC_COUNT] += count;
    }
    track(m, ptr, node, NULL, bytes,
          (size > MEM_SIZE_MAX ? MEM_SIZE_MAX : (uint32_t)size) |
              (d->domain == PYMEM_DOMAIN_OBJ ? MEM_OBJ : 0u));
    unlock();
    mem_guard = 0;
}

/* Line profiles charge the free of a tracked block (bytes, or its negation
 * to undo one) to the running line of every target frame, as allocations
 * (a line's net bytes); the function tracer's profiles do not (a free would
 * cost a lookup of the running line).  gil: the calling thread holds it.
 * Under mem_lock. */
static inline void charge_freed(MemoryTrackerObject *m, int gil, uint64_t bytes) {
    if (!m->line_tracer)
        return;
    if (!gil || !apext_lines_add(m->tracer, AP_M_FREED_BYTES, bytes, AP_M_COUNT, 0))
        (gil ? m->no_frame : m->no_gil)->m[AP_M_FREED_BYTES] += bytes;
}

static inline int holds_gil(const MemoryTrackerObject *m, const mem_domain *d) {
    return !m->line_tracer || d->domain != PYMEM_DOMAIN_RAW || PyGILState_Check();
}

static inline void on_free(const mem_domain *d, void *ptr) {
    MemoryTrackerObject *m = mem_running;
    if (m == NULL || ptr == NULL || (m->sampled && !filter_has(m, ptr)))
        return;
    int gil = holds_gil(m, d);
    lock();
    mem_block *b = ap_map_size(&m->live) != 0 ? untrack(m, ptr) : NULL;
    if (b != NULL)
        charge_freed(m, gil, b->bytes);
    unlock();
}

/* ---- the fast paths (sampled mode, MEM and OBJ domains) -------------------------------
 * Nearly every block of sampled mode is not sampled and nearly every free is
 * of a block that is not tracked; the MEM and OBJ hooks decide that first,
 * in a few instructions, and call the wrapped allocator.  They hold the GIL,
 * so the tracker can't stop under them (no in-flight count); the RAW domain
 * gets the full hooks only.  A block that is sampled, or a free the filter
 * can't rule out, takes the full hook (hook_*_slow) from the start.  The
 * wrapped allocator's own calls (pymalloc passes a block larger than 512
 * bytes to PyMem_RawMalloc) run under the reentrancy guard, as in the full
 * hook, so that one block is sampled once; a free inside a free meets the
 * RAW hook, whose filter check finds the block untracked. */

/* What the fast paths read, one load each (GIL held), set by fast_update():
 * the running tracker's generation while it runs in sampled mode and is not
 * paused (else 0: every allocation takes the full hook), and its free
 * filter while it runs in sampled mode (else NULL). */
static uint64_t fast_gen;
static const uint64_t *fast_filter;

static void fast_update(const MemoryTrackerObject *m) {
    int sampled = m != NULL && m == mem_running && m->sampled;
    fast_gen = sampled && !m->paused ? m->generation : 0;
    fast_filter = sampled ? m->filter : NULL;
}

#define SMALL_BLOCK 512   /* pymalloc's largest block: bigger ones go to PyMem_RawMalloc */

/* Whether a MEM or OBJ allocation of size bytes is not sampled: counted down
 * from the calling thread's interval.  0 (undone) when the fast path is off,
 * the thread must be seeded, the hook's own work allocates, or the block is
 * sampled: the full hook then decides again. */
static inline int alloc_untracked(size_t size) {
    uint64_t gen = fast_gen;
    mem_sampler *t = &tls_sampler;
    if (gen == 0 || t->gen != gen || mem_guard)
        return 0;
    if ((t->left -= (int64_t)size) > 0)
        return 1;
    t->left += (int64_t)size;
    return 0;
}

/* Whether a MEM or OBJ free of ptr is of a block that is not tracked. */
static inline int free_untracked(const void *ptr) {
    const uint64_t *f = fast_filter;
    if (f == NULL)
        return 0;
    uint64_t b = filter_bit(ptr);
    return !((f[b >> 6] >> (b & 63)) & 1u);
}

static void *hook_malloc_slow(void *ctx, size_t size);
static void *hook_calloc_slow(void *ctx, size_t nelem, size_t elsize);
static void *hook_realloc_slow(void *ctx, void *ptr, size_t size);
static void hook_free_slow(void *ctx, void *ptr);

/* The wrapped allocator's call, under the guard when it may reach RAW. */
#define GUARDED(size, call)              \
    do {                                 \
        if ((size) <= SMALL_BLOCK)       \
            return call;                 \
        mem_guard = 1;                   \
        void *p_ = call;                 \
        mem_guard = 0;                   \
        return p_;                       \
    } while (0)

static void *hook_malloc(void *ctx, size_t size) {
    mem_domain *d = ctx;
    if (!alloc_untracked(size))
        return hook_malloc_slow(d, size);
    GUARDED(size, d->orig.malloc(d->orig.ctx, size));
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize) {
    mem_domain *d = ctx;
    if (!alloc_untracked(nelem * elsize))
        return hook_calloc_slow(d, nelem, elsize);
    GUARDED(nelem * elsize, d->orig.calloc(d->orig.ctx, nelem, elsize));
}

/* A realloc may move a small block to a large one: always guarded. */
static void *hook_realloc(void *ctx, void *ptr, size_t size) {
    mem_domain *d = ctx;
    if (!free_untracked(ptr) || !alloc_untracked(size))
        return hook_realloc_slow(d, ptr, size);
    mem_guard = 1;
    void *p = d->orig.realloc(d->orig.ctx, ptr, size);
    mem_guard = 0;
    return p;
}

static void hook_free(void *ctx, void *ptr) {
    mem_domain *d = ctx;
    if (!free_untracked(ptr)) {
        hook_free_slow(d, ptr);
        return;
    }
    d->orig.free(d->orig.ctx, ptr);
}

/* ---- the full hooks ------------------------------------------------------------------ */

__attribute__((noinline)) static void *hook_malloc_slow(void *ctx, size_t size) {
    mem_domain *d = ctx;
    if (mem_guard)
        return d->orig.malloc(d->orig.ctx, size);
    enter(d);
    mem_guard = 1;   /* pymalloc passes large blocks to PyMem_RawMalloc: one block */
    void *p = d->orig.malloc(d->orig.ctx, size);
    mem_guard = 0;
    if (p != NULL)
        on_alloc(d, p, size);
    leave(d);
    return p;
}

__attribute__((noinline)) static void *hook_calloc_slow(void *ctx, size_t nelem, size_t elsize) {
    mem_domain *d = ctx;
    if (mem_guard)
        return d->orig.calloc(d->orig.ctx, nelem, elsize);
    enter(d);
    mem_guard = 1;
    void *p = d->orig.calloc(d->orig.ctx, nelem, elsize);
    mem_guard = 0;
    if (p != NULL)
        on_alloc(d, p, nelem * elsize);
    leave(d);
    return p;
}

/* A realloc is a free of the old block and an allocation of the new one.
 * The old block leaves the live map before the wrapped realloc can hand its
 * address to another thread, and comes back if the realloc fails. */
__attribute__((noinline)) static void *hook_realloc_slow(void *ctx, void *ptr, size_t size) {
    mem_domain *d = ctx;
    if (mem_guard)
        return d->orig.realloc(d->orig.ctx, ptr, size);
    enter(d);
    MemoryTrackerObject *m = mem_running;
    mem_block old = {NULL, NULL, 0, 0, 0};
    int gil = m != NULL && holds_gil(m, d);
    if (m != NULL && ptr != NULL && (!m->sampled || filter_has(m, ptr))) {
        lock();
        mem_block *b = untrack(m, ptr);
        if (b != NULL)
            charge_freed(m, gil, b->bytes);
        if (b != NULL)
            old = *b;
        unlock();
        old.owner = NULL;   /* released with the block; a failed realloc keeps it untracked */
    }
    mem_guard = 1;
    void *p = d->orig.realloc(d->orig.ctx, ptr, size);
    mem_guard = 0;
    if (p != NULL)
        on_alloc(d, p, size);
    else if (old.node != NULL && m == mem_running) {
        lock();
        charge_freed(m, gil, 0 - old.bytes);
        track(m, ptr, old.node, NULL, old.bytes, old.size);
        unlock();
    }
    leave(d);
    return p;
}

__attribute__((noinline)) static void hook_free_slow(void *ctx, void *ptr) {
    mem_domain *d = ctx;
    if (mem_guard) {
        d->orig.free(d->orig.ctx, ptr);
        return;
    }
    enter(d);
    on_free(d, ptr);
    mem_guard = 1;
    d->orig.free(d->orig.ctx, ptr);
    mem_guard = 0;
    leave(d);
}

/* ---- start and stop ---------------------------------------------------------------------- */

static ap_node *other_node(ap_prof *p, ap_tree *t, const char *name) {
    ap_str_id s = ap_prof_intern(p, name, strlen(name));
    ap_str_id tilde = ap_prof_intern(p, "~", 1);
    if (s == AP_NONE || tilde == AP_NONE)
        return NULL;
    ap_frame f = {s, s, tilde, 0, 0, AP_FRAME_OTHER};
    ap_frame_id id = ap_prof_frame_intern(p, &f);
    return id == AP_NONE ? NULL : ap_tree_child(t, ap_tree_root(t), id);
}

/* The tree for allocations outside the tracer's stacks, made once per
 * profile and found again at a later start. */
static int outside_nodes(MemoryTrackerObject *m) {
    static const char label[] = "<outside the tracer>";
    ap_prof *p = m->prof;
    ap_str_id k = ap_prof_intern(p, "thread", 6);
    ap_str_id v = ap_prof_intern(p, label, sizeof label - 1);
    if (k == AP_NONE || v == AP_NONE)
        return -1;
    ap_tree *t = NULL;
    for (size_t i = 0; i < ap_prof_ntrees(p) && t == NULL; i++)
        if (ap_tree_label_get(ap_prof_tree_at(p, i), k) == v)
            t = ap_prof_tree_at(p, i);
    if (t == NULL) {
        ap_label l = {k, v};
        if ((t = ap_prof_tree_new(p, &l, 1)) == NULL)
            return -1;
    }
    m->no_frame = other_node(p, t, "<no traced frame>");
    m->no_gil = other_node(p, t, "<without the GIL>");
    return m->no_frame != NULL && m->no_gil != NULL ? 0 : -1;
}

static void set_meta_u64(ap_prof *p, const char *key, uint64_t v) {
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    ap_prof_meta_set(p, key, s);
}

static PyObject *mem_start(MemoryTrackerObject *m, PyObject *Py_UNUSED(a)) {
    if (m->running)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: this memory tracker is already running");
    if (mem_running != NULL)
        return PyErr_Format(PyExc_RuntimeError, "apiprof: another memory tracker is running");
    if (m->requests) {
        m->prof = NULL;
    } else {
        apext_object *t = (apext_object *)m->tracer;
        if (apext_session_running[m->line_tracer ? APEXT_PRODUCER_LINES : APEXT_PRODUCER_TRACE] !=
            m->tracer)
            return PyErr_Format(PyExc_RuntimeError,
                                "apiprof: the memory tracker needs its tracer running (start it first)");
        m->prof = t->sess.prof;
        m->walk = !m->line_tracer && t->sess.ops->hooks == NULL;
    }
    if (m->walk) {   /* the frames running now are not the tracker's: see walk_base */
        walk_frame fr[WALK_MAX];
        int lasti;
        memset(&base, 0, sizeof base);
        base.ts = apext_compat_tstate();
        walk_frames(fr, WALK_MAX, &lasti, 1);
    }
    if (m->requests) {
        /* no profile to describe */
    } else if (outside_nodes(m) != 0 ||
        ap_prof_meta_set(m->prof, "memory", m->sampled ? "sampled" : "full") != 0 ||
        ap_prof_meta_set(m->prof, "memory_attribution", m->line_tracer ? "lines" : "functions") != 0)
        return PyErr_NoMemory();
    if (m->sampled && m->prof != NULL)
        set_meta_u64(m->prof, "memory_rate", m->rate);
    memset(m->lines, 0, sizeof m->lines);
    memset(m->filter, 0, sizeof m->filter);
    m->tree_of_top = NULL;
    m->free_head = UINT32_MAX;
    m->nblocks = 0;
    m->lost = 0;
    m->live_total = m->peak_total = 0;
    m->paused = 0;
    /* Unique in the process, not per tracker: a thread's sampler left by another
     * tracker's run (another rate, its countdown half spent) must not pass for this
     * one's; the sequence comes from the seed and the thread, not from this number. */
    static uint64_t generations;
    m->generation = ++generations;   /* never 0: "no generation" to the fast paths */
    m->run_seed = m->seed != 0 ? m->seed : ap_hash_u64((uint64_t)ap_clock_now_ns()) | 1u;
    mem_running = m;
    m->running = 1;
    fast_update(m);
    for (int i = 0; i < 3; i++) {   /* RAW (domains[0]) may run without the GIL: full hooks */
        PyMemAllocatorEx hook =
            i == 0 ? (PyMemAllocatorEx){&domains[i], hook_malloc_slow, hook_calloc_slow,
                                        hook_realloc_slow, hook_free_slow}
                   : (PyMemAllocatorEx){&domains[i], hook_malloc, hook_calloc, hook_realloc,
                                        hook_free};
        PyMem_GetAllocator(domains[i].domain, &domains[i].orig);
        PyMem_SetAllocator(domains[i].domain, &hook);
    }
    Py_INCREF(m);   /* the hooks hold it while running */
    Py_RETURN_NONE;
}

/* Remove the hooks, wait for those in flight, and release the live map: the
 * live bytes of the profile are the blocks alive now. */
static void mem_unhook(MemoryTrackerObject *m) {
    for (int i = 2; i >= 0; i--)
        PyMem_SetAllocator(domains[i].domain, &domains[i].orig);
    mem_running = NULL;
    fast_update(NULL);
    /* A RAW hook counts itself in flight before it reads mem_running: after
     * this fence, one not counted yet reads NULL and does nothing. */
    atomic_thread_fence(memory_order_seq_cst);
    while (atomic_load_explicit(&mem_inflight, memory_order_acquire) != 0)
        ;
    lock();     /* a reader of apext_memory_live_now() holding m is done with it */
    /* requests mode: the blocks are no longer followed; they leave their requests */
    uint64_t key, val;
    for (size_t pos = 0; m->requests && (pos = ap_map_next(&m->live, pos, &key, &val)) != 0;)
        drop_block(m, &m->blocks[val]);
    unlock();
    m->running = 0;
    if (m->prof != NULL) {
        set_meta_u64(m->prof, "memory_live_bytes", m->live_total);
        set_meta_u64(m->prof, "memory_peak_bytes", m->peak_total);
        if (m->lost)
            set_meta_u64(m->prof, "memory_untracked_blocks", m->lost);
    }
    ap_map_free(&m->live);
    free(m->blocks);
    m->blocks = NULL;
    m->cap = m->nblocks = 0;
}

int apext_memory_live_now(uint64_t *live) {
    lock();
    MemoryTrackerObject *m = mem_running;
    if (m != NULL)
        *live = m->live_total;
    unlock();
    return m != NULL;
}

/* ---- unreleased objects (at stop, GIL held, hooks still on) ----------------------------
 * Which live blocks are Python objects, and of what type: a block of the OBJ
 * domain holds an object at offset 0 (no GC header), one GC header in
 * (16 bytes) or a GC header and the managed dict/weakref pre-header in (32);
 * the word after the reference count there is its type.  A candidate counts
 * only when that word is a type alive now (object and its subclasses,
 * collected first), which a GC header's link (it points at other headers)
 * and a pre-header's pointers (a dict, values, weak references) never are.
 * The hooks stay on meanwhile, so an object freed by a collection that the
 * Python calls here set off leaves the live map; new blocks are not tracked
 * (paused).  Failures skip the records (the exception is cleared). */

/* Every type alive now into set (address -> 1), each also appended to keep
 * (a list), which holds them until the caller drops it: a type freed by a
 * collection during the pass would otherwise leave its address in set.  0,
 * or -1 with an exception set. */
static int collect_types(ap_map *set, PyObject *keep) {
    /* type.__subclasses__(t): a metaclass's own (type itself) would be unbound */
    PyObject *subclasses = PyObject_GetAttrString((PyObject *)&PyType_Type, "__subclasses__");
    if (subclasses == NULL || PyList_Append(keep, (PyObject *)&PyBaseObject_Type) != 0)
        goto err;
    /* keep doubles as the work list: every entry from `next` on is still to visit */
    for (Py_ssize_t next = 0; next < PyList_GET_SIZE(keep); next++) {
        PyObject *t = PyList_GET_ITEM(keep, next);
        int inserted;
        if (ap_map_upsert(set, (uint64_t)(uintptr_t)t, 1, &inserted) == NULL) {
            PyErr_NoMemory();
            goto err;
        }
        if (!inserted)
            continue;
        PyObject *subs = PyObject_CallOneArg(subclasses, t);
        if (subs == NULL || !PyList_Check(subs) ||
            PyList_SetSlice(keep, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, subs) != 0) {
            Py_XDECREF(subs);
            goto err;
        }
        Py_DECREF(subs);
    }
    Py_DECREF(subclasses);
    return 0;
err:
    Py_XDECREF(subclasses);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "__subclasses__ returned no list");
    return -1;
}

typedef struct live_obj {
    PyTypeObject *type;
    ap_node *node;
    uint64_t bytes;
    uint32_t size;
} live_obj;

/* The type of the object in the live block at addr (size bytes), or NULL. */
static PyTypeObject *object_type(const ap_map *types, uintptr_t addr, uint32_t size) {
    static const uint32_t offsets[] = {0, 16, 32};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        if (size < offsets[i] + 2 * sizeof(void *))
            break;
        void *tp;
        memcpy(&tp, (const char *)addr + offsets[i] + sizeof(void *), sizeof tp);
        if (ap_map_get(types, (uint64_t)(uintptr_t)tp) != NULL)
            return tp;
    }
    return NULL;
}

/* "module.qualname" of a heap type, tp_name of a static one. */
static ap_str_id type_name(ap_prof *p, PyTypeObject *tp) {
    char buf[512];
    const char *name = tp->tp_name;
    if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        PyObject *q = PyType_GetQualName(tp);
        PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
        const char *qs = q != NULL ? PyUnicode_AsUTF8(q) : NULL;
        const char *ms = mod != NULL && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : NULL;
        if (qs != NULL) {
            if (ms != NULL && strcmp(ms, "builtins") != 0)
                snprintf(buf, sizeof buf, "%s.%s", ms, qs);
            else
                snprintf(buf, sizeof buf, "%s", qs);
            name = buf;
        }
        Py_XDECREF(q);
        Py_XDECREF(mod);
        PyErr_Clear();
    }
    return ap_prof_intern(p, name, strlen(name));
}

static void record_unreleased(MemoryTrackerObject *m) {
    ap_map types = {0}, names = {0}, routes = {0};
    live_obj *objs = NULL;
    size_t n = 0;
    m->paused = 1;
    fast_update(m);
    PyObject *keep = PyList_New(0);   /* every type in `types`, held until the end */
    if (keep == NULL || collect_types(&types, keep) != 0)
        goto out;
    /* Pass 1, no Python code: the live objects (their types are held by keep). */
    size_t cap = ap_map_size(&m->live);
    if ((objs = malloc((cap ? cap : 1) * sizeof *objs)) == NULL)
        goto out;
    lock();
    uint64_t key, val;
    for (size_t pos = 0; n < cap && (pos = ap_map_next(&m->live, pos, &key, &val)) != 0;) {
        const mem_block *b = &m->blocks[val];
        if (!(b->size & MEM_OBJ))
            continue;
        PyTypeObject *tp = object_type(&types, (uintptr_t)key, b->size & MEM_SIZE_MAX);
        if (tp != NULL)
            objs[n++] = (live_obj){tp, b->node, b->bytes, b->size & MEM_SIZE_MAX};
    }
    unlock();
    /* Pass 2: names, routes and the records. */
    ap_str_id route_key = ap_prof_intern(m->prof, "route", 5);
    for (size_t i = 0; i < n && route_key != AP_NONE; i++) {
        const live_obj *o = &objs[i];
        int inserted;
        uint64_t *name = ap_map_upsert(&names, (uint64_t)(uintptr_t)o->type, 0, &inserted);
        if (name != NULL && inserted)
            *name = type_name(m->prof, o->type);
        uint64_t *route = ap_map_upsert(&routes, (uint64_t)(uintptr_t)o->node, 0, &inserted);
        if (route != NULL && inserted) {
            ap_tree *t = tree_of(m, o->node);
            ap_str_id r = t != NULL ? ap_tree_label_get(t, route_key) : AP_NONE;
            *route = r == AP_NONE ? 0 : r;
        }
        if (name == NULL || route == NULL || *name == AP_NONE)
            break;
        uint64_t count = m->sampled ? (o->bytes + o->size / 2) / o->size : 1;
        ap_unrel rec = {(ap_str_id)*name, o->node->frame, (ap_str_id)*route, count, o->bytes};
        if (ap_prof_unrel_add(m->prof, &rec) != 0)
            break;
    }
out:
    Py_XDECREF(keep);
    PyErr_Clear();
    free(objs);
    ap_map_free(&types);
    ap_map_free(&names);
    ap_map_free(&routes);
    m->paused = 0;
    fast_update(m);
}

static PyObject *mem_stop(MemoryTrackerObject *m, PyObject *Py_UNUSED(a)) {
    if (!m->running)
        Py_RETURN_NONE;
    if (!m->requests)
        record_unreleased(m);
    mem_unhook(m);
    Py_DECREF(m);
    Py_RETURN_NONE;
}

static PyObject *mem_snapshot(MemoryTrackerObject *m, PyObject *Py_UNUSED(a)) {
    lock();
    uint64_t live = m->live_total, peak = m->peak_total, n = ap_map_size(&m->live);
    unlock();
    return Py_BuildValue("{sKsKsK}", "live_bytes", (unsigned long long)live, "peak_bytes",
                         (unsigned long long)peak, "live_blocks", (unsigned long long)n);
}

static PyObject *mem_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tracer", "mode", "rate", "seed", NULL};
    PyObject *tracer;
    const char *mode = "sampled";
    unsigned long long rate = DEFAULT_RATE, seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$sKK:MemoryTracker", kwlist, &tracer, &mode,
                                     &rate, &seed))
        return NULL;
    apext_state *st = apext_state_of_type(type);
    int lines = PyObject_TypeCheck(tracer, st->line_tracer_type);
    if (!lines && tracer != Py_None && !PyObject_TypeCheck(tracer, st->tracer_type))
        return PyErr_Format(PyExc_TypeError,
                            "tracer must be an apiprof._core.Tracer or LineTracer, or None");
    int sampled;
    if (strcmp(mode, "full") == 0)
        sampled = 0;
    else if (strcmp(mode, "sampled") == 0)
        sampled = 1;
    else
        return PyErr_Format(PyExc_ValueError, "mode must be 'full' or 'sampled', not '%s'", mode);
    if (rate < 1 || rate > ((unsigned long long)1 << 40))
        return PyErr_Format(PyExc_ValueError, "rate must be 1 to 2**40 bytes");
    MemoryTrackerObject *m = (MemoryTrackerObject *)type->tp_alloc(type, 0);
    if (m == NULL)
        return NULL;
    m->tracer = Py_NewRef(tracer);
    m->line_tracer = lines;
    m->requests = tracer == Py_None;
    m->sampled = sampled;
    m->rate = rate;
    m->seed = seed;
    m->free_head = UINT32_MAX;
    return (PyObject *)m;
}

static int mem_traverse(MemoryTrackerObject *m, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->tracer);
    return 0;
}

static int mem_clear(MemoryTrackerObject *m) {
    Py_CLEAR(m->tracer);
    return 0;
}

static void mem_dealloc(MemoryTrackerObject *m) {
    PyTypeObject *tp = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    mem_clear(m);   /* never running here: the hooks hold a reference */
    ap_map_free(&m->live);
    free(m->blocks);
    tp->tp_free(m);
    Py_DECREF(tp);
}

static PyObject *mem_get_running(MemoryTrackerObject *m, void *Py_UNUSED(c)) {
    return PyBool_FromLong(m->running);
}

static PyObject *mem_get_mode(MemoryTrackerObject *m, void *Py_UNUSED(c)) {
    return PyUnicode_FromString(m->sampled ? "sampled" : "full");
}

/* ---- request owners (requests mode) --------------------------------------------------- */

apext_mem_owner *apext_memory_owner_new(void) {
    MemoryTrackerObject *m = mem_running;
    if (m == NULL || !m->requests)
        return NULL;
    apext_mem_owner *o = calloc(1, sizeof *o);
    if (o != NULL)
        o->refs = 1;
    return o;
}

void apext_memory_owner_end(apext_mem_owner *o, ap_route_stat *s, const ap_routes *t) {
    lock();
    if (s != NULL) {
        ap_routes_add_memory(s, o->alloc, o->live);
        o->stat = s;
        o->table = t;
    }
    owner_release(o, 0);
    unlock();
}

void apext_memory_forget_routes(const ap_routes *t) {
    MemoryTrackerObject *m = mem_running;
    if (m == NULL || !m->requests)
        return;
    lock();
    uint64_t key, val;
    for (size_t pos = 0; (pos = ap_map_next(&m->live, pos, &key, &val)) != 0;) {
        apext_mem_owner *o = m->blocks[val].owner;
        if (o != NULL && o->table == t)
            o->stat = NULL;
    }
    unlock();
}

static void box_free(PyObject *capsule) {
    free(PyCapsule_GetPointer(capsule, BOX_NAME));
}

PyObject *apext_memory_box_new(apext_mem_owner *o) {
    owner_box *b = malloc(sizeof *b);
    if (b == NULL)
        return PyErr_NoMemory();
    b->owner = o;
    PyObject *capsule = PyCapsule_New(b, BOX_NAME, box_free);
    if (capsule == NULL)
        free(b);
    return capsule;
}

void apext_memory_box_clear(PyObject *box) {
    owner_box *b = PyCapsule_GetPointer(box, BOX_NAME);
    if (b != NULL)
        b->owner = NULL;
    else
        PyErr_Clear();
}

static PyObject *mem_get_rate(MemoryTrackerObject *m, void *Py_UNUSED(c)) {
    return PyLong_FromUnsignedLongLong(m->rate);
}

static PyMethodDef mem_methods[] = {
    {"start", (PyCFunction)mem_start, METH_NOARGS,
     "start()\n\nWrap the RAW, MEM and OBJ allocators; the tracer must be running."},
    {"stop", (PyCFunction)mem_stop, METH_NOARGS,
     "stop()\n\nRestore the allocators; the live bytes of the profile are the blocks alive "
     "now.  A no-op when not running."},
    {"snapshot", (PyCFunction)mem_snapshot, METH_NOARGS,
     "snapshot() -> dict\n\nTraced live bytes now, their peak since start() and the number "
     "of live blocks tracked (estimates in sampled mode)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mem_getset[] = {
    {"running", (getter)mem_get_running, NULL, "Whether the allocators are wrapped.", NULL},
    {"mode", (getter)mem_get_mode, NULL, "'full' or 'sampled'.", NULL},
    {"rate", (getter)mem_get_rate, NULL, "Sampled mode: mean bytes between samples.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static const char mem_doc[] =
    "MemoryTracker(tracer, *, mode='sampled', rate=524288, seed=0)\n\nThe allocation hook "
    "of apiprof (use apiprof.Profiler(memory=...)): wraps PyMem's RAW, MEM and OBJ domains "
    "and charges allocations to the running tracer's node and line (alloc_bytes, "
    "alloc_count, live_bytes, peak_bytes); with a LineTracer (LineProfiler(memory=...)), "
    "to the running target line, and frees too (freed_bytes); with None (the ASGI "
    "middleware's memory=True), to the HTTP request running, in its route's statistics.  mode='full' records every block; 'sampled' "
    "samples by bytes (mean interval rate) and weighs each sample so that sums are "
    "unbiased estimates; seed fixes the sampling sequence (0: from the clock).";

/* In a child of fork() only the forking thread lives on: a lock or an
 * in-flight count held by another thread (a RAW hook without the GIL) would
 * never be released. */
static void after_fork_in_child(void) {
    atomic_flag_clear(&mem_lock);
    atomic_store(&mem_inflight, 0);
}

int apext_memory_init(PyObject *module, apext_state *st) {
    (void)st;
    walk_layout = spy_layout_get(PY_MINOR_VERSION);
    if (apext_memory_request_var == NULL &&
        (apext_memory_request_var = PyContextVar_New("apiprof_request", NULL)) == NULL)
        return -1;
    static int atfork;
    if (!atfork && pthread_atfork(NULL, NULL, after_fork_in_child) == 0)
        atfork = 1;
    PyType_Slot slots[] = {
        {Py_tp_new, mem_new},
        {Py_tp_dealloc, mem_dealloc},
        {Py_tp_traverse, mem_traverse},
        {Py_tp_clear, mem_clear},
        {Py_tp_methods, mem_methods},
        {Py_tp_getset, mem_getset},
        {Py_tp_doc, (void *)mem_doc},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = "apiprof._core.MemoryTracker",
        .basicsize = (int)sizeof(MemoryTrackerObject),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
        .slots = slots,
    };
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddType(module, type);
    Py_DECREF(type);
    return rc;
}

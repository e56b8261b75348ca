/* spy_py.h -- the CPython of another process: version, thread states, frames, lines. */
#ifndef SPY_PY_H
#define SPY_PY_H

#include <stdint.h>
#include <sys/types.h>

#include "ap_map.h"
#include "spy_layout.h"
#include "spy_proc.h"

/* Frames deeper than this are cut (the outermost ones are kept). */
#define SPY_MAX_DEPTH 256
/* Threads beyond this are not sampled. */
#define SPY_MAX_THREADS 256
/* Longest name of what an await chain ends in (spy_await's leaf), its NUL included. */
#define SPY_LEAF_MAX 64

/* A code object of the target, read once and cached by address.  An address can be
 * reused once the target frees the object, so a cached record is checked against what
 * the object at that address says now (its print) in every sample that uses it. */
typedef struct spy_code {
    char *name, *qualname, *filename;   /* UTF-8, owned */
    uint32_t firstlineno;
    uint64_t print[5];                  /* name, qualname, filename and location table
                                           pointers and first line, as read */
    uint8_t *linetable;                 /* the location table, owned */
    size_t linetable_len;
    uint32_t frame_id;                  /* for the profile writer: AP_NONE until interned */
    /* the lines of the last SPY_CODE_LINES instruction offsets asked for (the location
     * table is read from its start for each one otherwise) */
#define SPY_CODE_LINES 4
    int64_t line_off[SPY_CODE_LINES];
    int line_at[SPY_CODE_LINES];
    unsigned line_next;
} spy_code;

typedef struct spy_frame {
    const spy_code *code;   /* owned by the target's cache */
    int line;               /* the line executing, -1 when unknown */
} spy_frame;

/* One thread of one sample, innermost frame first. */
typedef struct spy_thread {
    uint64_t tstate;              /* PyThreadState * in the target */
    uint64_t pthread_id;
    pid_t tid;                    /* kernel thread id */
    int gil;                      /* 1: holds the GIL, 0: does not, -1: unknown */
    size_t nframes;
    int truncated;                /* 1: deeper than SPY_MAX_DEPTH */
    int torn;                     /* 1: a read failed mid-walk; nframes is 0 */
    /* the outermost SPY_GEN_FRAMES frames of coroutines or generators on its stack (the
     * _PyInterpreterFrame inside each object), outermost last: a thread runs an asyncio
     * task when its coroutine's frame is among them (spy_sample() only) */
#define SPY_GEN_FRAMES 4
    uint64_t gen_frames[SPY_GEN_FRAMES];
    unsigned ngen;
    spy_frame frames[SPY_MAX_DEPTH];
} spy_thread;

typedef struct spy_target {
    pid_t pid;
    unsigned minor, micro;        /* 3.minor.micro */
    uint64_t version_hex;         /* PY_VERSION_HEX */
    int debug_offsets;            /* 1: the layout was checked against _Py_DebugOffsets */
    spy_symbols sym;
    spy_layout lay;               /* the table's row, corrected by _Py_DebugOffsets */
    ap_map codes;                 /* code address -> index + 1 in code[] */
    spy_code **code;              /* each allocated once: a sample's frames point at them,
                                     so they never move while code[] grows */
    size_t ncode, capcode;
    spy_code **retired;           /* records replaced in code[] during the last sample:
                                     freed at the next one */
    size_t nretired, capretired;
    uint8_t *check;               /* SPY_MAX_DEPTH code headers: a sample's check of them */
    uint64_t torn;                /* frames or threads skipped after a torn read */
    struct spy_typename *types;   /* type names read (spy_await), by type address */
    size_t ntypes;
    struct spy_awaitwork *aw;     /* spy_await_many()'s working memory, or NULL */
    /* 3.11/3.12: whether the instruction after a suspended frame's last one resumes from
     * an await, by that last instruction's address (direct-mapped; 0: empty) */
    uint64_t yf_key[1024];
    uint8_t yf_val[1024];
    uint64_t interp;              /* PyInterpreterState * at the last spy_sample() */
    /* An awaitable that drives a coroutine (apiprof's middleware's): objects of the type
     * named via_name keep it at via_off (0: none), and await chains go on through them
     * (as through an async generator's asend() and athrow(), and an awaited task) */
    char via_name[SPY_LEAF_MAX];
    uint32_t via_off;
    /* Before 3.14: the sets asyncio registers its tasks in (of weak references to tasks,
     * of tasks), found in sys.modules["asyncio.tasks"]; 0: not known */
    uint64_t task_sets[2];
    /* 3.14+: where asyncio keeps its tasks, from the _asyncio module's own offsets
     * (its .AsyncioDebug section); found: 1 once read, 0 not (yet) */
    struct spy_aio {
        int found;
        uint32_t task_size, task_name, task_coro, task_node;   /* TaskObj */
        uint32_t ts_running_task, ts_tasks_head;                /* _PyThreadStateImpl */
        uint32_t is_tasks_head;                                 /* PyInterpreterState */
    } aio;
} spy_target;

/* Find the interpreter of pid and its version, and choose its layout.  Returns 0; on
 * error -1 with a spy_fail kind (PERM, NOPROC, NOTPYTHON, VERSION) and a message. */
int spy_target_open(spy_target *t, pid_t pid);

/* Release the caches.  Can't fail. */
void spy_target_close(spy_target *t);

/* Read every thread of the target's main interpreter into threads (at most max), its
 * frames innermost first.  The frames point at the target's records, valid until the
 * next call.  *n is set to the number read.  Reads race with the running
 * target: a torn read empties that thread's stack (torn = 1, counted in t->torn) and is
 * not an error.  Returns 0; -1 with SPY_FAIL_NOPROC when the process is gone,
 * SPY_FAIL_PERM when reads are refused, SPY_FAIL_TORN when even the thread list could
 * not be read (try again), AP_ENOMEM. */
int spy_sample(spy_target *t, spy_thread *threads, size_t max, size_t *n);

/* The await chain of the coroutine (or generator) at coro of the target: coro's frame
 * and, while it is suspended in an await (or yield from) of another coroutine or
 * generator, that one's, down to the innermost; through an awaitable that drives one
 * (t->via_name, an async generator's asend() and athrow(), an awaited task's coroutine).
 * out gets the frames innermost first (out->tid, tstate, gil are left alone); leaf the
 * name of the type the innermost one awaits ("Future", "_GatheringFuture": of an asyncio
 * future, the future's type; "Task" for a task done or running),
 * or "" when it is suspended at a plain yield.  Returns 1 when coro is suspended, with
 * out filled (a torn read leaves out->torn = 1 and no frames, counted in t->torn); 0
 * when it is running now, not started, done, or not a coroutine (out empty); -1 with
 * SPY_FAIL_NOPROC or SPY_FAIL_PERM when the target is gone or refuses reads, AP_ENOMEM. */
int spy_await(spy_target *t, uint64_t coro, spy_thread *out, char leaf[SPY_LEAF_MAX]);

/* spy_await() of n coroutines at once (n at most 1024): the chains are read level by
 * level, the next object of every chain still going in one process_vm_readv.  res[i]
 * gets what spy_await() would return for coro[i] (0 or 1).  Returns 0, or -1 as
 * spy_await() (the target is gone, refuses reads, AP_ENOMEM). */
int spy_await_many(spy_target *t, const uint64_t *coro, size_t n, spy_thread *out,
                   char (*leaf)[SPY_LEAF_MAX], int *res);

/* The object addresses of chain i of the last spy_await_many() (or spy_await(): i = 0),
 * innermost first as its frames (out[i].nframes of them): the coroutine or generator of
 * each frame.  Valid until the next call.  Can't fail. */
const uint64_t *spy_await_objects(const spy_target *t, size_t i);

/* An asyncio task of the target. */
typedef struct spy_task {
    uint64_t addr;      /* the Task object */
    uint64_t coro;      /* its coroutine */
    uint64_t name;      /* its name: a str, or an int N for "Task-N" */
    pid_t tid;          /* the thread whose task list holds it (0: the interpreter's: of
                           threads that ended; -1: not known, before 3.14) */
    int running;        /* 1: that thread runs it now (before 3.14: not known, 0) */
} spy_task;

/* Whether t's asyncio tasks can be listed: 1 on 3.14+ once the _asyncio module is
 * loaded (its offsets read from its .AsyncioDebug section), before 3.14 once asyncio.tasks
 * is imported (its registries found through sys.modules of the interpreter of the last
 * spy_sample()); looked for again at each call until found; 0 not (yet); -1 with
 * SPY_FAIL_NOPROC or SPY_FAIL_PERM. */
int spy_tasks_find(spy_target *t);

/* The asyncio tasks of the n threads (of the last spy_sample() of t, which also gives
 * the interpreter's list; before 3.14 of t->task_sets, _asyncio.Task objects only) into
 * out, at most max; *got is how many.  A list that changes while it is read is cut where
 * it changed (t->torn counts it).  Needs spy_tasks_find()
 * to have returned 1.  Returns 0, or -1 as spy_sample() (the target is gone or refuses
 * reads). */
int spy_tasks(spy_target *t, const spy_thread *threads, size_t n, spy_task *out, size_t max,
              size_t *got);

/* The name of a task (its name object) into buf (at most n bytes, cut): a str, or
 * "Task-N" for an int.  Returns 0, 1 when it could not be read (buf ""), -1 as
 * spy_read() for a gone target.  */
int spy_task_name(spy_target *t, uint64_t name, char *buf, size_t n);

/* The line of byte offset `offset` of a code object's bytecode from its location table
 * (the format of 3.11 to 3.15), or -1 if the table says none.  Can't fail. */
int spy_line_of(const uint8_t *table, size_t len, uint32_t firstlineno, int64_t offset);

#endif /* SPY_PY_H */

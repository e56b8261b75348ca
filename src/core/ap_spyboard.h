/* ap_spyboard.h -- the board a profiled process keeps for apiprof-spy: which route each thread serves now, and the requests in flight. */
#ifndef AP_SPYBOARD_H
#define AP_SPYBOARD_H

#include <stdint.h>

/* The middleware (src/ext/spyboard.c) keeps one board per process, in the exported
 * symbol AP_SPYBOARD_SYMBOL of apiprof's extension module; apiprof-spy finds it there
 * and reads it beside each sample, so a sample carries the route its thread was serving.
 *
 * Routes are published only while a sampler reads the board: the sampler writes
 * heartbeat_ns (CLOCK_MONOTONIC, a clock both processes share) at least every
 * AP_SPYBOARD_FRESH_NS / 4, and the middleware works for the board only while the
 * heartbeat is fresher than AP_SPYBOARD_FRESH_NS.  A sampler that dies stops the work
 * a moment later.
 *
 * Reads race with the writer and never stop it; every field the sampler reads is one
 * aligned word that is written whole.  Labels are append-only: label i is written before
 * nlabels passes i, and never changes; a thread's slot names a label by its index + 1
 * (0: no request is being served by it).
 *
 * Each request in flight has an entry in requests[] (whether a sampler reads or not):
 * its number, its route label (0 unless found up front), when it arrived, and the app
 * coroutine the middleware drives for it (from which apiprof-spy reads the request's
 * await chain).  An entry is written whole before its id is stored (release; vars, one
 * word, may be stored after it: 0 until then), and its id is cleared (release) before
 * the request ends and the coroutine is let go: a reader reads an entry, the coroutine,
 * then the id again, and keeps what it read only if the id did not change. */

#define AP_SPYBOARD_SYMBOL "apext_spyboard"
#define AP_SPYBOARD_MAGIC 0x3344524f42595053ull   /* "SPYBORD3" */
#define AP_SPYBOARD_SLOTS 128                     /* threads with a slot (the rest: none) */
#define AP_SPYBOARD_LABELS 256                    /* distinct labels (the rest: none) */
#define AP_SPYBOARD_LABEL_MAX 120                 /* bytes of a label, its NUL excluded */
#define AP_SPYBOARD_REQUESTS 512                  /* requests in flight with an entry */
#define AP_SPYBOARD_FRESH_NS 2000000000ull
/* The type of the middleware's awaitable, whose objects keep at via_coro (below) the
 * coroutine they drive */
#define AP_SPYBOARD_VIA_TYPE "apiprof._core.RouteRequest"

typedef struct ap_spyboard_slot {
    int32_t tid;          /* kernel thread id; 0 while the slot is free */
    uint32_t label;       /* index + 1 of the label served now, 0: none */
    uint64_t request;     /* the number of the request served now, 0: none */
} ap_spyboard_slot;

typedef struct ap_spyboard_request {
    uint64_t id;          /* the request's number in the process (1, 2, ...); 0: free */
    uint64_t coro;        /* PyObject *: the app's coroutine the middleware drives */
    uint64_t t0_ns;       /* CLOCK_MONOTONIC when it arrived */
    uint64_t vars;        /* the variables (PyContext.ctx_vars) of its context once it
                             names its route, 0: none; the thread pool's workers run its
                             work in copies of that context, which share them */
    uint32_t label;       /* index + 1 of its route's label */
    uint32_t unused;
} ap_spyboard_request;

typedef struct ap_spyboard {
    uint64_t magic;           /* AP_SPYBOARD_MAGIC once the module is loaded */
    uint64_t heartbeat_ns;    /* written by the sampler */
    uint32_t nslots;          /* slots taken, in order (at most AP_SPYBOARD_SLOTS) */
    uint32_t nlabels;         /* labels written, in order */
    ap_spyboard_slot slots[AP_SPYBOARD_SLOTS];
    char labels[AP_SPYBOARD_LABELS][AP_SPYBOARD_LABEL_MAX + 1];   /* NUL-terminated */
    uint32_t nrequests;       /* entries ever used, in order (at most AP_SPYBOARD_REQUESTS) */
    uint32_t via_coro;        /* where the middleware's awaitable (apiprof._core.RouteRequest,
                                 which the middleware awaits) keeps the coroutine it drives,
                                 from its start: an await chain goes on through it; 0: not
                                 known */
    ap_spyboard_request requests[AP_SPYBOARD_REQUESTS];
} ap_spyboard;

#endif /* AP_SPYBOARD_H */

/* spyboard.h -- this process's board for apiprof-spy (src/core/ap_spyboard.h): the route each thread serves, the requests in flight. */
#ifndef APEXT_SPYBOARD_H
#define APEXT_SPYBOARD_H

#include "ext.h"

#include <stdint.h>

/* Whether a sampler read the board lately (its heartbeat, CLOCK_MONOTONIC, is within
 * AP_SPYBOARD_FRESH_NS of now): only then is a request's route found up front and
 * published.  A load, a clock read and a compare.  Can't fail. */
int apext_spyboard_wanted(void);

/* What a thread serves: a route label (index + 1 from spy_label(), 0: nothing) and
 * the request's number (0: none). */
typedef struct apext_spy_serving {
    uint32_t label;
    uint64_t request;
} apext_spy_serving;

/* The calling thread serves now; returns what it served before (to be served again
 * when this ends: a request inside another).  A thread takes a slot when it first
 * serves a label and frees it when it exits; one beyond the board's slots publishes
 * nothing (returns nothing served).  Needs the GIL.  Can't fail. */
apext_spy_serving apext_spyboard_serve(apext_spy_serving now);

/* The request whose run starts here serves now (its label, its number): the current context (the request's
 * task's, copied by the work it hands on) names it.  On 3.14+ a context watcher,
 * installed while a sampler reads the board, then publishes the label on any thread
 * that enters that context (the thread pool's workers too).  0, or -1 with an
 * exception. */
int apext_spyboard_enter(apext_spy_serving now);

/* Request number id (> 0), of route label, arrived at t0_ns (CLOCK_MONOTONIC), drives
 * coro from now on: it takes a free entry of the board's requests.  Returns the entry's
 * index + 1, 0 when none is free (the request is not published).  coro must stay alive
 * until apext_spyboard_request_out().  Needs the GIL.  Can't fail. */
uint32_t apext_spyboard_request_in(uint64_t id, PyObject *coro, uint32_t label, uint64_t t0_ns);

/* Objects of the middleware's awaitable keep the coroutine they drive at offset off:
 * published for await chains read from outside.  Can't fail. */
void apext_spyboard_via(uint32_t off);

/* The request of entry (0: none) serves its label in the calling thread's current
 * context (after apext_spyboard_enter()): that context's variables are published with
 * it, so that apiprof-spy can tell the thread-pool workers running its work (in copies
 * of the context) on every Python version.  Needs the GIL.  Can't fail. */
void apext_spyboard_request_context(uint32_t entry);

/* The request of entry (index + 1 from apext_spyboard_request_in(); 0: none) ends: its
 * entry is freed.  Call it before the coroutine is released.  Needs the GIL.  Can't
 * fail. */
void apext_spyboard_request_out(uint32_t entry);

/* No sampler reads the board: the context watcher is removed if it was installed.
 * Can't fail. */
void apext_spyboard_idle(void);

/* Make the context variable of apext_spyboard_enter().  0, or -1 with an exception. */
int apext_spyboard_init(void);

/* Module-level functions: spy_label(str) -> int. */
extern PyMethodDef apext_spyboard_methods[];

#endif /* APEXT_SPYBOARD_H */

/* spyboard.h -- this process's board for apiprof-spy (src/core/ap_spyboard.h): the route each thread serves. */
#ifndef APEXT_SPYBOARD_H
#define APEXT_SPYBOARD_H

#include "ext.h"

#include <stdint.h>

/* Whether a sampler read the board lately (its heartbeat is fresh at now_ns, clock
 * ap_clock_now_ns): only then is a request's route found up front and published.  A
 * load and a compare.  Can't fail. */
int apext_spyboard_wanted(uint64_t now_ns);

/* The calling thread serves label (index + 1 from spy_label(), 0: nothing) now;
 * returns the label it served before (to be served again when this ends: a request
 * inside another).  A thread beyond the board's slots publishes nothing (returns 0).
 * Needs the GIL.  Can't fail. */
uint32_t apext_spyboard_serve(uint32_t label);

/* Module-level functions: spy_label(str) -> int. */
extern PyMethodDef apext_spyboard_methods[];

#endif /* APEXT_SPYBOARD_H */

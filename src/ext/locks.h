/* locks.h -- apiprof._core.TimedLock: a threading.Lock that tells the running tracer how long each contended acquisition waited. */
#ifndef APEXT_LOCKS_H
#define APEXT_LOCKS_H

#include "ext.h"

#include <stdint.h>

/* Add the TimedLock and TimedRLock types to module.  0, or -1 with an exception set. */
int apext_locks_init(PyObject *module);

/* A lock acquisition of the calling thread waited from t0 to t1 (clock
 * ap_clock_now_ns): the running tracer, if any, records it as a call of a
 * "<lock wait>" frame at the acquiring line, under the frame running now,
 * and adds t1 - t0 to AP_M_WAIT_LOCK_NS of every open frame.  Needs the
 * GIL.  Implemented by tracer.c.  Can't fail (a failure is noted in the
 * session). */
void apext_tracer_lock_wait(uint64_t t0, uint64_t t1);

#endif /* APEXT_LOCKS_H */

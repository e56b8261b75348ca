/* stallwatch.h -- the middleware's stall watchdog: a thread that captures the call path of an event loop's thread while one step of a request has been running too long. */
#ifndef APEXT_STALLWATCH_H
#define APEXT_STALLWATCH_H

#include "ext.h"

#include <stdint.h>

/* While a request's coroutine runs one step on a thread (RouteRequest, routes.c), that
 * thread's slot holds the step's start.  A watchdog thread wakes every quarter of the
 * threshold; a step that has run for half the threshold or more gets its thread's call
 * path captured once: the watchdog takes the GIL (at once when the step is blocked in a
 * C call that released it, such as time.sleep; within the interpreter's switch interval,
 * 5 ms, when the step runs Python code), reads the frames of that thread's state, and
 * gives the GIL back.  The step's thread is never stopped otherwise.  When the step ends
 * as a stall (at or above the threshold), its capture goes with it (apext_stallwatch_
 * step_out); a shorter step's capture is dropped.
 *
 * Cost on the step's thread: a thread-local load and two stores per step.  At most
 * APEXT_STALLWATCH_SLOTS threads are watched at once (a thread's slot is freed when it
 * exits); more go unwatched.  After fork() the child starts its own watchdog at its next
 * step.  The watchdog stops at interpreter exit (atexit). */

#define APEXT_STALLWATCH_SLOTS 64
#define APEXT_STALLWATCH_FRAMES 64   /* frames captured per stall: the innermost ones */

/* One captured call path: n frames, innermost first (code objects, strong, and the
 * line each was at). */
typedef struct apext_stall_capture {
    int n;
    PyCodeObject *code[APEXT_STALLWATCH_FRAMES];
    int line[APEXT_STALLWATCH_FRAMES];
} apext_stall_capture;

/* Watch steps of threshold_ns or more from now on (0: stop watching; the thread stays
 * idle).  Starts the watchdog thread at first use.  Needs the GIL.  0, or -1 with an
 * exception (no thread could be started). */
int apext_stallwatch_set(uint64_t threshold_ns);

/* The calling thread begins a step at now (ap_clock_now_ns).  Steps nest: only the
 * outermost is watched.  Needs the GIL.  Can't fail (no free slot: not watched). */
void apext_stallwatch_step_in(uint64_t now);

/* The calling thread's step ends.  When the watchdog captured its call path, that
 * capture is moved into *out (the caller then owns its references, see
 * apext_stallwatch_release) and 1 is returned; else 0.  Needs the GIL.  Can't fail. */
int apext_stallwatch_step_out(apext_stall_capture *out);

/* Drop the references of c (n becomes 0).  Needs the GIL.  Can't fail. */
void apext_stallwatch_release(apext_stall_capture *c);

/* The site of a capture as the route statistics keep it (ap_route_site):
 * "function\tfile\tline\tcall path", where function, file and line are those of the
 * innermost frame of the app's own code (not a library, ap_wait_library_file; the
 * innermost frame when none is), and the call path the qualnames of the app's frames
 * up to it, outermost first (" > "-separated, at most 8).  Written into buf (cap bytes,
 * NUL-terminated, cut to fit); returns its length.  Needs the GIL.  Can't fail. */
size_t apext_stallwatch_site(const apext_stall_capture *c, char *buf, size_t cap);

/* Module-level functions: _stall_watch_stop() (atexit). */
extern PyMethodDef apext_stallwatch_methods[];

#endif /* APEXT_STALLWATCH_H */

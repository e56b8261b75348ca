/* ap_stall.h -- event-loop stalls: the loop thread's callbacks and task steps that ran longer than a threshold, each with the code that took the time. */
#ifndef AP_STALL_H
#define AP_STALL_H

#include <stddef.h>
#include <stdint.h>

#include "ap_prof.h"
#include "ap_sbuf.h"

/* A stall is one step of an event loop (one callback, or one step of a task
 * between two of its awaits) that ran for at least the recording
 * producer's threshold (metadata "stall_threshold_ns").  While it ran, no
 * other callback or task of that loop could: every request on the loop
 * waited for it.  The culprit is the frame of the step with the most self
 * time in one call (for a blocking C call, such as time.sleep, that call),
 * and the line is where that time went: the line of the Python function
 * that made the blocking C call, or, for time spent in Python code itself,
 * the function's first line (a function tracer does not see lines).
 *
 * Stalls belong to the profile (ap_prof), are kept in order of their end,
 * and are copied whole by ap_prof_merge() and ap_prof_select(): a stall
 * names its route and task itself, it is not a part of a tree.  At most
 * AP_STALL_MAX are kept; later ones are counted as dropped. */
#define AP_STALL_MAX 100000u
#define AP_STALL_STACK_MAX 256u /* frames kept per stall: the innermost ones */

typedef struct ap_stall {
    uint64_t start_ns;     /* when the step began, on the profile's clock */
    uint64_t dur_ns;       /* how long it ran */
    ap_frame_id func;      /* function-level frame of the Python function where the time went */
    uint32_t line;         /* the line in it (see above); 0 when unknown */
    ap_str_id thread;      /* label values of the tree the culprit ran in; 0 when none */
    ap_str_id route;
    ap_str_id task;
    uint32_t stack_first;  /* internal: where its frames start in the profile's stall stacks */
    uint32_t nstack;       /* frames of its call path, outermost first, the culprit last */
    uint64_t cpu_ns;       /* CPU time of the loop thread during the step (at least 1), 0
                            * when unknown: far below dur_ns, the loop was not running
                            * its code but waiting (for the GIL, a core, or in a call that
                            * blocks without the CPU, such as time.sleep) */
} ap_stall;

/* Add stall s with its call path (n frame ids of p, outermost first; only
 * the innermost AP_STALL_STACK_MAX are kept).  s->stack_first and nstack
 * are set by the call.  Returns 0 (also when the stall was dropped, over
 * AP_STALL_MAX); on error -1 with AP_ENOMEM. */
int ap_prof_stall_add(ap_prof *p, const ap_stall *s, const ap_frame_id *stack, size_t n);

/* The stalls: how many, the i-th (i < ap_prof_nstalls), the call path of
 * one (nstack frame ids), and how many were dropped.  Can't fail. */
size_t ap_prof_nstalls(const ap_prof *p);
const ap_stall *ap_prof_stall_at(const ap_prof *p, size_t i);
const ap_frame_id *ap_prof_stall_stack(const ap_prof *p, const ap_stall *s);
uint64_t ap_prof_stalls_dropped(const ap_prof *p);

/* Copy the stalls of src into dst, a profile with the same string and
 * frame ids (ap_prof_merge's copies).  0; -1 with AP_ENOMEM. */
int ap_stall_copy(ap_prof *dst, const ap_prof *src);

/* Release the stalls of p (ap_prof_free).  Can't fail. */
void ap_stall_free(ap_prof *p);

/* The payload of the native file's STLS chunk (docs/format.md): appended
 * to b.  Can't fail (b records a failed allocation). */
void ap_stall_encode(const ap_prof *p, ap_sbuf *b);

/* Read an STLS payload [*pos, end) into p, whose strings and frames are
 * read already.  0; -1 with AP_ECORRUPT (a stall naming a missing string
 * or frame, a malformed payload) or AP_ENOMEM.  Any input is safe. */
int ap_stall_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end);

/* The payload of the native file's STLC chunk (docs/format.md): the CPU time of each
 * stall, in order, appended to b; nothing when no stall has one.  Can't fail. */
void ap_stall_cpu_encode(const ap_prof *p, ap_sbuf *b);

/* Read an STLC payload [pos, end) into the stalls read already from STLS.  0; -1 with
 * AP_ECORRUPT (a count that is not the number of stalls, a malformed payload). */
int ap_stall_cpu_decode(ap_prof *p, const uint8_t *pos, const uint8_t *end);

/* The JSON export's "stalls" array (docs/format.md), appended to out.
 * Can't fail (out records a failed allocation). */
void ap_stall_json(const ap_prof *p, ap_sbuf *out);

#endif /* AP_STALL_H */

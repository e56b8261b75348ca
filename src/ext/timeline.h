/* timeline.h -- the function tracer's optional event timeline: each closed frame (a call, or one step of a coroutine) as a span in the profile's bounded event ring. */
#ifndef APEXT_TIMELINE_H
#define APEXT_TIMELINE_H

/* A span is recorded when a frame leaves the shadow stack (return, unwind,
 * yield, a phase split, stop()): start = when it was pushed or resumed, on
 * the wall clock, frame, and the tree it was recorded in (so the thread,
 * and the route / task when labelled).  The ring keeps the last `capacity`
 * spans; older ones are overwritten and counted as dropped (the EVNT chunk,
 * the Chrome trace's otherData).  Spans of one thread nest, so each tree's
 * spans form a proper timeline.  Only with the wall clock: thread CPU
 * clocks don't share an origin.
 *
 * Errors: init returns -1 with an exception; recording can't fail (the
 * ring is preallocated).  Under the GIL. */

#include "labels.h"

typedef struct apext_timeline {
    int on;
    apext_treeix ix;
} apext_timeline;

/* Give p a ring of capacity spans when capacity > 0; 0 leaves the timeline
 * off.  0, or -1 with an exception (ValueError, MemoryError). */
int apext_timeline_init(apext_timeline *tl, ap_prof *p, Py_ssize_t capacity);
void apext_timeline_free(apext_timeline *tl);

/* At stop(): the metadata "timeline_spans" (spans kept) and
 * "timeline_dropped" (older spans overwritten) of p, when the timeline is
 * on.  0, or -1 with an ap_err (no memory). */
int apext_timeline_note(const apext_timeline *tl, ap_prof *p);

/* Record that frame ran in tree from t0 to now.  Can't fail (a tree p
 * can't index, which needs an allocation failure, drops the span). */
void apext_timeline_span(apext_timeline *tl, ap_prof *p, const ap_tree *tree, ap_frame_id frame,
                         uint64_t t0, uint64_t now);

#endif /* APEXT_TIMELINE_H */

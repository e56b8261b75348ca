/* ap_timeline.h -- the profile's event ring as lanes of nested spans, each with its depth and wait kind: what the HTML report's timeline draws. */
#ifndef AP_TIMELINE_H
#define AP_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#include "ap_prof.h"
#include "ap_sbuf.h"

/* A lane is one thread: the trees whose "thread_id" label is the same (a
 * thread's own tree and the trees of the routes and tasks it ran), or,
 * without that label, the trees with the same "thread" label; a tree with
 * neither is a lane of its own.  The spans of one thread nest (the tracer
 * keeps one stack per thread), so within a lane each span lies inside its
 * parent: the innermost earlier span that contains it. */
typedef struct ap_tl_span {
    uint64_t start_ns;   /* from the timeline's t0 */
    uint64_t dur_ns;
    ap_frame_id frame;
    uint32_t tree;       /* the tree it was recorded in */
    uint32_t lane;
    uint32_t parent;     /* index of the span it lies in, AP_NONE for none */
    uint32_t depth;      /* 0 for a span with no parent */
    uint8_t kind;        /* ap_wait_kind of its own time; AP_WAIT_COUNT: it ran */
} ap_tl_span;

typedef struct ap_timeline {
    ap_tl_span *spans;     /* by lane, then start, the longer first at equal starts */
    size_t nspans;
    uint32_t *lane_tree;   /* per lane, its first tree (it names the lane) */
    size_t nlanes;
    uint64_t t0;           /* the earliest start of a span or a stall, on the profile's clock */
} ap_timeline;

/* The timeline of p's event ring (lanes in order of their first tree).  An
 * empty timeline when p has no events (or only events of trees it lacks, in
 * a file cut short).  Release with ap_timeline_free().
 * Returns 0; -1 with AP_ENOMEM, or AP_EINVAL (a malformed "wait_rules"
 * entry, ap_wait_span_kinds), and *tl empty. */
int ap_timeline_build(const ap_prof *p, ap_timeline *tl);

/* Release the arrays of tl; tl is left empty.  Can't fail. */
void ap_timeline_free(ap_timeline *tl);

/* The value (a string id of p) of label key of tree t of p; 0 ("") when it has none.
 * Can't fail. */
ap_str_id ap_timeline_tree_label(const ap_prof *p, size_t t, const char *key);

/* The name of lane l of tl: its thread's name (the "thread" label), else its first
 * tree's labels (ap_report_tree_name).  Appended to sb with a NUL, as that does.
 * Can't fail (sb records a failed allocation). */
void ap_timeline_lane_name(const ap_prof *p, const ap_timeline *tl, size_t l, ap_sbuf *sb);

/* Spans the HTML report embeds at most: the longest ones (a span's
 * ancestors are at least as long, so every kept span keeps its parents). */
#define AP_TIMELINE_HTML_SPANS 20000

/* The HTML report's "timeline" member value (docs/report.md): lanes (name,
 * thread id, trees), the longest max_spans spans as parallel arrays (start,
 * duration, frame, lane, depth, kind, and the route of a request's outermost
 * span), how many there were, how many the ring dropped, and the stalls
 * with their call paths.  Strings are p's string ids, frames its frame ids.
 * Appended to out.  Can't fail (out records a failed allocation). */
void ap_timeline_json(const ap_prof *p, const ap_timeline *tl, size_t max_spans, ap_sbuf *out);

#endif /* AP_TIMELINE_H */
